"""The model-cache PVC and model-initializer Job builders (pure functions)."""

from __future__ import annotations

from typing import Any

import pytest

from nora.api.population import PopulationSpec
from nora.operator.model_cache import (
    build_model_initializer_job,
    build_model_pvc,
    initializer_job_name,
)
from nora.operator.objects import ObjectRef

OWNER = ObjectRef("nora.dev/v1alpha1", "Population", "team", "evo", "uid-evo")


def _spec(**changes: Any) -> PopulationSpec:
    base: dict[str, Any] = {
        "baseModel": {"uri": "s3://models/llama-3-8b/"},
        "dataset": {"train": "s3://d/train.jsonl", "eval": "s3://d/eval.jsonl"},
        "storage": {"bucket": "adapters", "secretRef": {"name": "s3-creds"}},
        "modelCache": {"storageClassName": "fast-rwx", "size": "40Gi", "accessModes": ["ReadWriteMany"]},
        "template": {
            "image": "registry/trainer:1",
            "env": [{"name": "HF_TOKEN", "value": "t"}, {"name": "WANDB_KEY", "value": "w"}],
            "nodeSelector": {"pool": "cpu"},
        },
    }
    return PopulationSpec.model_validate({**base, **changes})


def test_the_pvc_comes_from_the_storage_class_and_is_owned_by_the_population() -> None:
    pvc = build_model_pvc(OWNER, _spec())
    assert pvc is not None
    assert (pvc["metadata"]["name"], pvc["metadata"]["namespace"]) == ("evo-model-cache", "team")
    assert pvc["metadata"]["ownerReferences"][0]["uid"] == "uid-evo"
    assert pvc["spec"] == {
        "storageClassName": "fast-rwx",
        "accessModes": ["ReadWriteMany"],
        "volumeMode": "Filesystem",
        "resources": {"requests": {"storage": "40Gi"}},
    }
    assert pvc == build_model_pvc(OWNER, _spec())


@pytest.mark.parametrize("cache", [None, {"claimName": "users-pvc"}])
def test_no_pvc_is_created_without_a_storage_class(cache: dict[str, str] | None) -> None:
    assert build_model_pvc(OWNER, _spec(modelCache=cache)) is None


def _pod(job: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = job["spec"]["template"]["spec"]
    return pod


def test_the_initializer_fetches_the_base_model_into_the_writable_volume() -> None:
    job = build_model_initializer_job(OWNER, _spec(), endpoint="http://s3:9000", region="eu-1")
    assert job is not None
    assert job["metadata"]["name"] == initializer_job_name("evo") == "evo-model-init"
    assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-evo"
    assert "kueue.x-k8s.io/queue-name" not in job["metadata"]["labels"]
    (container,) = _pod(job)["containers"]
    assert container["command"] == [
        "python", "-m", "nora", "fetch-model", "s3://models/llama-3-8b/", "/nora-models",
    ]  # fmt: skip
    assert container["image"] == "registry/trainer:1"
    assert {"name": "nora-model-cache", "mountPath": "/nora-models"} in container["volumeMounts"]
    claim = {"name": "nora-model-cache", "persistentVolumeClaim": {"claimName": "evo-model-cache"}}
    assert claim in _pod(job)["volumes"]
    env = {e["name"]: e for e in container["env"]}
    assert env["NORA_MODEL_CACHE"]["value"] == "/nora-models"
    assert "HF_HUB_OFFLINE" not in env
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "s3-creds"
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://s3:9000"
    assert env["HF_TOKEN"]["value"] == "t"
    assert "WANDB_KEY" not in env
    assert _pod(job)["nodeSelector"] == {"pool": "cpu"}
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert {"action": "FailJob", "values": [2]} in [
        {"action": r["action"], "values": r["onExitCodes"]["values"]} for r in rules if "onExitCodes" in r
    ]


def test_the_initializer_writes_into_a_users_claim_and_has_a_custom_command() -> None:
    spec = _spec(modelCache={"claimName": "users-pvc"}, baseModel={"uri": "hf://org/model@v2"})
    job = build_model_initializer_job(OWNER, spec, command=("nora", "fetch-model"))
    assert job is not None
    assert _pod(job)["containers"][0]["command"] == [
        "nora",
        "fetch-model",
        "hf://org/model@v2",
        "/nora-models",
    ]
    volume = next(v for v in _pod(job)["volumes"] if v["name"] == "nora-model-cache")
    assert volume["persistentVolumeClaim"] == {"claimName": "users-pvc"}


def test_there_is_no_initializer_without_a_model_cache() -> None:
    assert build_model_initializer_job(OWNER, _spec(modelCache=None)) is None
