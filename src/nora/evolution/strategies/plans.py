"""Plan a generation for any ``spec.strategy.method``: the genetic engine, or one CMA-ES ask/tell round.

:func:`plan_generation` is what drivers call. For ``genetic`` it is ``plan_initial``/``plan_next`` of
:mod:`nora.evolution.planning` (which look at the previous generation only). For ``cmaes`` and
``compose`` it replays every earlier generation into a fresh optimiser
(:mod:`~nora.evolution.strategies.search`) and asks ``populationSize`` new points: genome ``i`` gets the
``i``-th. Every genome trains (there are no elites: the optimiser's mean carries what was learnt), has
origin ``mutation`` (a sample of the adapted search distribution, made by a breeding order) and starts
from its point: a ``cmaes`` genome from the projection of its point record, a ``compose`` genome
from the weighted sum of the seed adapters.
"""

from __future__ import annotations

import numpy as np
from cmaes import CMA

from nora.api.population import PopulationSpec
from nora.evolution.layout import genome_id, start_adapter_key
from nora.evolution.planning import GenerationPlan, Order, plan_initial, plan_next
from nora.evolution.records import GenomePlan
from nora.evolution.strategies.orders import ComposeOrder, ProjectionOrder
from nora.evolution.strategies.points import PointRecord
from nora.evolution.strategies.search import History, SearchSpace, ask, losses, new_optimizer, tell
from nora.genetics import derive_seed, generator_for, sample_hyperparameters
from nora.genetics.projection import ProjectionSpec


def plan_generation(spec: PopulationSpec, population: str, number: int, history: History) -> GenerationPlan:
    """Generation ``number`` after the finished generations ``history``, oldest first.

    ``genetic`` looks at the last of them only (it may be given just that one); ``cmaes`` and ``compose``
    replay all of them, so they need every generation before ``number``.

    Raises:
        GeneticsError: if a previous generation has no scored genome (nothing to select or tell).
        ValueError: if ``history`` lacks generations the strategy needs.
    """
    genetic = spec.strategy.method == "genetic"
    if (number > 0 and not history) or (not genetic and len(history) != number):
        raise ValueError(f"planning generation {number} needs the generations before it, got {len(history)}")
    if genetic:
        return (
            plan_next(spec, population, number, list(history[-1]))
            if number
            else plan_initial(spec, population)
        )
    return _plan_search(spec, population, number, history)


def active_layer(spec: PopulationSpec, number: int) -> int | None:
    """The layer generation ``number`` optimises under layer alternation (``None``: all layers at once)."""
    layers = spec.strategy.layers
    return None if layers is None else (number // spec.strategy.generations_per_layer) % layers


def search_spaces(spec: PopulationSpec) -> list[SearchSpace]:
    """The strategy's CMA-ES searches: one per layer under alternation, else one."""
    strategy = spec.strategy
    if strategy.method == "compose":
        return [SearchSpace(len(spec.seed_adapters), strategy.bounds, "compose")]
    if strategy.layers is None:
        return [SearchSpace(strategy.dimension, None, "cmaes")]
    return [SearchSpace(strategy.dimension, None, f"cmaes-layer-{i}") for i in range(strategy.layers)]


def _replayed_points(
    spec: PopulationSpec, number: int, history: History
) -> tuple[list[np.ndarray], list[CMA]]:
    """Replay ``history`` and ask generation ``number``'s points; also the optimisers (for their means)."""
    optimizers = [new_optimizer(spec, space) for space in search_spaces(spec)]
    for generation, pairs in enumerate(history):
        optimizer = optimizers[active_layer(spec, generation) or 0]
        points = ask(optimizer, spec.population_size)
        tell(optimizer, points, losses(spec, points, pairs))
    return ask(optimizers[active_layer(spec, number) or 0], spec.population_size), optimizers


def projection_spec(spec: PopulationSpec) -> ProjectionSpec:
    """The ``cmaes`` projections of this population (seeded by its seed)."""
    s = spec.strategy
    return ProjectionSpec(
        seed=derive_seed(spec.seed, "projection"),
        dimension=s.dimension,
        rank=spec.adapter.initial_rank,
        alpha=spec.adapter.alpha,
        sigma=s.sigma,
        scale=s.scale,
    )


def point_record(spec: PopulationSpec, number: int, point: np.ndarray, optimizers: list[CMA]) -> PointRecord:
    """A ``cmaes`` genome's record: its point for the active layer, the other layers' current means."""
    layer = active_layer(spec, number)
    if layer is None:
        return PointRecord(projection_spec(spec), (tuple(float(x) for x in point),))
    points = [point if i == layer else optimizer.mean for i, optimizer in enumerate(optimizers)]
    return PointRecord(projection_spec(spec), tuple(tuple(float(x) for x in p) for p in points), layered=True)


def _plan_search(spec: PopulationSpec, population: str, number: int, history: History) -> GenerationPlan:
    points, optimizers = _replayed_points(spec, number, history)
    genomes: list[GenomePlan] = []
    orders: list[Order] = []
    for index, point in enumerate(points):
        child = genome_id(population, number, index)
        output = start_adapter_key(spec.storage.prefix, population, number, child)
        if spec.strategy.method == "compose":
            sources = tuple(adapter.uri for adapter in spec.seed_adapters)
            orders.append(ComposeOrder(child, output, sources, tuple(float(w) for w in point)))
        else:
            orders.append(ProjectionOrder(child, output, point_record(spec, number, point, optimizers)))
        genes = sample_hyperparameters(
            dict(spec.mutation.hyperparameters), generator_for(spec.seed, number, index, "hyperparameters")
        )
        genomes.append(
            GenomePlan(
                id=child,
                index=index,
                generation=number,
                origin="mutation",
                adapter=output,
                hyperparameters=genes,
                seed=derive_seed(spec.seed, number, index, "genome"),
            )
        )
    return GenerationPlan(generation=number, genomes=tuple(genomes), breeding=tuple(orders))
