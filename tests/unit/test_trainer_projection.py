"""The trainer turns a ``cmaes`` genome's point record into its starting adapter on the real base model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from nora.evolution.strategies.points import POINT_FILE, PointRecord
from nora.genetics.projection import ProjectionSpec, project_module
from nora.trainer import models, pipeline
from nora.trainer.errors import TrainerInputError
from nora.trainer.irpo_config import AdapterRef, BaseModelRef, IrpoConfig, TrainerJob
from nora.trainer.targets import resolve_targets
from tests.unit.test_trainer_models import build_tiny_llama

PROJECTION = ProjectionSpec(seed=11, dimension=6, rank=2, alpha=4.0, sigma=0.5, scale=0.1)
ADAPTER = AdapterRef(rank=2, alpha=4.0, dropout=0.0, target_modules=("q_proj", "v_proj"))


def test_a_point_record_projects_onto_every_target_module(tmp_path: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(build_tiny_llama(tmp_path / "tiny"))
    start = tmp_path / "start"
    assert models.point_record(start.as_uri()) is None
    start.mkdir()
    record = PointRecord(PROJECTION, ((0.1, -0.2, 0.3, 0.0, 0.5, -0.4),))
    (start / POINT_FILE).write_bytes(record.dumps())
    loaded = models.point_record(start.as_uri())
    assert loaded == record
    genome = models.projected_genome(
        resolve_targets(model, tuple(ADAPTER.target_modules)), ADAPTER, loaded, "file:///models/tiny"
    )
    assert sorted(genome.modules) == [
        "model.layers.0.self_attn.q_proj",
        "model.layers.0.self_attn.v_proj",
    ]
    q = genome.modules["model.layers.0.self_attn.q_proj"]
    expected = project_module(
        torch.tensor(record.points[0]), "model.layers.0.self_attn.q_proj", (32, 32), PROJECTION
    )
    assert torch.equal(q.a, expected.a)
    assert torch.equal(q.b, expected.b)
    assert genome.config["base_model_name_or_path"] == "/models/tiny"


def test_a_layered_record_that_misses_a_layer_is_bad_input(tmp_path: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(build_tiny_llama(tmp_path / "tiny"))
    record = PointRecord(PROJECTION, (), layered=True)
    with pytest.raises(TrainerInputError, match=r"spec\.strategy\.layers: 0 layers"):
        models.projected_genome(
            resolve_targets(model, tuple(ADAPTER.target_modules)), ADAPTER, record, "file:///models/tiny"
        )
    (tmp_path / POINT_FILE).write_text("{}")
    with pytest.raises(TrainerInputError, match="not a point record"):
        models.point_record(tmp_path.as_uri())


def test_the_pipeline_starts_a_cmaes_genome_from_its_projection(tmp_path: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(build_tiny_llama(tmp_path / "tiny"))
    start = tmp_path / "start"
    start.mkdir()
    record = PointRecord(PROJECTION, ((0.3,) * 6,))
    (start / POINT_FILE).write_bytes(record.dumps())
    job = TrainerJob(
        genome="g",
        population="p",
        generation=0,
        base_model=BaseModelRef(uri="file:///models/tiny"),
        train_uri="",
        eval_uri="file:///eval.jsonl",
        adapter=AdapterRef(uri=start.as_uri(), rank=2, alpha=4.0, target_modules=("q_proj", "v_proj")),
        output=(tmp_path / "out").as_uri(),
        irpo=IrpoConfig(method="none"),
    )
    genome = pipeline._starting_genome(pipeline._State(job=job, scratch=tmp_path), model)
    expected = models.projected_genome(
        resolve_targets(model, job.adapter.target_modules), job.adapter, record, "file:///models/tiny"
    )
    assert sorted(genome.modules) == sorted(expected.modules)
    for name, module in genome.items():
        assert torch.equal(module.a, expected.modules[name].a)
