"""The ``Population`` status: phase, current generation, best genome, a bounded history and conditions.

Bounded means bounded: the history keeps the last :data:`HISTORY_LIMIT` rows (one small row per
generation), conditions are one per type, and nothing else grows with the number of generations. The
full record of every genome lives in the ``Generation`` objects and in the store.

Status models ignore unknown fields when read (``status.kopf`` belongs to the kopf framework) but are
written exactly as declared here; the CRD schema is generated from them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from nora.api.base import ApiModel

HISTORY_LIMIT = 64
"""Rows kept in ``status.history``: the most recent generations (older ones are in the Generations)."""

MESSAGE_LIMIT = 512
"""Characters kept of any free-text message written into a status."""

PopulationPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Stopped"]
ConditionStatus = Literal["True", "False", "Unknown"]


class StatusModel(ApiModel):
    """A status model: like every API model, except that unknown fields are ignored when read."""

    model_config = ConfigDict(extra="ignore")


class Condition(StatusModel):
    """A standard Kubernetes condition (``metav1.Condition``)."""

    type: Annotated[str, Field(min_length=1, max_length=316)]
    status: ConditionStatus
    reason: Annotated[str, Field(max_length=1024)] = ""
    message: Annotated[str, Field(max_length=32768)] = ""
    last_transition_time: str | None = None
    observed_generation: Annotated[int, Field(ge=0)] | None = None


METRICS_LIMIT = 8
"""Headline metrics kept per genome (numbers only)."""


class BestGenome(StatusModel):
    """The best genome so far: where it is, how fit it was, and its headline metrics."""

    genome: str
    generation: Annotated[int, Field(ge=0)]
    fitness: float
    adapter: str | None = None
    metrics: Annotated[dict[str, float], Field(max_length=METRICS_LIMIT)] = Field(default_factory=dict)


class BestExport(BestGenome):
    """``best.json``: written last into the Population's ``best/`` folder, by either driver.

    Attributes:
        population: the Population's name.
        exported: URI of the exported adapter folder (``.../best``); ``adapter`` is where it came from.
    """

    population: str
    exported: str


class HistoryRow(StatusModel):
    """One finished generation, summarized: best, mean and worst fitness and diversity (their spread)."""

    generation: Annotated[int, Field(ge=0)]
    best: float | None = None
    mean: float | None = None
    worst: float | None = None
    diversity: float | None = None
    best_genome: str | None = None
    succeeded: Annotated[int, Field(ge=0)] = 0
    failed: Annotated[int, Field(ge=0)] = 0


class PopulationRecord(StatusModel):
    """Where a Population's evolution stands: the part both drivers keep (the store's ``population.json``).

    Attributes:
        phase: Pending (not started, e.g. an invalid spec), Running, Succeeded, Failed, Stopped
            (``spec.suspend``).
        reason: why the phase is what it is (``MaxGenerations``, ``TargetReached``, ``InvalidSpec``...).
        message: the same for people.
        generation: the current (or, once finished, the last) generation number.
        completed_generations: how many generations have finished.
        best: the best genome over all generations.
        history: the last :data:`HISTORY_LIMIT` generations, oldest first.
    """

    phase: PopulationPhase = "Pending"
    reason: str = ""
    message: Annotated[str, Field(max_length=4096)] = ""
    generation: Annotated[int, Field(ge=0)] = 0
    completed_generations: Annotated[int, Field(ge=0)] = 0
    best: BestGenome | None = None
    history: Annotated[list[HistoryRow], Field(max_length=HISTORY_LIMIT)] = Field(default_factory=list)


class PopulationStatus(PopulationRecord):
    """What the operator reports about a Population: its record, plus the Kubernetes bookkeeping.

    Attributes:
        conditions: ``Ready`` (the spec is accepted and the operator can work) and ``Completed``.
        observed_generation: the ``metadata.generation`` of the spec this status reflects.
    """

    conditions: Annotated[list[Condition], Field(max_length=8)] = Field(default_factory=list)
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    start_time: str | None = None
    completion_time: str | None = None
