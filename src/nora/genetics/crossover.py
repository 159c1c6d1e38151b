"""Crossover: combine parent genomes into a child, module by module.

Methods and what they do with parents of different ranks:

* ``nora`` (NoRA, seed paper section 2): ``A = sum_i s_i * C_iA * A_i`` and likewise for ``B``, with
  uniform (0, 1) coefficient matrices ``C`` and ``s = softmax(fitness / T)``. Smaller ranks are zero-padded
  to the largest, so the child has ``max(r_i)``. It sums *factors*, so ``B @ A`` has cross terms.
* ``linear``: the exact fitness-weighted sum of the updates ``sum_i s_i * dW_i``, factored in product space
  (QR + small SVD, never the dense matrix). Any ranks; the child keeps rank ``sum(r_i)``.
* ``svd``: ``linear`` truncated to ``rank`` (default ``max(r_i)``) by the best low-rank approximation.
* ``ties`` / ``dare``: PEFT's element-wise TIES and DARE merges applied to ``A`` and ``B`` separately,
  as PEFT and GENOME do; they need equal ranks per module.
* ``slerp`` (EvoMerge): spherical interpolation of each factor between exactly two parents, ``t`` = the
  second parent's weight; equal ranks.
* ``blx`` (GENOME): BLX-alpha, each entry uniform in the parents' range widened by ``alpha``; equal ranks.

Every child module's scale ``alpha / r`` is the weighted mean of its parents' scales; element-wise methods
fold each parent's scale into ``B`` first so parents with different alphas combine correctly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch

from nora.genetics.errors import GeneticsError, IncompatibleParentsError
from nora.genetics.factors import (
    blend_alpha,
    dare_prune,
    low_rank_sum,
    pad_rank_columns,
    pad_rank_rows,
    random_coefficients_like,
    slerp,
    split_singular_values,
)
from nora.genetics.genome import (
    Genome,
    LoraModule,
    alpha_for_scale,
    check_same_base,
    check_same_base_model,
)

CrossoverMethod = Literal["nora", "linear", "svd", "ties", "dare", "slerp", "blx"]
CROSSOVER_METHODS: tuple[str, ...] = get_args(CrossoverMethod)


@dataclass(frozen=True)
class CrossoverSpec:
    """How to combine parents.

    Attributes:
        method: one of :data:`CROSSOVER_METHODS`.
        temperature: softmax temperature turning parent fitness into weights (lower = fitter dominates).
        rank: ``svd`` only: the child's rank (default: the largest parent rank).
        density: ``ties``/``dare``: fraction of entries kept.
        blx_alpha: ``blx``: how far beyond the parents' range an entry may fall.
        allow_mixed_base_models: breed parents whose adapter configs name different base models (for
            copies of one model under different names); refused by default.
    """

    method: CrossoverMethod = "nora"
    temperature: float = 1.0
    rank: int | None = None
    density: float = 0.5
    blx_alpha: float = 0.5
    allow_mixed_base_models: bool = False

    def __post_init__(self) -> None:
        if self.method not in CROSSOVER_METHODS:
            raise GeneticsError(f"method: {self.method!r} is not one of {', '.join(CROSSOVER_METHODS)}")
        if not self.temperature > 0:
            raise GeneticsError(f"temperature: must be > 0, got {self.temperature}")
        if self.rank is not None and self.rank < 1:
            raise GeneticsError(f"rank: must be at least 1, got {self.rank}")
        if self.rank is not None and self.method != "svd":
            raise GeneticsError(f"rank: only the svd method truncates to a rank; {self.method} sets its own")
        if not 0 < self.density <= 1:
            raise GeneticsError(f"density: must be in (0, 1], got {self.density}")
        if self.blx_alpha < 0:
            raise GeneticsError(f"blx_alpha: must be >= 0, got {self.blx_alpha}")


def parent_weights(fitness: Sequence[float] | None, count: int, temperature: float = 1.0) -> list[float]:
    """NoRA's parent weights ``softmax(fitness / T)``; uniform when fitness is unknown.

    Args:
        fitness: one value per parent (higher is better; negate losses first), or ``None``.
        count: number of parents.
        temperature: softmax temperature.

    Returns:
        Weights that sum to 1.
    """
    if fitness is None:
        return [1.0 / count] * count
    if len(fitness) != count:
        raise GeneticsError(f"fitness: got {len(fitness)} values for {count} parents; give one per parent")
    values = torch.tensor([float(f) for f in fitness], dtype=torch.float64)
    if not torch.isfinite(values).all():
        raise GeneticsError(f"fitness: values must be finite numbers, got {list(fitness)}")
    return [float(w) for w in torch.softmax(values / temperature, dim=0)]


@dataclass(frozen=True)
class ModuleContext:
    """What a per-module crossover needs besides the parents' factors and weights."""

    name: str
    spec: CrossoverSpec
    generator: torch.Generator
    use_rslora: bool


ModuleCrossover = Callable[[Sequence[LoraModule], list[float], ModuleContext], LoraModule]


def _child_scale(modules: Sequence[LoraModule], weights: list[float], use_rslora: bool) -> float:
    return sum(w * m.scale(use_rslora) for w, m in zip(weights, modules, strict=True))


def _from_factors(a: torch.Tensor, b: torch.Tensor, scale: float, use_rslora: bool) -> LoraModule:
    return LoraModule(a=a, b=b, alpha=alpha_for_scale(scale, a.shape[0], use_rslora))


def _nora_module(modules: Sequence[LoraModule], weights: list[float], context: ModuleContext) -> LoraModule:
    rank = max(m.rank for m in modules)
    a = torch.zeros(rank, modules[0].in_features)
    b = torch.zeros(modules[0].out_features, rank)
    for weight, module in zip(weights, modules, strict=True):
        coefficients_a = random_coefficients_like(module.a, context.generator)
        coefficients_b = random_coefficients_like(module.b, context.generator)
        a += pad_rank_rows(weight * coefficients_a * module.a.float(), rank)
        b += pad_rank_columns(weight * coefficients_b * module.b.float(), rank)
    return _from_factors(a, b, _child_scale(modules, weights, context.use_rslora), context.use_rslora)


def _product_space_module(
    modules: Sequence[LoraModule], weights: list[float], context: ModuleContext
) -> LoraModule:
    if context.spec.method == "linear":
        rank = sum(m.rank for m in modules)
    else:
        rank = context.spec.rank or max(m.rank for m in modules)
    scaled = [w * m.scale(context.use_rslora) for w, m in zip(weights, modules, strict=True)]
    u, singular, vh = low_rank_sum([m.b for m in modules], [m.a for m in modules], scaled, rank)
    scale = _child_scale(modules, weights, context.use_rslora)
    a, b = split_singular_values(u, singular, vh, scale)
    return _from_factors(a, b, scale, context.use_rslora)


def _merge_entrywise(
    modules: Sequence[LoraModule],
    weights: list[float],
    context: ModuleContext,
    merge: Callable[[list[torch.Tensor]], torch.Tensor],
) -> LoraModule:
    """Merge ``A``s and scale-folded ``B``s entry by entry, then unfold the child's scale from ``B``."""
    ranks = [m.rank for m in modules]
    if len(set(ranks)) > 1:
        raise IncompatibleParentsError(
            f"{context.spec.method} crossover combines factors entry by entry and needs equal ranks, but "
            f"module {context.name} has ranks {ranks}; use nora, linear or svd for different ranks"
        )
    scale = _child_scale(modules, weights, context.use_rslora)
    a = merge([m.a.float() for m in modules])
    b = merge([m.b.float() * m.scale(context.use_rslora) for m in modules]) / scale
    return _from_factors(a, b, scale, context.use_rslora)


def _ties_module(modules: Sequence[LoraModule], weights: list[float], context: ModuleContext) -> LoraModule:
    from peft.utils import merge_utils  # here, not at the top: peft imports transformers (~150 MiB)

    # TIES averages the entries that agree in sign, so the weights are rescaled to mean 1.
    mean_one = torch.tensor(weights) * len(weights)
    density = context.spec.density
    return _merge_entrywise(modules, weights, context, lambda ts: merge_utils.ties(ts, mean_one, density))


def _dare_module(modules: Sequence[LoraModule], weights: list[float], context: ModuleContext) -> LoraModule:
    from peft.utils import merge_utils  # here, not at the top: peft imports transformers (~150 MiB)

    convex = torch.tensor(weights)

    def merge(tensors: list[torch.Tensor]) -> torch.Tensor:
        pruned = [dare_prune(t, context.spec.density, context.generator) for t in tensors]
        return merge_utils.task_arithmetic(pruned, convex)

    return _merge_entrywise(modules, weights, context, merge)


def _slerp_module(modules: Sequence[LoraModule], weights: list[float], context: ModuleContext) -> LoraModule:
    return _merge_entrywise(modules, weights, context, lambda ts: slerp(weights[1], ts[0], ts[1]))


def _blx_module(modules: Sequence[LoraModule], weights: list[float], context: ModuleContext) -> LoraModule:
    alpha, generator = context.spec.blx_alpha, context.generator
    return _merge_entrywise(modules, weights, context, lambda ts: blend_alpha(ts, alpha, generator))


MODULE_CROSSOVERS: dict[str, ModuleCrossover] = {
    "nora": _nora_module,
    "linear": _product_space_module,
    "svd": _product_space_module,
    "ties": _ties_module,
    "dare": _dare_module,
    "slerp": _slerp_module,
    "blx": _blx_module,
}


def check_crossover_parents(parents: Sequence[Genome], spec: CrossoverSpec) -> None:
    """Raise :class:`IncompatibleParentsError` if ``spec.method`` cannot combine ``parents``."""
    check_same_base(list(parents))
    if not spec.allow_mixed_base_models:
        check_same_base_model(list(parents))
    if spec.method == "slerp" and len(parents) != 2:
        raise IncompatibleParentsError(f"slerp crossover interpolates exactly 2 parents, got {len(parents)}")


def iter_crossover_modules(
    parents: Sequence[Genome],
    fitness: Sequence[float] | None,
    spec: CrossoverSpec,
    generator: torch.Generator,
) -> Iterator[tuple[str, LoraModule]]:
    """The child's modules one at a time, in sorted name order and the first parent's dtype.

    Streaming lets callers mutate and store each module before the next is built, so breeding holds one
    child module at a time on top of the parents.
    """
    check_crossover_parents(parents, spec)
    weights = parent_weights(fitness, len(parents), spec.temperature)
    combine = MODULE_CROSSOVERS[spec.method]
    dtype, use_rslora = parents[0].dtype, parents[0].use_rslora
    for name in parents[0].modules:
        context = ModuleContext(name=name, spec=spec, generator=generator, use_rslora=use_rslora)
        child = combine([p.modules[name] for p in parents], weights, context)
        yield name, LoraModule(a=child.a.to(dtype), b=child.b.to(dtype), alpha=child.alpha)


def blend_genes(genes: Sequence[Mapping[str, float]], weights: Sequence[float]) -> dict[str, float]:
    """Genes every parent has are averaged with the parent weights; others come from the heaviest parent.

    Args:
        genes: each parent's hyperparameter genes.
        weights: parent weights (see :func:`parent_weights`).

    Returns:
        The child's genes, sorted by name.
    """
    blended: dict[str, float] = {}
    for _, parent_genes in sorted(zip(weights, genes, strict=True), key=lambda pair: pair[0]):
        blended.update(parent_genes)
    shared = set.intersection(*(set(g) for g in genes)) if genes else set()
    for name in shared:
        blended[name] = sum(w * g[name] for w, g in zip(weights, genes, strict=True))
    return dict(sorted(blended.items()))


def child_hyperparameters(
    parents: Sequence[Genome], fitness: Sequence[float] | None, spec: CrossoverSpec
) -> dict[str, float]:
    """The child's genes: :func:`blend_genes` of the parents' genes with the crossover's parent weights."""
    weights = parent_weights(fitness, len(parents), spec.temperature)
    return blend_genes([p.hyperparameters for p in parents], weights)


def crossover(
    parents: Sequence[Genome],
    fitness: Sequence[float] | None,
    spec: CrossoverSpec,
    generator: torch.Generator,
) -> Genome:
    """Breed one child from ``parents``.

    Args:
        parents: two or more genomes over the same modules and base shapes.
        fitness: one value per parent (higher is better), or ``None`` for equal weights.
        spec: the method and its parameters.
        generator: the only source of randomness.

    Returns:
        The child, with the first parent's config and dtype and inherited hyperparameter genes.

    Raises:
        IncompatibleParentsError: if the parents differ in modules or base shapes, name different base
            models (unless ``spec.allow_mixed_base_models``), or ranks differ for a method that needs them
            equal.
    """
    first = parents[0]
    return Genome(
        modules=dict(iter_crossover_modules(parents, fitness, spec, generator)),
        config=first.config,
        hyperparameters=child_hyperparameters(parents, fitness, spec),
        use_rslora=first.use_rslora,
    )
