"""What a run keeps in its store besides adapters, the same for both drivers.

- a genome's outcome, read from its ``metrics.json`` (the one source of fitness);
- the ledger files ``population.json`` and ``g<N>/generation.json`` (see :mod:`nora.evolution.layout`),
  which ``nora report`` and ``nora status`` read for local and cluster runs alike;
- the exported best adapter under ``best/``, with ``best.json`` written last, so a reader that finds
  ``best.json`` finds a complete, verified adapter beside it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any

from nora.api.status import BestExport, BestGenome, HeldOutScore, PopulationRecord
from nora.evolution.contract import METRICS_FILE
from nora.evolution.layout import (
    best_key,
    generation_record_key,
    output_key,
    population_record_key,
    trained_adapter_key,
)
from nora.evolution.ledger import GenerationRecord, R, clip, scored_outcome
from nora.evolution.records import GenomePlan, GenomeResult
from nora.storage import Store, StoreError

BEST_RECORD = "best.json"
MANIFEST_FILE = "nora_manifest.json"
"""An adapter's manifest (``nora.genetics.io`` writes it; read here without importing torch)."""
_GENERATION_FOLDER = re.compile(r"/g(\d+)/generation\.json$")
_TEST_FILE = re.compile(r"g\d+/(task|test)\.json")
"""What the test-split scoring writes (see :mod:`nora.evolution.heldout`)."""
_GENOME_FILE = re.compile(r"genome\.json|(start|output|output/adapter)/[^/]+")
"""What a run writes in a genome's folder (the task, the bred start, the trainer's outputs), no deeper."""


def read_json(store: Store, key: str) -> dict[str, Any] | None:
    """The JSON object at ``key``, or ``None`` if it is missing or not a JSON object."""
    try:
        data = json.loads(store.read_bytes(key))
    except (StoreError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _dump(record: Any) -> bytes:
    return (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()


def genome_outcome(
    store: Store, prefix: str, population: str, plan: GenomePlan, result: GenomeResult
) -> GenomeResult:
    """The result of ``plan`` after its trainer exited successfully, from its ``metrics.json``."""
    out = output_key(prefix, population, plan.generation, plan.id)
    adapter = trained_adapter_key(prefix, population, plan.generation, plan.id)
    where = store.uri(f"{out}/{METRICS_FILE}")
    return scored_outcome(result, read_json(store, f"{out}/{METRICS_FILE}"), adapter, where)


def write_generation(store: Store, prefix: str, population: str, generation: GenerationRecord) -> None:
    key = generation_record_key(prefix, population, generation.number)
    store.write_bytes(key, _dump(generation.to_json_dict()))


def write_population(store: Store, prefix: str, population: str, record: PopulationRecord) -> None:
    data = PopulationRecord.model_validate(record.model_dump()).to_json_dict()
    store.write_bytes(population_record_key(prefix, population), _dump(data))


def read_population(store: Store, base: str) -> tuple[PopulationRecord, list[GenerationRecord]]:
    """The ledger under ``base`` (``<prefix>/<population>``): its record and generations, in order."""
    data = read_json(store, f"{base}/population.json")
    if data is None:
        raise StoreError(f"{store.uri(base)}: no population.json here; is this a NoRA population's folder?")
    generations = []
    for key in store.list(base):
        match = _GENERATION_FOLDER.search(key)
        if match and key == f"{base}/g{match.group(1)}/generation.json":
            generations.append(GenerationRecord.model_validate(read_json(store, key) or {}))
    generations.sort(key=lambda g: g.number)
    return PopulationRecord.model_validate(data), generations


def owned_keys(store: Store, base: str) -> list[str]:
    """The objects the run at ``base`` wrote, listed from its own records, never a whole shared prefix.

    That is the ledger files, the test-split scoring's two files, and in each recorded genome's folder and
    in ``best/`` only the files a run writes there (one level deep), so another run whose prefix happens
    to lie inside this one's folder keeps its objects.
    """
    keys = [key for key in (f"{base}/population.json",) if store.exists(key)]
    keys += [key for key in store.list(f"{base}/best") if "/" not in key.removeprefix(f"{base}/best/")]
    keys += [
        key for key in store.list(f"{base}/test") if _TEST_FILE.fullmatch(key.removeprefix(f"{base}/test/"))
    ]
    number = 0
    while (record := read_json(store, f"{base}/g{number}/generation.json")) is not None:
        keys.append(f"{base}/g{number}/generation.json")
        for plan in GenerationRecord.model_validate(record).plans:
            folder = f"{base}/g{number}/{plan.id}"
            keys += [k for k in store.list(folder) if _GENOME_FILE.fullmatch(k.removeprefix(folder + "/"))]
        number += 1
    return keys


def copy_prefix(store: Store, source: str, target: str) -> list[str]:
    """Copy every object under ``source/`` to ``target/`` (same relative names, manifest last)."""
    keys = store.list(source)
    keys.sort(key=lambda k: k.endswith(MANIFEST_FILE))
    names = []
    for key in keys:
        name = key.removeprefix(source.rstrip("/") + "/")
        store.write_bytes(f"{target}/{name}", store.read_bytes(key))
        names.append(name)
    return names


def verify_adapter(store: Store, key: str) -> list[str]:
    """Check every file of the adapter at ``key`` against its manifest; the file names checked.

    Raises:
        StoreError: naming the object, when the manifest is missing or unreadable, or a file is missing or
            its sha256 differs from the manifest's (the adapter was overwritten or corrupted).
    """
    manifest = read_json(store, f"{key}/{MANIFEST_FILE}")
    files = manifest.get("files") if manifest else None
    if not isinstance(files, dict) or not files:
        raise StoreError(
            f"{store.uri(key)}: no readable {MANIFEST_FILE}; the adapter is incomplete or corrupted"
        )
    for name, expected in sorted(files.items()):
        if hashlib.sha256(store.read_bytes(f"{key}/{name}")).hexdigest() != expected:
            raise StoreError(f"{store.uri(f'{key}/{name}')}: sha256 does not match {MANIFEST_FILE}")
    return sorted(files)


class CorruptAdapterError(StoreError):
    """A stored adapter failed verification; the message names its genome and object.

    Attributes:
        genome: the genome (as its generation lists it) whose adapter failed.
        key: the adapter's store key.
        detail: what failed (naming the object).
    """

    def __init__(self, genome: str, detail: str, key: str = "") -> None:
        super().__init__(f"genome {genome}: {detail}")
        self.genome = genome
        self.key = key
        self.detail = detail


def verify_parents(store: Store, plans: Sequence[GenomePlan], previous: Sequence[GenomeResult]) -> None:
    """Check every stored adapter the bred ``plans`` start from against its manifest, before breeding.

    Raises:
        CorruptAdapterError: naming the first parent genome (by id) whose adapter fails verification.
    """
    adapters = {result.id: result.adapter for result in previous}
    for parent in sorted({p for plan in plans if plan.bred for p in plan.parents}):
        key = adapters.get(parent)
        if key is None:
            continue
        try:
            verify_adapter(store, key)
        except StoreError as error:
            raise CorruptAdapterError(parent, str(error), key) from None


def export_best(
    store: Store, prefix: str, population: str, best: BestGenome, test: HeldOutScore | None = None
) -> BestExport:
    """Copy the best adapter to ``best/`` (verified before and after), then write ``best.json`` last
    (with the run's test-split score, when it has one)."""
    if best.adapter is None:
        raise StoreError(f"the best genome {best.genome} has no adapter to export")
    target = best_key(prefix, population)
    verify_adapter(store, best.adapter)
    copy_prefix(store, best.adapter, target)
    verify_adapter(store, target)
    record = BestExport(**best.model_dump(), population=population, exported=store.uri(target), test=test)
    store.write_bytes(f"{target}/{BEST_RECORD}", _dump(record.to_json_dict()))
    return record


def export_or_fail(store: Store, prefix: str, population: str, record: R) -> R:
    """``record`` after exporting its best adapter: unchanged, or Failed (``ExportFailed``) naming the genome
    and the object that failed verification, so a run whose export cannot be trusted never succeeds."""
    if record.best is None:
        return record
    try:
        export_best(store, prefix, population, record.best, record.test)
    except StoreError as error:
        message = clip(f"the best genome {record.best.genome} was not exported: {error}", 4096)
        return record.model_copy(update={"phase": "Failed", "reason": "ExportFailed", "message": message})
    return record
