"""Names, labels and owner references of the objects the operator creates (pure functions).

Every child has a deterministic name, so a restarted operator finds what exists and creates nothing
twice: Generation ``<population>-g<N>``, Job ``<population>-g<N>-<i>`` (the genome id).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nora.api.base import API_GROUP, API_GROUP_VERSION, API_VERSION

GROUP, VERSION = API_GROUP, API_VERSION
POPULATIONS, GENERATIONS = "populations", "generations"
POPULATION_LABEL = "nora.dev/population"
GENERATION_LABEL = "nora.dev/generation"
GENOME_LABEL = "nora.dev/genome"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_CLASS_LABEL = "kueue.x-k8s.io/priority-class"
MANAGED_BY = "nora-operator"
JSON = dict[str, Any]


@dataclass(frozen=True)
class ObjectRef:
    """Enough of an object to own another one, or to be the subject of an Event."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> ObjectRef:
        meta = body["metadata"]
        return cls(body["apiVersion"], body["kind"], meta["namespace"], meta["name"], meta["uid"])

    def owner_reference(self) -> JSON:
        """An ownerReference making this object the controlling owner (garbage collection follows it)."""
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def generation_name(population: str, generation: int) -> str:
    return f"{population}-g{generation}"


def common_labels(population: str, generation: int | None = None) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/name": "nora",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        POPULATION_LABEL: population,
    }
    if generation is not None:
        labels[GENERATION_LABEL] = str(generation)
    return labels


def build_generation(owner: ObjectRef, generation: int, spec: JSON) -> JSON:
    """A Generation object owned by the Population ``owner``; ``spec`` is its ``GenerationSpec`` JSON."""
    return {
        "apiVersion": API_GROUP_VERSION,
        "kind": "Generation",
        "metadata": {
            "name": generation_name(owner.name, generation),
            "namespace": owner.namespace,
            "labels": {**common_labels(owner.name, generation), "app.kubernetes.io/component": "generation"},
            "ownerReferences": [owner.owner_reference()],
        },
        "spec": spec,
    }


def owner_uid(body: Mapping[str, Any]) -> str | None:
    """The uid of the controlling owner of ``body``, if any."""
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None
