"""``nora run``, ``nora status`` and ``nora report``: evolve a Population on this machine and look at it."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from nora.api.manifest import load_population
from nora.cli.lineage_plot import plot_lineage
from nora.cli.report import (
    LINEAGE_FILE,
    PLOT_FILE,
    RunView,
    held_out_lines,
    history_table,
    lineage,
    plot_fitness,
    read_run,
    status_lines,
)
from nora.cli.toy_uris import ToyResolver
from nora.local.display import display_for
from nora.local.driver import LocalDriver, RunConfig
from nora.local.executor import SubprocessExecutor
from nora.toy.cache import cache_root as toy_cache_root

REPORT_WIDTH = 120
"""Columns of ``nora report``'s output when it is not a terminal (a log, a pipe): the table fits."""

RunDirOption = Annotated[
    Path, typer.Option("--dir", help="The run folder (state, store, logs, best adapter).")
]


def _prepare_torch() -> int:
    """Breeding in the driver uses one thread (its tensors are small per module, and more threads only
    contend with the trainer subprocesses); returns the number of GPUs."""
    import torch

    torch.set_num_threads(1)
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, e.g. under ``taskset`` or a cpuset), where
    the platform tells; else the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def run(
    manifest: Annotated[Path, typer.Argument(help="A Population manifest (the YAML kubectl apply takes).")],
    run_dir: RunDirOption = Path("runs/default"),
    workers: Annotated[int, typer.Option(help="Genomes trained at once (default: spec.parallelism).")] = 0,
) -> None:
    """Evolve a Population on this machine; run again with the same --dir to resume."""
    population = load_population(manifest)
    if workers < 0:
        raise typer.BadParameter(f"must be >= 0, got {workers}", param_hint="--workers")
    config = RunConfig(
        manifest=population,
        run_dir=run_dir,
        workers=workers or population.spec.parallelism,
        gpus=_prepare_torch(),
        cpus=_usable_cpus(),
        resolve=ToyResolver(toy_cache_root() / "resolved"),
    )
    display = display_for(sys.stderr)
    try:
        state = LocalDriver(config, SubprocessExecutor(), display).run()
    except KeyboardInterrupt:
        display.close()
        typer.echo(f"interrupted; resume with: nora run {manifest} --dir {run_dir}", err=True)
        raise typer.Exit(130) from None
    display.close()
    for line in status_lines(RunView(state.population, state.record(), tuple(state.generations))):
        typer.echo(line)
    if state.best:
        typer.echo(f"best adapter: {run_dir / 'best'}")
    raise typer.Exit(0 if state.phase == "Succeeded" else 1)


RunLocation = Annotated[
    str,
    typer.Argument(
        help="A run folder, or a Population's folder in a store: s3://BUCKET/PREFIX/POPULATION "
        "(credentials from the AWS environment) or file://..."
    ),
]


def status(location: RunLocation) -> None:
    """Where a run stands: phase, current generation, genomes by phase, best so far."""
    for line in status_lines(read_run(location)):
        typer.echo(line)


def report(
    location: RunLocation,
    out: Annotated[
        Path | None, typer.Option(help="Where to write the PNGs (default: the run folder, or '.' for a URI).")
    ] = None,
) -> None:
    """Per-generation table, the test-split scores, a fitness plot and the best genome's lineage."""
    view = read_run(location)
    folder = out or (Path(location) if "://" not in location else Path("."))
    folder.mkdir(parents=True, exist_ok=True)
    console = Console(width=None if sys.stdout.isatty() else REPORT_WIDTH)
    console.print(history_table(view))
    for line in held_out_lines(view):
        console.print(line, highlight=False, soft_wrap=True)
    if view.rows():
        console.print(f"plot: {plot_fitness(view, folder / PLOT_FILE)}")
    best = view.record.best
    if best is not None:
        console.print("lineage of the best genome:")
        for line in lineage(view, best.genome):
            console.print(f"  {line}", highlight=False)
        console.print(f"lineage graph: {plot_lineage(view, best.genome, folder / LINEAGE_FILE)}")


def register(app: typer.Typer) -> None:
    """Add the local-run commands to ``app``."""
    app.command("run")(run)
    app.command("status")(status)
    app.command("report")(report)
