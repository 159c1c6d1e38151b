"""Plan generations: generation 0 from fresh or seed adapters, then elites plus bred offspring.

Planning is pure and cheap: it decides who breeds with whom, with which operators and seeds, and what
each genome's hyperparameter genes are. The tensor work it orders (:class:`BreedingOrder`) is done by
``nora.evolution.breeding``. Every random choice derives from ``(population seed, generation, genome
index, purpose)``, so re-planning a generation after a crash gives the same plan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from nora.api.population import PopulationSpec
from nora.evolution.layout import genome_id, start_adapter_key
from nora.evolution.records import GenomePlan, GenomeResult, score
from nora.evolution.strategies.orders import ComposeOrder, ProjectionOrder
from nora.genetics import (
    CrossoverSpec,
    MutationSpec,
    Scored,
    derive_seed,
    elites,
    generator_for,
    mutate_hyperparameters,
    parent_weights,
    sample_hyperparameters,
)
from nora.genetics.crossover import blend_genes
from nora.genetics.selection import ranked, select_parents, truncation
from nora.genetics.succession import SuccessionSpec


@dataclass(frozen=True)
class ParentRef:
    """A parent as breeding needs it: id, trained adapter key and fitness (higher is better)."""

    id: str
    adapter: str
    score: float


@dataclass(frozen=True)
class SuccessionOrder:
    """GENOME+'s succession step after mutation: toward ``best``, away from ``worst``."""

    best: ParentRef
    worst: ParentRef
    spec: SuccessionSpec


@dataclass(frozen=True)
class BreedingOrder:
    """Make one offspring's starting adapter: crossover (optional), mutation (optional), succession
    (optional)."""

    child: str
    parents: tuple[ParentRef, ...]
    crossover: CrossoverSpec | None
    mutation: MutationSpec | None
    crossover_seed: int
    mutation_seed: int
    hyperparameters: Mapping[str, float]
    output: str
    succession: SuccessionOrder | None = None


Order = BreedingOrder | ProjectionOrder | ComposeOrder
"""Store work before a generation trains: crossover/mutation, or a CMA-ES strategy's starting points."""


@dataclass(frozen=True)
class GenerationPlan:
    """Every genome of a generation and the breeding that must happen before they train."""

    generation: int
    genomes: tuple[GenomePlan, ...]
    breeding: tuple[Order, ...] = ()


def crossover_spec(spec: PopulationSpec) -> CrossoverSpec:
    """The genetics library's crossover settings for this population."""
    c = spec.crossover
    return CrossoverSpec(
        method=c.method,
        temperature=c.temperature,
        rank=c.rank,
        density=c.density,
        blx_alpha=c.blx_alpha,
        allow_mixed_base_models=c.allow_mixed_base_models,
    )


def mutation_spec(spec: PopulationSpec) -> MutationSpec:
    """The genetics library's mutation settings for this population."""
    m = spec.mutation
    return MutationSpec(
        sigma=m.sigma,
        gene_probability=m.gene_probability,
        reset_probability=m.reset_probability,
        grow_probability=m.rank_grow_probability,
        shrink_probability=m.rank_shrink_probability,
        max_rank=m.max_rank,
        hyperparameter_probability=m.hyperparameter_probability,
        hyperparameter_bounds=dict(m.hyperparameters),
        relative_sigma=m.sigma_scale == "relative",
        scale_sigma=m.scale_sigma,
    )


def succession_order(
    spec: PopulationSpec, pool: Sequence[Scored], adapters: Mapping[str, str]
) -> SuccessionOrder | None:
    """The succession step toward the fittest of ``pool`` and away from its least fit, if configured."""
    settings = spec.mutation.succession
    if settings is None or len(pool) < 2:
        return None
    order = ranked(pool)
    best, worst = order[0], order[-1]
    return SuccessionOrder(
        best=ParentRef(best.id, adapters[best.id], float(best.fitness or 0.0)),
        worst=ParentRef(worst.id, adapters[worst.id], float(worst.fitness or 0.0)),
        spec=SuccessionSpec(toward=settings.toward, away=settings.away),
    )


def plan_initial(spec: PopulationSpec, population: str) -> GenerationPlan:
    """Generation 0: seed adapters first, then fresh LoRAs; genes sampled within their bounds."""
    genomes = []
    for index in range(spec.population_size):
        seed_adapter = spec.seed_adapters[index].uri if index < len(spec.seed_adapters) else None
        genes = sample_hyperparameters(
            dict(spec.mutation.hyperparameters), generator_for(spec.seed, 0, index, "hyperparameters")
        )
        genomes.append(
            GenomePlan(
                id=genome_id(population, 0, index),
                index=index,
                generation=0,
                origin="seed" if seed_adapter else "initial",
                adapter=seed_adapter,
                hyperparameters=genes,
                seed=derive_seed(spec.seed, 0, index, "genome"),
            )
        )
    return GenerationPlan(generation=0, genomes=tuple(genomes))


def _elite_plan(
    old: GenomePlan, result: GenomeResult, population: str, generation: int, index: int, rescore: bool
) -> GenomePlan:
    """The elite copied unchanged; ``rescore`` has it evaluated again (``train`` only evaluates it:
    see ``nora.evolution.tasks``) instead of carrying its fitness into the new generation."""
    return GenomePlan(
        id=genome_id(population, generation, index),
        index=index,
        generation=generation,
        origin="elite",
        parents=[old.id],
        adapter=result.adapter,
        hyperparameters=dict(old.hyperparameters),
        seed=old.seed,
        train=rescore,
        fitness=None if rescore else result.fitness,
    )


def _coin(probability: float, *parts: int | str) -> bool:
    """A biased coin whose outcome depends only on ``parts``."""
    return float(torch.rand((), generator=generator_for(*parts))) < probability


@dataclass(frozen=True)
class _Pool:
    scored: list[Scored]
    plans: dict[str, GenomePlan]
    results: dict[str, GenomeResult]
    succession: SuccessionOrder | None = None


def _offspring(
    spec: PopulationSpec, population: str, generation: int, index: int, pool: _Pool
) -> BreedingOrder:
    seed = spec.seed
    pairing = generator_for(seed, generation, index, "pairing")
    wants_crossover = _coin(spec.crossover.probability, seed, generation, index, "crossover?")
    count = 2 if wants_crossover else 1
    picks = select_parents(spec.selection.method, pool.scored, count, pairing, spec.selection.tournament_size)
    parents = tuple(ParentRef(p.id, pool.results[p.id].adapter or "", float(p.fitness or 0.0)) for p in picks)
    crossing = len(parents) == 2
    mutating = not crossing or _coin(spec.mutation.probability, seed, generation, index, "mutation?")
    weights = parent_weights([p.score for p in parents], len(parents), spec.crossover.temperature)
    genes = mutate_hyperparameters(
        blend_genes([pool.plans[p.id].hyperparameters for p in parents], weights),
        mutation_spec(spec),
        generator_for(seed, generation, index, "hyperparameters"),
    )
    return BreedingOrder(
        child=genome_id(population, generation, index),
        parents=parents,
        crossover=crossover_spec(spec) if crossing else None,
        mutation=mutation_spec(spec) if mutating else None,
        crossover_seed=derive_seed(seed, generation, index, "crossover"),
        mutation_seed=derive_seed(seed, generation, index, "mutation"),
        hyperparameters=genes,
        output=start_adapter_key(
            spec.storage.prefix, population, generation, genome_id(population, generation, index)
        ),
        succession=pool.succession,
    )


def plan_next(
    spec: PopulationSpec,
    population: str,
    generation: int,
    previous: Sequence[tuple[GenomePlan, GenomeResult]],
) -> GenerationPlan:
    """The generation after ``previous``: elites carried over unchanged, the rest bred from survivors.

    Raises:
        GeneticsError: if no genome of ``previous`` has a fitness (nothing can be selected).
    """
    scored = [
        Scored(plan.id, score(result.fitness, spec.fitness.goal))
        for plan, result in previous
        if result.fitness is not None and result.scored
    ]
    results = {plan.id: result for plan, result in previous}
    pool = _Pool(
        scored=truncation(scored, spec.survivors),
        plans={plan.id: plan for plan, _ in previous},
        results=results,
        succession=succession_order(spec, scored, {k: r.adapter or "" for k, r in results.items()}),
    )
    rescore = spec.selection.rescore_elites
    genomes = [
        _elite_plan(pool.plans[e.id], pool.results[e.id], population, generation, index, rescore)
        for index, e in enumerate(elites(scored, spec.selection.elites))
    ]
    orders = [
        _offspring(spec, population, generation, index, pool)
        for index in range(len(genomes), spec.population_size)
    ]
    genomes += [_offspring_plan(spec, generation, len(genomes) + i, order) for i, order in enumerate(orders)]
    return GenerationPlan(generation=generation, genomes=tuple(genomes), breeding=tuple(orders))


def _offspring_plan(spec: PopulationSpec, generation: int, index: int, order: BreedingOrder) -> GenomePlan:
    return GenomePlan(
        id=order.child,
        index=index,
        generation=generation,
        origin="crossover" if order.crossover else "mutation",
        parents=[p.id for p in order.parents],
        adapter=order.output,
        hyperparameters=dict(order.hyperparameters),
        seed=derive_seed(spec.seed, generation, index, "genome"),
    )
