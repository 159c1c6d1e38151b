"""A whole genome on CPU with the toy model: ``nora train --genome`` end to end, on tiny budgets.

The toy model comes from ``nora.toy.model.build_toy_model`` (cached under ``$NORA_CACHE_DIR`` or
``~/.cache/nora``; the first build takes a few CPU minutes, later ones copy the cache). Each run here
samples 8 training prompts x 4 answers, trains 6 DPO steps and evaluates 16 eval prompts.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from nora.api.defaults import DEFAULT_ANSWER_PATTERN
from nora.evolution import contract
from nora.genetics import load_genome
from nora.toy.cache import read_toy_info
from nora.toy.data import extract_answer, read_jsonl, write_dataset
from nora.toy.model import build_toy_model
from nora.trainer import checkpoint
from nora.trainer.entrypoint import main

pytestmark = pytest.mark.slow

TINY_TRAINING = {
    "method": "irpo",
    "samplesPerPrompt": 4,
    "pairsPerPrompt": 2,
    "maxSteps": 6,
    "batchSize": 2,
    "maxPrompts": 8,
    "maxNewTokens": 96,
    "evalPrompts": 16,
    "learningRate": 1e-3,
}


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_toy_model(tmp_path_factory.mktemp("toy") / "model")


def test_the_default_toy_model_is_partially_right(toy_dir: Path) -> None:
    info = read_toy_info(toy_dir)
    assert info is not None
    assert 0.2 <= info.eval_accuracy <= 0.6, f"toy base greedy accuracy {info.eval_accuracy}"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_dataset(tmp_path_factory.mktemp("data"), seed=0, n_train=32, n_eval=32)


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NORA_NUM_THREADS", "1")
    monkeypatch.setenv("NORA_TERMINATION_LOG", str(tmp_path / "termination-log"))


def genome_json(
    folder: Path, toy_dir: Path, data: tuple[Path, Path], name: str = "t-g0-0", **overrides: Any
) -> Path:
    task: dict[str, Any] = {
        "population": "t",
        "generation": 0,
        "genome": name,
        "seed": 7,
        "baseModel": {"uri": toy_dir.as_uri()},
        "dataset": {"train": data[0].as_uri(), "eval": data[1].as_uri()},
        "adapter": {"uri": None, "rank": 4, "alpha": 8.0, "targetModules": ["q_proj", "v_proj"]},
        "training": TINY_TRAINING,
        "output": (folder / name).as_uri(),
    }
    task.update(overrides)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(task), encoding="utf-8")
    return path


def run_main(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any], str]:
    code = main(str(path))
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    summary = json.loads(lines[-1]) if code == 0 else {}
    if code == 0:
        assert len(lines) == 1, captured.out  # stdout is exactly one JSON line
    return code, summary, captured.err


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def trained(
    toy_dir: Path, data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("run")
    os.environ["NORA_NUM_THREADS"] = "1"
    code = main(str(genome_json(folder, toy_dir, data)))
    assert code == 0
    out = folder / "t-g0-0"
    return out, json.loads((out / "metrics.json").read_text(encoding="utf-8"))


def test_training_changes_the_adapter_and_writes_a_peft_adapter(
    trained: tuple[Path, dict[str, Any]], toy_dir: Path
) -> None:
    out, metrics = trained
    assert metrics["training"]["steps"] == 6
    assert metrics["pairs"]["pairs"] > 0
    genome = load_genome(out / "adapter")  # manifest verified
    assert sorted({name.rsplit(".", 1)[-1] for name in genome.modules}) == ["q_proj", "v_proj"]
    assert all(m.rank == 4 and m.alpha == 8.0 for m in genome.modules.values())
    assert any(float(m.b.abs().max()) > 0 for m in genome.modules.values())  # B started at zero
    base = AutoModelForCausalLM.from_pretrained(toy_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(out / "adapter"))
    weights = load_file(out / "adapter" / "adapter_model.safetensors")
    loaded = dict(model.named_parameters())
    for key, value in weights.items():
        assert torch.equal(loaded[key.replace(".weight", ".default.weight")], value)


def test_pairs_pit_correct_winners_against_incorrect_losers(
    trained: tuple[Path, dict[str, Any]], data: tuple[Path, Path]
) -> None:
    out, metrics = trained
    rows = {"train": read_jsonl(data[0]), "heldout": read_jsonl(data[1])}
    pairs = _jsonl(out / "pairs.jsonl")
    assert sum(p["split"] == "train" for p in pairs) == metrics["pairs"]["pairs"]
    for pair in pairs:
        row = rows[pair["split"]][pair["prompt_index"]]
        assert extract_answer(pair["chosen"], DEFAULT_ANSWER_PATTERN) == row["answer"]
        assert extract_answer(pair["rejected"], DEFAULT_ANSWER_PATTERN) != row["answer"]
        assert pair["chosen_is_gold"] == (pair["chosen"] == row["solution"])
        assert row["question"] in pair["prompt"]
    train_pairs = [p for p in pairs if p["split"] == "train"]
    assert any(p["chosen_is_gold"] for p in train_pairs)
    # a prompt with no correct sample keeps its pairs, the gold solution being its only winner
    gold_only = {
        index
        for index in {p["prompt_index"] for p in train_pairs}
        if all(p["chosen_is_gold"] for p in train_pairs if p["prompt_index"] == index)
    }
    assert len(gold_only) >= metrics["pairs"]["gold_only_prompts"]


def test_accuracy_equals_a_recount_of_samples_jsonl(
    trained: tuple[Path, dict[str, Any]], data: tuple[Path, Path]
) -> None:
    out, metrics = trained
    samples = _jsonl(out / "samples.jsonl")
    eval_rows = read_jsonl(data[1])[:16]
    assert [s["question"] for s in samples] == [r["question"] for r in eval_rows]
    recount = sum(
        extract_answer(s["completion"], DEFAULT_ANSWER_PATTERN) == r["answer"]
        for s, r in zip(samples, eval_rows, strict=True)
    )
    assert metrics["accuracy"] == recount / len(eval_rows)
    assert metrics["eval_correct"] == recount
    assert metrics["fitness"] == metrics["accuracy"]
    assert metrics["irpo_loss"] is None or metrics["irpo_loss"] > 0
    assert set(metrics["durations"]) >= {"load", "sampling", "training", "evaluation", "total"}
    assert metrics["tokens_per_s"]["sampling"] > 0


def test_same_genome_json_and_seed_give_the_same_adapter_bytes(
    toy_dir: Path, data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    digests, summaries = [], []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        code, summary, _ = run_main(genome_json(folder, toy_dir, data), capsys)
        assert code == 0
        digests.append(_sha(folder / "t-g0-0" / "adapter" / "adapter_model.safetensors"))
        summaries.append(summary)
    assert digests[0] == digests[1]
    assert summaries[0]["fitness"] == summaries[1]["fitness"]


def test_summary_line_and_irpo_loss_fitness(
    toy_dir: Path, data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = genome_json(tmp_path, toy_dir, data, fitness={"metric": "irpo_loss", "goal": "minimize"})
    code, summary, err = run_main(path, capsys)
    assert code == 0
    assert summary["genome"] == "t-g0-0"
    assert summary["metric"] == "irpo_loss"
    assert summary["fitness"] == summary["irpo_loss"] > 0
    assert summary["adapter"] == (tmp_path / "t-g0-0").as_uri() + "/adapter"
    assert summary["metrics"].endswith("/metrics.json")
    assert {"sampling", "training", "evaluation"} <= set(summary["durations"])
    for phase in ("sampling[train]", "pairs[train]", "training: step", "evaluation:"):
        assert phase in err


def test_method_none_evaluates_the_starting_adapter_unchanged(
    toy_dir: Path, data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = genome_json(tmp_path, toy_dir, data, name="first")
    assert run_main(first, capsys)[0] == 0
    start = (tmp_path / "first" / "adapter").as_uri()
    path = genome_json(
        tmp_path,
        toy_dir,
        data,
        name="second",
        adapter={"uri": start, "targetModules": ["q_proj", "v_proj"]},
        training={**TINY_TRAINING, "method": "none"},
        hyperparameters={"learningRate": 5e-4},
    )
    assert run_main(path, capsys)[0] == 0
    metrics = json.loads((tmp_path / "second" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["training"]["skipped"]
    assert metrics["heldout"] is None or metrics["heldout"]["dpo_loss"] == pytest.approx(0.6931, abs=1e-3)
    before = load_genome(tmp_path / "first" / "adapter")
    after = load_genome(tmp_path / "second" / "adapter")
    assert all(torch.equal(before.modules[n].b, after.modules[n].b) for n in before.modules)
    assert after.hyperparameters == {"learningRate": 5e-4}


def test_a_failed_training_leaves_no_adapter(
    toy_dir: Path,
    data: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("out of memory\nwhile training")

    monkeypatch.setattr(checkpoint, "train_dpo", broken)
    code, _, err = run_main(genome_json(tmp_path, toy_dir, data), capsys)
    assert code == 1
    assert err.strip().splitlines()[-1] == "nora train: error: RuntimeError: out of memory while training"
    assert (tmp_path / "termination-log").read_text(encoding="utf-8").strip() == err.strip().splitlines()[-1]
    assert not (tmp_path / "t-g0-0").exists()


def test_a_crash_while_writing_the_adapter_leaves_no_half_written_adapter(
    toy_dir: Path,
    data: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import nora.genetics.io as genome_io

    real = genome_io._write_folder

    def crash_half_way(genome: Any, folder: Path) -> None:
        real(genome, folder)
        if folder.name.startswith(".adapter."):  # the output adapter, not the staged starting adapter
            (folder / "adapter_model.safetensors").write_bytes(b"truncated")
            raise OSError("disk full")

    monkeypatch.setattr(genome_io, "_write_folder", crash_half_way)
    code, _, err = run_main(genome_json(tmp_path, toy_dir, data), capsys)
    assert code == 1
    assert "disk full" in err.strip().splitlines()[-1]
    out = tmp_path / "t-g0-0"
    assert not (out / "adapter").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".adapter")]
    assert not (out / "metrics.json").exists()


def test_cli_process_contract_on_bad_input(tmp_path: Path, data: tuple[Path, Path]) -> None:
    """The real ``python -m nora.trainer`` process: exit 2, one stderr line, the termination message."""
    path = tmp_path / "genome.json"
    path.write_text('{"population": "p", "genome": ', encoding="utf-8")
    env = {**os.environ, "NORA_TERMINATION_LOG": str(tmp_path / "term")}
    result = subprocess.run(
        [sys.executable, "-m", "nora.trainer", "--genome", str(path)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"nora train: error: {path}: invalid genome.json")
    assert (tmp_path / "term").read_text(encoding="utf-8").strip() == lines[-1]
    assert contract.TERMINATION_LOG == "/dev/termination-log"


def test_benchmark_quick_runs(tmp_path: Path, toy_dir: Path) -> None:
    """``benchmarks/trainer.py --quick`` (tiny budgets, one seed) prints both of its tables."""
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "benchmarks/trainer.py", "--quick", "--iterations", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "NORA_NUM_THREADS": "1"},
        cwd=Path(__file__).resolve().parents[2],
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "== one toy genome ==" in result.stdout
    assert "gain after 1 iterations" in result.stdout
    report = json.loads(out.read_text(encoding="utf-8"))
    assert set(report["single"]["durations"]) >= {"sampling", "training", "evaluation"}
    assert len(report["iterations"]["base"]["values"]) == 1
