"""The methods that ``benchmarks/quality.py`` compares, each run for one seed and scored on the test split.

Every method returns an :class:`Outcome`: the adapters it would hand to a user (best first, as picked on
the eval split), and the compute it spent, counted from the trainers' own ``metrics.json``: tokens
sampled (IRPO's chains of thought), tokens trained on (DPO + NLL, TRL's count) and tokens generated to
evaluate fitness. The test split is scored by the caller; it is never seen while a method runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from nora.genetics import load_genome, save_genome
from nora.genetics.mutation import scale_update
from nora.trainer.data import load_split
from nora.trainer.irpo_config import BaseModelRef, IrpoConfig
from nora.trainer.testscore import score_adapters

RANK = 8
GENE_RANGES = {"learningRate": (2e-5, 2e-4), "nllWeight": (1.0, 8.0)}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
SCALES = (0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)


@dataclass(frozen=True)
class Budget:
    """Sizes of one comparison: a NoRA run of ``population`` x ``generations`` sets everyone's compute."""

    population: int
    generations: int
    steps: int
    prompts: int
    eval_prompts: int
    test_prompts: int
    samples: int
    search_runs: int


FULL = Budget(
    population=4,
    generations=3,
    steps=60,
    prompts=32,
    eval_prompts=300,
    test_prompts=1000,
    samples=8,
    search_runs=3,
)
QUICK = Budget(
    population=2, generations=2, steps=2, prompts=4, eval_prompts=8, test_prompts=12, samples=2, search_runs=2
)


@dataclass(frozen=True)
class Setup:
    """The files of one seed, and the build of the toy model (its weights' digest)."""

    seed: int
    model: Path
    train: Path
    eval: Path
    test: Path
    work: Path
    toy_model: str


@dataclass(frozen=True)
class Compute:
    """Tokens a method spent, and its DPO steps and trainer runs."""

    sampled: int = 0
    trained: int = 0
    evaluated: int = 0
    steps: int = 0
    runs: int = 0

    def __add__(self, other: Compute) -> Compute:
        return Compute(
            self.sampled + other.sampled,
            self.trained + other.trained,
            self.evaluated + other.evaluated,
            self.steps + other.steps,
            self.runs + other.runs,
        )


@dataclass(frozen=True)
class Outcome:
    """What a method hands over (best first) with its eval fitness, and what it spent."""

    adapters: tuple[Path | None, ...]
    fitness: float
    compute: Compute
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def nora_cli(*args: str) -> str:
    """Run ``python -m nora ARGS`` and return its stdout; raise with its stderr tail on failure."""
    result = subprocess.run(
        [sys.executable, "-m", "nora", *args], capture_output=True, text=True, check=False, timeout=14400
    )
    if result.returncode != 0:
        raise RuntimeError(f"nora {' '.join(args)} failed ({result.returncode}): {result.stderr[-2000:]}")
    return result.stdout


def compute_of(metrics: dict[str, Any]) -> Compute:
    """Tokens of one trainer run, from its ``metrics.json`` (rates x seconds where no count is kept)."""
    rates, durations = metrics.get("tokens_per_s", {}), metrics.get("durations", {})
    training = metrics.get("training", {})
    return Compute(
        sampled=round((rates.get("sampling") or 0.0) * durations.get("sampling", 0.0)),
        trained=int(training.get("tokens", 0)),
        evaluated=round((rates.get("evaluation") or 0.0) * durations.get("evaluation", 0.0)),
        steps=int(training.get("steps", 0)),
        runs=1,
    )


def total_compute(paths: Iterable[Path]) -> Compute:
    """Summed compute of the trainer runs whose ``metrics.json`` are ``paths``."""
    total = Compute()
    for path in paths:
        total = total + compute_of(json.loads(path.read_text()))
    return total


def training(budget: Budget, steps: int, prompts: int, method: str = "irpo") -> dict[str, Any]:
    """The trainer settings of benchmarks/trainer.py (the ones that raised accuracy in its sweeps)."""
    return {
        "method": method,
        "samplesPerPrompt": budget.samples,
        "pairsPerPrompt": min(4, budget.samples),
        "maxSteps": steps,
        "batchSize": 4,
        "maxPrompts": prompts,
        "maxNewTokens": 96,
        "evalPrompts": budget.eval_prompts,
        "learningRate": 1e-4,
        "beta": 0.1,
        "nllWeight": 4.0,
    }


def train_one(setup: Setup, folder: Path, adapter: Path | None, train: dict[str, Any], gen: int) -> Outcome:
    """One trainer run (resumed if its summary exists); ``gen`` picks the train window."""
    folder.mkdir(parents=True, exist_ok=True)
    metrics = folder / "output" / "metrics.json"
    if not metrics.exists():
        task = {
            "population": "quality",
            "generation": gen,
            "genome": folder.name,
            "seed": setup.seed * 1000 + gen,
            "baseModel": {"uri": setup.model.as_uri()},
            "dataset": {"train": setup.train.as_uri(), "eval": setup.eval.as_uri()},
            "adapter": {
                "uri": adapter.as_uri() if adapter else None,
                "rank": RANK,
                "alpha": 2.0 * RANK,
                "targetModules": TARGETS,
            },
            "training": train,
            "output": (folder / "output").as_uri(),
        }
        (folder / "genome.json").write_text(json.dumps(task))
        nora_cli("train", "--genome", str(folder / "genome.json"))
    data = json.loads(metrics.read_text())
    return Outcome((folder / "output" / "adapter",), float(data["fitness"]), compute_of(data))


def iterated_irpo(setup: Setup, budget: Budget, name: str, genes: dict[str, float], scale: float) -> Outcome:
    """One adapter, ``generations`` IRPO iterations, each ``scale`` times one genome's prompts and steps."""
    adapter: Path | None = None
    spent = Compute()
    outcome = None
    steps, prompts = round(budget.steps * scale), round(budget.prompts * scale)
    for iteration in range(budget.generations):
        train = {**training(budget, steps, prompts), **genes}
        outcome = train_one(setup, setup.work / name / f"it{iteration}", adapter, train, iteration)
        adapter, spent = outcome.adapters[0], spent + outcome.compute
    assert outcome is not None
    return Outcome(outcome.adapters, outcome.fitness, spent, extra=dict(genes))


def random_search(setup: Setup, budget: Budget) -> Outcome:
    """K iterated-IRPO runs with learning rate and NLL weight drawn uniformly from NoRA's gene ranges."""
    generator = torch.Generator().manual_seed(setup.seed)
    runs = []
    for k in range(budget.search_runs):
        draw = torch.rand(2, generator=generator, dtype=torch.float64)
        genes = {
            name: low + float(u) * (high - low)
            for (name, (low, high)), u in zip(GENE_RANGES.items(), draw, strict=True)
        }
        runs.append(iterated_irpo(setup, budget, f"search{k}", genes, 1))
    best = max(runs, key=lambda run: run.fitness)
    spent = sum((run.compute for run in runs), Compute())
    return Outcome(best.adapters, best.fitness, spent, note=json.dumps(best.extra))


def population_spec(setup: Setup, budget: Budget, crossover: dict[str, Any], method: str) -> dict[str, Any]:
    """The Population of a NoRA-style run; ``crossover`` and the training ``method`` vary. The magnitude gene
    is off unless a method turns it on, so the cells run before it was the default stay comparable."""
    return {
        "baseModel": {"uri": setup.model.as_uri()},
        "dataset": {"train": setup.train.as_uri(), "eval": setup.eval.as_uri()},
        "populationSize": budget.population,
        "maxGenerations": budget.generations,
        "seed": setup.seed,
        "selection": {"method": "tournament", "survivors": 2, "elites": 1, "tournamentSize": 2},
        "crossover": crossover,
        "mutation": {
            "rankGrowProbability": 0.2,
            "rankShrinkProbability": 0.1,
            "maxRank": 16,
            "hyperparameters": {name: list(bounds) for name, bounds in GENE_RANGES.items()},
            "scaleSigma": 0.0,
        },
        "adapter": {"initialRank": RANK, "alpha": 2 * RANK, "targetModules": TARGETS},
        "training": training(budget, budget.steps, budget.prompts, method),
        "parallelism": 2,
    }


def run_population(setup: Setup, name: str, spec: dict[str, Any]) -> Outcome:
    """``nora run`` a Population (resumes a half-done run); best first, then the rest by fitness."""
    document = {"apiVersion": "nora.dev/v1alpha1", "kind": "Population", "metadata": {"name": name}}
    manifest = setup.work / f"{name}.yaml"
    manifest.write_text(yaml.safe_dump({**document, "spec": spec}))
    run_dir = setup.work / name
    nora_cli("run", str(manifest), "--dir", str(run_dir))
    metrics = sorted((run_dir / "store").rglob("output/metrics.json"))
    ranked = sorted(
        ((json.loads(path.read_text())["fitness"], path.parent / "adapter") for path in metrics),
        key=lambda pair: -pair[0],
    )
    best = json.loads((run_dir / "best" / "best.json").read_text())
    adapters = (run_dir / "best", *(adapter for _, adapter in ranked))
    return Outcome(adapters, float(best["fitness"]), total_compute(metrics), note=str(best.get("genome")))


def with_magnitude_gene(spec: dict[str, Any], scale_sigma: float) -> str:
    """Turn the magnitude gene on in ``spec`` when ``scale_sigma`` is positive; the run name's suffix for it
    (empty when off, so runs from before the gene keep their names)."""
    if not scale_sigma:
        return ""
    spec["mutation"]["scaleSigma"] = scale_sigma
    return f"-scale{round(100 * scale_sigma)}"


def evolve(
    setup: Setup,
    budget: Budget,
    crossover: str,
    windows: str = "generation",
    scale_sigma: float = 0.0,
    label: str = "",
) -> Outcome:
    """NoRA evolution with one crossover method; ``windows: genome`` gives each genome its own prompts,
    ``scale_sigma`` turns on the magnitude gene (``mutation.scaleSigma``); ``label`` ends the run's name."""
    spec = population_spec(setup, budget, {"method": crossover, "temperature": 0.1}, "irpo")
    if crossover == "ties":  # element-wise on factors: equal ranks only
        spec["mutation"].update(rankGrowProbability=0.0, rankShrinkProbability=0.0)
    spec["training"]["promptWindows"] = windows
    suffix = "" if windows == "generation" else f"-{windows}-windows"
    suffix += with_magnitude_gene(spec, scale_sigma)
    return run_population(setup, f"nora-{crossover}{suffix}{label}", spec)


def pbt(setup: Setup, budget: Budget) -> Outcome:
    """PBT: no crossover; offspring copy a tournament winner (exploit) and perturb its genes (explore)."""
    spec = population_spec(setup, budget, {"probability": 0.0}, "irpo")
    spec["mutation"] = {**spec["mutation"], "sigma": 0.0, "hyperparameterProbability": 1.0}
    spec["mutation"].update(rankGrowProbability=0.0, rankShrinkProbability=0.0)
    return run_population(setup, "pbt", spec)


def gradient_free(
    setup: Setup, budget: Budget, seeds: list[Path], seed_fitness: float, scale_sigma: float = 0.0
) -> Outcome:
    """``training.method: none`` evolution from seed adapters (crossover, relative mutation, succession),
    with the magnitude gene when ``scale_sigma`` is positive."""
    spec = population_spec(setup, budget, {"method": "svd", "temperature": 0.02}, "none")
    spec["populationSize"] = max(budget.population, len(seeds)) * 2
    spec["maxGenerations"] = budget.generations * 2
    spec["seedAdapters"] = [{"uri": path.as_uri()} for path in seeds]
    spec["mutation"] = {
        "sigma": 0.05,
        "geneProbability": 1.0,
        "maxRank": 16,
        "succession": {},
        "scaleSigma": 0.0,
    }
    spec["selection"] = {"method": "tournament", "survivors": 4, "elites": 2, "tournamentSize": 2}
    outcome = run_population(setup, "free" + with_magnitude_gene(spec, scale_sigma), spec)
    return Outcome(outcome.adapters, outcome.fitness, outcome.compute, note=f"best seed fit {seed_fitness}")


def best_scale_on_eval(setup: Setup, budget: Budget, adapter: Path, name: str) -> Outcome:
    """A control for the magnitude gene: ``adapter``'s update times each of :data:`SCALES`, the factor
    with the best accuracy on the eval rows fitness uses (a line search a user could run by hand)."""
    folder = setup.work / f"scaled-{name}"
    genome = load_genome(adapter)
    rows = load_split(setup.eval.as_uri(), "eval", budget.eval_prompts)
    base = BaseModelRef(uri=setup.model.as_uri())
    candidates = [scale_update(genome, factor) for factor in SCALES]
    score = score_adapters(base, candidates, rows, IrpoConfig(), ensemble=[])
    best = max(range(len(SCALES)), key=lambda i: score.accuracy[i])
    path = save_genome(candidates[best], folder / f"x{SCALES[best]:g}", overwrite=True)
    spent = Compute(evaluated=score.tokens, runs=len(SCALES))
    return Outcome((path,), score.accuracy[best], spent, note=f"scale {SCALES[best]:g}")
