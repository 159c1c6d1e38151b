"""The local run's state, kept in ``RUN_DIR/state.json`` and rewritten atomically after every change.

It holds what cannot be re-derived: each generation's plan and results, the history rows, the run's
phase and its best genome. Plans are deterministic, but storing them keeps reports and lineage cheap.
Timings are not kept here (they live in the per-genome logs), so two runs with the same seed end in
byte-identical states.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from nora.evolution.records import GenerationSummary, GenomePlan, GenomeResult

STATE_FILE = "state.json"
RunPhase = Literal["Running", "Succeeded", "Failed"]


@dataclass(frozen=True)
class GenerationState:
    """One generation: its plan and the result of every genome, in index order."""

    number: int
    plans: tuple[GenomePlan, ...]
    results: tuple[GenomeResult, ...]

    def with_result(self, result: GenomeResult) -> GenerationState:
        return replace(self, results=tuple(result if r.id == result.id else r for r in self.results))

    def result(self, genome: str) -> GenomeResult:
        return next(r for r in self.results if r.id == genome)

    @property
    def finished(self) -> bool:
        return all(r.finished for r in self.results)


@dataclass(frozen=True)
class RunState:
    """Everything ``nora run`` needs to resume."""

    population: str
    spec_digest: str
    phase: RunPhase = "Running"
    reason: str = ""
    message: str = ""
    generations: tuple[GenerationState, ...] = ()
    history: tuple[GenerationSummary, ...] = ()
    best: Mapping[str, Any] = field(default_factory=dict)

    @property
    def current(self) -> GenerationState | None:
        return self.generations[-1] if self.generations else None

    def with_generation(self, generation: GenerationState) -> RunState:
        kept = tuple(g for g in self.generations if g.number != generation.number)
        return replace(self, generations=(*kept, generation))

    def to_json(self) -> dict[str, Any]:
        return {
            "population": self.population,
            "specDigest": self.spec_digest,
            "phase": self.phase,
            "reason": self.reason,
            "message": self.message,
            "generations": [
                {
                    "number": g.number,
                    "plans": [p.to_json() for p in g.plans],
                    "results": [r.to_json() for r in g.results],
                }
                for g in self.generations
            ],
            "history": [h.to_json() for h in self.history],
            "best": dict(self.best),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunState:
        generations = tuple(
            GenerationState(
                number=g["number"],
                plans=tuple(GenomePlan.from_json(p) for p in g["plans"]),
                results=tuple(GenomeResult.from_json(r) for r in g["results"]),
            )
            for g in data.get("generations", [])
        )
        history = tuple(
            GenerationSummary(
                generation=h["generation"],
                best=h["best"],
                mean=h["mean"],
                worst=h["worst"],
                diversity=h["diversity"],
                best_genome=h["bestGenome"],
                succeeded=h["succeeded"],
                failed=h["failed"],
            )
            for h in data.get("history", [])
        )
        return cls(
            population=data["population"],
            spec_digest=data["specDigest"],
            phase=data.get("phase", "Running"),
            reason=data.get("reason", ""),
            message=data.get("message", ""),
            generations=generations,
            history=history,
            best=dict(data.get("best", {})),
        )


def spec_digest(spec_json: Mapping[str, Any]) -> str:
    """A digest of the spec fields that must not change between a run and its resumption."""
    frozen = {k: v for k, v in spec_json.items() if k not in ("maxGenerations", "stopping", "parallelism")}
    return hashlib.sha256(json.dumps(frozen, sort_keys=True).encode()).hexdigest()


def load_state(run_dir: Path) -> RunState | None:
    path = run_dir / STATE_FILE
    return RunState.from_json(json.loads(path.read_text())) if path.exists() else None


def save_state(run_dir: Path, state: RunState) -> None:
    """Write ``state.json`` atomically (temporary file, fsync, rename)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n").encode()
    handle, temporary = tempfile.mkstemp(prefix=".state.", dir=run_dir)
    with os.fdopen(handle, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, run_dir / STATE_FILE)
