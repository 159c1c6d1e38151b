"""Mutation: perturb a genome's factors, change its ranks, and nudge its hyperparameter genes.

Per module, in this order (each decision draws from the generator whether or not it fires, so one
setting never shifts another's random stream):

1. gene noise: ``theta + N(0, sigma^2) * mask``, ``mask ~ Bernoulli(gene_probability)`` (GENOME); with
   ``relative_sigma`` the standard deviation is ``sigma`` times the factor's root-mean-square entry, so
   one setting perturbs every factor by the same share whatever its scale (a trained ``B`` is orders of
   magnitude smaller than ``A``; a fresh ``B`` is zero and stays zero);
2. component reset (NoRA "value mutation"): one random component gets a fresh ``A`` row and a zero
   ``B`` column, so it restarts from zero contribution;
3. rank shrink: drop the ``shrink_by`` components with the smallest ``||B[:, i]|| * ||A[i, :]||``;
4. rank grow: append ``grow_by`` components with a small random ``A`` row and a zero ``B`` column, so
   ``dW`` is unchanged and the new components are trainable. NoRA's paper appends zeros to both
   factors; then neither ever receives a gradient (``dL/dA_i`` is proportional to ``B[:, i]`` and
   ``dL/dB[:, i]`` to ``A_i``), so we deviate deliberately.

Rank changes keep the module's scale (``alpha`` moves with the rank), so only the dropped components
change the update. Then, with ``scale_sigma``, the whole genome's update is multiplied by one log-normal
factor ``exp(N(0, scale_sigma^2))`` (every module's ``B`` by the same factor): a magnitude gene. Merges
average updates and gene noise is isotropic, so without it no operator changes how far an adapter moves
from the base model; adapters trained for few steps point the right way but not far enough (see the README's
quality section). Hyperparameter genes are multiplied by 0.8 or 1.2, or resampled within bounds
(population-based training), and clipped to their bounds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from nora.genetics.errors import GeneticsError
from nora.genetics.factors import component_energy, gaussian_gene_noise
from nora.genetics.genome import Genome, LoraModule, alpha_for_scale

Bounds = tuple[float, float]


@dataclass(frozen=True)
class MutationSpec:
    """What mutation does to each module and gene.

    Attributes:
        sigma: standard deviation of gene noise (0 disables it), in the factor's own RMS units when
            ``relative_sigma``.
        gene_probability: chance that an entry receives noise.
        reset_probability: per module, chance of resetting one random component.
        grow_probability: per module, chance of growing the rank by ``grow_by``.
        shrink_probability: per module, chance of shrinking the rank by ``shrink_by``.
        grow_by: components added by one grow.
        shrink_by: components dropped by one shrink (never below rank 1).
        max_rank: grows stop here; ``None`` is unbounded.
        hyperparameter_probability: per gene, chance of a change.
        hyperparameter_bounds: gene name to ``(low, high)``; genes outside are clipped into them.
        relative_sigma: ``sigma`` in units of each factor's root-mean-square entry.
        scale_sigma: standard deviation of the log of the genome-wide update factor (0 disables it).
    """

    sigma: float = 0.0
    gene_probability: float = 1.0
    reset_probability: float = 0.0
    grow_probability: float = 0.0
    shrink_probability: float = 0.0
    grow_by: int = 1
    shrink_by: int = 1
    max_rank: int | None = None
    hyperparameter_probability: float = 0.0
    hyperparameter_bounds: Mapping[str, Bounds] = field(default_factory=dict)
    relative_sigma: bool = False
    scale_sigma: float = 0.0

    def __post_init__(self) -> None:
        for name in ("sigma", "scale_sigma"):
            if getattr(self, name) < 0:
                raise GeneticsError(f"{name}: must be >= 0, got {getattr(self, name)}")
        for name in (
            "gene_probability",
            "reset_probability",
            "grow_probability",
            "shrink_probability",
            "hyperparameter_probability",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise GeneticsError(f"{name}: must be a probability in [0, 1], got {value}")
        if self.grow_by < 1 or self.shrink_by < 1:
            raise GeneticsError(f"grow_by/shrink_by: must be at least 1, got {self.grow_by}/{self.shrink_by}")
        if self.max_rank is not None and self.max_rank < 1:
            raise GeneticsError(f"max_rank: must be at least 1, got {self.max_rank}")
        for name, (low, high) in self.hyperparameter_bounds.items():
            if not low <= high:
                raise GeneticsError(f"hyperparameter_bounds.{name}: low {low} exceeds high {high}")


def _coin(probability: float, generator: torch.Generator) -> bool:
    return float(torch.rand((), generator=generator)) < probability


def _with_rank_factors(module: LoraModule, a: torch.Tensor, b: torch.Tensor, use_rslora: bool) -> LoraModule:
    """New factors at a new rank with the module's scale kept."""
    return LoraModule(a=a, b=b, alpha=alpha_for_scale(module.scale(use_rslora), a.shape[0], use_rslora))


def fresh_a_rows(count: int, in_features: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` new ``A`` rows, Kaiming-uniform as PEFT initialises ``lora_A``."""
    bound = 1.0 / math.sqrt(in_features)
    return (torch.rand(count, in_features, generator=generator) * 2 - 1) * bound


def _rms(tensor: torch.Tensor) -> float:
    return float(tensor.float().pow(2).mean().sqrt()) if tensor.numel() else 0.0


def add_noise(
    module: LoraModule,
    sigma: float,
    gene_probability: float,
    generator: torch.Generator,
    relative: bool = False,
) -> LoraModule:
    """Gene noise on both factors (float32 result); ``relative`` scales ``sigma`` by each factor's RMS."""
    sigma_a = sigma * _rms(module.a) if relative else sigma
    sigma_b = sigma * _rms(module.b) if relative else sigma
    a = gaussian_gene_noise(module.a, sigma_a, gene_probability, generator)
    b = gaussian_gene_noise(module.b, sigma_b, gene_probability, generator)
    return LoraModule(a=a, b=b, alpha=module.alpha)


def reset_component(module: LoraModule, index: int, generator: torch.Generator) -> LoraModule:
    """Component ``index`` restarts: a fresh ``A`` row and a zero ``B`` column."""
    a, b = module.a.float().clone(), module.b.float().clone()
    a[index] = fresh_a_rows(1, module.in_features, generator)[0]
    b[:, index] = 0.0
    return LoraModule(a=a, b=b, alpha=module.alpha)


def grow_rank(module: LoraModule, count: int, generator: torch.Generator, use_rslora: bool) -> LoraModule:
    """Append ``count`` components (random ``A`` rows, zero ``B`` columns); ``dW`` is unchanged."""
    a = torch.cat([module.a.float(), fresh_a_rows(count, module.in_features, generator)], dim=0)
    b = torch.cat([module.b.float(), torch.zeros(module.out_features, count)], dim=1)
    return _with_rank_factors(module, a, b, use_rslora)


def shrink_rank(module: LoraModule, count: int, use_rslora: bool) -> LoraModule:
    """Drop the ``count`` lowest-energy components (keeping at least one); order of the rest is kept."""
    keep = max(1, module.rank - count)
    energy = component_energy(module.a, module.b)
    kept = torch.sort(torch.topk(energy, keep, sorted=False).indices).values
    return _with_rank_factors(module, module.a.float()[kept], module.b.float()[:, kept], use_rslora)


def mutate_module(
    module: LoraModule, spec: MutationSpec, generator: torch.Generator, use_rslora: bool
) -> LoraModule:
    """Apply noise, reset, shrink and grow (see the module docstring) to one module.

    Returns:
        The mutated module in the input's dtype.
    """
    dtype = module.a.dtype
    if spec.sigma > 0:
        module = add_noise(module, spec.sigma, spec.gene_probability, generator, spec.relative_sigma)
    if _coin(spec.reset_probability, generator):
        index = int(torch.randint(module.rank, (), generator=generator))
        module = reset_component(module, index, generator)
    if _coin(spec.shrink_probability, generator) and module.rank > 1:
        module = shrink_rank(module, spec.shrink_by, use_rslora)
    if _coin(spec.grow_probability, generator):
        room = spec.grow_by if spec.max_rank is None else min(spec.grow_by, spec.max_rank - module.rank)
        if room > 0:
            module = grow_rank(module, room, generator, use_rslora)
    return LoraModule(a=module.a.to(dtype), b=module.b.to(dtype), alpha=module.alpha)


def sample_hyperparameters(bounds: Mapping[str, Bounds], generator: torch.Generator) -> dict[str, float]:
    """Initial genes: each uniform within its bounds, in sorted name order."""
    return {name: _uniform(bounds[name], generator) for name in sorted(bounds)}


def _uniform(bounds: Bounds, generator: torch.Generator) -> float:
    low, high = bounds
    return low + float(torch.rand((), dtype=torch.float64, generator=generator)) * (high - low)


def mutate_hyperparameters(
    genes: Mapping[str, float], spec: MutationSpec, generator: torch.Generator
) -> dict[str, float]:
    """Each gene, with ``hyperparameter_probability``: x0.8, x1.2, or (if bounded) resampled; then clipped.

    Genes named in the bounds but missing from ``genes`` are sampled within the bounds first.
    """
    merged = dict(genes)
    for name in sorted(set(spec.hyperparameter_bounds) - set(merged)):
        merged[name] = _uniform(spec.hyperparameter_bounds[name], generator)
    mutated = {}
    for name in sorted(merged):
        value = merged[name]
        bounds = spec.hyperparameter_bounds.get(name)
        if _coin(spec.hyperparameter_probability, generator):
            choice = int(torch.randint(3 if bounds else 2, (), generator=generator))
            value = _uniform(bounds, generator) if choice == 2 and bounds else value * (0.8, 1.2)[choice]
        if bounds:
            value = min(max(value, bounds[0]), bounds[1])
        mutated[name] = value
    return mutated


def _scaled_module(module: LoraModule, factor: float) -> LoraModule:
    return LoraModule(module.a, (module.b.float() * factor).to(module.b.dtype), module.alpha)


def scale_update(genome: Genome, factor: float) -> Genome:
    """``genome`` with every module's update multiplied by ``factor`` (``B`` scaled, ``A`` and alpha kept).

    Args:
        genome: the genome; it is not modified.
        factor: the multiplier of ``dW`` (any real number; 1 returns equal factors).

    Returns:
        The scaled genome, in the input's dtype.
    """
    return genome.with_modules({name: _scaled_module(m, factor) for name, m in genome.items()})


def mutate_magnitude(
    modules: Mapping[str, LoraModule], spec: MutationSpec, generator: torch.Generator
) -> dict[str, LoraModule]:
    """The magnitude gene: every module's update times one factor ``exp(N(0, scale_sigma^2))``.

    Nothing is drawn when ``scale_sigma`` is 0, so with the gene off every draw is as it was before the gene
    existed; with it on, the one draw comes after the modules' and shifts only the hyperparameter genes'.
    """
    if spec.scale_sigma <= 0:
        return dict(modules)
    factor = math.exp(spec.scale_sigma * float(torch.randn((), dtype=torch.float64, generator=generator)))
    return {name: _scaled_module(module, factor) for name, module in modules.items()}


def mutate(genome: Genome, spec: MutationSpec, generator: torch.Generator) -> Genome:
    """Mutate every module (sorted name order), then the update's magnitude, then the hyperparameter genes.

    Args:
        genome: the genome to mutate; it is not modified.
        spec: what to do.
        generator: the only source of randomness.

    Returns:
        The mutant, in the input's dtype.
    """
    modules = {name: mutate_module(m, spec, generator, genome.use_rslora) for name, m in genome.items()}
    modules = mutate_magnitude(modules, spec, generator)
    genes = mutate_hyperparameters(genome.hyperparameters, spec, generator)
    return genome.with_modules(modules).with_hyperparameters(genes)
