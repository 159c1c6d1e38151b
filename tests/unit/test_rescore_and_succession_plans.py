"""Re-scoring of elites (winner's curse), rotating eval rows, succession orders and the test split's
place in a genome's task."""

from __future__ import annotations

from pathlib import Path

import torch

from nora.evolution.breeding import execute
from nora.evolution.genome_store import download_genome, upload_genome
from nora.evolution.planning import plan_initial, plan_next
from nora.evolution.tasks import genome_task
from nora.storage import LocalStore
from nora.trainer.data import Example
from nora.trainer.irpo_config import AdapterRef, BaseModelRef, IrpoConfig, TrainerJob
from nora.trainer.pipeline import eval_rows
from tests.unit.factories import dense_update, random_genome
from tests.unit.test_evolution import POP, make_spec, scored

FITNESS: list[float | None] = [0.1, 0.9, 0.3, 0.5, 0.7, 0.2]


def test_elites_carry_their_fitness_unless_rescored() -> None:
    for rescore in (False, True):
        spec = make_spec(
            selection={"method": "tournament", "survivors": 3, "elites": 2, "rescoreElites": rescore}
        )
        previous = scored(plan_initial(spec, POP), FITNESS)
        plan = plan_next(spec, POP, 1, previous)
        elites = [g for g in plan.genomes if g.origin == "elite"]
        assert [g.parents[0] for g in elites] == ["pop-g0-1", "pop-g0-4"]
        trained = {plan.id: result.adapter for plan, result in previous}
        assert [g.adapter for g in elites] == [trained["pop-g0-1"], trained["pop-g0-4"]]
        if rescore:
            assert all(g.train and g.fitness is None for g in elites)
        else:
            assert [(g.train, g.fitness) for g in elites] == [(False, 0.9), (False, 0.7)]


def test_a_rescored_elite_is_only_evaluated_from_its_trained_adapter() -> None:
    spec = make_spec(selection={"method": "tournament", "survivors": 3, "elites": 1, "rescoreElites": True})
    plan = plan_next(spec, POP, 1, scored(plan_initial(spec, POP), FITNESS))
    elite, child = plan.genomes[0], plan.genomes[1]
    task = genome_task(spec, POP, elite, key_uri=lambda key: f"s3://b/{key}")
    assert task.training.method == "none"
    assert task.adapter.uri == f"s3://b/{elite.adapter}"
    assert genome_task(spec, POP, child, key_uri=str).training.method == "irpo"


def _job(uri: str, generation: int, rotate: bool) -> TrainerJob:
    return TrainerJob(
        genome="g",
        population=POP,
        generation=generation,
        base_model=BaseModelRef(uri="file:///m"),
        train_uri="",
        eval_uri=uri,
        adapter=AdapterRef(),
        output="file:///o",
        irpo=IrpoConfig(method="none", eval_prompts=3, rotate_eval=rotate),
    )


def test_rotating_eval_moves_the_rows_by_generation(tmp_path: Path) -> None:
    rows = [Example(f"q{i}", "s", str(i)) for i in range(7)]
    path = tmp_path / "eval.jsonl"
    path.write_text(
        "".join(f'{{"question": "{r.question}", "solution": "s", "answer": "{r.answer}"}}\n' for r in rows)
    )
    assert [r.question for r in eval_rows(_job(path.as_uri(), 2, False))] == ["q0", "q1", "q2"]
    assert [r.question for r in eval_rows(_job(path.as_uri(), 1, True))] == ["q3", "q4", "q5"]
    assert [r.question for r in eval_rows(_job(path.as_uri(), 2, True))] == ["q6", "q0", "q1"]


def test_succession_orders_point_at_the_global_best_and_worst(tmp_path: Path) -> None:
    spec = make_spec(
        selection={"method": "truncation", "survivors": 3, "elites": 1},
        mutation={
            "sigma": 0.0,
            "rankGrowProbability": 0.0,
            "rankShrinkProbability": 0.0,
            "succession": {},
            "scaleSigma": 0.0,
        },
        crossover={"probability": 0.0},
    )
    previous = scored(plan_initial(spec, POP), FITNESS)
    plan = plan_next(spec, POP, 1, previous)
    store = LocalStore(tmp_path)
    for index, (_, result) in enumerate(previous):
        upload_genome(store, result.adapter or "", random_genome(index, rank=2))
    for order in plan.breeding:
        assert order.succession is not None
        assert (order.succession.best.id, order.succession.worst.id) == ("pop-g0-1", "pop-g0-0")
        execute(order, store)
        child, parent = download_genome(store, order.output), download_genome(store, order.parents[0].adapter)
        best, worst = random_genome(1, rank=2), random_genome(0, rank=2)
        name = next(iter(child.modules))
        target = (
            0.8 * dense_update(parent, name)
            + 0.3 * dense_update(best, name)
            - 0.1 * dense_update(worst, name)
        )
        u, s, vh = torch.linalg.svd(target)
        assert torch.allclose(dense_update(child, name), (u[:, :2] * s[:2]) @ vh[:2], atol=1e-4)
