"""What ``nora run`` shows while it works: a live panel on a terminal, plain lines elsewhere (CI, logs)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table

from nora.api.status import HistoryRow
from nora.evolution import ledger
from nora.evolution.records import origin_text


@dataclass(frozen=True)
class Snapshot:
    """Where the run stands."""

    generation: int
    max_generations: int
    phases: Mapping[str, int]
    best: float | None
    mean: float | None
    elapsed: float
    eta: float | None


class Display(Protocol):
    """Receives progress; the driver calls ``refresh`` often and ``event`` when something happens."""

    def refresh(self, snapshot: Snapshot) -> None: ...

    def event(self, message: str) -> None: ...

    def close(self) -> None: ...


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def render(snapshot: Snapshot) -> Table:
    """The live panel."""
    table = Table(title="nora run", show_header=False, expand=False)
    table.add_row("generation", f"{snapshot.generation} / {snapshot.max_generations}")
    table.add_row("genomes", "  ".join(f"{phase} {count}" for phase, count in snapshot.phases.items()))
    table.add_row("best / mean fitness", f"{_number(snapshot.best)} / {_number(snapshot.mean)}")
    table.add_row(
        "elapsed / remaining", f"{_duration(snapshot.elapsed)} / {_duration(snapshot.eta)} (this generation)"
    )
    return table


class LiveDisplay:
    """A rich live panel, refreshed by the driver's own loop (no refresh thread)."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.live = Live(console=self.console, auto_refresh=False, transient=False)
        self.live.start()

    def refresh(self, snapshot: Snapshot) -> None:
        self.live.update(render(snapshot), refresh=True)

    def event(self, message: str) -> None:
        self.live.console.print(message)

    def close(self) -> None:
        self.live.stop()


class LineDisplay:
    """Plain event lines (no panel) for non-interactive output."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr

    def refresh(self, snapshot: Snapshot) -> None:
        return None

    def event(self, message: str) -> None:
        print(message, file=self.stream, flush=True)

    def close(self) -> None:
        return None


def display_for(stream: TextIO) -> Display:
    """A live panel on a terminal, plain lines otherwise."""
    return LiveDisplay() if stream.isatty() else LineDisplay(stream)


def generation_line(generation: ledger.GenerationRecord, row: HistoryRow, verdict: str) -> str:
    """A finished generation for people: best and mean fitness, and where the best genome came from."""
    if row.best_genome is None:
        return f"generation {row.generation}: no genome scored ({verdict})"
    origin = origin_text(generation.plan(row.best_genome))
    return (
        f"generation {row.generation}: best {row.best:.4f} ({row.best_genome}, {origin}), "
        f"mean {row.mean:.4f} ({verdict})"
    )
