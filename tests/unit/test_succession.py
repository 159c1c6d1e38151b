"""GENOME+'s succession step and relative-sigma mutation, checked against dense references."""

from __future__ import annotations

import pytest
import torch

from nora.genetics import Genome, LoraModule, MutationSpec, make_generator, mutate
from nora.genetics.errors import GeneticsError
from nora.genetics.succession import SuccessionSpec, succession
from tests.unit.factories import dense_update, random_genome


def _best_rank_approximation(dense: torch.Tensor, rank: int) -> torch.Tensor:
    u, s, vh = torch.linalg.svd(dense)
    return (u[:, :rank] * s[:rank]) @ vh[:rank]


def test_succession_moves_toward_the_best_and_away_from_the_worst() -> None:
    own, best, worst = random_genome(1, rank=2), random_genome(2, rank=2), random_genome(3, rank=2)
    spec = SuccessionSpec(toward=0.4, away=0.2)
    moved = succession(own, best, worst, spec)
    for name in own.modules:
        target = (
            (1 - 0.4 + 0.2) * dense_update(own, name)
            + 0.4 * dense_update(best, name)
            - 0.2 * dense_update(worst, name)
        )
        assert moved.modules[name].rank == own.modules[name].rank
        expected = _best_rank_approximation(target, own.modules[name].rank)
        assert torch.allclose(dense_update(moved, name), expected, atol=1e-4)


def test_succession_is_exact_when_the_rank_holds_every_component() -> None:
    own, best, worst = random_genome(4, rank=6), random_genome(5, rank=2), random_genome(6, rank=2)
    moved = succession(own, best, worst, SuccessionSpec(toward=1.0, away=0.0))
    for name in own.modules:  # toward=1 lands on the best genome's update, which has rank 2 <= 6
        assert torch.allclose(dense_update(moved, name), dense_update(best, name), atol=1e-4)


def test_succession_of_the_best_with_no_push_away_keeps_its_update() -> None:
    best, worst = random_genome(7, rank=3), random_genome(8, rank=3)
    moved = succession(best, best, worst, SuccessionSpec(toward=0.5, away=0.0))
    for name in best.modules:
        assert torch.allclose(dense_update(moved, name), dense_update(best, name), atol=1e-4)


def test_succession_steps_are_fractions() -> None:
    with pytest.raises(GeneticsError, match=r"succession\.toward"):
        SuccessionSpec(toward=1.5)


def _zero_b(genome: Genome) -> Genome:
    modules = {n: LoraModule(a=m.a, b=torch.zeros_like(m.b), alpha=m.alpha) for n, m in genome.items()}
    return genome.with_modules(modules)


def test_relative_sigma_scales_noise_with_each_factor() -> None:
    genome = random_genome(9, rank=3)
    small = genome.with_modules(
        {n: LoraModule(a=m.a, b=m.b * 1e-4, alpha=m.alpha) for n, m in genome.items()}
    )
    spec = MutationSpec(sigma=0.1, relative_sigma=True)
    for source in (genome, small):
        mutant = mutate(source, spec, make_generator(0))
        for name, module in source.items():
            change = (mutant.modules[name].b - module.b).pow(2).mean().sqrt()
            rms = module.b.pow(2).mean().sqrt()
            assert 0.05 < float(change / rms) < 0.2


def test_relative_sigma_leaves_a_zero_b_at_zero() -> None:
    fresh = _zero_b(random_genome(10, rank=2))
    mutant = mutate(fresh, MutationSpec(sigma=0.5, relative_sigma=True), make_generator(1))
    assert all(torch.count_nonzero(m.b) == 0 for m in mutant.modules.values())
