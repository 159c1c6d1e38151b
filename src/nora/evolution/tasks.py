"""Turn a genome's plan into the trainer's ``genome.json`` (a :class:`GenomeTask`)."""

from __future__ import annotations

from collections.abc import Callable

from nora.api.population import PopulationSpec
from nora.api.task import AdapterSource, GenomeTask
from nora.evolution.layout import output_key
from nora.evolution.records import GenomePlan


def genome_task(
    spec: PopulationSpec,
    population: str,
    plan: GenomePlan,
    key_uri: Callable[[str], str],
    resolve: Callable[[str], str] = lambda uri: uri,
) -> GenomeTask:
    """The task of a genome that trains.

    Args:
        spec: the population's spec.
        population: its name.
        plan: the genome (not an elite).
        key_uri: turns a store key into a URI the trainer can open (``file://`` or ``s3://``).
        resolve: rewrites user URIs (base model, data, seed adapters), e.g. ``toy://`` to ``file://``.
    """
    adapter = spec.adapter
    if plan.adapter is None:
        start = None
    elif plan.origin == "seed":
        start = resolve(plan.adapter)
    else:
        start = key_uri(plan.adapter)
    return GenomeTask(
        population=population,
        generation=plan.generation,
        genome=plan.id,
        seed=plan.seed,
        base_model=spec.base_model.model_copy(update={"uri": resolve(spec.base_model.uri)}),
        # the test split never reaches a trainer: fitness must not see it
        dataset=spec.dataset.model_copy(
            update={"train": resolve(spec.dataset.train), "eval": resolve(spec.dataset.eval), "test": None}
        ),
        adapter=AdapterSource(
            uri=start,
            rank=adapter.initial_rank,
            alpha=adapter.alpha,
            dropout=adapter.dropout,
            target_modules=list(adapter.target_modules),
        ),
        # an elite that trains is only re-scored: its adapter is kept as it is
        training=spec.training.model_copy(update={"method": "none"})
        if plan.origin == "elite"
        else spec.training,
        fitness=spec.fitness,
        hyperparameters=dict(plan.hyperparameters),
        output=key_uri(output_key(spec.storage.prefix, population, plan.generation, plan.id)),
        train_window=train_window(spec, plan),
    )


def train_window(spec: PopulationSpec, plan: GenomePlan) -> int | None:
    """The genome's own train window with ``training.promptWindows: genome``; else ``None``, which the
    trainer reads as its generation's window (and keeps ``genome.json`` as it was before the field)."""
    if spec.training.prompt_windows == "genome":
        return plan.generation * spec.population_size + plan.index
    return None
