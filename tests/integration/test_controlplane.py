"""The test control plane is real: CRD validation, the Job and garbage-collector controllers, Secret
references through the process-kubelet, and an S3 round trip through versitygw."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.fixtures import TEST_GPUS, Kubectl
from tests.support.kubeapi import JSON, KubeHTTP
from tests.support.kubelet import ContainerOutput, ProcessKubelet
from tests.support.s3 import S3Server
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

WIDGET_CRD: JSON = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.test.nora.dev"},
    "spec": {
        "group": "test.nora.dev",
        "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "shortNames": ["wdg"]},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {
                                    "size": {"type": "integer", "minimum": 1, "maximum": 5},
                                    "color": {"type": "string", "enum": ["red", "green"]},
                                    "survivors": {"type": "integer"},
                                },
                                "x-kubernetes-validations": [
                                    {
                                        "rule": "!has(self.survivors) || self.survivors <= self.size",
                                        "message": "survivors must not exceed size",
                                    }
                                ],
                            }
                        },
                    }
                },
            }
        ],
    },
}


def _widget(name: str, namespace: str, spec: JSON) -> str:
    return json.dumps(
        {
            "apiVersion": "test.nora.dev/v1",
            "kind": "Widget",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


def _job(name: str, namespace: str, code: str, backoff_limit: int = 0, owner: JSON | None = None) -> JSON:
    meta: JSON = {"name": name, "namespace": namespace}
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 2,
                    "containers": [
                        {"name": "main", "image": "python:3.11-slim", "command": ["python", "-c", code]}
                    ],
                }
            },
        },
    }


def _job_condition(api: KubeHTTP, namespace: str, name: str, ctype: str) -> JSON | None:
    job = api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}")
    conditions = (job.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == ctype and c["status"] == "True"), None)


def _job_pods(api: KubeHTTP, namespace: str, job: str) -> list[JSON]:
    pods = api.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector=f"job-name={job}")["items"]
    return list(pods)


def test_crd_schema_rejects_invalid_resource(kubectl: Kubectl, namespace: str) -> None:
    kubectl("apply", "-f", "-", stdin=json.dumps(WIDGET_CRD))
    kubectl("wait", "--for=condition=Established", "crd/widgets.test.nora.dev", "--timeout=60s")

    kubectl("apply", "-f", "-", stdin=_widget("ok", namespace, {"size": 3, "color": "red", "survivors": 2}))

    too_big = kubectl("apply", "-f", "-", stdin=_widget("big", namespace, {"size": 9}), check=False)
    assert too_big.returncode != 0
    assert (
        "spec.size: Invalid value: 9: spec.size in body should be less than or equal to 5" in too_big.stderr
    )

    bad_enum = kubectl(
        "apply", "-f", "-", stdin=_widget("blue", namespace, {"size": 1, "color": "blue"}), check=False
    )
    assert bad_enum.returncode != 0
    assert 'spec.color: Unsupported value: "blue": supported values: "red", "green"' in bad_enum.stderr

    cel = kubectl(
        "apply", "-f", "-", stdin=_widget("cel", namespace, {"size": 1, "survivors": 4}), check=False
    )
    assert cel.returncode != 0
    assert "survivors must not exceed size" in cel.stderr

    listed = kubectl("get", "wdg", "-n", namespace, "-o", "jsonpath={.items[*].metadata.name}")
    assert listed.stdout.split() == ["ok"]


def test_job_runs_python_and_completes(
    kubectl: Kubectl, kube_api: KubeHTTP, kubelet: ProcessKubelet, namespace: str
) -> None:
    code = (
        "import os, sys; print('hello from', os.environ['HOSTNAME']); "
        "open(os.environ['NORA_TERMINATION_LOG'], 'w').write('fitness=0.75')"
    )
    kubectl("apply", "-f", "-", stdin=json.dumps(_job("hello", namespace, code)))

    wait_for(
        lambda: _job_condition(kube_api, namespace, "hello", "Complete"),
        timeout=60,
        what="Job hello Complete",
        on_timeout=kubelet.describe,
    )
    job = kube_api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/hello")
    assert job["status"]["succeeded"] == 1
    (pod,) = _job_pods(kube_api, namespace, "hello")
    pod_name = pod["metadata"]["name"]
    assert pod["status"]["phase"] == "Succeeded"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["message"]) == (0, "fitness=0.75")
    out = kubelet.output(namespace, pod_name)
    assert out.stdout.strip() == f"hello from {pod_name}"


def test_failing_pod_is_retried_until_backoff_limit(
    kube_api: KubeHTTP, kubelet: ProcessKubelet, namespace: str
) -> None:
    code = "import sys; print('attempt failed', file=sys.stderr); sys.exit(3)"
    kube_api.post(
        f"/apis/batch/v1/namespaces/{namespace}/jobs", _job("flaky", namespace, code, backoff_limit=1)
    )

    # the Job controller waits ~10 s (its pod-failure backoff) before the retry
    failed = wait_for(
        lambda: _job_condition(kube_api, namespace, "flaky", "Failed"),
        timeout=120,
        what="Job flaky Failed",
        on_timeout=kubelet.describe,
    )
    assert failed["reason"] == "BackoffLimitExceeded"
    job = kube_api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/flaky")
    assert job["status"]["failed"] == 2
    ran = [name for ns, name in kubelet.pods_run() if ns == namespace]
    assert len(ran) == 2, ran
    for name in ran:
        out = kubelet.output(namespace, name)
        assert (out.exit_code, out.stderr.strip()) == (3, "attempt failed")


def test_deleting_owner_garbage_collects_its_job(
    kube_api: KubeHTTP, kube_client: Any, kubelet: ProcessKubelet, namespace: str
) -> None:
    from kubernetes import client

    core = client.CoreV1Api(kube_client)
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"), data={"k": "v"})
    owner = core.create_namespaced_config_map(namespace, body)
    assert owner.metadata is not None
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    job = _job("owned", namespace, "import time; print('working', flush=True); time.sleep(600)", owner=ref)
    kube_api.post(f"/apis/batch/v1/namespaces/{namespace}/jobs", job)

    def pod_running() -> str | None:
        pods = _job_pods(kube_api, namespace, "owned")
        running = [p for p in pods if p.get("status", {}).get("phase") == "Running"]
        return str(running[0]["metadata"]["name"]) if running else None

    pod_name = wait_for(
        pod_running, timeout=60, what="the owned Job's Pod Running", on_timeout=kubelet.describe
    )

    core.delete_namespaced_config_map("owner", namespace)
    job_path = f"/apis/batch/v1/namespaces/{namespace}/jobs/owned"
    wait_for(lambda: kube_api.get_or_none(job_path) is None, timeout=60, what="Job owned garbage-collected")
    wait_for(
        lambda: not _job_pods(kube_api, namespace, "owned"),
        timeout=60,
        what="its Pod deleted",
        on_timeout=kubelet.describe,
    )

    def killed() -> ContainerOutput | None:
        out = kubelet.output(namespace, pod_name)
        return out if out.exit_code is not None else None

    out = wait_for(killed, timeout=30, what="the Pod's process killed")
    assert out.exit_code == 128 + 15  # SIGTERM
    assert out.stdout == "working\n"


def _pod(name: str, namespace: str, code: str, env: list[JSON] | None = None, gpus: int = 0) -> JSON:
    container: JSON = {"name": "main", "image": "python:3.11-slim", "command": ["python", "-c", code]}
    if env:
        container["env"] = env
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
        "spec": {"restartPolicy": "Never", "containers": [container]},
    }  # fmt: skip


def test_pod_reads_secret_through_secret_key_ref(
    kube_api: KubeHTTP, kubelet: ProcessKubelet, namespace: str
) -> None:
    env: list[JSON] = [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
        {"name": "GREETING", "value": "hi-$(POD)"},
    ]
    code = "import os; print(*(os.environ[k] for k in ('TOKEN', 'POD', 'NS', 'MODE', 'GREETING')))"
    kube_api.post(f"/api/v1/namespaces/{namespace}/configmaps",
                  {"metadata": {"name": "settings"}, "data": {"mode": "fast"}})  # fmt: skip
    kube_api.post(f"/api/v1/namespaces/{namespace}/pods", _pod("reader", namespace, code, env))
    pod_path = f"/api/v1/namespaces/{namespace}/pods/reader"

    def waiting_reason() -> str | None:  # like a kubelet: no Secret yet, so the container cannot start
        statuses = kube_api.get(pod_path).get("status", {}).get("containerStatuses") or []
        return statuses[0]["state"].get("waiting", {}).get("reason") if statuses else None

    wait_for(lambda: waiting_reason() == "CreateContainerConfigError", timeout=30, what="config error")
    secret = {"metadata": {"name": "creds"}, "stringData": {"token": "s3cr3t-Value"}}
    kube_api.post(f"/api/v1/namespaces/{namespace}/secrets", secret)

    wait_for(lambda: kube_api.get(pod_path)["status"]["phase"] == "Succeeded", timeout=60,
             what="Pod reader Succeeded", on_timeout=kubelet.describe)  # fmt: skip
    printed = kubelet.output(namespace, "reader").stdout.split()
    assert printed == ["s3cr3t-Value", "reader", namespace, "fast", "hi-reader"]


def test_node_advertises_gpus_and_pods_beyond_them_stay_pending(
    kube_api: KubeHTTP, kubelet: ProcessKubelet, namespace: str
) -> None:
    node = kube_api.get(f"/api/v1/nodes/{kubelet.config.node_name}")
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == str(TEST_GPUS)
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"

    greedy = _pod("greedy", namespace, "pass", gpus=TEST_GPUS + 1)
    kube_api.post(f"/api/v1/namespaces/{namespace}/pods", greedy)

    def unschedulable() -> JSON | None:
        conds = (
            kube_api.get(f"/api/v1/namespaces/{namespace}/pods/greedy").get("status", {}).get("conditions")
        )
        return next((c for c in conds or [] if c["type"] == "PodScheduled" and c["status"] == "False"), None)

    cond = wait_for(unschedulable, timeout=30, what="PodScheduled=False")
    assert cond["reason"] == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in cond["message"]
    assert "nodeName" not in kube_api.get(f"/api/v1/namespaces/{namespace}/pods/greedy")["spec"]


def test_boto3_round_trips_an_object(s3_server: S3Server) -> None:
    s3 = s3_server.client()
    body = b"adapter bytes \x00\x01" * 1000
    s3.put_object(
        Bucket=s3_server.bucket,
        Key="pop/g0/genome-0/adapter_model.safetensors",
        Body=body,
        Metadata={"fitness": "0.5"},
    )
    got = s3.get_object(Bucket=s3_server.bucket, Key="pop/g0/genome-0/adapter_model.safetensors")
    assert got["Body"].read() == body
    assert got["Metadata"] == {"fitness": "0.5"}
    listed = s3.list_objects_v2(Bucket=s3_server.bucket, Prefix="pop/g0/")
    assert [o["Key"] for o in listed["Contents"]] == ["pop/g0/genome-0/adapter_model.safetensors"]
    s3.delete_object(Bucket=s3_server.bucket, Key="pop/g0/genome-0/adapter_model.safetensors")
    assert s3.list_objects_v2(Bucket=s3_server.bucket, Prefix="pop/").get("KeyCount") == 0
