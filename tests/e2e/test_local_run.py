"""``nora run`` end to end with the real trainer on the toy model: evolution, report, kill and resume.

Each run is a real ``nora run`` process whose genomes are real ``nora train`` subprocesses.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from peft import PeftModel
from transformers import AutoModelForCausalLM

from nora.genetics import load_genome
from nora.local.state import load_state
from tests.support.manifests import population_yaml

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TINY: dict[str, Any] = {
    "baseModel": {"uri": "toy://arithmetic"},
    "dataset": {"train": "toy://arithmetic/train", "eval": "toy://arithmetic/eval"},
    "maxGenerations": 2,
    "seed": 3,
    "mutation": {"sigma": 0.001, "rankGrowProbability": 0.3, "rankShrinkProbability": 0.1, "maxRank": 8},
    "training": {
        "samplesPerPrompt": 4,
        "pairsPerPrompt": 1,
        "maxSteps": 4,
        "batchSize": 4,
        "maxPrompts": 8,
        "maxNewTokens": 48,
        "evalPrompts": 16,
        "learningRate": 0.002,
    },
}


def write_manifest(folder: Path, name: str = "tiny", **spec: Any) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(population_yaml(name, **{**TINY, **spec}))
    return path


def nora(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nora", *args], check=False, capture_output=True, text=True, timeout=timeout
    )


def test_a_real_local_evolution_stores_lineage_and_reports(tmp_path: Path) -> None:
    dataset = {**TINY["dataset"], "test": "toy://arithmetic/test", "testEnsemble": 2}
    manifest = write_manifest(tmp_path, dataset=dataset)
    run_dir = tmp_path / "run"
    finished = nora("run", str(manifest), "--dir", str(run_dir))
    assert finished.returncode == 0, finished.stderr[-3000:]
    state = load_state(run_dir)
    assert state is not None
    assert (state.phase, len(state.history)) == ("Succeeded", 2)
    for generation in state.generations:
        for plan, result in zip(generation.plans, generation.results, strict=True):
            assert result.phase == "Succeeded", result.message
            assert result.fitness is not None
            assert 0.0 <= result.fitness <= 1.0
            folder = run_dir / "store" / "nora" / "tiny" / f"g{generation.number}" / plan.id
            if plan.train:
                assert (folder / "genome.json").exists()
                assert (
                    json.loads((folder / "output" / "metrics.json").read_text())["accuracy"] == result.fitness
                )
            if plan.origin in ("crossover", "mutation"):
                assert plan.parents
                assert all(p.startswith("tiny-g0-") for p in plan.parents)
                assert (folder / "start" / "nora_manifest.json").exists()
    best = json.loads((run_dir / "best" / "best.json").read_text())
    assert best["fitness"] == max(h.best for h in state.history if h.best is not None)
    test = state.test  # the real nora test-score on 1000 unseen rows
    assert test is not None
    assert (test.phase, test.rows, test.uri, test.generations) == (
        "Succeeded",
        1000,
        "toy://arithmetic/test",
        2,
    )
    assert test.best is not None
    assert test.initial is not None
    assert state.best is not None
    assert (test.best.genome, test.initial.genome) == (state.best.genome, state.history[0].best_genome)
    assert 0.0 <= test.best.accuracy <= 1.0
    assert test.gain == test.best.accuracy - test.initial.accuracy
    assert test.ensemble is not None
    assert len(test.ensemble.adapters) == 2
    assert best["test"] == test.to_json_dict()
    model_dir = Path(
        json.loads((run_dir / "store" / "nora" / "tiny" / "g0" / "tiny-g0-0" / "genome.json").read_text())[
            "baseModel"
        ]["uri"].removeprefix("file://")
    )
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), run_dir / "best")
    assert load_genome(run_dir / "best").ranks.keys() == {
        name.removeprefix("base_model.model.")
        for name, m in peft_model.named_modules()
        if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {})
    }
    report = nora("report", str(run_dir))
    assert report.returncode == 0, report.stderr
    assert "lineage of the best genome" in report.stdout
    assert f"test accuracy (1000 rows of toy://arithmetic/test): best {test.best.genome}" in report.stdout
    assert "top-2 ensemble" in report.stdout
    assert (run_dir / "fitness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    status = nora("status", str(run_dir))
    assert "Succeeded" in status.stdout
    assert "generation 0's best" in status.stdout


def _wait_for(predicate: Any, deadline_seconds: float, what: str) -> None:
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {deadline_seconds}s waiting for {what}")


def _progress(run_dir: Path) -> tuple[int, int]:
    try:
        state = json.loads((run_dir / "state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return (0, 0)
    results = [r for g in state["generations"] for r in g["results"]]
    return (sum(r["phase"] == "Succeeded" for r in results), sum(r["phase"] == "Running" for r in results))


def test_sigkill_during_a_generation_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, name="resume")
    straight = nora("run", str(manifest), "--dir", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr[-3000:]
    resumed_dir = tmp_path / "resumed"
    driver = subprocess.Popen(
        [sys.executable, "-m", "nora", "run", str(manifest), "--dir", str(resumed_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(
            lambda: _progress(resumed_dir)[0] >= 1 and _progress(resumed_dir)[1] >= 1,
            600,
            "a finished genome and a running one",
        )
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
    halfway = load_state(resumed_dir)
    assert halfway is not None
    assert halfway.phase == "Running"
    again = nora("run", str(manifest), "--dir", str(resumed_dir))
    assert again.returncode == 0, again.stderr[-3000:]
    assert (resumed_dir / "state.json").read_bytes() == (tmp_path / "straight" / "state.json").read_bytes()
    for name in ("adapter_model.safetensors", "adapter_config.json", "nora_manifest.json"):
        assert (resumed_dir / "best" / name).read_bytes() == (
            tmp_path / "straight" / "best" / name
        ).read_bytes()


def test_bad_manifests_exit_2_with_the_field_path(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, name="bad", selection={"survivors": 9})
    result = nora("run", str(manifest), "--dir", str(tmp_path / "bad-run"), timeout=120)
    assert result.returncode == 2
    assert "spec.selection.survivors: 9 exceeds spec.populationSize (4)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "bad-run").exists()
