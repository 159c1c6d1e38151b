"""The engine's values: what a generation plans for each genome, and what became of it.

These mirror the ``Generation`` API object: ``GenomePlan`` is one entry of ``spec.genomes`` and
``GenomeResult`` one entry of ``status.genomes``. They are frozen and convert to and from plain JSON
dicts (camelCase) so drivers can persist them anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

Origin = Literal["initial", "seed", "elite", "crossover", "mutation"]
Phase = Literal["Pending", "Running", "Succeeded", "Failed"]
FINISHED_PHASES = ("Succeeded", "Failed")


@dataclass(frozen=True)
class GenomePlan:
    """One genome of a generation, as planned before it runs.

    Attributes:
        id: ``<population>-g<generation>-<index>``.
        index: position in the generation.
        generation: the generation number.
        origin: how it came to be.
        parents: ids of its parents (empty for initial and seed genomes).
        adapter: store key (or URI, for seed adapters) of its starting adapter; ``None`` = fresh LoRA.
        hyperparameters: its hyperparameter genes.
        seed: the seed of its own random choices (fresh init, sampling, training).
        train: ``False`` for elites: they keep their trained adapter and fitness.
        fitness: an elite's carried fitness.
    """

    id: str
    index: int
    generation: int
    origin: Origin
    parents: tuple[str, ...] = ()
    adapter: str | None = None
    hyperparameters: Mapping[str, float] = field(default_factory=dict)
    seed: int = 0
    train: bool = True
    fitness: float | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "index": self.index,
            "generation": self.generation,
            "origin": self.origin,
            "parents": list(self.parents),
            "hyperparameters": dict(self.hyperparameters),
            "seed": self.seed,
            "train": self.train,
        }
        if self.adapter is not None:
            data["adapter"] = self.adapter
        if self.fitness is not None:
            data["fitness"] = self.fitness
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GenomePlan:
        return cls(
            id=data["id"],
            index=data["index"],
            generation=data["generation"],
            origin=data["origin"],
            parents=tuple(data.get("parents", ())),
            adapter=data.get("adapter"),
            hyperparameters=dict(data.get("hyperparameters", {})),
            seed=data.get("seed", 0),
            train=data.get("train", True),
            fitness=data.get("fitness"),
        )


@dataclass(frozen=True)
class GenomeResult:
    """What became of a planned genome.

    Attributes:
        id: the genome's id.
        phase: Pending, Running, Succeeded or Failed.
        attempts: how many times it was started.
        fitness: its fitness once Succeeded (higher or lower is better per the spec's goal).
        metrics: the trainer's headline metrics (accuracy, irpo_loss, ...).
        adapter: store key of its trained adapter.
        message: the last failure reason, if any.
    """

    id: str
    phase: Phase = "Pending"
    attempts: int = 0
    fitness: float | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    adapter: str | None = None
    message: str = ""

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED_PHASES

    @property
    def scored(self) -> bool:
        return self.phase == "Succeeded" and self.fitness is not None and math.isfinite(self.fitness)

    def succeeded(self, fitness: float, metrics: Mapping[str, float], adapter: str) -> GenomeResult:
        return replace(
            self, phase="Succeeded", fitness=fitness, metrics=dict(metrics), adapter=adapter, message=""
        )

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "phase": self.phase, "attempts": self.attempts}
        if self.fitness is not None:
            data["fitness"] = self.fitness
        if self.metrics:
            data["metrics"] = dict(self.metrics)
        if self.adapter is not None:
            data["adapter"] = self.adapter
        if self.message:
            data["message"] = self.message
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GenomeResult:
        return cls(
            id=data["id"],
            phase=data.get("phase", "Pending"),
            attempts=data.get("attempts", 0),
            fitness=data.get("fitness"),
            metrics=dict(data.get("metrics", {})),
            adapter=data.get("adapter"),
            message=data.get("message", ""),
        )


@dataclass(frozen=True)
class GenerationSummary:
    """One bounded history row: best, mean and worst fitness, and diversity (fitness standard deviation)."""

    generation: int
    best: float | None
    mean: float | None
    worst: float | None
    diversity: float | None
    best_genome: str | None
    succeeded: int
    failed: int

    def to_json(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "best": self.best,
            "mean": self.mean,
            "worst": self.worst,
            "diversity": self.diversity,
            "bestGenome": self.best_genome,
            "succeeded": self.succeeded,
            "failed": self.failed,
        }


def summarize(generation: int, results: Sequence[GenomeResult], maximize: bool) -> GenerationSummary:
    """The history row of a finished generation."""
    scored = [r for r in results if r.scored]
    values = [float(r.fitness or 0.0) for r in scored]
    failed = sum(1 for r in results if r.phase == "Failed")
    if not values:
        return GenerationSummary(generation, None, None, None, None, None, 0, failed)
    best_result = (max if maximize else min)(scored, key=lambda r: float(r.fitness or 0.0))
    mean = sum(values) / len(values)
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    best, worst = (max(values), min(values)) if maximize else (min(values), max(values))
    return GenerationSummary(generation, best, mean, worst, spread, best_result.id, len(values), failed)
