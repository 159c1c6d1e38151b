"""The quality table and plot of ``benchmarks/quality.py``'s CSV: mean, paired 95% CI, compute.

For each method and each seed where both it and the reference ran, the difference of their test
accuracies; the interval is ``mean +- t(0.975, n - 1) * sd / sqrt(n)`` over those seeds. Rows are paired
only within one build of the toy model (the ``toy_model`` column): the same code and seed pre-train
different weights on different CPUs, and the methods' accuracies move with them.
"""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

FIELDS = [
    "seed",
    "method",
    "test_accuracy",
    "eval_fitness",
    "sampled_tokens",
    "trained_tokens",
    "eval_tokens",
    "dpo_steps",
    "trainer_runs",
    "test_rows",
    "minutes",
    "note",
    "commit",
    "toy_model",
]
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def read_rows(path: Path) -> list[dict[str, str]]:
    """The CSV's rows (empty when it does not exist yet)."""
    if not path.exists():
        return []
    with path.open() as handle:
        return list(csv.DictReader(handle))


def by_method(rows: list[dict[str, str]]) -> dict[str, dict[str, dict[str, str]]]:
    """Method -> seed -> row, in first-seen method order."""
    table: dict[str, dict[str, dict[str, str]]] = {}
    for row in rows:
        table.setdefault(row["method"], {})[row["seed"]] = row
    return table


def paired_interval(ours: dict[str, float], theirs: dict[str, float]) -> tuple[float, float, int] | None:
    """Mean paired difference ``ours - theirs`` and its 95% half-width over common seeds."""
    seeds = sorted(set(ours) & set(theirs))
    differences = [ours[s] - theirs[s] for s in seeds]
    if len(differences) < 2:
        return None
    half = T_975.get(len(differences) - 1, 1.96) * statistics.stdev(differences) / math.sqrt(len(differences))
    return statistics.mean(differences), half, len(differences)


def best_of(accuracy: dict[str, dict[str, float]], candidates: tuple[str, ...]) -> str | None:
    """The candidate with the highest mean accuracy (None when none has run)."""
    present = [name for name in candidates if accuracy.get(name)]
    return max(present, key=lambda name: statistics.mean(accuracy[name].values()), default=None)


def headline(accuracy: dict[str, dict[str, float]], ours: str, theirs: str | None) -> str:
    """One line: ``ours - theirs`` (paired, 95% CI) or why it cannot be given yet."""
    interval = paired_interval(accuracy.get(ours, {}), accuracy.get(theirs, {})) if theirs else None
    if theirs is None or interval is None:
        return f"{ours} - {theirs or 'its comparison'}: fewer than 2 common seeds so far"
    mean, half, n = interval
    return f"{ours} - {theirs}: {mean:+.3f} ± {half:.3f} (95% CI, {n} seeds)"


def _tokens(rows: dict[str, dict[str, str]], field: str) -> str:
    return f"{statistics.mean(int(r[field]) for r in rows.values()) / 1000:.0f}k"


def by_build(rows: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    """Toy-model build -> its rows, in first-seen order."""
    builds: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        builds.setdefault(row["toy_model"], []).append(row)
    return builds


def print_table(
    path: Path,
    references: tuple[str, ...],
    plot: Path | None = None,
    comparisons: tuple[tuple[str, tuple[str, ...]], ...] = (),
) -> None:
    """Print one table per toy-model build of ``path`` (see :func:`print_build`), against the first of
    ``references`` the build has; the plot of a build is ``plot`` with the build's name appended to its
    stem."""
    for build, rows in by_build(read_rows(path)).items():
        methods = {row["method"] for row in rows}
        reference = next((name for name in references if name in methods), references[0])
        print(f"\n{path}, toy model {build}: test accuracy; delta = paired difference against {reference}")
        build_plot = None if plot is None else plot.with_name(f"{plot.stem}-{build}{plot.suffix}")
        print_build(rows, reference, build_plot, comparisons)


def print_build(
    rows: list[dict[str, str]],
    reference: str,
    plot: Path | None,
    comparisons: tuple[tuple[str, tuple[str, ...]], ...],
) -> None:
    """Print the Markdown table of one build's rows (differences against ``reference``, 95% CI), then for
    each ``(method, candidates)`` of ``comparisons`` the method against the best of its candidates, and
    save the plot. Comparisons of methods the build lacks are left out."""
    table = by_method(rows)
    accuracy = {m: {s: float(r["test_accuracy"]) for s, r in cells.items()} for m, cells in table.items()}
    print("| method | seeds | test accuracy | delta vs reference | sampled | trained | eval tokens | runs |")
    print("|---|---|---|---|---|---|---|---|")
    for method, cells in table.items():
        interval = paired_interval(accuracy[method], accuracy.get(reference, {}))
        delta = "-" if interval is None or method == reference else f"{interval[0]:+.3f} ± {interval[1]:.3f}"
        mean = statistics.mean(accuracy[method].values())
        runs = statistics.mean(int(r["trainer_runs"]) for r in cells.values())
        tokens = " | ".join(_tokens(cells, f) for f in ("sampled_tokens", "trained_tokens", "eval_tokens"))
        print(f"| {method} | {len(cells)} | {mean:.3f} | {delta} | {tokens} | {runs:.0f} |")
    for method, candidates in comparisons:
        if method in accuracy:
            print(headline(accuracy, method, best_of(accuracy, candidates)))
    if plot is not None and table:
        save_plot(accuracy, plot)
        print(f"plot: {plot}")


def save_plot(accuracy: dict[str, dict[str, float]], path: Path) -> None:
    """Horizontal bars of mean test accuracy (one per method, labels readable however many) with each
    seed as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(accuracy)
    figure, axes = plt.subplots(figsize=(9, 1.2 + 0.35 * len(names)), dpi=100)
    axes.barh(names, [statistics.mean(v.values()) for v in accuracy.values()], color="#9ab")
    for y, values in enumerate(accuracy.values()):
        axes.plot(list(values.values()), [y] * len(values), "k.", alpha=0.6)
    axes.invert_yaxis()
    axes.set_xlabel("test accuracy (1000 rows)")
    axes.set_title("toy task, equal compute; dots = seeds")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
