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

from nora.api.status import PopulationRecord
from nora.evolution.ledger import GenerationRecord

STATE_FILE = "state.json"


class RunState(PopulationRecord):
    """Everything ``nora run`` needs to resume."""

    population: str
    spec_digest: str
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


def spec_digest(spec_json: Mapping[str, Any]) -> str:
    """A digest of the spec fields that must not change between a run and its resumption.

    ``spec_json`` leaves out the fields at their defaults, so a later version that adds a field with a
    default (which changes nothing) still resumes the run, and writing a default out changes nothing either.
    """
    frozen = {k: v for k, v in spec_json.items() if k not in ("maxGenerations", "stopping", "parallelism")}
    return hashlib.sha256(json.dumps(frozen, sort_keys=True).encode()).hexdigest()


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
