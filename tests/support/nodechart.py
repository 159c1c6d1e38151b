"""The chart's operator on the real node, as a user installs it: ``helm install`` with the locally built
operator image, then a namespace that enforces the ``restricted`` Pod Security Standard and holds the S3
credentials, and the toy model and data uploaded to the S3 server.

tests/node/conftest.py installs it once per test run (``node_operator``); every real-node test module
applies its own Populations in that namespace.
"""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.integration.test_operator_support import s3_secret
from tests.support.binaries import REPO_ROOT, require
from tests.support.controlplane import ControlPlane
from tests.support.fixtures import Kubectl
from tests.support.kubeapi import JSON, KubeHTTP
from tests.support.node import RealNode
from tests.support.s3 import S3Server
from tests.support.waiting import wait_for

RELEASE, SYSTEM = "nora", "nora-system"
RESTRICTED = "pod-security.kubernetes.io/enforce=restricted"


@dataclass(frozen=True)
class InstalledOperator:
    """The installed chart's operator Pod and the namespace the Populations run in."""

    namespace: str
    operator_pod: JSON


@dataclass(frozen=True)
class ToyUris:
    """Where the toy model and data lie in the S3 server, and the model's local folder."""

    model: str
    train: str
    eval: str
    folder: Path
    model_keys: tuple[str, ...]


def helm(plane: ControlPlane, *args: str) -> None:
    """Run helm against the node's control plane; fail with its output."""
    argv = [str(require("helm")["helm"]), f"--kubeconfig={plane.kubeconfig}", *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"helm {' '.join(args)}:\n{proc.stderr}{proc.stdout}")


def upload_toy(s3: S3Server, folder: Path, prefix: str) -> ToyUris:
    """Build the toy model and data (cached) and upload them under ``prefix``."""
    from nora.toy.data import write_dataset
    from nora.toy.model import build_toy_model

    model = build_toy_model(folder / "model")
    data = folder / "data"
    write_dataset(data)
    client = s3.client()
    keys = []
    for path in sorted(p for p in model.rglob("*") if p.is_file()):
        keys.append(f"{prefix}/model/{path.relative_to(model)}")
        client.upload_file(str(path), s3.bucket, keys[-1])
    for split in ("train", "eval"):
        client.upload_file(str(data / f"{split}.jsonl"), s3.bucket, f"{prefix}/data/{split}.jsonl")
    return ToyUris(
        model=f"s3://{s3.bucket}/{prefix}/model/",
        train=f"s3://{s3.bucket}/{prefix}/data/train.jsonl",
        eval=f"s3://{s3.bucket}/{prefix}/data/eval.jsonl",
        folder=model,
        model_keys=tuple(keys),
    )


def operator_pod(api: KubeHTTP) -> JSON | None:
    """The operator's Pod once it is Ready (its readiness probe passed)."""
    pods = api.get(f"/api/v1/namespaces/{SYSTEM}/pods")["items"]
    ready = [
        p
        for p in pods
        if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
    ]
    return ready[0] if ready else None


def install(node: RealNode, plane: ControlPlane, kubectl: Kubectl, s3: S3Server) -> InstalledOperator:
    """helm install with the node's operator image (pull policy Never); wait until its Pod is Ready; make
    the restricted namespace with the S3 Secret."""
    repository, tag = node.images["nora-operator"].reference.rsplit(":", 1)
    helm(
        plane,
        "install", RELEASE, str(REPO_ROOT / "helm" / "nora"), "--namespace", SYSTEM, "--create-namespace",
        "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
        "--set", "image.pullPolicy=Never", "--set", "operator.jobTTLSeconds=3600",
    )  # fmt: skip
    pod = wait_for(
        lambda: operator_pod(node.api),
        timeout=300,
        what="operator Pod Ready",
        interval=1,
        on_timeout=node.describe,
    )
    namespace = f"evolve-{secrets.token_hex(3)}"
    kubectl("create", "namespace", namespace)
    kubectl("label", "namespace", namespace, RESTRICTED)
    s3_secret(node.api, namespace, s3)
    return InstalledOperator(namespace=namespace, operator_pod=pod)


def uninstall(plane: ControlPlane) -> None:
    """helm uninstall the release."""
    helm(plane, "uninstall", RELEASE, "--namespace", SYSTEM)
