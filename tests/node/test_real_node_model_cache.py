"""The model cache on the real node: a Population's genome Jobs share one fetched copy of its base model.

The Population ``cached`` (3 genomes over 2 generations) names an ``s3://`` base model and
``spec.modelCache.claimName``: a PVC that the test binds to a hostPath PersistentVolume on the node. The
operator's model-initializer Job fetches the model into that volume once; every genome Job mounts it
read-only and loads the model offline. The model's reads are counted from the S3 server's own access log:
one GetObject per file for the whole run, where each genome Job fetched the model itself before.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.integration.test_operator_support import get_population, jobs_of, population
from tests.support.fixtures import Kubectl
from tests.support.kubeapi import JSON
from tests.support.node import RealNode
from tests.support.nodechart import InstalledOperator, ToyUris, upload_toy
from tests.support.s3 import S3Server
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.node, pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(3600)]

NAME, CLAIM, MOUNT = "cached", "nora-models", "/nora-models"
TRAINER_UID = 65532
TRAINING = {
    "samplesPerPrompt": 2,
    "pairsPerPrompt": 1,
    "maxSteps": 2,
    "batchSize": 2,
    "maxPrompts": 4,
    "evalPrompts": 8,
    "maxNewTokens": 32,
}


def _volume(kubectl: Kubectl, namespace: str, folder: Path) -> None:
    """A hostPath PersistentVolume on the node, pre-bound to the PVC ``CLAIM`` (no provisioner)."""
    folder.mkdir()
    os.chown(folder, TRAINER_UID, TRAINER_UID)  # hostPath volumes get no fsGroup ownership change
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"{namespace}-models"},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "hostPath": {"path": str(folder), "type": "Directory"},
            "claimRef": {"namespace": namespace, "name": CLAIM},
        },
    }
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": CLAIM, "namespace": namespace},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "",
            "volumeName": pv["metadata"]["name"],
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    for document in (pv, pvc):
        kubectl("apply", "-f", "-", stdin=json.dumps(document))


def _manifest(namespace: str, s3: S3Server, uris: ToyUris, image: str) -> str:
    return population(
        NAME,
        namespace,
        s3,
        populationSize=3,
        maxGenerations=2,
        seed=7,
        parallelism=2,
        selection={"method": "tournament", "survivors": 2, "elites": 1, "tournamentSize": 2},
        adapter={"initialRank": 2, "alpha": 4, "targetModules": ["q_proj", "v_proj"]},
        training=TRAINING,
        baseModel={"uri": uris.model},
        dataset={"train": uris.train, "eval": uris.eval},
        modelCache={"claimName": CLAIM},
        template={
            "image": image,
            "env": [{"name": "NORA_NUM_THREADS", "value": "1"}],
            "resources": {"limits": {"memory": "3Gi"}},
        },
    )


@pytest.fixture(scope="module")
def evolved(
    real_node: RealNode,
    node_operator: InstalledOperator,
    node_kubectl: Kubectl,
    node_s3: S3Server,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[JSON, ToyUris]:
    """The Population ``cached``, evolved to the end; its status and the uploaded toy's URIs."""
    namespace = node_operator.namespace
    _volume(node_kubectl, namespace, tmp_path_factory.mktemp("pv") / "models")
    uris = upload_toy(node_s3, tmp_path_factory.mktemp("cache-toy"), "cache-toy")
    trainer = real_node.images["nora-trainer"].reference
    node_kubectl("apply", "-f", "-", stdin=_manifest(namespace, node_s3, uris, trainer))

    def finished() -> JSON | None:
        status = get_population(real_node.api, namespace, NAME).get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    status = wait_for(
        finished, timeout=1800, what=f"{NAME} finished", interval=2, on_timeout=real_node.describe
    )
    return status, uris


def _genome_jobs(api_jobs: list[JSON]) -> list[JSON]:
    return [j for j in api_jobs if j["metadata"]["name"] != f"{NAME}-model-init"]


def test_the_population_reads_its_s3_base_model_once(
    evolved: tuple[JSON, ToyUris], node_s3: S3Server
) -> None:
    status, uris = evolved
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    reads = {key: node_s3.get_requests(key) for key in uris.model_keys}
    model_bytes = sum(p.stat().st_size for p in uris.folder.rglob("*") if p.is_file())
    print(f"\nbase model {model_bytes} bytes; GetObject per file: {reads}")
    assert reads == dict.fromkeys(uris.model_keys, 1)


def test_every_genome_job_mounts_the_cache_read_only(
    evolved: tuple[JSON, ToyUris], real_node: RealNode, node_operator: InstalledOperator
) -> None:
    namespace = node_operator.namespace
    jobs = jobs_of(real_node.api, namespace, NAME)
    initializer = [j for j in jobs if j["metadata"]["name"] == f"{NAME}-model-init"]
    assert len(initializer) == 1, [j["metadata"]["name"] for j in jobs]
    genomes = _genome_jobs(jobs)
    assert len(genomes) >= 5, [j["metadata"]["name"] for j in genomes]  # gen 1 may carry its elite untrained
    for job in genomes:
        pod = job["spec"]["template"]["spec"]
        claims = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
        assert [v["persistentVolumeClaim"] for v in claims] == [{"claimName": CLAIM, "readOnly": True}]
        mounts = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == claims[0]["name"]]
        assert mounts == [{"name": claims[0]["name"], "mountPath": MOUNT, "readOnly": True}]
    pods = real_node.api.get(
        f"/api/v1/namespaces/{namespace}/pods", labelSelector=f"nora.dev/population={NAME}"
    )
    trainers = [p for p in pods["items"] if not p["metadata"]["name"].startswith(f"{NAME}-model-init")]
    assert trainers, "the genome Pods are gone before the check"
    for pod in trainers:
        mounts = pod["spec"]["containers"][0]["volumeMounts"]
        assert [m.get("readOnly") for m in mounts if m["mountPath"] == MOUNT] == [True], pod["metadata"][
            "name"
        ]
