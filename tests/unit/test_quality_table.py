"""The quality benchmark's statistics: paired intervals and the comparison against the best alternative."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.benchmarks import load_benchmark


@pytest.fixture(scope="module")
def table() -> ModuleType:
    return load_benchmark("quality_table")


def test_paired_interval_uses_common_seeds_and_student_t(table: ModuleType) -> None:
    ours = {"0": 0.80, "1": 0.70, "2": 0.75, "9": 0.10}
    theirs = {"0": 0.78, "1": 0.69, "2": 0.71}
    mean, half, n = table.paired_interval(ours, theirs)
    assert n == 3
    assert mean == pytest.approx((0.02 + 0.01 + 0.04) / 3)
    sd = math.sqrt(((0.02 - mean) ** 2 + (0.01 - mean) ** 2 + (0.04 - mean) ** 2) / 2)
    assert half == pytest.approx(4.303 * sd / math.sqrt(3))


def test_paired_interval_needs_two_seeds(table: ModuleType) -> None:
    assert table.paired_interval({"0": 0.8}, {"0": 0.7, "1": 0.6}) is None


def test_best_of_picks_the_highest_mean_among_those_that_ran(table: ModuleType) -> None:
    accuracy = {"a": {"0": 0.6, "1": 0.7}, "b": {"0": 0.8}, "c": {}}
    assert table.best_of(accuracy, ("a", "b", "c", "missing")) == "b"
    assert table.best_of(accuracy, ("c", "missing")) is None


def test_headline_states_the_difference_or_why_not(table: ModuleType) -> None:
    accuracy = {"ours": {"0": 0.8, "1": 0.9}, "theirs": {"0": 0.7, "1": 0.7}, "lonely": {"0": 0.5}}
    assert table.headline(accuracy, "ours", "theirs").startswith("ours - theirs: +0.150 ± ")
    assert "(95% CI, 2 seeds)" in table.headline(accuracy, "ours", "theirs")
    assert "fewer than 2 common seeds" in table.headline(accuracy, "ours", "lonely")
    assert "fewer than 2 common seeds" in table.headline(accuracy, "ours", None)


def write_cells(table: ModuleType, path: Path, cells: list[tuple[str, str, str, str]]) -> None:
    """A results CSV of (seed, method, test accuracy, toy-model build) cells, every other field 0."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=table.FIELDS)
        writer.writeheader()
        for seed, method, accuracy, build in cells:
            row = dict.fromkeys(table.FIELDS, "0") | {"seed": seed, "method": method}
            writer.writerow(row | {"test_accuracy": accuracy, "toy_model": build})


def test_rows_of_other_toy_model_builds_are_never_paired(
    table: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "quality.csv"
    cells = [("0", "ref", "0.70", "a"), ("1", "ref", "0.72", "a"), ("0", "alt", "0.75", "a")]
    cells += [("1", "alt", "0.20", "b"), ("2", "alt", "0.30", "b")]
    write_cells(table, results, cells)
    assert [len(rows) for rows in table.by_build(table.read_rows(results)).values()] == [3, 2]
    table.print_table(results, ("ref",), tmp_path / "quality.png", (("alt", ("ref",)),))
    out = capsys.readouterr().out
    assert "toy model a" in out
    assert "toy model b" in out
    assert "| alt | 1 | 0.750 | - |" in out  # one common seed with ref in build a: no interval
    assert "| alt | 2 | 0.250 | - |" in out  # build b has no ref at all
    assert (tmp_path / "quality-a.png").exists()
    assert (tmp_path / "quality-b.png").exists()


def test_each_build_is_compared_with_the_first_reference_it_has(
    table: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "quality.csv"
    cells = [("0", "old", "0.60", "a"), ("1", "old", "0.62", "a"), ("0", "alt", "0.70", "a")]
    cells += [("1", "alt", "0.72", "a"), ("0", "new", "0.50", "b"), ("1", "new", "0.52", "b")]
    cells += [("0", "alt", "0.40", "b"), ("1", "alt", "0.41", "b")]
    write_cells(table, results, cells)
    table.print_table(results, ("new", "old"), None, (("new", ("alt",)), ("alt", ("old",))))
    build_a, build_b = capsys.readouterr().out.split("toy model b")
    assert "against old" in build_a
    assert "| alt | 2 | 0.710 | +0.100 ± 0.000 |" in build_a
    assert "new - alt" not in build_a  # build a never ran "new": its comparison is left out
    assert "| alt | 2 | 0.405 | -0.105 ± " in build_b
    assert "new - alt: +0.105 ± " in build_b
