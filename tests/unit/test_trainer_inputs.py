"""Bad inputs to the trainer: each is one error line naming the file, the line or the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nora.trainer.data import Example, load_split, parse_jsonl, prompt_window
from nora.trainer.entrypoint import load_job, main, one_line, read_task, write_termination_message
from nora.trainer.errors import TrainerInputError
from nora.trainer.irpo_config import AdapterRef, IrpoConfig

GOOD_ROW = {"question": "What is 1 + 1?", "solution": "1+1=2, 2\n#### 2", "answer": "2"}


def _jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def task_dict(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    train = _jsonl(tmp_path / "train.jsonl", [json.dumps(GOOD_ROW)])
    eval_ = _jsonl(tmp_path / "eval.jsonl", [json.dumps(GOOD_ROW)])
    task: dict[str, Any] = {
        "population": "p",
        "generation": 0,
        "genome": "p-g0-0",
        "seed": 1,
        "baseModel": {"uri": (tmp_path / "model").as_uri()},
        "dataset": {"train": train.as_uri(), "eval": eval_.as_uri()},
        "output": (tmp_path / "out").as_uri(),
    }
    task.update(overrides)
    return task


def write_task(tmp_path: Path, task: dict[str, Any] | str) -> Path:
    path = tmp_path / "genome.json"
    path.write_text(task if isinstance(task, str) else json.dumps(task), encoding="utf-8")
    return path


def test_rows_parse_and_numeric_answers_become_text() -> None:
    rows = parse_jsonl(b'{"question": "q", "solution": "s", "answer": 42}\n\n', "f.jsonl")
    assert [(r.question, r.solution, r.answer) for r in rows] == [("q", "s", "42")]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([json.dumps(GOOD_ROW), '{"question": "q", "solution": '], "data.jsonl:2: not valid JSON"),
        ([json.dumps({"question": "q", "answer": "1"})], "data.jsonl:1: missing field solution"),
        (["[1, 2]"], "data.jsonl:1: expected a JSON object, found list"),
        ([json.dumps({**GOOD_ROW, "question": ["x"]})], "data.jsonl:1: field 'question' must be a string"),
        ([], "data.jsonl: empty file"),
        (["", "   "], "data.jsonl: empty file"),
    ],
)
def test_malformed_train_files_name_the_file_and_line(tmp_path: Path, lines: list[str], message: str) -> None:
    path = _jsonl(tmp_path / "data.jsonl", lines)
    with pytest.raises(TrainerInputError, match=message.replace("data.jsonl", ".*data.jsonl")):
        load_split(str(path), "train")


def test_an_empty_eval_file_has_no_eval_rows(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "eval.jsonl", [])
    with pytest.raises(TrainerInputError, match=r"eval\.jsonl: no eval rows"):
        load_split(path.as_uri(), "eval")


def test_a_missing_data_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(TrainerInputError, match=r"nope\.jsonl.*not found"):
        load_split((tmp_path / "nope.jsonl").as_uri(), "train")


def test_rows_are_limited_before_later_lines_are_parsed(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [json.dumps(GOOD_ROW), "not json"])
    assert len(load_split(str(path), "train", limit=1)) == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"samples_per_prompt": 0}, "training.samplesPerPrompt"),
        ({"beta": 0.0}, "training.beta"),
        ({"nll_weight": -1.0}, "training.nllWeight"),
        ({"learning_rate": float("nan")}, "training.learningRate"),
        ({"method": "ppo"}, "training.method"),
        ({"prompt_template": "no slot"}, "dataset.promptTemplate"),
        ({"prompt_template": "{question} {other}"}, "dataset.promptTemplate"),
        ({"answer_pattern": "no group"}, "dataset.answerPattern"),
        ({"answer_pattern": "(unclosed"}, "dataset.answerPattern"),
        ({"fitness_metric": "f1"}, "fitness.metric"),
    ],
)
def test_config_validation_names_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(TrainerInputError, match=field.replace(".", r"\.")):
        IrpoConfig(**change)


def test_adapter_validation_refuses_lm_head() -> None:
    with pytest.raises(TrainerInputError, match=r"adapter\.targetModules"):
        AdapterRef(target_modules=("q_proj", "lm_head"))


def test_genes_override_training_fields(tmp_path: Path) -> None:
    task = task_dict(tmp_path, hyperparameters={"learningRate": 2e-4, "beta": 0.12, "nll_weight": 0.5})
    job = load_job(str(write_task(tmp_path, task)))
    assert (job.irpo.learning_rate, job.irpo.beta, job.irpo.nll_weight) == (2e-4, 0.12, 0.5)
    assert job.hyperparameters == {"learningRate": 2e-4, "beta": 0.12, "nll_weight": 0.5}


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ("{not json", "invalid genome.json"),
        ("", "invalid genome.json"),
        ("[]", "invalid genome.json"),
        ({"population": "p"}, "output: Field required"),
        ({"training": {"method": "ppo"}}, "training.method"),
        ({"trainingg": {}}, "trainingg: Extra inputs are not permitted"),
        ({"dataset": {"train": "ftp://x", "eval": "ftp://y"}}, "dataset.train"),
    ],
)
def test_bad_genome_json_is_one_line_naming_the_problem(
    tmp_path: Path, task: dict[str, Any] | str, message: str
) -> None:
    content = task if isinstance(task, str) else {**task_dict(tmp_path), **task}
    if isinstance(task, dict) and task.keys() == {"population"}:
        content = task
    path = write_task(tmp_path, content)
    with pytest.raises(TrainerInputError, match=message) as error:
        read_task(str(path))
    assert str(path) in str(error.value)
    assert "\n" not in one_line(error.value)


def test_main_reports_one_line_and_the_termination_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "termination-log"
    monkeypatch.setenv("NORA_TERMINATION_LOG", str(log))
    _jsonl(tmp_path / "eval.jsonl", [])
    task = task_dict(tmp_path)
    _jsonl(tmp_path / "eval.jsonl", [])  # task_dict rewrote it; empty it again
    code = main(str(write_task(tmp_path, task)))
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith("nora train: error: ")
    assert "no eval rows" in last
    assert log.read_text(encoding="utf-8") == last + "\n"
    assert not (tmp_path / "out").exists()


def test_termination_log_is_skipped_when_not_writable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NORA_TERMINATION_LOG", raising=False)
    monkeypatch.setattr("nora.evolution.contract.TERMINATION_LOG", str(tmp_path / "absent" / "log"))
    write_termination_message("nora train: error: x")  # must not raise
    assert not (tmp_path / "absent").exists()


def test_each_generation_trains_on_the_next_window_of_prompts() -> None:
    rows = [Example(question=f"q{i}", solution="s", answer=str(i)) for i in range(5)]
    questions = [[r.question for r in prompt_window(rows, 2, g)] for g in range(4)]
    assert questions == [["q0", "q1"], ["q2", "q3"], ["q4", "q0"], ["q1", "q2"]]
    assert prompt_window(rows, 9, 3) == rows  # more prompts than rows: all of them


def test_a_genome_samples_on_its_own_train_window_when_the_task_names_one(tmp_path: Path) -> None:
    generations_window = load_job(str(write_task(tmp_path, task_dict(tmp_path, generation=2))))
    own_window = load_job(str(write_task(tmp_path, task_dict(tmp_path, generation=2, trainWindow=9))))
    assert (generations_window.window, own_window.window) == (2, 9)
    with pytest.raises(TrainerInputError, match="trainWindow"):
        load_job(str(write_task(tmp_path, task_dict(tmp_path, trainWindow=-1))))
