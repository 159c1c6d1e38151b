"""The in-memory genome: LoRA factors per target module plus hyperparameter genes.

A module's update is ``dW = scale * B @ A`` with ``A`` of shape ``(rank, in)``, ``B`` of shape
``(out, rank)`` and ``scale = alpha / rank`` (``alpha / sqrt(rank)`` with rsLoRA), exactly as PEFT
computes it. Tensors keep the dtype they were stored in; operators compute in float32.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from nora.genetics.errors import GeneticsError, IncompatibleParentsError

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def lora_scale(alpha: float, rank: int, use_rslora: bool) -> float:
    """PEFT's scaling of a LoRA update.

    Args:
        alpha: the module's ``lora_alpha``.
        rank: the module's rank.
        use_rslora: whether rank-stabilised scaling (``alpha / sqrt(rank)``) is on.

    Returns:
        The factor that multiplies ``B @ A``.
    """
    return alpha / math.sqrt(rank) if use_rslora else alpha / rank


def alpha_for_scale(scale: float, rank: int, use_rslora: bool) -> float:
    """The ``lora_alpha`` that gives ``scale`` at ``rank`` (inverse of :func:`lora_scale`).

    Rounded to 12 significant digits so configs read ``20.0`` rather than ``19.999999999999996``; the
    relative change of the update is below ``1e-11``.
    """
    alpha = scale * math.sqrt(rank) if use_rslora else scale * rank
    return float(f"{alpha:.12g}")


@dataclass(frozen=True)
class LoraModule:
    """The LoRA factors of one target module.

    Attributes:
        a: ``lora_A.weight``, shape ``(rank, in_features)``.
        b: ``lora_B.weight``, shape ``(out_features, rank)``.
        alpha: the module's ``lora_alpha`` (after ``alpha_pattern``).
    """

    a: torch.Tensor
    b: torch.Tensor
    alpha: float

    @property
    def rank(self) -> int:
        return int(self.a.shape[0])

    @property
    def in_features(self) -> int:
        return int(self.a.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.b.shape[0])

    @property
    def base_shape(self) -> tuple[int, int]:
        """``(out_features, in_features)`` of the base weight this module adapts."""
        return (self.out_features, self.in_features)

    def scale(self, use_rslora: bool) -> float:
        return lora_scale(self.alpha, self.rank, use_rslora)

    def delta(self, use_rslora: bool) -> torch.Tensor:
        """The dense update ``scale * B @ A`` in float32 (for tests and small shapes only)."""
        return self.scale(use_rslora) * (self.b.float() @ self.a.float())


@dataclass(frozen=True)
class Genome:
    """A LoRA adapter (one :class:`LoraModule` per target module) plus hyperparameter genes.

    Attributes:
        modules: target module name (as in the base model, e.g. ``model.layers.0.self_attn.q_proj``)
            to its factors, in sorted name order.
        config: the rest of ``adapter_config.json`` (``target_modules``, ``base_model_name_or_path``,
            ``lora_dropout``...), carried over unchanged; rank and alpha fields are derived on save.
        hyperparameters: hyperparameter genes, e.g. ``{"learning_rate": 1e-4}``.
        use_rslora: PEFT's ``use_rslora`` flag, which changes the scaling.
    """

    modules: Mapping[str, LoraModule]
    config: Mapping[str, Any] = field(default_factory=dict)
    hyperparameters: Mapping[str, float] = field(default_factory=dict)
    use_rslora: bool = False

    def __post_init__(self) -> None:
        if not self.modules:
            raise GeneticsError("a genome needs at least one LoRA module")
        object.__setattr__(self, "modules", dict(sorted(self.modules.items())))

    @property
    def dtype(self) -> torch.dtype:
        """The storage dtype (that of the first module's ``A``)."""
        return next(iter(self.modules.values())).a.dtype

    @property
    def ranks(self) -> dict[str, int]:
        return {name: module.rank for name, module in self.modules.items()}

    @property
    def parameter_count(self) -> int:
        return sum(m.a.numel() + m.b.numel() for m in self.modules.values())

    @property
    def nbytes(self) -> int:
        return sum(m.a.nbytes + m.b.nbytes for m in self.modules.values())

    def items(self) -> Iterator[tuple[str, LoraModule]]:
        return iter(self.modules.items())

    def with_modules(self, modules: Mapping[str, LoraModule]) -> Genome:
        return replace(self, modules=dict(modules))

    def with_hyperparameters(self, hyperparameters: Mapping[str, float]) -> Genome:
        return replace(self, hyperparameters=dict(hyperparameters))


def check_same_base(parents: list[Genome] | tuple[Genome, ...]) -> None:
    """Require that all parents adapt the same modules of the same base shapes.

    Raises:
        IncompatibleParentsError: naming the first module that is missing or differs.
    """
    if not parents:
        raise IncompatibleParentsError("crossover needs at least one parent")
    first = parents[0]
    for index, other in enumerate(parents[1:], start=1):
        missing = sorted(set(first.modules) ^ set(other.modules))
        if missing:
            raise IncompatibleParentsError(
                f"parent 0 and parent {index} adapt different modules (first difference: {missing[0]}); "
                "breed only adapters trained for the same base model and target_modules"
            )
        for name, module in first.items():
            if other.modules[name].base_shape != module.base_shape:
                raise IncompatibleParentsError(
                    f"module {name}: parent 0 adapts a {module.base_shape} weight but parent {index} a "
                    f"{other.modules[name].base_shape} one; the adapters are for different base models"
                )


def base_model_name(genome: Genome) -> str | None:
    """The base model the adapter names (``base_model_name_or_path``, ``@revision`` when set), if any."""
    name = genome.config.get("base_model_name_or_path")
    if not name:
        return None
    revision = genome.config.get("revision")
    return f"{name}@{revision}" if revision else str(name)


def check_same_base_model(parents: list[Genome] | tuple[Genome, ...]) -> None:
    """Require that the parents' adapter configs name the same base model (parents naming none pass).

    Equal shapes do not prove it: Llama-3-8B and Mistral-7B share every shape, and a Qwen2 and a Gemma-2
    adapter can too. Breeding them silently gives a child that fits either model and suits neither.

    Raises:
        IncompatibleParentsError: naming both base models and the override.
    """
    named = [(index, base_model_name(p)) for index, p in enumerate(parents)]
    known = [(index, name) for index, name in named if name is not None]
    for index, name in known[1:]:
        if name != known[0][1]:
            raise IncompatibleParentsError(
                f"parent {known[0][0]} adapts base model {known[0][1]} but parent {index} adapts {name} "
                "(base_model_name_or_path in adapter_config.json); breed adapters of one base model, or "
                "allow mixed base models explicitly (nora breed --allow-mixed-base-models, "
                "spec.crossover.allowMixedBaseModels) when they are copies of the same model"
            )


def init_module(
    out_features: int,
    in_features: int,
    rank: int,
    alpha: float,
    generator: torch.Generator,
    b_std: float = 0.0,
) -> LoraModule:
    """A fresh LoRA module as PEFT initialises it: Kaiming-uniform ``A``, zero ``B``.

    Args:
        out_features: rows of the base weight.
        in_features: columns of the base weight.
        rank: LoRA rank.
        alpha: ``lora_alpha``.
        generator: the only source of randomness.
        b_std: if positive, ``B`` is drawn from ``N(0, b_std^2)`` instead of zeros (tests, benchmarks).

    Returns:
        The module, in float32.
    """
    if rank < 1:
        raise GeneticsError(f"rank must be at least 1, got {rank}")
    bound = 1.0 / math.sqrt(in_features)
    a = (torch.rand(rank, in_features, generator=generator) * 2 - 1) * bound
    b = torch.zeros(out_features, rank)
    if b_std > 0:
        b = torch.randn(out_features, rank, generator=generator) * b_std
    return LoraModule(a=a, b=b, alpha=float(alpha))


def init_genome(
    module_shapes: Mapping[str, tuple[int, int]],
    rank: int,
    alpha: float,
    generator: torch.Generator,
    b_std: float = 0.0,
    config: Mapping[str, Any] | None = None,
) -> Genome:
    """A fresh genome over ``module_shapes`` (name to ``(out, in)``), modules drawn in sorted order."""
    modules = {
        name: init_module(out, inp, rank, alpha, generator, b_std)
        for name, (out, inp) in sorted(module_shapes.items())
    }
    return Genome(modules=modules, config=dict(config or {}))
