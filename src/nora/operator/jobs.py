"""Genome Jobs: the pure builder of a Job, and the compact view of a Job the operator keeps in its index.

The run's test-split Job (``nora test-score``, :mod:`nora.operator.heldout_step`) is built by the same
builder, so it runs exactly like a genome: same image, security context, Secret env and failure policy.

A genome Job runs ``<train command> s3://<bucket>/<key of genome.json>`` once (``restartPolicy:
Never``); the Job controller retries a failed Pod up to ``spec.retries.backoffLimit`` times, except that
Pod disruptions (preemption, eviction, node drain) are not counted (``podFailurePolicy`` ignores
``DisruptionTarget``, the trainer's exit code 143, which it returns after checkpointing on SIGTERM
within ``terminationGracePeriodSeconds``, and its exit code 75, an unreachable store) and a bad-input
failure (exit code 2) fails the Job at once.
With ``spec.queueName`` the Job carries Kueue's queue label (and ``spec.workloadPriorityClassName`` as
Kueue's priority-class label) and is created suspended: Kueue admits it when its quota allows, and a
suspended (queued or preempted) Job is Pending, never Failed. With ``spec.modelCache`` the Pod mounts the
model-cache PVC read-only at :data:`MODEL_CACHE_MOUNT` and the trainer loads the base model from it offline;
``spec.template.volumes`` and ``volumeMounts`` are added as given.
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
    PRIORITY_CLASS_LABEL,
    QUEUE_LABEL,
    ObjectRef,
    common_labels,
    owner_uid,
)

CONTAINER = "trainer"
SCRATCH_ENV = {"HOME": "/tmp", "XDG_CACHE_HOME": "/tmp/.cache", "HF_HOME": "/tmp/huggingface"}
MODEL_CACHE_VOLUME = "nora-model-cache"
MODEL_CACHE_MOUNT = "/nora-models"
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
CONTAINER_SECURITY: JSON = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
POD_SECURITY: JSON = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
SCRATCH_VOLUMES: tuple[JSON, ...] = (
    {"name": "tmp", "emptyDir": {}},
    {"name": "dshm", "emptyDir": {"medium": "Memory"}},
)
SCRATCH_MOUNTS: tuple[JSON, ...] = (
    {"name": "tmp", "mountPath": "/tmp"},
    {"name": "dshm", "mountPath": "/dev/shm"},
)
JobPhase = Literal["Pending", "Running", "Succeeded", "Failed"]


@dataclass(frozen=True)
class JobRequest:
    """Everything that decides one genome Job.

    Attributes:
        owner: the Generation that owns the Job.
        population: the Population's name.
        generation: the generation number.
        genome: the genome id (also the Job's name, unless ``name`` is given).
        task_uri: ``s3://`` URI of the genome's ``genome.json``.
        spec: the Population's current spec (template, retries, deadline, queue, storage).
        command: the container command before the task URI.
        ttl_seconds: ``ttlSecondsAfterFinished``.
        component: the ``app.kubernetes.io/component`` label (``test-score`` for a run's test Job).
        name: the Job's name when it is not the genome's (a re-training, ``<genome>-r<k>``).
    """

    owner: ObjectRef
    population: str
    generation: int
    genome: str
    task_uri: str
    spec: PopulationSpec
    command: Sequence[str]
    ttl_seconds: int
    component: str = "genome"
    name: str = ""


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


def model_cache_claim(population: str, spec: PopulationSpec) -> str | None:
    """The PVC holding the fetched base model: the user's ``claimName`` or ``<population>-model-cache``."""
    cache = spec.model_cache
    if cache is None:
        return None
    return cache.claim_name or f"{population}-model-cache"


def model_cache_env(read_only: bool) -> list[JSON]:
    """Where the trainer finds fetched models; genome Jobs (``read_only``) also stay offline."""
    offline = OFFLINE_ENV if read_only else {}
    values = {contract.ENV_MODEL_CACHE: MODEL_CACHE_MOUNT, **offline}
    return [{"name": key, "value": value} for key, value in values.items()]


def _environment(request: JobRequest, endpoint: str | None, region: str | None) -> list[JSON]:
    user = list(request.spec.template.env)
    named = {str(var.get("name")) for var in user}
    cached = request.spec.model_cache is not None
    ours: list[JSON] = [
        {"name": contract.ENV_POPULATION, "value": request.population},
        {"name": contract.ENV_GENERATION, "value": str(request.generation)},
        {"name": contract.ENV_GENOME, "value": request.genome},
        *({"name": k, "value": v} for k, v in SCRATCH_ENV.items()),
        *storage_env(request.spec, endpoint, region),
        *(model_cache_env(read_only=True) if cached else []),
    ]
    return [var for var in ours if var["name"] not in named] + user


def _mounts(spec: PopulationSpec) -> list[JSON]:
    cache: list[JSON] = []
    if spec.model_cache is not None:
        cache = [{"name": MODEL_CACHE_VOLUME, "mountPath": MODEL_CACHE_MOUNT, "readOnly": True}]
    return [*SCRATCH_MOUNTS, *cache, *spec.template.volume_mounts]


def _volumes(request: JobRequest) -> list[JSON]:
    claim = model_cache_claim(request.population, request.spec)
    cache: list[JSON] = []
    if claim is not None:
        source = {"claimName": claim, "readOnly": True}
        cache = [{"name": MODEL_CACHE_VOLUME, "persistentVolumeClaim": source}]
    return [*SCRATCH_VOLUMES, *cache, *request.spec.template.volumes]


def _container(request: JobRequest, endpoint: str | None, region: str | None) -> JSON:
    template = request.spec.template
    container: JSON = {
        "name": CONTAINER,
        "image": template.image,
        "command": [*request.command, request.task_uri],
        "env": _environment(request, endpoint, region),
        "securityContext": dict(CONTAINER_SECURITY),
        "volumeMounts": _mounts(request.spec),
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
        "terminationGracePeriodSeconds": template.termination_grace_period_seconds,
        "securityContext": dict(POD_SECURITY),
        "containers": [_container(request, endpoint, region)],
        "volumes": _volumes(request),
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


def kueue_labels(spec: PopulationSpec) -> dict[str, str]:
    """Kueue's queue label and, when named, its WorkloadPriorityClass label."""
    labels: dict[str, str] = {}
    if spec.queue_name:
        labels[QUEUE_LABEL] = spec.queue_name
        if spec.workload_priority_class_name:
            labels[PRIORITY_CLASS_LABEL] = spec.workload_priority_class_name
    return labels


def pod_failure_policy() -> JSON:
    """Disruptions, checkpointed SIGTERM stops and an unreachable store are not failures (the Job controller
    replaces the Pod without counting it, within ``activeDeadlineSeconds``); bad input fails the Job at
    once."""
    return {
        "rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            {
                "action": "Ignore",
                "onExitCodes": {
                    "containerName": CONTAINER,
                    "operator": "In",
                    "values": sorted((contract.EXIT_TRANSIENT, contract.EXIT_PREEMPTED)),
                },
            },
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": CONTAINER,
                    "operator": "In",
                    "values": [contract.EXIT_INPUT_ERROR],
                },
            },
        ]
    }


def build_job(request: JobRequest, endpoint: str | None = None, region: str | None = None) -> JSON:
    """The Job of one genome (a plain dict, ready to POST)."""
    spec = request.spec
    labels = {
        **common_labels(request.population, request.generation),
        "app.kubernetes.io/component": request.component,
        GENOME_LABEL: request.genome,
    }
    job_labels = {**labels, **kueue_labels(spec)}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": request.name or request.genome,
            "namespace": request.owner.namespace,
            "labels": job_labels,
            "annotations": {"nora.dev/task": request.task_uri},
            "ownerReferences": [request.owner.owner_reference()],
        },
        "spec": {
            "backoffLimit": spec.retries.backoff_limit,
            "podFailurePolicy": pod_failure_policy(),
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
