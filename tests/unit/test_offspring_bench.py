"""``benchmarks/offspring.py``: children against their best parent, sibling spread against one SE."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.support.benchmarks import load_benchmark


@pytest.fixture(scope="module")
def offspring() -> ModuleType:
    return load_benchmark("offspring")


def _genome(number: int, index: int, fitness: float, parents: list[str], train: bool) -> dict[str, Any]:
    genome = f"run-g{number}-{index}"
    plan = {"id": genome, "index": index, "generation": number, "seed": index, "parents": parents}
    plan |= {"origin": "crossover" if parents else "initial", "train": train}
    result = {"id": genome, "phase": "Succeeded", "fitness": fitness, "metrics": {"eval_prompts": 100.0}}
    return {"plan": plan, "result": result}


def _write(run: Path, number: int, genomes: list[dict[str, Any]]) -> None:
    folder = run / "store" / "ns" / "run" / f"g{number}"
    folder.mkdir(parents=True)
    record = {
        "number": number,
        "plans": [g["plan"] for g in genomes],
        "results": [g["result"] for g in genomes],
    }
    (folder / "generation.json").write_text(json.dumps(record))


def test_children_and_spread_read_from_the_ledger(offspring: ModuleType, tmp_path: Path) -> None:
    run = tmp_path / "seed0" / "nora-svd"
    _write(run, 0, [_genome(0, 0, 0.70, [], True), _genome(0, 1, 0.60, [], True)])
    parents = ["run-g0-0", "run-g0-1"]
    _write(run, 1, [_genome(1, 0, 0.70, ["run-g0-0"], False), _genome(1, 1, 0.75, parents, True)])
    _write(run, 10, [_genome(10, 0, 0.75, ["run-g1-1"], False), _genome(10, 1, 0.65, ["run-g1-1"], True)])
    records = offspring.generations(run)
    assert [r.number for r in records] == [0, 1, 10]
    kids = offspring.children(records)
    assert [(k.fitness, k.best_parent) for k in kids] == [(0.75, 0.70), (0.65, 0.75)]
    spreads, errors = offspring.spread(records)
    assert spreads == []
    assert errors == []
    _write(run, 11, [_genome(11, 0, 0.80, ["run-g1-1"], True), _genome(11, 1, 0.60, ["run-g1-1"], True)])
    spreads, errors = offspring.spread(offspring.generations(run))
    assert spreads == [pytest.approx(math.sqrt(0.02))]
    assert errors == [pytest.approx(math.sqrt(0.7 * 0.3 / 100))]
