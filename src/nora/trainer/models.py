"""The base model, the tokenizer and the adapter under training.

Base models come from a local folder (plain path or ``file://``), the Hugging Face hub
(``hf://org/name[@revision]``, or its copy in a mounted model cache) or an S3 prefix (``s3://bucket/
prefix/``, copied once into the shared cache of :mod:`nora.trainer.model_cache`, never a pickled weight
file). Weights are always loaded with ``use_safetensors=True`` and ``trust_remote_code`` only when
genome.json asks for it. A genome is put on the base model by saving it
through :func:`nora.genetics.save_genome` and loading that folder with ``PeftModel.from_pretrained``, so
ranks and alphas per module (``rank_pattern``/``alpha_pattern``) are read exactly as PEFT reads them; the
trained adapter is read back from the model's ``default`` adapter into a :class:`~nora.genetics.Genome`.
Every problem with the model (no tokenizer, an unreachable or gated hub, no safetensors weights) is a
:class:`~nora.trainer.errors.TrainerInputError` naming ``baseModel.uri``: the job exits 2, never retried.
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
from nora.trainer import model_cache
from nora.trainer.errors import TrainerInputError
from nora.trainer.irpo_config import AdapterRef, BaseModelRef
from nora.trainer.targets import Targets

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "tokenizer.tiktoken")
"""A local model folder needs one of these for its tokenizer."""
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


def resolve_model(uri: str) -> ModelSource:
    """Where to load ``uri`` from: S3 models (and hub models in a mounted cache) from the model cache."""
    if uri.startswith("hf://"):
        name, _, revision = uri.removeprefix("hf://").partition("@")
        if not name:
            raise TrainerInputError(f"baseModel.uri: {uri} names no model; use hf://org/name[@revision]")
        mounted = model_cache.mounted_copy(uri)
        if mounted is not None:
            return ModelSource(name_or_path=str(mounted), revision=None, local=True)
        return ModelSource(name_or_path=name, revision=revision or None, local=False)
    if uri.startswith("s3://"):
        return ModelSource(name_or_path=str(model_cache.local_copy(uri)), revision=None, local=True)
    if "://" in uri and not uri.startswith("file://"):
        raise TrainerInputError(
            f"baseModel.uri: {uri} is not loadable by the trainer; use file://, hf:// or s3:// "
            "(toy:// is resolved to a folder by the engine before a genome is trained)"
        )
    path = Path(unquote(uri.removeprefix("file://"))).expanduser()
    if not path.is_dir():
        raise TrainerInputError(f"baseModel.uri: {path} is not a model folder")
    return ModelSource(name_or_path=str(path), revision=None, local=True)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _load_error(what: str, source: ModelSource, error: BaseException) -> TrainerInputError:
    hint = ""
    if not source.local:
        hint = (
            "; check the name and revision, that the hub is reachable and, for a gated model, that HF_TOKEN "
            "grants access (or use a file:// or s3:// copy of the model)"
        )
    return TrainerInputError(
        f"baseModel.uri: cannot load the {what} of {source.name_or_path}: {_first_line(error)}{hint}"
    )


def _check_tokenizer_files(source: ModelSource) -> None:
    folder = Path(source.name_or_path)
    if source.local and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise TrainerInputError(
            f"baseModel.uri: {folder} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); "
            "save the tokenizer into the model folder (tokenizer.save_pretrained)"
        )


def load_tokenizer(source: ModelSource, base: BaseModelRef) -> PreTrainedTokenizerBase:
    """The base model's tokenizer, with a pad token (EOS when it has none) and left padding.

    Raises:
        TrainerInputError: naming ``baseModel.uri`` when the folder has no tokenizer files, the hub cannot
            be reached or refuses access, or the tokenizer is empty or has no EOS token.
    """
    _check_tokenizer_files(source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source.name_or_path,
            revision=source.revision,
            trust_remote_code=base.trust_remote_code,
            local_files_only=source.local,
        )
    except (OSError, ValueError) as error:
        raise _load_error("tokenizer", source, error) from None
    if len(tokenizer) == 0 or tokenizer.eos_token_id is None:
        raise TrainerInputError(
            f"baseModel.uri: the tokenizer of {source.name_or_path} is empty or has no EOS token; "
            "every completion must end with one"
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
        raise _load_error("model", source, error) from None
    typed: Any = model
    typed.to(device())
    typed.eval()
    return model


def base_model_reference(uri: str) -> dict[str, Any]:
    """``base_model_name_or_path`` (and ``revision``) for adapter_config.json, in the form PEFT loads."""
    if uri.startswith("hf://"):
        name, _, revision = uri.removeprefix("hf://").partition("@")
        return {"base_model_name_or_path": name, **({"revision": revision} if revision else {})}
    if uri.startswith("file://") or "://" not in uri:
        return {"base_model_name_or_path": unquote(uri.removeprefix("file://"))}
    return {"base_model_name_or_path": uri}


def on_base_model(genome: Genome, uri: str) -> Genome:
    """``genome`` whose adapter config names ``uri`` as its base model (the model it was trained on)."""
    config = {k: v for k, v in genome.config.items() if k not in ("base_model_name_or_path", "revision")}
    return replace(genome, config={**config, **base_model_reference(uri)})


def _adapter_config(targets: Targets, adapter: AdapterRef, base_uri: str) -> dict[str, Any]:
    return {
        "task_type": "CAUSAL_LM",
        "target_modules": list(targets.names),
        "lora_dropout": adapter.dropout,
        **base_model_reference(base_uri),
    }


def fresh_genome(targets: Targets, adapter: AdapterRef, seed: int, base_uri: str) -> Genome:
    """Generation 0: a PEFT-style fresh LoRA (Kaiming-uniform A, zero B) on ``targets``, from ``seed``."""
    generator = make_generator(derive_seed(seed, "fresh-adapter"))
    return init_genome(
        targets.shapes,
        adapter.rank,
        adapter.alpha,
        generator,
        config=_adapter_config(targets, adapter, base_uri),
    )


def projected_genome(targets: Targets, adapter: AdapterRef, record: PointRecord, base_uri: str) -> Genome:
    """A ``cmaes`` genome's starting adapter: its point record projected onto the target modules."""
    try:
        points = module_points(record, targets.shapes)
        config = _adapter_config(targets, adapter, base_uri)
        return project_genome(points, targets.shapes, record.projection, config=config)
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
