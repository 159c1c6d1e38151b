"""Unit tests of the toy model build: Hugging Face round trip, determinism, the cache and ``nora toy model``.

Every build here uses a tiny test-size configuration (a few seconds on CPU) and a cache root under
``tmp_path`` (``NORA_CACHE_DIR``), never the user's cache.
"""

from __future__ import annotations

import functools
import hashlib
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from nora.api.defaults import DEFAULT_PROMPT_TEMPLATE
from nora.toy import model as toy_model
from nora.toy.cli import app
from nora.toy.data import extract_answer, generate_rows
from nora.toy.pretrain import ToyModelConfig, ToyTrainConfig

TINY_MODEL = ToyModelConfig(
    hidden_size=32,
    num_layers=1,
    num_heads=2,
    num_kv_heads=1,
    intermediate_size=64,
    max_position_embeddings=128,
)
TINY_TRAIN = ToyTrainConfig(steps=12, batch_size=8, pool_size=64, warmup_steps=2)
TINY_EVAL = toy_model.ToyEvalConfig(rows=8)
build_tiny = functools.partial(
    toy_model.build_toy_model, model=TINY_MODEL, train=TINY_TRAIN, evaluation=TINY_EVAL
)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("NORA_CACHE_DIR", str(root))
    return root


def _cache_entries(cache_dir: Path) -> list[str]:
    toy = cache_dir / "toy"
    return sorted(p.name for p in toy.iterdir()) if toy.exists() else []


def test_built_model_loads_with_auto_classes_and_generates(tmp_path: Path) -> None:
    out = build_tiny(tmp_path / "m", seed=1)
    tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    assert model.config.model_type == "llama"
    assert tokenizer.chat_template is None
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<s>", "</s>", "<pad>")
    prompt = DEFAULT_PROMPT_TEMPLATE.format(question="What is 12 + 34?")
    encoded = tokenizer(prompt, return_tensors="pt")
    assert encoded["input_ids"][0, 0].item() == tokenizer.bos_token_id
    assert tokenizer.decode(encoded["input_ids"][0], skip_special_tokens=True) == prompt
    output = model.generate(**encoded, max_new_tokens=10, do_sample=False)
    assert output.shape[1] > encoded["input_ids"].shape[1]
    info = toy_model.read_toy_info(out)
    assert info is not None
    assert info.seed == 1
    assert info.eval_rows == 8
    assert 0.0 <= info.eval_accuracy <= 1.0


def test_reloaded_accuracy_matches_the_recorded_one(tmp_path: Path) -> None:
    out = build_tiny(tmp_path / "m", seed=2)
    info = toy_model.read_toy_info(out)
    assert info is not None
    rows = generate_rows(TINY_EVAL.data_seed, TINY_EVAL.rows, "eval")
    assert toy_model.evaluate_accuracy(out, rows) == info.eval_accuracy


def test_same_seed_gives_identical_bytes_and_other_seeds_differ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = build_tiny(tmp_path / "a", seed=3)
    monkeypatch.setenv("NORA_CACHE_DIR", str(tmp_path / "other-cache"))  # force a second training run
    second = build_tiny(tmp_path / "b", seed=3)
    third = build_tiny(tmp_path / "c", seed=4)
    assert _sha256(first / "model.safetensors") == _sha256(second / "model.safetensors")
    assert _sha256(first / "tokenizer.json") == _sha256(second / "tokenizer.json")
    assert _sha256(first / "model.safetensors") != _sha256(third / "model.safetensors")


def test_second_call_is_served_from_the_cache(tmp_path: Path, cache_dir: Path) -> None:
    started = time.monotonic()
    first = build_tiny(tmp_path / "a", seed=5)
    first_seconds = time.monotonic() - started
    started = time.monotonic()
    second = build_tiny(tmp_path / "b", seed=5)
    second_seconds = time.monotonic() - started
    assert second_seconds < first_seconds / 3
    assert _sha256(first / "model.safetensors") == _sha256(second / "model.safetensors")
    assert len(_cache_entries(cache_dir)) == 1
    stamp = (second / "model.safetensors").stat().st_mtime_ns
    assert build_tiny(second, seed=5) == second
    assert (second / "model.safetensors").stat().st_mtime_ns == stamp


def test_changed_config_misses_the_cache(cache_dir: Path, tmp_path: Path) -> None:
    build_tiny(tmp_path / "a", seed=6)
    build_tiny(
        tmp_path / "b", seed=6, train=ToyTrainConfig(steps=3, batch_size=8, pool_size=64, warmup_steps=1)
    )
    assert len(_cache_entries(cache_dir)) == 2


def test_interrupted_build_leaves_no_cache_entry(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(out_dir: Path, *args: object) -> None:
        (out_dir / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(toy_model, "_train_into", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_tiny(tmp_path / "m", seed=7)
    assert _cache_entries(cache_dir) == []
    assert not (tmp_path / "m" / toy_model.INFO_FILE).exists()


def test_cli_model_prints_a_summary_and_rejects_a_file_as_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(toy_model, "build_toy_model", build_tiny)
    runner = CliRunner()
    result = runner.invoke(app, ["model", "--out", str(tmp_path / "m"), "--seed", "8"])
    assert result.exit_code == 0, result.output
    assert "greedy eval accuracy" in result.output
    assert (tmp_path / "m" / "model.safetensors").is_file()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    bad = runner.invoke(app, ["model", "--out", str(a_file)])
    assert bad.exit_code == 2
    assert "--out" in bad.output


def test_sampling_mixes_answers_helper_runs(tmp_path: Path) -> None:
    out = build_tiny(tmp_path / "m", seed=9)
    rows = generate_rows(0, 4, "train")
    fraction = toy_model.mixed_sample_fraction(out, rows, samples=2)
    assert 0.0 <= fraction <= 1.0
    assert extract_answer("1+2=3, 3\n#### 3") == "3"
    assert torch.get_num_threads() >= 1
