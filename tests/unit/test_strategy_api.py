"""``spec.strategy``: defaults, field bounds and the cross-field rules, in the models and the CRD."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from nora.api.base import ApiValidationError
from nora.api.manifest import load_population, parse_population

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "nora.dev_populations.yaml"
SEEDS = [{"uri": f"s3://b/adapter{i}/"} for i in range(3)]


def manifest(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "baseModel": {"uri": "hf://org/model"},
        "dataset": {"train": "s3://data/train.jsonl", "eval": "s3://data/eval.jsonl"},
        "populationSize": 2,
        "selection": {"tournamentSize": 2},
        **spec,
    }
    return {"apiVersion": "nora.dev/v1alpha1", "kind": "Population", "metadata": {"name": "p"}, "spec": body}


def problems(**spec: Any) -> list[str]:
    with pytest.raises(ApiValidationError) as info:
        parse_population(manifest(**spec))
    return info.value.problems


def test_the_default_strategy_is_genetic_with_lorahub_bounds() -> None:
    strategy = parse_population(manifest()).spec.strategy
    assert strategy.method == "genetic"
    assert (strategy.bounds, strategy.l1_penalty, strategy.dimension) == ((-1.5, 1.5), 0.05, 500)
    assert strategy.layers is None


def test_compose_may_weigh_more_seed_adapters_than_the_population_size() -> None:
    spec = parse_population(manifest(strategy={"method": "compose"}, seedAdapters=SEEDS)).spec
    assert len(spec.seed_adapters) == 3
    assert any("exceed spec.populationSize (2)" in p for p in problems(seedAdapters=SEEDS))


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"strategy": {"method": "compose"}}, "spec.seedAdapters: the compose strategy weighs seed adapters"),
        (
            {"strategy": {"method": "cmaes"}, "seedAdapters": SEEDS[:1]},
            "spec.seedAdapters: the cmaes strategy starts from projections of z",
        ),
        ({"strategy": {"method": "cmaes", "bounds": [0.0, 1.0]}}, "spec.strategy.bounds: [0.0, 1.0] must"),
        ({"strategy": {"method": "genetic", "layers": 4}}, "spec.strategy.layers: layer alternation"),
        ({"strategy": {"method": "cma"}}, "spec.strategy.method: Input should be 'genetic', 'cmaes'"),
        ({"strategy": {"method": "cmaes", "dimension": 0}}, "spec.strategy.dimension: Input should"),
        ({"strategy": {"method": "cmaes", "sigma": 0}}, "spec.strategy.sigma: Input should be"),
        ({"strategy": {"l1Penalty": -1}}, "spec.strategy.l1Penalty: Input should be greater than or equal"),
        ({"strategy": {"bounds": [-1.0]}}, "spec.strategy.bounds.1: Field required"),
    ],
)
def test_bad_strategies_name_the_field_and_the_fix(spec: dict[str, Any], expected: str) -> None:
    found = problems(**spec)
    assert any(expected in problem for problem in found), found


def test_the_crd_carries_the_strategy_enum_bounds_and_rules() -> None:
    version = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    strategy = spec["properties"]["strategy"]["properties"]
    assert strategy["method"]["enum"] == ["genetic", "cmaes", "compose"]
    assert strategy["bounds"]["default"] == [-1.5, 1.5]
    assert (strategy["bounds"]["minItems"], strategy["bounds"]["maxItems"]) == (2, 2)
    assert strategy["dimension"]["minimum"] == 1
    rules = {rule["fieldPath"] for rule in spec["x-kubernetes-validations"]}
    assert {".strategy.bounds", ".strategy.layers", ".seedAdapters"} <= rules


def test_the_cmaes_example_manifest_is_valid() -> None:
    spec = load_population(REPO / "manifests" / "examples" / "cmaes.yaml").spec
    assert (spec.strategy.method, spec.training.method) == ("cmaes", "none")
