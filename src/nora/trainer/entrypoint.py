"""The genome Job's contract: ``nora train --genome URI``.

Reads ``genome.json`` from a path, ``file://`` or ``s3://`` URI, runs :func:`nora.trainer.pipeline.run_job`
and reports:

- success: exit 0; stdout ends with ONE JSON line ``{"genome", "fitness", "metric", "metrics", "adapter",
  "samples", "durations"}`` (anything libraries print goes to stderr while the job runs);
- SIGTERM: a checkpoint when training is under way (:mod:`nora.trainer.checkpoint`), then exit 143;
- the store unreachable (or failing with 5xx) after botocore's retries: exit 75, not the genome's fault;
- failure: exit 2 for bad input (genome.json, data, model, adapter) and 1 otherwise, with ONE line
  ``nora train: error: <reason>`` as the last line on stderr, also written to the Kubernetes termination
  message file: ``$NORA_TERMINATION_LOG`` when set, else ``/dev/termination-log`` when it is writable.

Progress (one line per phase and per logging step, with rates) goes to stderr through the
``nora.trainer`` logger. ``$NORA_NUM_THREADS`` sets torch's CPU thread count (default: torch's own);
``$NORA_GENERATION_BATCH_SIZE`` caps the sequences per ``generate`` call (default 512: lower it when
sampling a large model runs out of GPU memory).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

import torch
from pydantic import ValidationError

from nora.api.base import ApiValidationError, describe_validation_error
from nora.api.task import GenomeTask
from nora.evolution import contract
from nora.genetics import GeneticsError
from nora.trainer import model_cache
from nora.trainer.checkpoint import PreemptionError, StopWatch
from nora.trainer.data import read_uri
from nora.trainer.errors import TrainerError, TrainerInputError
from nora.trainer.irpo_config import TrainerJob, job_from_task
from nora.trainer.pipeline import RunResult, run_job

INPUT_ERRORS: tuple[type[Exception], ...] = (
    TrainerInputError,
    GeneticsError,
    ApiValidationError,
    ValidationError,
)
"""Bad input (exit 2, never retried); a pydantic ValidationError is one too (e.g. a gene out of range)."""
log = logging.getLogger("nora.trainer")


def read_task(uri: str) -> GenomeTask:
    """The validated genome.json at ``uri``; one-line errors name the URI and each bad field."""
    data = read_uri(uri)
    try:
        return GenomeTask.model_validate_json(data)
    except ValidationError as error:
        problems = describe_validation_error(error).problems
        raise TrainerInputError(f"{uri}: invalid genome.json: {'; '.join(problems)}") from None


def load_job(uri: str) -> TrainerJob:
    """The :class:`TrainerJob` of the genome.json at ``uri`` (``$NORA_GENERATION_BATCH_SIZE`` applied)."""
    job = job_from_task(read_task(uri))
    batch = os.environ.get(contract.ENV_GENERATION_BATCH_SIZE)
    if not batch:
        return job
    if not batch.isdigit() or int(batch) < 1:
        raise TrainerInputError(
            f"{contract.ENV_GENERATION_BATCH_SIZE}: must be a positive integer (got {batch!r})"
        )
    return replace(job, irpo=replace(job.irpo, generation_batch_size=int(batch)))


def summary(result: RunResult) -> dict[str, Any]:
    """The final stdout line of a successful run."""
    return {
        "genome": result.genome,
        "fitness": result.fitness,
        "metric": result.metrics["fitness_metric"],
        "goal": result.metrics["fitness_goal"],
        "accuracy": result.metrics["accuracy"],
        "irpo_loss": result.metrics["irpo_loss"],
        "metrics": result.metrics_uri,
        "adapter": result.adapter_uri,
        "samples": result.samples_uri,
        "durations": result.metrics["durations"],
    }


def one_line(error: BaseException) -> str:
    """``error`` as a single line (the reason, never a traceback)."""
    text = " ".join(str(error).split()) or type(error).__name__
    if not isinstance(error, TrainerError | GeneticsError | ApiValidationError | PreemptionError):
        text = f"{type(error).__name__}: {text}"
    return text


def write_termination_message(message: str) -> None:
    """Write ``message`` where Kubernetes reads the termination message, when that is possible."""
    override = os.environ.get(contract.ENV_TERMINATION_LOG)
    path = Path(override) if override else Path(contract.TERMINATION_LOG)
    if not override and not (path.exists() and os.access(path, os.W_OK)):
        return
    with contextlib.suppress(OSError):
        path.write_text(message + "\n", encoding="utf-8")


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (test runners swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            print(self.format(record), file=sys.stderr, flush=True)


def configure_runtime() -> None:
    """Progress logging to stderr, quiet libraries, and ``$NORA_NUM_THREADS``."""
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("nora train %(asctime)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    import datasets
    import transformers

    hf_logging: Any = transformers.logging
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    threads = os.environ.get(contract.ENV_NUM_THREADS)
    if threads:
        if not threads.isdigit() or int(threads) < 1:
            raise TrainerInputError(
                f"{contract.ENV_NUM_THREADS}: must be a positive integer (got {threads!r})"
            )
        torch.set_num_threads(int(threads))


def _exit_code(error: BaseException) -> int:
    if isinstance(error, PreemptionError):
        return contract.EXIT_PREEMPTED
    if contract.transient_failure(error):
        return contract.EXIT_TRANSIENT
    return contract.EXIT_INPUT_ERROR if isinstance(error, INPUT_ERRORS) else contract.EXIT_FAILED


def main(genome_uri: str, stdout: TextIO | None = None) -> int:
    """Run the genome at ``genome_uri`` under the job contract; the process exit code."""
    out = stdout or sys.stdout
    try:
        configure_runtime()
        with contextlib.redirect_stdout(sys.stderr), StopWatch.installed() as watch:
            result = run_job(load_job(genome_uri), watch=watch)
    except (Exception, PreemptionError) as error:
        if os.environ.get(contract.ENV_DEBUG):
            traceback.print_exc(file=sys.stderr)
        message = f"{contract.ERROR_PREFIX}{one_line(error)}"
        print(message, file=sys.stderr, flush=True)
        write_termination_message(message)
        return _exit_code(error)
    print(contract.summary_line(summary(result)), file=out, flush=True)
    return contract.EXIT_SUCCEEDED


def fetch_main(uri: str, directory: Path, stdout: TextIO | None = None) -> int:
    """Fetch ``uri`` into the model cache ``directory`` (once); print the model's folder; the exit code."""
    try:
        configure_runtime()
        folder = model_cache.cached_model(uri, directory, model_cache.fetcher(uri))
    except Exception as error:
        message = f"nora fetch-model: error: {one_line(error)}"
        print(message, file=sys.stderr, flush=True)
        write_termination_message(message)
        return contract.EXIT_INPUT_ERROR if isinstance(error, INPUT_ERRORS) else contract.EXIT_FAILED
    print(folder, file=stdout or sys.stdout, flush=True)
    return contract.EXIT_SUCCEEDED
