"""The operator's long-lived parts and the loop that drives one Population (kopf daemon body).

One async loop per Population (a kopf daemon) runs reconcile passes in a thread pool, never on the
event loop; Job and Population events wake it at once, and it resyncs every ``NORA_RESYNC_SECONDS``.
Passes over one Population never overlap, so its writes never race each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from nora.api.placement import StorageSpec
from nora.evolution import run_store
from nora.evolution.layout import namespaced_prefix, population_key
from nora.operator.breeder import Breeder, ProcessBreeder
from nora.operator.cluster import Cluster, KubernetesCluster
from nora.operator.jobs import JobView
from nora.operator.metrics import Metrics
from nora.operator.reconciler import PopulationRef, Reconciler
from nora.operator.settings import OperatorSettings
from nora.operator.storage import S3Stores, Stores, delete_keys

log = logging.getLogger("nora.operator")


class Runtime:
    """Settings, clients, metrics, the breeding process, the reconciler and the wake-up events."""

    def __init__(
        self,
        settings: OperatorSettings,
        cluster: Cluster,
        stores: Stores,
        breeder: Breeder,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.cluster = cluster
        self.stores = stores
        self.breeder = breeder
        self.metrics = metrics or Metrics()
        self.reconciler = Reconciler(cluster, stores, breeder, settings, self.metrics)
        self.executor = ThreadPoolExecutor(max(1, settings.reconcile_workers), thread_name_prefix="nora-pass")
        self._wakeups: dict[PopulationRef, asyncio.Event] = {}

    @classmethod
    def start(cls, settings: OperatorSettings) -> Runtime:
        """The production runtime: Kubernetes from the environment, S3, a breeding process, /metrics."""
        cluster = KubernetesCluster.from_environment(pool_size=settings.api_workers + 8)
        ambient = frozenset(settings.ambient_credentials_namespaces)
        hosts = frozenset(settings.s3_endpoint_allowlist)
        stores = S3Stores(cluster.read_secret, settings.s3_endpoint, settings.s3_region, ambient, hosts)
        runtime = cls(settings, cluster, stores, ProcessBreeder())
        if settings.metrics_port:
            runtime.metrics.serve(settings.metrics_address, settings.metrics_port)
        return runtime

    def close(self) -> None:
        self.breeder.close()
        self.reconciler.close()
        self.executor.shutdown(wait=False, cancel_futures=True)

    def wake(self, ref: PopulationRef) -> None:
        """Ask for a pass over ``ref`` now (call on the event loop)."""
        event = self._wakeups.get(ref)
        if event is not None:
            event.set()

    async def run(self, ref: PopulationRef, stopped: Any, jobs: Callable[[], Mapping[str, JobView]]) -> None:
        """Reconcile ``ref`` until ``stopped`` (kopf's daemon flag) is set or the task is cancelled."""
        loop = asyncio.get_running_loop()
        wake = self._wakeups.setdefault(ref, asyncio.Event())
        try:
            while not stopped:
                wake.clear()
                snapshot = jobs()
                result = await loop.run_in_executor(self.executor, self.reconciler.reconcile, ref, snapshot)
                delay = self.settings.resync_seconds if result.delay is None else result.delay
                await asyncio.sleep(self.settings.min_interval_seconds)
                if result.backoff:
                    await _sleep_unless_stopped(delay, stopped)
                elif delay > 0 and not wake.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), timeout=delay)
        finally:
            if self._wakeups.get(ref) is wake:
                del self._wakeups[ref]

    async def deleted(self, ref: PopulationRef, spec: Mapping[str, Any]) -> int:
        """A Population is being deleted: forget its metrics; with ``storage.cleanup``, delete its data.

        Its Generations and Jobs go by garbage collection (ownerReferences). Returns objects deleted.
        """
        self.metrics.forget(ref.namespace, ref.name)
        storage = StorageSpec.model_validate(spec.get("storage") or {})
        if not storage.cleanup or not storage.bucket:
            return 0

        def cleanup() -> int:
            store = self.stores.store(self.stores.access(ref.namespace, storage))
            base = population_key(namespaced_prefix(storage.prefix, ref.namespace), ref.name)
            return delete_keys(store, run_store.owned_keys(store, base))

        count = await asyncio.get_running_loop().run_in_executor(self.executor, cleanup)
        log.info("deleted %d objects of %s/%s from s3://%s", count, ref.namespace, ref.name, storage.bucket)
        return count


async def _sleep_unless_stopped(seconds: float, stopped: Any, step: float = 0.5) -> None:
    """Sleep ``seconds``, ignoring wake-ups but returning early when the daemon is asked to stop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not stopped and (left := deadline - loop.time()) > 0:
        await asyncio.sleep(min(step, left))
