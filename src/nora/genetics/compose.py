"""LoraHub's composition: the weighted sum of several adapters' updates, as one adapter.

Per module, ``dW = sum_i w_i * dW_i`` exactly, factored in product space by the ``linear`` merge's
:func:`nora.genetics.factors.low_rank_sum` (QR + small SVD, never the dense matrix). Unlike ``linear``
crossover, the weights are any real numbers (LoraHub searches them in ``[-1.5, 1.5]``), so they need not
sum to one and may be negative; the child's rank is the sum of the sources' ranks (exact), and its scale
is the sources' mean scale (any positive scale is exact: it is folded back out of the factors).
"""

from __future__ import annotations

from collections.abc import Sequence

from nora.genetics.errors import GeneticsError
from nora.genetics.factors import low_rank_sum, split_singular_values
from nora.genetics.genome import Genome, LoraModule, alpha_for_scale, check_same_base


def compose_module(modules: Sequence[LoraModule], weights: Sequence[float], use_rslora: bool) -> LoraModule:
    """One module of the composition, in float32."""
    scales = [m.scale(use_rslora) for m in modules]
    weighted = [w * s for w, s in zip(weights, scales, strict=True)]
    rank = sum(m.rank for m in modules)
    u, singular, vh = low_rank_sum([m.b for m in modules], [m.a for m in modules], weighted, rank)
    scale = sum(scales) / len(scales)
    a, b = split_singular_values(u, singular, vh, scale)
    return LoraModule(a=a, b=b, alpha=alpha_for_scale(scale, a.shape[0], use_rslora))


def compose(sources: Sequence[Genome], weights: Sequence[float]) -> Genome:
    """The adapter whose every update is ``sum_i weights[i] * sources[i]``'s update.

    Args:
        sources: adapters of the same base model and target modules (any ranks).
        weights: one real weight per source.

    Returns:
        The composition, in the first source's dtype and config, without hyperparameter genes.

    Raises:
        GeneticsError: if the counts differ; IncompatibleParentsError if the sources do not match.
    """
    if len(sources) != len(weights) or not sources:
        raise GeneticsError(f"compose needs one weight per source, got {len(weights)} for {len(sources)}")
    check_same_base(list(sources))
    first = sources[0]
    modules = {}
    for name in first.modules:
        child = compose_module([s.modules[name] for s in sources], weights, first.use_rslora)
        modules[name] = LoraModule(a=child.a.to(first.dtype), b=child.b.to(first.dtype), alpha=child.alpha)
    return Genome(modules=modules, config=first.config, use_rslora=first.use_rslora)
