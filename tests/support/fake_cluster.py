"""An in-memory :class:`~nora.operator.cluster.Cluster` for reconciler tests.

The Job controller's and the trainer's part is played by :func:`finish` (the stand-in trainer writes the
outputs); :func:`run_to_end` alternates reconcile passes and finishing Jobs.
"""

from __future__ import annotations

import copy
import itertools
from collections import Counter
from collections.abc import Collection, Mapping
from typing import Any

from nora.api.placement import StorageSpec
from nora.operator.breeder import InlineBreeder
from nora.operator.jobs import JobView, job_view
from nora.operator.metrics import Metrics
from nora.operator.objects import JSON, ObjectRef
from nora.operator.reconciler import PopulationRef, Reconciler
from nora.operator.settings import OperatorSettings
from nora.operator.storage import StorageAccess
from nora.storage import LocalStore, Store
from tests.support import standin


class FakeCluster:
    """The Cluster protocol over dicts."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], JSON] = {}
        self.events: list[tuple[str, str, str, str]] = []
        self.created_jobs: Counter[str] = Counter()
        self.failure_messages: dict[str, str] = {}
        self._uids = itertools.count()

    def add(self, kind: str, body: JSON) -> JSON:
        body = copy.deepcopy(body)
        body["metadata"]["uid"] = f"uid-{next(self._uids)}"
        body["metadata"].setdefault("generation", 1)
        self.objects[(kind, body["metadata"]["namespace"], body["metadata"]["name"])] = body
        return body

    def get_population(self, namespace: str, name: str) -> JSON | None:
        return copy.deepcopy(self.objects.get(("Population", namespace, name)))

    def patch_population_status(self, namespace: str, name: str, status: JSON) -> None:
        self.objects[("Population", namespace, name)]["status"] = copy.deepcopy(status)

    def get_generation(self, namespace: str, name: str) -> JSON | None:
        return copy.deepcopy(self.objects.get(("Generation", namespace, name)))

    def create_generation(self, body: JSON) -> JSON:
        key = ("Generation", body["metadata"]["namespace"], body["metadata"]["name"])
        return copy.deepcopy(self.objects[key] if key in self.objects else self.add("Generation", body))

    def patch_generation_status(self, namespace: str, name: str, status: JSON) -> None:
        self.objects[("Generation", namespace, name)]["status"] = copy.deepcopy(status)

    def create_job(self, body: JSON) -> bool:
        key = ("Job", body["metadata"]["namespace"], body["metadata"]["name"])
        if key in self.objects:
            return False
        self.created_jobs[body["metadata"]["name"]] += 1
        self.add("Job", body)
        return True

    def create_pvc(self, body: JSON) -> bool:
        key = ("PersistentVolumeClaim", body["metadata"]["namespace"], body["metadata"]["name"])
        if key in self.objects:
            return False
        self.add("PersistentVolumeClaim", body)
        return True

    def blocked_jobs(self, namespace: str) -> dict[str, str]:
        return {}

    def dry_run_job(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        return []

    def job_failure_message(self, namespace: str, job: str) -> str:
        return self.failure_messages.get(job, "")

    def read_secret(self, namespace: str, name: str) -> dict[str, str]:
        return {}

    def post_event(self, subject: ObjectRef, kind: str, reason: str, message: str) -> None:
        self.events.append((subject.kind, kind, reason, message))

    def jobs(self) -> dict[str, JSON]:
        return {key[2]: body for key, body in self.objects.items() if key[0] == "Job"}

    def views(self) -> dict[str, JobView]:
        return {name: job_view(body) for name, body in self.jobs().items()}


class LocalStores:
    """Every Population's storage is one local folder."""

    def __init__(self, store: LocalStore) -> None:
        self.local = store

    def access(self, namespace: str, storage: StorageSpec) -> StorageAccess:
        return StorageAccess(bucket=storage.bucket or "none")

    def store(self, access: StorageAccess) -> Store:
        return self.local


def finish(cluster: FakeCluster, name: str, fail: bool = False) -> None:
    """What the stand-in trainer and the Job controller do for one Job."""
    job = cluster.jobs()[name]
    if fail:
        job["status"] = {
            "failed": 2,
            "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}],
        }
        cluster.failure_messages[name] = "nora train: error: out of memory"
        return
    task = job["metadata"]["annotations"]["nora.dev/task"]
    if job["metadata"]["labels"]["app.kubernetes.io/component"] == "test-score":
        standin.score_test_split(task)
    else:
        standin.train(task)
    job["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}


def reconciler(cluster: FakeCluster, store: LocalStore) -> Reconciler:
    settings = OperatorSettings(api_workers=2, train_command=("train", "--genome"))
    return Reconciler(cluster, LocalStores(store), InlineBreeder(store), settings, Metrics())


def run_to_end(
    cluster: FakeCluster,
    store: LocalStore,
    ref: PopulationRef,
    fail: Collection[str] = (),
    passes: int = 60,
    parallelism: int = 2,
) -> Reconciler:
    """Alternate passes and finishing every unfinished Job until the Population is finished."""
    operator = reconciler(cluster, store)
    for _ in range(passes):
        operator.reconcile(ref, cluster.views())
        phase = (cluster.get_population(ref.namespace, ref.name) or {}).get("status", {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            return operator
        running = [n for n, v in cluster.views().items() if not v.finished_phase]
        assert len(running) <= parallelism
        for name in running:
            finish(cluster, name, fail=name in fail)
    raise AssertionError("the population did not finish")


def population_status(cluster: FakeCluster, ref: PopulationRef) -> Mapping[str, Any]:
    body = cluster.get_population(ref.namespace, ref.name)
    assert body is not None
    return dict(body["status"])
