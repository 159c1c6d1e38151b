"""The bookkeeping both drivers share: history rows, the best genome, the stop decision from a bounded
history, resumption, elites' first results, outcomes from metrics.json and the verified export."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from nora.api.population import PopulationSpec
from nora.api.status import HISTORY_LIMIT, BestGenome, HistoryRow, PopulationRecord, PopulationStatus
from nora.evolution import ledger, run_store
from nora.evolution.genome_store import upload_genome
from nora.evolution.records import GenomePlan, GenomeResult, better, summarize
from nora.evolution.stopping import decide
from nora.genetics import init_genome, make_generator
from nora.genetics.io import MANIFEST_FILE
from nora.storage import LocalStore, StoreError

SPEC = PopulationSpec.model_validate(
    {
        "baseModel": {"uri": "hf://org/model"},
        "dataset": {"train": "s3://d/train.jsonl", "eval": "s3://d/eval.jsonl"},
        "populationSize": 4,
        "maxGenerations": 200,
        "stopping": {"patience": 150},
    }
)


def _generation(number: int, fitness: Sequence[float | None]) -> ledger.GenerationRecord:
    plans = [
        GenomePlan(id=f"p-g{number}-{i}", index=i, generation=number, origin="initial")
        for i in range(len(fitness))
    ]
    results = [
        GenomeResult(id=p.id, phase="Failed")
        if f is None
        else GenomeResult(id=p.id, phase="Succeeded", fitness=f, adapter=f"k/{p.id}", metrics={"accuracy": f})
        for p, f in zip(plans, fitness, strict=True)
    ]
    return ledger.GenerationRecord(number=number, plans=plans, results=results)


def test_the_one_better_rule_follows_the_goal() -> None:
    assert better(0.5, None, "maximize")
    assert better(0.6, 0.5, "maximize")
    assert not better(0.5, 0.5, "maximize")
    assert better(0.4, 0.5, "minimize")
    assert not better(0.6, 0.5, "minimize")


def test_summaries_skip_failures_and_non_finite_fitness() -> None:
    generation = _generation(3, [0.2, None, 0.8, float("nan")])
    row = summarize(3, generation.results, "maximize")
    assert (row.best, row.worst, row.best_genome, row.succeeded, row.failed) == (0.8, 0.2, "p-g3-2", 2, 1)
    low = summarize(3, generation.results, "minimize")
    assert (low.best, low.best_genome) == (0.2, "p-g3-0")


def test_recording_a_generation_twice_changes_nothing_and_the_best_only_improves() -> None:
    first, row = ledger.record_generation(PopulationRecord(), _generation(0, [0.5, 0.3]), SPEC)
    assert row.best == 0.5
    assert first.best is not None
    assert (first.best.genome, first.best.adapter, first.best.metrics) == (
        "p-g0-0",
        "k/p-g0-0",
        {"accuracy": 0.5},
    )
    assert ledger.record_generation(first, _generation(0, [0.5, 0.3]), SPEC)[0] == first
    second, _ = ledger.record_generation(first, _generation(1, [0.4, 0.1]), SPEC)
    assert second.best == first.best
    assert second.completed_generations == 2
    minimizing = SPEC.model_copy(update={"fitness": SPEC.fitness.model_copy(update={"goal": "minimize"})})
    third, _ = ledger.record_generation(first, _generation(1, [0.4, 0.1]), minimizing)
    assert third.best is not None
    assert third.best.genome == "p-g1-1"


def test_the_record_keeps_its_type_through_every_transition() -> None:
    status = PopulationStatus(phase="Running", observed_generation=4)
    recorded, _ = ledger.record_generation(status, _generation(0, [0.5]), SPEC)
    assert isinstance(recorded, PopulationStatus)
    assert recorded.observed_generation == 4


def _rows(count: int, seed: int) -> list[HistoryRow]:
    rng = random.Random(seed)
    best = 0.0
    rows = []
    for n in range(count):
        best = max(best, rng.random() * (1 + n / 50)) if rng.random() < 0.3 else best
        rows.append(HistoryRow(generation=n, best=best, mean=best / 2, worst=0.0, diversity=0.1, succeeded=4))
    return rows


def _bounded(rows: list[HistoryRow]) -> PopulationRecord:
    return PopulationRecord(history=rows[-HISTORY_LIMIT:], completed_generations=len(rows))


@pytest.mark.parametrize("patience", [1, 3, 10])
def test_the_decision_from_bounded_history_equals_the_engines_on_the_full_one(patience: int) -> None:
    spec = SPEC.model_copy(
        update={"stopping": SPEC.stopping.model_copy(update={"patience": patience}), "max_generations": 1000}
    )
    full = _rows(150, patience)
    for number in range(len(full)):
        bounded = ledger.decision(spec, _bounded(full[: number + 1]), older=lambda numbers: [])
        assert bounded == decide(spec, full[: number + 1])
        if bounded.verdict != "continue":
            break


def test_a_patience_beyond_the_kept_history_fetches_older_rows() -> None:
    spec = SPEC.model_copy(update={"max_generations": 1000})  # patience 150 > HISTORY_LIMIT
    full = _rows(200, 5)
    asked: list[int] = []

    def older(numbers: Sequence[int]) -> list[HistoryRow]:
        asked.extend(numbers)
        return [full[n] for n in numbers]

    assert ledger.decision(spec, _bounded(full), older) == decide(spec, full)
    assert asked == list(range(200 - 151, 200 - HISTORY_LIMIT))


def test_raising_max_generations_resumes_only_a_run_that_ran_out_of_them() -> None:
    done = PopulationRecord(phase="Succeeded", reason="MaxGenerations", completed_generations=3, generation=2)
    assert ledger.resumed(done, SPEC.model_copy(update={"max_generations": 3})) is None
    again = ledger.resumed(done, SPEC.model_copy(update={"max_generations": 5}))
    assert again is not None
    assert (again.phase, again.generation, again.reason) == ("Running", 3, "Resumed")
    target = done.model_copy(update={"reason": "TargetReached"})
    assert ledger.resumed(target, SPEC.model_copy(update={"max_generations": 5})) is None


def test_elites_start_succeeded_with_their_parents_record() -> None:
    elite = GenomePlan(
        id="p-g2-0",
        index=0,
        generation=2,
        origin="elite",
        parents=["p-g1-3"],
        adapter="k",
        train=False,
        fitness=0.9,
    )
    child = GenomePlan(id="p-g2-1", index=1, generation=2, origin="mutation", parents=["p-g1-3"], adapter="s")
    parent = GenomeResult(id="p-g1-3", phase="Succeeded", attempts=1, fitness=0.9, metrics={"accuracy": 0.9})
    results = ledger.initial_results([elite, child], {parent.id: parent})
    assert results[0] == GenomeResult(
        id="p-g2-0", phase="Succeeded", fitness=0.9, metrics={"accuracy": 0.9}, adapter="k"
    )
    assert results[1] == GenomeResult(id="p-g2-1")


@pytest.mark.parametrize(
    ("metrics", "phase"),
    [
        ({"fitness": 0.7, "accuracy": 0.7, "note": "x"}, "Succeeded"),
        ({"fitness": float("inf")}, "Failed"),
        (None, "Failed"),
    ],
)
def test_an_outcome_comes_from_metrics_json_only(
    tmp_path: Path, metrics: dict[str, object] | None, phase: str
) -> None:
    store = LocalStore(tmp_path)
    plan = GenomePlan(id="p-g0-0", index=0, generation=0, origin="initial")
    if metrics is not None:
        store.write_bytes("pre/p/g0/p-g0-0/output/metrics.json", json.dumps(metrics).encode())
    result = run_store.genome_outcome(store, "pre", "p", plan, GenomeResult(id=plan.id, attempts=1))
    assert result.phase == phase
    if phase == "Succeeded":
        assert (result.fitness, result.metrics, result.adapter) == (
            0.7,
            {"accuracy": 0.7, "fitness": 0.7},
            "pre/p/g0/p-g0-0/output/adapter",
        )
    else:
        assert "metrics.json holds no finite fitness" in result.message


def test_the_export_verifies_the_adapter_and_writes_best_json_last(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    genome = init_genome({"m.q_proj": (4, 4)}, 2, 4.0, make_generator(1), b_std=0.1)
    upload_genome(store, "p/g0/a/output/adapter", genome)
    best = BestGenome(genome="a", generation=0, fitness=0.5, adapter="p/g0/a/output/adapter")
    record = run_store.export_best(store, "", "p", best)
    assert json.loads(store.read_bytes("p/best/best.json")) == record.to_json_dict()
    assert record.exported == store.uri("p/best")
    assert run_store.verify_adapter(store, "p/best") == sorted(
        json.loads(store.read_bytes("p/best/" + MANIFEST_FILE))["files"]
    )
    store.write_bytes("p/g0/a/output/adapter/adapter_model.safetensors", b"rewritten")
    with pytest.raises(StoreError, match="sha256 does not match"):
        run_store.export_best(store, "", "p", best.model_copy(update={"fitness": 0.6}))
    assert json.loads(store.read_bytes("p/best/best.json"))["fitness"] == 0.5


def test_a_runs_own_keys_come_from_its_records_and_spare_a_nested_run(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    base = "nora/ns/p"
    run_store.write_generation(store, "nora/ns", "p", _generation(0, [0.5, None]))
    ours = [
        f"{base}/g0/p-g0-0/genome.json",
        f"{base}/g0/p-g0-0/output/metrics.json",
        f"{base}/g0/p-g0-0/output/adapter/adapter_model.safetensors",
        f"{base}/g0/p-g0-1/start/nora_manifest.json",
        f"{base}/best/best.json",
    ]
    foreign = [
        f"{base}/g0/p-g0-0/output/adapter/x/other/g0/generation.json",  # a run whose prefix lies inside
        f"{base}/g1/p-g1-0/genome.json",  # no record of generation 1
        f"{base}/unrelated.txt",
    ]
    for key in ours + foreign:
        store.write_bytes(key, b"x")
    owned = run_store.owned_keys(store, base)
    assert sorted(owned) == sorted([*ours, f"{base}/g0/generation.json"])
    assert run_store.owned_keys(store, "nora/ns/absent") == []


def test_an_export_that_fails_verification_fails_the_run_naming_the_genome(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    genome = init_genome({"m.q_proj": (4, 4)}, 2, 4.0, make_generator(1), b_std=0.1)
    upload_genome(store, "p/g0/a/output/adapter", genome)
    store.write_bytes("p/g0/a/output/adapter/adapter_model.safetensors", b"rewritten")
    best = BestGenome(genome="a", generation=0, fitness=0.5, adapter="p/g0/a/output/adapter")
    record = PopulationRecord(phase="Succeeded", reason="MaxGenerations", best=best)
    failed = run_store.export_or_fail(store, "", "p", record)
    assert (failed.phase, failed.reason) == ("Failed", "ExportFailed")
    assert failed.message.startswith("the best genome a was not exported: ")
    assert "adapter_model.safetensors: sha256 does not match" in failed.message
    assert not store.exists("p/best/best.json")
    plans = [GenomePlan(id="c", index=0, generation=1, origin="mutation", parents=["a"])]
    with pytest.raises(run_store.CorruptAdapterError, match=r"^genome a: .*sha256 does not match"):
        run_store.verify_parents(store, plans, [GenomeResult(id="a", adapter="p/g0/a/output/adapter")])
