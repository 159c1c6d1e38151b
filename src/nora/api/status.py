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


ENSEMBLE_LIMIT = 16
"""Members of the test-split ensemble (``spec.dataset.testEnsemble`` at most)."""


class HeldOutGenome(StatusModel):
    """One genome scored on the test split: its fitness (eval split) beside its test accuracy."""

    genome: str
    generation: Annotated[int, Field(ge=0)]
    fitness: float
    accuracy: Annotated[float, Field(ge=0.0, le=1.0)]
    adapter: str


class HeldOutEnsemble(StatusModel):
    """The top-k genomes' majority vote on the test split, and the adapters it needs (fittest first)."""

    accuracy: Annotated[float, Field(ge=0.0, le=1.0)]
    genomes: Annotated[list[str], Field(min_length=2, max_length=ENSEMBLE_LIMIT)]
    adapters: Annotated[list[str], Field(min_length=2, max_length=ENSEMBLE_LIMIT)]


class HeldOutScore(StatusModel):
    """The overfitting guard: the run's adapters scored once on ``spec.dataset.test`` at its end.

    Attributes:
        phase: Succeeded, or Failed (``message`` says why; the run's own outcome is kept).
        uri: the test split.
        generations: generations the scored run had completed (a resumed run is scored again).
        rows: test rows scored.
        best: the final best genome.
        initial: generation 0's best genome, what evolution started from.
        gain: ``best.accuracy - initial.accuracy``: what evolution changed on unseen rows.
        ensemble: the top-k majority vote (absent with fewer than 2 distinct adapters).
    """

    phase: Literal["Succeeded", "Failed"]
    uri: str
    generations: Annotated[int, Field(ge=1)]
    rows: Annotated[int, Field(ge=0)] = 0
    best: HeldOutGenome | None = None
    initial: HeldOutGenome | None = None
    gain: float | None = None
    ensemble: HeldOutEnsemble | None = None
    message: Annotated[str, Field(max_length=MESSAGE_LIMIT)] = ""


class BestExport(BestGenome):
    """``best.json``: written last into the Population's ``best/`` folder, by either driver.

    Attributes:
        population: the Population's name.
        exported: URI of the exported adapter folder (``.../best``); ``adapter`` is where it came from.
        test: the test-split scores, when ``spec.dataset.test`` is set.
    """

    population: str
    exported: str
    test: HeldOutScore | None = None


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
        test: the test-split scores, once the run has ended (with ``spec.dataset.test``).
    """

    phase: PopulationPhase = "Pending"
    reason: str = ""
    message: Annotated[str, Field(max_length=4096)] = ""
    generation: Annotated[int, Field(ge=0)] = 0
    completed_generations: Annotated[int, Field(ge=0)] = 0
    best: BestGenome | None = None
    history: Annotated[list[HistoryRow], Field(max_length=HISTORY_LIMIT)] = Field(default_factory=list)
    test: HeldOutScore | None = None


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
