"""Do offspring beat their parents? Read from the ledgers of ``benchmarks/quality.py``'s finished runs.

For every bred, trained genome of every run (seed x method) under ``--work``: its fitness minus its best
parent's, and whether it beat that parent. Per method, also the spread of fitness among the trained
genomes of a bred generation next to the sampling error of one fitness (binomial, on the run's eval
rows): when the spread is no larger than that error, selection ranks genomes by the luck of the draw.

    python benchmarks/offspring.py --work runs/quality      # after (part of) python benchmarks/quality.py
"""

from __future__ import annotations

import argparse
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from nora.evolution.ledger import GenerationRecord


@dataclass(frozen=True)
class Child:
    """One bred genome that was trained: its fitness and its best parent's."""

    fitness: float
    best_parent: float


def generations(run: Path) -> list[GenerationRecord]:
    """The run's generation records, in order."""
    paths = sorted(run.glob("store/**/g*/generation.json"), key=lambda p: int(p.parent.name[1:]))
    return [GenerationRecord.model_validate_json(path.read_text()) for path in paths]


def children(records: list[GenerationRecord]) -> list[Child]:
    """Trained genomes with parents, each with its best parent's fitness."""
    fitness = {r.id: r.fitness for record in records for r in record.results if r.fitness is not None}
    found = []
    for record in records:
        for plan in record.plans:
            parents = [fitness[p] for p in plan.parents if p in fitness]
            if plan.train and parents and fitness.get(plan.id) is not None:
                found.append(Child(fitness[plan.id], max(parents)))
    return found


def spread(records: list[GenerationRecord]) -> tuple[list[float], list[float]]:
    """Per bred generation (1 on) with two or more trained genomes: the SD of their fitness and one
    fitness's SE."""
    spreads, errors = [], []
    for record in records[1:]:
        trained = {p.id for p in record.plans if p.train}
        results = [r for r in record.results if r.id in trained and r.fitness is not None]
        if len(results) < 2:
            continue
        rows = statistics.mean(float(r.metrics.get("eval_prompts", 0.0)) for r in results)
        mean = statistics.mean(r.fitness for r in results if r.fitness is not None)
        spreads.append(statistics.stdev(r.fitness for r in results if r.fitness is not None))
        errors.append(math.sqrt(mean * (1 - mean) / rows) if rows else float("nan"))
    return spreads, errors


def print_table(work: Path) -> None:
    """One row per method, pooled over the seeds found under ``work`` (no spread where every bred
    generation trains a single child)."""
    methods: dict[str, list[Path]] = {}
    for run in sorted(work.glob("seed*/*/store")):
        methods.setdefault(run.parent.name, []).append(run.parent)
    print("| method | seeds | bred children | beat best parent | child - best parent | fitness SD | one SE |")
    print("|---|---|---|---|---|---|---|")
    for method, runs in methods.items():
        records = [generations(run) for run in runs]
        kids = [child for record in records for child in children(record)]
        pairs = [spread(record) for record in records]
        sds = [sd for sds, _ in pairs for sd in sds]
        ses = [se for _, ses in pairs for se in ses]
        if not kids:
            continue
        beat = sum(child.fitness > child.best_parent for child in kids) / len(kids)
        gap = statistics.mean(child.fitness - child.best_parent for child in kids)
        row = [method, str(len(runs)), str(len(kids)), f"{beat:.0%}", f"{gap:+.3f}"]
        row += [f"{statistics.mean(sds):.3f}", f"{statistics.mean(ses):.3f}"] if sds else ["-", "-"]
        print("| " + " | ".join(row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("runs/quality"))
    args = parser.parse_args()
    print_table(args.work.resolve() / "full")


if __name__ == "__main__":
    main()
