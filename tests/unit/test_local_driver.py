"""The local driver's scheduling logic with an in-process fake trainer: elites, retries, failure budget,
resume after an interruption, and manifests that may or may not change between runs.

The fake stands in for ``nora train`` only here; the real trainer runs in tests/e2e/test_local_run.py.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from nora.api.manifest import PopulationManifest
from nora.api.population import MutationSpecModel
from nora.cli.report import held_out_lines, lineage, plot_fitness, read_run
from nora.evolution import contract, heldout
from nora.genetics import load_genome
from nora.genetics.io import MANIFEST_FILE
from nora.local.display import LineDisplay
from nora.local.driver import LocalDriver, RunConfig, RunError, transient_delay
from nora.local.executor import TEST_SCORE_COMMAND, Launch, Outcome
from nora.local.state import STATE_FILE, load_state, spec_changes, spec_digest
from nora.storage import StoreError
from tests.support import standin
from tests.support.manifests import BASE_SPEC, population_manifest

WEIGHTS = "adapter_model.safetensors"


@dataclass
class _Done:
    outcome: Outcome

    def poll(self) -> Outcome | None:
        return self.outcome

    def kill(self) -> None:
        return None


@dataclass
class FakeExecutor:
    """Runs the stand-in trainer in-process; some genomes fail (exit 1, or exit 2 for bad input)."""

    always_fail: set[str] = field(default_factory=set)
    fail_first: set[str] = field(default_factory=set)
    bad_input: set[str] = field(default_factory=set)
    preempt_first: set[str] = field(default_factory=set)
    unreachable_first: set[str] = field(default_factory=set)
    interrupt_after: int | None = None
    corrupt_after: dict[str, tuple[Path, ...]] = field(default_factory=dict)
    """genome -> files: once that genome's first attempt has run, the files' bytes are rewritten."""
    started: Counter[str] = field(default_factory=Counter)
    commands: list[tuple[str, ...]] = field(default_factory=list)

    def start(self, launch: Launch) -> _Done:
        if self.interrupt_after is not None and sum(self.started.values()) >= self.interrupt_after:
            raise KeyboardInterrupt
        self.started[launch.genome] += 1
        if launch.genome in self.preempt_first and self.started[launch.genome] == 1:
            return _Done(
                Outcome(exit_code=contract.EXIT_PREEMPTED, summary=None, reason="preempted (SIGTERM)")
            )
        if launch.genome in self.unreachable_first and self.started[launch.genome] == 1:
            reason = f"{contract.ERROR_PREFIX}EndpointConnectionError: Could not connect (fake)"
            return _Done(Outcome(exit_code=contract.EXIT_TRANSIENT, summary=None, reason=reason))
        if launch.genome in self.bad_input:
            reason = f"{contract.ERROR_PREFIX}baseModel.uri: no tokenizer files"
            return _Done(Outcome(exit_code=contract.EXIT_INPUT_ERROR, summary=None, reason=reason))
        failing = launch.genome in self.always_fail or (
            launch.genome in self.fail_first and self.started[launch.genome] == 1
        )
        if failing:
            return _Done(
                Outcome(exit_code=contract.EXIT_FAILED, summary=None, reason="CUDA out of memory (fake)")
            )
        if launch.command is not None:  # the test-split scoring (nora test-score)
            self.commands.append(tuple(launch.command))
            try:
                summary = standin.score_test_split(launch.task_uri)
            except StoreError as error:
                return _Done(Outcome(exit_code=contract.EXIT_INPUT_ERROR, summary=None, reason=str(error)))
        else:
            summary = standin.train(launch.task_uri)
        for path in self.corrupt_after.get(launch.genome, ()) if self.started[launch.genome] == 1 else ():
            path.write_bytes(b"rewritten weights")
        return _Done(Outcome(exit_code=contract.EXIT_SUCCEEDED, summary=summary, reason=""))


def population(**spec: Any) -> PopulationManifest:
    return population_manifest("quick", **spec)


def drive(
    run_dir: Path, trainer: FakeExecutor, manifest: PopulationManifest | None = None, workers: int = 2
) -> Any:
    config = RunConfig(manifest=manifest or population(), run_dir=run_dir, workers=workers)
    return LocalDriver(config, trainer, LineDisplay()).run()


def test_a_run_evolves_keeps_elites_untrained_and_exports_the_best(tmp_path: Path) -> None:
    trainer = FakeExecutor()
    state = drive(tmp_path, trainer)
    assert (state.phase, state.reason) == ("Succeeded", "MaxGenerations")
    assert [g.number for g in state.generations] == [0, 1, 2]
    elites = [p.id for g in state.generations for p in g.plans if p.origin == "elite"]
    assert len(elites) == 2
    assert not set(elites) & set(trainer.started), "elites are carried over, never retrained"
    assert all(count == 1 for count in trainer.started.values()), "no genome is trained twice"
    best = load_genome(tmp_path / "best")
    assert best.modules
    record = json.loads((tmp_path / "best" / "best.json").read_text())
    assert record["fitness"] == max(r.best for r in state.history if r.best is not None)
    assert (tmp_path / "store" / "nora" / "quick" / "best" / MANIFEST_FILE).exists()
    view = read_run(tmp_path)
    assert next(lineage(view, record["genome"])).startswith(f"{record['genome']} (")
    child = next(p for p in state.generations[2].plans if p.bred)
    lines = list(lineage(view, child.id))
    assert lines[0].startswith(f"{child.id} ({child.origin}, fitness ")
    assert {line.split()[0] for line in lines[1:]} >= set(child.parents)


def test_failures_are_retried_then_excluded_and_too_many_fail_the_population(tmp_path: Path) -> None:
    trainer = FakeExecutor(always_fail={"quick-g0-1"}, fail_first={"quick-g0-2"})
    state = drive(tmp_path / "a", trainer, population(retries={"backoffLimit": 1}))
    results = {r.id: r for r in state.generations[0].results}
    assert (results["quick-g0-1"].phase, results["quick-g0-1"].attempts) == ("Failed", 2)
    assert "CUDA out of memory" in results["quick-g0-1"].message
    assert (results["quick-g0-2"].phase, results["quick-g0-2"].attempts) == ("Succeeded", 2)
    assert state.phase == "Succeeded"
    failing = FakeExecutor(always_fail={"quick-g0-0", "quick-g0-1"})
    failed = drive(tmp_path / "b", failing, population(retries={"backoffLimit": 0, "maxFailedGenomes": 1}))
    assert (failed.phase, failed.reason) == ("Failed", "TooManyFailures")


def test_an_interrupted_run_resumes_to_the_same_final_state(tmp_path: Path) -> None:
    drive(tmp_path / "straight", FakeExecutor())
    interrupted = FakeExecutor(interrupt_after=5)
    with pytest.raises(KeyboardInterrupt):
        drive(tmp_path / "resumed", interrupted)
    halfway = load_state(tmp_path / "resumed")
    assert halfway is not None
    assert halfway.phase == "Running"
    finished = {r.id for g in halfway.generations for r in g.results if r.phase == "Succeeded"}
    cut_off = {r.id for g in halfway.generations for r in g.results if r.phase == "Running"}
    assert finished
    assert cut_off
    resumed = FakeExecutor()
    drive(tmp_path / "resumed", resumed)
    assert not set(resumed.started) & finished, "finished genomes are kept, never trained again"
    assert cut_off <= set(resumed.started), "an attempt cut off by the interruption starts again"
    straight = (tmp_path / "straight" / STATE_FILE).read_bytes()
    assert (tmp_path / "resumed" / STATE_FILE).read_bytes() == straight
    assert (tmp_path / "resumed" / "best" / "adapter_model.safetensors").read_bytes() == (
        tmp_path / "straight" / "best" / "adapter_model.safetensors"
    ).read_bytes()


def test_a_different_manifest_is_refused_and_more_generations_resume(tmp_path: Path) -> None:
    drive(tmp_path, FakeExecutor())
    with pytest.raises(RunError, match="holds a run of a different manifest"):
        drive(tmp_path, FakeExecutor(), population(populationSize=5))
    longer = drive(tmp_path, FakeExecutor(), population(maxGenerations=4))
    assert (longer.phase, len(longer.history)) == ("Succeeded", 4)


def _edit_started_spec(run_dir: Path, mutation: dict[str, Any]) -> None:
    """Rewrite the spec a run started with, as an older version of nora would have written it."""
    path = run_dir / STATE_FILE
    state = json.loads(path.read_text())
    state["spec"]["mutation"] = mutation
    path.write_text(json.dumps(state))


def test_resuming_names_each_changed_field_and_tolerates_fields_added_since(tmp_path: Path) -> None:
    drive(tmp_path, FakeExecutor())
    with pytest.raises(RunError, match=r"spec\.populationSize: the run started with 4, the manifest gives 5"):
        drive(tmp_path, FakeExecutor(), population(populationSize=5))
    started = json.loads((tmp_path / STATE_FILE).read_text())["spec"]["mutation"]
    _edit_started_spec(tmp_path, {k: v for k, v in started.items() if k != "scaleSigma"})
    assert drive(tmp_path, FakeExecutor()).phase == "Succeeded"  # a field added later, at its default
    _edit_started_spec(tmp_path, {**started, "scaleSigma": 1.5})
    default = MutationSpecModel().scale_sigma
    with pytest.raises(
        RunError, match=f"spec.mutation.scaleSigma: the run started with 1.5, the manifest gives {default}"
    ):
        drive(tmp_path, FakeExecutor())  # a default that changed between versions is a change


def test_a_run_from_before_the_spec_was_kept_is_compared_by_its_digest(tmp_path: Path) -> None:
    drive(tmp_path, FakeExecutor())
    path = tmp_path / STATE_FILE
    state = json.loads(path.read_text())
    state["specDigest"] = spec_digest(state.pop("spec"))
    path.write_text(json.dumps(state))
    assert drive(tmp_path, FakeExecutor()).phase == "Succeeded"
    with pytest.raises(RunError, match="spec: differs from the run's"):
        drive(tmp_path, FakeExecutor(), population(populationSize=5))


def test_a_field_added_since_the_run_started_counts_once_it_is_set() -> None:
    started = {"mutation": {"sigma": 0.1}, "maxGenerations": 3}
    current = {"mutation": {"sigma": 0.1, "scaleSigma": 0.3}, "maxGenerations": 9}
    assert spec_changes(started, current, {"maxGenerations": 9}) == []
    assert spec_changes(started, current, {"mutation": {"scaleSigma": 0.3}}) == [
        "spec.mutation.scaleSigma: the run started without it, the manifest gives 0.3"
    ]


def test_bad_input_is_never_retried(tmp_path: Path) -> None:
    trainer = FakeExecutor(bad_input={"quick-g0-1"})
    state = drive(tmp_path, trainer, population(retries={"backoffLimit": 3}))
    failed = state.generations[0].result("quick-g0-1")
    assert (failed.phase, failed.attempts, trainer.started["quick-g0-1"]) == ("Failed", 1, 1)
    assert "baseModel.uri: no tokenizer files" in failed.message


def test_a_preempted_attempt_does_not_count(tmp_path: Path) -> None:
    trainer = FakeExecutor(preempt_first={"quick-g0-1"})
    state = drive(tmp_path, trainer, population(retries={"backoffLimit": 0}))
    resumed = state.generations[0].result("quick-g0-1")
    assert (resumed.phase, resumed.attempts, trainer.started["quick-g0-1"]) == ("Succeeded", 1, 2)


def _test_split(folder: Path, rows: int = 50) -> str:
    """A test split of ``rows`` rows (the stand-in reads only the answers)."""
    path = folder / "test.jsonl"
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"question": f"{i}+0", "solution": str(i), "answer": str(i)}) for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path.as_uri()


def test_a_test_split_is_scored_once_at_the_end_and_reported_everywhere(tmp_path: Path) -> None:
    dataset = {**BASE_SPEC["dataset"], "test": _test_split(tmp_path / "data")}
    trainer = FakeExecutor()
    state = drive(tmp_path / "run", trainer, population(dataset=dataset))
    assert (state.phase, state.reason) == ("Succeeded", "MaxGenerations")
    assert trainer.commands == [TEST_SCORE_COMMAND], "one nora test-score process, after the last generation"
    test = state.test
    assert test is not None
    assert test.phase == "Succeeded"
    assert (test.rows, test.generations, test.uri) == (50, 3, dataset["test"])
    assert test.best is not None
    assert test.initial is not None
    assert test.ensemble is not None
    assert state.best is not None
    assert test.best.genome == state.best.genome
    assert test.initial.genome == state.history[0].best_genome
    assert test.gain == pytest.approx(test.best.accuracy - test.initial.accuracy)
    assert len(test.ensemble.genomes) == 3
    assert test.ensemble.genomes[0] == state.best.genome
    assert "test accuracy (50 rows" in state.message
    exported = json.loads((tmp_path / "run" / "best" / "best.json").read_text())
    assert exported["test"] == test.to_json_dict()
    stored = json.loads((tmp_path / "run" / "store" / "nora" / "quick" / "population.json").read_text())
    assert stored["test"] == test.to_json_dict()
    lines = held_out_lines(read_run(tmp_path / "run"))
    assert lines[0] == heldout.describe(test)
    assert f"  final best: {test.best.genome} (generation {test.best.generation})" in lines[1]
    assert lines[-3:] == [
        f"    {g}: {a}" for g, a in zip(test.ensemble.genomes, test.ensemble.adapters, strict=True)
    ]
    plot = plot_fitness(read_run(tmp_path / "run"), tmp_path / "fitness.png")
    assert plot.read_bytes()[:4] == b"\x89PNG"
    task = tmp_path / "run" / "store" / "nora" / "quick" / "g0" / "quick-g0-0" / "genome.json"
    assert "test" not in json.loads(task.read_text())["dataset"], "no trainer ever sees the test split"


def test_a_failed_test_scoring_is_recorded_and_the_run_still_succeeds(tmp_path: Path) -> None:
    dataset = {**BASE_SPEC["dataset"], "test": (tmp_path / "missing.jsonl").as_uri()}
    state = drive(tmp_path, FakeExecutor(), population(dataset=dataset))
    assert (state.phase, state.reason) == ("Succeeded", "MaxGenerations")
    assert state.test is not None
    assert state.test.phase == "Failed"
    assert state.test.message.startswith("test-split scoring failed: ")
    assert json.loads((tmp_path / "best" / "best.json").read_text())["test"]["phase"] == "Failed"


def test_an_unreachable_store_does_not_count_and_the_retry_backs_off(tmp_path: Path) -> None:
    trainer = FakeExecutor(unreachable_first={"quick-g0-1"})
    state = drive(tmp_path, trainer, population(retries={"backoffLimit": 0}))
    retried = state.generations[0].result("quick-g0-1")
    assert (retried.phase, retried.attempts, trainer.started["quick-g0-1"]) == ("Succeeded", 1, 2)
    assert [transient_delay(n) for n in (1, 2, 3, 6, 7, 30)] == [1.0, 2.0, 4.0, 32.0, 60.0, 60.0]


def _weights(run_dir: Path, generation: int, genome: str, folder: str = "output/adapter") -> Path:
    return run_dir / "store" / "nora" / "quick" / f"g{generation}" / genome / folder / WEIGHTS


def test_a_corrupted_parent_is_re_trained_to_the_same_run_and_a_second_corruption_fails_it(
    tmp_path: Path,
) -> None:
    straight = drive(tmp_path / "straight", FakeExecutor())
    every = {f"quick-g0-{i}": _weights(tmp_path / "repaired", 0, f"quick-g0-{i}") for i in range(4)}
    trainer = FakeExecutor(corrupt_after={"quick-g0-3": tuple(every.values())})  # after the last of g0
    repaired = drive(tmp_path / "repaired", trainer)
    assert (repaired.phase, repaired.best) == (straight.phase, straight.best)
    g0 = {r.id: r for r in repaired.generations[0].results}
    parents = {p for plan in repaired.generations[1].plans if plan.bred for p in plan.parents}
    assert parents
    for genome in parents:
        assert (g0[genome].phase, g0[genome].retrains, trainer.started[genome]) == ("Succeeded", 1, 2)
        assert g0[genome].message.startswith("re-training (attempt 1): ")
        assert every[genome].read_bytes() == _weights(tmp_path / "straight", 0, genome).read_bytes()

    child = next(p for p in straight.generations[2].plans if p.bred)
    parent = next(p for p in straight.generations[1].plans if p.id in child.parents and p.bred)
    run_dir = tmp_path / "twice"
    output, start = _weights(run_dir, 1, parent.id), _weights(run_dir, 1, parent.id, "start")
    failed = drive(run_dir, FakeExecutor(corrupt_after={parent.id: (output, start)}))
    assert (failed.phase, failed.reason) == ("Failed", "CorruptAdapter")
    assert failed.message.startswith(f"genome {parent.id}: ")
    assert str(output.parent.relative_to(run_dir / "store")) in failed.message
    assert "its start adapter is corrupt too" in failed.message
