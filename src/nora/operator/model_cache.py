"""The model cache of a Population (``spec.modelCache``): pure builders of its PVC and model-initializer Job.

The base model is fetched once per Population into a volume that every genome Job mounts read-only
(:func:`nora.operator.jobs.build_job` adds the mount and the offline environment):

1. with ``storageClassName``, :func:`build_model_pvc` is the PVC ``<population>-model-cache`` to create;
   with ``claimName`` the user's PVC is used as it is;
2. :func:`build_model_initializer_job` is the Job ``<population>-model-init``: it runs the trainer image
   with ``nora fetch-model <baseModel.uri> /nora-models`` on that volume (read-write), which copies the
   model into ``/nora-models/<key of the URI>/`` (safetensors only, a completion marker written last) and
   does nothing when a complete copy is already there;
3. genome Jobs start only after that Job succeeded (:mod:`nora.operator.model_cache_step`).

Both objects are owned by the Population, so deleting it deletes the cache (a user's PVC is never owned).
The initializer does not go through Kueue: it needs no accelerator, and its retries follow the genome
Jobs' (exit code 2, a bad ``baseModel.uri``, fails it at once).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nora.api.population import PopulationSpec
from nora.operator.jobs import (
    CONTAINER,
    CONTAINER_SECURITY,
    MODEL_CACHE_MOUNT,
    MODEL_CACHE_VOLUME,
    POD_SECURITY,
    SCRATCH_ENV,
    SCRATCH_MOUNTS,
    SCRATCH_VOLUMES,
    model_cache_claim,
    model_cache_env,
    pod_failure_policy,
    storage_env,
)
from nora.operator.objects import JSON, ObjectRef, common_labels

DEFAULT_FETCH_COMMAND: tuple[str, ...] = ("python", "-m", "nora", "fetch-model")
"""The initializer's command before ``<baseModel.uri> <mount path>``."""
INITIALIZER_RESOURCES: JSON = {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}}


def initializer_job_name(population: str) -> str:
    """The model-initializer Job's name."""
    return f"{population}-model-init"


def _labels(population: str, component: str) -> dict[str, str]:
    return {**common_labels(population), "app.kubernetes.io/component": component}


def build_model_pvc(owner: ObjectRef, spec: PopulationSpec) -> JSON | None:
    """The PVC to create from ``spec.modelCache.storageClassName``; ``None`` when there is none to create."""
    cache = spec.model_cache
    if cache is None or cache.storage_class_name is None:
        return None
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": model_cache_claim(owner.name, spec),
            "namespace": owner.namespace,
            "labels": _labels(owner.name, "model-cache"),
            "ownerReferences": [owner.owner_reference()],
        },
        "spec": {
            "storageClassName": cache.storage_class_name,
            "accessModes": list(cache.access_modes),
            "volumeMode": "Filesystem",
            "resources": {"requests": {"storage": cache.size}},
        },
    }


def _initializer_pod(
    owner: ObjectRef, spec: PopulationSpec, command: Sequence[str], endpoint: str | None, region: str | None
) -> JSON:
    template = spec.template
    env: list[JSON] = [
        *({"name": k, "value": v} for k, v in SCRATCH_ENV.items()),
        *storage_env(spec, endpoint, region),
        *model_cache_env(read_only=False),
        *(var for var in template.env if str(var.get("name")).startswith(("HF_", "AWS_"))),
    ]
    container: JSON = {
        "name": CONTAINER,
        "image": template.image,
        "command": [*command, spec.base_model.uri, MODEL_CACHE_MOUNT],
        "env": env,
        "resources": dict(INITIALIZER_RESOURCES),
        "securityContext": dict(CONTAINER_SECURITY),
        "volumeMounts": [*SCRATCH_MOUNTS, {"name": MODEL_CACHE_VOLUME, "mountPath": MODEL_CACHE_MOUNT}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    claim = {"claimName": model_cache_claim(owner.name, spec)}
    pod: JSON = {
        "restartPolicy": "Never",
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "securityContext": {**POD_SECURITY, "fsGroup": 65532, "fsGroupChangePolicy": "OnRootMismatch"},
        "containers": [container],
        "volumes": [*SCRATCH_VOLUMES, {"name": MODEL_CACHE_VOLUME, "persistentVolumeClaim": claim}],
    }
    optional: dict[str, Any] = {
        "nodeSelector": dict(template.node_selector),
        "tolerations": list(template.tolerations),
        "serviceAccountName": template.service_account_name,
    }
    pod.update({key: value for key, value in optional.items() if value})
    return pod


def build_model_initializer_job(
    owner: ObjectRef,
    spec: PopulationSpec,
    command: Sequence[str] = DEFAULT_FETCH_COMMAND,
    endpoint: str | None = None,
    region: str | None = None,
) -> JSON | None:
    """The Job that fetches ``spec.baseModel.uri`` into the cache volume; ``None`` without a model cache.

    ``owner`` is the Population; ``endpoint`` and ``region`` are the S3 settings genome Jobs get.
    """
    if spec.model_cache is None:
        return None
    labels = _labels(owner.name, "model-initializer")
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": initializer_job_name(owner.name),
            "namespace": owner.namespace,
            "labels": labels,
            "annotations": {"nora.dev/base-model": spec.base_model.uri},
            "ownerReferences": [owner.owner_reference()],
        },
        "spec": {
            "backoffLimit": spec.retries.backoff_limit,
            "podFailurePolicy": pod_failure_policy(),
            "activeDeadlineSeconds": spec.active_deadline_seconds,
            "template": {
                "metadata": {"labels": labels},
                "spec": _initializer_pod(owner, spec, command, endpoint, region),
            },
        },
    }
