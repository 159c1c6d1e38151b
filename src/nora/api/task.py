"""``genome.json``: the one input of ``nora train``, written by the engine for each genome to train; and
``test/g<N>/task.json``, the one input of ``nora test-score``, written once at the end of a run.

It carries everything a trainer needs so a Job or a local worker is self-contained: the base model,
the data, where the starting adapter is (or how to make a fresh one), the training settings with the
genome's hyperparameter genes applied, the fitness definition and where to write results.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from nora.api.base import ApiModel
from nora.api.defaults import DEFAULT_TARGET_MODULES
from nora.api.population import (
    GENE_FIELDS,
    BaseModelSpec,
    DatasetSpec,
    FitnessSpec,
    TargetModules,
    TrainingSpec,
)
from nora.api.status import ENSEMBLE_LIMIT

GENOME_TASK_FILE = "genome.json"
"""The task's file name inside a genome's store folder."""


class AdapterSource(ApiModel):
    """The starting adapter: ``uri`` of a PEFT folder, or ``None`` for a fresh LoRA from the other fields."""

    uri: str | None = None
    rank: Annotated[int, Field(ge=1, le=1024)] = 8
    alpha: Annotated[float, Field(gt=0.0)] = 16.0
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    target_modules: TargetModules = Field(default_factory=lambda: list(DEFAULT_TARGET_MODULES))


class GenomeTask(ApiModel):
    """One genome to train and score."""

    population: str
    generation: Annotated[int, Field(ge=0)]
    genome: str
    seed: Annotated[int, Field(ge=0)]
    base_model: BaseModelSpec
    dataset: DatasetSpec
    adapter: AdapterSource = Field(default_factory=AdapterSource)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    fitness: FitnessSpec = Field(default_factory=FitnessSpec)
    hyperparameters: dict[str, float] = Field(default_factory=dict)
    output: str
    train_window: Annotated[int, Field(ge=0)] | None = None
    """The train rows to sample on: ``maxPrompts`` rows from ``trainWindow * maxPrompts`` on, wrapping
    around the file (default: the generation's window)."""

    def effective_training(self) -> TrainingSpec:
        """``training`` with the hyperparameter genes applied (``learningRate`` or ``learning_rate``)."""
        updates = {}
        for name in GENE_FIELDS:
            camel = TrainingSpec.model_fields[name].alias or name
            for key in (name, camel):
                if key in self.hyperparameters:
                    updates[name] = self.hyperparameters[key]
        return TrainingSpec.model_validate({**self.training.model_dump(), **updates})


HELD_OUT_TASK_FILE = "task.json"
HELD_OUT_RESULT_FILE = "test.json"


class HeldOutAdapter(ApiModel):
    """One adapter to score on the test split: the genome it is and its fitness on the eval split."""

    genome: str
    generation: Annotated[int, Field(ge=0)]
    fitness: float
    uri: str


class HeldOutTask(ApiModel):
    """``nora test-score --task URI``'s input: the adapters of a finished run to score on ``dataset.test``.

    Attributes:
        generations: generations the run had completed.
        adapters: each distinct adapter once; the first is the run's best genome.
        initial: index in ``adapters`` of generation 0's best genome.
        ensemble: indices in ``adapters`` of the top-k genomes, fittest first (empty: no ensemble).
        output: URI of the ``test.json`` to write (a :class:`HeldOutResult`).
    """

    population: str
    generations: Annotated[int, Field(ge=1)]
    base_model: BaseModelSpec
    dataset: DatasetSpec
    max_new_tokens: Annotated[int, Field(ge=1)]
    adapters: Annotated[list[HeldOutAdapter], Field(min_length=1, max_length=ENSEMBLE_LIMIT + 1)]
    initial: Annotated[int, Field(ge=0)] = 0
    ensemble: Annotated[list[int], Field(max_length=ENSEMBLE_LIMIT)] = Field(default_factory=list)
    output: str

    @model_validator(mode="after")
    def _indices(self) -> HeldOutTask:
        if self.dataset.test is None:
            raise ValueError("dataset.test: the split to score is not set")
        count = len(self.adapters)
        if not all(0 <= index < count for index in [self.initial, *self.ensemble]):
            raise ValueError(f"initial and ensemble: indices must be below the {count} adapters")
        return self


class HeldOutResult(ApiModel):
    """``test.json``: greedy test accuracy of each adapter (in the task's order) and of the ensemble."""

    accuracy: list[Annotated[float, Field(ge=0.0, le=1.0)]]
    ensemble: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    rows: Annotated[int, Field(ge=1)]
    tokens: Annotated[int, Field(ge=0)] = 0
