"""The search strategies on the toy task at equal forward passes: base model, ``cmaes`` from scratch,
``compose`` over seed adapters, gradient-free genetic evolution, and (for reference) iterated IRPO.

The three searches evaluate the same number of genomes (population x generations) with the same
evaluation settings, so they spend the same forward passes; IRPO and the seed adapters' training are
counted separately. A forward pass here is one sequence: one generated answer (greedy or sampled) or one
scored sequence (a pair's chosen or rejected answer, under the policy or the reference model); the counts
are read back from every genome's ``metrics.json``. Accuracy is greedy exact match on a test split that
no fitness evaluation saw.

    python benchmarks/strategies.py              # population 6, 3 generations (about half an hour)
    python benchmarks/strategies.py --small      # population 4, 2 generations
    python benchmarks/strategies.py --quick      # population 2, 2 generations (smoke test)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nora.toy.data import read_jsonl, write_dataset, write_jsonl
from nora.toy.model import build_toy_model

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
RANK = 4
SEED_ADAPTERS = 2


@dataclass(frozen=True)
class Budget:
    """Sizes of one comparison."""

    population: int
    generations: int
    dimension: int
    eval_prompts: int
    test_prompts: int
    irpo_steps: int


FULL = Budget(population=6, generations=3, dimension=100, eval_prompts=40, test_prompts=150, irpo_steps=30)
SMALL = Budget(population=4, generations=2, dimension=32, eval_prompts=16, test_prompts=60, irpo_steps=10)
QUICK = Budget(population=2, generations=2, dimension=8, eval_prompts=8, test_prompts=8, irpo_steps=2)


@dataclass(frozen=True)
class Setup:
    """The files of the comparison."""

    model: Path
    train: Path
    eval: Path
    test: Path
    work: Path


def _nora(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "nora", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"nora {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def _training(budget: Budget, method: str, steps: int = 1) -> dict[str, Any]:
    """Evaluation settings shared by every genome; IRPO settings of benchmarks/quality.py."""
    return {
        "method": method,
        "samplesPerPrompt": 2 if method == "none" else 8,
        "pairsPerPrompt": 1 if method == "none" else 4,
        "maxSteps": steps,
        "batchSize": 4,
        "maxPrompts": 32,
        "maxNewTokens": 96,
        "evalPrompts": budget.eval_prompts,
        "learningRate": 1e-4,
        "nllWeight": 4.0,
    }


def forward_passes(metrics: dict[str, Any]) -> int:
    """Sequence passes of one genome: greedy answers, samples, and scored pair sequences (x2 models)."""
    training, samples = metrics["training"], int(metrics["training"]["samples_per_prompt"])
    count = int(metrics["eval_prompts"]) + int(metrics["heldout_pairs"]["prompts"]) * samples
    count += 4 * int(metrics["heldout"]["pairs"])
    if not training.get("skipped"):
        count += int(metrics["pairs"]["prompts"]) * samples + 4 * int(training["steps"]) * int(
            training["batch_size"]
        )
    return count


def _train(
    setup: Setup, name: str, adapter: Path | None, training: dict[str, Any], split: Path, seed: int
) -> Path:
    """One ``nora train`` run into ``work/<name>``; the folder."""
    folder = setup.work / name
    task = {
        "population": "strategies",
        "generation": seed % 7,
        "genome": name,
        "seed": seed,
        "baseModel": {"uri": setup.model.as_uri()},
        "dataset": {"train": setup.train.as_uri(), "eval": split.as_uri()},
        "adapter": {
            "uri": adapter.as_uri() if adapter else None,
            "rank": RANK,
            "alpha": 2.0 * RANK,
            "targetModules": TARGETS,
        },
        "training": training,
        "output": folder.as_uri(),
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "genome.json").write_text(json.dumps(task))
    _nora("train", "--genome", str(folder / "genome.json"))
    return folder


def test_accuracy(setup: Setup, budget: Budget, adapter: Path | None, name: str) -> float:
    training = {**_training(budget, "none"), "evalPrompts": budget.test_prompts}
    folder = _train(setup, f"test-{name}", adapter, training, setup.test, 0)
    return float(json.loads((folder / "metrics.json").read_text())["accuracy"])


def search(
    setup: Setup, budget: Budget, name: str, strategy: dict[str, Any], seeds: list[Path]
) -> tuple[Path, int]:
    """``nora run`` of one strategy; the best adapter and the forward passes of all its genomes."""
    spec = {
        "baseModel": {"uri": setup.model.as_uri()},
        "dataset": {"train": setup.train.as_uri(), "eval": setup.eval.as_uri()},
        "populationSize": budget.population,
        "maxGenerations": budget.generations,
        "seed": 1,
        "selection": {"method": "tournament", "survivors": 2, "elites": 1, "tournamentSize": 2},
        "crossover": {"method": "linear"},
        "mutation": {"sigma": 0.002, "rankGrowProbability": 0.0, "rankShrinkProbability": 0.0},
        "adapter": {"initialRank": RANK, "alpha": 2 * RANK, "targetModules": TARGETS},
        "strategy": strategy,
        "seedAdapters": [{"uri": s.as_uri()} for s in seeds],
        "training": _training(budget, "none"),
        "parallelism": 2,
    }
    document = {
        "apiVersion": "nora.dev/v1alpha1",
        "kind": "Population",
        "metadata": {"name": name},
        "spec": spec,
    }
    manifest = setup.work / f"{name}.yaml"
    manifest.write_text(yaml.safe_dump(document))
    run_dir = setup.work / name
    _nora("run", str(manifest), "--dir", str(run_dir))
    passes = sum(
        forward_passes(json.loads(p.read_text())) for p in (run_dir / "store").rglob("output/metrics.json")
    )
    print(f"{name}: {passes} forward passes", flush=True)
    return run_dir / "best", passes


def irpo(setup: Setup, budget: Budget, name: str, seed: int, iterations: int) -> tuple[Path, int]:
    """Iterated IRPO on one fresh adapter; its last adapter and forward passes."""
    adapter: Path | None = None
    passes = 0
    for iteration in range(iterations):
        training = _training(budget, "irpo", budget.irpo_steps)
        folder = _train(setup, f"{name}-{iteration}", adapter, training, setup.eval, seed * 10 + iteration)
        passes += forward_passes(json.loads((folder / "metrics.json").read_text()))
        adapter = folder / "adapter"
    assert adapter is not None
    print(f"{name}: {passes} forward passes", flush=True)
    return adapter, passes


def _setup(budget: Budget, work: Path) -> Setup:
    shutil.rmtree(work, ignore_errors=True)
    train, evaluation = write_dataset(work / "data", seed=0, n_eval=budget.eval_prompts)
    _, other = write_dataset(work / "other", seed=1000, n_eval=budget.test_prompts * 2)
    seen = {row["question"] for row in read_jsonl(evaluation)}
    test = work / "data" / "test.jsonl"
    write_jsonl(
        test, [row for row in read_jsonl(other) if row["question"] not in seen][: budget.test_prompts]
    )
    return Setup(build_toy_model(work / "model"), train, evaluation, test, work)


Row = tuple[str, float, int, str]


def _row(setup: Setup, budget: Budget, method: str, adapter: Path | None, passes: int, note: str) -> Row:
    """One table row, printed as soon as it is measured (a long run shows its progress)."""
    row = (method, test_accuracy(setup, budget, adapter, method.split(maxsplit=1)[0]), passes, note)
    print(f"row: {row}", flush=True)
    return row


def compare(budget: Budget, work: Path) -> list[Row]:
    """Rows ``(method, test accuracy, forward passes, note)``, cheapest first."""
    setup = _setup(budget, work)
    rows = [_row(setup, budget, "base model", None, 0, "")]
    cmaes = {"method": "cmaes", "dimension": budget.dimension}
    rows.append(_row(setup, budget, "cmaes from scratch", *search(setup, budget, "cmaes", cmaes, []), ""))
    irpo_best, irpo_passes = irpo(setup, budget, "irpo", 9, budget.generations)
    note = f"{budget.generations} iterations of {budget.irpo_steps} DPO steps"
    rows.append(_row(setup, budget, "IRPO (reference)", irpo_best, irpo_passes, note))
    trained = [irpo(setup, budget, f"seed-adapter{i}", i + 1, 1) for i in range(SEED_ADAPTERS)]
    seeds = [adapter for adapter, _ in trained]
    note = f"+{sum(passes for _, passes in trained)} to train {SEED_ADAPTERS} seed adapters"
    compose = search(setup, budget, "compose", {"method": "compose"}, seeds)
    rows.append(_row(setup, budget, "compose over seed adapters", *compose, note))
    genetic = search(setup, budget, "genetic", {"method": "genetic"}, [])
    rows.append(_row(setup, budget, "gradient-free genetic", *genetic, "linear crossover"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--small", action="store_true", help="population 4 x 2 generations (a busy machine)")
    parser.add_argument("--work", type=Path, default=Path("runs/strategies"))
    args = parser.parse_args()
    budget = QUICK if args.quick else SMALL if args.small else FULL
    rows = compare(budget, args.work.resolve())
    print(
        f"\npopulation {budget.population} x {budget.generations} generations, "
        f"{budget.test_prompts} test prompts"
    )
    print(f"| {'method':<28} | {'test accuracy':>13} | {'forward passes':>14} | note |")
    print(f"|{'-' * 30}|{'-' * 15}|{'-' * 16}|------|")
    for method, accuracy, passes, note in rows:
        print(f"| {method:<28} | {accuracy:>13.3f} | {passes:>14} | {note} |")


if __name__ == "__main__":
    main()
