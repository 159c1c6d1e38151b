"""The toy task: multi-digit addition with a column-by-column worked solution ending in ``#### <answer>``.

A row is ``{"question", "solution", "answer"}``. The solution walks the columns from right to left; each
line adds the two digits and the incoming carry and then shows the partial result built so far, so the
last partial result is the answer::

    question: What is 347 + 589?
    solution: 7+9=16, 6
              4+8+1=13, 36
              3+5+1=9, 936
              #### 936

Every question belongs to exactly one partition ("train" or "eval"), decided by a hash of its text, so
the train and eval splits are disjoint for every pair of seeds and the toy model's pre-training data
(drawn from the "train" partition) never contains an eval question. Dataset rows always carry the worked
solution; only the toy model's pre-training mix shows some answers bare (:func:`with_direct_answers`).
A test split (:func:`generate_test_rows`) draws eval-partition questions from a stream of its own and
leaves out the eval rows, so it is disjoint from both. Only the standard library is used: generating
data never imports torch.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nora.api.defaults import DEFAULT_ANSWER_PATTERN

Split = Literal["train", "eval"]
Row = dict[str, str]

GENERATOR_VERSION = 1
"""Bump whenever the rows produced for a given seed change (it keys the toy model cache)."""

EVAL_PARTITION_MODULUS = 8
"""One question in this many (by hash) belongs to the eval partition."""


@dataclass(frozen=True)
class ToyTaskConfig:
    """The difficulty mix: how often the longer operand has each number of digits."""

    digit_weights: tuple[tuple[int, float], ...] = ((2, 0.3), (3, 0.4), (4, 0.3))

    def __post_init__(self) -> None:
        if not self.digit_weights:
            raise ValueError("digit_weights must not be empty")
        for digits, weight in self.digit_weights:
            if digits < 1 or weight < 0:
                raise ValueError(f"bad digit weight ({digits}, {weight})")
        if sum(weight for _, weight in self.digit_weights) <= 0:
            raise ValueError("digit_weights must have a positive total")


DEFAULT_TASK = ToyTaskConfig()


def question_split(question: str) -> Split:
    """The partition a question belongs to, fixed by a hash of its text."""
    digest = hashlib.sha256(question.encode("utf-8")).digest()
    return "eval" if int.from_bytes(digest[:4], "big") % EVAL_PARTITION_MODULUS == 0 else "train"


def format_question(a: int, b: int) -> str:
    """The question text for ``a + b``."""
    return f"What is {a} + {b}?"


def worked_solution(a: int, b: int) -> str:
    """The column-by-column solution of ``a + b`` for non-negative ``a`` and ``b``, ending in ``#### a+b``."""
    if a < 0 or b < 0:
        raise ValueError("operands must be non-negative")
    da, db = str(a)[::-1], str(b)[::-1]
    columns = max(len(da), len(db))
    lines: list[str] = []
    partial, carry = "", 0
    for i in range(columns):
        x, y = int(da[i]) if i < len(da) else 0, int(db[i]) if i < len(db) else 0
        total = x + y + carry
        terms = f"{x}+{y}" + (f"+{carry}" if carry else "")
        partial = (str(total) if i == columns - 1 else str(total % 10)) + partial
        lines.append(f"{terms}={total}, {partial}")
        carry = total // 10
    lines.append(f"#### {a + b}")
    return "\n".join(lines)


def extract_answer(text: str, pattern: str = DEFAULT_ANSWER_PATTERN) -> str | None:
    """The first group of ``pattern`` in ``text``, stripped, or None when it does not match."""
    match = re.search(pattern, text)
    return match.group(1).strip() if match else None


def make_row(a: int, b: int) -> Row:
    """One dataset row for ``a + b``."""
    solution = worked_solution(a, b)
    return {"question": format_question(a, b), "solution": solution, "answer": str(a + b)}


def _draw_operands(rng: random.Random, task: ToyTaskConfig) -> tuple[int, int]:
    digits_choices = [d for d, _ in task.digit_weights]
    weights = [w for _, w in task.digit_weights]
    digits = rng.choices(digits_choices, weights=weights)[0]
    other_digits = rng.randint(1, digits)
    big = rng.randint(10 ** (digits - 1), 10**digits - 1)
    small = rng.randint(0 if other_digits == 1 else 10 ** (other_digits - 1), 10**other_digits - 1)
    return (big, small) if rng.random() < 0.5 else (small, big)


def iter_rows(
    seed: int, split: Split, task: ToyTaskConfig = DEFAULT_TASK, stream: str = "data"
) -> Iterable[Row]:
    """An endless stream of distinct rows of one partition, determined by ``(seed, split, task, stream)``.

    The toy model pre-trains on ``stream="pretrain"``, so its data is not the dataset's train split.
    """
    rng = random.Random(f"nora-toy/{GENERATOR_VERSION}/{stream}/{split}/{seed}")
    seen: set[str] = set()
    misses = 0
    while misses < 10_000:
        a, b = _draw_operands(rng, task)
        question = format_question(a, b)
        if question in seen:
            misses += 1
            continue
        if question_split(question) != split:
            continue
        misses = 0
        seen.add(question)
        yield make_row(a, b)
    raise ValueError(f"the {split} partition of this task has run out of distinct questions")


def generate_rows(seed: int, n: int, split: Split = "train", task: ToyTaskConfig = DEFAULT_TASK) -> list[Row]:
    """The first ``n`` rows of :func:`iter_rows`."""
    if n < 0:
        raise ValueError("n must be non-negative")
    rows: list[Row] = []
    if n == 0:
        return rows
    for row in iter_rows(seed, split, task):
        rows.append(row)
        if len(rows) == n:
            break
    return rows


def direct_answer(row: Row) -> Row:
    """``row`` with its solution cut to the final line ``#### <answer>`` (no working shown)."""
    return {**row, "solution": row["solution"].splitlines()[-1]}


def with_direct_answers(rows: Sequence[Row], fraction: float, seed: int) -> list[Row]:
    """``rows`` with a seeded share ``fraction`` of them replaced by :func:`direct_answer`.

    The toy model pre-trains on this mix, like a corpus where many answers come without their working.
    It learns both habits: its greedy answer is often the bare guess (rarely right), while its sampled
    answers often work the columns (right far more often). That gap between what the model answers
    greedily and what its sampled chains of thought can reach is the one IRPO closes.

    Args:
        rows: rows with worked solutions.
        fraction: the probability, drawn per row, of showing the bare answer only.
        seed: seeds the draw (its own ``random.Random``; the global RNG is untouched).

    Returns:
        A new list of the same length; the input rows are not modified.
    """
    pick = random.Random(f"nora-toy-direct/{seed}")
    return [direct_answer(row) if pick.random() < fraction else row for row in rows]


def write_jsonl(path: Path, rows: Sequence[Row]) -> None:
    """Write rows as JSON lines (atomically: a temporary file renamed into place)."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
    tmp.replace(path)


def read_jsonl(path: Path) -> list[Row]:
    """Read rows written by :func:`write_jsonl` (or any JSON-lines file of string fields)."""
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def generate_test_rows(
    seed: int, n: int, exclude: Iterable[str] = (), task: ToyTaskConfig = DEFAULT_TASK
) -> list[Row]:
    """``n`` rows of the eval partition from their own stream, none of whose questions is in ``exclude``.

    The test split: disjoint from every train split (another partition) and from the eval rows passed in
    ``exclude``, so a genome picked for its eval fitness is judged on questions fitness never saw.
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    excluded = set(exclude)
    rows: list[Row] = []
    for row in iter_rows(seed, "eval", task, stream="test"):
        if row["question"] not in excluded:
            rows.append(row)
        if len(rows) == n:
            break
    return rows


def write_dataset(
    out_dir: Path,
    seed: int = 0,
    n_train: int = 1000,
    n_eval: int = 200,
    task: ToyTaskConfig = DEFAULT_TASK,
    n_test: int = 0,
) -> tuple[Path, Path]:
    """Write ``train.jsonl`` and ``eval.jsonl`` (and ``test.jsonl`` when ``n_test`` > 0, disjoint from
    both) into ``out_dir`` and return the train and eval paths."""
    if n_train < 1 or n_eval < 1:
        raise ValueError("n_train and n_eval must be at least 1")
    out_dir.mkdir(parents=True, exist_ok=True)
    train_path, eval_path = out_dir / "train.jsonl", out_dir / "eval.jsonl"
    write_jsonl(train_path, generate_rows(seed, n_train, "train", task))
    eval_rows = generate_rows(seed, n_eval, "eval", task)
    write_jsonl(eval_path, eval_rows)
    if n_test > 0:
        exclude = [row["question"] for row in eval_rows]
        write_jsonl(out_dir / "test.jsonl", generate_test_rows(seed, n_test, exclude, task))
    return train_path, eval_path
