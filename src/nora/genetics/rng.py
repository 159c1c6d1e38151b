"""Seeds and generators: every random choice derives from explicit parts, never the global RNG.

The engine seeds each choice from ``(population seed, generation, genome index, purpose)`` so that
re-running a generation's breeding after a crash reproduces the same adapters byte for byte.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from any parts, stable across processes, platforms and Python versions.

    Args:
        parts: for example ``(population_seed, generation, genome_index, "crossover")``.

    Returns:
        A non-negative integer below ``2**63``.
    """
    text = "\x1f".join(f"{type(part).__name__}:{part}" for part in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def make_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed``."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def generator_for(*parts: int | str) -> torch.Generator:
    """``make_generator(derive_seed(*parts))``: the generator for one purpose of one genome."""
    return make_generator(derive_seed(*parts))
