"""S3 access for one Population: credentials from its Secret, the store, exporting the best, cleanup.

Credentials are read from ``spec.storage.secretRef`` (keys ``AWS_ACCESS_KEY_ID`` and
``AWS_SECRET_ACCESS_KEY``) in the Population's namespace. Without one, the operator's own AWS identity
(IRSA, workload identity, ``AWS_*`` variables) is used only in the namespaces the cluster admin allows
(``NORA_AMBIENT_CREDENTIALS_NAMESPACES``); anywhere else the Population is refused, never served with the
operator's identity.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from nora.api.placement import StorageSpec
from nora.api.population import PopulationSpec
from nora.evolution.layout import namespaced_prefix, task_key
from nora.evolution.records import GenomePlan
from nora.evolution.tasks import genome_task
from nora.storage import LocalStore, S3Store, Store, StoreError

ACCESS_KEY, SECRET_KEY = "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"


@dataclass(frozen=True)
class StorageAccess:
    """How to reach a Population's bucket (picklable: the breeding process gets one too)."""

    bucket: str
    endpoint: str | None = None
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        config = Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 5, "mode": "standard"},
            max_pool_connections=32,
        )
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region or "us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=config,
        )

    def store(self) -> S3Store:
        return S3Store(bucket=self.bucket, client=self.client())


class Stores(Protocol):
    """Turns a Population's storage spec into access details and a store (the seam tests replace)."""

    def access(self, namespace: str, storage: StorageSpec) -> StorageAccess: ...

    def store(self, access: StorageAccess) -> Store: ...


class S3Stores:
    """:class:`Stores` over S3, reading Secrets with ``read_secret`` and caching one client per access."""

    def __init__(
        self,
        read_secret: Callable[[str, str], dict[str, str]],
        endpoint: str | None = None,
        region: str | None = None,
        ambient: frozenset[str] = frozenset(),
        endpoint_hosts: frozenset[str] = frozenset(),
    ) -> None:
        self.read_secret = read_secret
        self.endpoint = endpoint
        self.region = region
        self.ambient = ambient
        """Namespaces allowed to use the operator's own identity (no ``secretRef``)."""
        self.endpoint_hosts = endpoint_hosts
        """``host[:port]`` a ``spec.storage.endpoint`` may name; empty: any."""
        self._stores: dict[StorageAccess, S3Store] = {}
        self._lock = threading.Lock()

    def access(self, namespace: str, storage: StorageSpec) -> StorageAccess:
        if not storage.bucket:
            raise StoreError("spec.storage.bucket is not set")
        host = urlsplit(storage.endpoint).netloc if storage.endpoint else None
        if host is not None and self.endpoint_hosts and host not in self.endpoint_hosts:
            raise StoreError(
                f"spec.storage.endpoint: {host} is not among the S3 endpoints this operator may reach "
                "(ask the cluster admin to add it to operator.s3EndpointAllowlist)"
            )
        keys: dict[str, str] = {}
        if storage.secret_ref is None and namespace not in self.ambient:
            raise StoreError(
                "spec.storage.secretRef: required in this namespace (name a Secret holding "
                f"{ACCESS_KEY} and {SECRET_KEY}); the operator's own identity is not lent to it"
            )
        if storage.secret_ref is not None:
            keys = self.read_secret(namespace, storage.secret_ref.name)
            missing = [k for k in (ACCESS_KEY, SECRET_KEY) if not keys.get(k)]
            if missing:
                raise StoreError(
                    f"Secret {namespace}/{storage.secret_ref.name} lacks {', '.join(missing)} "
                    "(spec.storage.secretRef)"
                )
        return StorageAccess(
            bucket=storage.bucket,
            endpoint=storage.endpoint or self.endpoint,
            region=storage.region or self.region,
            access_key=keys.get(ACCESS_KEY),
            secret_key=keys.get(SECRET_KEY),
        )

    def store(self, access: StorageAccess) -> Store:
        with self._lock:
            if access not in self._stores:
                self._stores[access] = access.store()
            return self._stores[access]


def task_uri(store: Store, spec: PopulationSpec, population: str, plan: GenomePlan) -> str:
    """Where the genome's ``genome.json`` lives."""
    return store.uri(task_key(spec.storage.prefix, population, plan.generation, plan.id))


def write_task(store: Store, spec: PopulationSpec, population: str, plan: GenomePlan) -> str:
    """Write the genome's ``genome.json`` (the trainer's input; deterministic bytes); its URI."""
    task = genome_task(spec, population, plan, store.uri)
    key = task_key(spec.storage.prefix, population, plan.generation, plan.id)
    store.write_bytes(key, json.dumps(task.to_json_dict(), indent=2, sort_keys=True).encode())
    return store.uri(key)


def namespaced(spec: PopulationSpec, namespace: str) -> PopulationSpec:
    """``spec`` with its storage prefix scoped to ``namespace`` (``<prefix>/<namespace>``, see the layout)."""
    prefix = namespaced_prefix(spec.storage.prefix, namespace)
    return spec.model_copy(update={"storage": spec.storage.model_copy(update={"prefix": prefix})})


def delete_keys(store: Store, keys: Sequence[str]) -> int:
    """Delete exactly ``keys`` (never a prefix); the number of objects deleted."""
    if isinstance(store, S3Store):
        for start in range(0, len(keys), 1000):
            batch = [{"Key": key} for key in keys[start : start + 1000]]
            store.client.delete_objects(Bucket=store.bucket, Delete={"Objects": batch, "Quiet": True})
    elif isinstance(store, LocalStore):
        for key in keys:
            (store.root / key).unlink(missing_ok=True)
    else:
        raise StoreError(f"cannot delete from a {type(store).__name__}")
    return len(keys)
