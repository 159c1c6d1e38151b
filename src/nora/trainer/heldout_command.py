"""``nora test-score --task URI``: score a finished run's adapters on its test split (the test Job's command).

Reads the :class:`~nora.api.task.HeldOutTask` at a path, ``file://`` or ``s3://`` URI, scores each of its
adapters and their ensemble with :func:`nora.trainer.testscore.score_adapters` on ``dataset.test``, and
writes ``test.json`` (a :class:`~nora.api.task.HeldOutResult`) to ``output``. It follows the trainer's
contract (:mod:`nora.evolution.contract`): exit 0 with one JSON summary line on stdout; exit 2 for bad
input (never retried) and 1 otherwise, with one line ``nora test-score: error: <reason>`` last on stderr
and in the termination message file. ``$NORA_NUM_THREADS`` and ``$NORA_GENERATION_BATCH_SIZE`` apply.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback
from dataclasses import replace
from typing import TextIO

from pydantic import ValidationError

from nora.api.base import describe_validation_error
from nora.api.task import HeldOutResult, HeldOutTask
from nora.evolution import contract
from nora.evolution.genome_store import download_genome
from nora.storage import StoreError, open_uri
from nora.trainer.data import load_split, read_uri
from nora.trainer.entrypoint import INPUT_ERRORS, configure_runtime, one_line, write_termination_message
from nora.trainer.errors import TrainerInputError
from nora.trainer.irpo_config import BaseModelRef, IrpoConfig
from nora.trainer.testscore import score_adapters

ERROR_PREFIX = "nora test-score: error: "


def read_task(uri: str) -> HeldOutTask:
    """The validated task at ``uri``; one-line errors name the URI and each bad field."""
    try:
        return HeldOutTask.model_validate_json(read_uri(uri))
    except ValidationError as error:
        problems = describe_validation_error(error).problems
        raise TrainerInputError(f"{uri}: invalid test-score task: {'; '.join(problems)}") from None


def scoring_config(task: HeldOutTask) -> IrpoConfig:
    """Greedy decoding as fitness uses it: the task's prompt, answer pattern and token budget."""
    config = IrpoConfig(
        prompt_template=task.dataset.prompt_template,
        answer_pattern=task.dataset.answer_pattern,
        max_new_tokens=task.max_new_tokens,
    )
    batch = os.environ.get(contract.ENV_GENERATION_BATCH_SIZE)
    if not batch:
        return config
    if not batch.isdigit() or int(batch) < 1:
        raise TrainerInputError(
            f"{contract.ENV_GENERATION_BATCH_SIZE}: must be a positive integer (got {batch!r})"
        )
    return replace(config, generation_batch_size=int(batch))


def run_task(task: HeldOutTask) -> HeldOutResult:
    """Score the task's adapters on its test split and write ``test.json``; the result."""
    rows = load_split(str(task.dataset.test), "test")
    genomes = []
    for adapter in task.adapters:
        try:
            genomes.append(download_genome(*open_uri(adapter.uri)))
        except StoreError as error:
            raise TrainerInputError(f"adapters: genome {adapter.genome}: {error}") from None
    base = task.base_model
    score = score_adapters(
        BaseModelRef(uri=base.uri, trust_remote_code=base.trust_remote_code, dtype=base.dtype),
        genomes,
        rows,
        scoring_config(task),
        ensemble=task.ensemble or None,
    )
    result = HeldOutResult(
        accuracy=list(score.accuracy),
        ensemble=score.ensemble if task.ensemble else None,
        rows=score.rows,
        tokens=score.tokens,
    )
    store, key = open_uri(task.output)
    store.write_bytes(key, (json.dumps(result.to_json_dict(), indent=2, sort_keys=True) + "\n").encode())
    return result


def main(task_uri: str, stdout: TextIO | None = None) -> int:
    """Run the test-score task at ``task_uri``; the process exit code."""
    try:
        configure_runtime()
        with contextlib.redirect_stdout(sys.stderr):
            task = read_task(task_uri)
            result = run_task(task)
    except Exception as error:
        if os.environ.get(contract.ENV_DEBUG):
            traceback.print_exc(file=sys.stderr)
        message = f"{ERROR_PREFIX}{one_line(error)}"
        print(message, file=sys.stderr, flush=True)
        write_termination_message(message)
        return contract.EXIT_INPUT_ERROR if isinstance(error, INPUT_ERRORS) else contract.EXIT_FAILED
    summary = {"population": task.population, "output": task.output, **result.to_json_dict()}
    print(json.dumps(summary, sort_keys=True), file=stdout or sys.stdout, flush=True)
    return contract.EXIT_SUCCEEDED
