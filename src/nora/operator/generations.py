"""``Generation`` objects as the engine sees them: plans and results, converted both ways (pure).

The engine works with store keys; Kubernetes objects show ``s3://bucket/key`` URIs. Seed adapters are
user URIs already and stay as given. A Generation's status is the durable record of its genomes: a
restarted operator reads it back, together with the Jobs that exist, and goes on from there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from nora.api.generation import (
    METRICS_LIMIT,
    GenerationPhase,
    GenerationSpec,
    GenerationStatus,
    GenomeSpec,
    GenomeStatus,
)
from nora.api.status import MESSAGE_LIMIT
from nora.evolution.records import GenomePlan, GenomeResult, summarize
from nora.operator.objects import JSON, ObjectRef


@dataclass(frozen=True)
class Location:
    """The bucket that turns store keys into URIs and back."""

    bucket: str

    def uri(self, key: str | None) -> str | None:
        if key is None or "://" in key:
            return key
        return f"s3://{self.bucket}/{key}"

    def key(self, uri: str | None) -> str | None:
        prefix = f"s3://{self.bucket}/"
        if uri is not None and uri.startswith(prefix):
            return uri.removeprefix(prefix)
        return uri


def genome_spec(plan: GenomePlan, location: Location) -> JSON:
    """One ``spec.genomes[]`` entry."""
    adapter = plan.adapter if plan.origin == "seed" else location.uri(plan.adapter)
    entry = GenomeSpec(
        id=plan.id,
        parents=list(plan.parents),
        origin=plan.origin,
        adapter=adapter,
        hyperparameters=dict(plan.hyperparameters),
        seed=plan.seed,
        train=plan.train,
        fitness=plan.fitness,
    )
    return entry.to_json_dict()


def plan_of(entry: GenomeSpec, generation: int, index: int, location: Location) -> GenomePlan:
    """The engine's plan of one ``spec.genomes[]`` entry."""
    adapter = entry.adapter if entry.origin == "seed" else location.key(entry.adapter)
    return GenomePlan(
        id=entry.id,
        index=index,
        generation=generation,
        origin=entry.origin,
        parents=tuple(entry.parents),
        adapter=adapter,
        hyperparameters=dict(entry.hyperparameters),
        seed=entry.seed,
        train=entry.train,
        fitness=entry.fitness,
    )


def headline_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers among a trainer's top-level metrics (at most ``METRICS_LIMIT``, sorted by name)."""
    numbers = {
        str(k): float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))
    }
    return dict(sorted(numbers.items())[:METRICS_LIMIT])


def clip(message: str, limit: int = MESSAGE_LIMIT) -> str:
    """``message`` on one line, at most ``limit`` characters."""
    text = " ".join(message.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def genome_status(result: GenomeResult, job: str | None, location: Location) -> JSON:
    """One ``status.genomes[]`` entry."""
    entry = GenomeStatus(
        id=result.id,
        job=job,
        phase=result.phase,
        attempts=result.attempts,
        fitness=result.fitness,
        metrics=headline_metrics(result.metrics),
        adapter=location.uri(result.adapter),
        message=clip(result.message),
    )
    data = entry.to_json_dict()
    for empty in ("metrics", "message"):
        if not data.get(empty):
            data.pop(empty, None)
    return data


def result_of(entry: GenomeStatus, location: Location) -> GenomeResult:
    """The engine's result of one ``status.genomes[]`` entry."""
    return GenomeResult(
        id=entry.id,
        phase=entry.phase,
        attempts=entry.attempts,
        fitness=entry.fitness,
        metrics=dict(entry.metrics),
        adapter=location.key(entry.adapter),
        message=entry.message,
    )


def initial_results(
    plans: Sequence[GenomePlan], previous: Mapping[str, GenomeResult]
) -> tuple[GenomeResult, ...]:
    """Every genome Pending, except elites: Succeeded at once with their parent's fitness and adapter."""
    results = []
    for plan in plans:
        if plan.train:
            results.append(GenomeResult(id=plan.id))
            continue
        parent = previous.get(plan.parents[0]) if plan.parents else None
        results.append(
            GenomeResult(
                id=plan.id,
                phase="Succeeded",
                fitness=plan.fitness,
                metrics=dict(parent.metrics) if parent else {},
                adapter=plan.adapter,
            )
        )
    return tuple(results)


def spec_json(population: str, plans: Sequence[GenomePlan], planned_with: JSON, location: Location) -> JSON:
    """A Generation's ``spec``: the population spec it was planned with, and its genomes."""
    generation = plans[0].generation if plans else 0
    spec = GenerationSpec(
        population=population,
        generation=generation,
        genomes=[GenomeSpec.model_validate(genome_spec(p, location)) for p in plans],
        planned_with=planned_with,
    )
    return spec.to_json_dict()


@dataclass(frozen=True)
class GenerationState:
    """One Generation object: who it is, its plans, and its genomes' results and Jobs.

    ``phase`` is ``None`` while the object's status has not been written yet (created, then the
    operator stopped).
    """

    ref: ObjectRef
    number: int
    plans: tuple[GenomePlan, ...]
    planned_with: JSON
    phase: GenerationPhase | None
    results: tuple[GenomeResult, ...] = ()
    jobs: Mapping[str, str] = field(default_factory=dict)
    breeding_seconds: float | None = None
    start_time: str | None = None
    completion_time: str | None = None
    tasks_ready: bool = False
    """In memory only: this process saw every genome's genome.json written (by the breeding step)."""

    @classmethod
    def from_body(cls, body: Mapping[str, Any], location: Location) -> GenerationState:
        spec = GenerationSpec.model_validate(body["spec"])
        raw = body.get("status") or {}
        status = GenerationStatus.model_validate(raw) if raw.get("phase") else None
        plans = tuple(plan_of(g, spec.generation, i, location) for i, g in enumerate(spec.genomes))
        results = tuple(result_of(g, location) for g in status.genomes) if status else ()
        jobs = {g.id: g.job for g in status.genomes if g.job} if status else {}
        return cls(
            ref=ObjectRef.of(body),
            number=spec.generation,
            plans=plans,
            planned_with=dict(spec.planned_with),
            phase=status.phase if status else None,
            results=results,
            jobs=jobs,
            breeding_seconds=status.breeding_seconds if status else None,
            start_time=status.start_time if status else None,
            completion_time=status.completion_time if status else None,
        )

    @property
    def finished(self) -> bool:
        return bool(self.results) and all(r.finished for r in self.results)

    def result(self, genome: str) -> GenomeResult:
        return next(r for r in self.results if r.id == genome)

    def with_result(self, result: GenomeResult, job: str | None = None) -> GenerationState:
        results = tuple(result if r.id == result.id else r for r in self.results)
        jobs = {**self.jobs, result.id: job} if job else self.jobs
        return replace(self, results=results, jobs=jobs)

    def status_json(self, location: Location, maximize: bool) -> JSON:
        """The full ``status`` to write (counts and, once finished, the fitness summary)."""
        counts = {phase: sum(1 for r in self.results if r.phase == phase) for phase in _PHASES}
        status: dict[str, Any] = {
            "phase": self.phase,
            "genomes": [genome_status(r, self.jobs.get(r.id), location) for r in self.results],
            "pending": counts["Pending"],
            "running": counts["Running"],
            "succeeded": counts["Succeeded"],
            "failed": counts["Failed"],
            "breedingSeconds": self.breeding_seconds,
            "startTime": self.start_time,
            "completionTime": self.completion_time,
        }
        if self.finished:
            row = summarize(self.number, self.results, maximize)
            status.update(best=row.best, mean=row.mean, worst=row.worst, diversity=row.diversity)
            status["bestGenome"] = row.best_genome
        return GenerationStatus.model_validate(status).to_json_dict()


_PHASES = ("Pending", "Running", "Succeeded", "Failed")
