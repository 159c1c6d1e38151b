"""The Helm chart helm/nora in tests: render it offline with the pinned helm and pick objects from it.

helm is the binary ``tools/build-tools.sh`` builds (``require("helm")``: a missing one fails the test with
the build command). Rendering needs no cluster; the integration tests apply what these helpers render.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.binaries import REPO_ROOT, require

CHART = REPO_ROOT / "helm" / "nora"
CI_VALUES = tuple(sorted((CHART / "ci").glob("*-values.yaml")))
Doc = dict[str, Any]
POD_OWNERS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet")


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the pinned ``helm args...`` (offline); with check=True a non-zero exit fails the test."""
    binary = require("helm")["helm"]
    proc = subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=120, check=False)
    if check and proc.returncode != 0:
        output = f"{proc.stderr}{proc.stdout}"
        pytest.fail(f"helm {' '.join(args)} exited {proc.returncode}:\n{output}", pytrace=False)
    return proc


def template_args(
    release: str = "nora",
    namespace: str = "nora-system",
    values: Sequence[Path] = (),
    sets: Sequence[str] = (),
    include_crds: bool = False,
) -> list[str]:
    """The arguments of ``helm template`` for the chart."""
    args = ["template", release, str(CHART), "--namespace", namespace]
    for path in values:
        args += ["--values", str(path)]
    for assignment in sets:
        args += ["--set", assignment]
    return [*args, "--include-crds"] if include_crds else args


def render_text(**kwargs: Any) -> str:
    """The YAML stream ``helm template`` prints (keywords as for :func:`template_args`)."""
    return helm(*template_args(**kwargs)).stdout


def render(**kwargs: Any) -> list[Doc]:
    """The objects ``helm template`` renders (keywords as for :func:`template_args`)."""
    return [doc for doc in yaml.safe_load_all(render_text(**kwargs)) if doc]


def of_kind(docs: Iterable[Doc], *kinds: str) -> list[Doc]:
    """The objects of ``docs`` whose kind is one of ``kinds``."""
    return [doc for doc in docs if doc["kind"] in kinds]


def one(docs: Iterable[Doc], kind: str) -> Doc:
    """The single object of ``kind`` (fails the test when there is not exactly one)."""
    found = of_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def pod_specs(docs: Iterable[Doc]) -> list[tuple[str, Doc]]:
    """(object name, Pod spec) of every Pod template (and bare Pod) in ``docs``."""
    specs = []
    for doc in docs:
        if doc["kind"] == "Pod":
            specs.append((doc["metadata"]["name"], doc["spec"]))
        elif doc["kind"] in POD_OWNERS:
            specs.append((doc["metadata"]["name"], doc["spec"]["template"]["spec"]))
        elif doc["kind"] == "CronJob":
            specs.append((doc["metadata"]["name"], doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
    return specs


def env_of(deployment: Doc) -> dict[str, str]:
    """The operator container's plain environment variables (name to value)."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}


def rules_of(docs: Iterable[Doc]) -> list[tuple[str, Doc]]:
    """(Role or ClusterRole name, rule) of every RBAC rule in ``docs``."""
    return [
        (f"{doc['kind']}/{doc['metadata'].get('namespace', '')}/{doc['metadata']['name']}", rule)
        for doc in of_kind(docs, "Role", "ClusterRole")
        for rule in doc.get("rules", [])
    ]


def grants(rules: Iterable[Doc]) -> set[tuple[str, str, str]]:
    """Every (apiGroup, resource, verb) the ``rules`` allow."""
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }


def dump(docs: Iterable[Doc]) -> str:
    """``docs`` as one YAML stream (for kubectl)."""
    return yaml.safe_dump_all(list(docs), sort_keys=False)
