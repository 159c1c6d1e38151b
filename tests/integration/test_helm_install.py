"""The chart's rendered objects install into the real apiserver, in every scenario of helm/nora/ci/.

Each scenario is rendered with ``helm template --include-crds`` and applied with ``kubectl apply
--server-side`` (CRDs first, then the rest) into fresh namespaces that enforce the ``restricted`` Pod
Security Standard; the objects must exist afterwards, the operator's Pod template must be admitted under
``restricted`` (while a root variant of it is refused), and the ServiceAccount must hold its rights
where the mode says. The ServiceMonitor and PrometheusRule kinds come from minimal stand-in CRDs
(tests/fixtures/monitoring-crds.yaml). The plain install (``kubectl apply -k manifests/install``) is
checked the same way. Cluster-scoped objects are deleted afterwards; the CRDs stay (other tests share them).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.binaries import REPO_ROOT
from tests.support.fixtures import Kubectl
from tests.support.helm import CI_VALUES, Doc, dump, of_kind, one, render
from tests.support.kubeapi import KubeHTTP

pytestmark = pytest.mark.integration

MONITORING_CRDS = REPO_ROOT / "tests" / "fixtures" / "monitoring-crds.yaml"
INSTALL = REPO_ROOT / "manifests" / "install"
CLUSTER_KINDS = ("ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering")
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/warn": "restricted",
}


@pytest.fixture(scope="module")
def monitoring_crds(kubectl: Kubectl) -> None:
    kubectl("apply", "--server-side", "-f", str(MONITORING_CRDS))
    for name in ("servicemonitors.monitoring.coreos.com", "prometheusrules.monitoring.coreos.com"):
        kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")


@pytest.fixture
def cleanup(kubectl: Kubectl) -> Iterator[list[tuple[str, str]]]:
    """(kind, name) of cluster-scoped objects and namespaces the test creates, deleted afterwards."""
    created: list[tuple[str, str]] = []
    yield created
    for kind, name in reversed(created):
        kubectl("delete", kind, name, "--ignore-not-found", "--wait=false", check=False)


def _namespace(kube_api: KubeHTTP, cleanup: list[tuple[str, str]], prefix: str) -> str:
    name = f"{prefix}-{secrets.token_hex(3)}"
    kube_api.post("/api/v1/namespaces", {"metadata": {"name": name, "labels": RESTRICTED}})
    cleanup.append(("namespace", name))
    return name


def _apply(kubectl: Kubectl, docs: list[Doc], cleanup: list[tuple[str, str]]) -> None:
    """Server-side apply: the CRDs first (wait until served), then everything else."""
    crds = of_kind(docs, "CustomResourceDefinition")
    rest = [doc for doc in docs if doc["kind"] != "CustomResourceDefinition"]
    cleanup.extend((doc["kind"], doc["metadata"]["name"]) for doc in rest if doc["kind"] in CLUSTER_KINDS)
    if crds:
        kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=dump(crds))
        for doc in crds:
            kubectl("wait", "--for=condition=Established", f"crd/{doc['metadata']['name']}", "--timeout=60s")
    kubectl("apply", "--server-side", "--field-manager=nora-chart-test", "-f", "-", stdin=dump(rest))


def _assert_present(kubectl: Kubectl, docs: list[Doc]) -> None:
    listed = json.loads(kubectl("get", "-f", "-", "-o", "json", stdin=dump(docs)).stdout)
    items = listed.get("items", [listed])
    found = [(item["kind"], item["metadata"].get("namespace"), item["metadata"]["name"]) for item in items]
    wanted = [(doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"]) for doc in docs]
    assert sorted(found, key=str) == sorted(wanted, key=str)


def _assert_restricted_admits_the_operator_pod(kubectl: Kubectl, deployment: Doc) -> None:
    """A Pod from the Deployment's template passes ``restricted``; a root variant of it does not."""
    namespace = deployment["metadata"]["namespace"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "nora-pss-check", "namespace": namespace},
        "spec": deployment["spec"]["template"]["spec"],
    }
    admitted = kubectl("create", "--dry-run=server", "-f", "-", stdin=json.dumps(pod))
    assert "PodSecurity" not in admitted.stderr, admitted.stderr
    rooted = json.loads(json.dumps(pod))
    rooted["spec"]["securityContext"].update({"runAsUser": 0, "runAsNonRoot": False})
    for container in rooted["spec"]["containers"]:
        container["securityContext"].update({"runAsUser": 0, "runAsNonRoot": False})
    refused = kubectl("create", "--dry-run=server", "-f", "-", stdin=json.dumps(rooted), check=False)
    assert refused.returncode != 0
    assert "violates PodSecurity" in refused.stderr, refused.stderr


def _can(kubectl: Kubectl, account: str, verb: str, resource: str, namespace: str) -> bool:
    answer = kubectl("auth", "can-i", f"--as={account}", verb, resource, "-n", namespace, check=False)
    return answer.stdout.strip() == "yes"


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda path: path.name.removesuffix("-values.yaml"))
def test_each_scenario_applies_and_its_objects_exist(
    values: Path,
    kubectl: Kubectl,
    kube_api: KubeHTTP,
    monitoring_crds: None,
    cleanup: list[tuple[str, str]],
) -> None:
    release = f"t{secrets.token_hex(3)}"
    namespace = _namespace(kube_api, cleanup, "nora-release")
    scenario = yaml.safe_load(values.read_text()) or {}
    sets = [f"peering.name={release}-peering"]
    watched = [_namespace(kube_api, cleanup, "nora-watched") for _ in scenario.get("watchNamespaces", [])]
    if watched:
        sets.append("watchNamespaces={" + ",".join(watched) + "}")
    docs = render(release=release, namespace=namespace, values=(values,), sets=sets, include_crds=True)
    _apply(kubectl, docs, cleanup)
    installed = [doc for doc in docs if doc["kind"] != "CustomResourceDefinition"]
    _assert_present(kubectl, installed)
    deployment = one(docs, "Deployment")
    _assert_restricted_admits_the_operator_pod(kubectl, deployment)

    account = f"system:serviceaccount:{namespace}:{release}-nora"
    served = watched or [namespace, "default"]
    for target in served:
        assert _can(kubectl, account, "create", "jobs.batch", target)
        assert _can(kubectl, account, "get", "secrets", target)
        assert not _can(kubectl, account, "list", "secrets", target)
        assert not _can(kubectl, account, "delete", "populations.nora.dev", target)
    if watched:
        assert not _can(kubectl, account, "create", "jobs.batch", namespace)
        assert not _can(kubectl, account, "get", "secrets", "default")
    kinds = {doc["kind"] for doc in installed}
    assert ("ServiceMonitor" in kinds) == ("ServiceMonitor" in values.read_text())
    assert ("ClusterKopfPeering" in kinds) == (scenario.get("replicas", 1) > 1)


def test_the_plain_install_applies_with_kubectl_apply_k(
    kubectl: Kubectl, cleanup: list[tuple[str, str]]
) -> None:
    docs = [doc for doc in yaml.safe_load_all((INSTALL / "nora.yaml").read_text()) if doc]
    namespace = one(docs, "Namespace")["metadata"]["name"]
    cleanup.extend(
        [
            *((d["kind"], d["metadata"]["name"]) for d in of_kind(docs, *CLUSTER_KINDS)),
            ("namespace", namespace),
        ]
    )
    kubectl("apply", "-k", str(INSTALL))
    installed = [doc for doc in docs if doc["kind"] != "CustomResourceDefinition"]
    _assert_present(kubectl, installed)
    labels = json.loads(kubectl("get", "namespace", namespace, "-o", "json").stdout)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    _assert_restricted_admits_the_operator_pod(kubectl, one(docs, "Deployment"))
    account = f"system:serviceaccount:{namespace}:nora"
    assert _can(kubectl, account, "watch", "populations.nora.dev", "default")
    assert not _can(kubectl, account, "update", "secrets", "default")
