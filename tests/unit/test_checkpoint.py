"""Checkpoints without pickle: state files, SIGTERM handling, and an exact resume of DPO training."""

from __future__ import annotations

import json
import os
import random
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase, TrainerCallback

from nora.genetics import Genome, LoraModule, init_genome, make_generator
from nora.toy.data import write_dataset
from nora.trainer import checkpoint, models, state_files
from nora.trainer.entrypoint import main
from nora.trainer.evaluate import PairLogps
from nora.trainer.irpo_config import BaseModelRef, IrpoConfig
from nora.trainer.irpo_trainer import Pair, train_dpo
from nora.trainer.targets import resolve_targets
from tests.unit.test_trainer_models import build_tiny_llama

PAIRS = [
    Pair(i, f"Question: What is {i} + {i}?\nAnswer: ", f"{i}+{i}={2 * i}\n#### {2 * i}", f"#### {i}", True)
    for i in range(1, 7)
]
CONFIG = IrpoConfig(max_steps=6, batch_size=2, learning_rate=5e-3, seed=11)  # 3 steps per epoch, 2 epochs


def test_optimizer_like_states_round_trip_through_safetensors_and_json() -> None:
    state = {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(2, 3)}, 1: {}},
        "param_groups": [{"betas": (0.9, 0.999), "lr": 1e-3, "params": [0, 1], "foreach": None}],
    }
    tensor_bytes, json_bytes = state_files.dump(state)
    assert b"\x80" not in json_bytes[:2]  # JSON, not a pickle stream
    back = state_files.undump(tensor_bytes, json_bytes)
    assert list(back["state"]) == [0, 1]  # int keys survive
    assert torch.equal(back["state"][0]["exp_avg"], state["state"][0]["exp_avg"])
    assert back["param_groups"][0]["betas"] == (0.9, 0.999)
    with pytest.raises(TypeError, match="without pickle"):
        state_files.dump({"x": object()})


def test_rng_states_restore_every_generator() -> None:
    saved = state_files.undump(*state_files.dump(state_files.capture_rng()))
    first = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    state_files.restore_rng(saved)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == first


def test_sigterm_raises_at_once_outside_training_and_is_deferred_inside() -> None:
    watch = checkpoint.StopWatch()
    with pytest.raises(checkpoint.PreemptionError, match="before training"):
        watch.handle(signal.SIGTERM, None)
    before = signal.getsignal(signal.SIGTERM)
    with checkpoint.StopWatch.installed() as deferred, deferred.deferring():
        os.kill(os.getpid(), signal.SIGTERM)
        assert deferred.requested
    assert signal.getsignal(signal.SIGTERM) == before


class _StopAt(TrainerCallback):  # type: ignore[misc]
    """Plays SIGTERM arriving during step ``step``."""

    def __init__(self, watch: checkpoint.StopWatch, step: int) -> None:
        self.watch, self.step = watch, step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.step:
            self.watch.requested = True


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, PreTrainedTokenizerBase, Genome]:
    folder = build_tiny_llama(tmp_path_factory.mktemp("tiny"))
    tokenizer = models.load_tokenizer(
        models.ModelSource(str(folder), None, True), BaseModelRef(uri=str(folder))
    )
    base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    shapes = resolve_targets(base, ("q_proj", "v_proj")).shapes
    start = init_genome(shapes, 4, 8.0, make_generator(3), config={"target_modules": ["q_proj", "v_proj"]})
    return folder, tokenizer, start


def _train(tiny: tuple[Path, PreTrainedTokenizerBase, Genome], scratch: Path, **options: Any) -> Genome:
    folder, tokenizer, start = tiny
    base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model = models.attach_genome(base, start, 0.0, scratch)
    stats = train_dpo(
        model, tokenizer, PAIRS, CONFIG, scratch, trainer_class=checkpoint.ResumableDPOTrainer, **options
    )
    assert stats.steps == (6 if "resume_from" in options or not options else 4)
    return models.extract_genome(model, start)


def test_a_run_stopped_at_step_4_and_resumed_ends_exactly_like_an_uninterrupted_run(
    tiny: tuple[Path, PreTrainedTokenizerBase, Genome], tmp_path: Path
) -> None:
    whole = _train(tiny, tmp_path / "whole")
    store = checkpoint.CheckpointStore((tmp_path / "out").as_uri(), "task-1")
    phases = checkpoint.Phases(
        PAIRS, PAIRS[:2], {"pairs": {"pairs": 6}}, PairLogps(torch.ones(2), torch.zeros(2), 1.5, 7)
    )
    watch = checkpoint.StopWatch()
    callbacks = [_StopAt(watch, 4), checkpoint.CheckpointOnStop(watch, lambda shot: store.save(shot, phases))]
    stopped = _train(tiny, tmp_path / "first", callbacks=callbacks)
    assert sorted(p.name for p in (tmp_path / "out" / "checkpoint" / "step-4").iterdir()) == [
        "adapter.safetensors", "optimizer.json", "optimizer.safetensors", "phases.json", "phases.safetensors",
        "rng.json", "rng.safetensors", "scheduler.json", "trainer_state.json",
    ]  # fmt: skip
    assert not any(p.suffix in (".pt", ".pth", ".bin") for p in (tmp_path / "out").rglob("*"))
    assert checkpoint.CheckpointStore(store.output, "task-2").latest(tmp_path / "other") is None
    resume = store.latest(tmp_path / "second")
    assert resume is not None
    assert (resume.step, resume.phases.train_pairs, resume.phases.stats) == (4, PAIRS, phases.stats)
    assert resume.phases.reference is not None
    assert torch.equal(resume.phases.reference.chosen, torch.ones(2))
    resumed = _train(tiny, tmp_path / "second", resume_from=resume.folder)
    for name, module in whole.items():
        assert not torch.equal(module.b, stopped.modules[name].b)  # steps 5 and 6 changed it
        _assert_close(module, resumed.modules[name])


def _assert_close(expected: LoraModule, actual: LoraModule) -> None:
    torch.testing.assert_close(actual.a, expected.a, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(actual.b, expected.b, rtol=1e-5, atol=1e-6)


def test_sigterm_before_training_exits_143_at_once_and_names_the_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def sigterm_while_loading(uri: str) -> models.ModelSource:
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("the SIGTERM handler did not stop the run")

    monkeypatch.setattr(models, "resolve_model", sigterm_while_loading)
    monkeypatch.setenv("NORA_TERMINATION_LOG", str(tmp_path / "termination"))
    train, eval_ = write_dataset(tmp_path / "data", seed=0, n_train=4, n_eval=4)
    task = {
        "population": "p",
        "generation": 0,
        "genome": "p-g0-0",
        "seed": 1,
        "baseModel": {"uri": "s3://unused/model/"},
        "dataset": {"train": train.as_uri(), "eval": eval_.as_uri()},
        "output": (tmp_path / "out").as_uri(),
    }
    (tmp_path / "genome.json").write_text(json.dumps(task), encoding="utf-8")
    before = signal.getsignal(signal.SIGTERM)
    assert main(str(tmp_path / "genome.json")) == 143
    expected = "nora train: error: stopped by SIGTERM before training was under way; nothing to checkpoint"
    assert capsys.readouterr().err.strip().splitlines()[-1] == expected
    assert (tmp_path / "termination").read_text(encoding="utf-8").strip() == expected
    assert signal.getsignal(signal.SIGTERM) == before
    assert not (tmp_path / "out").exists()
