"""The base model, the tokenizer and the adapter under training.

Base models come from a local folder (plain path or ``file://``), the Hugging Face hub
(``hf://org/name[@revision]``) or an S3 prefix (``s3://bucket/prefix/``, copied to a scratch folder
without any pickled weight file). Weights are always loaded with ``use_safetensors=True`` and
``trust_remote_code`` only when genome.json asks for it. A genome is put on the base model by saving it
through :func:`nora.genetics.save_genome` and loading that folder with ``PeftModel.from_pretrained``, so
ranks and alphas per module (``rank_pattern``/``alpha_pattern``) are read exactly as PEFT reads them; the
trained adapter is read back from the model's ``default`` adapter into a :class:`~nora.genetics.Genome`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from nora.evolution.strategies.points import POINT_FILE, PointRecord, module_points
from nora.genetics import (
    GeneticsError,
    Genome,
    LoraModule,
    derive_seed,
    init_genome,
    make_generator,
    save_genome,
)
from nora.genetics.projection import project_genome
from nora.storage import StoreError, open_uri
from nora.trainer.errors import TrainerInputError
from nora.trainer.irpo_config import AdapterRef, BaseModelRef

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_ADAPTER_PARAM = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<factor>[AB])\.default\.weight$")


@dataclass(frozen=True)
class ModelSource:
    """Where ``from_pretrained`` reads from: a hub id or local folder, and a revision."""

    name_or_path: str
    revision: str | None
    local: bool


def device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def model_dtype(requested: str) -> torch.dtype:
    """``auto`` is bfloat16 on a CUDA device that supports it and float32 elsewhere."""
    if requested == "float32":
        return torch.float32
    if requested == "bfloat16":
        return torch.bfloat16
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def _download_s3_model(uri: str, scratch: Path) -> Path:
    try:
        store, prefix = open_uri(uri)
        keys = store.list(prefix)
    except StoreError as error:
        raise TrainerInputError(f"baseModel.uri: {error}") from None
    target = scratch / "base-model"
    wanted = [key for key in keys if not key.endswith(PICKLE_SUFFIXES)]
    if not any(key.endswith(".safetensors") for key in wanted):
        raise TrainerInputError(
            f"baseModel.uri: {uri} holds no .safetensors weights "
            "(pickled weights are never loaded from a store)"
        )
    for key in wanted:
        path = target / key[len(prefix) :].lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(store.read_bytes(key))
    return target


def resolve_model(uri: str, scratch: Path) -> ModelSource:
    """Where to load ``uri`` from; S3 models are copied into ``scratch`` first."""
    if uri.startswith("hf://"):
        name, _, revision = uri.removeprefix("hf://").partition("@")
        if not name:
            raise TrainerInputError(f"baseModel.uri: {uri} names no model; use hf://org/name[@revision]")
        return ModelSource(name_or_path=name, revision=revision or None, local=False)
    if uri.startswith("s3://"):
        return ModelSource(name_or_path=str(_download_s3_model(uri, scratch)), revision=None, local=True)
    if "://" in uri and not uri.startswith("file://"):
        raise TrainerInputError(
            f"baseModel.uri: {uri} is not loadable by the trainer; use file://, hf:// or s3:// "
            "(toy:// is resolved to a folder by the engine before a genome is trained)"
        )
    path = Path(unquote(uri.removeprefix("file://"))).expanduser()
    if not path.is_dir():
        raise TrainerInputError(f"baseModel.uri: {path} is not a model folder")
    return ModelSource(name_or_path=str(path), revision=None, local=True)


def load_tokenizer(source: ModelSource, base: BaseModelRef) -> PreTrainedTokenizerBase:
    """The base model's tokenizer, with a pad token (EOS when it has none) and left padding."""
    tokenizer = AutoTokenizer.from_pretrained(
        source.name_or_path,
        revision=source.revision,
        trust_remote_code=base.trust_remote_code,
        local_files_only=source.local,
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_base_model(source: ModelSource, base: BaseModelRef) -> PreTrainedModel:
    """The base causal LM from safetensors weights, on :func:`device`, in eval mode."""
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source.name_or_path,
            revision=source.revision,
            trust_remote_code=base.trust_remote_code,
            local_files_only=source.local,
            use_safetensors=True,
            dtype=model_dtype(base.dtype),
        )
    except (OSError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TrainerInputError(f"baseModel.uri: cannot load {source.name_or_path}: {first_line}") from None
    typed: Any = model
    typed.to(device())
    typed.eval()
    return model


def target_shapes(model: torch.nn.Module, target_modules: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    """``{module name: (out, in)}`` of every Linear whose last name part is in ``target_modules``."""
    shapes: dict[str, tuple[int, int]] = {}
    found: set[str] = set()
    for name, module in model.named_modules():
        suffix = name.rsplit(".", 1)[-1]
        if suffix in target_modules and isinstance(module, torch.nn.Linear):
            shapes[name] = (module.out_features, module.in_features)
            found.add(suffix)
    missing = sorted(set(target_modules) - found)
    if missing:
        raise TrainerInputError(
            f"adapter.targetModules: {', '.join(missing)} match no Linear module of the base model"
        )
    return shapes


def base_model_reference(uri: str) -> dict[str, Any]:
    """``base_model_name_or_path`` (and ``revision``) for adapter_config.json, in the form PEFT loads."""
    if uri.startswith("hf://"):
        name, _, revision = uri.removeprefix("hf://").partition("@")
        return {"base_model_name_or_path": name, **({"revision": revision} if revision else {})}
    if uri.startswith("file://") or "://" not in uri:
        return {"base_model_name_or_path": unquote(uri.removeprefix("file://"))}
    return {"base_model_name_or_path": uri}


def _adapter_config(adapter: AdapterRef, base_uri: str) -> dict[str, Any]:
    return {
        "task_type": "CAUSAL_LM",
        "target_modules": sorted(adapter.target_modules),
        "lora_dropout": adapter.dropout,
        **base_model_reference(base_uri),
    }


def fresh_genome(model: torch.nn.Module, adapter: AdapterRef, seed: int, base_uri: str) -> Genome:
    """Generation 0: a PEFT-style fresh LoRA (Kaiming-uniform A, zero B) drawn from ``seed``."""
    generator = make_generator(derive_seed(seed, "fresh-adapter"))
    shapes = target_shapes(model, adapter.target_modules)
    return init_genome(
        shapes, adapter.rank, adapter.alpha, generator, config=_adapter_config(adapter, base_uri)
    )


def projected_genome(
    model: torch.nn.Module, adapter: AdapterRef, record: PointRecord, base_uri: str
) -> Genome:
    """A ``cmaes`` genome's starting adapter: its point record projected onto the target modules."""
    shapes = target_shapes(model, adapter.target_modules)
    try:
        points = module_points(record, shapes)
        return project_genome(points, shapes, record.projection, config=_adapter_config(adapter, base_uri))
    except GeneticsError as error:
        raise TrainerInputError(f"adapter.uri: {error}") from None


def attach_genome(model: PreTrainedModel, genome: Genome, dropout: float, scratch: Path) -> PeftModel:
    """``model`` wrapped as a trainable ``PeftModel`` whose ``default`` adapter holds ``genome``.

    Raises:
        TrainerInputError: when the adapter does not fit the base model (modules or shapes differ).
    """
    config = {**genome.config, "lora_dropout": dropout}
    config.setdefault("task_type", "CAUSAL_LM")
    staged = save_genome(replace(genome, config=config), scratch / "start-adapter", overwrite=True)
    try:
        peft_model = PeftModel.from_pretrained(model, str(staged), is_trainable=True)
    except (ValueError, RuntimeError, KeyError) as error:
        raise TrainerInputError(f"adapter.uri: the adapter does not fit the base model ({error})") from None
    loaded = extract_genome(peft_model, genome)
    for name, module in genome.items():
        if not torch.equal(loaded.modules[name].a, module.a.float()) or not torch.equal(
            loaded.modules[name].b, module.b.float()
        ):
            raise TrainerInputError(f"adapter.uri: module {name} was not loaded into the base model")
    return peft_model


def extract_genome(model: PeftModel, like: Genome) -> Genome:
    """The ``default`` adapter's factors (float32, CPU) as a genome with ``like``'s alphas and config.

    Raises:
        TrainerInputError: when the model's adapter modules differ from ``like``'s.
    """
    factors: dict[str, dict[str, torch.Tensor]] = {}
    for name, param in model.named_parameters():
        match = _ADAPTER_PARAM.match(name)
        if match:
            factors.setdefault(match["module"], {})[match["factor"]] = param.detach().float().cpu().clone()
    if set(factors) != set(like.modules):
        extra = sorted(set(factors) ^ set(like.modules))
        raise TrainerInputError(
            f"adapter.uri: the adapter's modules do not match the base model (first difference: {extra[0]})"
        )
    modules = {
        name: LoraModule(a=parts["A"], b=parts["B"], alpha=like.modules[name].alpha)
        for name, parts in factors.items()
    }
    return like.with_modules(modules)


def point_record(uri: str) -> PointRecord | None:
    """The ``cmaes`` point record in the adapter folder ``uri`` (a genome's ``start/``), if it has one."""
    try:
        store, key = open_uri(uri)
        if not store.exists(f"{key}/{POINT_FILE}"):
            return None
        return PointRecord.loads(store.read_bytes(f"{key}/{POINT_FILE}"))
    except (StoreError, GeneticsError) as error:
        raise TrainerInputError(f"adapter.uri: {error}") from None
