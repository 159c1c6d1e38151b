"""Trainer benchmark: one toy genome's phase times and token rates, then 3 IRPO iterations from the toy base.

Part 1 trains one genome at the target budget (64 prompts x 8 samples, 200 DPO steps, 200 eval prompts)
and prints the time and tokens/s of every phase (target: within 90 s on 2 CPU cores). Part 2 runs, for
each of 3 seeds, the base model's greedy accuracy (``method: none`` on a fresh adapter, whose B = 0 makes
it the base) and then 3 successive IRPO iterations, each starting from (and using as its DPO reference)
the previous iteration's adapter and training on its own 64 prompts, and prints the eval accuracy per
iteration as mean and spread (population std) over the seeds (target: +10 points over the base).
Everything goes through genome.json files and :func:`nora.trainer.pipeline.run_job`, in this process.

Settings (see :class:`Budget`; flags override them): LoRA rank 8 / alpha 16 on q,k,v,o; 4 pairs per
prompt; temperature 1; beta 0.1; learning rate 1e-4; NLL weight 4 (with TRL's per-token-mean NLL a weight
near 1 lets the token-summed DPO term dominate and accuracy fell in our sweeps); 96 new tokens.

    python benchmarks/trainer.py                 # both parts (about 4 minutes on 2 cores)
    python benchmarks/trainer.py --quick         # tiny budgets, one seed (seconds; a smoke test)

The host's load average is printed with the results: on a shared machine the times are upper bounds.
Torch runs with ``--threads`` threads (default 1: on 2 shared cores two threads contend badly).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nora.toy.data import write_dataset
from nora.toy.model import build_toy_model
from nora.trainer.entrypoint import configure_runtime, load_job
from nora.trainer.pipeline import RunResult, run_job


@dataclass(frozen=True)
class Budget:
    """The training settings of every genome in the benchmark (genome.json ``training`` fields)."""

    prompts: int = 64
    samples: int = 8
    pairs: int = 4
    steps: int = 200
    batch_size: int = 4
    eval_prompts: int = 200
    max_new_tokens: int = 96
    learning_rate: float = 1e-4
    beta: float = 0.1
    nll_weight: float = 4.0
    temperature: float = 1.0
    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")

    def adapter(self, uri: str | None) -> dict[str, Any]:
        return {"uri": uri, "rank": self.rank, "alpha": self.alpha, "targetModules": list(self.targets)}

    def training(self, method: str) -> dict[str, Any]:
        return {
            "method": method,
            "temperature": self.temperature,
            "samplesPerPrompt": self.samples,
            "pairsPerPrompt": self.pairs,
            "maxSteps": self.steps,
            "batchSize": self.batch_size,
            "maxPrompts": self.prompts,
            "maxNewTokens": self.max_new_tokens,
            "evalPrompts": self.eval_prompts,
            "learningRate": self.learning_rate,
            "beta": self.beta,
            "nllWeight": self.nll_weight,
        }


QUICK = Budget(prompts=8, samples=4, pairs=2, steps=4, eval_prompts=16)


def write_task(
    root: Path,
    name: str,
    seed: int,
    model: Path,
    data: tuple[Path, Path],
    adapter: dict[str, Any],
    training: dict[str, Any],
) -> Path:
    """Write a genome.json for one run and return its path."""
    task = {
        "population": "bench",
        "generation": 0,
        "genome": name,
        "seed": seed,
        "baseModel": {"uri": model.as_uri()},
        "dataset": {"train": data[0].as_uri(), "eval": data[1].as_uri()},
        "adapter": adapter,
        "training": training,
        "output": (root / name).as_uri(),
    }
    path = root / f"{name}.json"
    path.write_text(json.dumps(task, indent=2) + "\n", encoding="utf-8")
    return path


def run(path: Path) -> RunResult:
    return run_job(load_job(str(path)))


def phase_report(result: RunResult) -> None:
    """Print part 1: time and tokens/s per phase."""
    metrics = result.metrics
    durations, rates = metrics["durations"], metrics["tokens_per_s"]
    pairs, training = metrics["pairs"], metrics["training"]
    print("\n== one toy genome ==")
    print(f"{'phase':<12}{'seconds':>10}{'tokens/s':>12}")
    for phase in ("load", "sampling", "training", "evaluation", "write"):
        rate = rates.get(phase)
        print(f"{phase:<12}{durations.get(phase, 0.0):>10.2f}{'' if rate is None else f'{rate:>12.0f}'}")
    print(f"{'total':<12}{durations['total']:>10.2f}")
    print(
        f"pairs {pairs['pairs']} from {pairs['prompts_with_pairs']}/{pairs['prompts']} prompts "
        f"(sample accuracy {pairs['sample_accuracy']:.3f}); DPO steps {training['steps']}, "
        f"loss {training['loss_first']:.4f} -> {training['loss_last']:.4f}; "
        f"eval accuracy {metrics['accuracy']:.3f}, held-out IRPO loss {metrics['irpo_loss']}"
    )


def train_slice(data: tuple[Path, Path], start: int, count: int, root: Path) -> tuple[Path, Path]:
    """``data`` with its train file cut to rows ``[start, start + count)`` (a new file under ``root``)."""
    lines = data[0].read_text(encoding="utf-8").splitlines()[start : start + count]
    path = root / f"train-{start}-{count}.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path, data[1]


def iterations(
    root: Path, model: Path, data: tuple[Path, Path], budget: Budget, seed: int, rounds: int, fresh: bool
) -> list[float]:
    """Base accuracy, then the accuracy after each of ``rounds`` IRPO iterations, for one seed.

    With ``fresh``, iteration ``i`` of seed ``s`` trains on its own slice of the train file (prompts never
    seen by an earlier iteration); otherwise every iteration uses the first ``budget.prompts`` rows.
    """
    fresh_adapter = budget.adapter(None)
    base = run(write_task(root, f"s{seed}-base", seed, model, data, fresh_adapter, budget.training("none")))
    accuracies, adapter = [base.metrics["accuracy"]], None
    for index in range(1, rounds + 1):
        name = f"s{seed}-it{index}"
        start = ((seed - 1) * rounds + index - 1) * budget.prompts if fresh else 0
        files = train_slice(data, start, budget.prompts, root)
        result = run(
            write_task(
                root,
                name,
                seed * 1000 + index,
                model,
                files,
                budget.adapter(adapter),
                budget.training("irpo"),
            )
        )
        accuracies.append(result.metrics["accuracy"])
        adapter = result.adapter_uri
        print(
            f"  seed {seed} iteration {index}: accuracy {result.metrics['accuracy']:.3f} "
            f"({result.metrics['durations']['total']:.0f}s)",
            flush=True,
        )
    return accuracies


def accuracy_table(table: dict[int, list[float]], eval_prompts: int) -> dict[str, Any]:
    """Print part 2 and return it as a dict."""
    seeds = sorted(table)
    rows = len(next(iter(table.values())))
    print(f"\n== eval accuracy over IRPO iterations ({eval_prompts} eval prompts) ==")
    print(
        f"{'iteration':<10}" + "".join(f"{'seed ' + str(s):>10}" for s in seeds) + f"{'mean':>9}{'spread':>9}"
    )
    summary: dict[str, Any] = {}
    for index in range(rows):
        values = [table[seed][index] for seed in seeds]
        mean = statistics.fmean(values)
        spread = statistics.pstdev(values) if len(values) > 1 else 0.0
        label = "base" if index == 0 else str(index)
        print(f"{label:<10}" + "".join(f"{v:>10.3f}" for v in values) + f"{mean:>9.3f}{spread:>9.3f}")
        summary[label] = {"values": values, "mean": mean, "std": spread}
    gain = summary[str(rows - 1)]["mean"] - summary["base"]["mean"]
    print(f"gain after {rows - 1} iterations: {100 * gain:+.1f} points (mean over {len(seeds)} seeds)")
    summary["gain_points"] = 100 * gain
    return summary


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny budgets and one seed (smoke test)")
    parser.add_argument("--seeds", type=int, nargs="*", default=None, help="seeds of part 2 (default 1 2 3)")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--skip-single", action="store_true", help="skip part 1")
    parser.add_argument(
        "--same-prompts",
        action="store_true",
        help="every iteration trains on the same first prompts (default: fresh prompts per iteration)",
    )
    for flag, kind in (
        ("--learning-rate", float),
        ("--beta", float),
        ("--pairs", int),
        ("--nll-weight", float),
        ("--steps", int),
        ("--temperature", float),
        ("--rank", int),
    ):
        parser.add_argument(flag, type=kind, default=None, help="override the Budget field")
    parser.add_argument("--targets", nargs="+", default=None, help="LoRA target modules")
    parser.add_argument("--model", type=Path, default=None, help="a model folder instead of the toy model")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default $NORA_NUM_THREADS or 1)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser.parse_args()


def budget_of(args: argparse.Namespace) -> Budget:
    """The benchmark's :class:`Budget` with the command line's overrides."""
    budget = QUICK if args.quick else Budget()
    overrides = {
        "learning_rate": args.learning_rate,
        "beta": args.beta,
        "pairs": args.pairs,
        "nll_weight": args.nll_weight,
        "steps": args.steps,
        "temperature": args.temperature,
        "rank": args.rank,
        "targets": tuple(args.targets) if args.targets else None,
    }
    return Budget(**{**budget.__dict__, **{k: v for k, v in overrides.items() if v is not None}})


def single_genome(root: Path, model: Path, data: tuple[Path, Path], budget: Budget) -> dict[str, Any]:
    """Part 1: one genome at the target budget; its durations and token rates."""
    started = time.monotonic()
    single = run(write_task(root, "single", 7, model, data, budget.adapter(None), budget.training("irpo")))
    phase_report(single)
    print(f"wall time including model load: {time.monotonic() - started:.1f}s")
    return {"durations": single.metrics["durations"], "tokens_per_s": single.metrics["tokens_per_s"]}


def main() -> None:
    args = parse_args()
    os.environ["NORA_NUM_THREADS"] = str(args.threads or os.environ.get("NORA_NUM_THREADS") or 1)
    configure_runtime()
    budget = budget_of(args)
    seeds = args.seeds if args.seeds is not None else ([1] if args.quick else [1, 2, 3])
    load_before = os.getloadavg()
    results: dict[str, Any] = {"budget": budget.__dict__, "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory(prefix="nora-bench-trainer-") as folder:
        root = Path(folder)
        model = args.model.resolve() if args.model else build_toy_model(root / "toy")
        pool = budget.prompts * (1 if args.same_prompts else max(1, args.iterations) * max(seeds, default=1))
        data = write_dataset(root / "data", seed=0, n_train=pool, n_eval=budget.eval_prompts)
        if not args.skip_single:
            results["single"] = single_genome(root, model, data, budget)
        if args.iterations > 0 and seeds:
            fresh = not args.same_prompts
            table = {
                seed: iterations(root, model, data, budget, seed, args.iterations, fresh) for seed in seeds
            }
            results["iterations"] = accuracy_table(table, budget.eval_prompts)
    load_after = os.getloadavg()
    print(
        f"\nload average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min) "
        f"on {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads"
    )
    results["load_average"] = {"before": load_before, "after": load_after}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
