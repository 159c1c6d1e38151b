"""Bad base models exit 2 (never retried), one line naming ``baseModel.uri`` or ``adapter.targetModules``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nora.evolution import contract
from nora.trainer.entrypoint import main
from tests.support.tiny_models import arithmetic_rows, build_tiny_model, write_rows

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("llama") / "model", "llama")


def write_task(folder: Path, model_uri: str, **adapter: Any) -> Path:
    rows = arithmetic_rows(2)
    task = {
        "population": "p",
        "generation": 0,
        "genome": "p-g0-0",
        "seed": 1,
        "baseModel": {"uri": model_uri},
        "dataset": {
            "train": write_rows(folder / "train.jsonl", rows).as_uri(),
            "eval": write_rows(folder / "eval.jsonl", rows).as_uri(),
        },
        "adapter": adapter,
        "training": {"samplesPerPrompt": 2, "maxSteps": 1, "maxNewTokens": 4, "evalPrompts": 1},
        "output": (folder / "out").as_uri(),
    }
    path = folder / "genome.json"
    path.write_text(json.dumps(task), encoding="utf-8")
    return path


def failure(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(str(path))
    return code, capsys.readouterr().err.strip().splitlines()[-1]


def test_a_model_folder_without_tokenizer_files(
    llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(contract.ENV_TERMINATION_LOG, str(tmp_path / "term"))
    folder = tmp_path / "no-tokenizer"
    folder.mkdir()
    for name in ("config.json", "generation_config.json", "model.safetensors"):
        (folder / name).write_bytes((llama / name).read_bytes())
    code, last = failure(write_task(tmp_path, folder.as_uri()), capsys)
    assert code == contract.EXIT_INPUT_ERROR
    assert not contract.retryable(code)
    assert last == (
        f"nora train: error: baseModel.uri: {folder} has no tokenizer (none of tokenizer.json, "
        "tokenizer.model, vocab.json, spiece.model, tokenizer.tiktoken); save the tokenizer into the model "
        "folder (tokenizer.save_pretrained)"
    )


def test_a_tokenizer_without_an_eos_token(
    llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(contract.ENV_TERMINATION_LOG, str(tmp_path / "term"))
    folder = tmp_path / "no-eos"
    folder.mkdir()
    for path in llama.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    config.pop("eos_token", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    code, last = failure(write_task(tmp_path, folder.as_uri()), capsys)
    assert code == contract.EXIT_INPUT_ERROR
    assert last.startswith(
        f"nora train: error: baseModel.uri: the tokenizer of {folder} is empty or has no EOS"
    )


def test_target_modules_that_match_nothing_list_the_linear_modules(
    llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(contract.ENV_TERMINATION_LOG, str(tmp_path / "term"))
    code, last = failure(write_task(tmp_path, llama.as_uri(), targetModules=["c_attn"]), capsys)
    assert code == contract.EXIT_INPUT_ERROR
    assert last == (
        "nora train: error: adapter.targetModules: c_attn matches no module of the base model; its Linear "
        "modules are: down_proj, gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj (or use all-linear)"
    )


def test_all_linear_beside_other_names_is_invalid_genome_json(
    llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(contract.ENV_TERMINATION_LOG, str(tmp_path / "term"))
    path = write_task(tmp_path, llama.as_uri(), targetModules=["all-linear", "q_proj"])
    code, last = failure(path, capsys)
    assert code == contract.EXIT_INPUT_ERROR
    assert "invalid genome.json: adapter.targetModules: all-linear stands alone" in last


def test_an_unreachable_hub_names_base_model_uri(tmp_path: Path) -> None:
    """The real process, offline with an empty cache: exit 2 and the field, not a raw ``OSError``."""
    path = write_task(tmp_path, "hf://nora-test/not-in-any-cache@main")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf-home"),
        contract.ENV_TERMINATION_LOG: str(tmp_path / "term"),
        contract.ENV_NUM_THREADS: "1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "nora.trainer", "--genome", str(path)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )
    assert result.returncode == contract.EXIT_INPUT_ERROR, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "nora train: error: baseModel.uri: cannot load the tokenizer of nora-test/not-in-any-cache: "
    )
    assert "that the hub is reachable and, for a gated model, that HF_TOKEN grants access" in last
    assert "OSError" not in last
    assert (tmp_path / "term").read_text(encoding="utf-8").strip() == last
