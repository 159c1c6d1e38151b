"""The toy model cache: keys, build records and complete-directory checks (standard library only).

A build lives in ``$NORA_CACHE_DIR/toy/<key>`` (default ``~/.cache/nora/toy/<key>``). The key hashes
everything that determines the model's bytes: the data generator version, the configs, the seed and the
torch/transformers minor versions (read from package metadata, so checking the cache never imports
torch). A directory is complete when its ``nora-toy.json`` names the key and the model files exist;
``nora-toy.json`` is always written last.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from nora.toy.config import ToyEvalConfig, ToyModelConfig, ToyTrainConfig
from nora.toy.data import GENERATOR_VERSION, ToyTaskConfig

INFO_FILE = "nora-toy.json"
MODEL_FILES = (  # the files a complete build has besides INFO_FILE
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
)
STALE_SCRATCH_SECONDS = 24 * 3600
"""Scratch directories of builds killed longer ago than this are deleted by the next build."""


@dataclass(frozen=True)
class ToyBuild:
    """Everything a toy model build depends on."""

    seed: int
    model: ToyModelConfig
    train: ToyTrainConfig
    task: ToyTaskConfig
    evaluation: ToyEvalConfig


@dataclass(frozen=True)
class ToyModelInfo:
    """What ``nora-toy.json`` records about a build."""

    key: str
    seed: int
    eval_accuracy: float
    eval_rows: int
    final_loss: float
    build_seconds: float


def cache_root() -> Path:
    """``$NORA_CACHE_DIR`` or ``~/.cache/nora``."""
    configured = os.environ.get("NORA_CACHE_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "nora"


def _minor_version(package: str) -> str:
    version = metadata.version(package)
    return ".".join(version.split("+", maxsplit=1)[0].split(".")[:2])


def cache_key(build: ToyBuild) -> str:
    """A short hash of everything that determines the built model's bytes (and its recorded accuracy)."""
    payload: dict[str, Any] = {
        "generator_version": GENERATOR_VERSION,
        "build": dataclasses.asdict(build),
        "torch": _minor_version("torch"),
        "transformers": _minor_version("transformers"),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def write_toy_info(model_dir: Path, info: ToyModelInfo) -> None:
    """Write ``nora-toy.json`` (the last file of a build)."""
    text = json.dumps(dataclasses.asdict(info), indent=2, sort_keys=True) + "\n"
    (model_dir / INFO_FILE).write_text(text, encoding="utf-8")


def read_toy_info(model_dir: Path) -> ToyModelInfo | None:
    """The build record of a toy model directory, or None when it has none (or an unreadable one)."""
    try:
        raw = json.loads((model_dir / INFO_FILE).read_text(encoding="utf-8"))
        names = [field.name for field in dataclasses.fields(ToyModelInfo)]
        return ToyModelInfo(**{name: raw[name] for name in names})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_complete(model_dir: Path, key: str) -> bool:
    """Whether ``model_dir`` holds a finished build with this key."""
    info = read_toy_info(model_dir)
    return info is not None and info.key == key and all((model_dir / f).is_file() for f in MODEL_FILES)


def remove_stale_scratch(parent: Path, max_age_seconds: float = STALE_SCRATCH_SECONDS) -> None:
    """Delete scratch directories (hidden ``.<key>.*``) left by builds killed long ago."""
    now = time.time()
    for entry in parent.glob(".*"):
        try:
            if entry.is_dir() and now - entry.stat().st_mtime > max_age_seconds:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            continue


def install(cached: Path, out_dir: Path) -> None:
    """Copy a complete build into ``out_dir``, its ``nora-toy.json`` last so a cut-off copy is incomplete."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / INFO_FILE).unlink(missing_ok=True)
    for source in sorted(cached.iterdir()):
        if source.is_file() and source.name != INFO_FILE:
            shutil.copyfile(source, out_dir / source.name)
    shutil.copyfile(cached / INFO_FILE, out_dir / INFO_FILE)
