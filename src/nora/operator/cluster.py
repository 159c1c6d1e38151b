"""The seam between the reconciler and Kubernetes: a small Protocol and its implementation.

The implementation uses the official ``kubernetes`` client synchronously (the reconciler runs in worker
threads, never on kopf's event loop) and skips model deserialization: bodies are plain dicts.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from typing import Any, Protocol

from nora.operator.objects import GENERATIONS, GROUP, JSON, POPULATIONS, VERSION, ObjectRef

MERGE_PATCH = "application/merge-patch+json"
COMPONENT = "nora-operator"


class Cluster(Protocol):
    """Everything the reconciler reads and writes in the cluster."""

    def get_population(self, namespace: str, name: str) -> JSON | None: ...

    def patch_population_status(self, namespace: str, name: str, status: JSON) -> None:
        """JSON merge patch of ``status`` (``None`` values delete fields)."""
        ...

    def get_generation(self, namespace: str, name: str) -> JSON | None: ...

    def create_generation(self, body: JSON) -> JSON:
        """Create ``body``; if it exists already, return the existing object."""
        ...

    def patch_generation_status(self, namespace: str, name: str, status: JSON) -> None: ...

    def create_job(self, body: JSON) -> bool:
        """Create a Job; ``False`` if one of that name exists already."""
        ...

    def create_pvc(self, body: JSON) -> bool:
        """Create a PersistentVolumeClaim; ``False`` if it exists already."""
        ...

    def job_failure_message(self, namespace: str, job: str) -> str:
        """The termination message of the Job's most recently failed Pod ("" if none)."""
        ...

    def read_secret(self, namespace: str, name: str) -> dict[str, str]: ...

    def post_event(self, subject: ObjectRef, kind: str, reason: str, message: str) -> None:
        """Record an Event (``kind`` Normal or Warning) about ``subject``."""
        ...


def _status_code(error: Exception) -> int | None:
    return getattr(error, "status", None)


def _json(response: Any) -> JSON:
    data = response.data if hasattr(response, "data") else response
    return dict(json.loads(data)) if isinstance(data, bytes | str) else dict(data)


def latest_termination_message(pods: list[Mapping[str, Any]]) -> str:
    """The message of the most recently terminated non-zero container among ``pods``."""
    found: list[tuple[str, str]] = []
    for pod in pods:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            for state in (status.get("state") or {}, status.get("lastState") or {}):
                ended = state.get("terminated") or {}
                if ended and ended.get("exitCode", 0) != 0:
                    found.append((str(ended.get("finishedAt") or ""), str(ended.get("message") or "")))
    found.sort()
    return found[-1][1].strip() if found else ""


class KubernetesCluster:
    """:class:`Cluster` over ``kubernetes.client`` (an ``ApiClient`` from the kubeconfig or in-cluster)."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self.custom = client.CustomObjectsApi(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)

    @classmethod
    def from_environment(cls, pool_size: int = 16) -> KubernetesCluster:
        """In-cluster configuration when running in a Pod, else the kubeconfig (``$KUBECONFIG``)."""
        from kubernetes import client, config

        configuration = client.Configuration()
        loader: Any = config  # untyped
        try:
            loader.load_incluster_config(client_configuration=configuration)
        except loader.ConfigException:
            loader.load_kube_config(client_configuration=configuration)
        configuration.connection_pool_maxsize = pool_size
        return cls(client.ApiClient(configuration))

    def _get(self, plural: str, namespace: str, name: str) -> JSON | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return _json(
                self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, name, _preload_content=False
                )
            )
        except ApiException as error:
            if _status_code(error) == 404:
                return None
            raise

    def _patch_status(self, plural: str, namespace: str, name: str, status: JSON) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, plural, name, {"status": status},
            _content_type=MERGE_PATCH, _preload_content=False,
        )  # fmt: skip

    def get_population(self, namespace: str, name: str) -> JSON | None:
        return self._get(POPULATIONS, namespace, name)

    def patch_population_status(self, namespace: str, name: str, status: JSON) -> None:
        self._patch_status(POPULATIONS, namespace, name, status)

    def get_generation(self, namespace: str, name: str) -> JSON | None:
        return self._get(GENERATIONS, namespace, name)

    def create_generation(self, body: JSON) -> JSON:
        from kubernetes.client.exceptions import ApiException

        meta = body["metadata"]
        try:
            return _json(
                self.custom.create_namespaced_custom_object(
                    GROUP, VERSION, meta["namespace"], GENERATIONS, body, _preload_content=False
                )
            )
        except ApiException as error:
            if _status_code(error) != 409:
                raise
        existing = self.get_generation(meta["namespace"], meta["name"])
        if existing is None:
            raise RuntimeError(f"Generation {meta['namespace']}/{meta['name']} exists and vanished")
        return existing

    def patch_generation_status(self, namespace: str, name: str, status: JSON) -> None:
        self._patch_status(GENERATIONS, namespace, name, status)

    def create_job(self, body: JSON) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            batch: Any = self.batch  # dict bodies are accepted as they are
            batch.create_namespaced_job(body["metadata"]["namespace"], body, _preload_content=False)
        except ApiException as error:
            if _status_code(error) == 409:
                return False
            raise
        return True

    def create_pvc(self, body: JSON) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            core: Any = self.core  # dict bodies are accepted as they are
            core.create_namespaced_persistent_volume_claim(
                body["metadata"]["namespace"], body, _preload_content=False
            )
        except ApiException as error:
            if _status_code(error) == 409:
                return False
            raise
        return True

    def job_failure_message(self, namespace: str, job: str) -> str:
        response = self.core.list_namespaced_pod(
            namespace, label_selector=f"batch.kubernetes.io/job-name={job}", _preload_content=False
        )
        return latest_termination_message(list(_json(response).get("items") or []))

    def read_secret(self, namespace: str, name: str) -> dict[str, str]:
        import base64

        from kubernetes.client.exceptions import ApiException

        from nora.storage import StoreError

        try:
            secret = _json(self.core.read_namespaced_secret(name, namespace, _preload_content=False))
        except ApiException as error:
            if _status_code(error) in (403, 404):
                raise StoreError(
                    f"Secret {namespace}/{name} cannot be read (spec.storage.secretRef): {error.reason}"
                ) from None
            raise
        return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}

    def post_event(self, subject: ObjectRef, kind: str, reason: str, message: str) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{subject.name}.{secrets.token_hex(8)}", "namespace": subject.namespace},
            "involvedObject": {
                "apiVersion": subject.api_version,
                "kind": subject.kind,
                "name": subject.name,
                "namespace": subject.namespace,
                "uid": subject.uid,
            },
            "type": kind,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": COMPONENT,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        core: Any = self.core
        core.create_namespaced_event(subject.namespace, body, _preload_content=False)
