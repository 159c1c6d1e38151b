"""Quality on the toy task at equal compute: what evolution gives against what a user would run instead.

Every method starts from the same toy model and data of a seed and is scored by greedy accuracy on a
*test* split (1000 eval-partition rows of their own stream, disjoint from train and from the 300 eval rows
that fitness uses), so picking the best genome on the eval split does not flatter it. Methods:

* base model; single-adapter iterated IRPO given the NoRA run's trainer budget (more prompts and steps per
  iteration); random search (K iterated-IRPO runs, learning rate and NLL weight drawn from NoRA's gene
  ranges, best on eval); PBT (no crossover: copy a winner, perturb its genes); NoRA with each crossover
  (``nora``, ``linear``, ``svd``, ``ties``), and ``svd`` with a prompt window per genome
  (``training.promptWindows: genome``); the top-3 majority-vote ensemble of the default NoRA run;
  gradient-free evolution (``training.method: none``) from the default run's generation-0 adapters,
  against the best of those seed adapters.

Each finished (seed, method) cell is appended to a CSV (``benchmarks/results/quality.csv``; commit it)
with the build of the toy model it ran on (its weights' digest: other CPUs pre-train other weights); a
rerun skips the cells finished on the same build and resumes half-finished runs, so the benchmark can be
continued across sessions, and rows are paired only within a build. The table (one per build) gives
each method's mean, the 95% confidence interval of its per-seed paired difference against the default
NoRA run, and its compute (tokens sampled, trained on, generated for fitness); two lines under it give
NoRA against the best equal-compute alternative and gradient-free evolution against the best seed, each
with its paired 95% interval.

    python benchmarks/quality.py                 # 5 seeds (hours on 2 cores; resumable)
    python benchmarks/quality.py --table         # print the table and plot of the CSV so far
    python benchmarks/quality.py --quick         # tiny budgets, one seed, its own CSV (a few minutes)
    python benchmarks/quality.py --methods PBT --seeds 0 1   # some cells only (one process per run folder)
"""

from __future__ import annotations

import argparse
import csv
import datetime
import hashlib
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from nora.genetics import load_genome
from nora.toy.data import write_dataset
from nora.toy.model import build_toy_model
from nora.trainer.data import load_split
from nora.trainer.irpo_config import BaseModelRef, IrpoConfig
from nora.trainer.testscore import score_adapters
from quality_methods import (
    FULL,
    QUICK,
    Budget,
    Compute,
    Outcome,
    Setup,
    best_scale_on_eval,
    evolve,
    gradient_free,
    iterated_irpo,
    pbt,
    random_search,
)
from quality_table import FIELDS, print_table

DEFAULT_NORA = "NoRA (svd, magnitude gene)"
"""NoRA with its defaults since the magnitude gene (``mutation.scaleSigma: 0.3``) became one."""
REFERENCES = (DEFAULT_NORA, "NoRA (svd)")
EQUAL_COMPUTE = ("single IRPO", "random search", "PBT")
FREE = "gradient-free, magnitude gene"
COMPARISONS = (
    (DEFAULT_NORA, EQUAL_COMPUTE),
    (DEFAULT_NORA, ("NoRA (svd)",)),
    ("NoRA (svd)", EQUAL_COMPUTE),
    ("NoRA (svd, magnitude gene, population 2)", EQUAL_COMPUTE),
    ("NoRA (svd, magnitude gene, population 2)", ("NoRA (svd, population 2)",)),
    (FREE, ("best seed",)),
    (FREE, ("best seed, scaled on eval",)),
    ("gradient-free from seeds", ("best seed",)),
)
CROSSOVERS = ("svd", "nora", "linear", "ties")
MAGNITUDE_SIGMA = 0.3
RESULTS = Path(__file__).parent / "results" / "quality.csv"


def setup_seed(seed: int, budget: Budget, work: Path) -> Setup:
    """The seed's data (written once; deterministic) and the shared toy model."""
    data = work / f"seed{seed}" / "data"
    if not (data / "test.jsonl").exists():
        write_dataset(data, seed=seed, n_eval=budget.eval_prompts, n_test=budget.test_prompts)
    model = build_toy_model(work / "model", seed=0)
    files = (data / "train.jsonl", data / "eval.jsonl", data / "test.jsonl")
    return Setup(seed, model, *files, work / f"seed{seed}", model_digest(model))


def model_digest(model: Path) -> str:
    """The first 12 hex digits of the SHA-256 of the toy model's weights: its build. The pre-training is
    deterministic on one machine, but other CPUs round differently and pre-train other weights, so cells
    are paired, and skipped as done, only within one build."""
    return hashlib.sha256((model / "model.safetensors").read_bytes()).hexdigest()[:12]


def trainer_runs(budget: Budget) -> int:
    """Trainer runs of a NoRA run: the whole first generation, then all but the elite."""
    return budget.population + (budget.population - 1) * (budget.generations - 1)


def single_irpo(setup: Setup, budget: Budget) -> Outcome:
    """Iterated IRPO on one adapter with the NoRA run's prompts and steps, spread over its generations."""
    scale = trainer_runs(budget) / budget.generations
    return iterated_irpo(setup, budget, "irpo", {}, scale)


Method = Callable[[Setup, Budget], Outcome]


def deep_evolution(scale_sigma: float) -> Method:
    """NoRA (svd) with the same trainer runs as population 2 (1 elite): a lineage about as deep as single
    IRPO's, so depth against breadth is the only difference from population 4 x 3 generations."""

    def run(setup: Setup, budget: Budget) -> Outcome:
        deep = replace(budget, population=2, generations=trainer_runs(budget) - 1)
        return evolve(setup, deep, "svd", scale_sigma=scale_sigma, label=f"-p2x{deep.generations}")

    return run


def _ensemble(setup: Setup, budget: Budget) -> Outcome:
    run = evolve(setup, budget, "svd")
    return Outcome(run.adapters[1:4], run.fitness, run.compute, note="top-3 genomes of NoRA (svd)")


def _seeds(setup: Setup) -> tuple[list[Path], list[float]]:
    import json

    paths = sorted((setup.work / "nora-svd" / "store").rglob("g0/*/output/metrics.json"))
    return [p.parent / "adapter" for p in paths], [json.loads(p.read_text())["fitness"] for p in paths]


def _best_seed(setup: Setup, budget: Budget) -> Outcome:
    evolve(setup, budget, "svd")
    adapters, fitness = _seeds(setup)
    best = max(range(len(adapters)), key=lambda i: fitness[i])
    return Outcome((adapters[best],), fitness[best], Compute(), note="generation 0 of NoRA (svd)")


def _best_seed_scaled(setup: Setup, budget: Budget) -> Outcome:
    seed = _best_seed(setup, budget).adapters[0]
    assert seed is not None
    return best_scale_on_eval(setup, budget, seed, "best-seed")


def _single_irpo_scaled(setup: Setup, budget: Budget) -> Outcome:
    irpo = single_irpo(setup, budget)
    assert irpo.adapters[0] is not None
    scaled = best_scale_on_eval(setup, budget, irpo.adapters[0], "irpo")
    return Outcome(scaled.adapters, scaled.fitness, irpo.compute + scaled.compute, note=scaled.note)


def _free(scale_sigma: float) -> Method:
    def run(setup: Setup, budget: Budget) -> Outcome:
        evolve(setup, budget, "svd")
        adapters, fitness = _seeds(setup)
        return gradient_free(setup, budget, adapters, max(fitness), scale_sigma)

    return run


def _crossover_method(crossover: str) -> Method:
    def run(setup: Setup, budget: Budget) -> Outcome:
        return evolve(setup, budget, crossover)

    return run


GROUPS: tuple[dict[str, Method], ...] = (
    {
        "base model": lambda s, b: Outcome((None,), float("nan"), Compute()),
        "NoRA (svd)": lambda s, b: evolve(s, b, "svd"),
        "single IRPO": single_irpo,
        "top-3 ensemble": _ensemble,
    },
    {"random search": random_search, "PBT": pbt},
    {f"NoRA ({c})": _crossover_method(c) for c in CROSSOVERS[1:]},
    {"best seed": _best_seed, "gradient-free from seeds": _free(0.0)},
    {"NoRA (svd, own windows)": lambda s, b: evolve(s, b, "svd", windows="genome")},
    {
        DEFAULT_NORA: lambda s, b: evolve(s, b, "svd", scale_sigma=MAGNITUDE_SIGMA),
        FREE: _free(MAGNITUDE_SIGMA),
    },
    {"best seed, scaled on eval": _best_seed_scaled, "single IRPO, scaled on eval": _single_irpo_scaled},
    {
        "NoRA (svd, magnitude gene, population 2)": deep_evolution(MAGNITUDE_SIGMA),
        "NoRA (svd, population 2)": deep_evolution(0.0),
    },
)


def _commit() -> str:
    result = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    return result.stdout.strip()


def run_cell(setup: Setup, budget: Budget, name: str, method: Method) -> dict[str, str]:
    """Run one method for one seed and score what it hands over on the test split."""
    started = datetime.datetime.now(datetime.UTC)
    outcome = method(setup, budget)
    rows = load_split(setup.test.as_uri(), "test")
    adapters = [load_genome(path) if path else None for path in outcome.adapters]
    score = score_adapters(BaseModelRef(uri=setup.model.as_uri()), adapters, rows, IrpoConfig())
    test = score.ensemble if name.endswith("ensemble") else score.accuracy[0]
    assert test is not None
    c = outcome.compute
    minutes = (datetime.datetime.now(datetime.UTC) - started).total_seconds() / 60
    values = [setup.seed, name, f"{test:.4f}", f"{outcome.fitness:.4f}", c.sampled, c.trained, c.evaluated]
    values += [c.steps, c.runs, score.rows, f"{minutes:.1f}", outcome.note, _commit(), setup.toy_model]
    return dict(zip(FIELDS, map(str, values), strict=True))


def done_cells(path: Path) -> set[tuple[str, str, str]]:
    """(seed, method, toy model build) cells already in the CSV."""
    if not path.exists():
        return set()
    with path.open() as handle:
        return {(row["seed"], row["method"], row["toy_model"]) for row in csv.DictReader(handle)}


def append(path: Path, row: dict[str, str]) -> None:
    """Append one finished cell (with the header when the file is new)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS, lineterminator="\n")
        if new:
            writer.writeheader()
        writer.writerow(row)
    print(f"cell: {row}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny budgets, one seed, its own CSV")
    parser.add_argument("--table", action="store_true", help="only print the table and plot of the CSV")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--methods", nargs="+", default=None, help="only these methods (default: all)")
    parser.add_argument("--work", type=Path, default=Path("runs/quality"))
    parser.add_argument("--csv", type=Path, default=None, help=f"results file (default {RESULTS})")
    args = parser.parse_args()
    known = [name for group in GROUPS for name in group]
    if args.methods and set(args.methods) - set(known):
        parser.error(f"--methods: unknown {sorted(set(args.methods) - set(known))}; choose from {known}")
    work = args.work.resolve() / ("quick" if args.quick else "full")
    budget, seeds = (QUICK, args.seeds[:1]) if args.quick else (FULL, args.seeds)
    path = args.csv or (work / "quality.csv" if args.quick else RESULTS)
    if not args.table:
        for group in GROUPS:
            for seed in seeds:
                setup = setup_seed(seed, budget, work)
                for name, method in group.items():
                    wanted = args.methods is None or name in args.methods
                    if wanted and (str(seed), name, setup.toy_model) not in done_cells(path):
                        append(path, run_cell(setup, budget, name, method))
    print_table(path, REFERENCES, path.with_suffix(".png"), COMPARISONS)


if __name__ == "__main__":
    main()
