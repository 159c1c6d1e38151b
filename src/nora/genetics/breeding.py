"""Breeding: crossover followed by mutation, streamed one module at a time.

``breed(...)`` equals ``mutate(crossover(...))`` with the same two generators, but never holds an
unmutated child: peak memory is the parents plus one child plus one module's temporaries.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from nora.genetics.crossover import CrossoverSpec, child_hyperparameters, iter_crossover_modules
from nora.genetics.genome import Genome
from nora.genetics.mutation import MutationSpec, mutate_hyperparameters, mutate_magnitude, mutate_module


def breed(
    parents: Sequence[Genome],
    fitness: Sequence[float] | None,
    crossover_spec: CrossoverSpec,
    mutation_spec: MutationSpec,
    crossover_generator: torch.Generator,
    mutation_generator: torch.Generator,
) -> Genome:
    """One offspring: crossover of ``parents`` then mutation.

    Args:
        parents: genomes over the same modules and base shapes.
        fitness: one value per parent (higher is better), or ``None`` for equal weights.
        crossover_spec: the crossover method and parameters.
        mutation_spec: the mutation settings.
        crossover_generator: randomness for crossover only.
        mutation_generator: randomness for mutation only.

    Returns:
        The child genome.
    """
    use_rslora = parents[0].use_rslora
    modules = {
        name: mutate_module(child, mutation_spec, mutation_generator, use_rslora)
        for name, child in iter_crossover_modules(parents, fitness, crossover_spec, crossover_generator)
    }
    genes = child_hyperparameters(parents, fitness, crossover_spec)
    return Genome(
        modules=mutate_magnitude(modules, mutation_spec, mutation_generator),
        config=parents[0].config,
        hyperparameters=mutate_hyperparameters(genes, mutation_spec, mutation_generator),
        use_rslora=use_rslora,
    )
