"""``nora run`` of the CMA-ES strategies with the real trainer on the toy model (evaluation-only genomes).

``cmaes`` genomes start from the projection of their point record; ``compose`` genomes from the weighted
sum of seed adapters. Both runs must finish, store what the engine planned, and re-plan identically
from what the local driver persisted (the optimiser is rebuilt by replaying the stored tells).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from nora.api.manifest import load_population
from nora.cli.toy_uris import ToyResolver
from nora.evolution.strategies.orders import ComposeOrder
from nora.evolution.strategies.plans import plan_generation
from nora.evolution.strategies.points import POINT_FILE, PointRecord, module_points
from nora.genetics import init_genome, load_genome, make_generator, save_genome
from nora.genetics.projection import project_genome
from nora.local.state import RunState, load_state
from nora.toy.cache import cache_root
from nora.trainer.targets import resolve_targets
from tests.support.manifests import population_yaml
from tests.unit.factories import dense_update

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TARGETS = ["q_proj", "v_proj"]
SPEC: dict[str, Any] = {
    "baseModel": {"uri": "toy://arithmetic"},
    "dataset": {"train": "toy://arithmetic/train", "eval": "toy://arithmetic/eval"},
    "populationSize": 4,
    "maxGenerations": 2,
    "seed": 5,
    "selection": {"method": "tournament", "survivors": 2, "elites": 1, "tournamentSize": 2},
    "adapter": {"initialRank": 2, "alpha": 4, "targetModules": TARGETS},
    "training": {"method": "none", "evalPrompts": 16, "maxNewTokens": 48, "samplesPerPrompt": 2},
}


def run(folder: Path, name: str, **spec: Any) -> tuple[RunState, Path]:
    manifest = folder / f"{name}.yaml"
    manifest.write_text(population_yaml(name, **{**SPEC, **spec}))
    run_dir = folder / "run"
    done = subprocess.run(
        [sys.executable, "-m", "nora", "run", str(manifest), "--dir", str(run_dir)],
        check=False,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    state = load_state(run_dir)
    assert state is not None
    assert (state.phase, len(state.history)) == ("Succeeded", 2)
    replanned = plan_generation(
        load_population(manifest).spec,
        name,
        1,
        [list(zip(state.generations[0].plans, state.generations[0].results, strict=True))],
    )
    assert list(replanned.genomes) == list(state.generations[1].plans)
    return state, run_dir / "store" / "nora" / name


def test_cmaes_genomes_start_from_the_projection_of_their_point(tmp_path: Path) -> None:
    state, store = run(tmp_path, "cm", strategy={"method": "cmaes", "dimension": 24})
    for generation in state.generations:
        for plan, result in zip(generation.plans, generation.results, strict=True):
            assert result.phase == "Succeeded", result.message
            folder = store / f"g{generation.number}" / plan.id
            record = PointRecord.loads((folder / "start" / POINT_FILE).read_bytes())
            adapter = load_genome(folder / "output" / "adapter")  # evaluation only: the start adapter
            shapes = {name: m.base_shape for name, m in adapter.items()}
            expected = project_genome(module_points(record, shapes), shapes, record.projection)
            for name, module in adapter.items():
                torch.testing.assert_close(module.a.float(), expected.modules[name].a)
                torch.testing.assert_close(module.b.float(), expected.modules[name].b)


def seed_adapters(folder: Path, count: int) -> list[str]:
    """Random adapters of the toy model's shapes (stand-ins for adapters trained elsewhere)."""
    model_uri = ToyResolver(cache_root() / "resolved")("toy://arithmetic")
    model_dir = model_uri.removeprefix("file://")
    shapes = resolve_targets(AutoModelForCausalLM.from_pretrained(model_dir), tuple(TARGETS)).shapes
    uris = []
    for index in range(count):
        genome = init_genome(
            shapes, 2, 4.0, make_generator(index), b_std=0.05, config={"base_model_name_or_path": model_dir}
        )
        uris.append(save_genome(genome, folder / f"seed{index}").resolve().as_uri())
    return uris


def test_compose_genomes_are_weighted_sums_of_the_seed_adapters(tmp_path: Path) -> None:
    uris = seed_adapters(tmp_path, 3)
    strategy = {"method": "compose", "bounds": [-1.0, 1.0], "l1Penalty": 0.05}
    state, store = run(tmp_path, "mix", strategy=strategy, seedAdapters=[{"uri": u} for u in uris])
    seeds = [load_genome(Path(u.removeprefix("file://"))) for u in uris]
    spec = load_population(tmp_path / "mix.yaml").spec
    history = [list(zip(g.plans, g.results, strict=True)) for g in state.generations]
    for number in range(2):
        orders = plan_generation(spec, "mix", number, history[:number]).breeding
        for order in orders:
            assert isinstance(order, ComposeOrder)
            assert all(-1.0 <= w <= 1.0 for w in order.weights)
            child = load_genome(store / f"g{number}" / order.child / "start")
            for name in child.modules:
                expected = sum(w * dense_update(s, name) for w, s in zip(order.weights, seeds, strict=True))
                torch.testing.assert_close(dense_update(child, name), expected, rtol=1e-4, atol=1e-6)
