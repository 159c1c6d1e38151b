"""C-LoRA's fixed random projections: a low-dimensional point ``z`` becomes every module's ``A`` and ``B``.

For each target module a pair of Gaussian matrices ``P_A`` (``r*in x d``) and ``P_B`` (``out*r x d``) is
drawn from a generator seeded by ``(projection seed, module name)``, so the same seed always gives the same
projections, whatever the point and whatever else runs. ``A = reshape(P_A z)``, ``B = reshape(P_B z)``.

Scaling rule (documented deviation): the paper (after BBTv2) sets each projection's standard deviation
from the observed standard deviation of that layer's hidden states. We assume RMS-normalised inputs (unit
standard deviation, as after a Llama block's RMSNorm) and scale so that, for ``z`` drawn from the initial
search distribution ``N(0, sigma^2 I)``:

* the entries of ``A`` have standard deviation ``1 / sqrt(in)`` (``A x`` keeps the input's scale), so
  ``P_A``'s standard deviation is ``1 / (sqrt(in) * sqrt(d) * sigma)``;
* the update ``(alpha / r) * B @ A @ x`` has RMS ``scale`` times the input's, so ``B``'s entries have
  standard deviation ``scale * sqrt(r) / alpha`` and ``P_B``'s is that divided by ``sqrt(d) * sigma``.

Matrices are generated in row blocks, so memory stays at ``block x d`` floats whatever the module size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nora.genetics.errors import GeneticsError
from nora.genetics.genome import Genome, LoraModule
from nora.genetics.rng import generator_for

ROW_BLOCK = 8192
"""Projection rows generated at a time."""


@dataclass(frozen=True)
class ProjectionSpec:
    """How points become adapters.

    Attributes:
        seed: the projections' seed (derived from the population seed).
        dimension: ``d``, the length of each point.
        rank: the adapters' LoRA rank.
        alpha: their ``lora_alpha``.
        sigma: CMA-ES's initial step size (the scaling rule's ``sigma``).
        scale: the update's RMS relative to the input at the initial distribution.
    """

    seed: int
    dimension: int
    rank: int
    alpha: float
    sigma: float
    scale: float

    def __post_init__(self) -> None:
        if self.dimension < 1 or self.rank < 1:
            raise GeneticsError(f"dimension and rank must be at least 1, got {self.dimension}, {self.rank}")
        if not (self.alpha > 0 and self.sigma > 0 and self.scale > 0):
            raise GeneticsError("alpha, sigma and scale must be positive")


def _project(point: torch.Tensor, rows: int, std: float, generator: torch.Generator) -> torch.Tensor:
    """``P @ point`` for a ``rows x d`` matrix ``P ~ N(0, std^2)`` drawn block by block from ``generator``."""
    parts = []
    for start in range(0, rows, ROW_BLOCK):
        block = torch.randn(min(ROW_BLOCK, rows - start), point.shape[0], generator=generator)
        parts.append(block @ point)
    return torch.cat(parts) * std


def project_module(
    point: torch.Tensor, name: str, shape: tuple[int, int], spec: ProjectionSpec
) -> LoraModule:
    """Module ``name``'s factors (base weight ``shape = (out, in)``) at ``point``, in float32."""
    if point.shape != (spec.dimension,):
        raise GeneticsError(f"point has shape {tuple(point.shape)}; expected ({spec.dimension},)")
    out_features, in_features = shape
    generator = generator_for(spec.seed, "projection", name)
    spread = math.sqrt(spec.dimension) * spec.sigma
    a_std = 1.0 / (math.sqrt(in_features) * spread)
    b_std = spec.scale * math.sqrt(spec.rank) / (spec.alpha * spread)
    z = point.float()
    a = _project(z, spec.rank * in_features, a_std, generator).view(spec.rank, in_features)
    b = _project(z, out_features * spec.rank, b_std, generator).view(out_features, spec.rank)
    return LoraModule(a=a.float(), b=b.float(), alpha=spec.alpha)


def project_genome(
    points: Mapping[str, Sequence[float]],
    shapes: Mapping[str, tuple[int, int]],
    spec: ProjectionSpec,
    config: Mapping[str, Any] | None = None,
) -> Genome:
    """The adapter at ``points`` (module name to its point ``z``) over ``shapes`` (name to ``(out, in)``)."""
    missing = sorted(set(shapes) - set(points))
    if missing:
        raise GeneticsError(f"no point for module {missing[0]}")
    modules = {
        name: project_module(torch.tensor(points[name], dtype=torch.float32), name, shape, spec)
        for name, shape in sorted(shapes.items())
    }
    return Genome(modules=modules, config=dict(config or {}))
