"""Deadline-bound polling, the only way tests and fixtures wait for anything."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class DeadlineExceededError(AssertionError):
    """Raised when a condition does not become true before its deadline."""


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.1,
    on_timeout: Callable[[], str] | None = None,
) -> T:
    """Call ``probe`` until it returns a truthy value (returned) or ``timeout`` seconds pass (raises).

    Exceptions from ``probe`` count as "not yet"; the last one is reported on timeout. ``on_timeout``
    may return extra diagnostics (e.g. the tail of a log) for the error message.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    last_value: object = None
    while True:
        try:
            value = probe()
            if value:
                return value
            last_value = value
        except Exception as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f"last error: {last_error!r}" if last_error else f"last value: {last_value!r}"
            extra = f"\n{on_timeout()}" if on_timeout else ""
            raise DeadlineExceededError(
                f"timed out after {timeout:.0f}s waiting for {what} ({detail}){extra}"
            )
        time.sleep(interval)
