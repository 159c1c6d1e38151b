"""The local run's state, kept in ``RUN_DIR/state.json`` and rewritten atomically after every change.

It is the Population's record (phase, history, best: the same record the operator keeps in
``Population.status``) plus what a cluster keeps in ``Generation`` objects: each generation's plan and
results. Timings are not kept here (they live in the per-genome logs), so two runs with the same seed end
in byte-identical states.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field

from nora.api.population import PopulationSpec
from nora.api.status import PopulationRecord
from nora.evolution.ledger import GenerationRecord

STATE_FILE = "state.json"


class RunState(PopulationRecord):
    """Everything ``nora run`` needs to resume."""

    population: str
    spec: dict[str, Any] | None = None
    """The spec the run started with, every default written out (``None`` in runs from before it was kept)."""
    spec_digest: str | None = None
    """Only in runs from before the spec was kept: the digest of their spec (:func:`spec_digest`)."""
    generations: list[GenerationRecord] = Field(default_factory=list)

    @property
    def current(self) -> GenerationRecord | None:
        return self.generations[-1] if self.generations else None

    def with_generation(self, generation: GenerationRecord) -> RunState:
        kept = [g for g in self.generations if g.number != generation.number]
        ordered = sorted([*kept, generation], key=lambda g: g.number)
        return self.model_copy(update={"generations": ordered})

    def record(self) -> PopulationRecord:
        """The part of the state that is the Population's record (``population.json`` in the store)."""
        return PopulationRecord.model_validate(self.model_dump(include=set(PopulationRecord.model_fields)))


RESUMABLE_FIELDS = ("maxGenerations", "stopping", "parallelism")
"""The spec fields that may change when a run is resumed."""


def spec_digest(spec_json: Mapping[str, Any]) -> str:
    """A digest of the spec fields that must not change between a run and its resumption."""
    frozen = {k: v for k, v in spec_json.items() if k not in RESUMABLE_FIELDS}
    return hashlib.sha256(json.dumps(frozen, sort_keys=True).encode()).hexdigest()


def spec_changes(
    started: Mapping[str, Any], current: Mapping[str, Any], explicit: Mapping[str, Any], path: str = "spec"
) -> list[str]:
    """The fields a manifest given to resume a run changes from the spec the run started with.

    Args:
        started: the run's spec, every default written out (:attr:`RunState.spec`).
        current: the manifest's spec, every default written out.
        explicit: the manifest's spec without the fields at their defaults: a field the run's version did
            not have yet is no change while the manifest leaves it at its default. A default that changed
            between versions is a change, so a resumed run never silently switches behaviour.
        path: the field path of these mappings, for the messages.

    Returns:
        One message per changed field, naming it; empty when the run may resume.
    """
    changes = []
    for key in sorted(set(started) | set(current)):
        where, old, new = f"{path}.{key}", started.get(key), current.get(key)
        if path == "spec" and key in RESUMABLE_FIELDS:
            continue
        if key not in started:
            if key in explicit:
                changes.append(f"{where}: the run started without it, the manifest gives {new!r}")
        elif isinstance(old, Mapping) and isinstance(new, Mapping):
            changes += spec_changes(old, new, explicit.get(key, {}), where)
        elif old != new:
            changes.append(f"{where}: the run started with {old!r}, the manifest gives {new!r}")
    return changes


def resume_changes(existing: RunState, spec: PopulationSpec) -> list[str]:
    """What ``spec`` changes from the spec ``existing`` started with (see :func:`spec_changes`); a run from
    before the spec was kept can only be compared by digest."""
    current = spec.to_json_dict()
    if existing.spec is None:
        return [] if existing.spec_digest == spec_digest(current) else ["spec: differs from the run's"]
    explicit = spec.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    return spec_changes(existing.spec, current, explicit)


def load_state(run_dir: Path) -> RunState | None:
    path = run_dir / STATE_FILE
    return RunState.model_validate_json(path.read_bytes()) if path.exists() else None


def save_state(run_dir: Path, state: RunState) -> None:
    """Write ``state.json`` atomically (temporary file, fsync, rename)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(state.to_json_dict(), indent=2, sort_keys=True) + "\n").encode()
    handle, temporary = tempfile.mkstemp(prefix=".state.", dir=run_dir)
    with os.fdopen(handle, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, run_dir / STATE_FILE)
