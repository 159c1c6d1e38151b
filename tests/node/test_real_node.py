"""The real node itself: Ready with GPUs advertised, runs the trainer image under the restricted security
context with a read-only root filesystem, serves ``kubectl logs``, and its Pods reach the apiserver
through the ``kubernetes`` Service with their own ServiceAccount token (in-cluster config)."""

from __future__ import annotations

import json
import secrets

import pytest

from tests.support.controlplane import ControlPlane
from tests.support.fixtures import Kubectl
from tests.support.node import GPUS, RealNode
from tests.support.waiting import wait_for

# The first test also starts the node: importing the two multi-GB images takes minutes on a busy machine.
pytestmark = [pytest.mark.node, pytest.mark.slow, pytest.mark.timeout(3600)]

IN_CLUSTER = """
import json, os, ssl, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
request = urllib.request.Request(f"https://{host}:{port}/version")
request.add_header("Authorization", "Bearer " + open(f"{sa}/token").read())
context = ssl.create_default_context(cafile=f"{sa}/ca.crt")
version = json.load(urllib.request.urlopen(request, context=context, timeout=10))["gitVersion"]
try:
    open("/probe", "w")
    root = "writable"
except OSError:
    root = "read-only"
print(json.dumps({"uid": os.getuid(), "service": host, "version": version, "root": root}))
"""


def _restricted_pod(name: str, image: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "probe",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["python", "-c", IN_CLUSTER],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "resources": {"limits": {"memory": "256Mi", "nvidia.com/gpu": "1"}},
                }
            ],
        },
    }


def test_the_node_is_ready_and_advertises_gpus(real_node: RealNode) -> None:
    status = real_node.api.get(f"/api/v1/nodes/{real_node.name}")["status"]
    assert status["allocatable"]["nvidia.com/gpu"] == str(GPUS)
    addresses = {a["type"]: a["address"] for a in status["addresses"]}
    assert addresses["InternalIP"] == real_node.network.host_ip
    assert status["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    print(f"\nnode start: {json.dumps({k: round(v, 1) for k, v in real_node.timings.items()})}")


def test_a_restricted_pod_reaches_the_apiserver_in_cluster_and_kubectl_logs_shows_it(
    real_node: RealNode, node_plane: ControlPlane, node_kubectl: Kubectl
) -> None:
    namespace = f"probe-{secrets.token_hex(3)}"
    node_kubectl("create", "namespace", namespace)
    node_kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    pod = _restricted_pod("probe", real_node.images["nora-trainer"].reference)
    node_kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(pod))

    def finished() -> str | None:
        phase = real_node.api.get(f"/api/v1/namespaces/{namespace}/pods/probe")["status"].get("phase")
        return phase if phase in ("Succeeded", "Failed") else None

    phase = wait_for(
        finished, timeout=300, what="probe Pod finished", interval=1, on_timeout=real_node.describe
    )
    logs = node_kubectl("logs", "-n", namespace, "probe").stdout
    assert phase == "Succeeded", logs
    report = json.loads(logs.strip().splitlines()[-1])
    assert report == {"uid": 65532, "service": "10.0.0.1", "version": "v1.34.4", "root": "read-only"}
    node_kubectl("delete", "namespace", namespace, "--wait=false")
