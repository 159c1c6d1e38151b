"""A genome whose Pods find the S3 store unreachable, on the real control plane and S3 server (issue 18).

The stand-in's ``NORA_STANDIN_UNREACHABLE`` points one genome's S3 client at a closed port until the test
restores it: botocore gives up after its own retries, the trainer contract says exit 75, and the Job's
``podFailurePolicy`` ignores that exit, so the Job controller replaces the Pod without counting a failure.
With ``backoffLimit: 0`` one counted failure would fail the Job, and with it the genome.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nora.evolution import contract
from tests.integration.test_operator_support import get_generation, population, s3_secret, wait_phase
from tests.support.fixtures import Kubectl
from tests.support.kubeapi import JSON, KubeHTTP
from tests.support.kubelet import ProcessKubelet
from tests.support.operator import Operators
from tests.support.s3 import S3Server
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


def _exit_codes(api: KubeHTTP, namespace: str, job: str) -> list[int]:
    """The exit codes of the Job's finished Pods."""
    pods = api.get(
        f"/api/v1/namespaces/{namespace}/pods", labelSelector=f"batch.kubernetes.io/job-name={job}"
    )
    return [
        int(state["terminated"]["exitCode"])
        for pod in pods["items"]
        for status in (pod.get("status") or {}).get("containerStatuses") or []
        if "terminated" in (state := status.get("state") or {})
    ]


def test_pods_that_find_the_store_unreachable_do_not_use_up_the_genomes_attempts(
    kube_api: KubeHTTP,
    kubectl: Kubectl,
    kubelet: ProcessKubelet,
    namespace: str,
    s3_server: S3Server,
    operators: Operators,
    tmp_path: Path,
) -> None:
    operator = operators.start(namespace)
    s3_secret(kube_api, namespace, s3_server)
    genome, restored = "cut-g0-1", tmp_path / "restored"
    env = [{"name": "NORA_STANDIN_UNREACHABLE", "value": f"{genome}={restored}"}]
    spec = {"maxGenerations": 1, "retries": {"backoffLimit": 0}, "template": {"env": env}}
    kubectl("apply", "-f", "-", stdin=population("cut", namespace, s3_server, **spec))

    def two_cut_off() -> list[int] | None:
        codes = _exit_codes(kube_api, namespace, genome)
        return codes if codes.count(contract.EXIT_TRANSIENT) >= 2 else None

    codes = wait_for(
        two_cut_off, timeout=300, what=f"two Pods of {genome} exiting 75", on_timeout=operator.describe
    )
    assert set(codes) == {contract.EXIT_TRANSIENT}
    job: JSON = kube_api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/{genome}")
    assert not (job.get("status") or {}).get("failed")
    restored.touch()

    final = wait_phase(kube_api, namespace, "cut", ("Succeeded", "Failed"), 300, operator)["status"]
    assert final["phase"] == "Succeeded", final
    job = kube_api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/{genome}")
    assert not job["status"].get("failed"), job["status"]
    assert job["status"]["succeeded"] == 1
    g0 = get_generation(kube_api, namespace, "cut-g0") or {}
    result = next(g for g in g0["status"]["genomes"] if g["id"] == genome)
    assert (result["phase"], result["attempts"]) == ("Succeeded", 1)
    assert operator.tracebacks() == 0, operator.describe()
