"""The reconciler over an in-memory cluster and a local store: level-triggered, restartable, bounded.

The fake cluster keeps objects as dicts; a fake "kubelet" finishes Jobs by writing what the trainer
writes (an adapter and metrics.json) and marking them Complete. Planning and breeding are the engine's.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from nora.api.population import StorageSpec
from nora.evolution.genome_store import upload_genome
from nora.genetics import init_genome, make_generator
from nora.operator.breeder import InlineBreeder
from nora.operator.jobs import JobView, job_view
from nora.operator.metrics import Metrics
from nora.operator.objects import JSON, ObjectRef
from nora.operator.reconciler import PopulationRef, Reconciler
from nora.operator.settings import OperatorSettings
from nora.operator.storage import StorageAccess, copy_prefix
from nora.storage import LocalStore, Store

NS, NAME = "team", "evo"
REF = PopulationRef(NS, NAME)
SHAPES = {"model.layers.0.self_attn.q_proj": (8, 8), "model.layers.0.self_attn.v_proj": (8, 8)}


class FakeCluster:
    """The :class:`~nora.operator.cluster.Cluster` protocol over dicts."""

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
    def __init__(self, store: LocalStore) -> None:
        self.local = store

    def access(self, namespace: str, storage: StorageSpec) -> StorageAccess:
        return StorageAccess(bucket=storage.bucket or "none")

    def store(self, access: StorageAccess) -> Store:
        return self.local


def key_of(store: LocalStore, uri: str) -> str:
    return Path(uri.removeprefix("file://")).relative_to(store.root.resolve()).as_posix()


def finish(cluster: FakeCluster, store: LocalStore, name: str, fail: bool = False) -> None:
    """What the trainer and the Job controller do for one Job."""
    job = cluster.jobs()[name]
    if fail:
        job["status"] = {
            "failed": 2,
            "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}],
        }
        cluster.failure_messages[name] = "nora train: error: out of memory"
        return
    task = json.loads(store.read_bytes(key_of(store, job["metadata"]["annotations"]["nora.dev/task"])))
    out = key_of(store, task["output"])
    start = (task.get("adapter") or {}).get("uri")
    if start:
        copy_prefix(store, key_of(store, start), f"{out}/adapter")
    else:
        upload_genome(
            store, f"{out}/adapter", init_genome(SHAPES, 2, 4.0, make_generator(task["seed"]), b_std=0.1)
        )
    fitness = (task["seed"] % 1000) / 1000
    store.write_bytes(f"{out}/metrics.json", json.dumps({"fitness": fitness, "accuracy": fitness}).encode())
    job["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}


def population(**spec: Any) -> JSON:
    base = {
        "baseModel": {"uri": "file:///models/base"},
        "dataset": {"train": "s3://d/train.jsonl", "eval": "s3://d/eval.jsonl"},
        "populationSize": 4,
        "maxGenerations": 3,
        "seed": 5,
        "parallelism": 2,
        "selection": {"survivors": 2, "elites": 1, "tournamentSize": 2},
        "adapter": {"initialRank": 2, "alpha": 4, "targetModules": ["q_proj", "v_proj"]},
        "mutation": {"maxRank": 8},
        "storage": {"bucket": "b"},
    }
    return {
        "apiVersion": "nora.dev/v1alpha1",
        "kind": "Population",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {**base, **spec},
    }


@pytest.fixture
def world(tmp_path: Path) -> tuple[FakeCluster, LocalStore]:
    return FakeCluster(), LocalStore(tmp_path / "store")


def reconciler(cluster: FakeCluster, store: LocalStore) -> Reconciler:
    settings = OperatorSettings(api_workers=2, train_command=("train", "--genome"))
    return Reconciler(cluster, LocalStores(store), InlineBreeder(store), settings, Metrics())


def run(
    cluster: FakeCluster, store: LocalStore, fail: frozenset[str] = frozenset(), passes: int = 60
) -> Reconciler:
    """Alternate passes and finishing every unfinished Job until the Population is finished."""
    operator = reconciler(cluster, store)
    for _ in range(passes):
        operator.reconcile(REF, cluster.views())
        phase = (cluster.get_population(NS, NAME) or {}).get("status", {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            return operator
        running = [n for n, v in cluster.views().items() if not v.finished_phase]
        assert len(running) <= 2  # spec.parallelism
        for name in running:
            finish(cluster, store, name, fail=name in fail)
    raise AssertionError("the population did not finish")


def status(cluster: FakeCluster) -> JSON:
    body = cluster.get_population(NS, NAME)
    assert body is not None
    return dict(body["status"])


def test_a_population_runs_to_the_end_and_exports_its_best(world: tuple[FakeCluster, LocalStore]) -> None:
    cluster, store = world
    cluster.add("Population", population())
    operator = run(cluster, store, fail=frozenset({"evo-g0-3"}))
    final = status(cluster)
    registry, labels = operator.metrics.registry, {"namespace": NS, "population": NAME}
    assert registry.get_sample_value("nora_population_phase", {**labels, "phase": "Succeeded"}) == 1
    assert registry.get_sample_value("nora_population_phase", {**labels, "phase": "Running"}) == 0
    assert registry.get_sample_value("nora_current_generation", labels) == final["generation"]
    assert registry.get_sample_value("nora_generations_completed_total", labels) == 3
    assert (final["phase"], final["reason"], final["completedGenerations"]) == (
        "Succeeded",
        "MaxGenerations",
        3,
    )
    assert sorted(cluster.created_jobs) == sorted(
        f"evo-g{g}-{i}" for g in range(3) for i in range(4) if g == 0 or i
    )
    assert set(cluster.created_jobs.values()) == {1}
    g0 = cluster.get_generation(NS, "evo-g0")
    assert g0 is not None
    failed = g0["status"]["genomes"][3]
    assert failed["phase"] == "Failed"
    assert failed["message"] == "BackoffLimitExceeded: nora train: error: out of memory"
    assert ("Generation", "Warning", "GenomeFailed") in {e[:3] for e in cluster.events}
    best = final["best"]
    assert store.exists("nora/evo/best/nora_manifest.json")
    assert json.loads(store.read_bytes("nora/evo/best/best.json"))["genome"] == best["genome"]
    phases = [e[2] for e in cluster.events if e[0] == "Population"]
    assert phases == ["Running", "Succeeded"]


def test_a_new_operator_mid_generation_creates_nothing_twice_and_ends_the_same(
    world: tuple[FakeCluster, LocalStore], tmp_path: Path
) -> None:
    cluster, store = world
    cluster.add("Population", population())
    first = reconciler(cluster, store)
    first.reconcile(REF, {})  # creates generation 0 and two Jobs; the index has not seen them yet
    assert sorted(cluster.created_jobs) == ["evo-g0-0", "evo-g0-1"]
    first.reconcile(REF, {})  # a second pass before the index caught up: nothing more
    assert sum(cluster.created_jobs.values()) == 2
    finish(cluster, store, "evo-g0-0")
    run(cluster, store)  # a fresh reconciler (restarted operator) takes over
    assert set(cluster.created_jobs.values()) == {1}

    other, other_store = FakeCluster(), LocalStore(tmp_path / "other")
    other.add("Population", population())
    run(other, other_store)
    assert status(cluster)["history"] == status(other)["history"]
    keys = [
        k for k in other_store.list("nora/evo") if not k.endswith(("genome.json", "best.json"))
    ]  # hold paths
    assert len(keys) > 40
    for key in keys:
        assert store.read_bytes(key) == other_store.read_bytes(key), key


def test_a_job_removed_before_its_outcome_was_read_is_recovered_or_run_again(
    world: tuple[FakeCluster, LocalStore],
) -> None:
    cluster, store = world
    cluster.add("Population", population())
    operator = reconciler(cluster, store)
    operator.reconcile(REF, cluster.views())
    finish(cluster, store, "evo-g0-0")  # finished, then deleted (ttlSecondsAfterFinished) unseen
    del cluster.objects[("Job", NS, "evo-g0-0")]
    del cluster.objects[("Job", NS, "evo-g0-1")]  # deleted while running: no output
    operator = reconciler(cluster, store)
    operator.reconcile(REF, cluster.views())
    g0 = cluster.get_generation(NS, "evo-g0")
    assert g0 is not None
    assert g0["status"]["genomes"][0]["phase"] == "Succeeded"
    assert cluster.created_jobs["evo-g0-1"] == 2  # run again


def test_an_invalid_spec_is_a_condition_and_an_event_and_starts_nothing(
    world: tuple[FakeCluster, LocalStore],
) -> None:
    cluster, store = world
    cluster.add("Population", population(baseModel={"uri": "toy://arithmetic"}, storage={}))
    reconciler(cluster, store).reconcile(REF, {})
    final = status(cluster)
    ready = final["conditions"][0]
    assert (final["phase"], ready["type"], ready["status"], ready["reason"]) == (
        "Pending",
        "Ready",
        "False",
        "InvalidSpec",
    )
    assert "spec.storage.bucket: required on a cluster" in ready["message"]
    assert "spec.baseModel.uri: toy:// URIs only work with `nora run`" in ready["message"]
    assert [e[1:3] for e in cluster.events] == [("Warning", "InvalidSpec")]
    reconciler(cluster, store).reconcile(REF, {})
    assert len(cluster.events) == 1  # no new Event while nothing changed
    assert cluster.get_generation(NS, "evo-g0") is None


def test_a_suspended_population_is_stopped_and_starts_no_job(world: tuple[FakeCluster, LocalStore]) -> None:
    cluster, store = world
    cluster.add("Population", population(suspend=True))
    reconciler(cluster, store).reconcile(REF, {})
    assert status(cluster)["phase"] == "Stopped"
    assert not cluster.created_jobs
    cluster.objects[("Population", NS, NAME)]["spec"]["suspend"] = False
    reconciler(cluster, store).reconcile(REF, {})
    assert status(cluster)["phase"] == "Running"
    assert len(cluster.created_jobs) == 2


def test_raising_max_generations_resumes_a_finished_population(world: tuple[FakeCluster, LocalStore]) -> None:
    cluster, store = world
    cluster.add("Population", population(maxGenerations=2))
    run(cluster, store)
    assert status(cluster)["completedGenerations"] == 2
    cluster.objects[("Population", NS, NAME)]["spec"]["maxGenerations"] = 3
    run(cluster, store)
    final = status(cluster)
    assert (final["phase"], final["completedGenerations"], final["generation"]) == ("Succeeded", 3, 2)
    assert cluster.get_generation(NS, "evo-g2") is not None


class BrokenJobsCluster(FakeCluster):
    """Job creation fails (as with a missing quota or an apiserver outage) until ``broken`` is cleared."""

    broken = True

    def create_job(self, body: JSON) -> bool:
        if self.broken:
            raise RuntimeError("jobs are refused")
        return super().create_job(body)

    writes = 0

    def patch_population_status(self, namespace: str, name: str, status: JSON) -> None:
        self.writes += 1
        super().patch_population_status(namespace, name, status)


def test_a_failing_pass_backs_off_writes_its_error_once_and_clears_it_when_fixed(tmp_path: Path) -> None:
    cluster, store = BrokenJobsCluster(), LocalStore(tmp_path / "store")
    cluster.add("Population", population())
    operator = reconciler(cluster, store)
    first = operator.reconcile(REF, cluster.views())
    assert (first.backoff, first.delay) == (True, 10.0)
    ready = next(c for c in status(cluster)["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ReconcileError")
    assert "jobs are refused" in ready["message"]
    writes, events = cluster.writes, len(cluster.events)
    for _ in range(3):  # the same error again: no status write, no Event (nothing to wake a hot loop)
        assert operator.reconcile(REF, cluster.views()).backoff
    assert (cluster.writes, len(cluster.events)) == (writes, events)

    registry, labels = operator.metrics.registry, {"namespace": NS, "population": NAME}
    assert registry.get_sample_value("nora_generations_completed_total", labels) == 0  # born at zero
    failed = {**labels, "outcome": "Failed"}
    assert registry.get_sample_value("nora_job_duration_seconds_count", failed) == 0

    cluster.broken = False
    assert not operator.reconcile(REF, cluster.views()).backoff
    ready = next(c for c in status(cluster)["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Accepted")
    assert cluster.created_jobs
