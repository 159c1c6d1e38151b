"""The operator's status code: bounded objects, history, best genome, conditions and the stop decision."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from nora.api.population import PopulationSpec
from nora.api.status import HISTORY_LIMIT, BestGenome, PopulationStatus
from nora.evolution.records import GenerationSummary, GenomePlan, GenomeResult, summarize
from nora.evolution.stopping import decide
from nora.operator.generations import GenerationState, Location, initial_results, spec_json
from nora.operator.objects import ObjectRef, build_generation
from nora.operator.population_status import decision, record_generation, resumed, set_condition, status_patch

KIB = 1024
POPULATION = "p" * 40  # the longest name a Population may have
LOCATION = Location("a-bucket-with-a-fairly-long-name")
SPEC = PopulationSpec.model_validate(
    {
        "baseModel": {"uri": "hf://mistralai/Mistral-7B-Instruct-v0.3"},
        "dataset": {"train": "s3://data/train.jsonl", "eval": "s3://data/eval.jsonl"},
        "populationSize": 64,
        "maxGenerations": 200,
        "stopping": {"patience": 150},
        "mutation": {
            "hyperparameters": {"learningRate": [1e-5, 1e-3], "beta": [0.05, 0.5], "nllWeight": [0, 2]}
        },
        "storage": {"bucket": LOCATION.bucket, "prefix": "team/experiments"},
    }
)


def _plans(generation: int, size: int) -> tuple[GenomePlan, ...]:
    genes = {"learningRate": 0.000123456789, "beta": 0.123456789, "nllWeight": 1.23456789, "temperature": 0.9}
    return tuple(
        GenomePlan(
            id=f"{POPULATION}-g{generation}-{i}",
            index=i,
            generation=generation,
            origin="crossover" if i else "elite",
            parents=(f"{POPULATION}-g{generation - 1}-{i}", f"{POPULATION}-g{generation - 1}-{size - 1 - i}"),
            adapter=f"team/experiments/{POPULATION}/g{generation}/{POPULATION}-g{generation}-{i}/start",
            hyperparameters=genes,
            seed=2**62 + i,
            train=i > 0,
            fitness=0.123456789 if i == 0 else None,
        )
        for i in range(size)
    )


def _results(plans: tuple[GenomePlan, ...], rng: random.Random) -> tuple[GenomeResult, ...]:
    results = []
    for plan in plans:
        if plan.index % 9 == 8:  # some fail, with a long message (clipped when written)
            results.append(GenomeResult(plan.id, "Failed", attempts=3, message="Error: " + "x" * 5000))
            continue
        metrics = {f"metric_{k}": rng.random() for k in range(12)}  # more than are kept
        adapter = f"team/experiments/{POPULATION}/g{plan.generation}/{plan.id}/output/adapter"
        results.append(GenomeResult(plan.id, "Succeeded", 2, rng.random(), metrics, adapter))
    return tuple(results)


def _size(document: Any) -> int:
    return len(json.dumps(document, separators=(",", ":")).encode())


def test_200_generations_of_64_genomes_keep_every_object_under_256_kib() -> None:
    rng = random.Random(0)
    owner = ObjectRef("nora.dev/v1alpha1", "Population", "team", POPULATION, "uid")
    population: dict[str, Any] = {
        "apiVersion": "nora.dev/v1alpha1",
        "kind": "Population",
        "metadata": {"name": POPULATION, "namespace": "team"},
        "spec": SPEC.to_json_dict(),
    }
    status = PopulationStatus(phase="Running")
    sizes = {"population": 0, "generation": 0}
    for number in range(200):
        plans = _plans(number, 64)
        generation = GenerationState(
            ref=ObjectRef("nora.dev/v1alpha1", "Generation", "team", f"{POPULATION}-g{number}", "uid"),
            number=number,
            plans=plans,
            planned_with=SPEC.to_json_dict(),
            phase="Succeeded",
            results=_results(plans, rng),
            jobs={p.id: p.id for p in plans},
            breeding_seconds=1.5,
            start_time="2026-01-01T00:00:00Z",
            completion_time="2026-01-01T01:00:00Z",
        )
        body = build_generation(
            owner, number, spec_json(POPULATION, plans, generation.planned_with, LOCATION)
        )
        body["status"] = generation.status_json(LOCATION, maximize=True)
        sizes["generation"] = max(sizes["generation"], _size(body))

        summary = summarize(number, generation.results, maximize=True)
        assert summary.best_genome is not None
        best = BestGenome(
            genome=summary.best_genome,
            generation=number,
            fitness=summary.best or 0.0,
            adapter=LOCATION.uri(generation.result(summary.best_genome).adapter),
        )
        status = record_generation(status, summary, best, maximize=True)
        status = set_condition(status, "Ready", True, "Accepted", "the spec is valid", f"t{number}", number)
        status = status.model_copy(update={"generation": number + 1, "message": "x" * 4000})
        population["status"] = status_patch(status)
        sizes["population"] = max(sizes["population"], _size(population))

    assert len(status.history) == HISTORY_LIMIT
    assert status.history[-1].generation == 199
    assert status.completed_generations == 200
    print(f"largest serialized objects (bytes): {sizes}")
    assert sizes["generation"] < 256 * KIB, sizes
    assert sizes["population"] < 64 * KIB, sizes  # bounded: the history keeps 64 rows, not 200


def test_one_generation_of_500_genomes_stays_well_under_the_etcd_limit() -> None:
    plans = _plans(7, 500)
    generation = GenerationState(
        ref=ObjectRef("nora.dev/v1alpha1", "Generation", "team", "g", "uid"),
        number=7,
        plans=plans,
        planned_with=SPEC.to_json_dict(),
        phase="Succeeded",
        results=_results(plans, random.Random(1)),
        jobs={p.id: p.id for p in plans},
    )
    owner = ObjectRef("nora.dev/v1alpha1", "Population", "team", POPULATION, "uid")
    body = build_generation(owner, 7, spec_json(POPULATION, plans, generation.planned_with, LOCATION))
    body["status"] = generation.status_json(LOCATION, maximize=True)
    assert _size(body) < 1024 * KIB  # etcd's request limit is 1.5 MiB


def test_kept_metrics_and_messages_are_clipped() -> None:
    plans = _plans(1, 9)
    state = GenerationState(
        ref=ObjectRef("v", "Generation", "ns", "g", "u"),
        number=1,
        plans=plans,
        planned_with={},
        phase="Running",
        results=_results(plans, random.Random(2)),
    )
    genomes = state.status_json(LOCATION, maximize=True)["genomes"]
    assert max(len(g.get("metrics", {})) for g in genomes) == 8
    failed = next(g for g in genomes if g["phase"] == "Failed")
    assert len(failed["message"]) == 512
    assert failed["message"].endswith("...")
    assert genomes[0]["adapter"].startswith(f"s3://{LOCATION.bucket}/team/experiments/")


def _bests(count: int, seed: int) -> list[GenerationSummary]:
    rng = random.Random(seed)
    best = 0.0
    rows = []
    for n in range(count):
        best = max(best, rng.random() * (1 + n / 50)) if rng.random() < 0.3 else best
        rows.append(GenerationSummary(n, best, best / 2, 0.0, 0.1, f"g{n}", 4, 0))
    return rows


@pytest.mark.parametrize("patience", [1, 3, 10])
def test_the_decision_from_bounded_history_equals_the_engines_on_the_full_one(patience: int) -> None:
    spec = SPEC.model_copy(update={"stopping": SPEC.stopping.model_copy(update={"patience": patience})})
    spec = spec.model_copy(update={"max_generations": 1000})
    full = _bests(150, patience)
    status = PopulationStatus()
    for number, row in enumerate(full):
        status = record_generation(status, row, None, maximize=True)
        bounded = decision(spec, status, older=lambda numbers: [])
        assert bounded == decide(spec, full[: number + 1])
        if bounded.verdict != "continue":
            break


def test_a_patience_beyond_the_kept_history_fetches_older_rows() -> None:
    spec = SPEC.model_copy(update={"max_generations": 1000})  # patience 150 > HISTORY_LIMIT
    full = _bests(200, 5)
    status = PopulationStatus()
    for row in full:
        status = record_generation(status, row, None, maximize=True)
    asked: list[int] = []

    def older(numbers: Sequence[int]) -> list[GenerationSummary]:
        asked.extend(numbers)
        return [full[n] for n in numbers]

    assert decision(spec, status, older) == decide(spec, full)
    assert asked == list(range(200 - 151, 200 - HISTORY_LIMIT))


def test_recording_a_generation_twice_changes_nothing_and_the_best_only_improves() -> None:
    rows = [
        GenerationSummary(0, 0.5, 0.3, 0.1, 0.1, "a", 4, 0),
        GenerationSummary(1, 0.4, 0.3, 0.1, 0.1, "b", 4, 0),
    ]
    first = record_generation(
        PopulationStatus(), rows[0], BestGenome(genome="a", generation=0, fitness=0.5), True
    )
    assert record_generation(first, rows[0], BestGenome(genome="a", generation=0, fitness=0.5), True) == first
    second = record_generation(first, rows[1], BestGenome(genome="b", generation=1, fitness=0.4), True)
    assert second.best == first.best
    assert second.completed_generations == 2
    minimizing = record_generation(first, rows[1], BestGenome(genome="b", generation=1, fitness=0.4), False)
    assert minimizing.best is not None
    assert minimizing.best.genome == "b"


def test_conditions_keep_their_transition_time_until_they_change() -> None:
    status = set_condition(PopulationStatus(), "Ready", True, "Accepted", "ok", "t1")
    status = set_condition(status, "Ready", True, "Accepted", "still ok", "t2")
    assert status.conditions[0].last_transition_time == "t1"
    status = set_condition(status, "Ready", False, "InvalidSpec", "bad", "t3")
    assert [(c.type, c.status, c.last_transition_time) for c in status.conditions] == [
        ("Ready", "False", "t3")
    ]


def test_raising_max_generations_resumes_only_a_population_that_ran_out_of_them() -> None:
    done = PopulationStatus(phase="Succeeded", reason="MaxGenerations", completed_generations=3, generation=2)
    assert resumed(done, SPEC.model_copy(update={"max_generations": 3})) is None
    again = resumed(done, SPEC.model_copy(update={"max_generations": 5}))
    assert again is not None
    assert (again.phase, again.generation, again.completion_time) == (
        "Running",
        3,
        None,
    )
    target = done.model_copy(update={"reason": "TargetReached"})
    assert resumed(target, SPEC.model_copy(update={"max_generations": 5})) is None


def test_elites_start_succeeded_with_their_parents_record() -> None:
    plans = _plans(2, 3)
    parent = GenomeResult(plans[0].parents[0], "Succeeded", 1, 0.9, {"accuracy": 0.9}, "k")
    results = initial_results(plans, {parent.id: parent})
    assert results[0] == GenomeResult(
        plans[0].id, "Succeeded", 0, plans[0].fitness, {"accuracy": 0.9}, plans[0].adapter
    )
    assert all(r == replace(r, phase="Pending") for r in results[1:])
