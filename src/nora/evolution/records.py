"""The engine's records: one type per concept, shared by both drivers and by the API objects.

- :class:`GenomePlan` is a ``Generation``'s ``spec.genomes[]`` entry
  (:class:`~nora.api.generation.GenomeSpec`) plus where it sits (generation and index);
- :class:`GenomeResult` is a ``status.genomes[]`` entry (:class:`~nora.api.generation.GenomeStatus`)
  with the engine's questions about it;
- a generation's summary is the ``Population`` history row (:class:`~nora.api.status.HistoryRow`).

They are the API's pydantic models (frozen, camelCase JSON through ``to_json_dict``/``model_validate``),
so a driver persists them anywhere without mapping fields by hand. Engine records name adapters by store
key; the operator turns keys into ``s3://`` URIs when it writes Kubernetes objects.

The one rule for "better" lives here too: :func:`score` turns a fitness into a number where higher is
always better, whatever ``spec.fitness.goal`` says.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import Field

from nora.api.generation import GenomeOrigin, GenomePhase, GenomeSpec, GenomeStatus
from nora.api.status import HistoryRow

Origin = GenomeOrigin
Phase = GenomePhase
Goal = Literal["maximize", "minimize"]
FINISHED_PHASES = ("Succeeded", "Failed")
BRED_ORIGINS = ("crossover", "mutation")


def score(fitness: float, goal: Goal) -> float:
    """``fitness`` turned so that higher is always better (a minimized loss is negated)."""
    return fitness if goal == "maximize" else -fitness


def better(candidate: float, current: float | None, goal: Goal) -> bool:
    """Whether ``candidate`` beats ``current`` (``None``: nothing yet) under ``goal``."""
    return current is None or score(candidate, goal) > score(current, goal)


class GenomePlan(GenomeSpec):
    """One genome of a generation, as planned before it runs (``adapter``: store key or seed URI).

    Attributes:
        index: its position in the generation.
        generation: the generation number.
    """

    index: Annotated[int, Field(ge=0)]
    generation: Annotated[int, Field(ge=0)]

    @property
    def bred(self) -> bool:
        """Whether its starting adapter is made by breeding (crossover or mutation)."""
        return self.origin in BRED_ORIGINS

    def entry(self) -> GenomeSpec:
        """The ``spec.genomes[]`` entry (without the position fields)."""
        return GenomeSpec.model_validate(self.model_dump(exclude={"index", "generation"}))


class GenomeResult(GenomeStatus):
    """What became of a planned genome (``adapter``: store key of its trained adapter)."""

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED_PHASES

    @property
    def scored(self) -> bool:
        """Succeeded with a finite fitness: it can be selected and compared."""
        return self.phase == "Succeeded" and self.fitness is not None and math.isfinite(self.fitness)

    def update(self, **changes: object) -> GenomeResult:
        """A copy with ``changes`` (field names) applied."""
        return self.model_copy(update=changes)


def summarize(generation: int, results: Sequence[GenomeResult], goal: Goal) -> HistoryRow:
    """The history row of a finished generation: best, mean, worst, diversity (fitness std), counts."""
    scored = [r for r in results if r.scored]
    failed = sum(1 for r in results if r.phase == "Failed")
    if not scored:
        return HistoryRow(generation=generation, failed=failed)
    values = [float(r.fitness or 0.0) for r in scored]
    ranked = sorted(scored, key=lambda r: score(float(r.fitness or 0.0), goal), reverse=True)
    mean = sum(values) / len(values)
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return HistoryRow(
        generation=generation,
        best=ranked[0].fitness,
        mean=mean,
        worst=ranked[-1].fitness,
        diversity=spread,
        best_genome=ranked[0].id,
        succeeded=len(values),
        failed=failed,
    )


def origin_text(plan: GenomeSpec) -> str:
    """Where a genome came from, for people: ``initial``, ``seed``, ``crossover of A x B``,
    ``mutation of A`` or ``elite (A kept)``."""
    parents = " x ".join(plan.parents)
    if plan.origin == "elite" and parents:
        return f"elite ({parents} kept)"
    return f"{plan.origin} of {parents}" if parents else plan.origin
