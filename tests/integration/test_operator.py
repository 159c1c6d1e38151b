"""The operator on the real control plane and S3 server, with a stand-in trainer in the genome Jobs.

The stand-in (:mod:`tests.support.standin`) reads genome.json from S3 like ``nora train``
and writes a real adapter and a fitness derived from the adapter's bytes, so breeding, lineage, retries
and restarts are exercised end to end in seconds per Job. The real trainer runs in tests/e2e.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from nora.api.manifest import parse_population
from tests.integration.test_operator_support import (
    GROUP_PATH,
    events_of,
    get_generation,
    get_population,
    job_running,
    jobs_of,
    population,
    s3_objects,
    s3_secret,
    wait_phase,
)
from tests.support.controlplane import ControlPlane
from tests.support.crds import install_crds
from tests.support.fixtures import Kubectl
from tests.support.kubeapi import JSON, KubeHTTP
from tests.support.kubelet import ProcessKubelet
from tests.support.operator import OperatorProcess, Operators, alive
from tests.support.s3 import S3Server
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def crds_installed(kubectl: Kubectl) -> None:
    install_crds(kubectl)


def _spec(name: str, namespace: str, s3: S3Server, **spec: object) -> JSON:
    return dict(yaml.safe_load(population(name, namespace, s3, **spec)))


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"selection": {"survivors": 9}}, "spec.selection.survivors", "must not exceed spec.populationSize"),
        ({"selection": {"elites": 4}}, "spec.selection.elites", "leaves no room for offspring"),
        ({"selection": {"tournamentSize": 5}}, "spec.selection.tournamentSize", "must not exceed"),
        (
            {"adapter": {"initialRank": 16}},
            "spec.adapter.initialRank",
            "must not exceed spec.mutation.maxRank",
        ),
        (
            {"training": {"samplesPerPrompt": 2, "pairsPerPrompt": 3}},
            "spec.training.pairsPerPrompt",
            "must not exceed spec.training.samplesPerPrompt",
        ),
        ({"crossover": {"method": "ties"}}, "spec.crossover.method", "needs equal ranks"),
        ({"fitness": {"metric": "irpo_loss"}}, "spec.fitness.goal", "irpo_loss is a loss"),
        (
            {"mutation": {"hyperparameters": {"beta": [0.5, 0.1]}}},
            "spec.mutation.hyperparameters",
            "low <= high",
        ),
        ({"selection": {"method": "best"}}, "spec.selection.method", 'Unsupported value: "best"'),
        ({"populationSize": 1}, "spec.populationSize", "should be greater than or equal to 2"),
        ({"trainig": {}}, "spec.trainig", "unknown field"),
    ],
)
def test_the_apiserver_refuses_a_broken_manifest_naming_the_field(
    kubectl: Kubectl,
    crds_installed: None,
    namespace: str,
    s3_server: S3Server,
    change: JSON,
    field: str,
    message: str,
) -> None:
    document = _spec("broken", namespace, s3_server)
    document["spec"] = {**document["spec"], **change}
    refused = kubectl("apply", "-f", "-", stdin=json.dumps(document), check=False)
    assert refused.returncode != 0
    assert field in refused.stderr
    assert message in refused.stderr, refused.stderr
    if change != {"trainig": {}}:  # the same rule holds for `nora run` (the models)
        with pytest.raises(ValueError, match=field.replace(".", r"\.")):
            parse_population(document)


def test_a_semantic_error_is_a_condition_and_an_event_and_nothing_starts(
    kube_api: KubeHTTP,
    kubectl: Kubectl,
    control_plane: ControlPlane,
    namespace: str,
    s3_server: S3Server,
    tmp_path: Path,
    operators: Operators,
) -> None:
    operator = operators.start(namespace)
    s3_secret(kube_api, namespace, s3_server)
    bad = population(
        "semantic",
        namespace,
        s3_server,
        dataset={"train": "s3://d/train.jsonl", "eval": "s3://d/eval.jsonl", "answerPattern": "####.*"},
    )
    kubectl("apply", "-f", "-", stdin=bad)  # the schema cannot tell that the regex has no group

    def ready_false() -> JSON | None:
        status = get_population(kube_api, namespace, "semantic").get("status") or {}
        return next((c for c in status.get("conditions", []) if c["type"] == "Ready"), None)

    condition = wait_for(ready_false, timeout=60, what="Ready condition", on_timeout=operator.describe)
    assert (condition["status"], condition["reason"]) == ("False", "InvalidSpec")
    assert condition["message"].startswith("spec.dataset.answerPattern: needs a capturing group")
    assert get_population(kube_api, namespace, "semantic")["status"]["phase"] == "Pending"
    events = wait_for(
        lambda: events_of(kube_api, namespace, "Population", "semantic"), timeout=30, what="event"
    )
    assert [(e["type"], e["reason"]) for e in events] == [("Warning", "InvalidSpec")]
    assert "needs a capturing group" in events[0]["message"]
    assert get_generation(kube_api, namespace, "semantic-g0") is None
    assert jobs_of(kube_api, namespace, "semantic") == []

    fixed = yaml.safe_load(bad)
    fixed["spec"]["dataset"]["answerPattern"] = r"####\s*(.+)"
    fixed["spec"]["suspend"] = True
    kubectl("apply", "-f", "-", stdin=json.dumps(fixed))
    stopped = wait_phase(kube_api, namespace, "semantic", ("Stopped",), 60, operator)
    ready = next(c for c in stopped["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Accepted")
    assert jobs_of(kube_api, namespace, "semantic") == []  # suspended: nothing runs


def _max_overlap(kube_api: KubeHTTP, namespace: str) -> int:
    """The most genome containers that ever ran at the same time (from the Pods' container states)."""
    spans = []
    for pod in kube_api.get(f"/api/v1/namespaces/{namespace}/pods")["items"]:
        for status in pod["status"].get("containerStatuses", []):
            for state in (status.get("state", {}), status.get("lastState", {})):
                ended = state.get("terminated")
                if ended and ended.get("startedAt"):
                    spans.append((ended["startedAt"], ended["finishedAt"]))
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak = 0
    for _, change in edges:
        running += change
        peak = max(peak, running)
    return peak


def test_a_population_evolves_with_retries_lineage_and_bounded_parallelism(
    kube_api: KubeHTTP,
    kubectl: Kubectl,
    kubelet: ProcessKubelet,
    control_plane: ControlPlane,
    namespace: str,
    s3_server: S3Server,
    tmp_path: Path,
    operators: Operators,
) -> None:
    operator = operators.start(namespace)
    s3_secret(kube_api, namespace, s3_server)
    failing = "evo-g0-3"
    standin = {"env": [{"name": "NORA_STANDIN_FAIL", "value": failing}]}
    manifest = population("evo", namespace, s3_server, maxGenerations=3, template=standin)
    kubectl("apply", "-f", "-", stdin=manifest)
    done = wait_phase(kube_api, namespace, "evo", ("Succeeded", "Failed"), 600, operator)
    status = done["status"]
    assert (status["phase"], status["reason"], status["completedGenerations"]) == (
        "Succeeded",
        "MaxGenerations",
        3,
    )
    assert [row["generation"] for row in status["history"]] == [0, 1, 2]

    generations = [get_generation(kube_api, namespace, f"evo-g{n}") for n in range(3)]
    assert all(g is not None and g["status"]["phase"] == "Succeeded" for g in generations)
    g0 = generations[0]
    assert g0 is not None
    broken = next(g for g in g0["status"]["genomes"] if g["id"] == failing)
    assert (broken["phase"], broken["attempts"]) == ("Failed", 2)  # backoffLimit 1: tried twice
    assert broken["message"] == f"BackoffLimitExceeded: nora train: error: standin: {failing} always fails"
    pods_of_failing = [
        name for ns, name in kubelet.pods_run() if ns == namespace and name.startswith(failing)
    ]
    assert len(pods_of_failing) == 2
    warnings = events_of(kube_api, namespace, "Generation", "evo-g0")
    assert any(e["reason"] == "GenomeFailed" and failing in e["message"] for e in warnings)

    for later in generations[1:]:
        assert later is not None
        genomes = later["spec"]["genomes"]
        assert genomes[0]["origin"] == "elite"
        assert genomes[0]["train"] is False
        assert all(g["parents"] and failing not in g["parents"] for g in genomes)  # failed: never a parent
        offspring = [g for g in genomes if g["origin"] in ("crossover", "mutation")]
        assert offspring
        assert all(g["adapter"].endswith(f"/{g['id']}/start") for g in offspring)
        for result in later["status"]["genomes"]:
            assert result["phase"] == "Succeeded"
            assert 0.0 <= result["fitness"] <= 1.0
            assert result["adapter"].startswith(f"s3://{s3_server.bucket}/nora/evo/")

    jobs = jobs_of(kube_api, namespace, "evo")
    assert Counter(j["metadata"]["labels"]["nora.dev/generation"] for j in jobs) == {"0": 4, "1": 3, "2": 3}
    assert _max_overlap(kube_api, namespace) <= 2  # spec.parallelism
    best = status["best"]
    exported = s3_objects(s3_server, "nora/evo/best/")
    assert {"adapter_config.json", "adapter_model.safetensors", "best.json"} <= set(exported)
    assert (
        json.loads(exported["best.json"])["fitness"]
        == best["fitness"]
        == max(r["best"] for r in status["history"])
    )

    table = kubectl("get", "populations", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "PHASE", "GENERATION", "BEST", "AGE"]
    row = table[1].split()
    assert row[:3] == ["evo", "Succeeded", "2"]
    assert float(row[3]) == pytest.approx(best["fitness"])
    metrics = operator.metrics()
    assert f'nora_generations_completed_total{{namespace="{namespace}",population="evo"}} 3.0' in metrics
    assert "nora_breeding_duration_seconds_count" in metrics
    assert "nora_job_duration_seconds_bucket" in metrics
    assert operator.tracebacks() == 0, operator.describe()
    _report_from_the_store(s3_server, tmp_path / "report", status)

    kubectl("delete", "population", "evo", "-n", namespace, "--wait=true", "--timeout=60s")
    wait_for(lambda: not jobs_of(kube_api, namespace, "evo"), timeout=120, what="Jobs garbage-collected")
    wait_for(
        lambda: not kube_api.get(f"{GROUP_PATH}/namespaces/{namespace}/generations")["items"],
        timeout=60,
        what="Generations garbage-collected",
    )
    assert "best.json" in s3_objects(s3_server, "nora/evo/best/")  # data kept without storage.cleanup


def _report_from_the_store(s3: S3Server, folder: Path, status: JSON) -> None:
    """``nora report`` and ``nora status`` read the cluster run from S3 (AWS environment credentials)."""
    uri = f"s3://{s3.bucket}/nora/evo"
    env = {**os.environ, **s3.env()}
    report = subprocess.run(
        [sys.executable, "-m", "nora", "report", uri, "--out", str(folder)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    rows = [line.split("│") for line in report.stdout.splitlines() if line.count("│") >= 8]  # data rows
    assert [cells[1].strip() for cells in rows] == ["0", "1", "2"]
    assert [float(cells[2]) for cells in rows] == pytest.approx(
        [r["best"] for r in status["history"]], abs=1e-4
    )
    assert f"{status['best']['genome']} (" in report.stdout  # the lineage starts at the best genome
    assert (folder / "fitness.png").stat().st_size > 1000
    assert (folder / "lineage.png").stat().st_size > 1000
    state = subprocess.run(
        [sys.executable, "-m", "nora", "status", uri],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert state.returncode == 0, state.stderr[-3000:]
    assert (
        state.stdout.splitlines()[0]
        == "population evo: Succeeded (MaxGenerations: ran spec.maxGenerations (3) generations)"
    )
    assert f"best: {status['best']['genome']} (generation {status['best']['generation']})" in state.stdout


def test_the_breeding_process_dies_with_the_operator_process_alone(
    kube_api: KubeHTTP,
    kubectl: Kubectl,
    control_plane: ControlPlane,
    namespace: str,
    s3_server: S3Server,
    tmp_path: Path,
    operators: Operators,
) -> None:
    operator = operators.start(namespace)
    s3_secret(kube_api, namespace, s3_server)
    kubectl("apply", "-f", "-", stdin=population("solo", namespace, s3_server))
    wait_for(lambda: get_generation(kube_api, namespace, "solo-g0"), timeout=120, what="generation 0 planned")
    children = operator.children()
    assert children, "the breeding process runs beside the operator"
    operator.kill_process_only()
    wait_for(
        lambda: not [pid for pid in children if alive(pid)],
        timeout=30,
        what=f"the operator's child processes {children} to exit after it was killed",
    )


def _generation_views(kube_api: KubeHTTP, namespace: str, name: str, count: int) -> list[JSON]:
    """Every generation's lineage and results with the population name taken out (comparable)."""
    views = []
    for n in range(count):
        body = get_generation(kube_api, namespace, f"{name}-g{n}")
        assert body is not None
        text = json.dumps({"spec": body["spec"]["genomes"], "status": body["status"]["genomes"]})
        views.append(json.loads(text.replace(f"/{namespace}-prefix/", "/PREFIX/")))
    return views


def _adapters(s3: S3Server, prefix: str) -> dict[str, bytes]:
    """Start and trained adapters and metrics under ``prefix`` (files whose bytes hold no URI)."""
    found = s3_objects(s3, prefix)
    return {
        k: v
        for k, v in found.items()
        if "/start/" in k or "/output/adapter/" in k or k.endswith("metrics.json")
    }


def test_restarts_create_nothing_twice_and_change_no_result(
    kube_api: KubeHTTP,
    kubectl: Kubectl,
    kubelet: ProcessKubelet,
    control_plane: ControlPlane,
    namespace: str,
    s3_server: S3Server,
    tmp_path: Path,
    operators: Operators,
) -> None:
    """The same Population twice: in one namespace untouched, in another with its operator killed while
    Jobs run and again while it breeds; then both resume when maxGenerations is raised."""
    steady, bumpy = namespace, f"{namespace}-b"
    kube_api.post("/api/v1/namespaces", {"metadata": {"name": bumpy}})
    try:
        started: dict[str, OperatorProcess] = {}
        for ns in (steady, bumpy):
            s3_secret(kube_api, ns, s3_server)
            folder = tmp_path / ns
            started[ns] = operators.start(ns, folder=folder)
            storage = {
                "bucket": s3_server.bucket,
                "endpoint": s3_server.endpoint,
                "secretRef": {"name": "s3"},
                "prefix": f"{ns}-prefix",
                "cleanup": ns == bumpy,
            }
            kubectl("apply", "-f", "-", stdin=population("twin", ns, s3_server, storage=storage))

        operator = started[bumpy]
        wait_for(lambda: job_running(kube_api, bumpy, "twin"), timeout=120, what="a Job running")
        operator.kill()
        assert job_running(kube_api, bumpy, "twin")  # the Jobs go on without the operator
        operator.start()

        def nearly_done() -> bool:
            g0 = get_generation(kube_api, bumpy, "twin-g0")
            return bool(g0 and (g0.get("status") or {}).get("succeeded", 0) >= 3)

        wait_for(nearly_done, timeout=300, what="generation 0 nearly done", interval=0.5)
        caught = wait_for(
            lambda: get_generation(kube_api, bumpy, "twin-g1"), timeout=300, what="g1", interval=0.02
        )
        operator.kill()
        assert (caught.get("status") or {}).get("phase") in (None, "Breeding"), caught.get("status")
        operator.start()

        for ns in (steady, bumpy):
            wait_phase(kube_api, ns, "twin", ("Succeeded",), 600, started[ns])
            kubectl(
                "patch", "population", "twin", "-n", ns, "--type=merge", "-p", '{"spec":{"maxGenerations":3}}'
            )
        for ns in (steady, bumpy):

            def third(ns: str = ns) -> JSON | None:
                status = get_population(kube_api, ns, "twin").get("status") or {}
                finished = status.get("phase") == "Succeeded" and status.get("completedGenerations") == 3
                return status if finished else None

            wait_for(
                third,
                timeout=600,
                what=f"{ns}/twin resumed to 3 generations",
                on_timeout=started[ns].describe,
            )

        views = {ns: _generation_views(kube_api, ns, "twin", 3) for ns in (steady, bumpy)}
        assert views[steady] == views[bumpy]
        adapters = {ns: _adapters(s3_server, f"{ns}-prefix/twin/") for ns in (steady, bumpy)}
        assert len(adapters[steady]) > 30
        assert adapters[steady] == adapters[bumpy]
        best = {ns: get_population(kube_api, ns, "twin")["status"]["best"] for ns in (steady, bumpy)}
        assert best[steady]["fitness"] == best[bumpy]["fitness"]

        jobs = jobs_of(kube_api, bumpy, "twin")
        assert len(jobs) == 4 + 3 + 3
        pods = Counter(name.rsplit("-", 1)[0] for ns, name in kubelet.pods_run() if ns == bumpy)
        assert set(pods.values()) == {1}, pods  # every Job ran exactly one Pod: nothing ran twice
        assert sorted(pods) == sorted(j["metadata"]["name"] for j in jobs)
        assert started[steady].starts == 1
        assert operator.starts == 3

        kubectl("delete", "population", "twin", "-n", bumpy, "--wait=true", "--timeout=60s")
        assert s3_objects(s3_server, f"{bumpy}-prefix/twin/") == {}  # storage.cleanup: true
        kubectl("delete", "population", "twin", "-n", steady, "--wait=true", "--timeout=60s")
        assert "best/best.json" in s3_objects(s3_server, f"{steady}-prefix/twin/")  # kept by default
    finally:
        kube_api.delete(f"/api/v1/namespaces/{bumpy}")
