"""Quality on the toy task at equal training steps: base model, single-adapter IRPO, NoRA evolution, and
gradient-free evolution (``training.method: none``), over several seeds, as a table and a plot.

Fitness during evolution is eval accuracy; the numbers reported here are greedy accuracy on a separate
*test* split (eval rows of another data seed, minus any row in the fitness eval set), so picking the
best genome on the eval set does not flatter it. Single-adapter IRPO gets the same number of DPO steps
as the whole NoRA population used, spread over as many IRPO iterations as NoRA has generations.

    python benchmarks/quality.py                 # 3 seeds, population 4, 3 generations (tens of minutes)
    python benchmarks/quality.py --quick         # one seed, tiny budgets (smoke test)

Each seed's folder under ``--work`` is deleted and rebuilt first, so a rerun never reuses old results.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nora.toy.data import read_jsonl, write_dataset, write_jsonl
from nora.toy.model import build_toy_model


@dataclass(frozen=True)
class Budget:
    """Sizes of one comparison."""

    population: int
    generations: int
    steps: int
    prompts: int
    eval_prompts: int
    test_prompts: int
    samples: int


FULL = Budget(
    population=4, generations=3, steps=60, prompts=32, eval_prompts=100, test_prompts=200, samples=8
)
RANK = 8
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
QUICK = Budget(population=2, generations=2, steps=3, prompts=4, eval_prompts=8, test_prompts=8, samples=4)


def _nora(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "nora", *args], capture_output=True, text=True, check=False, timeout=7200
    )
    if result.returncode != 0:
        raise RuntimeError(f"nora {' '.join(args)} failed ({result.returncode}): {result.stderr[-2000:]}")
    return result.stdout


def _training(budget: Budget, steps: int, method: str = "irpo") -> dict[str, Any]:
    """The trainer settings of benchmarks/trainer.py (the ones that raised accuracy in its sweeps)."""
    return {
        "method": method,
        "samplesPerPrompt": budget.samples,
        "pairsPerPrompt": 4,
        "maxSteps": steps,
        "batchSize": 4,
        "maxPrompts": budget.prompts,
        "maxNewTokens": 96,
        "evalPrompts": budget.eval_prompts,
        "learningRate": 1e-4,
        "beta": 0.1,
        "nllWeight": 4.0,
    }


def _task(
    model: Path,
    train: Path,
    evaluation: Path,
    adapter: Path | None,
    training: dict[str, Any],
    out: Path,
    seed: int,
    generation: int = 0,
) -> dict[str, Any]:
    return {
        "population": "quality",
        "generation": generation,
        "genome": out.name,
        "seed": seed,
        "baseModel": {"uri": model.as_uri()},
        "dataset": {"train": train.as_uri(), "eval": evaluation.as_uri()},
        "adapter": {
            "uri": adapter.as_uri() if adapter else None,
            "rank": RANK,
            "alpha": 2.0 * RANK,
            "targetModules": TARGETS,
        },
        "training": training,
        "output": out.as_uri(),
    }


def _train(task: dict[str, Any], folder: Path) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "genome.json").write_text(json.dumps(task))
    summary: dict[str, Any] = json.loads(
        _nora("train", "--genome", str(folder / "genome.json")).strip().splitlines()[-1]
    )
    return summary


@dataclass(frozen=True)
class Setup:
    """The files of one seed."""

    seed: int
    model: Path
    train: Path
    eval: Path
    test: Path
    work: Path


def _setup(seed: int, budget: Budget, work: Path) -> Setup:
    """A fresh work folder for one seed: a leftover ``nora run`` folder would resume an old run."""
    shutil.rmtree(work, ignore_errors=True)
    train, evaluation = write_dataset(work / "data", seed=seed, n_eval=budget.eval_prompts)
    _, other = write_dataset(work / "other", seed=seed + 1000, n_eval=budget.test_prompts * 2)
    seen = {row["question"] for row in read_jsonl(evaluation)}
    test = work / "data" / "test.jsonl"
    write_jsonl(
        test, [row for row in read_jsonl(other) if row["question"] not in seen][: budget.test_prompts]
    )
    return Setup(seed, build_toy_model(work / "model"), train, evaluation, test, work)


def accuracy_on_test(setup: Setup, budget: Budget, adapter: Path | None, name: str) -> float:
    """Greedy accuracy of base + ``adapter`` on the test split."""
    training = {**_training(budget, 1, "none"), "evalPrompts": budget.test_prompts}
    task = _task(
        setup.model, setup.train, setup.test, adapter, training, setup.work / f"test-{name}", setup.seed
    )
    return float(_train(task, setup.work / f"test-{name}")["accuracy"])


def evolve(setup: Setup, budget: Budget, method: str) -> tuple[Path, int]:
    """Run ``nora run`` on a toy Population; returns the best adapter and the DPO steps used."""
    name = f"evo-{method}"
    spec = {
        "baseModel": {"uri": setup.model.as_uri()},
        "dataset": {"train": setup.train.as_uri(), "eval": setup.eval.as_uri()},
        "populationSize": budget.population,
        "maxGenerations": budget.generations,
        "seed": setup.seed,
        "selection": {"method": "tournament", "survivors": 2, "elites": 1, "tournamentSize": 2},
        "crossover": {"method": "nora", "temperature": 0.1},
        "mutation": {
            "sigma": 0.001,
            "rankGrowProbability": 0.2,
            "rankShrinkProbability": 0.1,
            "maxRank": 16,
            "hyperparameters": {"learningRate": [5e-5, 5e-4]},
        },
        "adapter": {"initialRank": RANK, "alpha": 2 * RANK, "targetModules": TARGETS},
        "training": _training(budget, budget.steps, method),
        "parallelism": 2,
    }
    manifest = setup.work / f"{name}.yaml"
    document = {
        "apiVersion": "nora.dev/v1alpha1",
        "kind": "Population",
        "metadata": {"name": name},
        "spec": spec,
    }
    manifest.write_text(yaml.safe_dump(document))
    run_dir = setup.work / name
    _nora("run", str(manifest), "--dir", str(run_dir))
    metrics = (run_dir / "store").rglob("output/metrics.json")
    steps = sum(int(json.loads(path.read_text())["training"].get("steps", 0)) for path in metrics)
    return run_dir / "best", steps


def single_irpo(setup: Setup, budget: Budget, total_steps: int) -> Path:
    """Iterated IRPO on one adapter: ``generations`` iterations sharing ``total_steps`` DPO steps."""
    adapter: Path | None = None
    per_iteration = max(1, round(total_steps / budget.generations))
    for iteration in range(budget.generations):
        folder = setup.work / f"irpo-{iteration}"
        task = _task(
            setup.model,
            setup.train,
            setup.eval,
            adapter,
            _training(budget, per_iteration),
            folder,
            setup.seed + iteration,
            generation=iteration,  # the prompt window NoRA's generation of that number trains on
        )
        _train(task, folder)
        adapter = folder / "adapter"
    assert adapter is not None
    return adapter


def compare(seed: int, budget: Budget, work: Path) -> dict[str, float]:
    """Test accuracy of the four methods for one seed."""
    setup = _setup(seed, budget, work / f"seed{seed}")
    nora_best, nora_steps = evolve(setup, budget, "irpo")
    free_best, _ = evolve(setup, budget, "none")
    irpo_final = single_irpo(setup, budget, nora_steps)
    results = {
        "base model": accuracy_on_test(setup, budget, None, "base"),
        "single-adapter IRPO": accuracy_on_test(setup, budget, irpo_final, "irpo"),
        "NoRA evolution": accuracy_on_test(setup, budget, nora_best, "nora"),
        "gradient-free evolution": accuracy_on_test(setup, budget, free_best, "free"),
    }
    print(f"seed {seed}: {json.dumps(results)} (DPO steps per method: {nora_steps})", flush=True)
    return results


def _plot(table: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(table)
    means = [statistics.mean(v) for v in table.values()]
    spreads = [statistics.pstdev(v) for v in table.values()]
    figure, axes = plt.subplots(figsize=(7, 4), dpi=100)
    axes.bar(names, means, yerr=spreads, capsize=4)
    axes.set_ylabel("test accuracy")
    axes.set_title("toy task, equal DPO steps")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=Path("runs/quality"))
    args = parser.parse_args()
    args.work = args.work.resolve()
    budget = QUICK if args.quick else FULL
    seeds = args.seeds[:1] if args.quick else args.seeds
    table: dict[str, list[float]] = {}
    for seed in seeds:
        for name, accuracy in compare(seed, budget, args.work).items():
            table.setdefault(name, []).append(accuracy)
    print(f"\n| {'method':<24} | {'test accuracy (mean)':>20} | {'spread (std)':>12} | per seed |")
    print(f"|{'-' * 26}|{'-' * 22}|{'-' * 14}|----------|")
    for name, values in table.items():
        per_seed = ", ".join(f"{v:.3f}" for v in values)
        mean, spread = statistics.mean(values), statistics.pstdev(values)
        print(f"| {name:<24} | {mean:>20.3f} | {spread:>12.3f} | {per_seed} |")
    args.work.mkdir(parents=True, exist_ok=True)
    _plot(table, args.work / "quality.png")
    print(f"plot: {args.work / 'quality.png'}")


if __name__ == "__main__":
    main()
