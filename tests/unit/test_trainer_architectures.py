"""Real architectures through the real trainer: tiny random Llama, Mistral, Qwen2 (ChatML), Phi-3, Gemma-2
and Qwen2-MoE, each with a BPE tokenizer trained in the test (``tests.support.tiny_models``), no downloads.

Each trains a genome with ``nora train``'s entrypoint on a tiny budget (2 prompts x 2 samples, 2 DPO steps),
and the adapter it writes loads in PEFT onto a fresh copy of the base model with the same weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from nora.genetics import load_genome
from nora.trainer.entrypoint import main
from tests.support.tiny_models import ARCHITECTURES, arithmetic_rows, build_tiny_model, write_rows

pytestmark = pytest.mark.slow

TINY_TRAINING = {
    "samplesPerPrompt": 2,
    "pairsPerPrompt": 1,
    "maxSteps": 2,
    "batchSize": 2,
    "maxPrompts": 2,
    "maxNewTokens": 6,
    "evalPrompts": 2,
    "learningRate": 1e-3,
}
ATTENTION = ["k_proj", "o_proj", "q_proj", "v_proj"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("data")
    return write_rows(folder / "train.jsonl", arithmetic_rows(4)), write_rows(
        folder / "eval.jsonl", arithmetic_rows(2, offset=10)
    )


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {name: build_tiny_model(root / name, name) for name in ARCHITECTURES}


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NORA_NUM_THREADS", "1")
    monkeypatch.setenv("NORA_TERMINATION_LOG", str(tmp_path / "termination-log"))


def genome_json(folder: Path, model: Path, data: tuple[Path, Path], **adapter: Any) -> Path:
    task = {
        "population": "arch",
        "generation": 0,
        "genome": "arch-g0-0",
        "seed": 3,
        "baseModel": {"uri": model.as_uri(), "dtype": "float32"},
        "dataset": {"train": data[0].as_uri(), "eval": data[1].as_uri()},
        "adapter": {"uri": None, "rank": 2, "alpha": 4.0, **adapter},
        "training": TINY_TRAINING,
        "output": (folder / "out").as_uri(),
    }
    path = folder / "genome.json"
    path.write_text(json.dumps(task), encoding="utf-8")
    return path


def train(
    folder: Path, model: Path, data: tuple[Path, Path], capsys: pytest.CaptureFixture[str], **adapter: Any
) -> tuple[int, str]:
    code = main(str(genome_json(folder, model, data, **adapter)))
    return code, capsys.readouterr().err.strip().splitlines()[-1]


def assert_loads_in_peft(model_dir: Path, adapter: Path) -> None:
    """The adapter's every tensor lands in PEFT's model, and PEFT adapts exactly the adapter's modules."""
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(adapter))
    loaded = dict(model.named_parameters())
    weights = load_file(adapter / "adapter_model.safetensors")
    for key, value in weights.items():
        assert torch.equal(loaded[key.replace(".weight", ".default.weight")], value), key
    adapted = {name.split(".lora_A")[0] for name in loaded if ".lora_A." in name}
    assert adapted == {key.split(".lora_A")[0] for key in weights if ".lora_A." in key}


EXPECTED_DEFAULT = dict.fromkeys(ARCHITECTURES, ATTENTION) | {"phi3": ["o_proj", "qkv_proj"]}


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_each_architecture_trains_with_the_defaults_and_its_adapter_loads_in_peft(
    architecture: str,
    model_dirs: dict[str, Path],
    data: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, last = train(tmp_path, model_dirs[architecture], data, capsys)
    assert code == 0, last
    out = tmp_path / "out"
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["training"]["steps"] == TINY_TRAINING["maxSteps"]
    genome = load_genome(out / "adapter")
    assert sorted({name.rsplit(".", 1)[-1] for name in genome.modules}) == EXPECTED_DEFAULT[architecture]
    assert len(genome.modules) == 2 * len(EXPECTED_DEFAULT[architecture])  # two layers
    assert any(float(m.b.abs().max()) > 0 for m in genome.modules.values())  # trained away from zero B
    config = json.loads((out / "adapter" / "adapter_config.json").read_text(encoding="utf-8"))
    assert config["base_model_name_or_path"] == str(model_dirs[architecture])
    assert_loads_in_peft(model_dirs[architecture], out / "adapter")


@pytest.mark.parametrize("architecture", ["phi3", "gemma2"])
def test_all_linear_adapts_every_linear_module_but_lm_head(
    architecture: str,
    model_dirs: dict[str, Path],
    data: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, last = train(tmp_path, model_dirs[architecture], data, capsys, targetModules=["all-linear"])
    assert code == 0, last
    base = AutoModelForCausalLM.from_pretrained(model_dirs[architecture])
    linear = {n for n, m in base.named_modules() if isinstance(m, torch.nn.Linear)} - {"lm_head"}
    genome = load_genome(tmp_path / "out" / "adapter")
    assert set(genome.modules) == linear
    assert_loads_in_peft(model_dirs[architecture], tmp_path / "out" / "adapter")


def test_the_qwen2_genome_went_through_its_chatml_template(
    model_dirs: dict[str, Path], data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train(tmp_path, model_dirs["qwen2"], data, capsys)[0] == 0
    pairs = [json.loads(line) for line in (tmp_path / "out" / "pairs.jsonl").read_text().splitlines()]
    assert pairs  # random models answer wrong: the gold solution is paired with sampled losers
    assert all(pair["chosen_is_gold"] for pair in pairs)


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        (["gate_proj", "up_proj", "down_proj"], "reaches only model.layers.0.mlp.shared_expert.gate_proj"),
        (["all-linear"], "all-linear would leave this mixture-of-experts model's routed experts unadapted"),
    ],
)
def test_moe_routed_experts_are_refused_by_name(
    targets: list[str],
    message: str,
    model_dirs: dict[str, Path],
    data: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, last = train(tmp_path, model_dirs["qwen2_moe"], data, capsys, targetModules=targets)
    assert code == 2
    assert last.startswith("nora train: error: adapter.targetModules: ")
    assert message in last
    assert "model.layers.*.mlp.experts.gate_up_proj" in last
    assert "target_parameters is not supported" in last
    assert not (tmp_path / "out").exists()


def test_the_shared_expert_named_explicitly_trains(
    model_dirs: dict[str, Path], data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, last = train(
        tmp_path, model_dirs["qwen2_moe"], data, capsys, targetModules=["q_proj", "shared_expert.down_proj"]
    )
    assert code == 0, last
    genome = load_genome(tmp_path / "out" / "adapter")
    assert sorted(genome.modules) == [
        f"model.layers.{layer}.{module}"
        for layer in (0, 1)
        for module in ("mlp.shared_expert.down_proj", "self_attn.q_proj")
    ]
    assert_loads_in_peft(model_dirs["qwen2_moe"], tmp_path / "out" / "adapter")
