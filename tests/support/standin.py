"""The one stand-in for ``nora train``, for tests of the drivers' mechanics (never of training itself).

It honours the trainer's contract (:mod:`nora.evolution.contract`): it reads ``genome.json`` from the
task URI (a path, ``file://`` or ``s3://``), writes a real adapter (the starting one unchanged, the
projection of a ``cmaes`` point record, or a fresh one from the genome's seed) and ``metrics.json`` to
the task's output, and prints the summary line. Its fitness is a deterministic function of the adapter's
bytes, so bred children score differently from their parents and a re-run scores the same. Genomes
named in ``fail`` (or ``$NORA_STANDIN_FAIL``) fail: exit 1 with a termination message.
``$NORA_STANDIN_HOLD`` (``genome=path,...``) holds a genome until ``path`` exists, so a test can act
while that genome's generation is unfinished. ``$NORA_STANDIN_UNREACHABLE`` (``genome=path,...``) points
that genome's S3 client at a closed port until ``path`` exists: botocore gives up after its retries and the
stand-in exits :data:`~nora.evolution.contract.EXIT_TRANSIENT`, as the trainer does.

It also stands in for ``nora test-score`` (:func:`score_test_split`, ``--task``): it reads the task and the
test split's rows, and each adapter "answers" a row correctly when a hash of (its bytes, the row) falls
below its :func:`fitness_of`, else with a wrong answer of its own; the ensemble is the real majority vote
over those answers, and ``test.json`` is written where the task says.

In-process drivers call :func:`train` and :func:`score_test_split`; Pods of the process kubelet run
:func:`standin_command` (and :func:`standin_test_command`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from nora.api.task import GenomeTask, HeldOutResult, HeldOutTask
from nora.evolution import contract
from nora.evolution.genome_store import download_genome, upload_genome
from nora.evolution.strategies.points import POINT_FILE, PointRecord, module_points
from nora.genetics import Genome, init_genome, make_generator
from nora.genetics.ensemble import ensemble_answers, exact_match
from nora.genetics.projection import project_genome
from nora.storage import open_uri

FAIL_ENV = "NORA_STANDIN_FAIL"
HOLD_ENV = "NORA_STANDIN_HOLD"
UNREACHABLE_ENV = "NORA_STANDIN_UNREACHABLE"
CLOSED_ENDPOINT = "http://127.0.0.1:9"
"""The discard port, closed on the test machine: a connection to it is refused."""
HOLD_SECONDS = 600
WIDTH = 8
REPO = Path(__file__).resolve().parents[2]


class StandinError(RuntimeError):
    """The stand-in was told to fail for this genome."""


def _weights(genome: Genome) -> bytes:
    return b"".join(m.a.numpy().tobytes() + m.b.numpy().tobytes() for _, m in sorted(genome.modules.items()))


def _unit(data: bytes) -> float:
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big") / 2**64


def fitness_of(genome: Genome) -> float:
    """A number in [0, 1) that depends only on the adapter's weights."""
    return _unit(_weights(genome))


def _answers(genome: Genome, gold: Sequence[str], member: int) -> list[str | None]:
    weights, skill = _weights(genome), fitness_of(genome)
    return [
        answer if _unit(weights + f"/{row}".encode()) < skill else f"wrong-{member}"
        for row, answer in enumerate(gold)
    ]


def score_test_split(task_uri: str) -> dict[str, Any]:
    """Do what ``nora test-score`` does to the store for the task at ``task_uri``; its summary."""
    store, key = open_uri(task_uri)
    task = HeldOutTask.model_validate_json(store.read_bytes(key))
    rows_store, rows_key = open_uri(str(task.dataset.test))
    lines = rows_store.read_bytes(rows_key).decode().splitlines()
    gold = [str(json.loads(line)["answer"]) for line in lines if line.strip()]
    members = [_answers(download_genome(*open_uri(a.uri)), gold, i) for i, a in enumerate(task.adapters)]
    votes = ensemble_answers([members[i] for i in task.ensemble]) if task.ensemble else None
    result = HeldOutResult(
        accuracy=[exact_match(answers, gold) for answers in members],
        ensemble=exact_match(votes, gold) if votes is not None else None,
        rows=len(gold),
    )
    out_store, out = open_uri(task.output)
    out_store.write_bytes(out, json.dumps(result.to_json_dict()).encode())
    return {"population": task.population, **result.to_json_dict()}


def _hold(path: Path) -> None:
    deadline = time.monotonic() + HOLD_SECONDS
    while not path.exists():
        if time.monotonic() > deadline:
            raise StandinError(f"standin: {path} did not appear within {HOLD_SECONDS}s")
        time.sleep(0.2)


def train(
    task_uri: str, fail: Collection[str] = (), hold: Mapping[str, Path] | None = None
) -> dict[str, Any]:
    """Do what ``nora train`` does to the store for the task at ``task_uri``; its summary."""
    store, key = open_uri(task_uri)
    task = GenomeTask.model_validate_json(store.read_bytes(key))
    if hold and task.genome in hold:
        _hold(hold[task.genome])
    if task.genome in fail:
        raise StandinError(f"standin: {task.genome} always fails")
    shapes = {f"model.layers.0.self_attn.{m}": (WIDTH, WIDTH) for m in task.adapter.target_modules}
    start_store, start = open_uri(task.adapter.uri) if task.adapter.uri else (store, "")
    if start and start_store.exists(f"{start}/{POINT_FILE}"):
        record = PointRecord.loads(start_store.read_bytes(f"{start}/{POINT_FILE}"))
        genome = project_genome(module_points(record, shapes), shapes, record.projection)
    elif start:
        genome = download_genome(start_store, start)
    else:
        genome = init_genome(
            shapes, task.adapter.rank, task.adapter.alpha, make_generator(task.seed), b_std=0.1
        )
    out_store, out = open_uri(task.output)
    upload_genome(out_store, f"{out}/{contract.ADAPTER_DIR}", genome)
    fitness = fitness_of(genome)
    metrics = {"fitness": fitness, "accuracy": fitness, "irpo_loss": 1 - fitness}
    out_store.write_bytes(f"{out}/{contract.METRICS_FILE}", json.dumps(metrics).encode())
    return {"genome": task.genome, "fitness": fitness}


def _pairs(variable: str) -> dict[str, Path]:
    pairs = [item.partition("=") for item in os.environ.get(variable, "").split(",") if item]
    return {genome: Path(path) for genome, _, path in pairs}


def _cut_off(task_uri: str) -> None:
    """Point the S3 client at a closed port while the task's genome is listed as unreachable."""
    for genome, path in _pairs(UNREACHABLE_ENV).items():
        if f"/{genome}/" in task_uri and not path.exists():
            os.environ["AWS_ENDPOINT_URL"] = os.environ["AWS_ENDPOINT_URL_S3"] = CLOSED_ENDPOINT


def _fail(reason: str, code: int) -> int:
    message = f"{contract.ERROR_PREFIX}{reason}"
    print(message, file=sys.stderr)
    path = os.environ.get(contract.ENV_TERMINATION_LOG, contract.TERMINATION_LOG)
    Path(path).write_text(message)
    return code


def main(argv: Sequence[str]) -> int:
    """The stand-in as a process: ``standin.py --genome URI`` or ``--task URI``; the exit code."""
    fail = [name for name in os.environ.get(FAIL_ENV, "").split(",") if name]
    _cut_off(argv[-1])
    try:
        summary = score_test_split(argv[-1]) if "--task" in argv else train(argv[-1], fail, _pairs(HOLD_ENV))
    except StandinError as error:
        return _fail(str(error), contract.EXIT_FAILED)
    except Exception as error:
        if not contract.transient_failure(error):
            raise
        return _fail(f"{type(error).__name__}: {error}", contract.EXIT_TRANSIENT)
    print(json.dumps(summary))
    return contract.EXIT_SUCCEEDED


def standin_command(folder: Path) -> list[str]:
    """The stand-in's command line (before the task URI), as ``NORA_TRAIN_COMMAND`` takes it."""
    script = folder / "standin_trainer.py"
    script.write_text(
        f"import sys\nsys.path.insert(0, {str(REPO)!r})\n"
        "from tests.support.standin import main\nsys.exit(main(sys.argv))\n"
    )
    return [sys.executable, str(script), "--genome"]


def standin_test_command(folder: Path) -> list[str]:
    """The stand-in's test-score command (before the task URI), as ``NORA_TEST_SCORE_COMMAND`` takes it."""
    return [*standin_command(folder)[:-1], "--task"]
