"""CMA-ES with the maintained ``cmaes`` library, rebuilt by replaying its asks and tells, never pickled.

A generation is one ask/tell round. The optimiser's only randomness is its own seeded generator, so given
the population seed its asks are a function of the earlier tells; the tells are the fitness of each
genome, which both drivers persist with the genome. To plan generation ``N`` we build a fresh optimiser,
and for every earlier generation ask ``populationSize`` points and tell them their losses in genome
order, then ask the new points: an interrupted run and an uninterrupted one plan the same genomes.

The optimiser minimises ``loss = -score + l1Penalty * mean(|x|)`` (``compose``; ``cmaes`` has no penalty),
with ``score`` the fitness turned so that higher is better. A failed genome is told the generation's worst
loss plus one, so the optimiser moves away from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from cmaes import CMA

from nora.api.population import PopulationSpec
from nora.evolution.records import GenomePlan, GenomeResult
from nora.genetics import GeneticsError, derive_seed

History = Sequence[Sequence[tuple[GenomePlan, GenomeResult]]]
"""Every finished generation before the one being planned, in order, each as ``(plan, result)`` pairs."""

FAILED_MARGIN = 1.0
"""How much worse than the generation's worst loss a failed genome is told."""


@dataclass(frozen=True)
class SearchSpace:
    """One CMA-ES search: its dimension, box bounds (or none) and the name that seeds it."""

    dimension: int
    bounds: tuple[float, float] | None
    name: str


def new_optimizer(spec: PopulationSpec, space: SearchSpace) -> CMA:
    """A fresh optimiser at the origin, seeded from the population seed and ``space.name``."""
    bounds = None if space.bounds is None else np.array([space.bounds] * space.dimension, dtype=float)
    return CMA(
        mean=np.zeros(space.dimension),
        sigma=spec.strategy.sigma,
        bounds=bounds,
        seed=derive_seed(spec.seed, "cmaes", space.name) % 2**32,
        population_size=spec.population_size,
    )


def ask(optimizer: CMA, count: int) -> list[np.ndarray]:
    """``count`` new points."""
    return [optimizer.ask() for _ in range(count)]


def penalty(spec: PopulationSpec, point: np.ndarray) -> float:
    """``compose``'s L1 penalty ``l1Penalty * mean(|w|)`` (LoraHub's regulariser); 0 for ``cmaes``."""
    if spec.strategy.method != "compose":
        return 0.0
    return float(spec.strategy.l1_penalty * np.mean(np.abs(point)))


def losses(
    spec: PopulationSpec, points: Sequence[np.ndarray], generation: Sequence[tuple[GenomePlan, GenomeResult]]
) -> list[float]:
    """What the optimiser is told for ``points``, one per genome of ``generation`` in index order.

    Raises:
        GeneticsError: if the generation has no scored genome, or a different number of genomes.
    """
    if len(points) != len(generation):
        raise GeneticsError(
            f"generation has {len(generation)} genomes but CMA-ES asked {len(points)}; "
            "spec.populationSize may not change during a cmaes or compose run"
        )
    maximize = spec.fitness.goal == "maximize"
    told: list[float | None] = []
    for point, (_, result) in zip(points, sorted(generation, key=lambda pair: pair[0].index), strict=True):
        if not result.scored:
            told.append(None)
            continue
        fitness = float(result.fitness or 0.0)
        told.append((-fitness if maximize else fitness) + penalty(spec, point))
    known = [value for value in told if value is not None]
    if not known:
        raise GeneticsError("no genome of the previous generation has a fitness; CMA-ES cannot continue")
    worst = max(known) + FAILED_MARGIN
    return [worst if value is None else value for value in told]


def tell(optimizer: CMA, points: Sequence[np.ndarray], values: Sequence[float]) -> None:
    """One tell of a whole generation."""
    optimizer.tell(list(zip(points, values, strict=True)))
