"""The ``Generation`` object: one round of evolution, created and owned by the operator.

``spec.genomes`` is the plan (who each genome is and where it comes from: its lineage); ``status.genomes``
is what became of each one (its Job, phase, attempts, fitness, headline metrics and trained adapter).
Adapters are named by URI (``s3://bucket/...``). The object's size grows with the population size only,
never with the number of generations.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from nora.api.base import ApiModel
from nora.api.status import METRICS_LIMIT, StatusModel

MAX_GENOMES = 256
"""The most genomes in a generation (``spec.populationSize``): a Generation object holds one spec and one
status entry per genome and must fit in one etcd object (about 1.5 MiB) in the worst case; the
integration test ``test_generation_size`` creates one at this size.
"""


GenomeOrigin = Literal["initial", "seed", "elite", "crossover", "mutation"]
GenomePhase = Literal["Pending", "Running", "Succeeded", "Failed"]
GenerationPhase = Literal["Breeding", "Running", "Succeeded", "Failed"]


class GenomeSpec(ApiModel):
    """One planned genome.

    Attributes:
        id: ``<population>-g<generation>-<index>``, also its Job's name.
        parents: ids of its parents (empty for initial and seed genomes).
        origin: initial (fresh LoRA), seed (a given adapter), elite (carried over, not retrained),
            crossover or mutation (bred by the operator).
        adapter: URI of its starting adapter; absent for a fresh LoRA.
        hyperparameters: its hyperparameter genes.
        seed: the seed of its own random choices.
        train: false for elites, which keep their adapter and fitness.
        fitness: an elite's carried fitness.
    """

    id: Annotated[str, Field(min_length=1, max_length=63)]
    parents: Annotated[list[str], Field(max_length=2)] = Field(default_factory=list)
    origin: GenomeOrigin
    adapter: str | None = None
    hyperparameters: Annotated[dict[str, float], Field(max_length=32)] = Field(default_factory=dict)
    seed: Annotated[int, Field(ge=0)] = 0
    train: bool = True
    fitness: float | None = None


class GenerationSpec(ApiModel):
    """The plan of one generation of a population.

    Attributes:
        population: the owning Population's name.
        generation: the generation number.
        genomes: every genome, in index order.
        planned_with: the Population spec this generation was planned and bred with, so a restarted
            operator re-derives exactly the same breeding even if the Population was edited since
            (edits apply from the next generation on).
    """

    population: Annotated[str, Field(min_length=1, max_length=63)]
    generation: Annotated[int, Field(ge=0)]
    genomes: Annotated[list[GenomeSpec], Field(max_length=MAX_GENOMES)]
    planned_with: dict[str, Any] = Field(default_factory=dict)


class GenomeStatus(StatusModel):
    """What became of one genome.

    Attributes:
        id: the genome's id.
        job: its Job's name (absent until the Job is created; elites have none).
        phase: Pending (waiting, queued or suspended by Kueue), Running, Succeeded or Failed.
        attempts: Pods started for it (failed ones are retried up to ``spec.retries.backoffLimit``).
        fitness: its fitness once Succeeded.
        metrics: the trainer's headline metrics (``accuracy``, ``irpo_loss``...).
        adapter: URI of its trained adapter.
        message: why it failed (the trainer's termination message), if it did; why it was re-trained.
        retrains: times it was trained again because its stored adapter failed verification (its Job
            then is ``<id>-r<retrains>``).
    """

    id: str
    job: str | None = None
    phase: GenomePhase = "Pending"
    attempts: Annotated[int, Field(ge=0)] = 0
    fitness: float | None = None
    metrics: Annotated[dict[str, float], Field(max_length=METRICS_LIMIT)] = Field(default_factory=dict)
    adapter: str | None = None
    message: Annotated[str, Field(max_length=1024)] = ""
    retrains: Annotated[int, Field(ge=0, le=8)] = 0


class GenerationStatus(StatusModel):
    """The progress and result of one generation.

    Attributes:
        phase: Breeding (offspring adapters being made), Running (genomes training), Succeeded or Failed
            (no genome produced a fitness).
        genomes: one entry per genome, in the order of ``spec.genomes``.
        best, mean, worst, diversity: fitness statistics once finished (diversity = standard deviation).
        best_genome: the id of the best genome.
        breeding_seconds: how long breeding took.
    """

    phase: GenerationPhase = "Breeding"
    genomes: Annotated[list[GenomeStatus], Field(max_length=MAX_GENOMES)] = Field(default_factory=list)
    best: float | None = None
    mean: float | None = None
    worst: float | None = None
    diversity: float | None = None
    best_genome: str | None = None
    pending: Annotated[int, Field(ge=0)] = 0
    running: Annotated[int, Field(ge=0)] = 0
    succeeded: Annotated[int, Field(ge=0)] = 0
    failed: Annotated[int, Field(ge=0)] = 0
    breeding_seconds: Annotated[float, Field(ge=0.0)] | None = None
    start_time: str | None = None
    completion_time: str | None = None
