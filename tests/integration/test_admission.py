"""What a broken spec gets on the real control plane once the schema let it in (issue 18).

A ``template`` the apiserver would refuse in a Job is found by a server-side dry-run before any Job is
created, and reported once as ``InvalidSpec`` naming ``spec.template.<field>``: no retry loop, no Event
or status write per pass.
"""

from __future__ import annotations

import functools

import pytest

from tests.integration.test_operator_support import (
    events_of,
    get_generation,
    get_population,
    jobs_of,
    population,
    ready_condition,
    s3_secret,
)
from tests.support.fixtures import Kubectl
from tests.support.kubeapi import JSON, KubeHTTP
from tests.support.operator import Operators
from tests.support.s3 import S3Server
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


BROKEN_TEMPLATES = {
    "noname": ({"env": [{"value": "no name"}]}, "spec.template.env[0].name: Field required"),
    "badsa": ({"serviceAccountName": "Not_A_Name"}, "spec.template.serviceAccountName: Invalid value"),
}
"""Refused by the Kubernetes client's own models, and by the apiserver's dry-run."""


def _ready(api: KubeHTTP, namespace: str, name: str) -> JSON | None:
    """The Ready condition once it says something other than Accepted."""
    ready = ready_condition(api, namespace, name)
    return ready if ready and ready["reason"] != "Accepted" else None


def test_a_template_the_apiserver_refuses_is_one_invalid_spec_naming_the_field(
    kube_api: KubeHTTP,
    kubectl: Kubectl,
    namespace: str,
    s3_server: S3Server,
    operators: Operators,
) -> None:
    operator = operators.start(namespace)
    s3_secret(kube_api, namespace, s3_server)
    for name, (template, _) in BROKEN_TEMPLATES.items():
        kubectl("apply", "-f", "-", stdin=population(name, namespace, s3_server, template=template))
    versions = {}
    for name, (_, expected) in BROKEN_TEMPLATES.items():
        ready = wait_for(
            functools.partial(_ready, kube_api, namespace, name),
            timeout=60,
            what=f"{name}: Ready=False",
            on_timeout=operator.describe,
        )
        assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
        assert ready["message"].startswith(expected)
        versions[name] = get_population(kube_api, namespace, name)["metadata"]["resourceVersion"]

    passes = operator.reconcile_passes()
    wait_for(lambda: operator.reconcile_passes() >= passes + 6, timeout=60, what="more passes")
    for name in BROKEN_TEMPLATES:
        assert get_population(kube_api, namespace, name)["metadata"]["resourceVersion"] == versions[name]
        events = events_of(kube_api, namespace, "Population", name)
        assert [(e["reason"], e.get("count", 1)) for e in events] == [("InvalidSpec", 1)]
        assert jobs_of(kube_api, namespace, name) == []
    assert operator.tracebacks() == 0, operator.describe()


def test_a_population_whose_jobs_are_refused_writes_its_error_once_and_backs_off(
    kube_api: KubeHTTP,
    kubectl: Kubectl,
    namespace: str,
    s3_server: S3Server,
    operators: Operators,
) -> None:
    """A quota that allows no Job: every create is refused with a 403 whose text (Audit-Id, Date) differs
    each time; one condition write and one Event, not one per pass, and one traceback at most."""
    quota = {"metadata": {"name": "no-jobs"}, "spec": {"hard": {"count/jobs.batch": "0"}}}
    kube_api.post(f"/api/v1/namespaces/{namespace}/resourcequotas", quota)
    operator = operators.start(namespace)
    s3_secret(kube_api, namespace, s3_server)
    kubectl("apply", "-f", "-", stdin=population("quota", namespace, s3_server))

    ready = wait_for(
        lambda: _ready(kube_api, namespace, "quota"),
        timeout=60,
        what="Ready=False",
        on_timeout=operator.describe,
    )
    assert (ready["status"], ready["reason"]) == ("False", "ReconcileError")
    assert ready["message"].startswith("Kubernetes API 403 Forbidden: ")
    assert "Audit-Id" not in ready["message"]
    version = get_population(kube_api, namespace, "quota")["metadata"]["resourceVersion"]
    passes = operator.reconcile_passes()
    wait_for(lambda: operator.reconcile_passes() >= passes + 3, timeout=120, what="three more passes")
    assert get_population(kube_api, namespace, "quota")["metadata"]["resourceVersion"] == version
    events = events_of(kube_api, namespace, "Population", "quota")
    warnings = [(e["reason"], e.get("count", 1)) for e in events if e["type"] == "Warning"]
    assert warnings == [("ReconcileError", 1)]
    assert operator.tracebacks() <= 1, operator.describe()


def test_a_genome_whose_pods_cannot_be_created_is_reported_within_a_minute(
    kube_api: KubeHTTP,
    kubectl: Kubectl,
    namespace: str,
    s3_server: S3Server,
    operators: Operators,
) -> None:
    """A PriorityClass that does not exist: the Jobs are created, their Pods never are (FailedCreate)."""
    operator = operators.start(namespace)
    s3_secret(kube_api, namespace, s3_server)
    template = {"priorityClassName": "no-such-priority"}
    kubectl("apply", "-f", "-", stdin=population("noprio", namespace, s3_server, template=template))

    def reported() -> list[JSON] | None:
        events = events_of(kube_api, namespace, "Population", "noprio")
        found = [e for e in events if e["reason"] == "FailedCreate"]
        return found or None

    events = wait_for(reported, timeout=60, what="a FailedCreate Event", on_timeout=operator.describe)
    assert events[0]["type"] == "Warning"
    assert events[0]["message"].startswith("noprio-g0-")
    assert "no-such-priority" in events[0]["message"]

    def blocked_genomes() -> list[str] | None:
        g0 = get_generation(kube_api, namespace, "noprio-g0") or {}
        genomes = (g0.get("status") or {}).get("genomes", [])
        found = [g["message"] for g in genomes if g.get("message", "").startswith("FailedCreate: ")]
        return found or None

    messages = wait_for(blocked_genomes, timeout=30, what="the cause in the Generation's genome status")
    assert all("no-such-priority" in m for m in messages)


def _condition(api: KubeHTTP, namespace: str, name: str, kind: str) -> JSON | None:
    conditions = (get_population(api, namespace, name).get("status") or {}).get("conditions") or []
    found: JSON | None = next((c for c in conditions if c["type"] == kind), None)
    return found


def test_pods_that_cannot_be_created_are_a_population_condition_until_they_can(
    kube_api: KubeHTTP,
    kubectl: Kubectl,
    namespace: str,
    s3_server: S3Server,
    operators: Operators,
) -> None:
    """``PodsCreatable=False/FailedCreate`` names a genome and the cause within a minute, and turns True
    once the missing PriorityClass exists and the Pods are created."""
    operator = operators.start(namespace)
    s3_secret(kube_api, namespace, s3_server)
    priority = f"prio-{namespace}"
    template = {"priorityClassName": priority}
    kubectl("apply", "-f", "-", stdin=population("later", namespace, s3_server, template=template))

    def blocked() -> JSON | None:
        condition = _condition(kube_api, namespace, "later", "PodsCreatable")
        return condition if condition and condition["status"] == "False" else None

    condition = wait_for(blocked, timeout=60, what="PodsCreatable=False", on_timeout=operator.describe)
    assert condition["reason"] == "FailedCreate"
    assert condition["message"].startswith("the Pods of genome later-g0-")
    assert priority in condition["message"]
    assert ready_condition(kube_api, namespace, "later")["status"] == "True"

    path = "/apis/scheduling.k8s.io/v1/priorityclasses"
    kube_api.post(
        path,
        {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": priority},
            "value": 10,
        },
    )
    try:

        def created() -> JSON | None:
            condition = _condition(kube_api, namespace, "later", "PodsCreatable")
            return condition if condition and condition["status"] == "True" else None

        cleared = wait_for(created, timeout=240, what="PodsCreatable=True", on_timeout=operator.describe)
        assert cleared["reason"] == "PodsCreated"
        genomes = (get_generation(kube_api, namespace, "later-g0") or {})["status"]["genomes"]
        assert not [g for g in genomes if g.get("message", "").startswith("FailedCreate: ")]
    finally:
        kube_api.delete(f"{path}/{priority}")
    assert operator.tracebacks() == 0, operator.describe()
