"""Search strategies other than crossover and mutation: CMA-ES over a LoRA subspace (``cmaes``, C-LoRA)
and over mixtures of seed adapters (``compose``, LoraHub).

:mod:`~nora.evolution.strategies.plans` plans a generation for any ``spec.strategy.method``;
:mod:`~nora.evolution.strategies.search` rebuilds the CMA-ES optimiser by replaying its asks and tells;
:mod:`~nora.evolution.strategies.orders` are the store work a generation's genomes need before they run;
:mod:`~nora.evolution.strategies.points` is the point record a ``cmaes`` genome's trainer projects.
"""
