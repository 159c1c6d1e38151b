"""Read and write genomes as PEFT LoRA adapters, with a sha256 manifest verified on read.

On disk a genome is a PEFT adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``)
plus two files PEFT ignores: ``nora_genes.json`` (hyperparameter genes) and ``nora_manifest.json``
(sha256 of every other file). Weights are only ever read from safetensors: pickled weights are refused,
never loaded. Writes go to a temporary sibling folder that is renamed into place, so a crash leaves
either the old folder or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from nora.genetics.errors import GeneticsError, GenomeFormatError
from nora.genetics.genome import SUPPORTED_DTYPES, Genome, LoraModule

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
GENES_FILE = "nora_genes.json"
MANIFEST_FILE = "nora_manifest.json"
PICKLED_WEIGHT_FILES = ("adapter_model.bin", "pytorch_model.bin", "adapter_model.pt")
_KEY_PREFIX = "base_model.model."
_LORA_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<factor>[AB])\.weight$")
_DERIVED_CONFIG_KEYS = ("r", "lora_alpha", "rank_pattern", "alpha_pattern", "use_rslora")


def _dump_json(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise GenomeFormatError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(value, dict):
        raise GenomeFormatError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_status(directory: Path) -> str:
    """``"ok"``, ``"absent"``, or ``"mismatch: <file>"`` for the adapter folder's manifest."""
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.exists():
        return "absent"
    files = _read_json_object(manifest_path).get("files", {})
    if not isinstance(files, dict) or not files:
        return f"mismatch: {MANIFEST_FILE} lists no files"
    for name, expected in sorted(files.items()):
        path = directory / name
        if not path.is_file() or sha256_file(path) != expected:
            return f"mismatch: {name}"
    return "ok"


def _verify_manifest(directory: Path) -> None:
    status = manifest_status(directory)
    if status.startswith("mismatch"):
        file = status.split(": ", 1)[1]
        raise GenomeFormatError(
            f"{directory / file}: sha256 does not match {MANIFEST_FILE}; the adapter is corrupted or was "
            "edited after it was written"
        )


def _resolve_pattern(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """PEFT's rule for ``rank_pattern``/``alpha_pattern`` lookups (``peft.utils.other.get_pattern_key``).

    Restated rather than imported because importing peft loads transformers (~150 MiB) into the
    operator's breeding process; ``test_genome_io`` checks it agrees with PEFT's function."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return patterns.get(module, default)


def _check_weight_file(directory: Path) -> Path:
    weights_path = directory / WEIGHTS_FILE
    if weights_path.is_file():
        return weights_path
    for pickled in PICKLED_WEIGHT_FILES:
        if (directory / pickled).exists():
            raise GenomeFormatError(
                f"{directory / pickled}: pickled weights are never loaded (unsafe); convert the adapter to "
                f"safetensors ({WEIGHTS_FILE}), e.g. save it again with PEFT's save_pretrained"
            )
    raise GenomeFormatError(f"{weights_path}: missing; an adapter folder needs {WEIGHTS_FILE}")


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as error:
        raise GenomeFormatError(f"{path}: not a readable safetensors file ({error})") from None


def _group_factors(tensors: dict[str, torch.Tensor], path: Path) -> dict[str, dict[str, torch.Tensor]]:
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        match = _LORA_KEY.match(key)
        if match is None:
            raise GenomeFormatError(
                f"{path}: tensor '{key}' is not a LoRA A/B weight; nora breeds plain LoRA adapters only "
                "(no DoRA magnitudes, embedding adapters or modules_to_save)"
            )
        if tensor.dtype not in SUPPORTED_DTYPES or tensor.dim() != 2:
            raise GenomeFormatError(
                f"{path}: tensor '{key}' is {tensor.dtype} with {tensor.dim()} dims; expected a 2-d "
                "float32, bfloat16 or float16 matrix"
            )
        grouped.setdefault(match["module"], {})[match["factor"]] = tensor
    if not grouped:
        raise GenomeFormatError(f"{path}: holds no LoRA weights")
    return grouped


def _build_module(
    name: str, factors: dict[str, torch.Tensor], config: dict[str, Any], path: Path
) -> LoraModule:
    if set(factors) != {"A", "B"}:
        missing = "lora_B" if "A" in factors else "lora_A"
        raise GenomeFormatError(f"{path}: module {name} has no {missing}.weight")
    a, b = factors["A"], factors["B"]
    if a.shape[0] != b.shape[1]:
        raise GenomeFormatError(
            f"{path}: module {name} has A/B rank mismatch: lora_A is {tuple(a.shape)} (rank {a.shape[0]}) "
            f"but lora_B is {tuple(b.shape)} (rank {b.shape[1]})"
        )
    expected_rank = int(_resolve_pattern(dict(config.get("rank_pattern") or {}), name, config.get("r", 8)))
    if expected_rank != a.shape[0]:
        raise GenomeFormatError(
            f"{path}: module {name} tensors have rank {a.shape[0]} but {CONFIG_FILE} (r/rank_pattern) "
            f"says {expected_rank}; the weights do not belong to this config"
        )
    alpha = _resolve_pattern(dict(config.get("alpha_pattern") or {}), name, config.get("lora_alpha", 8))
    return LoraModule(a=a, b=b, alpha=float(alpha))


def load_genome(directory: str | os.PathLike[str]) -> Genome:
    """Load a PEFT LoRA adapter folder as a :class:`Genome`, verifying its manifest if it has one.

    Args:
        directory: folder with ``adapter_config.json`` and ``adapter_model.safetensors``.

    Returns:
        The genome, tensors in their stored dtype.

    Raises:
        GenomeFormatError: naming the file and what is wrong with it.
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise GenomeFormatError(f"{folder}: adapter folder does not exist")
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise GenomeFormatError(f"{config_path}: missing; an adapter folder needs {CONFIG_FILE}")
    weights_path = _check_weight_file(folder)
    _verify_manifest(folder)
    config = _read_json_object(config_path)
    if config.get("peft_type", "LORA") != "LORA":
        raise GenomeFormatError(
            f"{config_path}: peft_type is {config['peft_type']!r}; only LORA is supported"
        )
    grouped = _group_factors(_load_tensors(weights_path), weights_path)
    modules = {name: _build_module(name, factors, config, weights_path) for name, factors in grouped.items()}
    genes = _read_genes(folder / GENES_FILE)
    carried = {key: value for key, value in config.items() if key not in _DERIVED_CONFIG_KEYS}
    return Genome(
        modules=modules, config=carried, hyperparameters=genes, use_rslora=bool(config.get("use_rslora"))
    )


def _read_genes(path: Path) -> dict[str, float]:
    if not path.exists():
        return {}
    genes = _read_json_object(path).get("hyperparameters", {})
    if not isinstance(genes, dict) or not all(isinstance(v, int | float) for v in genes.values()):
        raise GenomeFormatError(f"{path}: 'hyperparameters' must map gene names to numbers")
    return {str(name): float(value) for name, value in genes.items()}


def _most_common(values: list[Any]) -> Any:
    counts = Counter(values)
    top = max(counts.values())
    return min(value for value, count in counts.items() if count == top)


def adapter_config(genome: Genome) -> dict[str, Any]:
    """The ``adapter_config.json`` for ``genome``: carried fields plus derived rank and alpha fields.

    ``r`` and ``lora_alpha`` are the most common values; modules that differ get an exact (escaped)
    entry in ``rank_pattern`` / ``alpha_pattern``, which PEFT matches as ``(.*\\.)?<key>$``.
    """
    config: dict[str, Any] = {"peft_type": "LORA", "bias": "none", "lora_dropout": 0.0}
    config.update(genome.config)
    rank = _most_common([m.rank for m in genome.modules.values()])
    alpha = _most_common([m.alpha for m in genome.modules.values()])
    config["r"] = rank
    config["lora_alpha"] = alpha
    config["rank_pattern"] = {re.escape(n): m.rank for n, m in genome.items() if m.rank != rank}
    config["alpha_pattern"] = {re.escape(n): m.alpha for n, m in genome.items() if m.alpha != alpha}
    config["use_rslora"] = genome.use_rslora
    config.setdefault("target_modules", sorted({name.rsplit(".", 1)[-1] for name in genome.modules}))
    return config


def _write_folder(genome: Genome, folder: Path) -> None:
    tensors = {}
    for name, module in genome.items():
        tensors[f"{_KEY_PREFIX}{name}.lora_A.weight"] = module.a.contiguous()
        tensors[f"{_KEY_PREFIX}{name}.lora_B.weight"] = module.b.contiguous()
    save_file(tensors, folder / WEIGHTS_FILE, metadata={"format": "pt"})
    (folder / CONFIG_FILE).write_bytes(_dump_json(adapter_config(genome)))
    (folder / GENES_FILE).write_bytes(
        _dump_json({"hyperparameters": dict(sorted(genome.hyperparameters.items()))})
    )
    files = {name: sha256_file(folder / name) for name in (CONFIG_FILE, WEIGHTS_FILE, GENES_FILE)}
    (folder / MANIFEST_FILE).write_bytes(_dump_json({"algorithm": "sha256", "files": files}))


def save_genome(genome: Genome, directory: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``genome`` as a PEFT adapter folder, atomically.

    Args:
        genome: what to write; tensors are written in their own dtype.
        directory: the target folder; its parent is created if needed.
        overwrite: replace an existing folder (the old one is removed only after the new one is in place).

    Returns:
        The folder written.

    Raises:
        GeneticsError: if the folder exists and ``overwrite`` is false.
    """
    target = Path(directory)
    if target.exists() and not overwrite:
        raise GeneticsError(f"{target}: already exists; choose a new output folder or remove it first")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    try:
        _write_folder(genome, staging)
        if target.exists():
            retired = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
            os.rename(target, retired)
            os.rename(staging, target)
            shutil.rmtree(retired)
        else:
            os.rename(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target
