"""The generation bookkeeping both drivers share: results, history, the best genome, the stop decision.

A driver keeps a :class:`~nora.api.status.PopulationRecord` (the operator's ``Population.status`` is one;
the local driver's ``state.json`` holds one) and one :class:`GenerationRecord` per generation (the
operator's ``Generation`` objects; the local ``state.json``). The functions here are the only place that
turns a finished generation into a history row, a new best and a verdict, and that resumes a finished
run whose ``maxGenerations`` was raised. Each driver only adapts them to where its state lives.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, TypeVar

from pydantic import Field

from nora.api.generation import MAX_GENOMES
from nora.api.population import PopulationSpec
from nora.api.status import (
    HISTORY_LIMIT,
    MESSAGE_LIMIT,
    METRICS_LIMIT,
    BestGenome,
    HistoryRow,
    PopulationRecord,
    StatusModel,
)
from nora.evolution.contract import finite_number
from nora.evolution.records import GenomePlan, GenomeResult, better, summarize
from nora.evolution.stopping import Decision, decide

R = TypeVar("R", bound=PopulationRecord)


class GenerationRecord(StatusModel):
    """One generation: its plan and what became of every genome, in index order."""

    number: Annotated[int, Field(ge=0)]
    plans: Annotated[list[GenomePlan], Field(max_length=MAX_GENOMES)]
    results: Annotated[list[GenomeResult], Field(max_length=MAX_GENOMES)]

    @property
    def finished(self) -> bool:
        return bool(self.results) and all(r.finished for r in self.results)

    def result(self, genome: str) -> GenomeResult:
        return next(r for r in self.results if r.id == genome)

    def plan(self, genome: str) -> GenomePlan:
        return next(p for p in self.plans if p.id == genome)

    def with_result(self, result: GenomeResult) -> GenerationRecord:
        results = [result if r.id == result.id else r for r in self.results]
        return self.model_copy(update={"results": results})

    def counts(self) -> dict[str, int]:
        """Genomes by phase (every phase present, zero or not)."""
        counts = dict.fromkeys(("Pending", "Running", "Succeeded", "Failed"), 0)
        for result in self.results:
            counts[result.phase] += 1
        return counts


def clip(message: str, limit: int = MESSAGE_LIMIT) -> str:
    """``message`` on one line, at most ``limit`` characters."""
    text = " ".join(message.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def headline_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers among a trainer's top-level metrics (at most ``METRICS_LIMIT``, by name)."""
    numbers = {str(k): n for k, v in metrics.items() if (n := finite_number(v)) is not None}
    return dict(sorted(numbers.items())[:METRICS_LIMIT])


def initial_results(plans: Sequence[GenomePlan], previous: Mapping[str, GenomeResult]) -> list[GenomeResult]:
    """Every genome Pending, except elites: Succeeded at once with their parent's fitness and metrics."""
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
    return results


def scored_outcome(
    result: GenomeResult, metrics: Mapping[str, Any] | None, adapter: str, where: str
) -> GenomeResult:
    """A finished attempt's result from its ``metrics.json`` (the one source of fitness).

    Args:
        result: the genome's result so far.
        metrics: the parsed ``metrics.json``; ``None`` when it is missing or not a JSON object.
        adapter: store key of the trained adapter.
        where: the URI of ``metrics.json`` (for the failure message).

    Returns:
        Succeeded with the fitness and headline metrics, or Failed when there is no finite fitness.
    """
    fitness = finite_number((metrics or {}).get("fitness"))
    if fitness is None:
        return result.update(
            phase="Failed", message=f"the trainer succeeded but {where} holds no finite fitness"
        )
    return result.update(
        phase="Succeeded",
        fitness=fitness,
        metrics=headline_metrics(metrics or {}),
        adapter=adapter,
        message="",
    )


def best_after(
    record: PopulationRecord, generation: GenerationRecord, row: HistoryRow, goal: Any
) -> BestGenome | None:
    """The best genome after ``generation``: its best if that beats the record's, else the record's."""
    if row.best_genome is None or row.best is None:
        return record.best
    current = record.best.fitness if record.best else None
    if not better(row.best, current, goal):
        return record.best
    winner = generation.result(row.best_genome)
    return BestGenome(
        genome=winner.id,
        generation=generation.number,
        fitness=row.best,
        adapter=winner.adapter,
        metrics=headline_metrics(winner.metrics),
    )


def record_generation(record: R, generation: GenerationRecord, spec: PopulationSpec) -> tuple[R, HistoryRow]:
    """``record`` after ``generation`` finished (idempotent: re-recording a generation replaces its row)."""
    row = summarize(generation.number, generation.results, spec.fitness.goal)
    rows = [r for r in record.history if r.generation != row.generation] + [row]
    rows.sort(key=lambda r: r.generation)
    updated = record.model_copy(
        update={
            "history": rows[-HISTORY_LIMIT:],
            "best": best_after(record, generation, row, spec.fitness.goal),
            "completed_generations": max(record.completed_generations, generation.number + 1),
        }
    )
    return updated, row


def decision(
    spec: PopulationSpec, record: PopulationRecord, older: Callable[[Sequence[int]], Sequence[HistoryRow]]
) -> Decision:
    """The engine's verdict from a bounded history.

    ``decide`` looks at the number of generations run and the last ``patience + 1`` bests; rows that fell
    out of the kept history stand in as empty rows, and when ``patience`` reaches further back than the
    kept rows, ``older`` fetches the missing ones (from the driver's generation records).
    """
    kept = {row.generation: row for row in record.history}
    total = record.completed_generations
    window = range(max(0, total - (spec.stopping.patience or 0) - 1), total)
    missing = [n for n in window if n not in kept]
    for row in older(missing) if missing else []:
        kept[row.generation] = row
    if total - 1 not in kept:
        raise ValueError(f"generation {total - 1} has no history row")
    return decide(spec, [kept.get(n) or HistoryRow(generation=n) for n in range(total)])


def conclude(record: R, decided: Decision, generation: int) -> R:
    """``record`` after the verdict on ``generation``: the next generation, or the end of the run."""
    if decided.verdict == "continue":
        return record.model_copy(
            update={"generation": generation + 1, "reason": decided.reason, "message": decided.message}
        )
    phase = "Succeeded" if decided.verdict == "succeed" else "Failed"
    return record.model_copy(update={"phase": phase, "reason": decided.reason, "message": decided.message})


def resumed(record: R, spec: PopulationSpec) -> R | None:
    """A finished run resumed by a raised ``maxGenerations`` (else ``None``): it goes on where it ended."""
    raised = record.completed_generations < spec.max_generations
    if record.phase == "Succeeded" and record.reason == "MaxGenerations" and raised:
        return record.model_copy(
            update={
                "phase": "Running",
                "reason": "Resumed",
                "message": f"spec.maxGenerations raised to {spec.max_generations}",
                "generation": record.completed_generations,
                "test": None,
            }
        )
    return None
