"""Which Linear modules of the base model a fresh adapter adapts (``adapter.targetModules``).

Names match as PEFT matches a list: a module is targeted when its full name equals a name or ends with
``"." + name`` (so ``o_proj`` reaches every layer's ``self_attn.o_proj``, ``shared_expert.gate_proj`` only the
shared expert's). Every matched module must be a ``torch.nn.Linear``. Three rules on top:

- ``all-linear`` (PEFT's shorthand) is every Linear module except the output layer (``lm_head``); the
  adapter config then lists their full names, exactly as PEFT expands the shorthand.
- Fused projections: when all of ``q_proj``, ``k_proj``, ``v_proj`` are asked for and the model has none of
  them but has ``qkv_proj`` (Phi-3), ``qkv_proj`` is adapted instead; likewise ``gate_proj`` + ``up_proj`` ->
  ``gate_up_proj``. So the default (``q_proj, k_proj, v_proj, o_proj``) works on fused architectures.
- Mixture-of-experts: routed experts stored as fused 3-D expert weights (transformers' Mixtral, Qwen2-MoE,
  ...) are not Linear modules and nora does not adapt them (it does not use PEFT's ``target_parameters``).
  A bare name that would reach only the Linear modules beside them (the shared expert) is refused, as is
  ``all-linear``; name the shared expert explicitly (``shared_expert.gate_proj``) to adapt it alone.

Every refusal is a :class:`~nora.trainer.errors.TrainerInputError` naming ``adapter.targetModules`` and
listing the Linear module names the model does have.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from nora.api.defaults import ALL_LINEAR
from nora.trainer.errors import TrainerInputError

FUSED_PROJECTIONS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("q_proj", "k_proj", "v_proj"), "qkv_proj"),
    (("gate_proj", "up_proj"), "gate_up_proj"),
)
FIELD = "adapter.targetModules"


@dataclass(frozen=True)
class Targets:
    """The resolved targets: the names for ``adapter_config.json`` and the shape of each adapted module.

    Attributes:
        names: ``target_modules`` as PEFT reads it back (the requested names, fused ones substituted, or
            every Linear module's full name for ``all-linear``).
        shapes: ``{module name: (out_features, in_features)}`` of every adapted Linear module.
        notes: one line per substitution made (for the log).
    """

    names: tuple[str, ...]
    shapes: dict[str, tuple[int, int]]
    notes: tuple[str, ...] = ()


def matches(module_name: str, name: str) -> bool:
    """PEFT's list matching: the full name, or a suffix after a dot."""
    return module_name == name or module_name.endswith("." + name)


def _linear_modules(model: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    getter: Any = getattr(model, "get_output_embeddings", None)
    output = getter() if callable(getter) else None
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module is not output
    }


def routed_experts(model: torch.nn.Module) -> list[str]:
    """Fused routed-expert weights (parameters of 3 or more dimensions), layer numbers as ``*``."""
    return sorted({re.sub(r"\.\d+\.", ".*.", name) for name, p in model.named_parameters() if p.ndim >= 3})


def _moe_blocks(model: torch.nn.Module) -> set[str]:
    """Modules holding routed experts (``model.layers.0.mlp`` for ``model.layers.0.mlp.experts``)."""
    owners = {name.rsplit(".", 1)[0] for name, p in model.named_parameters() if p.ndim >= 3}
    return {owner.rsplit(".", 1)[0] for owner in owners if "." in owner}


def _linear_names(linear: Iterable[str]) -> str:
    return ", ".join(sorted({name.rsplit(".", 1)[-1] for name in linear}))


def _experts_note(model: torch.nn.Module) -> str:
    experts = routed_experts(model)
    if not experts:
        return ""
    return (
        f"; its routed experts ({', '.join(experts)}) are fused expert weights, not Linear modules, and nora "
        "cannot adapt them (PEFT's target_parameters is not supported)"
    )


def _substitute_fused(
    requested: tuple[str, ...], module_names: list[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    names, notes = list(requested), []
    for parts, fused in FUSED_PROJECTIONS:
        present = all(part in names for part in parts)
        absent = not any(matches(m, part) for m in module_names for part in parts)
        if present and absent and any(matches(m, fused) for m in module_names):
            names = [n for n in names if n not in parts] + [fused]
            notes.append(f"{FIELD}: this model fuses {', '.join(parts)} into {fused}; adapting {fused}")
    return tuple(names), tuple(notes)


def _check_moe(name: str, hits: list[str], blocks: set[str], model: torch.nn.Module) -> None:
    if "." in name:
        return
    inside = [hit for hit in hits if any(hit.startswith(block + ".") for block in blocks)]
    if inside:
        raise TrainerInputError(
            f"{FIELD}: {name} reaches only {inside[0]} (and its like) in this mixture-of-experts model"
            f"{_experts_note(model)}; name the module explicitly (e.g. "
            f"{'.'.join(inside[0].split('.')[-2:])}) to adapt it alone, or adapt only the attention"
        )


def _all_linear(model: torch.nn.Module, linear: dict[str, torch.nn.Linear]) -> Targets:
    if routed_experts(model):
        raise TrainerInputError(
            f"{FIELD}: all-linear would leave this mixture-of-experts model's routed experts unadapted"
            f"{_experts_note(model)}; name the Linear modules to adapt instead: {_linear_names(linear)}"
        )
    if not linear:
        raise TrainerInputError(
            f"{FIELD}: this model has no Linear module but its output layer (nora adapts nn.Linear only)"
        )
    shapes = {name: (m.out_features, m.in_features) for name, m in linear.items()}
    return Targets(names=tuple(sorted(shapes)), shapes=shapes)


def resolve_targets(model: torch.nn.Module, requested: tuple[str, ...]) -> Targets:
    """The modules ``requested`` adapts on ``model`` (see the module docstring for the rules).

    Raises:
        TrainerInputError: a name matches nothing, matches a module that is not Linear, or reaches only the
            shared expert of a mixture-of-experts model; ``all-linear`` on a mixture-of-experts model.
    """
    linear = _linear_modules(model)
    if ALL_LINEAR in requested:
        return _all_linear(model, linear)
    module_names = [name for name, _ in model.named_modules()]
    names, notes = _substitute_fused(requested, module_names)
    blocks = _moe_blocks(model)
    shapes: dict[str, tuple[int, int]] = {}
    missing = []
    for name in names:
        hits = [m for m in module_names if matches(m, name)]
        if not hits:
            missing.append(name)
            continue
        other = [hit for hit in hits if hit not in linear]
        if other:
            kind = type(model.get_submodule(other[0])).__name__
            raise TrainerInputError(
                f"{FIELD}: {name} names {other[0]}, a {kind}, not a Linear module; "
                f"the Linear modules are: {_linear_names(linear)}"
            )
        _check_moe(name, hits, blocks, model)
        shapes.update({hit: (linear[hit].out_features, linear[hit].in_features) for hit in hits})
    if missing:
        verb = "matches" if len(missing) == 1 else "match"
        raise TrainerInputError(
            f"{FIELD}: {', '.join(missing)} {verb} no module of the base model; its Linear modules are: "
            f"{_linear_names(linear)} (or use all-linear){_experts_note(model)}"
        )
    return Targets(names=tuple(sorted(names)), shapes=shapes, notes=notes)
