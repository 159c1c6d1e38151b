"""The CRDs in crds/ are generated from the API models and must not drift from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from nora.api import crd
from nora.api.manifest import parse_population

CRDS = Path(__file__).resolve().parents[2] / "crds"


def _version(name: str) -> dict[str, Any]:
    document = yaml.safe_load((CRDS / name).read_text())
    return dict(document["spec"]["versions"][0])


def test_the_committed_crds_are_what_the_models_generate() -> None:
    stale = crd.drifted(CRDS)
    assert stale == [], f"run `python -m nora.api.crd` to regenerate {stale}"
    assert crd.main(["--check", "--dir", str(CRDS)]) == 0


def test_check_reports_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert crd.main(["--dir", str(tmp_path)]) == 0
    path = tmp_path / "nora.dev_populations.yaml"
    path.write_text(path.read_text().replace("minimum: 2", "minimum: 3"))
    assert crd.main(["--check", "--dir", str(tmp_path)]) == 1
    assert "nora.dev_populations.yaml: out of date" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "short"), [("nora.dev_populations.yaml", "pop"), ("nora.dev_generations.yaml", "gen")]
)
def test_both_kinds_have_status_printer_columns_and_short_names(name: str, short: str) -> None:
    document = yaml.safe_load((CRDS / name).read_text())
    assert document["spec"]["names"]["shortNames"] == [short]
    version = document["spec"]["versions"][0]
    assert (version["name"], version["subresources"]) == ("v1alpha1", {"status": {}})
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert {"Phase", "Generation", "Best", "Age"} <= set(columns)
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert status["properties"]["kopf"]["x-kubernetes-preserve-unknown-fields"] is True


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)] if isinstance(node, dict) else []
    if isinstance(node, dict):
        for key, child in (node.get("properties") or {}).items():
            found += _walk(child, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            found += _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            found += _walk(node["additionalProperties"], f"{path}{{}}")
    return found


def test_the_schema_is_structural() -> None:
    for name in ("nora.dev_populations.yaml", "nora.dev_generations.yaml"):
        schema = _version(name)["schema"]["openAPIV3Schema"]
        for path, node in _walk(schema):
            assert "type" in node, f"{name}{path}: every node needs a type"
            assert not {"anyOf", "oneOf", "$ref", "prefixItems"} & set(node), f"{name}{path}"
            free = "properties" not in node and "additionalProperties" not in node
            if node["type"] == "object" and free and path != ".metadata":
                assert node.get("x-kubernetes-preserve-unknown-fields") is True, f"{name}{path}"


def test_spec_defaults_match_the_models() -> None:
    spec = _version("nora.dev_populations.yaml")["schema"]["openAPIV3Schema"]["properties"]["spec"]
    props = spec["properties"]
    assert props["populationSize"]["default"] == 8
    assert props["selection"]["default"] == {}
    assert props["selection"]["properties"]["method"]["default"] == "tournament"
    assert props["adapter"]["properties"]["targetModules"]["default"] == [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
    ]
    assert props["crossover"]["properties"]["temperature"] == {
        "type": "number",
        "default": 0.1,
        "exclusiveMinimum": True,
        "minimum": 0.0,
    }
    assert props["mutation"]["properties"]["hyperparameters"]["additionalProperties"]["maxItems"] == 2


def _violations() -> dict[str, dict[str, Any]]:
    """One spec change per cross-field rule that breaks it."""
    return {
        ".selection.survivors": {"selection": {"survivors": 9}},
        ".selection.elites": {"selection": {"elites": 8}},
        ".selection.tournamentSize": {"selection": {"tournamentSize": 9}},
        ".seedAdapters": {"seedAdapters": [{"uri": f"s3://b/a{i}/"} for i in range(9)]},
        ".retries.maxFailedGenomes": {"retries": {"maxFailedGenomes": 9}},
        ".adapter.initialRank": {"adapter": {"initialRank": 65}},
        ".training.pairsPerPrompt": {"training": {"samplesPerPrompt": 2, "pairsPerPrompt": 3}},
        ".crossover.rank": {"crossover": {"method": "nora", "rank": 4}},
        ".crossover.method": {"crossover": {"method": "ties"}},
        ".fitness.goal": {"fitness": {"metric": "irpo_loss"}},
        ".storage.secretRef": {"storage": {"secretRef": {"name": "s3"}}},
        ".workloadPriorityClassName": {"workloadPriorityClassName": "high"},
        ".modelCache": {"modelCache": {"storageClassName": "fast", "claimName": "models"}},
        ".baseModel.uri": {"baseModel": {"uri": "file:///models/m"}, "modelCache": {"claimName": "models"}},
        ".strategy.bounds": {"strategy": {"bounds": [0.5, 1.5]}},
        ".strategy.layers": {"strategy": {"layers": 2}},
    }


@pytest.mark.parametrize(("field", "change"), sorted(_violations().items()))
def test_every_cel_rule_mirrors_a_semantic_rule_of_the_models(field: str, change: dict[str, Any]) -> None:
    rules = crd.population_spec_rules()
    assert field in {rule["fieldPath"] for rule in rules}
    document = {
        "apiVersion": "nora.dev/v1alpha1",
        "kind": "Population",
        "metadata": {"name": "demo"},
        "spec": {
            "baseModel": {"uri": "hf://a/b"},
            "dataset": {"train": "s3://d/t", "eval": "s3://d/e"},
            **change,
        },
    }
    with pytest.raises(ValueError, match=f"spec{field}".replace(".", r"\.")):
        parse_population(document)


def test_every_cel_rule_has_a_violation_in_this_test() -> None:
    assert {rule["fieldPath"] for rule in crd.population_spec_rules()} == set(_violations())
