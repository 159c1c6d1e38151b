"""Breeding refuses parents whose adapters name different base models, unless explicitly allowed.

Equal shapes prove nothing: the two parents below have identical modules and shapes (as a Qwen2 and a
Gemma-2 adapter, or Llama-3-8B and Mistral-7B ones, can), and differ only in ``base_model_name_or_path``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from nora.api.manifest import parse_population
from nora.cli import main
from nora.evolution.planning import crossover_spec
from nora.genetics import (
    CrossoverSpec,
    Genome,
    IncompatibleParentsError,
    MutationSpec,
    breed,
    crossover,
    make_generator,
    save_genome,
)
from nora.trainer.models import on_base_model
from tests.unit.factories import random_genome


def named(seed: int, **config: Any) -> Genome:
    genome = random_genome(seed)
    return replace(genome, config={**genome.config, **config})


QWEN = {"base_model_name_or_path": "Qwen/Qwen2-0.5B"}
GEMMA = {"base_model_name_or_path": "google/gemma-2-2b"}


def test_crossover_and_breed_refuse_different_base_models() -> None:
    parents = [named(1, **QWEN), named(2, **GEMMA)]
    with pytest.raises(IncompatibleParentsError) as error:
        crossover(parents, None, CrossoverSpec(), make_generator(0))
    assert str(error.value) == (
        "parent 0 adapts base model Qwen/Qwen2-0.5B but parent 1 adapts google/gemma-2-2b "
        "(base_model_name_or_path in adapter_config.json); breed adapters of one base model, or allow mixed "
        "base models explicitly (nora breed --allow-mixed-base-models, spec.crossover.allowMixedBaseModels) "
        "when they are copies of the same model"
    )
    with pytest.raises(IncompatibleParentsError, match="parent 1 adapts google/gemma-2-2b"):
        breed(parents, None, CrossoverSpec(), MutationSpec(), make_generator(0), make_generator(1))


def test_revisions_count_and_unnamed_parents_are_not_compared() -> None:
    with pytest.raises(
        IncompatibleParentsError, match=r"Qwen/Qwen2-0\.5B@v1 but parent 1 adapts Qwen/Qwen2-0\.5B@v2"
    ):
        crossover(
            [named(1, **QWEN, revision="v1"), named(2, **QWEN, revision="v2")],
            None,
            CrossoverSpec(),
            make_generator(0),
        )
    child = crossover(
        [named(1, **QWEN), random_genome(2), named(3, **QWEN)], None, CrossoverSpec(), make_generator(0)
    )
    assert child.config["base_model_name_or_path"] == "Qwen/Qwen2-0.5B"


def test_the_override_breeds_them() -> None:
    spec = CrossoverSpec(allow_mixed_base_models=True)
    child = breed(
        [named(1, **QWEN), named(2, **GEMMA)],
        None,
        spec,
        MutationSpec(),
        make_generator(0),
        make_generator(1),
    )
    assert set(child.modules) == set(random_genome(1).modules)


def test_nora_breed_cli_refuses_then_allows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = save_genome(named(1, **QWEN), tmp_path / "qwen")
    second = save_genome(named(2, **GEMMA), tmp_path / "gemma")
    argv = ["breed", "--parent", str(first), "--parent", str(second), "--out", str(tmp_path / "child")]
    with pytest.raises(SystemExit) as refused:
        main(argv)
    assert refused.value.code == 2
    assert "parent 1 adapts google/gemma-2-2b" in capsys.readouterr().err
    assert not (tmp_path / "child").exists()
    with pytest.raises(SystemExit) as allowed:
        main([*argv, "--allow-mixed-base-models"])
    assert allowed.value.code == 0
    assert (tmp_path / "child" / "adapter_config.json").is_file()


def test_the_population_field_reaches_the_genetics_library() -> None:
    document = {
        "apiVersion": "nora.dev/v1alpha1",
        "kind": "Population",
        "metadata": {"name": "demo"},
        "spec": {
            "baseModel": {"uri": "s3://models/qwen2/"},
            "dataset": {"train": "s3://d/train.jsonl", "eval": "s3://d/eval.jsonl"},
            "populationSize": 4,
            "crossover": {"allowMixedBaseModels": True},
        },
    }
    assert crossover_spec(parse_population(document).spec).allow_mixed_base_models
    document["spec"]["crossover"] = {}
    assert not crossover_spec(parse_population(document).spec).allow_mixed_base_models


def test_a_trained_adapter_names_the_base_model_it_was_trained_on() -> None:
    seed_adapter = named(1, **QWEN, revision="abc")
    trained = on_base_model(seed_adapter, "s3://models/qwen2/")
    assert trained.config["base_model_name_or_path"] == "s3://models/qwen2/"
    assert "revision" not in trained.config
    assert on_base_model(seed_adapter, "hf://org/m@v2").config["revision"] == "v2"
