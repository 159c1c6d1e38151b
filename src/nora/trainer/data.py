"""Datasets: JSONL rows ``{"question", "solution", "answer"}`` from a path, ``file://`` or ``s3://`` URI.

Every malformed input is reported as one line naming the file and the line: bad JSON, a row that is not an
object, a missing or non-text field, an empty file, an eval split without rows. ``answer`` may be written
as a JSON number (``42``); it is compared as text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nora.storage import StoreError, open_uri
from nora.trainer.errors import TrainerInputError

REQUIRED_FIELDS = ("question", "solution", "answer")


@dataclass(frozen=True)
class Example:
    """One dataset row."""

    question: str
    solution: str
    answer: str


def read_uri(uri: str) -> bytes:
    """The bytes at ``uri`` (plain path, ``file://`` or ``s3://``); a one-line error when unreadable."""
    try:
        store, key = open_uri(uri)
        return store.read_bytes(key)
    except StoreError as error:
        raise TrainerInputError(str(error)) from None
    except OSError as error:
        raise TrainerInputError(f"{uri}: cannot read ({error.strerror or error})") from None


def _field_text(value: Any, name: str, where: str) -> str:
    if isinstance(value, str):
        return value
    if name == "answer" and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise TrainerInputError(f"{where}: field '{name}' must be a string, got {type(value).__name__}")


def parse_row(line: str, where: str) -> Example:
    """One JSONL line as an :class:`Example`; ``where`` is ``<uri>:<line>`` for messages."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError as error:
        raise TrainerInputError(f"{where}: not valid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(value, dict):
        raise TrainerInputError(f"{where}: expected a JSON object, found {type(value).__name__}")
    missing = [name for name in REQUIRED_FIELDS if name not in value]
    if missing:
        raise TrainerInputError(
            f"{where}: missing field{'s' if len(missing) > 1 else ''} {', '.join(missing)}; "
            f"each row needs {', '.join(REQUIRED_FIELDS)}"
        )
    question, solution, answer = (_field_text(value[name], name, where) for name in REQUIRED_FIELDS)
    return Example(question=question, solution=solution, answer=answer.strip())


def parse_jsonl(data: bytes, source: str, limit: int | None = None) -> list[Example]:
    """The first ``limit`` rows (all when None) of a JSONL file's bytes; blank lines are skipped.

    Raises:
        TrainerInputError: naming ``source`` and the line, for undecodable text or a malformed row.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise TrainerInputError(f"{source}: not UTF-8 text (byte {error.start})") from None
    rows: list[Example] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if limit is not None and len(rows) >= limit:
            break
        if line.strip():
            rows.append(parse_row(line, f"{source}:{number}"))
    return rows


def load_split(uri: str, split: str, limit: int | None = None) -> list[Example]:
    """The first ``limit`` rows of the ``train`` or ``eval`` file at ``uri``.

    Raises:
        TrainerInputError: the file is unreadable, malformed, empty (``train``) or has no rows (``eval``).
    """
    data = read_uri(uri)
    rows = parse_jsonl(data, uri, limit)
    if rows:
        return rows
    if split == "eval":
        raise TrainerInputError(
            f"{uri}: no eval rows; the eval split needs at least one row to score a genome"
        )
    raise TrainerInputError(f"{uri}: empty file; the {split} split needs at least one row")


def prompt_window(rows: Sequence[Example], count: int, window: int) -> list[Example]:
    """The ``count`` rows of window ``window``: windows move by ``count`` rows and wrap around, so
    successive generations (IRPO iterations), or genomes with windows of their own, see new prompts.

    Args:
        rows: the whole split.
        count: prompts per genome (``training.maxPrompts``, or ``evalPrompts`` when rotating eval).
        window: the window's number (0 takes the first ``count`` rows).

    Returns:
        ``min(count, len(rows))`` rows, in file order from the window's start.
    """
    if count >= len(rows):
        return list(rows)
    start = (window * count) % len(rows)
    return [rows[(start + offset) % len(rows)] for offset in range(count)]


def format_prompts(rows: Sequence[Example], template: str) -> list[str]:
    """Each row's question put into ``template`` (before any chat template)."""
    return [template.format(question=row.question) for row in rows]
