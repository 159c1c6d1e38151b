"""Mutation: rank grow keeps the update, shrink drops the weakest, genes stay in bounds, determinism."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nora.genetics import MutationSpec, breed, crossover, make_generator, mutate, save_genome
from nora.genetics.crossover import CrossoverSpec
from nora.genetics.factors import component_energy
from nora.genetics.mutation import (
    grow_rank,
    mutate_hyperparameters,
    reset_component,
    scale_update,
    shrink_rank,
)
from tests.unit.factories import SHAPES, dense_update, random_genome

Q = "model.layers.0.self_attn.q_proj"


@settings(max_examples=20, deadline=None)
@given(rank=st.integers(1, 6), count=st.integers(1, 4), rslora=st.booleans(), seed=st.integers(0, 2**16))
def test_rank_grow_leaves_the_update_unchanged_and_is_trainable(
    rank: int, count: int, rslora: bool, seed: int
) -> None:
    genome = random_genome(seed, rank=rank, use_rslora=rslora)
    module = genome.modules[Q]
    grown = grow_rank(module, count, make_generator(seed), rslora)
    assert grown.rank == rank + count
    assert grown.scale(rslora) == pytest.approx(module.scale(rslora), rel=1e-11)
    assert torch.allclose(grown.delta(rslora), module.delta(rslora), atol=1e-6)
    assert torch.count_nonzero(grown.b[:, rank:]) == 0
    assert bool((grown.a[rank:].abs().sum(dim=1) > 0).all()), (
        "new A rows must be non-zero to receive gradient"
    )


def test_rank_shrink_drops_the_lowest_energy_component() -> None:
    module = random_genome(1, rank=5).modules[Q]
    energy = component_energy(module.a, module.b)
    weakest = int(energy.argmin())
    shrunk = shrink_rank(module, 1, use_rslora=False)
    kept = [i for i in range(5) if i != weakest]
    assert shrunk.rank == 4
    assert torch.equal(shrunk.a, module.a[kept])
    assert shrunk.scale(False) == pytest.approx(module.scale(False))
    assert shrink_rank(module, 10, use_rslora=False).rank == 1


def test_reset_component_zeroes_its_contribution() -> None:
    module = random_genome(2, rank=3).modules[Q]
    reset = reset_component(module, 1, make_generator(0))
    assert torch.count_nonzero(reset.b[:, 1]) == 0
    assert not torch.equal(reset.a[1], module.a[1])
    assert torch.equal(reset.a[[0, 2]], module.a[[0, 2]])


def test_gene_noise_touches_about_gene_probability_of_entries() -> None:
    genome = random_genome(3, shapes={Q: (200, 100)}, rank=8)
    mutant = mutate(genome, MutationSpec(sigma=0.01, gene_probability=0.1), make_generator(4))
    changed = (mutant.modules[Q].a != genome.modules[Q].a).float().mean()
    assert 0.08 < float(changed) < 0.12
    assert mutant.ranks == genome.ranks


def test_grow_respects_max_rank_and_shrink_then_grow_order() -> None:
    genome = random_genome(5, rank=4)
    grown = mutate(genome, MutationSpec(grow_probability=1.0, grow_by=3, max_rank=6), make_generator(0))
    assert set(grown.ranks.values()) == {6}
    both = mutate(
        genome, MutationSpec(grow_probability=1, shrink_probability=1, grow_by=2), make_generator(0)
    )
    assert set(both.ranks.values()) == {5}


def test_hyperparameter_genes_move_by_factor_or_resample_within_bounds() -> None:
    spec = MutationSpec(hyperparameter_probability=1.0, hyperparameter_bounds={"learning_rate": (1e-5, 1e-3)})
    seen = set()
    for seed in range(40):
        genes = mutate_hyperparameters({"learning_rate": 1e-4, "beta": 0.1}, spec, make_generator(seed))
        assert 1e-5 <= genes["learning_rate"] <= 1e-3
        assert genes["beta"] in (pytest.approx(0.08), pytest.approx(0.12))
        seen.add(round(genes["learning_rate"], 12))
    assert {8e-5, 1.2e-4} <= seen
    assert len(seen) > 2, "some genes must have been resampled within bounds"
    clipped = mutate_hyperparameters(
        {"learning_rate": 5.0},
        MutationSpec(hyperparameter_bounds={"learning_rate": (0, 1)}),
        make_generator(0),
    )
    assert clipped == {"learning_rate": 1.0}


def test_missing_bounded_genes_are_sampled() -> None:
    spec = MutationSpec(hyperparameter_bounds={"beta": (0.05, 0.5)})
    genes = mutate_hyperparameters({}, spec, make_generator(1))
    assert 0.05 <= genes["beta"] <= 0.5


def test_same_seed_gives_byte_identical_mutants(tmp_path: Path) -> None:
    genome = random_genome(6, dtype=torch.bfloat16)
    spec = MutationSpec(
        sigma=0.02, gene_probability=0.5, reset_probability=0.5, grow_probability=0.5, shrink_probability=0.5
    )
    save_genome(mutate(genome, spec, make_generator(3)), tmp_path / "a")
    save_genome(mutate(genome, spec, make_generator(3)), tmp_path / "b")
    save_genome(mutate(genome, spec, make_generator(4)), tmp_path / "c")
    weights = [(tmp_path / d / "adapter_model.safetensors").read_bytes() for d in "abc"]
    assert weights[0] == weights[1]
    assert weights[0] != weights[2]


def test_breed_equals_mutate_of_crossover() -> None:
    parents = [random_genome(7, ranks={Q: 2}), random_genome(8, ranks={Q: 6})]
    cross, mut = CrossoverSpec(method="nora"), MutationSpec(sigma=0.01, grow_probability=0.5, scale_sigma=0.4)
    streamed = breed(parents, [0.1, 0.3], cross, mut, make_generator(1), make_generator(2))
    composed = mutate(crossover(parents, [0.1, 0.3], cross, make_generator(1)), mut, make_generator(2))
    for name in SHAPES:
        assert torch.equal(streamed.modules[name].a, composed.modules[name].a)
        assert torch.equal(streamed.modules[name].b, composed.modules[name].b)


def test_mutation_keeps_updates_finite_and_dtype() -> None:
    genome = random_genome(9, dtype=torch.bfloat16)
    mutant = mutate(genome, MutationSpec(sigma=0.01, grow_probability=1.0), make_generator(0))
    assert mutant.dtype == torch.bfloat16
    assert all(torch.isfinite(dense_update(mutant, n)).all() for n in SHAPES)


def test_scale_update_multiplies_every_update_exactly() -> None:
    genome = random_genome(5, rank=4)
    scaled = scale_update(genome, -1.7)
    for name in SHAPES:
        assert torch.allclose(dense_update(scaled, name), -1.7 * dense_update(genome, name), atol=1e-6)
        assert torch.equal(scaled.modules[name].a, genome.modules[name].a)


def test_the_magnitude_gene_scales_the_whole_update_by_one_seeded_factor() -> None:
    genome = random_genome(6, rank=4)
    noisy = MutationSpec(sigma=0.01, gene_probability=0.5)
    plain = mutate(genome, noisy, make_generator(2))
    magnitude = MutationSpec(sigma=0.01, gene_probability=0.5, scale_sigma=0.5)
    scaled = mutate(genome, magnitude, make_generator(2))
    factors = {
        float(scaled.modules[n].b.norm() / plain.modules[n].b.norm()) for n in SHAPES
    }  # the same gene noise, then one factor for every module
    assert max(factors) - min(factors) < 1e-5
    assert abs(factors.pop() - 1.0) > 1e-3
    for name in SHAPES:
        assert torch.equal(scaled.modules[name].a, plain.modules[name].a)
        assert torch.equal(
            mutate(genome, magnitude, make_generator(2)).modules[name].b, scaled.modules[name].b
        )


def test_spec_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="gene_probability: must be a probability"):
        MutationSpec(gene_probability=1.5)
    with pytest.raises(ValueError, match="sigma: must be >= 0"):
        MutationSpec(sigma=-1)
    with pytest.raises(ValueError, match="scale_sigma: must be >= 0"):
        MutationSpec(scale_sigma=-0.1)
    with pytest.raises(ValueError, match=r"hyperparameter_bounds\.lr: low 2 exceeds high 1"):
        MutationSpec(hyperparameter_bounds={"lr": (2, 1)})


@settings(max_examples=30, deadline=None)
@given(
    rank=st.integers(1, 8),
    grow=st.integers(1, 4),
    shrink=st.integers(1, 4),
    max_rank=st.integers(1, 10),
    seed=st.integers(0, 2**16),
)
def test_rank_law_of_shrink_then_grow(rank: int, grow: int, shrink: int, max_rank: int, seed: int) -> None:
    genome = random_genome(seed, rank=rank)
    spec = MutationSpec(
        grow_probability=1, shrink_probability=1, grow_by=grow, shrink_by=shrink, max_rank=max_rank
    )
    mutant = mutate(genome, spec, make_generator(seed))
    shrunk = max(1, rank - shrink) if rank > 1 else 1
    expected = max(shrunk, min(shrunk + grow, max_rank))
    for name, module in mutant.items():
        assert module.rank == expected, name
        assert module.a.shape[0] == module.b.shape[1] == expected
