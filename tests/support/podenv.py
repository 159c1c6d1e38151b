"""Resolve a container's environment as the kubelet does: env/envFrom, Secret/ConfigMap/field refs, $(VAR)."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any

from tests.support.kubeapi import JSON, KubeHTTP

_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class ConfigError(Exception):
    """The container cannot be started yet (kubelet reason CreateContainerConfigError)."""


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes $(VAR) expansion: defined names are replaced, undefined ones kept, $$ escapes a $."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR_REF.sub(replace, text)


def _object_data(
    api: KubeHTTP, kind: str, namespace: str, name: str, optional: bool
) -> dict[str, str] | None:
    plural = "secrets" if kind == "Secret" else "configmaps"
    obj = api.get_or_none(f"/api/v1/namespaces/{namespace}/{plural}/{name}")
    if obj is None:
        if optional:
            return None
        raise ConfigError(f'{kind.lower()} "{name}" not found')
    if kind == "Secret":
        return {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
    return dict(obj.get("data") or {})


def _key_ref(api: KubeHTTP, kind: str, namespace: str, ref: JSON) -> str | None:
    optional = bool(ref.get("optional", False))
    data = _object_data(api, kind, namespace, ref["name"], optional)
    if data is None:
        return None
    if ref["key"] not in data:
        if optional:
            return None
        raise ConfigError(f"couldn't find key {ref['key']} in {kind} {namespace}/{ref['name']}")
    return data[ref["key"]]


_LABELLED = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")


def field_value(pod: JSON, path: str) -> str:
    """The value of a downward-API ``fieldRef.fieldPath`` for ``pod``."""
    meta: dict[str, Any] = pod["metadata"]
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": pod["spec"].get("nodeName"),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName"),
        "status.hostIP": "127.0.0.1",
        "status.hostIPs": "127.0.0.1",
        "status.podIP": "127.0.0.1",
        "status.podIPs": "127.0.0.1",
    }
    if path in simple:
        return str(simple[path] or "")
    labelled = _LABELLED.match(path)
    if labelled:
        return str((meta.get(labelled.group(1)) or {}).get(labelled.group(2), ""))
    raise ConfigError(f"unsupported fieldRef.fieldPath {path!r}")


def _value_from(api: KubeHTTP, pod: JSON, source: JSON) -> str | None:
    namespace = pod["metadata"]["namespace"]
    if "secretKeyRef" in source:
        return _key_ref(api, "Secret", namespace, source["secretKeyRef"])
    if "configMapKeyRef" in source:
        return _key_ref(api, "ConfigMap", namespace, source["configMapKeyRef"])
    if "fieldRef" in source:
        return field_value(pod, source["fieldRef"]["fieldPath"])
    raise ConfigError(
        f"unsupported env valueFrom {sorted(source)} (the process kubelet supports "
        "secretKeyRef, configMapKeyRef and fieldRef)"
    )


def container_env(api: KubeHTTP, pod: JSON, container: JSON) -> dict[str, str]:
    """The environment variables the Pod spec gives ``container`` (envFrom first, then env, in order)."""
    env: dict[str, str] = {}
    namespace = pod["metadata"]["namespace"]
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        kind, ref = (
            ("Secret", source["secretRef"])
            if "secretRef" in source
            else ("ConfigMap", source["configMapRef"])
        )
        data = _object_data(api, kind, namespace, ref["name"], bool(ref.get("optional", False)))
        env.update({prefix + k: v for k, v in (data or {}).items()})
    for var in container.get("env") or []:
        if "valueFrom" in var:
            value = _value_from(api, pod, var["valueFrom"])
            if value is not None:
                env[var["name"]] = value
        else:
            env[var["name"]] = expand(var.get("value", ""), env)
    return env
