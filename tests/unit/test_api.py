"""Population manifests: valid ones load, every invalid one is named by its field path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from nora.api.base import ApiValidationError
from nora.api.manifest import load_population, parse_population
from nora.api.task import GenomeTask


def manifest(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "baseModel": {"uri": "hf://mistralai/Mistral-7B-Instruct-v0.3"},
        "dataset": {"train": "s3://data/train.jsonl", "eval": "s3://data/eval.jsonl"},
        "populationSize": 8,
    }
    body.update(spec)
    return {
        "apiVersion": "nora.dev/v1alpha1",
        "kind": "Population",
        "metadata": {"name": "demo"},
        "spec": body,
    }


def problems(document: Any) -> list[str]:
    with pytest.raises(ApiValidationError) as info:
        parse_population(document)
    return info.value.problems


def test_a_valid_manifest_loads_with_defaults(tmp_path: Path) -> None:
    path = tmp_path / "pop.yaml"
    path.write_text(yaml.safe_dump(manifest(selection={"method": "roulette"})))
    population = load_population(path)
    assert (population.name, population.namespace) == ("demo", "default")
    assert population.spec.selection.method == "roulette"
    assert population.spec.survivors == 4
    assert population.spec.training.nll_weight == 1.0


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"selection": {"survivors": 9}}, "spec.selection.survivors: 9 exceeds spec.populationSize (8)"),
        (
            {"selection": {"method": "best"}},
            "spec.selection.method: Input should be 'truncation', 'tournament'",
        ),
        ({"populationSize": 1}, "spec.populationSize: Input should be greater than or equal to 2"),
        ({"crossover": {"method": "ties"}}, "spec.crossover.method: ties needs equal ranks"),
        ({"trainig": {}}, "spec.trainig: Extra inputs are not permitted"),
        ({"baseModel": {"uri": "mistral"}}, "spec.baseModel.uri: must start with one of hf://"),
        (
            {"dataset": {"train": "s3://a", "eval": "s3://b", "answerPattern": "####"}},
            "needs a capturing group",
        ),
        ({"fitness": {"metric": "irpo_loss"}}, "spec.fitness.goal: irpo_loss is a loss; set goal: minimize"),
        ({"training": {"pairsPerPrompt": 9}}, "spec.training.pairsPerPrompt: 9 exceeds"),
        (
            {"mutation": {"hyperparameters": {"beta": [0.5, 0.1]}}},
            "spec.mutation.hyperparameters.beta: low 0.5",
        ),
        ({"selection": {"elites": 8}}, "spec.selection.elites: 8 leaves no room for offspring"),
        (
            {"adapter": {"targetModules": ["all-linear", "q_proj"]}},
            "spec.adapter.targetModules: all-linear stands alone",
        ),
        (
            {"adapter": {"targetModules": ["q_proj", "lm_head"]}},
            "spec.adapter.targetModules: must not contain lm_head",
        ),
        (
            {"adapter": {"targetModules": ["q_proj", " "]}},
            "spec.adapter.targetModules: module names must not be empty",
        ),
        ({"mutation": {"scaleSigma": -0.1}}, "spec.mutation.scaleSigma: Input should be greater than"),
        ({"workloadPriorityClassName": "high"}, "spec.workloadPriorityClassName: Kueue ranks only"),
        ({"modelCache": {}}, "spec.modelCache: set exactly one of storageClassName"),
        ({"modelCache": {"claimName": "m", "size": "lots"}}, "spec.modelCache.size: String should match"),
        (
            {"baseModel": {"uri": "file:///models/m"}, "modelCache": {"claimName": "m"}},
            "spec.baseModel.uri: spec.modelCache fetches only s3:// or hf:// models",
        ),
        ({"template": {"volumes": [{"name": "tmp"}]}}, "spec.template.volumes: the names tmp, dshm"),
        (
            {"template": {"volumeMounts": [{"name": "x", "mountPath": "/nora-models/"}]}},
            "spec.template.volumeMounts: /tmp, /dev/shm, /nora-models are the Job's own",
        ),
    ],
)
def test_invalid_specs_name_the_field(spec: dict[str, Any], expected: str) -> None:
    found = problems(manifest(**spec))
    assert any(expected in problem for problem in found), found


def test_metadata_and_missing_fields_are_named() -> None:
    document = manifest()
    document["metadata"]["name"] = "Bad_Name"
    document["apiVersion"] = "v1"
    del document["spec"]["dataset"]
    found = problems(document)
    assert any(p.startswith("apiVersion: must be nora.dev/v1alpha1") for p in found)
    assert any(p.startswith("metadata.name: must be lowercase") for p in found)
    assert "spec.dataset: Field required" in found


def test_files_that_are_missing_or_not_yaml_are_named(tmp_path: Path) -> None:
    with pytest.raises(ApiValidationError, match="no such file"):
        load_population(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: [unclosed")
    with pytest.raises(ApiValidationError, match=r"bad\.yaml: not valid YAML"):
        load_population(bad)


def test_genome_task_round_trips_as_camel_case_json() -> None:
    document = {
        "population": "p",
        "generation": 1,
        "genome": "p-g1-0",
        "seed": 3,
        "baseModel": {"uri": "file:///m"},
        "dataset": {"train": "file:///t", "eval": "file:///e"},
        "hyperparameters": {"beta": 0.2},
        "output": "file:///o",
    }
    task = GenomeTask.model_validate(document)
    assert GenomeTask.model_validate_json(task.model_dump_json(by_alias=True)) == task
    assert task.effective_training().beta == 0.2
    assert task.to_json_dict()["baseModel"]["uri"] == "file:///m"


def test_all_linear_is_accepted_as_peft_accepts_it() -> None:
    spec = parse_population(manifest(adapter={"targetModules": ["all-linear"]})).spec
    assert spec.adapter.target_modules == ["all-linear"]
    assert parse_population(manifest()).spec.adapter.target_modules == [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
    ]
