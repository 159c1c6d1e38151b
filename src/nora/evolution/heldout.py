"""The overfitting guard both drivers share: what a finished run scores on ``spec.dataset.test``, and how.

Fitness chose the genomes on the eval split, so their fitness flatters them; a split that no trainer and
no fitness ever read does not. When the evolution's verdict is Succeeded and the spec names a test split,
the run does not conclude yet: it stays Running (reason :data:`TESTING_REASON`) while one ``nora
test-score`` process (a Job on a cluster, a subprocess of ``nora run``) scores, on the test split:

- the final best genome;
- generation 0's best genome, so the record says how far evolution moved the test score;
- the majority vote of the top-k distinct adapters of the whole run (GENOME+'s ensemble,
  k = ``spec.dataset.testEnsemble``), and which adapters that needs.

Each distinct adapter is scored once. :func:`finish` then records the :class:`HeldOutScore` and concludes
with the evolution's verdict, re-derived from the record (nothing else is stored in between). The rule
when scoring fails: the score is recorded as Failed with its reason and the run still concludes
Succeeded, since its adapters are as good as the evolution made them; only the guard is missing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from nora.api.population import PopulationSpec
from nora.api.status import HeldOutEnsemble, HeldOutGenome, HeldOutScore, HistoryRow, PopulationRecord
from nora.api.task import HELD_OUT_RESULT_FILE, HELD_OUT_TASK_FILE, HeldOutAdapter, HeldOutResult, HeldOutTask
from nora.evolution import ledger
from nora.evolution.layout import held_out_key
from nora.evolution.ledger import GenerationRecord, R
from nora.evolution.records import GenomeResult, score, summarize
from nora.storage import Store, StoreError

TESTING_REASON = "TestScoring"


def awaiting_test(record: PopulationRecord) -> bool:
    """Whether the evolution has ended and the run waits for its test-split score."""
    return record.phase == "Running" and record.completed_generations > record.generation


def hold_for_test(spec: PopulationSpec, record: R) -> R:
    """``record`` after a verdict: still Running while a Succeeded run's test split is to be scored."""
    scored = record.test is not None and record.test.generations == record.completed_generations
    if spec.dataset.test is None or record.phase != "Succeeded" or record.best is None or scored:
        return record
    message = f"the evolution ended ({record.message}); scoring its adapters on {spec.dataset.test}"
    return record.model_copy(
        update={"phase": "Running", "reason": TESTING_REASON, "message": ledger.clip(message, 4096)}
    )


def finish(
    spec: PopulationSpec,
    record: R,
    held_out: HeldOutScore,
    older: Callable[[Sequence[int]], Sequence[HistoryRow]],
) -> R:
    """``record`` with its test-split score, concluded with the evolution's (re-derived) verdict."""
    record = record.model_copy(update={"test": held_out})
    decided = ledger.decision(spec, record, older)
    concluded = ledger.conclude(record, decided, record.generation)
    if concluded.phase != "Succeeded":
        return concluded
    message = ledger.clip(f"{concluded.message}; {describe(held_out)}", 4096)
    return concluded.model_copy(update={"message": message})


def _ranked(generations: Sequence[GenerationRecord], spec: PopulationSpec) -> list[GenomeResult]:
    """Every scored genome of the run with an adapter, fittest first (earlier generations win ties)."""
    scored = [r for g in generations for r in g.results if r.scored and r.adapter is not None]
    return sorted(scored, key=lambda r: -score(float(r.fitness or 0.0), spec.fitness.goal))


def _initial_best(generations: Sequence[GenerationRecord], spec: PopulationSpec) -> GenomeResult | None:
    """Generation 0's best genome (what evolution started from), if any was scored."""
    if not generations:
        return None
    first = generations[0]
    row = summarize(first.number, first.results, spec.fitness.goal)
    return first.result(row.best_genome) if row.best_genome is not None else None


def task_folder(spec: PopulationSpec, population: str, record: PopulationRecord) -> str:
    """The store folder of the run's test-split scoring (one per last generation)."""
    return held_out_key(spec.storage.prefix, population, record.generation)


def plan_task(
    spec: PopulationSpec,
    population: str,
    record: PopulationRecord,
    generations: Sequence[GenerationRecord],
    key_uri: Callable[[str], str],
    resolve: Callable[[str], str] = lambda uri: uri,
) -> HeldOutTask:
    """The ``nora test-score`` task of a finished run (``record.best`` and results name store keys).

    Args:
        spec: the population's spec (``dataset.test`` set).
        population: its name.
        record: its record, with a best genome.
        generations: every generation's record, in order.
        key_uri: turns a store key into a URI the scorer can open.
        resolve: rewrites user URIs (base model, data), e.g. ``toy://`` to ``file://``.
    """
    best = record.best
    if best is None or best.adapter is None or spec.dataset.test is None:
        raise ValueError("a test-split task needs a best genome with an adapter and spec.dataset.test")
    first = GenomeResult(id=best.genome, phase="Succeeded", fitness=best.fitness, adapter=best.adapter)
    generation_of = {r.id: g.number for g in generations for r in g.results} | {best.genome: best.generation}
    distinct: dict[str, GenomeResult] = {}
    for result in [first, *_ranked(generations, spec)]:
        distinct.setdefault(str(result.adapter), result)
    members = list(distinct)[: spec.dataset.test_ensemble]
    initial = _initial_best(generations, spec) or first
    distinct.setdefault(str(initial.adapter), initial)
    adapters = [
        HeldOutAdapter(
            genome=r.id, generation=generation_of[r.id], fitness=float(r.fitness or 0.0), uri=key_uri(k)
        )
        for k, r in distinct.items()
        if k in members or k == initial.adapter
    ]
    kept = [a.uri for a in adapters]
    dataset = {
        name: resolve(uri) for name in ("train", "eval", "test") if (uri := getattr(spec.dataset, name))
    }
    return HeldOutTask(
        population=population,
        generations=record.completed_generations,
        base_model=spec.base_model.model_copy(update={"uri": resolve(spec.base_model.uri)}),
        dataset=spec.dataset.model_copy(update=dataset),
        max_new_tokens=spec.training.max_new_tokens,
        adapters=adapters,
        initial=kept.index(key_uri(str(initial.adapter))),
        ensemble=[kept.index(key_uri(k)) for k in members] if len(members) > 1 else [],
        output=key_uri(f"{task_folder(spec, population, record)}/{HELD_OUT_RESULT_FILE}"),
    )


def _tested(task: HeldOutTask, result: HeldOutResult, index: int) -> HeldOutGenome:
    adapter = task.adapters[index]
    return HeldOutGenome(
        genome=adapter.genome,
        generation=adapter.generation,
        fitness=adapter.fitness,
        accuracy=result.accuracy[index],
        adapter=adapter.uri,
    )


def failed_score(spec: PopulationSpec, record: PopulationRecord, message: str) -> HeldOutScore:
    """The score of a run whose test-split scoring failed: the reason, no numbers."""
    return HeldOutScore(
        phase="Failed",
        uri=str(spec.dataset.test),
        generations=record.completed_generations,
        message=ledger.clip(f"test-split scoring failed: {message}"),
    )


def scored(
    spec: PopulationSpec, record: PopulationRecord, task: HeldOutTask, result: HeldOutResult
) -> HeldOutScore:
    """The score recorded from ``nora test-score``'s ``test.json`` (Failed if it does not fit the task)."""
    if len(result.accuracy) != len(task.adapters) or (task.ensemble and result.ensemble is None):
        detail = f"{len(result.accuracy)} accuracies for {len(task.adapters)} adapters"
        return failed_score(spec, record, f"{HELD_OUT_RESULT_FILE} does not match its task ({detail})")
    best, initial = _tested(task, result, 0), _tested(task, result, task.initial)
    ensemble = None
    if task.ensemble and result.ensemble is not None:
        members = [task.adapters[i] for i in task.ensemble]
        ensemble = HeldOutEnsemble(
            accuracy=result.ensemble,
            genomes=[m.genome for m in members],
            adapters=[m.uri for m in members],
        )
    return HeldOutScore(
        phase="Succeeded",
        uri=str(spec.dataset.test),
        generations=task.generations,
        rows=result.rows,
        best=best,
        initial=initial,
        gain=best.accuracy - initial.accuracy,
        ensemble=ensemble,
    )


def describe(held_out: HeldOutScore) -> str:
    """One sentence for people: the final best's test accuracy against generation 0's best, the ensemble."""
    if held_out.phase == "Failed" or held_out.best is None or held_out.initial is None:
        return held_out.message or "test-split scoring failed"
    best, initial = held_out.best, held_out.initial
    text = (
        f"test accuracy ({held_out.rows} rows of {held_out.uri}): best {best.genome} {best.accuracy:.3f}, "
        f"generation 0's best {initial.genome} {initial.accuracy:.3f} "
        f"({100 * (held_out.gain or 0.0):+.1f} points)"
    )
    if held_out.ensemble is not None:
        text += f", top-{len(held_out.ensemble.genomes)} ensemble {held_out.ensemble.accuracy:.3f}"
    return text


def write_task(store: Store, spec: PopulationSpec, population: str, task: HeldOutTask) -> str:
    """Write ``task`` as the run's ``task.json`` (idempotent); its store key."""
    key = f"{held_out_key(spec.storage.prefix, population, task.generations - 1)}/{HELD_OUT_TASK_FILE}"
    store.write_bytes(key, (json.dumps(task.to_json_dict(), indent=2, sort_keys=True) + "\n").encode())
    return key


def read_outcome(
    store: Store, spec: PopulationSpec, population: str, record: PopulationRecord
) -> HeldOutScore:
    """The score from the ``task.json`` and ``test.json`` that a successful ``nora test-score`` left."""
    folder = task_folder(spec, population, record)
    try:
        task = HeldOutTask.model_validate_json(store.read_bytes(f"{folder}/{HELD_OUT_TASK_FILE}"))
        result = HeldOutResult.model_validate_json(store.read_bytes(f"{folder}/{HELD_OUT_RESULT_FILE}"))
    except (StoreError, ValueError) as error:
        return failed_score(
            spec, record, f"{store.uri(folder)}: no readable scores ({ledger.clip(str(error))})"
        )
    return scored(spec, record, task, result)
