"""``nora breed``, ``nora mutate`` and ``nora inspect``: the genetics library on adapter folders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from nora.genetics import (
    CrossoverMethod,
    CrossoverSpec,
    GeneticsError,
    MutationSpec,
    crossover,
    generator_for,
    load_genome,
    mutate,
    save_genome,
    summarize_adapter,
)

OutOption = Annotated[
    Path, typer.Option("--out", help="Folder to write the child adapter to (must not exist).")
]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of every random choice.")]
ForceOption = Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")]


def breed(
    parents: Annotated[
        list[Path], typer.Option("--parent", help="A parent adapter folder (repeat, 2 or more).")
    ],
    out: OutOption,
    method: Annotated[CrossoverMethod, typer.Option("--method", help="Crossover method.")] = "nora",
    fitness: Annotated[
        list[float] | None, typer.Option("--fitness", help="Fitness of each parent, in --parent order.")
    ] = None,
    rank: Annotated[int | None, typer.Option("--rank", help="svd: the child's rank.")] = None,
    temperature: Annotated[float, typer.Option(help="Softmax temperature over fitness.")] = 1.0,
    density: Annotated[float, typer.Option(help="ties/dare: fraction of entries kept.")] = 0.5,
    blx_alpha: Annotated[float, typer.Option(help="blx: range widening.")] = 0.5,
    allow_mixed_base_models: Annotated[
        bool,
        typer.Option(
            "--allow-mixed-base-models",
            help="Breed parents whose adapter_config.json name different base models (copies of one model).",
        ),
    ] = False,
    seed: SeedOption = 0,
    force: ForceOption = False,
) -> None:
    """Cross two or more parent adapters into one child adapter (of one base model unless allowed)."""
    if len(parents) < 2:
        raise GeneticsError(f"--parent: give at least 2 parents, got {len(parents)}")
    if fitness and len(fitness) != len(parents):
        raise GeneticsError(f"--fitness: got {len(fitness)} values for {len(parents)} parents; give one each")
    spec = CrossoverSpec(
        method=method,
        temperature=temperature,
        rank=rank,
        density=density,
        blx_alpha=blx_alpha,
        allow_mixed_base_models=allow_mixed_base_models,
    )
    genomes = [load_genome(path) for path in parents]
    child = crossover(genomes, fitness or None, spec, generator_for(seed, "crossover"))
    save_genome(child, out, overwrite=force)
    typer.echo(f"wrote {out} ({method} child of {len(parents)} parents, ranks {_rank_range(child.ranks)})")


def mutate_command(
    adapter: Annotated[Path, typer.Argument(help="The adapter folder to mutate.")],
    out: OutOption,
    sigma: Annotated[float, typer.Option(help="Standard deviation of gene noise.")] = 0.0,
    gene_probability: Annotated[float, typer.Option(help="Chance an entry gets noise.")] = 1.0,
    grow: Annotated[int, typer.Option(help="Grow every module's rank by N (dW unchanged).")] = 0,
    shrink: Annotated[int, typer.Option(help="Drop every module's N lowest-energy components.")] = 0,
    max_rank: Annotated[int | None, typer.Option(help="Never grow past this rank.")] = None,
    seed: SeedOption = 0,
    force: ForceOption = False,
) -> None:
    """Mutate one adapter: gene noise, then rank shrink and grow."""
    if grow < 0 or shrink < 0:
        raise GeneticsError(f"--grow/--shrink: must be >= 0, got {grow}/{shrink}")
    spec = MutationSpec(
        sigma=sigma,
        gene_probability=gene_probability,
        grow_probability=1.0 if grow else 0.0,
        grow_by=max(grow, 1),
        shrink_probability=1.0 if shrink else 0.0,
        shrink_by=max(shrink, 1),
        max_rank=max_rank,
    )
    mutant = mutate(load_genome(adapter), spec, generator_for(seed, "mutation"))
    save_genome(mutant, out, overwrite=force)
    typer.echo(f"wrote {out} (ranks {_rank_range(mutant.ranks)})")


def inspect(
    adapter: Annotated[Path, typer.Argument(help="The adapter folder to describe.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Ranks per module, parameter count, norms and checksum status of an adapter."""
    summary = summarize_adapter(adapter)
    if as_json:
        typer.echo(json.dumps(summary.as_dict(), indent=2))
        return
    table = Table(title=str(adapter))
    for column in ("module", "rank", "alpha", "out x in", "|A|", "|B|", "|scale BA|"):
        table.add_column(column, justify="left" if column == "module" else "right")
    for m in summary.modules:
        shape = f"{m.out_features} x {m.in_features}"
        norms = (f"{m.a_norm:.4g}", f"{m.b_norm:.4g}", f"{m.update_norm:.4g}")
        table.add_row(m.name, str(m.rank), f"{m.alpha:g}", shape, *norms)
    console = Console()
    console.print(table)
    console.print(
        f"modules {len(summary.modules)}  parameters {summary.parameters:,}  dtype {summary.dtype}  "
        f"bytes {summary.bytes:,}  checksum {summary.checksum}  genes {summary.hyperparameters or '{}'}"
    )


def _rank_range(ranks: dict[str, int]) -> str:
    low, high = min(ranks.values()), max(ranks.values())
    return str(low) if low == high else f"{low}-{high}"


def register(app: typer.Typer) -> None:
    """Add the genetics commands to ``app``."""
    app.command("breed")(breed)
    app.command("mutate")(mutate_command)
    app.command("inspect")(inspect)
