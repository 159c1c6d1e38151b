"""Both drivers run the CMA-ES strategies to the same books (stand-in trainer, fake cluster)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nora.evolution.ledger import GenerationRecord
from nora.genetics import save_genome
from nora.local.display import LineDisplay
from nora.local.driver import LocalDriver, RunConfig
from nora.operator.objects import generation_name
from nora.operator.reconciler import PopulationRef
from nora.storage import LocalStore
from tests.support.fake_cluster import FakeCluster, population_status, run_to_end
from tests.support.manifests import population_body, population_manifest
from tests.unit.factories import random_genome
from tests.unit.test_driver_parity import CLUSTER_BASE, LOCAL_BASE, NAME, NS, StandinExecutor, _comparable

SPEC: dict[str, Any] = {
    "storage": {"bucket": "bkt"},
    "populationSize": 4,
    "maxGenerations": 3,
    "parallelism": 2,
}


def _strategy(kind: str, folder: Path) -> dict[str, Any]:
    if kind == "cmaes":
        return {"strategy": {"method": "cmaes", "dimension": 6}}
    shapes = {f"model.layers.0.self_attn.{m}": (8, 8) for m in ("q_proj", "v_proj")}
    seeds = [save_genome(random_genome(i, rank=2, shapes=shapes), folder / f"seed{i}") for i in range(3)]
    return {"strategy": {"method": "compose"}, "seedAdapters": [{"uri": s.resolve().as_uri()} for s in seeds]}


@pytest.mark.parametrize("kind", ["cmaes", "compose"])
def test_both_drivers_run_a_strategy_to_the_same_books(tmp_path: Path, kind: str) -> None:
    spec = {**SPEC, **_strategy(kind, tmp_path)}
    config = RunConfig(manifest=population_manifest(NAME, **spec), run_dir=tmp_path / "local", workers=2)
    state = LocalDriver(config, StandinExecutor(), LineDisplay()).run()
    assert (state.phase, len(state.history)) == ("Succeeded", 3)

    cluster, remote = FakeCluster(), LocalStore(tmp_path / "cluster")
    cluster.add("Population", population_body(NAME, NS, **spec))
    run_to_end(cluster, remote, PopulationRef(NS, NAME))
    status = population_status(cluster, PopulationRef(NS, NAME))
    assert [row.to_json_dict() for row in state.history] == status["history"]
    for generation in state.generations:
        assert cluster.get_generation(NS, generation_name(NAME, generation.number)) is not None
        assert all(plan.origin == "mutation" and plan.train for plan in generation.plans)
    local = LocalStore(tmp_path / "local" / "store")
    point = "point.json" if kind == "cmaes" else "adapter_model.safetensors"
    for number in range(3):
        for index in range(4):
            key = f"g{number}/{NAME}-g{number}-{index}/start/{point}"
            assert local.read_bytes(f"{LOCAL_BASE}/{key}") == remote.read_bytes(f"{CLUSTER_BASE}/{key}")
        stored = GenerationRecord.model_validate(
            json.loads(remote.read_bytes(f"{CLUSTER_BASE}/g{number}/generation.json"))
        )
        assert _comparable(stored) == _comparable(state.generations[number])
