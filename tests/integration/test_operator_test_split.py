"""The operator scores a Population's test split with one genome-like Job before the run concludes.

The stand-in (:mod:`tests.support.standin`) plays ``nora test-score`` in that Job: it reads the task and
the split from S3 and answers each row by a hash of the adapter's bytes, so the scores are real numbers
computed from the run's adapters, not constants.
"""

from __future__ import annotations

import json

import pytest

from tests.integration.test_operator_support import (
    events_of,
    jobs_of,
    population,
    s3_objects,
    s3_secret,
    wait_phase,
)
from tests.support.crds import install_crds
from tests.support.fixtures import Kubectl
from tests.support.kubeapi import KubeHTTP
from tests.support.kubelet import ProcessKubelet
from tests.support.manifests import BASE_SPEC
from tests.support.operator import Operators
from tests.support.s3 import S3Server

pytestmark = pytest.mark.integration
ROWS = 30


@pytest.fixture(scope="module")
def crds_installed(kubectl: Kubectl) -> None:
    install_crds(kubectl)


def test_the_test_split_is_scored_by_one_job_and_lands_in_the_status_and_best_json(
    kube_api: KubeHTTP,
    kubectl: Kubectl,
    kubelet: ProcessKubelet,
    crds_installed: None,
    namespace: str,
    s3_server: S3Server,
    operators: Operators,
) -> None:
    operator = operators.start(namespace)
    s3_secret(kube_api, namespace, s3_server)
    rows = "".join(json.dumps({"question": f"{i}+2", "answer": str(i + 2)}) + "\n" for i in range(ROWS))
    key = f"data/{namespace}/test.jsonl"
    s3_server.client().put_object(Bucket=s3_server.bucket, Key=key, Body=rows.encode())
    dataset = {**BASE_SPEC["dataset"], "test": f"s3://{s3_server.bucket}/{key}", "testEnsemble": 3}
    kubectl("apply", "-f", "-", stdin=population("split", namespace, s3_server, dataset=dataset))
    done = wait_phase(kube_api, namespace, "split", ("Succeeded", "Failed"), 600, operator)
    status = done["status"]
    assert (status["phase"], status["reason"]) == ("Succeeded", "MaxGenerations")
    test = status["test"]  # there when the phase first reads Succeeded: recorded before concluding
    assert (test["phase"], test["rows"], test["generations"]) == ("Succeeded", ROWS, 2)
    assert test["best"]["genome"] == status["best"]["genome"]
    assert test["initial"]["genome"] == status["history"][0]["bestGenome"]
    assert test["gain"] == pytest.approx(test["best"]["accuracy"] - test["initial"]["accuracy"])
    ensemble = test["ensemble"]
    assert ensemble["genomes"][0] == status["best"]["genome"]
    assert len(set(ensemble["adapters"])) == 3
    assert all(a.startswith(f"s3://{s3_server.bucket}/nora/{namespace}/split/") for a in ensemble["adapters"])
    assert "test accuracy (30 rows" in status["message"]

    (job,) = [j for j in jobs_of(kube_api, namespace, "split") if j["metadata"]["name"] == "split-test-g1"]
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "test-score"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "Population"
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"][-2:] == [
        "--task",
        f"s3://{s3_server.bucket}/nora/{namespace}/split/test/g1/task.json",
    ]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert [name for ns, name in kubelet.pods_run() if ns == namespace and name.startswith("split-test-")]
    stored = s3_objects(s3_server, f"nora/{namespace}/split/")
    assert json.loads(stored["best/best.json"])["test"] == test
    assert json.loads(stored["population.json"])["test"]["best"]["accuracy"] == test["best"]["accuracy"]
    assert json.loads(stored["test/g1/test.json"])["rows"] == ROWS
    phases = [e["reason"] for e in events_of(kube_api, namespace, "Population", "split")]
    assert "TestScoreFailed" not in phases
    assert operator.tracebacks() == 0, operator.describe()
