"""The genome Job builder (a pure function) and the Job view kept in the operator's index."""

from __future__ import annotations

from typing import Any

import pytest

from nora.api.population import PopulationSpec
from nora.operator.jobs import JobRequest, build_job, job_view
from nora.operator.objects import ObjectRef
from nora.operator.template_check import problems_of

OWNER = ObjectRef("nora.dev/v1alpha1", "Generation", "team", "evo-g3", "uid-g3")


def _spec(**changes: Any) -> PopulationSpec:
    base: dict[str, Any] = {
        "baseModel": {"uri": "hf://org/model"},
        "dataset": {"train": "s3://d/train.jsonl", "eval": "s3://d/eval.jsonl"},
        "storage": {"bucket": "adapters", "secretRef": {"name": "s3-creds"}},
        "retries": {"backoffLimit": 3},
        "activeDeadlineSeconds": 7200,
    }
    return PopulationSpec.model_validate({**base, **changes})


def _job(
    spec: PopulationSpec, endpoint: str | None = "http://minio:9000", region: str | None = "eu-1"
) -> dict[str, Any]:
    request = JobRequest(
        owner=OWNER,
        population="evo",
        generation=3,
        genome="evo-g3-5",
        task_uri="s3://adapters/nora/evo/g3/evo-g3-5/genome.json",
        spec=spec,
        command=("python", "-m", "nora", "train", "--genome"),
        ttl_seconds=600,
    )
    return build_job(request, endpoint, region)


def test_a_job_has_a_deterministic_name_labels_and_owner() -> None:
    job = _job(_spec())
    meta = job["metadata"]
    assert (meta["name"], meta["namespace"]) == ("evo-g3-5", "team")
    assert {
        k: meta["labels"][k] for k in ("nora.dev/population", "nora.dev/generation", "nora.dev/genome")
    } == {
        "nora.dev/population": "evo",
        "nora.dev/generation": "3",
        "nora.dev/genome": "evo-g3-5",
    }
    assert "kueue.x-k8s.io/queue-name" not in meta["labels"]
    (owner,) = meta["ownerReferences"]
    assert owner == {
        "apiVersion": "nora.dev/v1alpha1",
        "kind": "Generation",
        "name": "evo-g3",
        "uid": "uid-g3",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert job == _job(_spec())  # pure


def test_retries_deadlines_and_disruptions() -> None:
    spec = _job(_spec())["spec"]
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"], spec["ttlSecondsAfterFinished"]) == (
        3,
        7200,
        600,
    )
    assert spec["suspend"] is False
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}
    assert (rules[1]["action"], rules[1]["onExitCodes"]["values"]) == ("Ignore", [75, 143])
    assert (rules[2]["action"], rules[2]["onExitCodes"]["values"]) == ("FailJob", [2])
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    assert spec["template"]["spec"]["terminationGracePeriodSeconds"] == 120


def test_the_container_runs_the_trainer_on_its_task_with_a_restricted_context() -> None:
    pod = _job(_spec())["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == [
        "python",
        "-m",
        "nora",
        "train",
        "--genome",
        "s3://adapters/nora/evo/g3/evo-g3-5/genome.json",
    ]
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]
    assert pod["automountServiceAccountToken"] is False


def test_s3_credentials_come_only_from_the_secret() -> None:
    env = {e["name"]: e for e in _job(_spec())["spec"]["template"]["spec"]["containers"][0]["env"]}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key] == {"name": key, "valueFrom": {"secretKeyRef": {"name": "s3-creds", "key": key}}}
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio:9000"
    assert env["AWS_REGION"]["value"] == "eu-1"
    assert "value" not in env["AWS_SECRET_ACCESS_KEY"]


def test_the_template_passes_through_and_user_env_wins() -> None:
    template = {
        "image": "registry/trainer:1",
        "resources": {"limits": {"nvidia.com/gpu": 1, "memory": "8Gi"}, "requests": {"cpu": 0.5}},
        "nodeSelector": {"gpu": "a100"},
        "tolerations": [{"key": "gpu", "operator": "Exists"}],
        "affinity": {"nodeAffinity": {}},
        "priorityClassName": "batch",
        "serviceAccountName": "trainer",
        "env": [{"name": "HOME", "value": "/scratch"}, {"name": "HF_TOKEN", "value": "x"}],
    }
    pod = _job(_spec(template=template))["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert (container["image"], container["resources"]) == (
        "registry/trainer:1",
        {"limits": {"nvidia.com/gpu": "1", "memory": "8Gi"}, "requests": {"cpu": "0.5"}},
    )  # quantities as strings: the Python client refuses numbers
    assert (pod["nodeSelector"], pod["priorityClassName"], pod["serviceAccountName"]) == (
        {"gpu": "a100"},
        "batch",
        "trainer",
    )
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    assert pod["affinity"] == {"nodeAffinity": {}}
    homes = [e for e in container["env"] if e["name"] == "HOME"]
    assert homes == [{"name": "HOME", "value": "/scratch"}]


def test_a_queued_job_carries_the_kueue_label_and_starts_suspended() -> None:
    job = _job(_spec(queueName="team-gpus"))
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-gpus"
    assert job["spec"]["suspend"] is True


def _body(spec: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "evo-g3-5",
            "labels": {"nora.dev/generation": "3"},
            "ownerReferences": [{"uid": "uid-g3", "controller": True}],
        },
        "spec": spec,
        "status": status,
    }


@pytest.mark.parametrize(
    ("spec", "status", "phase", "attempts"),
    [
        ({"suspend": True}, {}, "Pending", 0),
        (
            {"suspend": True},
            {"conditions": [{"type": "Suspended", "status": "True"}], "failed": 1},
            "Pending",
            1,
        ),
        ({}, {"active": 1, "startTime": "2026-01-01T00:00:00Z"}, "Running", 1),
        ({}, {"active": 1, "failed": 1}, "Running", 2),
        ({}, {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}, "Succeeded", 1),
    ],
)
def test_job_view_phases(spec: dict[str, Any], status: dict[str, Any], phase: str, attempts: int) -> None:
    view = job_view(_body(spec, status))
    assert (view.phase, view.attempts, view.generation, view.owner) == (phase, attempts, 3, "uid-g3")


def test_a_failed_job_view_has_its_reason_and_duration() -> None:
    failed = {
        "type": "Failed",
        "status": "True",
        "reason": "BackoffLimitExceeded",
        "message": "too many",
        "lastTransitionTime": "2026-01-01T00:01:40Z",
    }
    view = job_view(_body({}, {"failed": 3, "startTime": "2026-01-01T00:00:00Z", "conditions": [failed]}))
    assert (view.phase, view.attempts, view.reason, view.message) == (
        "Failed",
        3,
        "BackoffLimitExceeded",
        "too many",
    )
    assert view.duration == 100.0


def test_a_workload_priority_class_is_a_kueue_label_beside_the_queue() -> None:
    job = _job(_spec(queueName="team-gpus", workloadPriorityClassName="urgent"))
    labels = job["metadata"]["labels"]
    assert labels["kueue.x-k8s.io/queue-name"] == "team-gpus"
    assert labels["kueue.x-k8s.io/priority-class"] == "urgent"
    assert "kueue.x-k8s.io/priority-class" not in job["spec"]["template"]["metadata"]["labels"]
    assert "priorityClassName" not in job["spec"]["template"]["spec"]


def _cache_mounts(pod: dict[str, Any]) -> tuple[list[Any], list[Any], dict[str, str]]:
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value", "") for e in container["env"]}
    return pod["volumes"], container["volumeMounts"], env


def test_without_a_model_cache_a_job_has_only_its_scratch_volumes() -> None:
    volumes, mounts, env = _cache_mounts(_job(_spec())["spec"]["template"]["spec"])
    assert [v["name"] for v in volumes] == ["tmp", "dshm"]
    assert [m["name"] for m in mounts] == ["tmp", "dshm"]
    assert "NORA_MODEL_CACHE" not in env
    assert "HF_HUB_OFFLINE" not in env


@pytest.mark.parametrize(
    ("cache", "claim"),
    [({"storageClassName": "fast"}, "evo-model-cache"), ({"claimName": "shared-models"}, "shared-models")],
)
def test_a_model_cache_is_mounted_read_only_and_the_trainer_stays_offline(
    cache: dict[str, str], claim: str
) -> None:
    spec = _spec(baseModel={"uri": "s3://models/llama/"}, modelCache=cache)
    volumes, mounts, env = _cache_mounts(_job(spec)["spec"]["template"]["spec"])
    assert {
        "name": "nora-model-cache",
        "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
    } in volumes
    assert {"name": "nora-model-cache", "mountPath": "/nora-models", "readOnly": True} in mounts
    assert (env["NORA_MODEL_CACHE"], env["HF_HUB_OFFLINE"]) == ("/nora-models", "1")


def test_template_volumes_and_mounts_pass_through() -> None:
    volume = {"name": "weights", "persistentVolumeClaim": {"claimName": "llama", "readOnly": True}}
    mount = {"name": "weights", "mountPath": "/models", "readOnly": True}
    template = {"volumes": [volume], "volumeMounts": [mount], "terminationGracePeriodSeconds": 300}
    pod = _job(_spec(template=template))["spec"]["template"]["spec"]
    volumes, mounts, _ = _cache_mounts(pod)
    assert (volumes[-1], mounts[-1]) == (volume, mount)
    assert pod["terminationGracePeriodSeconds"] == 300


def test_refused_job_fields_are_named_as_template_fields() -> None:
    causes = [
        ("spec.template.spec.containers[0].env[9].name", "Required value"),
        ("spec.template.spec.tolerations[0].operator", "Unsupported value"),
        ("spec.template.spec.containers[0].image", "Required value"),
        ("metadata.labels", "Invalid value"),
    ]
    assert problems_of(causes, env_offset=9) == [
        "spec.template.env[0].name: Required value",
        "spec.template.tolerations[0].operator: Unsupported value",
        "spec.template.image: Required value",
        "spec.template: Invalid value",
    ]


def test_a_re_training_job_has_its_own_name_and_the_genomes_labels() -> None:
    request = JobRequest(
        owner=OWNER,
        population="evo",
        generation=3,
        genome="evo-g3-5",
        task_uri="s3://adapters/nora/evo/g3/evo-g3-5/genome.json",
        spec=_spec(),
        command=("nora", "train", "--genome"),
        ttl_seconds=600,
        name="evo-g3-5-r1",
    )
    job = build_job(request)
    assert job["metadata"]["name"] == "evo-g3-5-r1"
    assert job["metadata"]["labels"]["nora.dev/genome"] == "evo-g3-5"
    env = {v["name"]: v.get("value") for v in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["NORA_GENOME"] == "evo-g3-5"
