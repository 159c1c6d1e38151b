"""The operator's side of the Kueue contract, on the real control plane (no Kueue controller runs here).

With ``spec.queueName`` the operator creates every genome Job with the label
``kueue.x-k8s.io/queue-name`` and ``spec.suspend: true``. The real kube-controller-manager's Job
controller then starts no Pod, and the operator must treat the Job as queued: its genome stays Pending
(never Failed), the Population keeps Running and no retry is consumed. The test checks that this holds
over several of the operator's reconcile passes (counted with its ``nora_reconcile_duration_seconds``
metric, resync every second), then plays Kueue's part:

- admission: it unsuspends the Jobs (``spec.suspend: false``, as Kueue does when quota allows);
- preemption: it suspends a running Job again, the Job controller deletes its Pod, and the genome must go
  back to Pending, not Failed, with ``backoffLimit: 0`` so a counted failure would fail the Job at once;
  admitted again, it runs to the end and the Population succeeds.

The genome containers run the stand-in trainer behind a gate: each start is recorded in a file and the
container waits (at most two minutes) until the test opens its genome's gate, so a Job can be caught
while it runs.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from tests.integration.test_operator_support import (
    get_generation,
    get_population,
    jobs_of,
    population,
    s3_secret,
    wait_phase,
)
from tests.support.fixtures import Kubectl
from tests.support.kubeapi import JSON, KubeHTTP
from tests.support.kubelet import ProcessKubelet
from tests.support.operator import OperatorProcess, Operators
from tests.support.s3 import S3Server
from tests.support.standin import standin_command
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
QUEUE = "team-a"
NAME = "queued"
PREEMPTED, ADMITTED = f"{NAME}-g0-0", f"{NAME}-g0-1"
PASSES = 5
"""Reconcile passes over which a state must hold (resync every second: about five seconds)."""

GATE = """
import os, pathlib, sys, time
gates = pathlib.Path(sys.argv[1])
genome = os.environ["NORA_GENOME"]
with open(gates / f"{genome}.starts", "a") as starts:
    starts.write(f"{os.getpid()}\\n")
deadline = time.monotonic() + 120
while not (gates / f"{genome}.open").exists():
    if time.monotonic() > deadline:
        sys.exit(f"the gate of {genome} never opened")
    time.sleep(0.1)
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""


@pytest.fixture
def gates(tmp_path: Path) -> Path:
    folder = tmp_path / "gates"
    folder.mkdir()
    return folder


@pytest.fixture
def operator(operators: Operators, namespace: str, tmp_path: Path, gates: Path) -> OperatorProcess:
    """The operator, resyncing every second, whose genome containers run the gated stand-in trainer."""
    gate = tmp_path / "gate.py"
    gate.write_text(GATE)
    standin = standin_command(tmp_path)[1:]  # [script, "--genome"]
    command = [sys.executable, str(gate), str(gates), *standin]
    return operators.start(namespace, command=command, env={"NORA_RESYNC_SECONDS": "1"})


def _starts(gates: Path, genome: str) -> int:
    path = gates / f"{genome}.starts"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _holds(operator: OperatorProcess, check: Callable[[], str], what: str) -> None:
    """``check`` (which returns a problem, or "" when all is well) passes on every poll until the operator
    has made ``PASSES`` more reconcile passes; the first problem fails the test."""
    first = operator.reconcile_passes()
    problems: list[str] = []

    def probe() -> bool:
        problem = check()
        if problem:
            problems.append(problem)
            return True
        return operator.reconcile_passes() >= first + PASSES

    wait_for(probe, timeout=60, what=f"{PASSES} reconcile passes while {what}", on_timeout=operator.describe)
    assert not problems, f"while {what}: {problems[0]}\n{operator.describe()}"


def _job(kube_api: KubeHTTP, namespace: str, name: str) -> JSON:
    return kube_api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}")


def _set_suspend(kube_api: KubeHTTP, namespace: str, name: str, suspend: bool) -> None:
    """What Kueue does: admit (False) or preempt (True) a Job."""
    kube_api.patch(f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}", {"spec": {"suspend": suspend}})


def _conditions(job: JSON) -> dict[str, str]:
    return {c["type"]: c["status"] for c in (job.get("status") or {}).get("conditions") or []}


def _suspended(kube_api: KubeHTTP, namespace: str, name: str) -> bool:
    return _conditions(_job(kube_api, namespace, name)).get("Suspended") == "True"


def _genomes(kube_api: KubeHTTP, namespace: str) -> dict[str, JSON]:
    generation = get_generation(kube_api, namespace, f"{NAME}-g0") or {}
    return {g["id"]: g for g in (generation.get("status") or {}).get("genomes") or []}


def _pods(kube_api: KubeHTTP, namespace: str, job: str) -> list[JSON]:
    selector = f"batch.kubernetes.io/job-name={job}"
    return list(kube_api.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector=selector)["items"])


def _queued_problem(kube_api: KubeHTTP, namespace: str, genome: str) -> str:
    """ "" while ``genome``'s Job is suspended with no Pod, its genome Pending, the Population Running."""
    job = _job(kube_api, namespace, genome)
    status = job.get("status") or {}
    if not job["spec"].get("suspend") or status.get("active") or status.get("failed"):
        return f"Job {genome} is not quietly suspended: spec.suspend {job['spec'].get('suspend')}, {status}"
    if _conditions(job).get("Failed") == "True":
        return f"Job {genome} failed: {status}"
    if pods := _pods(kube_api, namespace, genome):
        return f"Job {genome} has Pods: {[p['metadata']['name'] for p in pods]}"
    entry = _genomes(kube_api, namespace).get(genome) or {}
    if entry.get("phase") != "Pending":
        return f"genome {genome} is {entry.get('phase')}, not Pending: {entry}"
    phase = (get_population(kube_api, namespace, NAME).get("status") or {}).get("phase")
    return "" if phase == "Running" else f"Population {NAME} is {phase}, not Running"


def _create_queued_population(
    kube_api: KubeHTTP, kubectl: Kubectl, namespace: str, s3: S3Server, operator: OperatorProcess
) -> list[JSON]:
    s3_secret(kube_api, namespace, s3)
    manifest = population(
        NAME,
        namespace,
        s3,
        populationSize=2,
        maxGenerations=1,
        queueName=QUEUE,
        selection={"method": "truncation", "survivors": 1, "elites": 1, "tournamentSize": 2},
        retries={"backoffLimit": 0},
    )
    kubectl("apply", "-f", "-", stdin=manifest)
    return wait_for(
        lambda: j if len(j := jobs_of(kube_api, namespace, NAME)) == 2 else None,
        timeout=60,
        what="the two genome Jobs",
        on_timeout=operator.describe,
    )


def test_queued_jobs_stay_pending_until_admitted_and_a_preempted_genome_is_pending_again(
    kube_api: KubeHTTP,
    kubectl: Kubectl,
    kubelet: ProcessKubelet,
    namespace: str,
    s3_server: S3Server,
    operator: OperatorProcess,
    gates: Path,
) -> None:
    began = time.monotonic()
    jobs = _create_queued_population(kube_api, kubectl, namespace, s3_server, operator)
    for job in jobs:
        assert job["metadata"]["labels"][QUEUE_LABEL] == QUEUE
        assert job["spec"]["suspend"] is True
    names = sorted(j["metadata"]["name"] for j in jobs)
    assert names == [PREEMPTED, ADMITTED]
    for name in names:  # the Job controller has seen them: it marks a suspended Job Suspended
        wait_for(partial(_suspended, kube_api, namespace, name), timeout=60, what=f"Job {name} Suspended")
    _holds(
        operator,
        lambda: next(filter(None, (_queued_problem(kube_api, namespace, n) for n in names)), ""),
        "both Jobs are queued",
    )
    assert not [pod for ns, pod in kubelet.pods_run() if ns == namespace]
    assert all(_starts(gates, n) == 0 for n in names)

    (gates / f"{ADMITTED}.open").touch()  # ADMITTED runs through; PREEMPTED waits at its gate
    for name in names:
        _set_suspend(kube_api, namespace, name, False)
    _preempt_while_running(kube_api, namespace, operator, gates)

    (gates / f"{PREEMPTED}.open").touch()
    _set_suspend(kube_api, namespace, PREEMPTED, False)
    done = wait_phase(kube_api, namespace, NAME, ("Succeeded", "Failed"), 120, operator)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    _assert_final(kube_api, namespace, gates)
    assert operator.tracebacks() == 0, operator.describe()
    print(f"queued, admitted, preempted and finished in {time.monotonic() - began:.1f}s")


def _preempt_while_running(
    kube_api: KubeHTTP, namespace: str, operator: OperatorProcess, gates: Path
) -> None:
    def running() -> bool:
        phases = {g: e.get("phase") for g, e in _genomes(kube_api, namespace).items()}
        return phases == {PREEMPTED: "Running", ADMITTED: "Succeeded"}

    wait_for(
        running,
        timeout=90,
        what=f"{PREEMPTED} Running and {ADMITTED} Succeeded",
        on_timeout=operator.describe,
    )
    assert _starts(gates, PREEMPTED) == 1

    _set_suspend(kube_api, namespace, PREEMPTED, True)  # Kueue preempts: the Job controller deletes the Pod
    wait_for(
        lambda: (
            not _pods(kube_api, namespace, PREEMPTED)
            and not (_job(kube_api, namespace, PREEMPTED).get("status") or {}).get("active")
        ),
        timeout=60,
        what=f"the Pod of the preempted Job {PREEMPTED} gone",
        on_timeout=operator.describe,
    )
    wait_for(
        lambda: (_genomes(kube_api, namespace).get(PREEMPTED) or {}).get("phase") == "Pending",
        timeout=30,
        what=f"genome {PREEMPTED} Pending again",
        on_timeout=lambda: f"{_genomes(kube_api, namespace)}\n{operator.describe()}",
    )
    _holds(operator, lambda: _queued_problem(kube_api, namespace, PREEMPTED), f"{PREEMPTED} is preempted")


def _assert_final(kube_api: KubeHTTP, namespace: str, gates: Path) -> None:
    genomes = _genomes(kube_api, namespace)
    assert {g: genomes[g]["phase"] for g in genomes} == {PREEMPTED: "Succeeded", ADMITTED: "Succeeded"}
    assert all(isinstance(genomes[g].get("fitness"), float) for g in genomes)
    generation = get_generation(kube_api, namespace, f"{NAME}-g0")
    assert generation is not None
    assert (generation["status"]["succeeded"], generation["status"]["failed"]) == (2, 0)
    preempted = _job(kube_api, namespace, PREEMPTED)["status"]
    assert (preempted.get("succeeded"), preempted.get("failed") or 0) == (1, 0), preempted
    assert (_starts(gates, PREEMPTED), _starts(gates, ADMITTED)) == (2, 1)
