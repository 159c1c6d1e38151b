"""The README's install path on a real node: the chart's operator runs in-cluster and evolves a Population.

``helm install`` of helm/nora with the locally built operator image (pull policy Never) must bring the
operator Pod to Ready through its probes; the operator then works with nothing but its ServiceAccount.
Two toy Populations (base model and data uploaded to the S3 server, given as ``s3://`` URIs) run in a
namespace that enforces the ``restricted`` Pod Security Standard, their genome Jobs on the trainer image
with a read-only root filesystem:

- ``toy`` evolves to Succeeded; ``kubectl logs job/<genome>`` shows the trainer's progress and the
  exported best adapter loads with ``PeftModel.from_pretrained``;
- ``starved`` has a memory limit too small for the trainer: its Pods are OOMKilled, each Job is retried
  as ``retries.backoffLimit`` allows, and the Generation reports OOMKilled.

Deleting a Population removes its Jobs and Pods.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.integration.test_operator_support import (
    get_generation,
    get_population,
    jobs_of,
    population,
    s3_objects,
)
from tests.support.fixtures import Kubectl
from tests.support.kubeapi import JSON, KubeHTTP
from tests.support.node import RealNode
from tests.support.nodechart import RELEASE, SYSTEM, InstalledOperator, ToyUris, upload_toy
from tests.support.s3 import S3Server
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.node, pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(3600)]

TRAINING = {
    "method": "irpo",
    "samplesPerPrompt": 2,
    "pairsPerPrompt": 1,
    "maxSteps": 2,
    "batchSize": 2,
    "maxPrompts": 4,
    "evalPrompts": 8,
    "maxNewTokens": 32,
    "learningRate": 0.002,
}


@dataclass(frozen=True)
class Cluster:
    """The installed chart, the namespace the Populations run in, and the toy model's local folder."""

    namespace: str
    model: Path
    operator_pod: JSON


def _manifest(name: str, ns: str, s3: S3Server, uris: ToyUris, image: str, memory: str) -> str:
    return population(
        name,
        ns,
        s3,
        populationSize=2,
        maxGenerations=2,
        seed=5,
        parallelism=2,
        retries={"backoffLimit": 1},
        training=TRAINING,
        baseModel={"uri": uris.model},
        dataset={"train": uris.train, "eval": uris.eval},
        template={
            "image": image,
            "env": [{"name": "NORA_NUM_THREADS", "value": "1"}],
            "resources": {"limits": {"memory": memory, "nvidia.com/gpu": 1}},
        },
    )


@pytest.fixture(scope="module")
def cluster(
    real_node: RealNode,
    node_operator: InstalledOperator,
    node_kubectl: Kubectl,
    node_s3: S3Server,
    tmp_path_factory: pytest.TempPathFactory,
) -> Cluster:
    namespace = node_operator.namespace
    uris = upload_toy(node_s3, tmp_path_factory.mktemp("toy"), "toy")
    trainer = real_node.images["nora-trainer"].reference
    for name, memory in (("toy", "3Gi"), ("starved", "64Mi")):
        manifest = _manifest(name, namespace, node_s3, uris, trainer, memory)
        node_kubectl("apply", "-f", "-", stdin=manifest)
    return Cluster(namespace=namespace, model=uris.folder, operator_pod=node_operator.operator_pod)


def _phase(api: KubeHTTP, ns: str, name: str) -> str | None:
    phase = (get_population(api, ns, name).get("status") or {}).get("phase")
    return phase if phase in ("Succeeded", "Failed") else None


def test_the_operator_runs_in_cluster_with_its_service_account(
    cluster: Cluster, node_kubectl: Kubectl
) -> None:
    spec = cluster.operator_pod["spec"]
    assert spec["serviceAccountName"] == RELEASE
    container = spec["containers"][0]
    assert container["imagePullPolicy"] == "Never"
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    rollout = node_kubectl(
        "-n", SYSTEM, "rollout", "status", f"deploy/{RELEASE}", "--timeout=60s", timeout=90
    )
    assert "successfully rolled out" in rollout.stdout, rollout.stdout  # the README's install step
    logs = node_kubectl("logs", "-n", SYSTEM, f"deploy/{RELEASE}").stdout
    assert "Traceback" not in logs, logs


def test_a_toy_population_evolves_to_succeeded_on_the_real_node(
    cluster: Cluster, real_node: RealNode, node_kubectl: Kubectl, node_s3: S3Server, tmp_path: Path
) -> None:
    api, ns = real_node.api, cluster.namespace
    phase = wait_for(lambda: _phase(api, ns, "toy"), timeout=1800, what="toy finished", interval=2)
    status = get_population(api, ns, "toy")["status"]
    assert phase == "Succeeded", json.dumps(status, indent=1)
    jobs = jobs_of(api, ns, "toy")
    assert jobs
    pod_spec = jobs[0]["spec"]["template"]["spec"]
    assert pod_spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    logs = node_kubectl("logs", "-n", ns, f"job/{jobs[0]['metadata']['name']}").stdout
    assert "training" in logs, logs
    assert '"fitness"' in logs, logs

    folder = tmp_path / "best"
    folder.mkdir()
    for name, data in s3_objects(node_s3, f"nora/{ns}/toy/best/").items():  # <prefix>/<namespace>/<name>
        (folder / name).write_bytes(data)
    assert json.loads((folder / "best.json").read_text())["fitness"] == status["best"]["fitness"]

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(cluster.model), folder)
    logits = tuned(torch.tensor([[1, 2, 3]])).logits
    assert torch.isfinite(logits).all()


def _oom_reported(api: KubeHTTP, ns: str) -> list[Any] | None:
    generation = get_generation(api, ns, "starved-g0")
    genomes = ((generation or {}).get("status") or {}).get("genomes") or []
    failed = [g for g in genomes if g.get("phase") == "Failed"]
    return failed if failed and all("OOMKilled" in g.get("message", "") for g in failed) else None


def test_a_genome_over_its_memory_limit_is_oom_killed_and_reported(
    cluster: Cluster, real_node: RealNode
) -> None:
    api, ns = real_node.api, cluster.namespace
    failed = wait_for(lambda: _oom_reported(api, ns), timeout=900, what="OOMKilled reported", interval=2)
    assert all(g["attempts"] == 2 for g in failed), failed  # backoffLimit 1: the Job retried once
    pods = api.get(f"/api/v1/namespaces/{ns}/pods", labelSelector="nora.dev/population=starved")["items"]
    reasons = {
        s["state"].get("terminated", {}).get("reason") for p in pods for s in p["status"]["containerStatuses"]
    }
    assert "OOMKilled" in reasons


def test_deleting_a_population_removes_its_jobs_and_pods(cluster: Cluster, real_node: RealNode) -> None:
    api, ns = real_node.api, cluster.namespace
    wait_for(lambda: _oom_reported(api, ns), timeout=900, what="OOMKilled reported", interval=2)
    assert jobs_of(api, ns, "starved")
    api.delete(f"/apis/nora.dev/v1alpha1/namespaces/{ns}/populations/starved", propagation="Foreground")

    def gone() -> bool:
        jobs = jobs_of(api, ns, "starved")
        pods = api.get(f"/api/v1/namespaces/{ns}/pods", labelSelector="nora.dev/population=starved")["items"]
        return not jobs and not pods

    wait_for(gone, timeout=180, what="starved's Jobs and Pods deleted", interval=1)
