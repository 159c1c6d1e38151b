"""Unit tests of the toy task generator, the toy model build and its cache, and the ``nora toy`` CLI."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nora.api.defaults import DEFAULT_ANSWER_PATTERN
from nora.toy import data
from nora.toy.cli import app

QUESTION = re.compile(r"What is (\d+) \+ (\d+)\?")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_rows_are_deterministic_by_seed_and_differ_across_seeds() -> None:
    assert data.generate_rows(3, 50) == data.generate_rows(3, 50)
    assert data.generate_rows(3, 50, "eval") == data.generate_rows(3, 50, "eval")
    assert data.generate_rows(3, 50) != data.generate_rows(4, 50)
    assert data.generate_rows(3, 20) == data.generate_rows(3, 50)[:20]


@pytest.mark.parametrize("split", ["train", "eval"])
def test_every_answer_is_correct_and_extracted_from_the_solution(split: data.Split) -> None:
    rows = data.generate_rows(7, 300, split)
    assert len({row["question"] for row in rows}) == len(rows)
    for row in rows:
        assert set(row) == {"question", "solution", "answer"}
        match = QUESTION.fullmatch(row["question"])
        assert match is not None
        assert row["answer"] == str(int(match.group(1)) + int(match.group(2)))
        assert row["solution"].endswith(f"#### {row['answer']}")
        found = re.search(DEFAULT_ANSWER_PATTERN, row["solution"])
        assert found is not None
        assert found.group(1) == row["answer"]
        assert data.question_split(row["question"]) == split


def test_worked_solution_shows_carries_and_partial_results() -> None:
    assert data.worked_solution(347, 589) == "7+9=16, 6\n4+8+1=13, 36\n3+5+1=9, 936\n#### 936"
    assert data.worked_solution(95, 7) == "5+7=12, 2\n9+0+1=10, 102\n#### 102"
    with pytest.raises(ValueError, match="non-negative"):
        data.worked_solution(-1, 3)


def test_direct_answers_replace_a_seeded_share_of_solutions_by_their_last_line() -> None:
    rows = data.generate_rows(2, 2000)
    original = [dict(row) for row in rows]
    mixed = data.with_direct_answers(rows, 0.5, seed=9)
    assert rows == original  # the input is not modified
    assert mixed == data.with_direct_answers(rows, 0.5, seed=9)
    assert mixed != data.with_direct_answers(rows, 0.5, seed=10)
    bare = [m for m, r in zip(mixed, rows, strict=True) if m != r]
    assert 900 < len(bare) < 1100
    for row in bare:
        assert row["solution"] == f"#### {row['answer']}"
        assert re.search(DEFAULT_ANSWER_PATTERN, row["solution"]) is not None
    assert {(m["question"], m["answer"]) for m in mixed} == {(r["question"], r["answer"]) for r in rows}
    assert data.with_direct_answers(rows, 0.0, seed=9) == rows


def test_difficulty_mix_follows_the_task_config() -> None:
    rows = data.generate_rows(0, 100, task=data.ToyTaskConfig(digit_weights=((2, 1.0),)))
    lengths = {max(len(n) for n in re.findall(r"\d+", row["question"])) for row in rows}
    assert lengths == {2}
    with pytest.raises(ValueError, match="digit_weights"):
        data.ToyTaskConfig(digit_weights=())


def test_write_dataset_splits_are_disjoint_and_reloadable(tmp_path: Path) -> None:
    train_path, eval_path = data.write_dataset(tmp_path, seed=1, n_train=400, n_eval=100)
    train, evaluation = data.read_jsonl(train_path), data.read_jsonl(eval_path)
    assert (len(train), len(evaluation)) == (400, 100)
    assert not {r["question"] for r in train} & {r["question"] for r in evaluation}
    other_seed_train = data.generate_rows(2, 2000, "train")
    assert not {r["question"] for r in other_seed_train} & {r["question"] for r in evaluation}
    assert train == data.generate_rows(1, 400, "train")


def test_exhausted_partition_raises() -> None:
    with pytest.raises(ValueError, match="run out"):
        data.generate_rows(0, 100, "eval", data.ToyTaskConfig(digit_weights=((1, 1.0),)))


def test_cli_data_writes_files_and_rejects_bad_counts(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        app, ["data", "--out", str(tmp_path), "--seed", "5", "--train", "30", "--eval", "10"]
    )
    assert result.exit_code == 0, result.output
    assert str(tmp_path / "train.jsonl") in result.output
    lines = (tmp_path / "eval.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == data.generate_rows(5, 10, "eval")
    bad = runner.invoke(app, ["data", "--out", str(tmp_path), "--train", "0"])
    assert bad.exit_code == 2
    assert "--train" in bad.output
    assert len(bad.output.strip().splitlines()) == 1


def test_test_split_is_disjoint_from_train_and_eval(tmp_path: Path) -> None:
    train, evaluation = data.write_dataset(tmp_path, seed=3, n_train=200, n_eval=50, n_test=300)
    test = data.read_jsonl(tmp_path / "test.jsonl")
    questions = {row["question"] for row in test}
    assert len(test) == len(questions) == 300
    assert not questions & {row["question"] for row in data.read_jsonl(train)}
    assert not questions & {row["question"] for row in data.read_jsonl(evaluation)}
    assert {data.question_split(q) for q in questions} == {"eval"}


def test_test_split_is_deterministic_and_honours_exclusions() -> None:
    first = data.generate_test_rows(5, 20)
    assert first == data.generate_test_rows(5, 20)
    excluded = [row["question"] for row in first[:5]]
    again = data.generate_test_rows(5, 20, exclude=excluded)
    assert not {row["question"] for row in again} & set(excluded)
