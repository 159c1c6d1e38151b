"""Stored adapters rewritten behind the operator's back, on the real control plane and S3 server (issue 18).

The rewrite is a delete and a fresh PUT without metadata, as an overwrite on AWS leaves an object: no
stale ``sha256`` metadata, so only the check against ``nora_manifest.json`` can tell. A held genome (the
stand-in's ``NORA_STANDIN_HOLD``) keeps the generation open while the test rewrites a finished genome.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_operator_support import (
    events_of,
    get_generation,
    population,
    s3_objects,
    s3_secret,
    wait_phase,
)
from tests.support.fixtures import Kubectl
from tests.support.kubeapi import JSON, KubeHTTP
from tests.support.kubelet import ProcessKubelet
from tests.support.operator import OperatorProcess, Operators
from tests.support.s3 import S3Server
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration
WEIGHTS = "adapter_model.safetensors"


def _held_run(
    kube_api: KubeHTTP,
    kubectl: Kubectl,
    namespace: str,
    s3: S3Server,
    name: str,
    release: Path,
    **spec: object,
) -> JSON:
    """Start ``name`` with genome 3 of generation 0 held (then failing); the best of the other three."""
    held = f"{name}-g0-3"
    env = [
        {"name": "NORA_STANDIN_HOLD", "value": f"{held}={release}"},
        {"name": "NORA_STANDIN_FAIL", "value": held},
    ]
    kubectl("apply", "-f", "-", stdin=population(name, namespace, s3, template={"env": env}, **spec))

    def three_done() -> list[JSON] | None:
        g0 = get_generation(kube_api, namespace, f"{name}-g0") or {}
        done = [g for g in (g0.get("status") or {}).get("genomes", []) if g["phase"] == "Succeeded"]
        return done if len(done) == 3 else None

    done = wait_for(three_done, timeout=300, what="three genomes of generation 0")
    return max(done, key=lambda g: float(g["fitness"]))


def _rewrite(s3: S3Server, uri: str) -> str:
    """Replace the adapter's weights at ``uri`` as an AWS overwrite would; the object's key."""
    key = f"{uri.removeprefix(f's3://{s3.bucket}/')}/{WEIGHTS}"
    client = s3.client()
    client.delete_object(Bucket=s3.bucket, Key=key)
    client.put_object(Bucket=s3.bucket, Key=key, Body=b"rewritten weights")
    assert "sha256" not in client.head_object(Bucket=s3.bucket, Key=key)["Metadata"]  # no stale metadata
    return key


def _final(kube_api: KubeHTTP, namespace: str, name: str, operator: OperatorProcess) -> JSON:
    final: JSON = wait_phase(kube_api, namespace, name, ("Succeeded", "Failed"), 300, operator)["status"]
    return final


def test_an_overwritten_best_adapter_is_never_exported_and_the_run_fails_naming_it(
    kube_api: KubeHTTP,
    kubectl: Kubectl,
    kubelet: ProcessKubelet,
    namespace: str,
    s3_server: S3Server,
    operators: Operators,
    tmp_path: Path,
) -> None:
    operator = operators.start(namespace)
    s3_secret(kube_api, namespace, s3_server)
    release = tmp_path / "release"
    best = _held_run(kube_api, kubectl, namespace, s3_server, "ex", release, maxGenerations=1)
    key = _rewrite(s3_server, best["adapter"])
    release.touch()

    status = _final(kube_api, namespace, "ex", operator)
    assert (status["phase"], status["reason"]) == ("Failed", "ExportFailed")
    assert best["id"] in status["message"]
    assert key in status["message"]
    assert "nora_manifest.json" in status["message"]
    completed = next(c for c in status["conditions"] if c["type"] == "Completed")
    assert completed["reason"] == "ExportFailed"
    events = events_of(kube_api, namespace, "Population", "ex")
    assert any(e["type"] == "Warning" and best["id"] in e["message"] for e in events)
    assert "best.json" not in s3_objects(s3_server, f"nora/{namespace}/ex/best/")


def test_a_corrupted_parent_is_re_trained_from_its_own_seed_before_anything_is_bred_from_it(
    kube_api: KubeHTTP,
    kubectl: Kubectl,
    kubelet: ProcessKubelet,
    namespace: str,
    s3_server: S3Server,
    operators: Operators,
    tmp_path: Path,
) -> None:
    operator = operators.start(namespace)
    s3_secret(kube_api, namespace, s3_server)
    release = tmp_path / "release"
    best = _held_run(kube_api, kubectl, namespace, s3_server, "par", release, maxGenerations=2)
    original = s3_objects(s3_server, best["adapter"].removeprefix(f"s3://{s3_server.bucket}/"))
    key = _rewrite(s3_server, best["adapter"])  # the best survives: a parent of generation 1
    release.touch()

    status = _final(kube_api, namespace, "par", operator)
    assert (status["phase"], status["reason"]) == ("Succeeded", "MaxGenerations"), status
    g0 = get_generation(kube_api, namespace, "par-g0") or {}
    genome = next(g for g in g0["status"]["genomes"] if g["id"] == best["id"])
    job = f"{best['id']}-r1"
    assert (genome["phase"], genome["retrains"], genome["job"]) == ("Succeeded", 1, job)
    assert genome["message"].startswith(f"re-training (attempt 1): s3://{s3_server.bucket}/{key}: sha256")
    assert genome["fitness"] == best["fitness"]
    assert kube_api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/{job}")["status"]["succeeded"] == 1
    events = events_of(kube_api, namespace, "Population", "par")
    retraining = [e for e in events if e["reason"] == "Retraining"]
    assert [e["type"] for e in retraining] == ["Warning"]
    assert retraining[0]["message"].startswith(f"genome {best['id']}: re-training (attempt 1): ")
    assert key in retraining[0]["message"]
    repaired = s3_objects(s3_server, best["adapter"].removeprefix(f"s3://{s3_server.bucket}/"))
    assert repaired == original  # its own seed reproduced the same adapter
    g1 = get_generation(kube_api, namespace, "par-g1") or {}
    bred = [g["id"] for g in g1["spec"]["genomes"] if best["id"] in g["parents"] and g["origin"] != "elite"]
    assert bred
    starts = s3_objects(s3_server, f"nora/{namespace}/par/g1/")
    assert {f"{child}/start/nora_manifest.json" for child in bred} <= set(starts)
    assert operator.tracebacks() == 0, operator.describe()
