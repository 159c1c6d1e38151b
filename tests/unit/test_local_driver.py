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

from nora.api.manifest import PopulationManifest, parse_population
from nora.api.task import GenomeTask
from nora.evolution.genome_store import download_genome, upload_genome
from nora.genetics import init_genome, load_genome, make_generator
from nora.genetics.io import MANIFEST_FILE
from nora.local.driver import LocalDriver, RunConfig, RunError
from nora.local.executor import Launch, Outcome
from nora.local.progress import LineDisplay
from nora.local.report import lineage, read_run
from nora.local.state import STATE_FILE
from nora.storage import open_uri

SHAPES = {"model.layers.0.self_attn.q_proj": (8, 8), "model.layers.0.self_attn.v_proj": (4, 8)}


@dataclass
class _Done:
    outcome: Outcome

    def poll(self) -> Outcome | None:
        return self.outcome

    def kill(self) -> None:
        return None


@dataclass
class FakeTrainer:
    """Writes a deterministic 'trained' adapter and a fitness that depends only on the adapter."""

    always_fail: set[str] = field(default_factory=set)
    fail_first: set[str] = field(default_factory=set)
    interrupt_after: int | None = None
    started: Counter[str] = field(default_factory=Counter)

    def start(self, launch: Launch) -> _Done:
        if self.interrupt_after is not None and sum(self.started.values()) >= self.interrupt_after:
            raise KeyboardInterrupt
        self.started[launch.genome] += 1
        store, key = open_uri(launch.task_uri)
        task = GenomeTask.model_validate_json(store.read_bytes(key))
        if task.genome in self.always_fail or (
            task.genome in self.fail_first and self.started[task.genome] == 1
        ):
            return _Done(Outcome(exit_code=1, summary=None, reason="CUDA out of memory (fake)"))
        if task.adapter.uri:
            adapter_store, adapter_key = open_uri(task.adapter.uri)
            genome = download_genome(adapter_store, adapter_key)
        else:
            genome = init_genome(
                SHAPES, task.adapter.rank, task.adapter.alpha, make_generator(task.seed), b_std=0.1
            )
        fitness = round(float(sum(m.a.float().sum() for m in genome.modules.values())) % 1.0, 6)
        out_store, out_key = open_uri(task.output)
        upload_genome(out_store, f"{out_key}/adapter", genome)
        out_store.write_bytes(f"{out_key}/metrics.json", json.dumps({"accuracy": fitness}).encode())
        return _Done(Outcome(exit_code=0, summary={"genome": task.genome, "fitness": fitness}, reason=""))


def population(**spec: Any) -> PopulationManifest:
    body: dict[str, Any] = {
        "baseModel": {"uri": "file:///models/toy"},
        "dataset": {"train": "file:///data/train.jsonl", "eval": "file:///data/eval.jsonl"},
        "populationSize": 4,
        "maxGenerations": 3,
        "seed": 11,
        "selection": {"method": "tournament", "survivors": 2, "elites": 1},
        "adapter": {"initialRank": 2, "alpha": 4},
        "mutation": {"sigma": 0.01, "rankGrowProbability": 0.5, "rankShrinkProbability": 0.2},
    }
    body.update(spec)
    return parse_population(
        {"apiVersion": "nora.dev/v1alpha1", "kind": "Population", "metadata": {"name": "quick"}, "spec": body}
    )


def drive(
    run_dir: Path, trainer: FakeTrainer, manifest: PopulationManifest | None = None, workers: int = 2
) -> Any:
    config = RunConfig(manifest=manifest or population(), run_dir=run_dir, workers=workers)
    return LocalDriver(config, trainer, LineDisplay()).run()


def test_a_run_evolves_keeps_elites_untrained_and_exports_the_best(tmp_path: Path) -> None:
    trainer = FakeTrainer()
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
    assert any(
        "(elite" in line or "(crossover" in line or "(mutation" in line
        for line in lineage(state, record["genome"])
    )


def test_failures_are_retried_then_excluded_and_too_many_fail_the_population(tmp_path: Path) -> None:
    trainer = FakeTrainer(always_fail={"quick-g0-1"}, fail_first={"quick-g0-2"})
    state = drive(tmp_path / "a", trainer, population(retries={"backoffLimit": 1}))
    results = {r.id: r for r in state.generations[0].results}
    assert (results["quick-g0-1"].phase, results["quick-g0-1"].attempts) == ("Failed", 2)
    assert "CUDA out of memory" in results["quick-g0-1"].message
    assert (results["quick-g0-2"].phase, results["quick-g0-2"].attempts) == ("Succeeded", 2)
    assert state.phase == "Succeeded"
    failing = FakeTrainer(always_fail={"quick-g0-0", "quick-g0-1"})
    failed = drive(tmp_path / "b", failing, population(retries={"backoffLimit": 0, "maxFailedGenomes": 1}))
    assert (failed.phase, failed.reason) == ("Failed", "TooManyFailures")


def test_an_interrupted_run_resumes_to_the_same_final_state(tmp_path: Path) -> None:
    drive(tmp_path / "straight", FakeTrainer())
    interrupted = FakeTrainer(interrupt_after=5)
    with pytest.raises(KeyboardInterrupt):
        drive(tmp_path / "resumed", interrupted)
    halfway = read_run(tmp_path / "resumed")
    assert halfway.phase == "Running"
    finished = {r.id for g in halfway.generations for r in g.results if r.phase == "Succeeded"}
    cut_off = {r.id for g in halfway.generations for r in g.results if r.phase == "Running"}
    assert finished
    assert cut_off
    resumed = FakeTrainer()
    drive(tmp_path / "resumed", resumed)
    assert not set(resumed.started) & finished, "finished genomes are kept, never trained again"
    assert cut_off <= set(resumed.started), "an attempt cut off by the interruption starts again"
    straight = (tmp_path / "straight" / STATE_FILE).read_bytes()
    assert (tmp_path / "resumed" / STATE_FILE).read_bytes() == straight
    assert (tmp_path / "resumed" / "best" / "adapter_model.safetensors").read_bytes() == (
        tmp_path / "straight" / "best" / "adapter_model.safetensors"
    ).read_bytes()


def test_a_different_manifest_is_refused_and_more_generations_resume(tmp_path: Path) -> None:
    drive(tmp_path, FakeTrainer())
    with pytest.raises(RunError, match="holds a run of a different manifest"):
        drive(tmp_path, FakeTrainer(), population(populationSize=5))
    longer = drive(tmp_path, FakeTrainer(), population(maxGenerations=4))
    assert (longer.phase, len(longer.history)) == ("Succeeded", 4)
