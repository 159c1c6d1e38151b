"""The kopf handlers: thin, each one line or two over :class:`~nora.operator.runtime.Runtime`.

- an index of the genome Jobs the operator owns, keyed by ``(namespace, population)``, holding compact
  :class:`~nora.operator.jobs.JobView` records (kopf fills it before any other handler runs, so a
  restarted operator sees every existing Job before it decides anything);
- Job and Population events wake the Population's daemon;
- one daemon per Population runs the reconcile loop;
- deletion forgets the Population's metrics and, with ``spec.storage.cleanup``, deletes its S3 data
  (Generations and Jobs are garbage-collected through their ownerReferences).

Run with ``nora operator`` (:mod:`nora.operator.cli`) or ``kopf run -m nora.operator.handlers``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from nora.operator.jobs import JobView, job_view
from nora.operator.objects import GROUP, POPULATION_LABEL, POPULATIONS, VERSION
from nora.operator.reconciler import PopulationRef
from nora.operator.runtime import Runtime
from nora.operator.settings import OperatorSettings

OWNED_JOBS = {POPULATION_LABEL: kopf.PRESENT}


def configure(kopf_settings: kopf.OperatorSettings, ours: OperatorSettings) -> None:
    """kopf's settings for this operator (pure: only sets fields)."""
    kopf_settings.posting.level = logging.WARNING
    kopf_settings.watching.server_timeout = 270
    kopf_settings.watching.client_timeout = 300
    kopf_settings.watching.inactivity_timeout = 330
    kopf_settings.networking.request_timeout = 60
    kopf_settings.persistence.finalizer = "nora.dev/operator"
    kopf_settings.persistence.progress_storage = kopf.SmartProgressStorage(prefix="nora.dev")
    kopf_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="nora.dev", key="last-handled-configuration"
    )
    kopf_settings.execution.max_workers = max(4, ours.reconcile_workers)
    kopf_settings.peering.lifetime = ours.peering_lifetime_seconds
    # Serving named namespaces: no cluster-wide listing of namespaces and CRDs (the chart's Roles grant
    # none); kopf takes NORA_NAMESPACES as exact names and the CRDs as they are at start.
    kopf_settings.scanning.disabled = bool(ours.namespaces)


def runtime(memo: Any) -> Runtime:
    value: Runtime = memo["nora"]
    return value


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    ours = OperatorSettings.from_env()
    configure(settings, ours)
    memo["nora"] = Runtime.start(ours)


@kopf.on.cleanup()
async def cleanup(memo: Any, **_: Any) -> None:
    if "nora" in memo:
        runtime(memo).close()


@kopf.index("batch", "v1", "jobs", labels=OWNED_JOBS)
async def nora_jobs(namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any) -> object:
    return {(namespace, labels[POPULATION_LABEL]): job_view(body)}


@kopf.on.event("batch", "v1", "jobs", labels=OWNED_JOBS)
async def job_changed(namespace: str | None, labels: Mapping[str, str], memo: Any, **_: Any) -> None:
    runtime(memo).wake(PopulationRef(str(namespace), labels[POPULATION_LABEL]))


@kopf.on.event(GROUP, VERSION, POPULATIONS)
async def population_changed(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    runtime(memo).wake(PopulationRef(str(namespace), name))


@kopf.daemon(GROUP, VERSION, POPULATIONS, cancellation_timeout=10.0)
async def evolve(
    namespace: str | None, name: str, stopped: kopf.DaemonStopped, memo: Any, **kwargs: Any
) -> None:
    index: kopf.Index[Any, JobView] = kwargs["nora_jobs"]
    key = (namespace, name)

    def jobs() -> dict[str, JobView]:
        return {view.name: view for view in index.get(key, [])}

    await runtime(memo).run(PopulationRef(str(namespace), name), stopped, jobs)


@kopf.on.delete(GROUP, VERSION, POPULATIONS, retries=3, backoff=5.0)
async def deleted(namespace: str | None, name: str, spec: kopf.Spec, memo: Any, **_: Any) -> None:
    await runtime(memo).deleted(PopulationRef(str(namespace), name), dict(spec))
