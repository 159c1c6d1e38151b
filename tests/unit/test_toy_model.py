"""Unit tests of the toy model build: Hugging Face round trip, determinism, the cache and ``nora toy model``.

Every build here uses a tiny test-size configuration (a few seconds on CPU) and a cache root under
``tmp_path`` (``NORA_CACHE_DIR``), never the user's cache.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from nora.api.defaults import DEFAULT_PROMPT_TEMPLATE
from nora.toy import cache, evaluate, pretrain
from nora.toy import model as toy_model
from nora.toy.cli import app
from nora.toy.config import ToyEvalConfig, ToyModelConfig, ToyTrainConfig
from nora.toy.data import generate_rows

TINY_MODEL = ToyModelConfig(
    hidden_size=32,
    num_layers=1,
    num_heads=2,
    num_kv_heads=1,
    intermediate_size=64,
    max_position_embeddings=128,
)
TINY_TRAIN = ToyTrainConfig(steps=8, batch_size=8, pool_size=64, warmup_steps=2, num_threads=1)
TINY_EVAL = ToyEvalConfig(rows=8, max_new_tokens=16)
build_tiny = functools.partial(
    toy_model.build_toy_model, model=TINY_MODEL, train=TINY_TRAIN, evaluation=TINY_EVAL
)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache root shared by this module's tests, holding the seed-1 tiny model once built."""
    return tmp_path_factory.mktemp("shared-cache")


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty cache root for one test."""
    root = tmp_path / "cache"
    monkeypatch.setenv("NORA_CACHE_DIR", str(root))
    return root


@pytest.fixture
def tiny(shared_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The seed-1 tiny model, copied from the shared cache into this test's ``tmp_path``."""
    monkeypatch.setenv("NORA_CACHE_DIR", str(shared_cache))
    return build_tiny(tmp_path / "tiny", seed=1)


def _cache_entries(cache_dir: Path) -> list[str]:
    toy = cache_dir / "toy"
    return sorted(p.name for p in toy.iterdir()) if toy.exists() else []


def test_built_model_loads_with_auto_classes_and_generates(tiny: Path) -> None:
    out = tiny
    tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    assert model.config.model_type == "llama"
    assert tokenizer.chat_template is None
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<s>", "</s>", "<pad>")
    prompt = DEFAULT_PROMPT_TEMPLATE.format(question="What is 12 + 34?")
    encoded = tokenizer(prompt, return_tensors="pt")
    assert encoded["input_ids"][0, 0].item() == tokenizer.bos_token_id
    assert tokenizer.decode(encoded["input_ids"][0], skip_special_tokens=True) == prompt
    output = cast(Any, model).generate(**encoded, max_new_tokens=10, do_sample=False)
    assert output.shape[1] > encoded["input_ids"].shape[1]
    info = cache.read_toy_info(out)
    assert info is not None
    assert info.seed == 1
    assert info.eval_rows == 8
    assert 0.0 <= info.eval_accuracy <= 1.0


def test_reloaded_accuracy_matches_the_recorded_one(tiny: Path) -> None:
    out = tiny
    info = cache.read_toy_info(out)
    assert info is not None
    rows = generate_rows(TINY_EVAL.data_seed, TINY_EVAL.rows, "eval")
    assert evaluate.evaluate_accuracy(out, rows, max_new_tokens=16) == info.eval_accuracy


def test_same_seed_gives_identical_bytes_and_other_seeds_differ(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = tiny
    cache_dir = tmp_path / "fresh-cache"
    monkeypatch.setenv("NORA_CACHE_DIR", str(cache_dir))
    second = build_tiny(tmp_path / "b", seed=1)  # trained again in a fresh cache root
    third = build_tiny(tmp_path / "c", seed=4)
    assert len(_cache_entries(cache_dir)) == 2
    assert _sha256(first / "model.safetensors") == _sha256(second / "model.safetensors")
    assert _sha256(first / "tokenizer.json") == _sha256(second / "tokenizer.json")
    assert _sha256(first / "model.safetensors") != _sha256(third / "model.safetensors")


def test_second_call_is_served_from_the_cache(tmp_path: Path, cache_dir: Path) -> None:
    stale = cache_dir / "toy" / ".0123abcd.killed"  # scratch left by a build killed two days ago
    stale.mkdir(parents=True)
    os.utime(stale, (time.time() - 2 * 86400, time.time() - 2 * 86400))
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


def test_changed_config_misses_the_cache(tiny: Path, tmp_path: Path, shared_cache: Path) -> None:
    before = _cache_entries(shared_cache)
    other = dataclasses.replace(TINY_TRAIN, steps=3)
    out = build_tiny(tmp_path / "b", seed=1, train=other)
    assert len(_cache_entries(shared_cache)) == len(before) + 1
    info, tiny_info = cache.read_toy_info(out), cache.read_toy_info(tiny)
    assert info is not None
    assert tiny_info is not None
    assert info.key != tiny_info.key


def test_interrupted_build_leaves_no_cache_entry(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(out_dir: Path, *args: object) -> None:
        (out_dir / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(pretrain, "train_into", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_tiny(tmp_path / "m", seed=7)
    assert _cache_entries(cache_dir) == []
    assert not (tmp_path / "m" / cache.INFO_FILE).exists()


def test_cli_model_prints_a_summary_and_rejects_a_file_as_out(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(toy_model, "build_toy_model", build_tiny)
    runner = CliRunner()
    result = runner.invoke(app, ["model", "--out", str(tmp_path / "m"), "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "greedy eval accuracy" in result.output
    assert _sha256(tmp_path / "m" / "model.safetensors") == _sha256(tiny / "model.safetensors")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    bad = runner.invoke(app, ["model", "--out", str(a_file)])
    assert bad.exit_code == 2
    assert "--out" in bad.output


def test_sampling_is_seeded_and_leaves_the_global_rng_alone(tiny: Path) -> None:
    rows = generate_rows(0, 4, "train")
    state = torch.random.get_rng_state()
    first = evaluate.mixed_sample_fraction(tiny, rows, samples=2, seed=3, max_new_tokens=16)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert evaluate.mixed_sample_fraction(tiny, rows, samples=2, seed=3, max_new_tokens=16) == first
    assert 0.0 <= first <= 1.0


def test_a_cache_hit_never_imports_torch(tiny: Path, tmp_path: Path, shared_cache: Path) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from nora.toy.config import ToyEvalConfig, ToyModelConfig, ToyTrainConfig\n"
        "from nora.toy.model import build_toy_model\n"
        f"build_toy_model(Path(sys.argv[1]), seed=1, model={TINY_MODEL!r}, train={TINY_TRAIN!r},"
        f" evaluation={TINY_EVAL!r})\n"
        "assert 'torch' not in sys.modules, 'a cache hit imported torch'\n"
    )
    env = {**os.environ, "NORA_CACHE_DIR": str(shared_cache)}
    out = tmp_path / "copy"
    result = subprocess.run(
        [sys.executable, "-c", code, str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert _sha256(out / "model.safetensors") == _sha256(tiny / "model.safetensors")


def test_a_config_without_worked_solutions_is_refused() -> None:
    with pytest.raises(ValueError, match="direct_answer_fraction"):
        ToyTrainConfig(direct_answer_fraction=1.0)
