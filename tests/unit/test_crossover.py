"""Crossover: rank laws, equality with dense references, and determinism for every method."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from peft.utils import merge_utils

from nora.genetics import (
    CROSSOVER_METHODS,
    CrossoverSpec,
    IncompatibleParentsError,
    crossover,
    make_generator,
    parent_weights,
    save_genome,
)
from nora.genetics.factors import low_rank_sum
from tests.unit.factories import SHAPES, dense_update, random_genome

NAMES = sorted(SHAPES)
Q = "model.layers.0.self_attn.q_proj"


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual.double() - expected).norm() / expected.norm())


def truncated(matrix: torch.Tensor, rank: int) -> torch.Tensor:
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    return u[:, :rank] @ torch.diag(s[:rank]) @ vh[:rank]


def test_parent_weights_are_a_softmax_of_fitness_over_temperature() -> None:
    weights = parent_weights([0.2, 0.5], 2, temperature=0.1)
    expected = torch.softmax(torch.tensor([2.0, 5.0], dtype=torch.float64), 0)
    assert weights == pytest.approx(expected.tolist())
    assert parent_weights(None, 3) == pytest.approx([1 / 3] * 3)
    assert sum(parent_weights([-3.0, -1.0, -2.0], 3)) == pytest.approx(1.0)


@settings(max_examples=25, deadline=None)
@given(
    ranks=st.lists(st.integers(1, 6), min_size=2, max_size=3),
    fitness=st.lists(st.floats(-2, 2), min_size=3, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_linear_is_the_exact_weighted_sum_at_summed_rank(
    ranks: list[int], fitness: list[float], seed: int
) -> None:
    parents = [random_genome(seed + i, ranks={Q: r}, alpha=4.0 + i) for i, r in enumerate(ranks)]
    fitness = fitness[: len(parents)]
    child = crossover(parents, fitness, CrossoverSpec(method="linear"), make_generator(seed))
    weights = parent_weights(fitness, len(parents))
    for name in NAMES:
        expected = sum(w * dense_update(p, name) for w, p in zip(weights, parents, strict=True))
        assert isinstance(expected, torch.Tensor)
        assert relative_error(dense_update(child, name), expected) < 1e-4
    assert child.ranks[Q] == min(sum(ranks), *SHAPES[Q])


@settings(max_examples=25, deadline=None)
@given(
    ranks=st.lists(st.integers(1, 6), min_size=2, max_size=3),
    target=st.one_of(st.none(), st.integers(1, 5)),
    seed=st.integers(0, 2**16),
)
def test_svd_equals_a_dense_truncated_svd(ranks: list[int], target: int | None, seed: int) -> None:
    parents = [random_genome(seed + i, ranks={Q: r}) for i, r in enumerate(ranks)]
    child = crossover(parents, None, CrossoverSpec(method="svd", rank=target), make_generator(seed))
    for name in NAMES:
        rank = target or max(p.modules[name].rank for p in parents)
        dense = sum(dense_update(p, name) for p in parents) / len(parents)
        assert isinstance(dense, torch.Tensor)
        assert child.modules[name].rank == min(rank, sum(p.modules[name].rank for p in parents))
        assert relative_error(dense_update(child, name), truncated(dense, child.modules[name].rank)) < 1e-4


def test_low_rank_sum_never_needs_more_than_factor_sized_memory() -> None:
    generator = make_generator(0)
    bs = [torch.randn(3000, 4, generator=generator), torch.randn(3000, 2, generator=generator)]
    as_ = [torch.randn(4, 5000, generator=generator), torch.randn(2, 5000, generator=generator)]
    u, s, vh = low_rank_sum(bs, as_, [0.5, 2.0], rank=6)
    assert u.shape == (3000, 6)
    assert vh.shape == (6, 5000)
    probe = torch.randn(5000, 3, generator=generator)
    expected = 0.5 * bs[0] @ (as_[0] @ probe) + 2.0 * bs[1] @ (as_[1] @ probe)
    assert torch.allclose(u @ (s[:, None] * (vh @ probe)), expected, rtol=1e-3, atol=1e-3)


def test_nora_child_is_the_coefficient_weighted_zero_padded_sum() -> None:
    first = random_genome(1, rank=4, ranks={Q: 2})
    second = random_genome(2, rank=4, ranks={Q: 6})
    fitness = [0.3, 0.6]
    child = crossover(
        [first, second], fitness, CrossoverSpec(method="nora", temperature=0.5), make_generator(7)
    )
    weights = parent_weights(fitness, 2, temperature=0.5)
    generator = make_generator(7)
    for name in NAMES:
        parents = [first.modules[name], second.modules[name]]
        rank = max(m.rank for m in parents)
        a = torch.zeros(rank, parents[0].in_features)
        b = torch.zeros(parents[0].out_features, rank)
        for w, m in zip(weights, parents, strict=True):
            c_a = torch.rand(m.a.shape, generator=generator)
            c_b = torch.rand(m.b.shape, generator=generator)
            a[: m.rank] += w * c_a * m.a
            b[:, : m.rank] += w * c_b * m.b
        assert child.modules[name].rank == rank
        assert torch.allclose(child.modules[name].a, a)
        assert torch.allclose(child.modules[name].b, b)
        expected_scale = sum(w * m.scale(False) for w, m in zip(weights, parents, strict=True))
        assert child.modules[name].scale(False) == pytest.approx(expected_scale)


@pytest.mark.parametrize("method", ["ties", "dare", "slerp", "blx"])
def test_entrywise_methods_refuse_different_ranks_with_advice(method: str) -> None:
    parents = [random_genome(1, rank=4), random_genome(2, rank=4, ranks={Q: 8})]
    with pytest.raises(IncompatibleParentsError, match=rf"{method} crossover .* needs equal ranks.*use nora"):
        crossover(parents, None, CrossoverSpec(method=method), make_generator(0))  # type: ignore[arg-type]


def test_ties_reuses_peft_merge_on_each_factor() -> None:
    parents = [random_genome(3), random_genome(4)]
    child = crossover(parents, [1.0, 1.0], CrossoverSpec(method="ties", density=0.4), make_generator(0))
    expected = merge_utils.ties([p.modules[Q].a for p in parents], torch.tensor([1.0, 1.0]), 0.4)
    assert torch.allclose(child.modules[Q].a, expected)


def test_dare_at_full_density_is_the_weighted_factor_sum() -> None:
    parents = [random_genome(5), random_genome(6)]
    child = crossover(parents, [0.0, 1.0], CrossoverSpec(method="dare", density=1.0), make_generator(0))
    weights = parent_weights([0.0, 1.0], 2)
    expected = weights[0] * parents[0].modules[Q].a + weights[1] * parents[1].modules[Q].a
    assert torch.allclose(child.modules[Q].a, expected)


def test_slerp_follows_the_weights_to_the_fitter_parent() -> None:
    parents = [random_genome(7), random_genome(8)]
    child = crossover(parents, [0.0, 100.0], CrossoverSpec(method="slerp"), make_generator(0))
    assert torch.allclose(child.modules[Q].a, parents[1].modules[Q].a, atol=1e-5)
    with pytest.raises(IncompatibleParentsError, match="exactly 2 parents"):
        crossover([*parents, parents[0]], None, CrossoverSpec(method="slerp"), make_generator(0))


def test_blx_children_stay_within_the_widened_parent_range() -> None:
    parents = [random_genome(9), random_genome(10)]
    child = crossover(parents, None, CrossoverSpec(method="blx", blx_alpha=0.25), make_generator(0))
    stacked = torch.stack([p.modules[Q].a for p in parents])
    low, high = stacked.min(0).values, stacked.max(0).values
    spread = high - low
    assert bool(
        (
            (child.modules[Q].a >= low - 0.25 * spread - 1e-6)
            & (child.modules[Q].a <= high + 0.25 * spread + 1e-6)
        ).all()
    )
    assert not torch.allclose(child.modules[Q].a, parents[0].modules[Q].a)


@pytest.mark.parametrize("method", CROSSOVER_METHODS)
def test_same_seed_same_bytes_and_child_dtype_follows_parents(method: str, tmp_path: Path) -> None:
    parents = [random_genome(11, dtype=torch.bfloat16), random_genome(12, dtype=torch.bfloat16)]
    spec = CrossoverSpec(method=method)  # type: ignore[arg-type]
    for run in ("a", "b"):
        save_genome(crossover(parents, [0.1, 0.2], spec, make_generator(99)), tmp_path / run)
    first = (tmp_path / "a" / "adapter_model.safetensors").read_bytes()
    assert first == (tmp_path / "b" / "adapter_model.safetensors").read_bytes()
    assert crossover(parents, None, spec, make_generator(99)).dtype == torch.bfloat16


def test_hyperparameter_genes_are_weight_averaged() -> None:
    first = random_genome(13).with_hyperparameters({"learning_rate": 1e-4, "beta": 0.1})
    second = random_genome(14).with_hyperparameters({"learning_rate": 3e-4})
    child = crossover([first, second], None, CrossoverSpec(method="svd"), make_generator(0))
    assert child.hyperparameters == pytest.approx({"learning_rate": 2e-4, "beta": 0.1})


def test_spec_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="temperature: must be > 0"):
        CrossoverSpec(temperature=0)
    with pytest.raises(ValueError, match="rank: only the svd method"):
        CrossoverSpec(method="nora", rank=4)
    with pytest.raises(ValueError, match=r"density: must be in \(0, 1\]"):
        CrossoverSpec(method="ties", density=0)


@settings(max_examples=30, deadline=None)
@given(
    method=st.sampled_from(CROSSOVER_METHODS),
    rank=st.integers(1, 5),
    other=st.integers(1, 5),
    out_features=st.integers(2, 12),
    in_features=st.integers(2, 12),
    seed=st.integers(0, 2**16),
)
def test_every_method_keeps_shapes_consistent_and_follows_its_rank_law(
    method: str, rank: int, other: int, out_features: int, in_features: int, seed: int
) -> None:
    shapes = {"model.layers.0.mlp.up_proj": (out_features, in_features)}
    equal_ranks = method in ("ties", "dare", "slerp", "blx")
    second_rank = rank if equal_ranks else other
    parents = [
        random_genome(seed, rank=rank, shapes=shapes),
        random_genome(seed + 1, rank=second_rank, shapes=shapes),
    ]
    child = crossover(parents, [0.1, 0.2], CrossoverSpec(method=method), make_generator(seed))  # type: ignore[arg-type]
    module = child.modules["model.layers.0.mlp.up_proj"]
    expected = {
        "nora": max(rank, second_rank),
        "linear": min(rank + second_rank, out_features, in_features),
        "svd": min(max(rank, second_rank), rank + second_rank, out_features, in_features),
    }.get(method, rank)
    assert module.rank == expected
    assert module.a.shape == (expected, in_features)
    assert module.b.shape == (out_features, expected)
    assert torch.isfinite(module.a).all()
    assert torch.isfinite(module.b).all()
