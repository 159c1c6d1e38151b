"""A run's timings and its outputs in the store, as :mod:`nora.evolution.contract` names them.

``samples.jsonl`` and ``pairs.jsonl`` first, then the adapter (manifest last), then ``metrics.json``
(with the total duration): a reader that finds ``metrics.json`` finds everything else beside it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from nora.evolution.contract import ADAPTER_DIR, METRICS_FILE, PAIRS_FILE, SAMPLES_FILE
from nora.evolution.genome_store import upload_genome
from nora.genetics import Genome, save_genome
from nora.storage import LocalStore, StoreError, open_uri
from nora.trainer.errors import TrainerError

log = logging.getLogger("nora.trainer")


@dataclass
class PhaseClock:
    """How long each phase of a run took (logged as it goes) and the whole run so far."""

    durations: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        begun = time.monotonic()
        log.info("%s: started", name)
        try:
            yield
        finally:
            self.durations[name] = round(time.monotonic() - begun, 3)
        log.info("%s: done in %.1fs", name, self.durations[name])

    def total(self) -> float:
        return round(time.monotonic() - self.started, 3)


def _with_total(metrics: dict[str, Any], clock: PhaseClock) -> bytes:
    metrics["durations"] = {**clock.durations, "total": clock.total()}
    return (json.dumps(metrics, indent=2, sort_keys=True) + "\n").encode()


def _jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(
        json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n" for record in records
    ).encode()


def write_outputs(
    output: str,
    genome: Genome,
    records: dict[str, list[dict[str, Any]]],
    metrics: dict[str, Any],
    clock: PhaseClock,
) -> tuple[str, str, str]:
    """Write ``samples.jsonl``, ``pairs.jsonl``, ``adapter/`` and (last) ``metrics.json``; their URIs.

    ``records`` maps ``samples`` (one greedy eval completion per eval prompt) and ``pairs`` (every
    training and held-out preference pair) to their rows.
    """
    try:
        store, key = open_uri(output)
        for name, file in (("samples", SAMPLES_FILE), ("pairs", PAIRS_FILE)):
            store.write_bytes(f"{key}/{file}", _jsonl(records[name]))
        if isinstance(store, LocalStore):
            save_genome(genome, store.root / key / ADAPTER_DIR, overwrite=True)
        else:
            upload_genome(store, f"{key}/{ADAPTER_DIR}", genome)
        store.write_bytes(f"{key}/{METRICS_FILE}", _with_total(metrics, clock))
    except StoreError as error:
        raise TrainerError(f"output: {error}") from None
    base = output.rstrip("/")
    return f"{base}/{METRICS_FILE}", f"{base}/{ADAPTER_DIR}", f"{base}/{SAMPLES_FILE}"
