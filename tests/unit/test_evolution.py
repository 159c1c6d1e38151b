"""The engine: planning, elites, selection paths, breeding orders, stopping rules, determinism."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nora.api.population import PopulationSpec
from nora.api.status import HistoryRow
from nora.evolution.breeding import execute
from nora.evolution.genome_store import download_genome, upload_genome
from nora.evolution.layout import trained_adapter_key
from nora.evolution.planning import GenerationPlan, plan_initial, plan_next
from nora.evolution.records import GenomePlan, GenomeResult, summarize
from nora.evolution.stopping import decide
from nora.evolution.tasks import genome_task
from nora.genetics import GeneticsError
from nora.storage import LocalStore
from tests.unit.factories import random_genome

POP = "pop"


def make_spec(**spec: Any) -> PopulationSpec:
    document: dict[str, Any] = {
        "baseModel": {"uri": "toy://arithmetic"},
        "dataset": {"train": "toy://arithmetic/train", "eval": "toy://arithmetic/eval"},
        "populationSize": 6,
        "seed": 7,
        "selection": {"method": "tournament", "survivors": 3, "elites": 1},
        "mutation": {"hyperparameters": {"learningRate": [1e-5, 1e-3]}},
    }
    document.update(spec)
    return PopulationSpec.model_validate(document)


def scored(plan: GenerationPlan, fitness: list[float | None]) -> list[tuple[GenomePlan, GenomeResult]]:
    """Results as if each genome of ``plan`` trained to the given fitness (``None`` = failed)."""
    pairs = []
    for genome, value in zip(plan.genomes, fitness, strict=True):
        adapter = trained_adapter_key("nora", POP, genome.generation, genome.id)
        result = GenomeResult(id=genome.id, attempts=1)
        result = (
            result.update(phase="Succeeded", fitness=value, metrics={"accuracy": value}, adapter=adapter)
            if value is not None
            else GenomeResult(id=genome.id, phase="Failed", attempts=3, message="boom")
        )
        pairs.append((genome, result))
    return pairs


def test_generation_zero_uses_seed_adapters_first_and_samples_genes() -> None:
    spec = make_spec(seedAdapters=[{"uri": "file:///adapters/a"}])
    plan = plan_initial(spec, POP)
    assert [g.id for g in plan.genomes] == [f"pop-g0-{i}" for i in range(6)]
    assert plan.genomes[0].origin == "seed"
    assert plan.genomes[0].adapter == "file:///adapters/a"
    assert {g.origin for g in plan.genomes[1:]} == {"initial"}
    assert all(1e-5 <= g.hyperparameters["learningRate"] <= 1e-3 for g in plan.genomes)
    assert len({g.seed for g in plan.genomes}) == 6
    assert plan == plan_initial(spec, POP)
    assert plan != plan_initial(make_spec(seed=8, seedAdapters=[{"uri": "file:///adapters/a"}]), POP)


@pytest.mark.parametrize("method", ["truncation", "tournament", "roulette", "rank"])
def test_next_generation_keeps_elites_and_breeds_only_from_survivors(method: str) -> None:
    spec = make_spec(selection={"method": method, "survivors": 3, "elites": 2})
    first = plan_initial(spec, POP)
    previous = scored(first, [0.1, 0.9, None, 0.5, 0.7, 0.2])
    plan = plan_next(spec, POP, 1, previous)
    assert len(plan.genomes) == 6
    elites = [g for g in plan.genomes if g.origin == "elite"]
    assert [(g.parents, g.fitness, g.train) for g in elites] == [
        (["pop-g0-1"], 0.9, False),
        (["pop-g0-4"], 0.7, False),
    ]
    assert elites[0].adapter == previous[1][1].adapter
    survivors = {"pop-g0-1", "pop-g0-4", "pop-g0-3"}
    for order in plan.breeding:
        assert {p.id for p in order.parents} <= survivors
        assert order.crossover is not None or order.mutation is not None
    offspring = [g for g in plan.genomes if g.origin in ("crossover", "mutation")]
    assert [g.id for g in offspring] == [o.child for o in plan.breeding]
    assert plan == plan_next(spec, POP, 1, previous), "re-planning must give the same plan"


def test_minimize_goal_prefers_low_loss_elites() -> None:
    spec = make_spec(
        fitness={"metric": "irpo_loss", "goal": "minimize"}, selection={"method": "rank", "elites": 1}
    )
    previous = scored(plan_initial(spec, POP), [0.9, 0.3, 0.5, 0.4, 0.8, 0.7])
    elite = plan_next(spec, POP, 1, previous).genomes[0]
    assert elite.parents == ["pop-g0-1"]
    assert elite.fitness == 0.3


def test_a_generation_without_any_fitness_cannot_be_bred_from() -> None:
    spec = make_spec()
    with pytest.raises(GeneticsError, match="no genome has a fitness"):
        plan_next(spec, POP, 1, scored(plan_initial(spec, POP), [None] * 6))


def test_crossover_probability_zero_gives_mutants_of_one_parent() -> None:
    spec = make_spec(crossover={"probability": 0.0})
    plan = plan_next(spec, POP, 1, scored(plan_initial(spec, POP), [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]))
    assert all(order.crossover is None and order.mutation is not None for order in plan.breeding)
    assert all(len(order.parents) == 1 for order in plan.breeding)


def test_breeding_orders_carry_the_magnitude_gene() -> None:
    spec = make_spec(mutation={"scaleSigma": 0.3, "sigma": 0.0})
    plan = plan_next(spec, POP, 1, scored(plan_initial(spec, POP), [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]))
    assert {order.mutation.scale_sigma for order in plan.breeding if order.mutation} == {0.3}
    assert all(order.mutation is not None for order in plan.breeding)


def test_breeding_orders_write_identical_children_and_skip_finished_ones(tmp_path: Path) -> None:
    spec = make_spec(selection={"method": "truncation", "survivors": 3, "elites": 1})
    first = plan_initial(spec, POP)
    previous = scored(first, [0.1, 0.9, 0.3, 0.5, 0.7, 0.2])
    stores = [LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")]
    for store in stores:
        for index, (_, result) in enumerate(previous):
            upload_genome(
                store,
                result.adapter or "",
                random_genome(index, ranks={"model.layers.0.self_attn.q_proj": 2 + index}),
            )
    plan = plan_next(spec, POP, 1, previous)
    for store in stores:
        assert all(execute(order, store) for order in plan.breeding)
    assert not any(execute(order, stores[0]) for order in plan.breeding), "finished orders are skipped"
    for order in plan.breeding:
        files = [s.read_bytes(f"{order.output}/adapter_model.safetensors") for s in stores]
        assert files[0] == files[1]
        child = download_genome(stores[0], order.output)
        assert child.hyperparameters == pytest.approx(dict(order.hyperparameters))


def summary(generation: int, best: float | None, failed: int = 0) -> HistoryRow:
    return HistoryRow(
        generation=generation,
        best=best,
        mean=best,
        worst=best,
        diversity=0.0,
        best_genome="g" if best is not None else None,
        succeeded=6 - failed,
        failed=failed,
    )


def test_stopping_rules() -> None:
    spec = make_spec(maxGenerations=4, stopping={"patience": 2, "minDelta": 0.01, "targetFitness": 0.95})
    assert decide(spec, [summary(0, 0.5)]).verdict == "continue"
    assert decide(spec, [summary(0, 0.5), summary(1, 0.96)]).reason == "TargetReached"
    stale = [summary(0, 0.5), summary(1, 0.505), summary(2, 0.509)]
    assert decide(spec, stale).reason == "Stagnated"
    improving = [summary(0, 0.5), summary(1, 0.52), summary(2, 0.53)]
    assert decide(spec, improving).verdict == "continue"
    four = [*improving, summary(3, 0.6)]
    assert decide(spec, four).reason == "MaxGenerations"
    assert decide(spec, [summary(0, None, failed=2)]).reason == "NoSurvivors"


def test_failure_budget_fails_the_population() -> None:
    spec = make_spec(retries={"maxFailedGenomes": 1})
    verdict = decide(spec, [summary(0, 0.5, failed=2)])
    assert (verdict.verdict, verdict.reason) == ("fail", "TooManyFailures")
    assert "spec.retries.maxFailedGenomes (1)" in verdict.message
    assert decide(spec, [summary(0, 0.5, failed=1)]).verdict == "continue"


def test_minimize_target_and_summaries() -> None:
    spec = make_spec(fitness={"metric": "irpo_loss", "goal": "minimize"}, stopping={"targetFitness": 0.2})
    results = [r for _, r in scored(plan_initial(spec, POP), [0.5, 0.1, None, 0.3, 0.4, 0.2])]
    row = summarize(0, results, "minimize")
    assert (row.best, row.worst, row.best_genome, row.failed, row.succeeded) == (0.1, 0.5, "pop-g0-1", 1, 5)
    assert row.mean == pytest.approx(0.3)
    assert decide(spec, [row]).reason == "TargetReached"


def test_genome_task_points_at_the_store_and_carries_genes() -> None:
    spec = make_spec()
    plan = plan_next(spec, POP, 1, scored(plan_initial(spec, POP), [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]))
    child = next(g for g in plan.genomes if g.train)
    task = genome_task(spec, POP, child, key_uri=lambda key: f"s3://bucket/{key}", resolve=lambda u: u + "#r")
    assert task.adapter.uri == f"s3://bucket/nora/pop/g1/{child.id}/start"
    assert task.output == f"s3://bucket/nora/pop/g1/{child.id}/output"
    assert task.base_model.uri == "toy://arithmetic#r"
    assert task.effective_training().learning_rate == child.hyperparameters["learningRate"]
    fresh = genome_task(spec, POP, plan_initial(spec, POP).genomes[0], key_uri=str)
    assert fresh.adapter.uri is None


@pytest.mark.parametrize(("windows", "expected"), [("generation", [None] * 5), ("genome", [7, 8, 9, 10, 11])])
def test_siblings_share_their_generations_train_window_unless_each_has_its_own(
    windows: str, expected: list[int | None]
) -> None:
    spec = make_spec(training={"promptWindows": windows})
    plan = plan_next(spec, POP, 1, scored(plan_initial(spec, POP), [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]))
    children = [g for g in plan.genomes if g.train and g.origin != "elite"]
    assert [genome_task(spec, POP, g, key_uri=str).train_window for g in children] == expected
