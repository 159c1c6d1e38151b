"""Build the toy base model, through the cache.

:func:`build_toy_model` pre-trains a tiny Llama model with a character-level tokenizer on the toy task
and saves both in Hugging Face format (safetensors) with a ``nora-toy.json`` describing the build. The
result is cached under ``$NORA_CACHE_DIR/toy/<key>`` (see :mod:`nora.toy.cache`); it is trained in a
scratch directory renamed into place, so an interrupted build never leaves a half-written cache entry.
A second call copies the cached files, or does nothing when ``out_dir`` already holds the same key; it
never imports torch. :mod:`nora.toy.evaluate` measures a saved model.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from nora.toy import cache
from nora.toy.config import (
    DEFAULT_EVAL,
    DEFAULT_MODEL,
    DEFAULT_TRAIN,
    Progress,
    ToyEvalConfig,
    ToyModelConfig,
    ToyTrainConfig,
)
from nora.toy.data import DEFAULT_TASK, ToyTaskConfig


def _build_cached(build: cache.ToyBuild, progress: Progress | None) -> Path:
    """The cache directory of this build, training it first (atomically) when it is missing."""
    key = cache.cache_key(build)
    final = cache.cache_root() / "toy" / key
    if cache.is_complete(final, key):
        return final
    from nora.toy import pretrain  # torch is imported only when something has to be trained

    final.parent.mkdir(parents=True, exist_ok=True)
    cache.remove_stale_scratch(final.parent)
    scratch = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=final.parent))
    try:
        pretrain.train_into(scratch, build, key, progress)
        scratch.chmod(0o755)  # mkdtemp makes it private; the cache entry is readable like any other
        if final.exists():  # a broken leftover, or another process finished first
            if cache.is_complete(final, key):
                return final
            shutil.rmtree(final)
        scratch.rename(final)
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return final


def build_toy_model(
    out_dir: Path,
    seed: int = 0,
    model: ToyModelConfig = DEFAULT_MODEL,
    train: ToyTrainConfig = DEFAULT_TRAIN,
    task: ToyTaskConfig = DEFAULT_TASK,
    evaluation: ToyEvalConfig = DEFAULT_EVAL,
    progress: Progress | None = None,
) -> Path:
    """Make ``out_dir`` hold the toy model for these settings (from the cache when possible); return it."""
    build = cache.ToyBuild(seed=seed, model=model, train=train, task=task, evaluation=evaluation)
    key = cache.cache_key(build)
    out_dir = Path(out_dir)
    if cache.is_complete(out_dir, key):
        return out_dir
    cached = _build_cached(build, progress)
    if out_dir.resolve() != cached.resolve():
        cache.install(cached, out_dir)
    return out_dir
