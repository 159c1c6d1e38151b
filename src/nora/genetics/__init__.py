"""Pure tensor genetics over PEFT LoRA adapters: genome I/O, crossover, mutation and selection.

Nothing here touches Kubernetes, subprocesses or S3; every random choice takes a ``torch.Generator``.
"""

from nora.genetics.breeding import breed
from nora.genetics.crossover import (
    CROSSOVER_METHODS,
    CrossoverMethod,
    CrossoverSpec,
    crossover,
    parent_weights,
)
from nora.genetics.errors import GeneticsError, GenomeFormatError, IncompatibleParentsError
from nora.genetics.genome import Genome, LoraModule, init_genome, init_module, lora_scale
from nora.genetics.io import load_genome, save_genome
from nora.genetics.mutation import MutationSpec, mutate, mutate_hyperparameters, sample_hyperparameters
from nora.genetics.rng import derive_seed, generator_for, make_generator
from nora.genetics.selection import SELECTION_METHODS, Scored, SelectionMethod, elites, select
from nora.genetics.summary import AdapterSummary, summarize_adapter

__all__ = [
    "CROSSOVER_METHODS",
    "SELECTION_METHODS",
    "AdapterSummary",
    "CrossoverMethod",
    "CrossoverSpec",
    "GeneticsError",
    "Genome",
    "GenomeFormatError",
    "IncompatibleParentsError",
    "LoraModule",
    "MutationSpec",
    "Scored",
    "SelectionMethod",
    "breed",
    "crossover",
    "derive_seed",
    "elites",
    "generator_for",
    "init_genome",
    "init_module",
    "load_genome",
    "lora_scale",
    "make_generator",
    "mutate",
    "mutate_hyperparameters",
    "parent_weights",
    "sample_hyperparameters",
    "save_genome",
    "select",
    "summarize_adapter",
]
