"""Helpers of the operator's integration and end-to-end tests (no tests here).

- :class:`OperatorProcess`: ``python -m nora.operator`` as a subprocess serving one namespace, with its
  own metrics and liveness ports and log, that tests can kill (SIGKILL) and start again;
- :func:`install_crds`: the generated CRDs applied with kubectl;
- :func:`population`: a Population manifest whose storage points at the test S3 server;
- the stand-in trainer lives in :mod:`tests.support.standin`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.kubeapi import JSON, KubeHTTP
from tests.support.manifests import population_yaml
from tests.support.operator import OperatorProcess
from tests.support.s3 import S3Server
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
GROUP_PATH = "/apis/nora.dev/v1alpha1"


def s3_secret(api: KubeHTTP, namespace: str, s3: S3Server, name: str = "s3") -> str:
    """A Secret holding the S3 server's credentials, as ``spec.storage.secretRef`` expects."""
    body = {
        "metadata": {"name": name},
        "stringData": {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key},
    }
    api.post(f"/api/v1/namespaces/{namespace}/secrets", body)
    return name


def population(name: str, namespace: str, s3: S3Server, **spec: Any) -> str:
    """A Population manifest (YAML) storing into the test bucket over 2 generations; ``spec`` overrides."""
    storage = {"bucket": s3.bucket, "endpoint": s3.endpoint, "region": s3.region, "secretRef": {"name": "s3"}}
    defaults = {"maxGenerations": 2, "retries": {"backoffLimit": 1}, "storage": storage}
    return population_yaml(name, namespace, **{**defaults, **spec})


def get_population(api: KubeHTTP, namespace: str, name: str) -> JSON:
    return api.get(f"{GROUP_PATH}/namespaces/{namespace}/populations/{name}")


def ready_condition(api: KubeHTTP, namespace: str, name: str) -> JSON | None:
    """The Population's ``Ready`` condition, if it has one yet."""
    status = get_population(api, namespace, name).get("status") or {}
    return next((c for c in status.get("conditions", []) if c["type"] == "Ready"), None)


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
