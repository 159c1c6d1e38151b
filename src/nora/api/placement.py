"""Where a Population's genomes run and what they keep: storage, the Pod template, the model cache, retries.

These parts of the ``Population`` spec concern the cluster (a local ``nora run`` uses only the storage
prefix and the retries).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from nora.api.base import ApiModel

AccessMode = Literal["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"]

BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
"""An S3 bucket name (3-63 lowercase letters, digits, dots and hyphens)."""
PREFIX_PATTERN = r"^([A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*)?$"
"""Key segments without empty, ``.`` or ``..`` parts, no leading or trailing ``/``."""
ENDPOINT_PATTERN = r"^https?://[^\s/?#@]+/?$"
"""An http(s) URL of a host (and port), nothing else."""


class SecretRef(ApiModel):
    """A Secret in the Population's namespace holding ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY``."""

    name: Annotated[str, Field(min_length=1, max_length=253)]


class StorageSpec(ApiModel):
    """Where adapters live on a cluster: ``s3://<bucket>/<prefix>/<namespace>/<population>/...``.

    ``cleanup: true`` deletes the objects the Population wrote there (listed from its own records, the best
    adapter included) when the Population is deleted; by default the data is kept.
    """

    bucket: Annotated[str, Field(pattern=BUCKET_PATTERN)] | None = None
    prefix: Annotated[str, Field(max_length=256, pattern=PREFIX_PATTERN)] = "nora"
    endpoint: Annotated[str, Field(max_length=2048, pattern=ENDPOINT_PATTERN)] | None = None
    region: str | None = None
    secret_ref: SecretRef | None = None
    cleanup: bool = False


class TemplateSpec(ApiModel):
    """The genome Job's Pod template pieces (Kubernetes objects are passed through as given)."""

    image: str = "ghcr.io/nora-dev/nora-trainer:0.1.0"
    resources: dict[str, Any] = Field(default_factory=dict)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    affinity: dict[str, Any] = Field(default_factory=dict)
    priority_class_name: str | None = None
    service_account_name: str | None = None
    env: list[dict[str, Any]] = Field(default_factory=list)
    volumes: list[dict[str, Any]] = Field(default_factory=list)
    """Pod volumes added as given (e.g. a PVC that already holds the model, loaded with ``file://``)."""
    volume_mounts: list[dict[str, Any]] = Field(default_factory=list)
    """Mounts of those volumes in the trainer container, added as given."""
    termination_grace_period_seconds: Annotated[int, Field(ge=1, le=3600)] = 120
    """Time a stopped Pod has to checkpoint (preemption, Kueue suspension, node drain) before SIGKILL."""


RESERVED_VOLUMES = ("tmp", "dshm", "nora-model-cache")
"""Volume names the genome Job defines itself."""
RESERVED_MOUNT_PATHS = ("/tmp", "/dev/shm", "/nora-models")
"""Mount paths the genome Job uses itself."""


class ModelCacheSpec(ApiModel):
    """Fetch an ``s3://`` or ``hf://`` base model once into a volume that every genome Job mounts read-only.

    Set ``storageClassName`` and the operator creates the PVC ``<population>-model-cache`` (``size``,
    ``accessModes``; use ReadWriteMany or ReadOnlyMany when genome Jobs run on several nodes), or set
    ``claimName`` to use an existing PVC. A model-initializer Job writes the model into it once, before
    generation 0; genome Jobs then load it offline.
    """

    storage_class_name: Annotated[str, Field(min_length=1, max_length=253)] | None = None
    claim_name: Annotated[str, Field(min_length=1, max_length=253)] | None = None
    size: Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$")] = "50Gi"
    access_modes: Annotated[list[AccessMode], Field(min_length=1)] = Field(
        default_factory=lambda: list[AccessMode](["ReadWriteOnce"])
    )


class RetriesSpec(ApiModel):
    """Retry a genome ``backoffLimit`` times; more than ``maxFailedGenomes`` failures fail the population."""

    backoff_limit: Annotated[int, Field(ge=0, le=20)] = 2
    max_failed_genomes: Annotated[int, Field(ge=0)] | None = None
