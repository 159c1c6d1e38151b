"""Decide, after a generation is scored, whether the population goes on, has succeeded, or has failed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from nora.api.population import PopulationSpec
from nora.api.status import HistoryRow
from nora.evolution.records import score

Verdict = Literal["continue", "succeed", "fail"]


@dataclass(frozen=True)
class Decision:
    """What to do next, with a CamelCase reason (for conditions) and a sentence (for people)."""

    verdict: Verdict
    reason: str
    message: str


def _better(a: float, b: float, spec: PopulationSpec) -> float:
    """How much ``a`` improves on ``b`` in the direction of the goal."""
    return score(a, spec.fitness.goal) - score(b, spec.fitness.goal)


def _stagnated(spec: PopulationSpec, bests: list[float]) -> bool:
    patience = spec.stopping.patience
    if patience is None or len(bests) <= patience:
        return False
    reference = bests[-patience - 1]
    running = reference
    for value in bests[-patience:]:
        if _better(value, running, spec) > spec.stopping.min_delta:
            return False
        if _better(value, running, spec) > 0:
            running = value
    return True


def decide(spec: PopulationSpec, history: Sequence[HistoryRow]) -> Decision:
    """The verdict after the last generation in ``history`` (one summary per finished generation)."""
    latest = history[-1]
    if latest.failed > spec.max_failed_genomes:
        return Decision(
            "fail",
            "TooManyFailures",
            f"generation {latest.generation}: {latest.failed} genomes failed, more than "
            f"spec.retries.maxFailedGenomes ({spec.max_failed_genomes})",
        )
    if latest.best is None:
        return Decision(
            "fail", "NoSurvivors", f"generation {latest.generation}: no genome produced a fitness"
        )
    target = spec.stopping.target_fitness
    if target is not None and _better(latest.best, target, spec) >= 0:
        return Decision(
            "succeed", "TargetReached", f"best fitness {latest.best:.4g} reached the target {target}"
        )
    if len(history) >= spec.max_generations:
        return Decision(
            "succeed", "MaxGenerations", f"ran spec.maxGenerations ({spec.max_generations}) generations"
        )
    bests = [h.best for h in history if h.best is not None]
    if _stagnated(spec, bests):
        return Decision(
            "succeed",
            "Stagnated",
            f"no best-fitness gain above {spec.stopping.min_delta} in {spec.stopping.patience} generations",
        )
    return Decision("continue", "Evolving", f"generation {latest.generation} done; breeding the next")
