"""``nora report`` and ``nora status``: read a run folder's state and show where it stands and how it went."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from rich.table import Table

from nora.evolution.records import GenomePlan, GenomeResult
from nora.local.state import RunState, load_state

PLOT_FILE = "fitness.png"


class ReportError(ValueError):
    """The folder holds no run."""


def read_run(run_dir: Path) -> RunState:
    state = load_state(run_dir)
    if state is None:
        raise ReportError(f"{run_dir}: no state.json here; is this a RUN_DIR written by 'nora run'?")
    return state


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def history_table(state: RunState) -> Table:
    """One row per finished generation: best, mean, worst, diversity (fitness std), failures."""
    table = Table(title=f"population {state.population}: {state.phase} {state.reason}".strip())
    for column in ("generation", "best", "mean", "worst", "diversity", "succeeded", "failed", "best genome"):
        table.add_column(column, justify="left" if column == "best genome" else "right")
    for row in state.history:
        table.add_row(
            str(row.generation),
            _fmt(row.best),
            _fmt(row.mean),
            _fmt(row.worst),
            _fmt(row.diversity),
            str(row.succeeded),
            str(row.failed),
            row.best_genome or "-",
        )
    return table


def plot_fitness(state: RunState, path: Path) -> Path:
    """Best, mean and worst fitness over generations, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in state.history if r.best is not None]
    generations = [r.generation for r in rows]
    figure, axes = plt.subplots(figsize=(6, 4), dpi=100)
    for label in ("best", "mean", "worst"):
        values = [float(getattr(r, label)) for r in rows]
        axes.plot(generations, values, marker="o", label=label)
    axes.set_xlabel("generation")
    axes.set_ylabel("fitness")
    axes.set_title(f"{state.population}: fitness over generations")
    axes.set_xticks(generations)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def _records(state: RunState) -> dict[str, tuple[GenomePlan, GenomeResult]]:
    return {p.id: (p, r) for g in state.generations for p, r in zip(g.plans, g.results, strict=True)}


def lineage(state: RunState, genome: str, max_depth: int = 12) -> Iterator[str]:
    """The ancestry of ``genome`` as indented lines, each ``id (origin, fitness)``; repeats are marked."""
    records = _records(state)
    seen: set[str] = set()

    def walk(node: str, depth: int) -> Iterator[str]:
        plan, result = records[node]
        repeat = " (see above)" if node in seen else ""
        yield f"{'  ' * depth}{node} ({plan.origin}, fitness {_fmt(result.fitness)}){repeat}"
        if repeat or depth >= max_depth:
            return
        seen.add(node)
        for parent in plan.parents:
            if parent in records:
                yield from walk(parent, depth + 1)

    yield from walk(genome, 0)


def status_lines(state: RunState) -> list[str]:
    """Where a run stands: phase, current generation, genomes by phase, best so far."""
    lines = [
        f"population {state.population}: {state.phase}"
        + (f" ({state.reason}: {state.message})" if state.reason else "")
    ]
    current = state.current
    if current is not None:
        counts: dict[str, int] = {}
        for result in current.results:
            counts[result.phase] = counts.get(result.phase, 0) + 1
        phases = ", ".join(f"{phase} {count}" for phase, count in sorted(counts.items()))
        lines.append(f"generation {current.number}: {phases}")
    if state.best:
        lines.append(
            f"best: {state.best['genome']} (generation {state.best['generation']}) fitness "
            f"{_fmt(state.best.get('fitness'))}"
        )
    return lines
