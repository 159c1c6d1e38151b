"""Tenants sharing one operator and one bucket, on the real control plane and S3 server (issue 18).

- two namespaces, one Population name, one bucket and prefix: each keeps its own keys, and deleting one
  with ``storage.cleanup`` deletes only what it wrote;
- a Population without ``storage.secretRef`` is refused, never served with the operator's own identity.
"""

from __future__ import annotations

import re

import pytest

from tests.integration.test_operator_support import (
    get_population,
    population,
    ready_condition,
    s3_objects,
    s3_secret,
    wait_phase,
)
from tests.support.fixtures import Kubectl
from tests.support.kubeapi import JSON, KubeHTTP
from tests.support.kubelet import ProcessKubelet
from tests.support.operator import Operators
from tests.support.s3 import S3Server
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


def test_a_namesake_in_another_namespace_neither_shares_nor_deletes_keys(
    kube_api: KubeHTTP,
    kubectl: Kubectl,
    kubelet: ProcessKubelet,
    namespace: str,
    s3_server: S3Server,
    operators: Operators,
) -> None:
    owner, intruder = namespace, f"{namespace}-x"
    kube_api.post("/api/v1/namespaces", {"metadata": {"name": intruder}})
    try:
        done = {}
        for ns in (owner, intruder):
            s3_secret(kube_api, ns, s3_server)
            done[ns] = operators.start(ns)
        kubectl("apply", "-f", "-", stdin=population("same", owner, s3_server, maxGenerations=1))
        wait_phase(kube_api, owner, "same", ("Succeeded",), 300, done[owner])
        kept = s3_objects(s3_server, f"nora/{owner}/same/")
        assert "best/best.json" in kept
        assert len(kept) > 20

        storage = {
            "bucket": s3_server.bucket,
            "endpoint": s3_server.endpoint,
            "secretRef": {"name": "s3"},
            "cleanup": True,
        }
        namesake = population("same", intruder, s3_server, storage=storage, suspend=True)
        kubectl("apply", "-f", "-", stdin=namesake)
        wait_phase(kube_api, intruder, "same", ("Stopped",), 120, done[intruder])
        wait_for(
            lambda: s3_objects(s3_server, f"nora/{intruder}/same/g0/"),
            timeout=60,
            what="the namesake's own generation record",
        )
        kubectl("delete", "population", "same", "-n", intruder, "--wait=true", "--timeout=60s")

        assert s3_objects(s3_server, f"nora/{intruder}/same/") == {}  # its own objects: deleted
        assert s3_objects(s3_server, f"nora/{owner}/same/") == kept  # the other tenant's: untouched
    finally:
        kube_api.delete(f"/api/v1/namespaces/{intruder}")


def test_without_a_secret_the_operator_lends_no_identity_unless_the_admin_allows(
    kube_api: KubeHTTP,
    kubectl: Kubectl,
    namespace: str,
    s3_server: S3Server,
    operators: Operators,
) -> None:
    """The operator process has working AWS credentials in its environment; a Population naming no
    Secret must not get to use them."""
    operator = operators.start(namespace, env=s3_server.env())
    storage = {"bucket": s3_server.bucket, "endpoint": s3_server.endpoint, "prefix": f"{namespace}-p"}
    kubectl("apply", "-f", "-", stdin=population("nosecret", namespace, s3_server, storage=storage))

    ready = wait_for(
        lambda: ready_condition(kube_api, namespace, "nosecret"),
        timeout=60,
        what="a Ready condition",
        on_timeout=operator.describe,
    )
    assert (ready["status"], ready["reason"]) == ("False", "StorageUnavailable")
    assert ready["message"].startswith("spec.storage.secretRef: required in this namespace")
    assert get_population(kube_api, namespace, "nosecret")["status"]["phase"] == "Pending"
    assert s3_objects(s3_server, f"{namespace}-p/") == {}  # nothing written with the operator's identity

    operator.stop()
    allowed = operators.start(
        namespace, env={**s3_server.env(), "NORA_AMBIENT_CREDENTIALS_NAMESPACES": f"other,{namespace}"}
    )
    wait_phase(kube_api, namespace, "nosecret", ("Running", "Succeeded"), 120, allowed)
    wait_for(
        lambda: s3_objects(s3_server, f"{namespace}-p/{namespace}/nosecret/g0/"),
        timeout=60,
        what="the allowed namespace's objects",
    )


def test_the_operator_reaches_only_allowed_endpoints_and_reports_s3_errors_by_code(
    kube_api: KubeHTTP,
    kubectl: Kubectl,
    namespace: str,
    s3_server: S3Server,
    operators: Operators,
) -> None:
    allowed = s3_server.endpoint.removeprefix("http://")
    operator = operators.start(namespace, env={"NORA_S3_ENDPOINT_ALLOWLIST": f"s3.example.com,{allowed}"})
    s3_secret(kube_api, namespace, s3_server)
    elsewhere = {"bucket": s3_server.bucket, "endpoint": "http://127.0.0.1:9", "secretRef": {"name": "s3"}}
    kubectl("apply", "-f", "-", stdin=population("away", namespace, s3_server, storage=elsewhere))
    keys = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"}
    body = {"metadata": {"name": "wrong"}, "stringData": keys}
    kube_api.post(f"/api/v1/namespaces/{namespace}/secrets", body)
    wrong = {"bucket": s3_server.bucket, "endpoint": s3_server.endpoint, "secretRef": {"name": "wrong"}}
    kubectl("apply", "-f", "-", stdin=population("denied", namespace, s3_server, storage=wrong))

    def failing(name: str) -> JSON | None:
        ready = ready_condition(kube_api, namespace, name)
        return ready if ready is not None and ready["status"] == "False" else None

    away = wait_for(lambda: failing("away"), timeout=60, what="away refused", on_timeout=operator.describe)
    assert away["reason"] == "StorageUnavailable"
    assert away["message"].startswith("spec.storage.endpoint: 127.0.0.1:9 is not among the S3 endpoints")
    denied = wait_for(lambda: failing("denied"), timeout=60, what="denied", on_timeout=operator.describe)
    assert denied["reason"] == "ReconcileError"
    assert re.fullmatch(r"S3 PutObject: [A-Za-z]+", denied["message"]), denied  # a code, no server text
