"""The chart's RBAC is sufficient and minimal, shown with the operator running under it.

Namespaced mode (``watchNamespaces: [<test namespace>]``), the mode with the least rights: the chart's
ServiceAccount, Role and RoleBinding are applied, a token for the ServiceAccount comes from the
TokenRequest API, and the operator runs with nothing but that token (its own kubeconfig). It evolves a
reduced quick-start Population (the real trainer on the toy model) to Succeeded with no reconcile error
and no Forbidden answer in its log: the rights suffice. Then, with the same token, everything the
operator does not need is refused: Secrets outside the served namespace (and listing them inside it),
writes in other namespaces, deleting, creating Pods or Populations, cluster-wide reads; the rules review
(``kubectl auth can-i --list``) shows exactly the chart's grants in the served namespace and none of them
elsewhere.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.test_operator_support import (
    s3_secret,
    wait_phase,
)
from tests.support.binaries import REPO_ROOT
from tests.support.controlplane import ControlPlane, write_kubeconfig
from tests.support.fixtures import Kubectl
from tests.support.helm import Doc, dump, env_of, grants, of_kind, one, render
from tests.support.kubeapi import ApiError, KubeHTTP
from tests.support.kubelet import ProcessKubelet
from tests.support.operator import Operators
from tests.support.s3 import S3Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RELEASE = "rbac"
ACCOUNT = f"{RELEASE}-nora"
QUICKSTART = REPO_ROOT / "manifests" / "examples" / "quickstart.yaml"
TRAINING = {
    "samplesPerPrompt": 4,
    "pairsPerPrompt": 1,
    "maxSteps": 2,
    "batchSize": 4,
    "maxPrompts": 4,
    "evalPrompts": 8,
    "maxNewTokens": 32,
}
# Variables the test harness sets itself (ports on 127.0.0.1; no /tmp emptyDir here).
HARNESS_ENV = ("NORA_METRICS_ADDRESS", "NORA_METRICS_PORT", "NORA_LIVENESS_ENDPOINT", "HOME")


@pytest.fixture
def extra_namespaces(kube_api: KubeHTTP) -> Iterator[list[str]]:
    """The operator's own namespace and an unrelated one, deleted afterwards."""
    names = [f"{prefix}-{secrets.token_hex(3)}" for prefix in ("rbac-release", "rbac-other")]
    for name in names:
        kube_api.post("/api/v1/namespaces", {"metadata": {"name": name}})
    yield names
    for name in names:
        kube_api.delete(f"/api/v1/namespaces/{name}")


def _install_rbac(kubectl: Kubectl, release_ns: str, served: str) -> list[Doc]:
    docs = render(release=RELEASE, namespace=release_ns, sets=(f"watchNamespaces={{{served}}}",))
    rbac = of_kind(docs, "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")
    assert {doc["kind"] for doc in rbac} == {"ServiceAccount", "Role", "RoleBinding"}
    kubectl("apply", "--server-side", "-f", "-", stdin=dump(rbac))
    return docs


def _token(kube_api: KubeHTTP, namespace: str) -> str:
    request = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": 3600},
    }
    answer = kube_api.post(f"/api/v1/namespaces/{namespace}/serviceaccounts/{ACCOUNT}/token", request)
    return str(answer["status"]["token"])


def _quickstart(namespace: str, s3: S3Server, toy: Path) -> str:
    """The quick-start Population, reduced: 2 genomes, 2 generations, tiny training budgets."""
    from nora.toy.data import write_dataset
    from nora.toy.model import build_toy_model

    model = build_toy_model(toy / "model")
    write_dataset(toy / "data")
    document: dict[str, Any] = yaml.safe_load(QUICKSTART.read_text())
    document["metadata"]["namespace"] = namespace
    spec = document["spec"]
    spec.update(populationSize=2, maxGenerations=2)
    spec["training"].update(TRAINING)
    spec["baseModel"] = {"uri": model.resolve().as_uri()}
    spec["dataset"] = {
        "train": (toy / "data" / "train.jsonl").as_uri(),
        "eval": (toy / "data" / "eval.jsonl").as_uri(),
    }
    spec["template"] = {"env": [{"name": "NORA_NUM_THREADS", "value": "1"}]}
    spec["storage"] = {
        "bucket": s3.bucket,
        "endpoint": s3.endpoint,
        "region": s3.region,
        "secretRef": {"name": "s3"},
    }
    return yaml.safe_dump(document)


def _reconcile_errors(metrics: str) -> float:
    found = re.findall(r"^nora_reconcile_errors_total\{[^}]*\} (\S+)$", metrics, re.MULTILINE)
    return sum(float(value) for value in found)


def _status(api: KubeHTTP, method: str, path: str, body: dict[str, Any] | None = None) -> int:
    try:
        content = "application/merge-patch+json" if method == "PATCH" else "application/json"
        api.request(method, path, body, content_type=content)
    except ApiError as error:
        return error.status
    return 200


def _rules_review(kubectl: Kubectl, namespace: str) -> dict[str, set[str]]:
    """``kubectl auth can-i --list``: resource to verbs, without the self-reviews every user may make
    (system:basic-user) and without the non-resource URLs."""
    table = kubectl("auth", "can-i", "--list", "-n", namespace).stdout.splitlines()[1:]
    rules: dict[str, set[str]] = {}
    for line in table:
        match = re.match(r"^(\S+)\s+\[\]\s+\[\]\s+\[(.*)\]$", line)
        if match and not match[1].startswith("selfsubject"):
            rules.setdefault(match[1], set()).update(match[2].split())
    return rules


def test_the_operator_evolves_the_quick_start_with_the_chart_rbac_and_nothing_more(
    control_plane: ControlPlane,
    kube_api: KubeHTTP,
    kubectl: Kubectl,
    kubelet: ProcessKubelet,
    s3_server: S3Server,
    namespace: str,
    extra_namespaces: list[str],
    tmp_path: Path,
    operators: Operators,
) -> None:
    release_ns, other_ns = extra_namespaces
    docs = _install_rbac(kubectl, release_ns, namespace)
    token = _token(kube_api, release_ns)
    kubeconfig = write_kubeconfig(
        tmp_path / "operator.kubeconfig", control_plane.server, control_plane.ca_cert, token
    )
    s3_secret(kube_api, namespace, s3_server)
    env = {k: v for k, v in env_of(one(docs, "Deployment")).items() if k not in HARNESS_ENV}
    assert env["NORA_NAMESPACES"] == namespace
    operator = operators.start(
        namespace, env={**env, "NORA_RESYNC_SECONDS": "5"}, kubeconfig=kubeconfig, real_trainer=True
    )
    kubectl("apply", "-f", "-", stdin=_quickstart(namespace, s3_server, tmp_path / "toy"))
    done = wait_phase(kube_api, namespace, "quickstart", ("Succeeded", "Failed"), 300, operator)
    assert done["status"]["phase"] == "Succeeded", operator.describe()
    assert done["status"]["completedGenerations"] == 2
    assert _reconcile_errors(operator.metrics()) == 0
    operator.stop()
    forbidden = [
        line for line in operator.log.read_text(errors="replace").splitlines() if "Forbidden" in line
    ]
    assert forbidden == [], "\n".join(forbidden[:5])
    assert operator.tracebacks() == 0, operator.describe()

    as_operator = KubeHTTP(server=control_plane.server, token=token, ca_cert=control_plane.ca_cert)
    _assert_everything_else_is_forbidden(as_operator, kube_api, namespace, release_ns, other_ns)
    operator_kubectl = Kubectl(kubeconfig, tmp_path / "kubectl-cache", kubectl.binary)
    served = _rules_review(operator_kubectl, namespace)
    granted: dict[str, set[str]] = {}
    for group, resource, verb in grants(one(docs, "Role")["rules"]):
        kind, slash, sub = resource.partition("/")  # populations/status -> populations.nora.dev/status
        granted.setdefault(f"{kind}.{group}{slash}{sub}" if group else resource, set()).add(verb)
    assert served == granted
    assert _rules_review(operator_kubectl, other_ns) == {}
    assert _rules_review(operator_kubectl, release_ns) == {}


def _assert_everything_else_is_forbidden(
    api: KubeHTTP, admin: KubeHTTP, served: str, release_ns: str, other_ns: str
) -> None:
    for namespace in (release_ns, other_ns):
        admin.post(
            f"/api/v1/namespaces/{namespace}/secrets",
            {"metadata": {"name": "unrelated"}, "stringData": {"k": "v"}},
        )
    assert _status(api, "GET", f"/api/v1/namespaces/{served}/secrets/s3") == 200  # what it needs
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x"}, "spec": {}}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {}}
    population = {
        "apiVersion": "nora.dev/v1alpha1",
        "kind": "Population",
        "metadata": {"name": "x"},
        "spec": {},
    }
    group = "/apis/nora.dev/v1alpha1/namespaces"
    refused: dict[str, tuple[str, str, dict[str, Any] | None]] = {
        "secret in another namespace": ("GET", f"/api/v1/namespaces/{other_ns}/secrets/unrelated", None),
        "secret in its own namespace": ("GET", f"/api/v1/namespaces/{release_ns}/secrets/unrelated", None),
        "list secrets where it serves": ("GET", f"/api/v1/namespaces/{served}/secrets", None),
        "patch a secret": ("PATCH", f"/api/v1/namespaces/{served}/secrets/s3", {"data": {}}),
        "job in another namespace": ("POST", f"/apis/batch/v1/namespaces/{other_ns}/jobs", job),
        "patch a population elsewhere": ("PATCH", f"{group}/{other_ns}/populations/quickstart", {"spec": {}}),
        "delete its population": ("DELETE", f"{group}/{served}/populations/quickstart", None),
        "create a population": ("POST", f"{group}/{served}/populations", population),
        "delete a generation": ("DELETE", f"{group}/{served}/generations/quickstart-g0", None),
        "delete a job": ("DELETE", f"/apis/batch/v1/namespaces/{served}/jobs/quickstart-g0-0", None),
        "create a pod": ("POST", f"/api/v1/namespaces/{served}/pods", pod),
        "list namespaces": ("GET", "/api/v1/namespaces", None),
        "list CRDs": ("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", None),
        "list nodes": ("GET", "/api/v1/nodes", None),
        "list pods elsewhere": ("GET", f"/api/v1/namespaces/{other_ns}/pods", None),
    }
    answers = {what: _status(api, method, path, body) for what, (method, path, body) in refused.items()}
    assert answers == dict.fromkeys(refused, 403)
