"""Operator settings, read from ``NORA_*`` environment variables (one prefix, documented here).

=============================  ===========================================================  ==========
Variable                       Meaning                                                      Default
=============================  ===========================================================  ==========
NORA_NAMESPACES                comma-separated namespaces to serve; empty = cluster-wide    (empty)
NORA_PEERING                   kopf peering object name; set it when running >1 replica     (standalone)
NORA_PRIORITY                  peering priority (distinct per replica); random if unset     (random)
NORA_PEERING_LIFETIME_SECONDS  a replica that stops renewing its peering record is gone     60
                               after this long; the next replica then takes over
NORA_METRICS_ADDRESS           address of the Prometheus ``/metrics`` server                0.0.0.0
NORA_METRICS_PORT              its port; 0 disables it                                      8080
NORA_LIVENESS_ENDPOINT         kopf's liveness endpoint URL; empty disables it              http://0.0.0.0:8081/healthz
NORA_TRAIN_COMMAND             the genome container's command before the task URI (JSON     python -m nora
                               list or shell words)                                         train --genome
NORA_TEST_SCORE_COMMAND        the test-score Job's command before the task URI (JSON list   python -m nora
                               or shell words; see ``spec.dataset.test``)                   test-score --task
NORA_JOB_TTL_SECONDS           ``ttlSecondsAfterFinished`` of genome Jobs                   3600
NORA_RESYNC_SECONDS            reconcile every Population at least this often              30
NORA_MIN_INTERVAL_SECONDS      pause between two passes over one Population                 0.2
NORA_API_WORKERS               threads creating Jobs and writing tasks in parallel          16
NORA_RECONCILE_WORKERS         Populations reconciled at the same time                      4
NORA_BREEDING_WORKERS          threads breeding offspring in the breeding process           2
NORA_S3_ENDPOINT               S3 endpoint when ``spec.storage.endpoint`` is unset          (AWS)
NORA_S3_REGION                 S3 region when ``spec.storage.region`` is unset              (unset)
NORA_AMBIENT_CREDENTIALS_      comma-separated namespaces whose Populations may omit        (none)
NAMESPACES                     ``spec.storage.secretRef`` and use the operator's own AWS
                               identity (IRSA, workload identity); elsewhere a Secret is
                               required
NORA_S3_ENDPOINT_ALLOWLIST     comma-separated ``host[:port]`` a ``spec.storage.endpoint``   (any)
                               may name (the operator signs requests to it)
=============================  ===========================================================  ==========
"""

from __future__ import annotations

import json
import os
import random
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

PREFIX = "NORA_"
DEFAULT_TRAIN_COMMAND = ("python", "-m", "nora", "train", "--genome")
DEFAULT_TEST_SCORE_COMMAND = ("python", "-m", "nora", "test-score", "--task")
T = TypeVar("T")


class SettingsError(ValueError):
    """A ``NORA_*`` variable has a value that cannot be used (the message names it)."""


def _command(text: str) -> tuple[str, ...]:
    words = json.loads(text) if text.lstrip().startswith("[") else shlex.split(text)
    if not words or not all(isinstance(w, str) for w in words):
        raise ValueError("needs at least one word")
    return tuple(words)


def _namespaces(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _positive(kind: Callable[[str], T]) -> Callable[[str], T]:
    def parse(text: str) -> T:
        value = kind(text)
        if value < 0:  # type: ignore[operator]
            raise ValueError("must not be negative")
        return value

    return parse


@dataclass(frozen=True)
class OperatorSettings:
    """See the module docstring for each field's variable and default."""

    namespaces: tuple[str, ...] = ()
    peering: str | None = None
    priority: int | None = None
    peering_lifetime_seconds: int = 60
    metrics_address: str = "0.0.0.0"
    metrics_port: int = 8080
    liveness_endpoint: str | None = "http://0.0.0.0:8081/healthz"
    train_command: tuple[str, ...] = DEFAULT_TRAIN_COMMAND
    test_score_command: tuple[str, ...] = DEFAULT_TEST_SCORE_COMMAND
    job_ttl_seconds: int = 3600
    resync_seconds: float = 30.0
    min_interval_seconds: float = 0.2
    api_workers: int = 16
    reconcile_workers: int = 4
    breeding_workers: int = 2
    s3_endpoint: str | None = None
    s3_region: str | None = None
    ambient_credentials_namespaces: tuple[str, ...] = ()
    s3_endpoint_allowlist: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorSettings:
        """The settings in ``env`` (default: the process environment)."""
        source = os.environ if env is None else env
        parsers: dict[str, Callable[[str], Any]] = {
            "namespaces": _namespaces,
            "peering": str,
            "priority": int,
            "peering_lifetime_seconds": _positive(int),
            "metrics_address": str,
            "metrics_port": _positive(int),
            "liveness_endpoint": str,
            "train_command": _command,
            "test_score_command": _command,
            "job_ttl_seconds": _positive(int),
            "resync_seconds": _positive(float),
            "min_interval_seconds": _positive(float),
            "api_workers": _positive(int),
            "reconcile_workers": _positive(int),
            "breeding_workers": _positive(int),
            "s3_endpoint": str,
            "s3_region": str,
            "ambient_credentials_namespaces": _namespaces,
            "s3_endpoint_allowlist": _namespaces,
        }
        values: dict[str, Any] = {}
        for field, parse in parsers.items():
            variable = PREFIX + field.upper()
            text = source.get(variable)
            if text is None:
                continue
            try:
                values[field] = parse(text) if text != "" or parse is _namespaces else None
            except ValueError as error:
                raise SettingsError(f"{variable}={text!r}: {error}") from None
        return cls(**values)

    def peering_priority(self) -> int:
        """This replica's peering priority: the configured one, else a random one (never equal ones)."""
        return self.priority if self.priority is not None else random.SystemRandom().randint(1, 2**31 - 1)
