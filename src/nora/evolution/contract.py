"""The trainer process's contract with whatever runs it (the operator's Job builder, the local executor).

``nora train --genome URI`` reads its task from ``URI`` and ends in one of three ways:

- exit :data:`EXIT_SUCCEEDED`: its outputs are in the store (``metrics.json`` written last, the one
  source of fitness for both drivers) and the last stdout line is the JSON :func:`summary_line`;
- exit :data:`EXIT_INPUT_ERROR`: the input is wrong (task, data, model, adapter): running it again
  cannot help, so no driver retries it;
- exit :data:`EXIT_PREEMPTED`: stopped by SIGTERM; a training run saved a checkpoint first, and the
  next attempt of the same genome resumes from it;
- exit :data:`EXIT_TRANSIENT`: the store was unreachable or failing (:func:`transient_failure`); the
  genome is not at fault, so the attempt is run again without counting against its retries;
- any other exit code: a failure that a retry may cure.

On failure the last stderr line is ``ERROR_PREFIX + reason``, also written to the termination message
file (:data:`ENV_TERMINATION_LOG` when set, else Kubernetes' :data:`TERMINATION_LOG`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

EXIT_SUCCEEDED = 0
EXIT_FAILED = 1
EXIT_INPUT_ERROR = 2
EXIT_PREEMPTED = 143
"""Stopped by SIGTERM (preemption, Kueue suspension, node drain) after saving a checkpoint when training."""
EXIT_TRANSIENT = 75
"""``EX_TEMPFAIL``: the store could not be reached (or kept failing) after botocore's own retries."""
TRANSIENT_STORE_ERRORS = frozenset(
    {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError"}
)
"""botocore's errors for a store that cannot be reached (by class name: no botocore import here)."""

ENV_POPULATION = "NORA_POPULATION"
ENV_GENERATION = "NORA_GENERATION"
ENV_GENOME = "NORA_GENOME"
ENV_NUM_THREADS = "NORA_NUM_THREADS"
"""torch's CPU thread count in the trainer (default: torch's own)."""
ENV_GENERATION_BATCH_SIZE = "NORA_GENERATION_BATCH_SIZE"
"""The most sequences per ``generate`` call (lower it when sampling runs out of GPU memory)."""
ENV_TERMINATION_LOG = "NORA_TERMINATION_LOG"
ENV_DEBUG = "NORA_DEBUG"
"""When set, a failure also prints its traceback to stderr."""
ENV_MODEL_CACHE = "NORA_MODEL_CACHE"
"""The folder of fetched base models (``<folder>/<key of the URI>/``): a read-only volume in a genome Job,
the shared ``$NORA_CACHE_DIR/models`` of local workers when unset."""
TERMINATION_LOG = "/dev/termination-log"
ERROR_PREFIX = "nora train: error: "

METRICS_FILE = "metrics.json"
ADAPTER_DIR = "adapter"
SAMPLES_FILE = "samples.jsonl"
PAIRS_FILE = "pairs.jsonl"
SUMMARY_KEYS = (
    "genome",
    "fitness",
    "metric",
    "goal",
    "accuracy",
    "irpo_loss",
    "metrics",
    "adapter",
    "samples",
    "durations",
)
"""The keys of the success summary line (``metrics``, ``adapter`` and ``samples`` are URIs)."""


def summary_line(summary: Mapping[str, Any]) -> str:
    """The one JSON line a successful trainer prints last on stdout."""
    missing = [key for key in SUMMARY_KEYS if key not in summary]
    if missing:
        raise ValueError(f"trainer summary lacks {', '.join(missing)}")
    return json.dumps({key: summary[key] for key in SUMMARY_KEYS}, sort_keys=True)


def parse_summary_line(line: str) -> dict[str, Any] | None:
    """The summary in ``line``, or ``None`` when it is not one."""
    if not line.startswith("{"):
        return None
    try:
        data = json.loads(line)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) and "fitness" in data else None


def retryable(exit_code: int) -> bool:
    """Whether a failed attempt may succeed if run again (never for bad input)."""
    return exit_code not in (EXIT_SUCCEEDED, EXIT_INPUT_ERROR)


def transient_failure(error: BaseException) -> bool:
    """Whether ``error`` (or its cause) says the store was unreachable or failing, not that the genome or
    its input is wrong: a botocore connection error or timeout, or a 5xx reply after botocore's retries."""
    current: BaseException | None = error
    while current is not None:
        if {kind.__name__ for kind in type(current).__mro__} & TRANSIENT_STORE_ERRORS:
            return True
        response = getattr(current, "response", None)
        meta = response.get("ResponseMetadata") if isinstance(response, dict) else None
        status = meta.get("HTTPStatusCode") if isinstance(meta, dict) else None
        if isinstance(status, int) and status >= 500:
            return True
        current = current.__cause__
    return False


def finite_number(value: Any) -> float | None:
    """``value`` as a float when it is a finite real number (not a bool), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None
