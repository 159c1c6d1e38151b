"""``Generation`` objects as the engine sees them: a :class:`GenerationRecord` plus the object's own fields.

The engine works with store keys; Kubernetes objects show ``s3://bucket/key`` URIs. Seed adapters are
user URIs already and stay as given. A Generation's status is the durable record of its genomes: a
restarted operator reads it back, together with the Jobs that exist, and goes on from there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from nora.api.generation import GenerationPhase, GenerationSpec, GenerationStatus, GenomeSpec, GenomeStatus
from nora.evolution.ledger import GenerationRecord, clip, headline_metrics
from nora.evolution.records import GenomePlan, GenomeResult, Goal, summarize
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


def genome_spec(plan: GenomePlan, location: Location) -> GenomeSpec:
    """One ``spec.genomes[]`` entry."""
    adapter = plan.adapter if plan.origin == "seed" else location.uri(plan.adapter)
    return plan.entry().model_copy(update={"adapter": adapter})


def plan_of(entry: GenomeSpec, generation: int, index: int, location: Location) -> GenomePlan:
    """The engine's plan of one ``spec.genomes[]`` entry."""
    adapter = entry.adapter if entry.origin == "seed" else location.key(entry.adapter)
    fields = {**entry.model_dump(), "adapter": adapter}
    return GenomePlan(**fields, index=index, generation=generation)


def genome_status(result: GenomeResult, job: str | None, location: Location) -> JSON:
    """One ``status.genomes[]`` entry (messages clipped, metrics bounded, empty ones left out)."""
    entry = GenomeStatus(
        id=result.id,
        job=job,
        phase=result.phase,
        attempts=result.attempts,
        fitness=result.fitness,
        metrics=headline_metrics(result.metrics),
        adapter=location.uri(result.adapter),
        message=clip(result.message),
        retrains=result.retrains,
    )
    data = entry.to_json_dict()
    for empty in ("metrics", "message", "retrains"):
        if not data.get(empty):
            data.pop(empty, None)
    return data


def result_of(entry: GenomeStatus, location: Location) -> GenomeResult:
    """The engine's result of one ``status.genomes[]`` entry."""
    return GenomeResult(**{**entry.model_dump(), "adapter": location.key(entry.adapter)})


PLANNED_WITHOUT = ("template",)
"""Spec fields a Generation does not keep: the Job template is read from the Population (and the
Kubernetes pass-through has no size bound of its own)."""


def spec_json(population: str, plans: Sequence[GenomePlan], planned_with: JSON, location: Location) -> JSON:
    """A Generation's ``spec``: the population spec it was planned with (less the Job template), and its
    genomes."""
    planned_with = {key: value for key, value in planned_with.items() if key not in PLANNED_WITHOUT}
    spec = GenerationSpec(
        population=population,
        generation=plans[0].generation if plans else 0,
        genomes=[genome_spec(p, location) for p in plans],
        planned_with=planned_with,
    )
    return spec.to_json_dict()


@dataclass(frozen=True)
class GenerationObject:
    """One Generation object: who it is, its record (plans and results), its Jobs and its timings.

    ``phase`` is ``None`` while the object's status has not been written yet (created, then the
    operator stopped).
    """

    ref: ObjectRef
    record: GenerationRecord
    planned_with: JSON
    phase: GenerationPhase | None
    jobs: Mapping[str, str] = field(default_factory=dict)
    breeding_seconds: float | None = None
    start_time: str | None = None
    completion_time: str | None = None
    tasks_ready: bool = False
    """In memory only: this process saw every genome's genome.json written (by the breeding step)."""

    @classmethod
    def from_body(cls, body: Mapping[str, Any], location: Location) -> GenerationObject:
        spec = GenerationSpec.model_validate(body["spec"])
        raw = body.get("status") or {}
        status = GenerationStatus.model_validate(raw) if raw.get("phase") else None
        plans = [plan_of(g, spec.generation, i, location) for i, g in enumerate(spec.genomes)]
        results = [result_of(g, location) for g in status.genomes] if status else []
        return cls(
            ref=ObjectRef.of(body),
            record=GenerationRecord(number=spec.generation, plans=plans, results=results),
            planned_with=dict(spec.planned_with),
            phase=status.phase if status else None,
            jobs={g.id: g.job for g in status.genomes if g.job} if status else {},
            breeding_seconds=status.breeding_seconds if status else None,
            start_time=status.start_time if status else None,
            completion_time=status.completion_time if status else None,
        )

    @property
    def number(self) -> int:
        return self.record.number

    @property
    def plans(self) -> list[GenomePlan]:
        return self.record.plans

    @property
    def results(self) -> list[GenomeResult]:
        return self.record.results

    @property
    def finished(self) -> bool:
        return self.record.finished

    def result(self, genome: str) -> GenomeResult:
        return self.record.result(genome)

    def with_results(self, results: Sequence[GenomeResult]) -> GenerationObject:
        return replace(self, record=self.record.model_copy(update={"results": list(results)}))

    def with_result(self, result: GenomeResult, job: str | None = None) -> GenerationObject:
        jobs = {**self.jobs, result.id: job} if job else self.jobs
        return replace(self, record=self.record.with_result(result), jobs=jobs)

    def status_json(self, location: Location, goal: Goal) -> JSON:
        """The full ``status`` to write (counts and, once finished, the fitness summary)."""
        counts = self.record.counts()
        status: dict[str, Any] = {
            "phase": self.phase,
            "genomes": [genome_status(r, self.jobs.get(r.id), location) for r in self.results],
            **{phase.lower(): count for phase, count in counts.items()},
            "breedingSeconds": self.breeding_seconds,
            "startTime": self.start_time,
            "completionTime": self.completion_time,
        }
        if self.finished:
            row = summarize(self.number, self.results, goal)
            status.update(best=row.best, mean=row.mean, worst=row.worst, diversity=row.diversity)
            status["bestGenome"] = row.best_genome
        return GenerationStatus.model_validate(status).to_json_dict()
