"""Selection: choose which scored genomes survive and which become parents.

All methods maximise ``fitness`` (negate a loss before selecting). Genomes whose fitness is ``None`` or
not finite (failed or unscored) are never selected. Ties break by position, so results are stable.

* ``truncation``: the top ``count`` (no randomness).
* ``tournament``: ``count`` tournaments, each of ``tournament_size`` distinct random entrants; best wins.
* ``roulette``: fitness-proportional after shifting so the worst has weight ``spread / n`` (works with
  negative fitness; equal fitness gives equal chances).
* ``rank``: linear ranking, weight ``n`` for the best down to ``1`` for the worst.

Stochastic methods draw with replacement, so a strong genome can be picked several times.
:func:`select_parents` draws the parents of one child without replacement (while more than one genome is
eligible), so that a crossover always has two different parents: with replacement, a tournament of 2
among 2 survivors picks the better one twice, and crossover never happens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch

from nora.genetics.errors import GeneticsError

SelectionMethod = Literal["truncation", "tournament", "roulette", "rank"]
SELECTION_METHODS: tuple[str, ...] = get_args(SelectionMethod)


@dataclass(frozen=True)
class Scored:
    """A genome's id and fitness (``None`` when it failed or was not scored)."""

    id: str
    fitness: float | None

    @property
    def eligible(self) -> bool:
        return self.fitness is not None and math.isfinite(self.fitness)


def ranked(candidates: Sequence[Scored]) -> list[Scored]:
    """Eligible candidates, best first; equal fitness keeps input order."""
    eligible = [(index, c) for index, c in enumerate(candidates) if c.eligible]
    eligible.sort(key=lambda pair: (-float(pair[1].fitness or 0.0), pair[0]))
    return [c for _, c in eligible]


def _require_eligible(candidates: Sequence[Scored]) -> list[Scored]:
    pool = ranked(candidates)
    if not pool:
        raise GeneticsError("selection: no genome has a fitness (all failed or unscored); nothing to select")
    return pool


def elites(candidates: Sequence[Scored], count: int) -> list[Scored]:
    """The best ``count`` eligible genomes (fewer if fewer are eligible)."""
    return ranked(candidates)[:count]


def truncation(candidates: Sequence[Scored], count: int) -> list[Scored]:
    """The best ``count`` eligible genomes; raises if none is eligible."""
    return _require_eligible(candidates)[:count]


def tournament(
    candidates: Sequence[Scored], count: int, size: int, generator: torch.Generator
) -> list[Scored]:
    """``count`` winners of tournaments among ``min(size, eligible)`` distinct random entrants."""
    pool = _require_eligible(candidates)
    entrants = min(size, len(pool))
    winners = []
    for _ in range(count):
        drawn = torch.randperm(len(pool), generator=generator)[:entrants]
        winners.append(pool[int(drawn.min())])
    return winners


def _draw(pool: list[Scored], weights: torch.Tensor, count: int, generator: torch.Generator) -> list[Scored]:
    picks = torch.multinomial(weights, count, replacement=True, generator=generator)
    return [pool[int(i)] for i in picks]


def roulette(candidates: Sequence[Scored], count: int, generator: torch.Generator) -> list[Scored]:
    """Fitness-proportional picks, shifted so negative fitness works."""
    pool = _require_eligible(candidates)
    fitness = torch.tensor([float(c.fitness or 0.0) for c in pool], dtype=torch.float64)
    spread = float(fitness.max() - fitness.min())
    weights = fitness - fitness.min() + (spread / len(pool) if spread > 0 else 1.0)
    return _draw(pool, weights, count, generator)


def rank_based(candidates: Sequence[Scored], count: int, generator: torch.Generator) -> list[Scored]:
    """Linear-ranking picks: the best has weight n, the worst 1."""
    pool = _require_eligible(candidates)
    weights = torch.arange(len(pool), 0, -1, dtype=torch.float64)
    return _draw(pool, weights, count, generator)


def select(
    method: SelectionMethod,
    candidates: Sequence[Scored],
    count: int,
    generator: torch.Generator,
    tournament_size: int = 3,
) -> list[Scored]:
    """Dispatch to one selection method.

    Args:
        method: one of :data:`SELECTION_METHODS`.
        candidates: scored genomes; ineligible ones are ignored.
        count: how many to select.
        generator: the only source of randomness (unused by truncation).
        tournament_size: entrants per tournament.

    Returns:
        The selected genomes (truncation: best first, distinct; others: in draw order, with repeats).
    """
    if count < 0:
        raise GeneticsError(f"count: must be >= 0, got {count}")
    if method == "truncation":
        return truncation(candidates, count)
    if method == "tournament":
        if tournament_size < 1:
            raise GeneticsError(f"tournament_size: must be at least 1, got {tournament_size}")
        return tournament(candidates, count, tournament_size, generator)
    if method == "roulette":
        return roulette(candidates, count, generator)
    if method == "rank":
        return rank_based(candidates, count, generator)
    raise GeneticsError(f"method: {method!r} is not one of {', '.join(SELECTION_METHODS)}")


def select_parents(
    method: SelectionMethod,
    candidates: Sequence[Scored],
    count: int,
    generator: torch.Generator,
    tournament_size: int = 3,
) -> list[Scored]:
    """The parents of one child: each drawn by ``method`` from the candidates not drawn yet.

    Args:
        method: one of :data:`SELECTION_METHODS`.
        candidates: scored genomes (the survivors); ineligible ones are ignored.
        count: parents wanted (2 for a crossover).
        generator: the only source of randomness.
        tournament_size: entrants per tournament.

    Returns:
        ``count`` distinct genomes, or fewer when fewer are eligible (at least one).
    """
    remaining = _require_eligible(candidates)
    picks: list[Scored] = []
    while len(picks) < count and remaining:
        pick = select(method, remaining, 1, generator, tournament_size)[0]
        picks.append(pick)
        remaining = [c for c in remaining if c.id != pick.id]
    return picks
