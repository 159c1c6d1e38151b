"""``genome.json``: the one input of ``nora train``, written by the engine for each genome to train.

It carries everything a trainer needs so a Job or a local worker is self-contained: the base model,
the data, where the starting adapter is (or how to make a fresh one), the training settings with the
genome's hyperparameter genes applied, the fitness definition and where to write results.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from nora.api.base import ApiModel
from nora.api.defaults import DEFAULT_TARGET_MODULES
from nora.api.population import BaseModelSpec, DatasetSpec, FitnessSpec, TargetModules, TrainingSpec

GENOME_TASK_FILE = "genome.json"
"""The task's file name inside a genome's store folder."""

GENE_FIELDS = ("learning_rate", "beta", "nll_weight", "temperature")
"""Training fields that hyperparameter genes may override (genes are named in camelCase or snake_case)."""


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

    def effective_training(self) -> TrainingSpec:
        """``training`` with the hyperparameter genes applied (``learningRate`` or ``learning_rate``)."""
        updates = {}
        for name in GENE_FIELDS:
            camel = TrainingSpec.model_fields[name].alias or name
            for key in (name, camel):
                if key in self.hyperparameters:
                    updates[name] = self.hyperparameters[key]
        return TrainingSpec.model_validate({**self.training.model_dump(), **updates})
