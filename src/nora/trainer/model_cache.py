"""One shared copy of each fetched base model: ``<cache root>/<key of the URI>/``, fetched once, under a lock.

The cache root is ``$NORA_MODEL_CACHE`` (in a genome Job: the model-cache volume, mounted read-only and
filled by the model-initializer Job through ``nora fetch-model``), else ``$NORA_CACHE_DIR/models``, else
``~/.cache/nora/models``: local workers all share that folder. A copy is complete when its
:data:`MARKER` names its URI; the marker is written last and the folder renamed into place, so a fetch
that was cut off leaves no copy behind. Concurrent fetches of one URI take an exclusive ``flock`` on
``.<key>.lock`` and the ones that waited find the copy complete: the store is read once per URI.

``s3://`` models are copied without any pickled weight file (and must have ``.safetensors`` weights);
``hf://`` models are downloaded with ``huggingface_hub.snapshot_download``, safetensors and text files only.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from nora.evolution import contract
from nora.storage import Store, StoreError, open_uri
from nora.trainer.errors import TrainerInputError

MARKER = "nora-model.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
HF_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja", "*.py"]
CACHED_SCHEMES = ("s3://", "hf://")
log = logging.getLogger("nora.trainer")
Fetch = Callable[[Path], None]
"""Writes the model's files into the (empty) folder it is given."""


def cache_root() -> Path:
    """``$NORA_MODEL_CACHE``, else ``$NORA_CACHE_DIR/models``, else ``~/.cache/nora/models``."""
    configured = os.environ.get(contract.ENV_MODEL_CACHE)
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("NORA_CACHE_DIR")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "nora") / "models"


def cache_key(uri: str) -> str:
    """A folder name for ``uri``: its last path part (made safe) and a hash of the whole URI."""
    tail = re.sub(r"[^A-Za-z0-9._-]+", "-", uri.rstrip("/").rsplit("/", 1)[-1]).strip("-.") or "model"
    return f"{tail[:60]}-{hashlib.sha256(uri.encode()).hexdigest()[:16]}"


def complete_copy(uri: str, root: Path) -> Path | None:
    """The complete cached copy of ``uri`` under ``root``, or ``None``."""
    folder = root / cache_key(uri)
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return folder if isinstance(marker, dict) and marker.get("uri") == uri else None


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def _fetch_into(uri: str, root: Path, key: str, fetch: Fetch) -> Path:
    partial = root / f".{key}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    started = time.monotonic()
    try:
        fetch(partial)
        size = _folder_bytes(partial)
        marker = {"uri": uri, "bytes": size, "fetched_at": int(time.time())}
        (partial / MARKER).write_text(json.dumps(marker, sort_keys=True) + "\n", encoding="utf-8")
        shutil.rmtree(root / key, ignore_errors=True)
        partial.rename(root / key)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    log.info("model cache: fetched %s (%d bytes) in %.1fs", uri, size, time.monotonic() - started)
    return root / key


def cached_model(uri: str, root: Path, fetch: Fetch) -> Path:
    """The cached copy of ``uri`` under ``root``, made with ``fetch`` unless a complete one exists."""
    found = complete_copy(uri, root)
    if found is not None:
        return found
    key = cache_key(uri)
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = (root / f".{key}.lock").open("a")
    except OSError as error:
        raise TrainerInputError(
            f"baseModel.uri: {uri} is not in the model cache {root}, which is not writable "
            f"({error.strerror}); a mounted cache is filled by the model-initializer Job: check that it "
            "succeeded"
        ) from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return complete_copy(uri, root) or _fetch_into(uri, root, key, fetch)


def fetch_s3(store: Store, prefix: str, uri: str) -> Fetch:
    """A :data:`Fetch` copying every non-pickle object under ``prefix`` (safetensors weights required)."""

    def fetch(target: Path) -> None:
        try:
            keys = [key for key in store.list(prefix) if not key.endswith(PICKLE_SUFFIXES)]
            if not any(key.endswith(".safetensors") for key in keys):
                raise TrainerInputError(
                    f"baseModel.uri: {uri} holds no .safetensors weights "
                    "(pickled weights are never loaded from a store)"
                )
            for key in keys:
                path = target / key[len(prefix) :].lstrip("/")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(store.read_bytes(key))
        except StoreError as error:
            raise TrainerInputError(f"baseModel.uri: {error}") from None

    return fetch


def fetch_hub(uri: str) -> Fetch:
    """A :data:`Fetch` downloading ``hf://org/name[@revision]`` (safetensors and text files only)."""
    name, _, revision = uri.removeprefix("hf://").partition("@")

    def fetch(target: Path) -> None:
        from huggingface_hub import snapshot_download

        try:
            snapshot_download(
                repo_id=name, revision=revision or None, local_dir=str(target), allow_patterns=HF_PATTERNS
            )
        except Exception as error:  # the hub raises many types (HTTP, gated, missing repo, offline)
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise TrainerInputError(f"baseModel.uri: cannot download {uri}: {first}") from None
        if not any(target.glob("*.safetensors")):
            raise TrainerInputError(f"baseModel.uri: {uri} has no .safetensors weights")
        shutil.rmtree(target / ".cache", ignore_errors=True)

    return fetch


def fetcher(uri: str) -> Fetch:
    """How to fetch ``uri`` (``s3://`` or ``hf://``)."""
    if uri.startswith("hf://"):
        return fetch_hub(uri)
    if not uri.startswith("s3://"):
        raise TrainerInputError(f"baseModel.uri: {uri} is not fetched into a cache; use s3:// or hf://")
    try:
        store, prefix = open_uri(uri)
    except StoreError as error:
        raise TrainerInputError(f"baseModel.uri: {error}") from None
    return fetch_s3(store, prefix, uri)


def local_copy(uri: str, root: Path | None = None) -> Path:
    """The shared local copy of an ``s3://`` or ``hf://`` model, fetched first if needed."""
    return cached_model(uri, root or cache_root(), fetcher(uri))


def mounted_copy(uri: str) -> Path | None:
    """The complete copy of ``uri`` in ``$NORA_MODEL_CACHE`` (a genome Job's volume), if any."""
    configured = os.environ.get(contract.ENV_MODEL_CACHE)
    return complete_copy(uri, Path(configured)) if configured else None
