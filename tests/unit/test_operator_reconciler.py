"""The reconciler over an in-memory cluster and a local store: level-triggered, restartable, bounded.

The fake cluster keeps objects as dicts; :func:`tests.support.fake_cluster.finish` plays the trainer (the
stand-in writes an adapter and metrics.json) and the Job controller. Planning and breeding are the engine's.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pytest

from nora.operator.objects import JSON
from nora.operator.reconciler import PopulationRef, Reconciler
from nora.storage import LocalStore
from tests.support.fake_cluster import FakeCluster, finish, population_status, reconciler, run_to_end
from tests.support.manifests import BASE_SPEC, population_body

NS, NAME = "team", "evo"
REF = PopulationRef(NS, NAME)


def population(**spec: Any) -> JSON:
    return population_body(NAME, NS, **{"storage": {"bucket": "bkt"}, **spec})


@pytest.fixture
def world(tmp_path: Path) -> tuple[FakeCluster, LocalStore]:
    return FakeCluster(), LocalStore(tmp_path / "store")


def run(cluster: FakeCluster, store: LocalStore, fail: Collection[str] = ()) -> Reconciler:
    return run_to_end(cluster, store, REF, fail)


def status(cluster: FakeCluster) -> dict[str, Any]:
    return dict(population_status(cluster, REF))


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
    assert store.exists(f"nora/{NS}/evo/best/nora_manifest.json")
    assert json.loads(store.read_bytes(f"nora/{NS}/evo/best/best.json"))["genome"] == best["genome"]
    phases = [e[2] for e in cluster.events if e[0] == "Population"]
    assert phases == ["Running", "Succeeded"]


def _with_test_split(folder: Path) -> JSON:
    path = folder / "test.jsonl"
    path.write_text(
        "".join(json.dumps({"question": f"{i}+1", "answer": str(i + 1)}) + "\n" for i in range(40))
    )
    return population(dataset={**BASE_SPEC["dataset"], "test": path.as_uri()})


def test_the_test_split_is_one_genome_like_job_and_the_run_concludes_after_it(
    world: tuple[FakeCluster, LocalStore], tmp_path: Path
) -> None:
    cluster, store = world
    cluster.add("Population", _with_test_split(tmp_path))
    run(cluster, store)
    final = status(cluster)
    assert (final["phase"], final["reason"]) == ("Succeeded", "MaxGenerations")
    test = final["test"]
    assert (test["phase"], test["rows"], test["generations"]) == ("Succeeded", 40, 3)
    assert test["best"]["genome"] == final["best"]["genome"]
    assert test["best"]["adapter"].startswith(store.uri(f"nora/{NS}/evo/"))
    assert test["initial"]["genome"] == final["history"][0]["bestGenome"]
    assert test["gain"] == pytest.approx(test["best"]["accuracy"] - test["initial"]["accuracy"])
    assert len(test["ensemble"]["adapters"]) == 3
    job = cluster.jobs()["evo-test-g2"]
    assert cluster.created_jobs["evo-test-g2"] == 1
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "test-score"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "Population"
    assert job["spec"]["podFailurePolicy"]["rules"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:-1] == ["python", "-m", "nora", "test-score", "--task"]
    assert container["command"][-1] == store.uri(f"nora/{NS}/evo/test/g2/task.json")
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    exported = json.loads(store.read_bytes(f"nora/{NS}/evo/best/best.json"))
    assert exported["test"] == test
    assert [e[2] for e in cluster.events if e[0] == "Population"] == ["Running", "Succeeded"]


def test_a_test_job_deleted_before_a_pass_saw_it_finish_is_read_not_run_again(
    world: tuple[FakeCluster, LocalStore], tmp_path: Path
) -> None:
    cluster, store = world
    cluster.add("Population", _with_test_split(tmp_path))
    operator = reconciler(cluster, store)
    for _ in range(40):
        operator.reconcile(REF, cluster.views())
        if "evo-test-g2" in cluster.jobs():
            break
        for name, view in cluster.views().items():
            if not view.finished_phase:
                finish(cluster, name)
    finish(cluster, "evo-test-g2")
    del cluster.objects[("Job", NS, "evo-test-g2")]  # ttlSecondsAfterFinished, unseen
    operator.reconcile(REF, cluster.views())
    final = status(cluster)
    assert (final["phase"], final["test"]["phase"]) == ("Succeeded", "Succeeded")
    assert cluster.created_jobs["evo-test-g2"] == 1


def test_a_failed_test_job_is_recorded_and_the_run_keeps_its_outcome(
    world: tuple[FakeCluster, LocalStore], tmp_path: Path
) -> None:
    cluster, store = world
    cluster.add("Population", _with_test_split(tmp_path))
    run(cluster, store, fail=frozenset({"evo-test-g2"}))
    final = status(cluster)
    assert (final["phase"], final["test"]["phase"]) == ("Succeeded", "Failed")
    assert "Job evo-test-g2: BackoffLimitExceeded" in final["test"]["message"]
    assert ("Population", "Warning", "TestScoreFailed") in {e[:3] for e in cluster.events}


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
    finish(cluster, "evo-g0-0")
    run(cluster, store)  # a fresh reconciler (restarted operator) takes over
    assert set(cluster.created_jobs.values()) == {1}

    other, other_store = FakeCluster(), LocalStore(tmp_path / "other")
    other.add("Population", population())
    run(other, other_store)
    assert status(cluster)["history"] == status(other)["history"]
    keys = [
        k for k in other_store.list(f"nora/{NS}/evo") if not k.endswith(("genome.json", "best.json"))
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
    finish(cluster, "evo-g0-0")  # finished, then deleted (ttlSecondsAfterFinished) unseen
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
    refusals = 0

    def create_job(self, body: JSON) -> bool:
        if self.broken:
            self.refusals += 1  # the wording changes every time, as with Audit-Id headers
            raise RuntimeError(f"jobs are refused (Audit-Id: {self.refusals})")
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
    assert (first.backoff, first.delay) == (True, 5.0)
    ready = next(c for c in status(cluster)["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ReconcileError")
    assert "jobs are refused" in ready["message"]
    writes, events = cluster.writes, len(cluster.events)
    delays = []
    for _ in range(8):  # the same kind of error again: no status write, no Event, a growing back-off
        again = operator.reconcile(REF, cluster.views())
        assert again.backoff
        delays.append(again.delay)
    assert (cluster.writes, len(cluster.events)) == (writes, events)
    assert delays == [10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0, 300.0]

    registry, labels = operator.metrics.registry, {"namespace": NS, "population": NAME}
    assert registry.get_sample_value("nora_generations_completed_total", labels) == 0  # born at zero
    failed = {**labels, "outcome": "Failed"}
    assert registry.get_sample_value("nora_job_duration_seconds_count", failed) == 0

    cluster.broken = False
    assert not operator.reconcile(REF, cluster.views()).backoff
    ready = next(c for c in status(cluster)["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Accepted")
    assert cluster.created_jobs


def test_genome_jobs_wait_for_the_model_cache_and_its_failure_fails_the_population(
    world: tuple[FakeCluster, LocalStore],
) -> None:
    cluster, store = world
    cache = {"storageClassName": "fast", "size": "20Gi"}
    cluster.add("Population", population(baseModel={"uri": "s3://models/base/"}, modelCache=cache))
    operator = reconciler(cluster, store)
    for _ in range(2):  # the index has not seen the initializer yet: created once, nothing else
        operator.reconcile(REF, cluster.views())
    assert list(cluster.created_jobs) == ["evo-model-init"]
    claim = cluster.objects[("PersistentVolumeClaim", NS, "evo-model-cache")]
    assert (claim["spec"]["storageClassName"], claim["spec"]["resources"]["requests"]["storage"]) == (
        "fast",
        "20Gi",
    )
    init = cluster.jobs()["evo-model-init"]
    assert init["spec"]["template"]["spec"]["containers"][0]["command"][-2:] == [
        "s3://models/base/",
        "/nora-models",
    ]
    fetching = next(c for c in status(cluster)["conditions"] if c["type"] == "ModelCacheReady")
    assert (fetching["status"], fetching["reason"]) == ("False", "Fetching")

    init["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    operator.reconcile(REF, cluster.views())
    genome = cluster.jobs()["evo-g0-0"]
    volumes = {v["name"]: v for v in genome["spec"]["template"]["spec"]["volumes"]}
    assert any(
        v.get("persistentVolumeClaim", {}).get("claimName") == "evo-model-cache" for v in volumes.values()
    )
    mounts = genome["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert any(m["mountPath"] == "/nora-models" and m.get("readOnly") for m in mounts)
    ready = next(c for c in status(cluster)["conditions"] if c["type"] == "ModelCacheReady")
    assert (ready["status"], ready["reason"]) == ("True", "Ready")

    other = FakeCluster()
    other.add(
        "Population", population(baseModel={"uri": "s3://models/base/"}, modelCache={"claimName": "mine"})
    )
    reconciler(other, store).reconcile(REF, other.views())
    assert not [k for k in other.objects if k[0] == "PersistentVolumeClaim"]  # the user's claim, not ours
    other.jobs()["evo-model-init"]["status"] = {
        "failed": 1,
        "conditions": [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy"}],
    }
    other.failure_messages["evo-model-init"] = "nora train: error: baseModel.uri: no such object"
    reconciler(other, store).reconcile(REF, other.views())
    final = dict(population_status(other, REF))
    assert (final["phase"], final["reason"]) == ("Failed", "ModelCacheFailed")
    assert "baseModel.uri: no such object" in final["message"]
    assert list(other.created_jobs) == ["evo-model-init"]
