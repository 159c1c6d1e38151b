"""Genome Jobs: the pure builder of a Job, and the compact view of a Job the operator keeps in its index.

A genome Job runs ``<train command> s3://<bucket>/<key of genome.json>`` once (``restartPolicy:
Never``); the Job controller retries a failed Pod up to ``spec.retries.backoffLimit`` times, except that
Pod disruptions (preemption, eviction, node drain) are not counted (``podFailurePolicy`` ignores
``DisruptionTarget``) and a bad-input failure (the trainer's exit code 2) fails the Job at once. With
``spec.queueName`` the Job carries Kueue's queue label and is created suspended: Kueue admits it when its
quota allows, and a suspended (queued or preempted) Job is Pending, never Failed.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from nora.api.population import PopulationSpec
from nora.evolution import contract
from nora.operator.objects import (
    GENERATION_LABEL,
    GENOME_LABEL,
    JSON,
    QUEUE_LABEL,
    ObjectRef,
    common_labels,
    owner_uid,
)

CONTAINER = "trainer"
"""The trainer's exit code for bad input (genome.json, data, model): retrying cannot help."""
SCRATCH_ENV = {"HOME": "/tmp", "XDG_CACHE_HOME": "/tmp/.cache", "HF_HOME": "/tmp/huggingface"}
JobPhase = Literal["Pending", "Running", "Succeeded", "Failed"]


@dataclass(frozen=True)
class JobRequest:
    """Everything that decides one genome Job.

    Attributes:
        owner: the Generation that owns the Job.
        population: the Population's name.
        generation: the generation number.
        genome: the genome id (also the Job's name).
        task_uri: ``s3://`` URI of the genome's ``genome.json``.
        spec: the Population's current spec (template, retries, deadline, queue, storage).
        command: the container command before the task URI.
        ttl_seconds: ``ttlSecondsAfterFinished``.
    """

    owner: ObjectRef
    population: str
    generation: int
    genome: str
    task_uri: str
    spec: PopulationSpec
    command: Sequence[str]
    ttl_seconds: int


def storage_env(spec: PopulationSpec, endpoint: str | None, region: str | None) -> list[JSON]:
    """S3 settings for the trainer; credentials only by reference to ``spec.storage.secretRef``."""
    env: list[JSON] = []
    secret = spec.storage.secret_ref
    if secret is not None:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.append({"name": key, "valueFrom": {"secretKeyRef": {"name": secret.name, "key": key}}})
    if endpoint:
        env += [
            {"name": "AWS_ENDPOINT_URL", "value": endpoint},
            {"name": "AWS_ENDPOINT_URL_S3", "value": endpoint},
        ]
    if region:
        env += [{"name": "AWS_REGION", "value": region}, {"name": "AWS_DEFAULT_REGION", "value": region}]
    return env


def _environment(request: JobRequest, endpoint: str | None, region: str | None) -> list[JSON]:
    user = list(request.spec.template.env)
    named = {str(var.get("name")) for var in user}
    ours: list[JSON] = [
        {"name": contract.ENV_POPULATION, "value": request.population},
        {"name": contract.ENV_GENERATION, "value": str(request.generation)},
        {"name": contract.ENV_GENOME, "value": request.genome},
        *({"name": k, "value": v} for k, v in SCRATCH_ENV.items()),
        *storage_env(request.spec, endpoint, region),
    ]
    return [var for var in ours if var["name"] not in named] + user


def _container(request: JobRequest, endpoint: str | None, region: str | None) -> JSON:
    template = request.spec.template
    container: JSON = {
        "name": CONTAINER,
        "image": template.image,
        "command": [*request.command, request.task_uri],
        "env": _environment(request, endpoint, region),
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": "dshm", "mountPath": "/dev/shm"}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if template.resources:
        container["resources"] = _quantities_as_strings(template.resources)
    return container


def _quantities_as_strings(resources: Mapping[str, Any]) -> JSON:
    """``resources`` with every quantity a string: the API takes ``nvidia.com/gpu: 1``, but the Python
    client validates quantities as strings and refuses the whole Job otherwise."""
    return {
        kind: {name: str(qty) for name, qty in values.items()} if isinstance(values, Mapping) else values
        for kind, values in resources.items()
    }


def _pod_spec(request: JobRequest, endpoint: str | None, region: str | None) -> JSON:
    template = request.spec.template
    pod: JSON = {
        "restartPolicy": "Never",
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [_container(request, endpoint, region)],
        "volumes": [
            {"name": "tmp", "emptyDir": {}},
            {"name": "dshm", "emptyDir": {"medium": "Memory"}},
        ],
    }
    optional: dict[str, Any] = {
        "nodeSelector": dict(template.node_selector),
        "tolerations": list(template.tolerations),
        "affinity": dict(template.affinity),
        "priorityClassName": template.priority_class_name,
        "serviceAccountName": template.service_account_name,
    }
    pod.update({key: value for key, value in optional.items() if value})
    return pod


def build_job(request: JobRequest, endpoint: str | None = None, region: str | None = None) -> JSON:
    """The Job of one genome (a plain dict, ready to POST)."""
    spec = request.spec
    labels = {
        **common_labels(request.population, request.generation),
        "app.kubernetes.io/component": "genome",
        GENOME_LABEL: request.genome,
    }
    job_labels = {**labels, **({QUEUE_LABEL: spec.queue_name} if spec.queue_name else {})}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": request.genome,
            "namespace": request.owner.namespace,
            "labels": job_labels,
            "annotations": {"nora.dev/task": request.task_uri},
            "ownerReferences": [request.owner.owner_reference()],
        },
        "spec": {
            "backoffLimit": spec.retries.backoff_limit,
            "podFailurePolicy": {
                "rules": [
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": CONTAINER,
                            "operator": "In",
                            "values": [contract.EXIT_INPUT_ERROR],
                        },
                    },
                ]
            },
            "activeDeadlineSeconds": spec.active_deadline_seconds,
            "ttlSecondsAfterFinished": request.ttl_seconds,
            "suspend": bool(spec.queue_name),
            "template": {"metadata": {"labels": labels}, "spec": _pod_spec(request, endpoint, region)},
        },
    }


@dataclass(frozen=True)
class JobView:
    """What the operator needs of a genome Job (kept in memory for every Job it owns).

    Attributes:
        name: the Job's (and genome's) name.
        generation: its generation number.
        owner: uid of the Generation that owns it.
        phase: Pending (not started, queued or suspended), Running, Succeeded or Failed.
        attempts: Pods started (succeeded + failed + active).
        reason: the reason of the Job's Failed condition (``BackoffLimitExceeded``...).
        message: that condition's message.
        started: start time (epoch seconds), if started.
        finished: completion or failure time (epoch seconds), if finished.
    """

    name: str
    generation: int
    owner: str | None
    phase: JobPhase
    attempts: int = 0
    reason: str = ""
    message: str = ""
    started: float | None = None
    finished: float | None = None

    @property
    def finished_phase(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    @property
    def duration(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return max(0.0, self.finished - self.started)


def parse_time(text: str | None) -> float | None:
    """Epoch seconds of a Kubernetes timestamp (``2024-01-02T03:04:05Z``)."""
    if not text:
        return None
    return float(calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")))


def _true_condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return dict(condition)
    return None


def job_view(job: Mapping[str, Any]) -> JobView:
    """The :class:`JobView` of a Job object."""
    meta, spec, status = job.get("metadata", {}), job.get("spec", {}), job.get("status") or {}
    attempts = sum(int(status.get(key) or 0) for key in ("succeeded", "failed", "active"))
    complete, failed = _true_condition(status, "Complete"), _true_condition(status, "Failed")
    phase: JobPhase
    if complete is not None:
        phase = "Succeeded"
    elif failed is not None:
        phase = "Failed"
    elif spec.get("suspend") or _true_condition(status, "Suspended") or not status.get("active"):
        phase = "Pending"
    else:
        phase = "Running"
    ended = complete or failed or {}
    return JobView(
        name=str(meta.get("name")),
        generation=int((meta.get("labels") or {}).get(GENERATION_LABEL, -1)),
        owner=owner_uid(job),
        phase=phase,
        attempts=attempts,
        reason=str((failed or {}).get("reason", "")),
        message=str((failed or {}).get("message", "")),
        started=parse_time(status.get("startTime")),
        finished=parse_time(status.get("completionTime") or ended.get("lastTransitionTime")),
    )
