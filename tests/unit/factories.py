"""Small genome builders shared by the unit tests (pure functions, explicit generators)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from nora.genetics import Genome, LoraModule, init_genome, make_generator

SHAPES: dict[str, tuple[int, int]] = {
    "model.layers.0.self_attn.q_proj": (24, 16),
    "model.layers.0.self_attn.v_proj": (8, 16),
    "model.layers.1.mlp.down_proj": (16, 40),
}


def random_genome(
    seed: int,
    rank: int = 4,
    alpha: float = 8.0,
    ranks: Mapping[str, int] | None = None,
    shapes: Mapping[str, tuple[int, int]] = SHAPES,
    dtype: torch.dtype = torch.float32,
    use_rslora: bool = False,
) -> Genome:
    """A genome with random A and B (non-zero updates); ``ranks`` overrides the rank per module."""
    generator = make_generator(seed)
    genome = init_genome(shapes, rank, alpha, generator, b_std=0.2)
    modules = {}
    for name, module in genome.items():
        r = (ranks or {}).get(name, rank)
        a = torch.randn(r, module.in_features, generator=generator) * 0.3
        b = torch.randn(module.out_features, r, generator=generator) * 0.3
        modules[name] = LoraModule(a=a.to(dtype), b=b.to(dtype), alpha=alpha)
    return Genome(modules=modules, config=genome.config, use_rslora=use_rslora)


def dense_update(genome: Genome, name: str) -> torch.Tensor:
    """``scale * B @ A`` of one module in float64, the reference the operators are checked against."""
    module = genome.modules[name]
    return module.scale(genome.use_rslora) * (module.b.double() @ module.a.double())
