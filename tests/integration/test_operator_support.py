"""Helpers of the operator's integration and end-to-end tests (no tests here).

- :class:`OperatorProcess`: ``python -m nora.operator`` as a subprocess serving one namespace, with its
  own metrics and liveness ports and log, that tests can kill (SIGKILL) and start again;
- :func:`install_crds`: the generated CRDs applied with kubectl;
- :func:`population`: a Population manifest whose storage points at the test S3 server;
- the stand-in trainer lives in :mod:`tests.support.standin`.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.controlplane import free_port
from tests.support.fixtures import Kubectl
from tests.support.kubeapi import JSON, KubeHTTP
from tests.support.procs import ManagedProcess, tail
from tests.support.s3 import S3Server
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
GROUP_PATH = "/apis/nora.dev/v1alpha1"


def install_crds(kubectl: Kubectl, *paths: Path) -> None:
    """Apply CRD files (default: the generated ones in crds/) and poll until each is Established.

    Polling ``get`` rather than ``kubectl wait``: kubectl 1.32's ``wait --for=condition`` fails at once
    ("accessor error") when it reads a CRD whose status has no conditions yet.
    """
    files = paths or tuple(sorted(CRDS.glob("*.yaml")))
    for path in files:
        kubectl("apply", "-f", str(path))
    names = [doc["metadata"]["name"] for path in files for doc in yaml.safe_load_all(path.read_text()) if doc]
    established = '{.status.conditions[?(@.type=="Established")].status}'

    def ready() -> bool:
        return all(
            kubectl("get", f"crd/{name}", "-o", f"jsonpath={established}", check=False).stdout == "True"
            for name in names
        )

    wait_for(ready, timeout=60, what=f"CRDs {', '.join(names)} Established", interval=0.2)


def s3_secret(api: KubeHTTP, namespace: str, s3: S3Server, name: str = "s3") -> str:
    """A Secret holding the S3 server's credentials, as ``spec.storage.secretRef`` expects."""
    body = {
        "metadata": {"name": name},
        "stringData": {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key},
    }
    api.post(f"/api/v1/namespaces/{namespace}/secrets", body)
    return name


def population(name: str, namespace: str, s3: S3Server, **spec: Any) -> str:
    """A Population manifest (YAML) storing into the test bucket; ``spec`` overrides the defaults."""
    base: dict[str, Any] = {
        "baseModel": {"uri": "file:///nonexistent/model"},
        "dataset": {"train": "file:///nonexistent/train.jsonl", "eval": "file:///nonexistent/eval.jsonl"},
        "populationSize": 4,
        "maxGenerations": 2,
        "seed": 7,
        "selection": {"method": "tournament", "survivors": 2, "elites": 1, "tournamentSize": 2},
        "mutation": {"sigma": 0.01, "rankGrowProbability": 0.3, "rankShrinkProbability": 0.1, "maxRank": 8},
        "adapter": {"initialRank": 2, "alpha": 4, "targetModules": ["q_proj", "v_proj"]},
        "parallelism": 2,
        "retries": {"backoffLimit": 1},
        "storage": {
            "bucket": s3.bucket,
            "endpoint": s3.endpoint,
            "region": s3.region,
            "secretRef": {"name": "s3"},
        },
    }
    document = {
        "apiVersion": "nora.dev/v1alpha1",
        "kind": "Population",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {**base, **spec},
    }
    return yaml.safe_dump(document)


@dataclass
class OperatorProcess:
    """``python -m nora.operator`` serving ``namespace`` (start, kill, stop; log kept in ``workdir``)."""

    kubeconfig: Path
    namespace: str
    workdir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    metrics_port: int = field(default_factory=free_port)
    liveness_port: int = field(default_factory=free_port)
    process: ManagedProcess | None = None
    starts: int = 0

    @property
    def log(self) -> Path:
        return self.workdir / f"operator-{self.namespace}.log"

    def start(self) -> OperatorProcess:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "NORA_NAMESPACES": self.namespace,
            "NORA_METRICS_ADDRESS": "127.0.0.1",
            "NORA_METRICS_PORT": str(self.metrics_port),
            "NORA_LIVENESS_ENDPOINT": f"http://127.0.0.1:{self.liveness_port}/healthz",
            "NORA_RESYNC_SECONDS": "5",
            **self.env,
        }
        argv = [sys.executable, "-m", "nora.operator", "--verbose"]
        self.process = ManagedProcess(f"operator-{self.starts}", argv, self.log, env=env).start()
        self.starts += 1
        wait_for(self.healthy, timeout=120, what="the operator's liveness endpoint", on_timeout=self.describe)
        return self

    def healthy(self) -> bool:
        assert self.process is not None
        self.process.ensure_alive()
        with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=2) as reply:
            return bool(reply.status == 200)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as reply:
            return str(reply.read().decode())

    def reconcile_passes(self) -> int:
        """Reconcile passes the operator has run so far (its ``nora_reconcile_duration_seconds_count``)."""
        for family in text_string_to_metric_families(self.metrics()):
            for sample in family.samples:
                if sample.name == "nora_reconcile_duration_seconds_count":
                    return int(sample.value)
        raise AssertionError("the operator exports no nora_reconcile_duration_seconds_count")

    def kill(self) -> None:
        """SIGKILL the operator's whole process group (the operator and its breeding process)."""
        assert self.process is not None
        assert self.process.popen is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.popen.wait(timeout=30)

    def kill_process_only(self) -> None:
        """SIGKILL the operator process alone (not its group): its children must follow by themselves."""
        assert self.process is not None
        assert self.process.popen is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.popen.wait(timeout=30)

    def children(self) -> list[int]:
        """Process ids of the operator's child processes (the breeding process and its helpers)."""
        assert self.process is not None
        tasks = Path(f"/proc/{self.process.pid}/task")
        return sorted(int(pid) for task in tasks.iterdir() for pid in (task / "children").read_text().split())

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace=15)

    def describe(self) -> str:
        return f"operator log ({self.log}):\n{tail(self.log, 80)}"

    def tracebacks(self) -> int:
        return self.log.read_text(errors="replace").count("Traceback") if self.log.exists() else 0


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def get_population(api: KubeHTTP, namespace: str, name: str) -> JSON:
    return api.get(f"{GROUP_PATH}/namespaces/{namespace}/populations/{name}")


def get_generation(api: KubeHTTP, namespace: str, name: str) -> JSON | None:
    return api.get_or_none(f"{GROUP_PATH}/namespaces/{namespace}/generations/{name}")


def wait_phase(
    api: KubeHTTP,
    namespace: str,
    name: str,
    phases: tuple[str, ...],
    timeout: float,
    operator: OperatorProcess,
) -> JSON:
    """Wait until the Population's phase is one of ``phases``; return it."""

    def probe() -> JSON | None:
        body = get_population(api, namespace, name)
        return body if (body.get("status") or {}).get("phase") in phases else None

    def report() -> str:
        status = json.dumps(get_population(api, namespace, name).get("status"), indent=1)[:3000]
        return f"status: {status}\n{operator.describe()}"

    return wait_for(
        probe, timeout=timeout, what=f"{namespace}/{name} in {phases}", interval=0.5, on_timeout=report
    )


def jobs_of(api: KubeHTTP, namespace: str, population: str) -> list[JSON]:
    selector = f"nora.dev/population={population}"
    return list(api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs", labelSelector=selector)["items"])


def job_running(api: KubeHTTP, namespace: str, population: str) -> bool:
    """Whether any of the Population's Jobs has an active Pod."""
    return any((j.get("status") or {}).get("active") for j in jobs_of(api, namespace, population))


def events_of(api: KubeHTTP, namespace: str, kind: str, name: str) -> list[JSON]:
    selector = f"involvedObject.kind={kind},involvedObject.name={name}"
    return list(api.get(f"/api/v1/namespaces/{namespace}/events", fieldSelector=selector)["items"])


def s3_objects(s3: S3Server, prefix: str) -> dict[str, bytes]:
    """Every object under ``prefix`` (key relative to it) and its bytes."""
    client = s3.client()
    found: dict[str, bytes] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            body = client.get_object(Bucket=s3.bucket, Key=item["Key"])["Body"].read()
            found[item["Key"].removeprefix(prefix)] = body
    return found
