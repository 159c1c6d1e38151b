"""The operator's objects stay bounded (Population and Generation sizes, clipped messages and metrics), and
conditions keep their transition times. The shared bookkeeping itself is tested in test_ledger.py."""

from __future__ import annotations

import json
import random
from typing import Any

from nora.api.generation import MAX_GENOMES, GenomeStatus
from nora.api.population import PopulationSpec
from nora.api.status import HISTORY_LIMIT, PopulationStatus
from nora.evolution import ledger
from nora.evolution.records import GenomePlan, GenomeResult
from nora.operator.generations import GenerationObject, Location, genome_status, result_of, spec_json
from nora.operator.objects import ObjectRef, build_generation
from nora.operator.population_status import FAILED_CREATE, pods_creatable, set_condition, status_patch

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


def _plans(generation: int, size: int) -> list[GenomePlan]:
    genes = {"learningRate": 0.000123456789, "beta": 0.123456789, "nllWeight": 1.23456789, "temperature": 0.9}
    return [
        GenomePlan(
            id=f"{POPULATION}-g{generation}-{i}",
            index=i,
            generation=generation,
            origin="crossover" if i else "elite",
            parents=[f"{POPULATION}-g{generation - 1}-{i}", f"{POPULATION}-g{generation - 1}-{size - 1 - i}"],
            adapter=f"team/experiments/{POPULATION}/g{generation}/{POPULATION}-g{generation}-{i}/start",
            hyperparameters=genes,
            seed=2**62 + i,
            train=i > 0,
            fitness=0.123456789 if i == 0 else None,
        )
        for i in range(size)
    ]


def _results(plans: list[GenomePlan], rng: random.Random) -> list[GenomeResult]:
    results = []
    for plan in plans:
        if plan.index % 9 == 8:  # some fail, with a long message (clipped when written)
            failed = GenomeResult(id=plan.id, phase="Failed", attempts=3)
            results.append(failed.update(message="Error: " + "x" * 5000))
            continue
        metrics = {f"metric_{k}": rng.random() for k in range(12)}  # more than are kept
        adapter = f"team/experiments/{POPULATION}/g{plan.generation}/{plan.id}/output/adapter"
        result = GenomeResult(
            id=plan.id, phase="Succeeded", attempts=2, fitness=rng.random(), adapter=adapter
        )
        results.append(result.update(metrics=metrics))
    return results


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
        generation = GenerationObject(
            ref=ObjectRef("nora.dev/v1alpha1", "Generation", "team", f"{POPULATION}-g{number}", "uid"),
            record=ledger.GenerationRecord(number=number, plans=plans, results=_results(plans, rng)),
            planned_with=SPEC.to_json_dict(),
            phase="Succeeded",
            jobs={p.id: p.id for p in plans},
            breeding_seconds=1.5,
            start_time="2026-01-01T00:00:00Z",
            completion_time="2026-01-01T01:00:00Z",
        )
        body = build_generation(
            owner, number, spec_json(POPULATION, plans, generation.planned_with, LOCATION)
        )
        body["status"] = generation.status_json(LOCATION, "maximize")
        sizes["generation"] = max(sizes["generation"], _size(body))

        status, _ = ledger.record_generation(status, generation.record, SPEC)
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


def test_one_generation_at_the_largest_population_stays_well_under_the_etcd_limit() -> None:
    plans = _plans(7, MAX_GENOMES)  # typical fields; tests/integration/test_generation_size.py: worst case
    generation = GenerationObject(
        ref=ObjectRef("nora.dev/v1alpha1", "Generation", "team", "g", "uid"),
        record=ledger.GenerationRecord(number=7, plans=plans, results=_results(plans, random.Random(1))),
        planned_with=SPEC.to_json_dict(),
        phase="Succeeded",
        jobs={p.id: p.id for p in plans},
    )
    owner = ObjectRef("nora.dev/v1alpha1", "Population", "team", POPULATION, "uid")
    body = build_generation(owner, 7, spec_json(POPULATION, plans, generation.planned_with, LOCATION))
    body["status"] = generation.status_json(LOCATION, "maximize")
    assert _size(body) < 1024 * KIB  # etcd's request limit is 1.5 MiB


def test_kept_metrics_and_messages_are_clipped() -> None:
    plans = _plans(1, 9)
    state = GenerationObject(
        ref=ObjectRef("v", "Generation", "ns", "g", "u"),
        record=ledger.GenerationRecord(number=1, plans=plans, results=_results(plans, random.Random(2))),
        planned_with={},
        phase="Running",
    )
    genomes = state.status_json(LOCATION, "maximize")["genomes"]
    assert max(len(g.get("metrics", {})) for g in genomes) == 8
    failed = next(g for g in genomes if g["phase"] == "Failed")
    assert len(failed["message"]) == 512
    assert failed["message"].endswith("...")
    assert genomes[0]["adapter"].startswith(f"s3://{LOCATION.bucket}/team/experiments/")


def test_conditions_keep_their_transition_time_until_they_change() -> None:
    status = set_condition(PopulationStatus(), "Ready", True, "Accepted", "ok", "t1")
    status = set_condition(status, "Ready", True, "Accepted", "still ok", "t2")
    assert status.conditions[0].last_transition_time == "t1"
    status = set_condition(status, "Ready", False, "InvalidSpec", "bad", "t3")
    assert [(c.type, c.status, c.last_transition_time) for c in status.conditions] == [
        ("Ready", "False", "t3")
    ]


def test_pods_creatable_names_the_first_blocked_genome_and_clears_once_none_is() -> None:
    quiet = pods_creatable(PopulationStatus(), [GenomeResult(id="p-g0-0")], "t1", 1)
    assert quiet.conditions == []  # never blocked: no condition at all
    blocked = [
        GenomeResult(id=f"p-g0-{i}", message=f"{FAILED_CREATE}no PriorityClass with name x was found")
        for i in range(3)
    ]
    status = pods_creatable(
        PopulationStatus(), [*blocked, GenomeResult(id="p-g0-3", phase="Running")], "t1", 1
    )
    (condition,) = status.conditions
    assert (condition.type, condition.status, condition.reason) == ("PodsCreatable", "False", "FailedCreate")
    assert condition.message == (
        "the Pods of genome p-g0-0 cannot be created (and 2 more genomes): "
        "no PriorityClass with name x was found"
    )
    cleared = pods_creatable(status, [r.update(message="", phase="Running") for r in blocked], "t2", 1)
    assert [(c.status, c.reason, c.last_transition_time) for c in cleared.conditions] == [
        ("True", "PodsCreated", "t2")
    ]
    finished = [r.update(phase="Failed") for r in blocked]  # a finished genome's message is its own
    assert pods_creatable(cleared, finished, "t3", 1) == cleared


def test_a_retrained_genome_keeps_its_count_and_others_write_none() -> None:
    retrained = GenomeResult(id="p-g0-1", phase="Succeeded", retrains=1, message="re-training (attempt 1): x")
    entry = genome_status(retrained, "p-g0-1-r1", LOCATION)
    assert (entry["retrains"], entry["job"]) == (1, "p-g0-1-r1")
    assert result_of(GenomeStatus.model_validate(entry), LOCATION).retrains == 1
    assert "retrains" not in genome_status(GenomeResult(id="p-g0-2"), "p-g0-2", LOCATION)
