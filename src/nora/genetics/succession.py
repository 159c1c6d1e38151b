"""GENOME+'s succession step: move a genome toward the population's best and away from its worst.

Per module, on the updates rather than the factors (genomes grown from different initial ``A`` have
unrelated factor bases, so factor arithmetic would mix meaningless cross terms)::

    dW' = dW + toward * (dW_best - dW) - away * (dW_worst - dW)
        = (1 - toward + away) * dW + toward * dW_best - away * dW_worst

factored back exactly as the ``svd`` crossover does (QR + small SVD, never the dense matrix) and truncated
to the genome's own rank, with the genome's own scale. A genome that is the best itself with
``away = 0`` is unchanged up to that factorisation.
"""

from __future__ import annotations

from dataclasses import dataclass

from nora.genetics.errors import GeneticsError, IncompatibleParentsError
from nora.genetics.factors import low_rank_sum, pad_rank_columns, pad_rank_rows, split_singular_values
from nora.genetics.genome import Genome, LoraModule, check_same_base


@dataclass(frozen=True)
class SuccessionSpec:
    """Step sizes of the succession step.

    Attributes:
        toward: fraction of the way to the best genome's update (0 to 1).
        away: step away from the worst genome's update (0 to 1).
    """

    toward: float = 0.3
    away: float = 0.1

    def __post_init__(self) -> None:
        for name in ("toward", "away"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise GeneticsError(f"succession.{name}: must be in [0, 1], got {value}")


def _module_step(
    own: LoraModule, best: LoraModule, worst: LoraModule, spec: SuccessionSpec, use_rslora: bool
) -> LoraModule:
    weights = [
        (1.0 - spec.toward + spec.away) * own.scale(use_rslora),
        spec.toward * best.scale(use_rslora),
        -spec.away * worst.scale(use_rslora),
    ]
    u, singular, vh = low_rank_sum([own.b, best.b, worst.b], [own.a, best.a, worst.a], weights, own.rank)
    scale = own.scale(use_rslora)
    a, b = split_singular_values(u, singular, vh, scale)
    a, b = pad_rank_rows(a, own.rank), pad_rank_columns(b, own.rank)  # tiny modules: fewer components
    return LoraModule(a=a.to(own.a.dtype), b=b.to(own.b.dtype), alpha=own.alpha)


def succession(genome: Genome, best: Genome, worst: Genome, spec: SuccessionSpec) -> Genome:
    """``genome`` moved toward ``best`` and away from ``worst`` (see the module docstring).

    Raises:
        IncompatibleParentsError: if the three genomes differ in modules or base shapes.
    """
    check_same_base([genome, best, worst])
    if set(genome.modules) != set(best.modules) or set(genome.modules) != set(worst.modules):
        raise IncompatibleParentsError("succession: the genome, the best and the worst differ in modules")
    modules = {
        name: _module_step(module, best.modules[name], worst.modules[name], spec, genome.use_rslora)
        for name, module in genome.items()
    }
    return genome.with_modules(modules)
