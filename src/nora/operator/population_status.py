"""Pure transitions of ``Population.status``: conditions, history rows, best genome, the stop decision.

Everything here is bounded: at most :data:`~nora.api.status.HISTORY_LIMIT` history rows, one condition
per type, one best genome.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from nora.api.population import PopulationSpec
from nora.api.status import (
    HISTORY_LIMIT,
    BestGenome,
    Condition,
    ConditionStatus,
    HistoryRow,
    PopulationStatus,
)
from nora.evolution.records import GenerationSummary
from nora.evolution.stopping import Decision, decide
from nora.operator.objects import JSON


def set_condition(
    status: PopulationStatus,
    kind: str,
    value: bool,
    reason: str,
    message: str,
    now: str,
    observed: int | None = None,
) -> PopulationStatus:
    """``status`` with condition ``kind`` set (its transition time kept when its value did not change)."""
    text: ConditionStatus = "True" if value else "False"
    old = next((c for c in status.conditions if c.type == kind), None)
    since = old.last_transition_time if old is not None and old.status == text else now
    condition = Condition(
        type=kind,
        status=text,
        reason=reason,
        message=message[:4096],
        last_transition_time=since,
        observed_generation=observed,
    )
    others = [c for c in status.conditions if c.type != kind]
    return status.model_copy(update={"conditions": sorted([*others, condition], key=lambda c: c.type)})


def history_row(summary: GenerationSummary) -> HistoryRow:
    return HistoryRow(
        generation=summary.generation,
        best=summary.best,
        mean=summary.mean,
        worst=summary.worst,
        diversity=summary.diversity,
        best_genome=summary.best_genome,
        succeeded=summary.succeeded,
        failed=summary.failed,
    )


def summary_of(row: HistoryRow) -> GenerationSummary:
    return GenerationSummary(
        generation=row.generation,
        best=row.best,
        mean=row.mean,
        worst=row.worst,
        diversity=row.diversity,
        best_genome=row.best_genome,
        succeeded=row.succeeded,
        failed=row.failed,
    )


def _better(candidate: BestGenome, current: BestGenome | None, maximize: bool) -> bool:
    if current is None:
        return True
    return candidate.fitness > current.fitness if maximize else candidate.fitness < current.fitness


def record_generation(
    status: PopulationStatus, summary: GenerationSummary, best: BestGenome | None, maximize: bool
) -> PopulationStatus:
    """``status`` after generation ``summary.generation`` finished (idempotent: re-recording replaces)."""
    rows = [r for r in status.history if r.generation != summary.generation] + [history_row(summary)]
    rows.sort(key=lambda r: r.generation)
    improved = best is not None and _better(best, status.best, maximize)
    return status.model_copy(
        update={
            "history": rows[-HISTORY_LIMIT:],
            "best": best if improved else status.best,
            "completed_generations": max(status.completed_generations, summary.generation + 1),
        }
    )


def decision(
    spec: PopulationSpec,
    status: PopulationStatus,
    older: Callable[[Sequence[int]], list[GenerationSummary]],
) -> Decision:
    """The engine's stop decision from a bounded history.

    ``decide`` looks at the number of generations run and the last ``patience + 1`` bests; generations
    that fell out of the kept history stand in as empty rows, and when ``patience`` reaches further
    back than the kept rows, ``older`` fetches the missing ones (from the Generation objects).
    """
    kept = {row.generation: summary_of(row) for row in status.history}
    total = status.completed_generations
    window = range(max(0, total - (spec.stopping.patience or 0) - 1), total)
    missing = [n for n in window if n not in kept]
    for summary in older(missing) if missing else []:
        kept[summary.generation] = summary
    history = [kept.get(n) or GenerationSummary(n, None, None, None, None, None, 0, 0) for n in range(total)]
    if history and history[-1].best is None and total - 1 not in kept:
        raise ValueError(f"generation {total - 1} has no history row")
    return decide(spec, history)


def status_patch(status: PopulationStatus) -> JSON:
    """The merge patch that makes the stored status equal ``status`` (absent optional fields deleted)."""
    return status.model_dump(mode="json", by_alias=True)


def resumed(status: PopulationStatus, spec: PopulationSpec) -> PopulationStatus | None:
    """A finished Population's status resumed by a raised ``maxGenerations``, else ``None``."""
    raised = status.completed_generations < spec.max_generations
    if status.phase == "Succeeded" and status.reason == "MaxGenerations" and raised:
        return status.model_copy(
            update={
                "phase": "Running",
                "reason": "Resumed",
                "message": f"spec.maxGenerations raised to {spec.max_generations}",
                "generation": status.completed_generations,
                "completion_time": None,
            }
        )
    return None
