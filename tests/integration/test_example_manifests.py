"""The example manifests (manifests/examples, manifests/gpu, manifests/kueue and the README's cluster
section) are valid for the NoRA API and for a real kube-apiserver.

Every Population loads with ``nora.api.manifest.load_population`` and, when meant for a cluster, passes
the operator's own checks; the real apiserver accepts it (``kubectl apply --server-side
--dry-run=server``) after the generated CRDs are installed, and refuses a copy with a bad field, naming
the field. The Kueue objects are applied against minimal stand-in Kueue CRDs
(tests/fixtures/kueue-crds.yaml): this only checks that they are well-formed Kubernetes objects of the
right kinds and scopes, plus the references between them, not that Kueue itself would accept or admit
them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from nora.api.manifest import load_population, parse_population
from nora.operator.reconciler import cluster_problems
from tests.support.crds import install_crds
from tests.support.fixtures import Kubectl

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_DIRS = ("examples", "gpu", "kueue")
KUEUE_CRDS = REPO / "tests" / "fixtures" / "kueue-crds.yaml"
KUEUE_KINDS = ("ResourceFlavor", "ClusterQueue", "LocalQueue")
GPU_MANIFEST = REPO / "manifests" / "gpu" / "population.yaml"
README_HEREDOC = re.compile(r"<<'YAML'\n(.*?)\nYAML\n", re.DOTALL)


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _example_files() -> list[Path]:
    return sorted(p for d in EXAMPLE_DIRS for p in (REPO / "manifests" / d).glob("*.yaml"))


def _population_files() -> list[Path]:
    return [p for p in _example_files() if any(d.get("kind") == "Population" for d in _documents(p))]


def _readme_populations() -> list[str]:
    """The Populations written inline (``<<'YAML'`` heredocs) in the README's "On a cluster" section."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## On a cluster\n", 1)[1].split("\n## ", 1)[0]
    return [m for m in README_HEREDOC.findall(section) if "kind: Population" in m]


def _for_cluster(path: Path) -> bool:
    return path.parent.name != "examples"


def _dry_run(kubectl: Kubectl, namespace: str, manifest: str) -> Any:
    """Server-side apply in dry-run mode; the objects as the apiserver would store them."""
    result = kubectl(
        "apply", "--server-side", "--dry-run=server", "-n", namespace, "-f", "-", "-o", "yaml", stdin=manifest
    )
    return yaml.safe_load(result.stdout)


def _items(applied: Any) -> list[dict[str, Any]]:
    return list(applied["items"]) if applied.get("kind") == "List" else [applied]


@pytest.fixture(scope="module")
def crds(kubectl: Kubectl) -> None:
    install_crds(kubectl)


@pytest.fixture(scope="module")
def kueue_crds(kubectl: Kubectl) -> None:
    install_crds(kubectl, KUEUE_CRDS)


def test_the_examples_exist() -> None:
    names = {str(p.relative_to(REPO)) for p in _population_files()}
    assert {
        "manifests/examples/quickstart.yaml",
        "manifests/gpu/population.yaml",
        "manifests/kueue/population.yaml",
    } <= names
    assert len(_readme_populations()) >= 1, "README's cluster section lost its inline quick-start Population"


@pytest.mark.parametrize("path", _population_files(), ids=lambda p: str(p.relative_to(REPO / "manifests")))
def test_population_manifest_is_valid(path: Path) -> None:
    manifest = load_population(path)
    if _for_cluster(path):
        assert cluster_problems(manifest.spec) == []
        assert manifest.spec.storage.secret_ref is not None, (
            "cluster examples must show spec.storage.secretRef"
        )


def test_readme_populations_are_valid() -> None:
    for text in _readme_populations():
        manifest = parse_population(yaml.safe_load(text))
        assert cluster_problems(manifest.spec) == [], manifest.name


@pytest.mark.parametrize("path", _population_files(), ids=lambda p: str(p.relative_to(REPO / "manifests")))
def test_apiserver_accepts_population(path: Path, kubectl: Kubectl, namespace: str, crds: None) -> None:
    (stored,) = _items(_dry_run(kubectl, namespace, path.read_text()))
    expected = load_population(path)
    assert (stored["kind"], stored["metadata"]["name"]) == ("Population", expected.name)
    assert stored["metadata"]["namespace"] == namespace
    # Nothing was pruned: every field written in the file is kept by the schema.
    written = yaml.safe_load(path.read_text())["spec"]
    assert _pruned(written, stored["spec"]) == []


def test_apiserver_accepts_readme_populations(kubectl: Kubectl, namespace: str, crds: None) -> None:
    for text in _readme_populations():
        (stored,) = _items(_dry_run(kubectl, namespace, text))
        assert _pruned(yaml.safe_load(text)["spec"], stored["spec"]) == []


def _pruned(written: Any, stored: Any, path: str = "spec") -> list[str]:
    """Paths of ``written`` that are missing from ``stored`` (what a structural schema would prune)."""
    if isinstance(written, dict):
        if not isinstance(stored, dict):
            return [path]
        missing = [f"{path}.{k}" for k in written if k not in stored]
        return missing + [
            m for k, v in written.items() if k in stored for m in _pruned(v, stored[k], f"{path}.{k}")
        ]
    if isinstance(written, list) and isinstance(stored, list):
        return [
            m
            for i, (w, s) in enumerate(zip(written, stored, strict=False))
            for m in _pruned(w, s, f"{path}[{i}]")
        ]
    return []


@pytest.mark.parametrize(
    ("path", "value", "field", "message", "server_side"),
    [
        (
            ("training", "learningRat"),
            0.001,
            "spec.training.learningRat",
            "field not declared in schema",
            True,
        ),
        (("training", "learningRat"), 0.001, 'unknown field "spec.training.learningRat"', "", False),
        (("populationSize",), 1, "spec.populationSize", "greater than or equal to 2", True),
        (
            ("selection", "survivors"),
            13,
            "spec.selection.survivors",
            "must not exceed spec.populationSize",
            True,
        ),
        (("dataset", "promptTemplate"), "no slot", "spec.dataset.promptTemplate", "{question}", False),
    ],
    ids=["unknown-field", "unknown-field-client-side-apply", "out-of-range", "cross-field", "pattern"],
)
def test_apiserver_refuses_a_bad_field(
    path: tuple[str, ...],
    value: object,
    field: str,
    message: str,
    server_side: bool,
    kubectl: Kubectl,
    namespace: str,
    crds: None,
) -> None:
    """A copy of the GPU example with one bad field is refused, and the error names that field."""
    document = yaml.safe_load(GPU_MANIFEST.read_text())
    target = document["spec"]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    mode = ["--server-side"] if server_side else []
    manifest = yaml.safe_dump(document)
    result = kubectl(
        "apply", *mode, "--dry-run=server", "-n", namespace, "-f", "-", stdin=manifest, check=False
    )
    assert result.returncode != 0, f"the apiserver accepted {field}={value!r}:\n{result.stdout}"
    assert field in result.stderr, result.stderr
    assert message in result.stderr, result.stderr


def _kueue_objects() -> dict[str, dict[str, Any]]:
    docs = _documents(REPO / "manifests" / "kueue" / "queues.yaml")
    assert sorted(d["kind"] for d in docs) == sorted(KUEUE_KINDS)
    return {d["kind"]: d for d in docs}


def test_apiserver_accepts_kueue_objects(kubectl: Kubectl, namespace: str, kueue_crds: None) -> None:
    text = (REPO / "manifests" / "kueue" / "queues.yaml").read_text()
    stored = {item["kind"]: item for item in _items(_dry_run(kubectl, namespace, text))}
    assert sorted(stored) == sorted(KUEUE_KINDS)
    assert stored["LocalQueue"]["metadata"]["namespace"] == namespace
    assert "namespace" not in stored["ClusterQueue"]["metadata"], "ClusterQueue must be cluster-scoped"
    for kind, written in _kueue_objects().items():
        assert _pruned(written["spec"], stored[kind]["spec"]) == [], kind


def test_kueue_objects_reference_each_other() -> None:
    objects = _kueue_objects()
    population = load_population(REPO / "manifests" / "kueue" / "population.yaml").spec
    assert population.queue_name == objects["LocalQueue"]["metadata"]["name"]
    assert objects["LocalQueue"]["spec"]["clusterQueue"] == objects["ClusterQueue"]["metadata"]["name"]
    (group,) = objects["ClusterQueue"]["spec"]["resourceGroups"]
    flavors = {f["name"]: f for f in group["flavors"]}
    assert set(flavors) == {objects["ResourceFlavor"]["metadata"]["name"]}
    requested = set(population.template.resources.get("requests", {}))
    assert requested, "Kueue admits by requests: the queued Population must request resources"
    assert requested <= set(group["coveredResources"]), (
        "Kueue never admits a Job requesting uncovered resources"
    )
    for flavor in flavors.values():
        assert {r["name"] for r in flavor["resources"]} == set(group["coveredResources"])


def test_gpu_population_requests_one_gpu_and_tolerates_gpu_nodes() -> None:
    spec = load_population(GPU_MANIFEST).spec
    resources = spec.template.resources
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == 1
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert any(t.get("key") == "nvidia.com/gpu" for t in spec.template.tolerations)
    assert spec.template.node_selector
    assert spec.storage.secret_ref is not None
    assert spec.storage.bucket
    assert spec.base_model.uri.startswith("hf://")
    assert spec.base_model.dtype == "bfloat16"
    assert spec.dataset.train.startswith("s3://")
    assert spec.dataset.train.endswith(".jsonl")
