"""The store key layout shared by the local driver, the operator and the trainer.

On a cluster the first segment below is ``<prefix>/<namespace>`` (:func:`namespaced_prefix`), so two
tenants' Populations of the same name never share keys; ``nora run`` uses ``<prefix>`` alone.

```
<prefix>/<population>/population.json               the run's record (phase, history, best)
<prefix>/<population>/g<N>/generation.json          generation N's plans and results
<prefix>/<population>/g<N>/<genome>/genome.json    the trainer's task
<prefix>/<population>/g<N>/<genome>/start/         a bred offspring's starting adapter
<prefix>/<population>/g<N>/<genome>/output/        the trainer's adapter/, metrics.json, samples.jsonl
<prefix>/<population>/best/                        the exported best adapter and best.json
<prefix>/<population>/test/g<N>/                   the test-split scoring after generation N: task.json
                                                    (nora test-score's input) and test.json (its scores)
```
"""

from __future__ import annotations


def genome_id(population: str, generation: int, index: int) -> str:
    """``<population>-g<generation>-<index>``: also the genome's Job name on a cluster."""
    return f"{population}-g{generation}-{index}"


def job_name(genome: str, retrains: int = 0) -> str:
    """A genome's Job on a cluster: ``<genome>``, or ``<genome>-r<k>`` for its ``k``-th re-training."""
    return f"{genome}-r{retrains}" if retrains else genome


def namespaced_prefix(prefix: str, namespace: str) -> str:
    """``<prefix>/<namespace>``: the prefix the operator uses for every Population of ``namespace``."""
    return "/".join(part for part in (prefix.strip("/"), namespace) if part)


def population_key(prefix: str, population: str) -> str:
    """The folder of everything one Population keeps in its store."""
    return "/".join(part for part in (prefix.strip("/"), population) if part)


def population_record_key(prefix: str, population: str) -> str:
    return f"{population_key(prefix, population)}/population.json"


def generation_record_key(prefix: str, population: str, generation: int) -> str:
    return f"{population_key(prefix, population)}/g{generation}/generation.json"


def genome_key(prefix: str, population: str, generation: int, genome: str) -> str:
    return f"{population_key(prefix, population)}/g{generation}/{genome}"


def task_key(prefix: str, population: str, generation: int, genome: str) -> str:
    return f"{genome_key(prefix, population, generation, genome)}/genome.json"


def start_adapter_key(prefix: str, population: str, generation: int, genome: str) -> str:
    return f"{genome_key(prefix, population, generation, genome)}/start"


def output_key(prefix: str, population: str, generation: int, genome: str) -> str:
    return f"{genome_key(prefix, population, generation, genome)}/output"


def trained_adapter_key(prefix: str, population: str, generation: int, genome: str) -> str:
    return f"{output_key(prefix, population, generation, genome)}/adapter"


def best_key(prefix: str, population: str) -> str:
    return f"{population_key(prefix, population)}/best"


def held_out_key(prefix: str, population: str, generation: int) -> str:
    """The folder of the test-split scoring of a run whose last generation is ``generation``."""
    return f"{population_key(prefix, population)}/test/g{generation}"


def adapter_owner(prefix: str, population: str, key: str) -> tuple[int, str] | None:
    """The generation and genome that trained the adapter at ``key`` (``None``: no genome's own output,
    e.g. a user's seed adapter)."""
    base = population_key(prefix, population)
    parts = key.removeprefix(f"{base}/").split("/") if key.startswith(f"{base}/") else []
    if len(parts) != 4 or parts[2:] != ["output", "adapter"] or not parts[0][1:].isdigit():
        return None
    generation, genome = int(parts[0][1:]), parts[1]
    return (
        (generation, genome) if key == trained_adapter_key(prefix, population, generation, genome) else None
    )
