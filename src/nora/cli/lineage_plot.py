"""The best genome's ancestry drawn as a PNG graph: one column per generation, edges marked by how the
child came to be (crossover, mutation or elite)."""

from __future__ import annotations

from pathlib import Path

from nora.cli.report import RunView, ancestry

EDGE_COLOURS = {"crossover": "tab:blue", "mutation": "tab:orange", "elite": "tab:green"}


def plot_lineage(view: RunView, genome: str, path: Path) -> Path:
    """Draw ``genome`` and its ancestors (x: generation, y: index in the generation) into ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    records = view.records()
    edges = ancestry(view, genome)
    nodes = {genome} | {node for edge in edges for node in edge if node in records}
    position = {n: (records[n][0].generation, records[n][0].index) for n in nodes if n in records}
    height = max([y for _, y in position.values()] + [1])
    figure, axes = plt.subplots(figsize=(2.2 + 1.6 * len(view.generations), 1.5 + 0.5 * height), dpi=100)
    for parent, child in edges:
        if parent in position and child in position:
            colour = EDGE_COLOURS.get(records[child][0].origin, "grey")
            arrow = {"arrowstyle": "->", "color": colour, "lw": 1.5}
            axes.annotate("", xy=position[child], xytext=position[parent], arrowprops=arrow)
    for node, (x, y) in position.items():
        plan, result = records[node]
        fitness = "-" if result.fitness is None else f"{result.fitness:.3f}"
        colour = "gold" if node == genome else "white"
        axes.scatter([x], [y], s=300, c=colour, edgecolors="black", zorder=3)
        axes.annotate(
            f"{plan.index}\n{fitness}",
            (x, y),
            textcoords="offset points",
            xytext=(0, 12),
            ha="center",
            fontsize=7,
        )
    legend = [Line2D([0], [0], color=c, lw=2, label=o) for o, c in EDGE_COLOURS.items()]
    axes.legend(handles=legend, loc="upper left", fontsize=7, title="child's origin", title_fontsize=7)
    axes.set_xlabel("generation")
    axes.set_ylabel("genome index")
    axes.set_xticks(sorted({x for x, _ in position.values()}))
    axes.set_xlim(-0.5, max(x for x, _ in position.values()) + 0.5)
    axes.set_ylim(-1.3, height + 0.8)
    axes.invert_yaxis()
    axes.set_title(f"{view.population}: ancestry of {genome}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
