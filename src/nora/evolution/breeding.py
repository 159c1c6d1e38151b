"""Carry out breeding orders: load the parents from a store, breed, write the child's starting adapter.

The CMA-ES strategies' orders (starting points, compositions) go to ``nora.evolution.strategies.orders``.

Idempotent: an order whose output already holds a complete adapter (manifest present) is skipped, and
re-running an order gives byte-identical files because every random choice comes from its seeds.
"""

from __future__ import annotations

from nora.evolution.genome_store import download_genome, upload_genome
from nora.evolution.planning import BreedingOrder, Order
from nora.evolution.strategies.orders import ComposeOrder, execute_compose, execute_projection
from nora.genetics import Genome, MutationSpec, breed, make_generator, mutate
from nora.genetics.io import MANIFEST_FILE
from nora.genetics.succession import succession
from nora.storage import Store

NO_MUTATION = MutationSpec()


def offspring(
    order: BreedingOrder, parents: list[Genome], guides: tuple[Genome, Genome] | None = None
) -> Genome:
    """The child genome of ``order`` from already loaded ``parents`` (pure tensor work).

    ``guides`` are the population's best and worst genomes, needed when the order has a succession step.
    """
    mutation = order.mutation or NO_MUTATION
    if order.crossover is not None:
        child = breed(
            parents,
            [p.score for p in order.parents],
            order.crossover,
            mutation,
            make_generator(order.crossover_seed),
            make_generator(order.mutation_seed),
        )
    else:
        child = mutate(parents[0], mutation, make_generator(order.mutation_seed))
    if order.succession is not None and guides is not None:
        child = succession(child, guides[0], guides[1], order.succession.spec)
    return child.with_hyperparameters(order.hyperparameters)


def execute(order: Order, store: Store) -> bool:
    """Write ``order``'s child to the store; ``False`` if it was already there (nothing done)."""
    if isinstance(order, ComposeOrder):
        return execute_compose(order, store)
    if not isinstance(order, BreedingOrder):
        return execute_projection(order, store)
    if store.exists(f"{order.output}/{MANIFEST_FILE}"):
        return False
    parents = [download_genome(store, parent.adapter) for parent in order.parents]
    guides = None
    if order.succession is not None:
        best, worst = order.succession.best, order.succession.worst
        guides = (download_genome(store, best.adapter), download_genome(store, worst.adapter))
    upload_genome(store, order.output, offspring(order, parents, guides))
    return True
