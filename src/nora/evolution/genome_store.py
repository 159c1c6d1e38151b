"""Genomes in a store: an adapter folder's files under one key prefix, manifest written last.

Readers download into a temporary folder and load through ``nora.genetics.load_genome``, which verifies
every file against the manifest, so a half-uploaded or corrupted adapter is never used.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from nora.genetics import Genome, GenomeFormatError, load_genome, save_genome
from nora.genetics.io import CONFIG_FILE, GENES_FILE, MANIFEST_FILE, WEIGHTS_FILE
from nora.storage import Store, StoreError

ADAPTER_FILES = (CONFIG_FILE, WEIGHTS_FILE, GENES_FILE, MANIFEST_FILE)
"""Upload order: the manifest comes last so its presence means the adapter is complete."""


def upload_folder(store: Store, folder: Path, key: str) -> None:
    """Copy a saved adapter folder to ``key`` (manifest last)."""
    for name in ADAPTER_FILES:
        store.write_bytes(f"{key}/{name}", (folder / name).read_bytes())


def upload_genome(store: Store, key: str, genome: Genome) -> None:
    """Save ``genome`` in PEFT format under ``key``."""
    with tempfile.TemporaryDirectory(prefix="nora-up-") as scratch:
        upload_folder(store, save_genome(genome, Path(scratch) / "adapter"), key)


def download_folder(store: Store, key: str, folder: Path) -> Path:
    """Copy the adapter at ``key`` into ``folder`` (created); raises if it is incomplete."""
    if not store.exists(f"{key}/{MANIFEST_FILE}"):
        raise StoreError(f"{store.uri(key)}: no complete adapter here ({MANIFEST_FILE} missing)")
    folder.mkdir(parents=True, exist_ok=True)
    for name in ADAPTER_FILES:
        if store.exists(f"{key}/{name}"):
            (folder / name).write_bytes(store.read_bytes(f"{key}/{name}"))
    return folder


def download_genome(store: Store, key: str) -> Genome:
    """Load the adapter at ``key``, verified against its manifest."""
    with tempfile.TemporaryDirectory(prefix="nora-down-") as scratch:
        try:
            return load_genome(download_folder(store, key, Path(scratch) / "adapter"))
        except GenomeFormatError as error:
            raise GenomeFormatError(f"{store.uri(key)}: {error}") from None
