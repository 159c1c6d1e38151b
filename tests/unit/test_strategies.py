"""The CMA-ES strategies: projections, replay, composition, bounds and penalty (pure logic, no model)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from nora.api.population import PopulationSpec
from nora.evolution import breeding
from nora.evolution.planning import plan_initial, plan_next
from nora.evolution.records import GenomePlan, GenomeResult
from nora.evolution.strategies.orders import ComposeOrder, ProjectionOrder
from nora.evolution.strategies.plans import active_layer, plan_generation, search_spaces
from nora.evolution.strategies.points import POINT_FILE, PointRecord, module_points
from nora.evolution.strategies.search import History, losses, new_optimizer
from nora.genetics import GeneticsError, save_genome
from nora.genetics.compose import compose
from nora.genetics.projection import ProjectionSpec, project_genome
from nora.storage import LocalStore
from tests.unit.factories import SHAPES, dense_update, random_genome

PROJECTION = ProjectionSpec(seed=7, dimension=32, rank=4, alpha=8.0, sigma=0.5, scale=0.1)


def population(strategy: dict[str, Any], size: int = 6, **spec: Any) -> PopulationSpec:
    return PopulationSpec.model_validate(
        {
            "baseModel": {"uri": "hf://org/model"},
            "dataset": {"train": "s3://d/train", "eval": "s3://d/eval"},
            "populationSize": size,
            "strategy": strategy,
            **spec,
        }
    )


def fitness_of(point: np.ndarray) -> float:
    """A smooth toy fitness (higher is better) with its optimum at 0.3 in every coordinate."""
    return -float(np.sum((point - 0.3) ** 2))


def results_for(
    plan_genomes: tuple[GenomePlan, ...], points: list[np.ndarray]
) -> list[tuple[GenomePlan, GenomeResult]]:
    return [
        (genome, GenomeResult(id=genome.id, phase="Succeeded", fitness=fitness_of(point)))
        for genome, point in zip(plan_genomes, points, strict=True)
    ]


def planned_points(plan: Any) -> list[np.ndarray]:
    if isinstance(plan.breeding[0], ComposeOrder):
        return [np.array(order.weights) for order in plan.breeding]
    return [np.array(order.record.points[0]) for order in plan.breeding]


def run(spec: PopulationSpec, generations: int) -> tuple[History, list[Any]]:
    history: list[list[tuple[GenomePlan, GenomeResult]]] = []
    plans = []
    for number in range(generations):
        plan = plan_generation(spec, "p", number, history)
        plans.append(plan)
        history.append(results_for(plan.genomes, planned_points(plan)))
    return history, plans


def test_projections_are_deterministic_for_a_seed_and_differ_across_seeds() -> None:
    point = tuple(float(x) for x in torch.randn(32, generator=torch.Generator().manual_seed(1)))
    points = dict.fromkeys(SHAPES, point)
    first = project_genome(points, SHAPES, PROJECTION)
    again = project_genome(points, dict(reversed(list(SHAPES.items()))), PROJECTION)
    alone = project_genome(
        {"model.layers.0.self_attn.v_proj": point}, {"model.layers.0.self_attn.v_proj": (8, 16)}, PROJECTION
    )
    other = project_genome(points, SHAPES, ProjectionSpec(**{**PROJECTION.__dict__, "seed": 8}))
    for name, module in first.items():
        assert torch.equal(module.a, again.modules[name].a)
        assert torch.equal(module.b, again.modules[name].b)
        assert not torch.equal(module.a, other.modules[name].a)
    assert torch.equal(
        alone.modules["model.layers.0.self_attn.v_proj"].b, first.modules["model.layers.0.self_attn.v_proj"].b
    )


def test_the_projection_scaling_rule_holds_at_the_initial_distribution() -> None:
    spec = ProjectionSpec(seed=3, dimension=400, rank=8, alpha=16.0, sigma=0.5, scale=0.1)
    shapes = {"model.layers.0.self_attn.q_proj": (256, 512)}
    generator = torch.Generator().manual_seed(0)
    point = tuple(float(x) for x in torch.randn(400, generator=generator) * spec.sigma)
    module = project_genome(dict.fromkeys(shapes, point), shapes, spec).modules[
        "model.layers.0.self_attn.q_proj"
    ]
    assert float(module.a.std()) == pytest.approx(1 / math.sqrt(512), rel=0.15)
    inputs = torch.randn(512, 64, generator=generator)
    update = module.delta(use_rslora=False) @ inputs
    assert float(update.pow(2).mean().sqrt()) == pytest.approx(spec.scale, rel=0.3)


@pytest.mark.parametrize("strategy", [{"method": "cmaes", "dimension": 12}, {"method": "compose"}])
def test_a_replayed_optimiser_plans_what_an_uninterrupted_one_asks(strategy: dict[str, Any]) -> None:
    extra: dict[str, Any] = (
        {"seedAdapters": [{"uri": f"s3://b/a{i}"} for i in range(3)]}
        if strategy["method"] == "compose"
        else {}
    )
    spec = population(strategy, **extra)
    history, plans = run(spec, 4)
    optimizer = new_optimizer(spec, search_spaces(spec)[0])
    for number, plan in enumerate(plans):
        asked = [optimizer.ask() for _ in range(spec.population_size)]
        assert [p.tolist() for p in asked] == [p.tolist() for p in planned_points(plan)]
        optimizer.tell(
            [(x, -fitness_of(x) + (0.05 * float(np.mean(np.abs(x))) if extra else 0.0)) for x in asked]
        )
        assert plan_generation(spec, "p", number, history[:number]) == plan


def test_the_search_improves_the_toy_fitness() -> None:
    spec = population({"method": "cmaes", "dimension": 4, "sigma": 0.3}, size=8)
    history, _ = run(spec, 12)
    best = [max(float(r.fitness or 0.0) for _, r in generation) for generation in history]
    assert best[-1] > best[0]


def test_compose_weights_stay_within_the_bounds() -> None:
    seeds: dict[str, Any] = {"seedAdapters": [{"uri": f"s3://b/a{i}"} for i in range(4)]}
    spec = population({"method": "compose", "bounds": [-0.2, 0.1], "sigma": 1.0}, **seeds)
    _, plans = run(spec, 3)
    weights = np.concatenate([planned_points(plan) for plan in plans])
    assert weights.min() >= -0.2
    assert weights.max() <= 0.1
    assert weights.min() == -0.2  # a wide search reaches the bound: points are clipped, not rejected


def test_the_l1_penalty_is_told_for_compose_only_and_failures_rank_last() -> None:
    seeds: dict[str, Any] = {"seedAdapters": [{"uri": f"s3://b/a{i}"} for i in range(2)]}
    compose_spec = population({"method": "compose", "l1Penalty": 0.5}, size=3, **seeds)
    plans = [GenomePlan(id=f"g{i}", index=i, generation=0, origin="initial") for i in range(3)]
    results = [
        GenomeResult(id="g0", phase="Succeeded", fitness=0.5),
        GenomeResult(id="g1", phase="Failed"),
        GenomeResult(id="g2", phase="Succeeded", fitness=0.25),
    ]
    points = [np.array([1.0, -1.0]), np.array([0.0, 0.0]), np.array([0.2, 0.0])]
    told = losses(compose_spec, points, list(zip(plans, results, strict=True)))
    assert told == pytest.approx([-0.5 + 0.5, 0.0 + 1.0, -0.25 + 0.05])
    cmaes_spec = population({"method": "cmaes"}, size=3)
    assert losses(cmaes_spec, points, list(zip(plans, results, strict=True))) == pytest.approx(
        [-0.5, 0.75, -0.25]
    )
    failed = [GenomeResult(id=f"g{i}", phase="Failed") for i in range(3)]
    with pytest.raises(GeneticsError, match="no genome of the previous generation has a fitness"):
        losses(cmaes_spec, points, list(zip(plans, failed, strict=True)))


def test_a_compose_child_is_the_weighted_sum_of_the_seed_updates() -> None:
    ranks = {"model.layers.0.self_attn.q_proj": 2}
    sources = [random_genome(1), random_genome(2, ranks=ranks, alpha=4.0), random_genome(3, rank=6)]
    weights = [0.7, -1.3, 0.25]
    child = compose(sources, weights)
    for name in SHAPES:
        expected = sum(w * dense_update(s, name) for w, s in zip(weights, sources, strict=True))
        torch.testing.assert_close(dense_update(child, name), expected, rtol=1e-4, atol=1e-5)


def test_alternation_moves_one_layer_at_a_time_and_holds_the_others_at_their_mean() -> None:
    spec = population({"method": "cmaes", "dimension": 5, "layers": 2, "generationsPerLayer": 2})
    assert [active_layer(spec, n) for n in range(6)] == [0, 0, 1, 1, 0, 0]
    _, plans = run_layered(spec, 3)
    last = [order.record for order in plans[2].breeding]
    assert all(record.layered and len(record.points) == 2 for record in last)
    assert len({record.points[0] for record in last}) == 1  # layer 0 is held at its optimiser's mean
    assert last[0].points[0] != (0.0,) * 5  # which moved while layer 0 was active (generations 0 and 1)
    assert {order.record.points[1] for order in plans[1].breeding} == {(0.0,) * 5}
    assert len({record.points[1] for record in last}) == spec.population_size
    chosen = module_points(last[0], SHAPES)
    assert chosen["model.layers.1.mlp.down_proj"] == last[0].points[1]
    with pytest.raises(GeneticsError, match=r"spec\.strategy\.layers: 2 layers, but module"):
        module_points(last[0], ["model.layers.2.mlp.up_proj"])


def run_layered(spec: PopulationSpec, generations: int) -> tuple[History, list[Any]]:
    history: list[list[tuple[GenomePlan, GenomeResult]]] = []
    plans = []
    for number in range(generations):
        plan = plan_generation(spec, "p", number, history)
        plans.append(plan)
        layer = active_layer(spec, number) or 0
        history.append(results_for(plan.genomes, [np.array(o.record.points[layer]) for o in plan.breeding]))
    return history, plans


def test_the_genetic_strategy_is_todays_engine() -> None:
    spec = population({}, selection={"tournamentSize": 2})
    first = plan_generation(spec, "p", 0, [])
    assert first == plan_initial(spec, "p")
    pairs = [
        (g, GenomeResult(id=g.id, phase="Succeeded", fitness=0.1 * g.index, adapter=f"k/{g.id}"))
        for g in first.genomes
    ]
    assert plan_generation(spec, "p", 1, [pairs]) == plan_next(spec, "p", 1, pairs)


def test_orders_write_points_and_compositions_once(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    sources = [random_genome(1), random_genome(2)]
    uris = tuple(save_genome(s, tmp_path / f"seed{i}").resolve().as_uri() for i, s in enumerate(sources))
    inside = store.root / "seeds" / "s0"
    save_genome(sources[0], inside)
    record = PointRecord(PROJECTION, ((0.5,) * 32,))
    projection = ProjectionOrder("p-g0-0", "p/g0/p-g0-0/start", record)
    composition = ComposeOrder(
        "p-g0-1", "p/g0/p-g0-1/start", (inside.resolve().as_uri(), uris[1]), (0.5, -0.5)
    )
    assert breeding.execute(projection, store) is True
    assert breeding.execute(composition, store) is True
    assert PointRecord.loads(store.read_bytes(f"p/g0/p-g0-0/start/{POINT_FILE}")) == record
    written = (store.root / "p/g0/p-g0-1/start/adapter_model.safetensors").read_bytes()
    assert breeding.execute(projection, store) is False
    assert breeding.execute(composition, store) is False
    assert (store.root / "p/g0/p-g0-1/start/adapter_model.safetensors").read_bytes() == written
