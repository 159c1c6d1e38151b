"""``nora report`` and ``nora status``: where a run stands and how it went, for local and cluster runs alike.

A run is read either from a local run folder (``state.json``) or from a Population's folder in a store
(``s3://bucket/prefix/population``, or ``file://...``): the ledger files both drivers write
(``population.json`` and ``g<N>/generation.json``). Both give the same :class:`RunView`, so the table,
the fitness plot and the lineage (text and PNG) are the same whichever driver ran it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from nora.api.status import HistoryRow, PopulationRecord
from nora.evolution import heldout
from nora.evolution.ledger import GenerationRecord
from nora.evolution.records import GenomePlan, GenomeResult, Goal, origin_text, summarize
from nora.evolution.run_store import read_population
from nora.local.state import load_state
from nora.storage import StoreError, open_uri

PLOT_FILE = "fitness.png"
LINEAGE_FILE = "lineage.png"


class ReportError(ValueError):
    """The location holds no run."""


@dataclass(frozen=True)
class RunView:
    """A run as reports see it: its record and every generation recorded so far."""

    population: str
    record: PopulationRecord
    generations: tuple[GenerationRecord, ...]

    def rows(self, goal: Goal = "maximize") -> list[HistoryRow]:
        """One history row per finished generation (all of them, not only the record's bounded tail)."""
        kept = {row.generation: row for row in self.record.history}
        finished = [g for g in self.generations if g.number < self.record.completed_generations]
        return [kept.get(g.number) or summarize(g.number, g.results, goal) for g in finished]

    def records(self) -> dict[str, tuple[GenomePlan, GenomeResult]]:
        return {p.id: (p, r) for g in self.generations for p, r in zip(g.plans, g.results, strict=True)}


def read_run(location: str | Path) -> RunView:
    """The run in a local run folder, or in a store folder given by URI (``s3://``, ``file://``)."""
    text = str(location)
    if "://" not in text:
        state = load_state(Path(text))
        if state is None:
            raise ReportError(f"{text}: no state.json here; is this a RUN_DIR written by 'nora run'?")
        return RunView(state.population, state.record(), tuple(state.generations))
    try:
        store, base = open_uri(text)
        record, generations = read_population(store, base.rstrip("/"))
    except StoreError as error:
        raise ReportError(str(error)) from None
    return RunView(base.rstrip("/").rsplit("/", 1)[-1], record, tuple(generations))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _short(view: RunView, text: str) -> str:
    """``text`` with genome ids shortened to ``g<N>-<i>`` (the population's name is the table's title)."""
    return text.replace(f"{view.population}-", "")


def _origin(view: RunView, genome: str | None) -> str:
    records = view.records()
    return _short(view, origin_text(records[genome][0])) if genome in records else "-"


def history_table(view: RunView) -> Table:
    """One row per finished generation: best, mean, worst, diversity (fitness std), failures, and the best
    genome with where it came from."""
    record = view.record
    table = Table(title=f"population {view.population}: {record.phase} {record.reason}".strip())
    columns = (
        "generation",
        "best",
        "mean",
        "worst",
        "diversity",
        "succeeded",
        "failed",
        "best genome",
        "origin",
    )
    for column in columns:
        table.add_column(column, justify="left" if column in ("best genome", "origin") else "right")
    for row in view.rows():
        table.add_row(
            str(row.generation),
            _fmt(row.best),
            _fmt(row.mean),
            _fmt(row.worst),
            _fmt(row.diversity),
            str(row.succeeded),
            str(row.failed),
            _short(view, row.best_genome or "-"),
            _origin(view, row.best_genome),
        )
    return table


def held_out_lines(view: RunView) -> list[str]:
    """The test-split scores (``spec.dataset.test``): the final best against generation 0's best, the
    ensemble and the adapters it needs; nothing when the run has none."""
    test = view.record.test
    if test is None:
        return []
    lines = [heldout.describe(test)]
    if test.best is not None and test.initial is not None:
        for label, scored in (("final best", test.best), ("generation 0's best", test.initial)):
            lines.append(
                f"  {label}: {scored.genome} (generation {scored.generation}) "
                f"fitness {_fmt(scored.fitness)}, test accuracy {_fmt(scored.accuracy)}"
            )
    if test.ensemble is not None:
        lines.append(f"  top-{len(test.ensemble.genomes)} ensemble {_fmt(test.ensemble.accuracy)}, needs:")
        lines += [
            f"    {genome}: {adapter}"
            for genome, adapter in zip(test.ensemble.genomes, test.ensemble.adapters, strict=True)
        ]
    return lines


def plot_fitness(view: RunView, path: Path) -> Path:
    """Best, mean and worst fitness over generations, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in view.rows() if r.best is not None]
    generations = [r.generation for r in rows]
    figure, axes = plt.subplots(figsize=(6, 4), dpi=100)
    for label in ("best", "mean", "worst"):
        axes.plot(generations, [float(getattr(r, label)) for r in rows], marker="o", label=label)
    test = view.record.test
    if test is not None and test.best is not None and test.initial is not None:
        points = [
            (test.initial.generation, test.initial.accuracy),
            (test.best.generation, test.best.accuracy),
        ]
        axes.plot(*zip(*points, strict=True), "k*", markersize=12, label="test accuracy (gen-0 best, best)")
    axes.set_xlabel("generation")
    axes.set_ylabel("fitness (eval) / test accuracy")
    axes.set_title(f"{view.population}: fitness over generations")
    axes.set_xticks(generations)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def ancestry(view: RunView, genome: str, max_depth: int = 12) -> list[tuple[str, str]]:
    """The (parent, child) edges of ``genome``'s ancestry, nearest first, each edge once."""
    records = view.records()
    edges: list[tuple[str, str]] = []
    frontier, seen = [(genome, 0)], {genome}
    while frontier:
        node, depth = frontier.pop(0)
        if depth >= max_depth or node not in records:
            continue
        for parent in records[node][0].parents:
            edges.append((parent, node))
            if parent not in seen:
                seen.add(parent)
                frontier.append((parent, depth + 1))
    return edges


def lineage(view: RunView, genome: str, max_depth: int = 12) -> Iterator[str]:
    """The ancestry of ``genome`` as indented lines, each ``id (origin, fitness)``; repeats are marked."""
    records = view.records()
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


def status_lines(view: RunView) -> list[str]:
    """Where a run stands: phase, current generation, genomes by phase, best so far."""
    record = view.record
    lines = [
        f"population {view.population}: {record.phase}"
        + (f" ({record.reason}: {record.message})" if record.reason else "")
    ]
    if view.generations:
        current = view.generations[-1]
        phases = ", ".join(f"{phase} {count}" for phase, count in current.counts().items() if count)
        lines.append(f"generation {current.number}: {phases}")
    if record.best is not None:
        best = record.best
        lines.append(f"best: {best.genome} (generation {best.generation}) fitness {_fmt(best.fitness)}")
    if record.test is not None:
        lines.append(heldout.describe(record.test))
    return lines
