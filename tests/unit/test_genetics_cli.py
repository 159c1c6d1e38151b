"""``nora breed``/``mutate``/``inspect``: exit 0 with outputs on success, exit 2 and one line on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nora.cli import main
from nora.genetics import load_genome, save_genome
from tests.unit.factories import random_genome

Q = "model.layers.0.self_attn.q_proj"


def run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    code = exit_info.value.code
    assert isinstance(code, int)
    return code


@pytest.fixture
def parents(tmp_path: Path) -> list[Path]:
    first = save_genome(random_genome(1, ranks={Q: 2}), tmp_path / "p1")
    second = save_genome(random_genome(2, ranks={Q: 6}), tmp_path / "p2")
    return [first, second]


@pytest.mark.parametrize("method", ["nora", "linear", "svd"])
def test_breed_writes_a_loadable_child(method: str, parents: list[Path], tmp_path: Path) -> None:
    out = tmp_path / f"child-{method}"
    argv = [
        "breed",
        "--method",
        method,
        "--parent",
        str(parents[0]),
        "--parent",
        str(parents[1]),
        "--fitness",
        "0.2",
        "--fitness",
        "0.4",
        "--seed",
        "3",
        "--out",
        str(out),
    ]
    assert run(argv) == 0
    child = load_genome(out)
    assert child.ranks[Q] == {"nora": 6, "linear": 8, "svd": 6}[method]


def test_mutate_grows_every_module(parents: list[Path], tmp_path: Path) -> None:
    assert (
        run(["mutate", str(parents[0]), "--out", str(tmp_path / "m"), "--grow", "2", "--sigma", "0.01"]) == 0
    )
    assert load_genome(tmp_path / "m").ranks[Q] == 4


def test_inspect_reports_ranks_parameters_and_checksum(
    parents: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["inspect", str(parents[1]), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["checksum"] == "ok"
    assert {m["name"]: m["rank"] for m in report["modules"]}[Q] == 6
    assert report["parameters"] == load_genome(parents[1]).parameter_count


@pytest.mark.parametrize(
    ("argv_tail", "message"),
    [
        (["--method", "ties"], "needs equal ranks"),
        (["--method", "bogus"], "Invalid value for '--method'"),
        (["--fitness", "0.1"], "--fitness: got 1 values for 2 parents"),
        (["--method", "nora", "--rank", "3"], "rank: only the svd method"),
    ],
)
def test_bad_breed_input_exits_2_with_one_line(
    argv_tail: list[str],
    message: str,
    parents: list[Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [
        "breed",
        "--parent",
        str(parents[0]),
        "--parent",
        str(parents[1]),
        "--out",
        str(tmp_path / "x"),
        *argv_tail,
    ]
    assert run(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_existing_output_is_refused_and_kept(parents: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    before = (parents[1] / "adapter_model.safetensors").read_bytes()
    assert run(["mutate", str(parents[0]), "--out", str(parents[1]), "--sigma", "0.1"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (parents[1] / "adapter_model.safetensors").read_bytes() == before


def test_missing_adapter_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["inspect", str(tmp_path / "none")]) == 2
    assert "adapter folder does not exist" in capsys.readouterr().err
