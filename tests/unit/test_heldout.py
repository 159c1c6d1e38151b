"""The test split (the overfitting guard): what a finished run scores, how the score is recorded, when
the run concludes, and that no trainer ever reads the split."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from nora.api.base import ApiValidationError
from nora.api.manifest import parse_population
from nora.api.population import PopulationSpec
from nora.api.status import BestGenome, HistoryRow, PopulationRecord
from nora.api.task import HeldOutResult
from nora.evolution import contract, heldout, ledger
from nora.evolution.records import GenomePlan, GenomeResult, origin_text
from nora.evolution.tasks import genome_task
from nora.trainer import heldout_command
from tests.support.manifests import BASE_SPEC, population_body

TEST_URI = "s3://d/test.jsonl"


def _spec(**dataset: Any) -> PopulationSpec:
    data = {"train": "s3://d/train.jsonl", "eval": "s3://d/eval.jsonl", "test": TEST_URI, **dataset}
    return PopulationSpec.model_validate(
        {"baseModel": {"uri": "hf://org/model"}, "dataset": data, "populationSize": 3, "maxGenerations": 2}
    )


def _generation(number: int, genomes: Sequence[tuple[str, float, str]]) -> ledger.GenerationRecord:
    """``(origin, fitness, adapter key)`` per genome; an elite keeps the adapter of ``p-g0-1``."""
    plans = [
        GenomePlan(
            id=f"p-g{number}-{i}",
            index=i,
            generation=number,
            origin=origin,  # type: ignore[arg-type]
            parents=["p-g0-1"] if origin == "elite" else [],
            train=origin != "elite",
        )
        for i, (origin, _, _) in enumerate(genomes)
    ]
    results = [
        GenomeResult(id=p.id, phase="Succeeded", fitness=fitness, adapter=key)
        for p, (_, fitness, key) in zip(plans, genomes, strict=True)
    ]
    return ledger.GenerationRecord(number=number, plans=plans, results=results)


GENERATIONS = [
    _generation(0, [("initial", 0.6, "k0"), ("initial", 0.8, "k1"), ("initial", 0.7, "k2")]),
    _generation(1, [("elite", 0.8, "k1"), ("mutation", 0.9, "k3"), ("crossover", 0.5, "k4")]),
]


def _ended(spec: PopulationSpec) -> PopulationRecord:
    """The record after the last generation's verdict (Succeeded, MaxGenerations)."""
    record = PopulationRecord(phase="Running", generation=0)
    for generation in GENERATIONS:
        record, _ = ledger.record_generation(record, generation, spec)
        decided = ledger.decision(spec, record, lambda numbers: [])
        record = ledger.conclude(record, decided, generation.number)
    return record


def _no_rows(numbers: Sequence[int]) -> list[HistoryRow]:
    return []


def test_the_task_scores_each_distinct_adapter_once_best_first() -> None:
    spec = _spec()
    task = heldout.plan_task(spec, "p", _ended(spec), GENERATIONS, lambda key: f"s3://b/{key}")
    assert [a.genome for a in task.adapters] == [
        "p-g1-1",
        "p-g0-1",
        "p-g0-2",
    ]  # the elite is p-g0-1's adapter
    assert [a.uri for a in task.adapters] == ["s3://b/k3", "s3://b/k1", "s3://b/k2"]
    assert task.initial == 1, "generation 0's best"
    assert task.ensemble == [0, 1, 2]
    assert task.generations == 2
    assert task.dataset.test == TEST_URI
    assert task.output == "s3://b/nora/p/test/g1/test.json"


def test_without_an_ensemble_the_initial_best_is_still_scored() -> None:
    spec = _spec(testEnsemble=1)
    task = heldout.plan_task(spec, "p", _ended(spec), GENERATIONS, str)
    assert ([a.uri for a in task.adapters], task.initial, task.ensemble) == (["k3", "k1"], 1, [])
    record = _ended(spec).model_copy(
        update={"best": BestGenome(genome="p-g0-1", generation=0, fitness=0.8, adapter="k1")}
    )
    lone = heldout.plan_task(spec, "p", record, [GENERATIONS[0]], str)
    assert ([a.uri for a in lone.adapters], lone.initial) == (["k1"], 0), "the initial best is the best"


def test_the_score_says_how_far_evolution_moved_the_test_accuracy() -> None:
    spec = _spec()
    record = _ended(spec)
    task = heldout.plan_task(spec, "p", record, GENERATIONS, str)
    result = HeldOutResult(accuracy=[0.75, 0.7, 0.6], ensemble=0.8, rows=1000)
    score = heldout.scored(spec, record, task, result)
    assert score.phase == "Succeeded"
    assert score.best is not None
    assert score.initial is not None
    assert score.ensemble is not None
    assert (score.best.genome, score.best.accuracy, score.best.fitness) == ("p-g1-1", 0.75, 0.9)
    assert (score.initial.genome, score.initial.accuracy) == ("p-g0-1", 0.7)
    assert score.gain == pytest.approx(0.05)
    assert (score.ensemble.accuracy, score.ensemble.genomes) == (0.8, ["p-g1-1", "p-g0-1", "p-g0-2"])
    assert score.ensemble.adapters == ["k3", "k1", "k2"], "the adapters the ensemble needs"
    assert "+5.0 points" in heldout.describe(score)
    short = HeldOutResult(accuracy=[0.75], ensemble=0.8, rows=1000)
    broken = heldout.scored(spec, record, task, short)
    assert broken.phase == "Failed"
    assert "1 accuracies for 3 adapters" in broken.message


def test_the_run_concludes_only_once_the_test_score_is_recorded() -> None:
    spec = _spec()
    ended = _ended(spec)
    assert (ended.phase, ended.reason) == ("Succeeded", "MaxGenerations")
    held = heldout.hold_for_test(spec, ended)
    assert (held.phase, held.reason) == ("Running", heldout.TESTING_REASON)
    assert heldout.awaiting_test(held)
    assert not heldout.awaiting_test(ended)
    failed = heldout.failed_score(spec, held, "Job p-test-g1 failed")
    done = heldout.finish(spec, held, failed, _no_rows)
    assert (done.phase, done.reason) == ("Succeeded", "MaxGenerations"), "a failed score keeps the outcome"
    assert done.test == failed
    assert "Job p-test-g1 failed" in done.message
    assert heldout.hold_for_test(spec, done) == done, "a recorded score is not asked for again"
    untested = _spec(test=None)
    assert heldout.hold_for_test(untested, _ended(untested)) == _ended(untested)


def test_a_resumed_run_drops_its_stale_test_score() -> None:
    spec = _spec()
    held = heldout.hold_for_test(spec, _ended(spec))
    done = heldout.finish(spec, held, heldout.failed_score(spec, held, "x"), _no_rows)
    longer = spec.model_copy(update={"max_generations": 4})
    resumed = ledger.resumed(done, longer)
    assert resumed is not None
    assert resumed.test is None
    assert not heldout.awaiting_test(resumed)


def test_no_trainer_reads_the_test_split_and_it_must_be_its_own_split() -> None:
    spec = _spec()
    plan = GENERATIONS[1].plans[1]
    task = genome_task(spec, "p", plan, str)
    assert task.dataset.test is None
    body = population_body("p", dataset={**BASE_SPEC["dataset"], "test": BASE_SPEC["dataset"]["eval"]})
    with pytest.raises(ApiValidationError, match=r"spec\.dataset\.test: must be a split that neither"):
        parse_population(body)


def test_origins_read_as_lineage() -> None:
    plans = GENERATIONS[1].plans
    assert [origin_text(p) for p in plans] == ["elite (p-g0-1 kept)", "mutation", "crossover"]
    bred = plans[2].model_copy(update={"parents": ["p-g0-1", "p-g0-2"]})
    assert origin_text(bred) == "crossover of p-g0-1 x p-g0-2"


def test_a_bad_test_score_task_exits_2_naming_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _spec()
    task = heldout.plan_task(spec, "p", _ended(spec), GENERATIONS, str).to_json_dict()
    path = tmp_path / "task.json"
    path.write_text(json.dumps({**task, "initial": 7}))
    monkeypatch.setenv(contract.ENV_TERMINATION_LOG, str(tmp_path / "termination"))
    assert heldout_command.main(path.as_uri()) == contract.EXIT_INPUT_ERROR
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"{heldout_command.ERROR_PREFIX}{path.as_uri()}: invalid test-score task: ")
    assert "initial and ensemble: indices must be below the 3 adapters" in last
    assert (tmp_path / "termination").read_text().strip() == last
