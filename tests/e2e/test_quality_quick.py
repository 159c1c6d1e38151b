"""``benchmarks/quality.py --quick``: every method runs on the toy model, lands in the CSV, and a rerun
skips finished cells."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
METHODS = {
    "base model",
    "NoRA (svd)",
    "single IRPO",
    "top-3 ensemble",
    "random search",
    "PBT",
    "NoRA (nora)",
    "NoRA (linear)",
    "NoRA (ties)",
    "best seed",
    "gradient-free from seeds",
    "NoRA (svd, own windows)",
    "NoRA (svd, magnitude gene)",
    "gradient-free, magnitude gene",
    "best seed, scaled on eval",
    "single IRPO, scaled on eval",
    "NoRA (svd, magnitude gene, population 2)",
    "NoRA (svd, population 2)",
}


def _bench(tmp_path: Path, results: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(ROOT / "benchmarks" / "quality.py"), "--quick", *extra]
    command += ["--work", str(tmp_path / "work"), "--csv", str(results)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=1800, env=env)


def test_quick_benchmark_fills_every_cell_and_resumes(tmp_path: Path) -> None:
    results = tmp_path / "quality.csv"
    first = _bench(tmp_path, results)
    assert first.returncode == 0, first.stderr[-3000:]
    with results.open() as handle:
        rows = list(csv.DictReader(handle))
    assert {row["method"] for row in rows} == METHODS
    assert all(0.0 <= float(row["test_accuracy"]) <= 1.0 and row["test_rows"] == "12" for row in rows)
    trained = {row["method"]: int(row["trained_tokens"]) for row in rows}
    assert trained["base model"] == 0
    assert trained["NoRA (svd)"] > 0
    assert "| NoRA (svd) |" in first.stdout
    builds = {row["toy_model"] for row in rows}
    assert len(builds) == 1
    assert (tmp_path / f"quality-{builds.pop()}.png").exists()
    second = _bench(tmp_path, results)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "cell:" not in second.stdout
    assert len(results.read_text().splitlines()) == len(rows) + 1


def test_unknown_method_is_refused_naming_the_option(tmp_path: Path) -> None:
    refused = _bench(tmp_path, tmp_path / "quality.csv", "--methods", "NoRA (svd)", "best of all")
    assert refused.returncode == 2
    assert "--methods: unknown ['best of all']" in refused.stderr
    assert not (tmp_path / "quality.csv").exists()
