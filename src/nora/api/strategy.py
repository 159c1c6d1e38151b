"""``spec.strategy``: how a population searches: by crossover and mutation, or by CMA-ES.

* ``genetic`` (the default): selection, crossover and mutation of adapters (``spec.selection``,
  ``spec.crossover``, ``spec.mutation``).
* ``cmaes`` (C-LoRA, derivative-free LoRA paper): each generation is one CMA-ES ask/tell round over a
  point ``z`` of ``dimension`` numbers; fixed random projections drawn from the population seed map ``z``
  to every target module's ``A`` and ``B`` (see ``nora.genetics.projection`` for the scaling rule).
  ``layers`` alternates over the model's layers, one layer's own ``z`` per round, as the paper does.
* ``compose`` (LoraHub): a genome is a weight vector over ``spec.seedAdapters``; its adapter is the
  weighted sum of their updates (the product-space ``linear`` merge). CMA-ES searches the weights within
  ``bounds``, minimising ``-fitness + l1Penalty * mean(|w|)``.

Both CMA-ES strategies ignore selection, crossover and mutation. Cross-field rules are in
:func:`strategy_problems` and, as CEL, in :data:`STRATEGY_RULES` (same messages).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from nora.api.base import ApiModel

if TYPE_CHECKING:
    from nora.api.population import PopulationSpec

StrategyMethod = Literal["genetic", "cmaes", "compose"]
"""The search strategies of ``spec.strategy.method``."""


class StrategySpec(ApiModel):
    """The search strategy and the CMA-ES settings of ``cmaes`` and ``compose``.

    Attributes:
        method: ``genetic``, ``cmaes`` or ``compose``.
        sigma: CMA-ES's initial step size (the search starts at the origin).
        dimension: ``cmaes``: the length of ``z`` (the paper uses 500 to 1600).
        scale: ``cmaes``: the RMS size of a module's update relative to its input when ``z`` is drawn from
            the initial search distribution (BBTv2's stretch constant).
        layers: ``cmaes``: alternate over this many model layers (each with its own ``z`` of ``dimension``),
            ``generationsPerLayer`` rounds each; unset = one ``z`` for all layers at once.
        generations_per_layer: ``cmaes`` with ``layers``: rounds spent on a layer before moving on.
        bounds: ``compose``: ``[low, high]`` for every weight (LoraHub: ``[-1.5, 1.5]``); must contain 0.
        l1_penalty: ``compose``: weight of ``mean(|w|)`` added to the minimised loss (LoraHub: 0.05).
    """

    method: StrategyMethod = "genetic"
    sigma: Annotated[float, Field(gt=0.0, le=100.0)] = 0.5
    dimension: Annotated[int, Field(ge=1, le=100000)] = 500
    scale: Annotated[float, Field(gt=0.0, le=100.0)] = 0.1
    layers: Annotated[int, Field(ge=1, le=4096)] | None = None
    generations_per_layer: Annotated[int, Field(ge=1, le=10000)] = 1
    bounds: tuple[float, float] = (-1.5, 1.5)
    l1_penalty: Annotated[float, Field(ge=0.0)] = 0.05


def strategy_problems(spec: PopulationSpec) -> list[tuple[bool, str]]:
    """(broken, message) for each cross-field rule of ``spec.strategy``."""
    strategy, seeds = spec.strategy, len(spec.seed_adapters)
    low, high = strategy.bounds
    return [
        (
            strategy.method == "compose" and seeds == 0,
            "spec.seedAdapters: the compose strategy weighs seed adapters; list at least one",
        ),
        (
            strategy.method == "cmaes" and seeds > 0,
            "spec.seedAdapters: the cmaes strategy starts from projections of z, not from adapters; "
            "remove them or use strategy method compose",
        ),
        (
            strategy.method != "compose" and seeds > spec.population_size,
            f"spec.seedAdapters: {seeds} adapters exceed spec.populationSize ({spec.population_size})",
        ),
        (
            not low < 0.0 < high,
            f"spec.strategy.bounds: [{low}, {high}] must have low < 0 < high (the search starts at 0)",
        ),
        (
            strategy.layers is not None and strategy.method != "cmaes",
            "spec.strategy.layers: layer alternation is a cmaes setting; unset it or use method cmaes",
        ),
    ]


STRATEGY_RULES = (
    ("self.strategy.method != 'compose' || (has(self.seedAdapters) && size(self.seedAdapters) > 0)",
     "the compose strategy weighs seed adapters; list at least one", ".seedAdapters"),
    ("self.strategy.method != 'cmaes' || !has(self.seedAdapters) || size(self.seedAdapters) == 0",
     "the cmaes strategy starts from projections of z, not from adapters; remove them or use compose",
     ".seedAdapters"),
    ("self.strategy.method == 'compose' || !has(self.seedAdapters) || "
     "size(self.seedAdapters) <= self.populationSize",
     "more adapters than spec.populationSize", ".seedAdapters"),
    ("self.strategy.bounds[0] < 0.0 && self.strategy.bounds[1] > 0.0",
     "must have low < 0 < high (the search starts at 0)", ".strategy.bounds"),
    ("!has(self.strategy.layers) || self.strategy.method == 'cmaes'",
     "layer alternation is a cmaes setting; unset it or use method cmaes", ".strategy.layers"),
)  # fmt: skip
"""(rule, message, field) on ``spec``: the CEL form of :func:`strategy_problems`."""
