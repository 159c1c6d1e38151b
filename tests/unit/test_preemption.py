"""Preemption of a real ``nora train`` process on the toy model: SIGTERM mid-training, then a restart.

The first attempt gets SIGTERM once DPO training is logging steps: it saves a checkpoint under the output
prefix and exits 143. The second attempt of the same genome.json resumes from that step (its log says so
and it samples nothing) and ends with the spec's total number of steps.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nora.evolution import contract
from nora.toy.data import write_dataset
from nora.toy.model import build_toy_model
from tests.unit.test_trainer_genome import TINY_TRAINING, genome_json

pytestmark = pytest.mark.slow
MAX_STEPS = 60
COMMAND = (sys.executable, "-m", "nora", "train", "--genome")


def _wait_for(path: Path, pattern: str, process: subprocess.Popen[bytes], deadline_s: float) -> re.Match[str]:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        found = re.search(pattern, path.read_text(encoding="utf-8", errors="replace"))
        if found:
            return found
        assert process.poll() is None, path.read_text(encoding="utf-8", errors="replace")[-3000:]
        time.sleep(0.1)
    raise AssertionError(f"no {pattern!r} in {path} within {deadline_s}s")


def test_sigterm_mid_training_then_a_restart_resumes_and_keeps_the_total_steps(tmp_path: Path) -> None:
    toy = build_toy_model(tmp_path / "toy")
    data = write_dataset(tmp_path / "data", seed=0, n_train=32, n_eval=32)
    training = {**TINY_TRAINING, "maxSteps": MAX_STEPS}
    task = genome_json(tmp_path, toy, data, training=training)
    env = {**os.environ, contract.ENV_NUM_THREADS: "1", contract.ENV_TERMINATION_LOG: str(tmp_path / "term")}

    first_log = tmp_path / "first.log"
    with first_log.open("wb") as log:
        first = subprocess.Popen([*COMMAND, str(task)], stdout=log, stderr=subprocess.STDOUT, env=env)
    _wait_for(first_log, r"training: step \d+/60", first, deadline_s=600)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=300) == contract.EXIT_PREEMPTED
    text = first_log.read_text(encoding="utf-8")
    step = int(re.findall(r"checkpoint: step (\d+) saved", text)[-1])
    assert 0 < step < MAX_STEPS
    assert text.strip().splitlines()[-1] == (
        f"nora train: error: stopped by SIGTERM at training step {step}/{MAX_STEPS}; checkpoint saved"
    )
    assert "stopped by SIGTERM" in (tmp_path / "term").read_text(encoding="utf-8")
    assert not (tmp_path / "t-g0-0" / "metrics.json").exists()

    second = subprocess.run(
        [*COMMAND, str(task)], check=False, capture_output=True, text=True, env=env, timeout=900
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"resumed from step {step} of {MAX_STEPS}" in second.stderr
    assert "sampling[" not in second.stderr  # the pairs came from the checkpoint
    metrics = json.loads((tmp_path / "t-g0-0" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["training"]["steps"] == MAX_STEPS
    assert json.loads(second.stdout.strip().splitlines()[-1])["genome"] == "t-g0-0"
