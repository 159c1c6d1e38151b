"""The ``Population`` spec: what to evolve, how, where it runs and where adapters are kept.

Field names are camelCase in YAML (``populationSize``) and snake_case in Python (``population_size``).
Single-field rules (types, enums, bounds) live on the fields; rules across fields live in
:func:`semantic_problems`, which names every offending path, e.g.
``spec.selection.survivors: 9 exceeds spec.populationSize (8)``.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, ValidationError
from pydantic.alias_generators import to_camel

from nora.api.base import ApiModel
from nora.api.defaults import (
    ALL_LINEAR,
    DEFAULT_ANSWER_PATTERN,
    DEFAULT_PROMPT_TEMPLATE,
    DEFAULT_TARGET_MODULES,
)
from nora.api.generation import MAX_GENOMES
from nora.api.placement import (
    RESERVED_MOUNT_PATHS,
    RESERVED_VOLUMES,
    ModelCacheSpec,
    RetriesSpec,
    StorageSpec,
    TemplateSpec,
)
from nora.api.strategy import StrategySpec, strategy_problems

MODEL_URI_SCHEMES = ("hf://", "s3://", "file://", "toy://")
DATA_URI_SCHEMES = ("s3://", "file://", "toy://")
EQUAL_RANK_CROSSOVERS = ("ties", "dare", "slerp", "blx")
MAX_TEST_ENSEMBLE = 16
PROMPT_TEMPLATE_LIMIT = 16384
"""Characters allowed in ``dataset.promptTemplate`` (it is copied into every Generation)."""


def _uri_check(schemes: tuple[str, ...]) -> AfterValidator:
    def check(value: str) -> str:
        if not value.startswith(schemes):
            raise ValueError(f"must start with one of {', '.join(schemes)}")
        return value

    return AfterValidator(check)


def _regex_with_group(value: str) -> str:
    try:
        compiled = re.compile(value)
    except re.error as error:
        raise ValueError(f"is not a valid regular expression ({error})") from None
    if compiled.groups < 1:
        raise ValueError("needs a capturing group around the answer, e.g. '####\\s*(.+)'")
    return value


def _has_question_slot(value: str) -> str:
    if "{question}" not in value:
        raise ValueError("must contain the placeholder {question}")
    return value


def _target_modules(value: list[str]) -> list[str]:
    if ALL_LINEAR in value and len(value) > 1:
        raise ValueError(f"{ALL_LINEAR} stands alone (it means every Linear module but lm_head)")
    if any(not name.strip() for name in value):
        raise ValueError("module names must not be empty")
    if any(name == "lm_head" or name.endswith(".lm_head") for name in value):
        raise ValueError("must not contain lm_head (TRL computes log-probs from lm_head.weight directly)")
    return value


ModelUri = Annotated[str, _uri_check(MODEL_URI_SCHEMES)]
DataUri = Annotated[str, _uri_check(DATA_URI_SCHEMES)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
TargetModules = Annotated[list[str], Field(min_length=1), AfterValidator(_target_modules)]
"""Linear module names as PEFT matches them (``q_proj``, ``shared_expert.gate_proj``), or ``[all-linear]``."""


class BaseModelSpec(ApiModel):
    """The base LLM: ``hf://org/name[@revision]``, ``s3://bucket/key/``, ``file:///path`` or ``toy://``."""

    uri: ModelUri
    trust_remote_code: bool = False
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"


class DatasetSpec(ApiModel):
    """JSONL rows ``{"question", "solution", "answer"}``; the prompt template and answer regex."""

    train: DataUri
    eval: DataUri
    test: DataUri | None = None
    """A held-out split, scored once at the end of a run (never for fitness): the overfitting guard."""
    test_ensemble: Annotated[int, Field(ge=1, le=MAX_TEST_ENSEMBLE)] = 3
    """Adapters (fittest first) whose majority vote is also scored on ``test``; 1 scores no ensemble."""
    prompt_template: Annotated[
        str, Field(max_length=PROMPT_TEMPLATE_LIMIT), AfterValidator(_has_question_slot)
    ] = DEFAULT_PROMPT_TEMPLATE
    answer_pattern: Annotated[str, AfterValidator(_regex_with_group)] = DEFAULT_ANSWER_PATTERN


class StoppingSpec(ApiModel):
    """Stop after ``patience`` generations without a best-fitness gain above ``minDelta``, or at a target."""

    patience: Annotated[int, Field(ge=1)] | None = None
    min_delta: Annotated[float, Field(ge=0.0)] = 0.0
    target_fitness: float | None = None


class FitnessSpec(ApiModel):
    """``accuracy`` (eval exact match, maximize) or NoRA's reversed fitness ``irpo_loss`` (minimize)."""

    metric: Literal["accuracy", "irpo_loss"] = "accuracy"
    goal: Literal["maximize", "minimize"] = "maximize"


class SelectionSpec(ApiModel):
    """How parents are chosen; ``survivors`` defaults to half the population."""

    method: Literal["truncation", "tournament", "roulette", "rank"] = "tournament"
    survivors: Annotated[int, Field(ge=1)] | None = None
    elites: Annotated[int, Field(ge=0)] = 1
    tournament_size: Annotated[int, Field(ge=2)] = 3
    rescore_elites: bool = False
    """Evaluate each elite again (no training) with the new generation instead of carrying its fitness:
    with ``training.rotateEval`` its score is then a fresh draw on the rows the offspring are scored on,
    not the lucky maximum that made it the elite (the winner's curse)."""


class CrossoverSpecModel(ApiModel):
    """Crossover method and parameters (see ``nora.genetics.crossover``).

    ``allowMixedBaseModels`` lets parents whose adapters name different base models breed (refused by
    default: equal shapes do not make two base models the same).
    """

    method: Literal["nora", "linear", "svd", "ties", "dare", "slerp", "blx"] = "svd"
    """``svd`` keeps the parents' accuracy (a fitness-weighted average of their updates); the paper's
    ``nora`` factor crossover shrinks the update about sixfold and lands halfway back to the base model."""
    probability: Probability = 0.9
    temperature: Annotated[float, Field(gt=0.0)] = 0.1
    rank: Annotated[int, Field(ge=1)] | None = None
    density: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    blx_alpha: Annotated[float, Field(ge=0.0)] = 0.5
    allow_mixed_base_models: bool = False


class SuccessionSpecModel(ApiModel):
    """GENOME+'s succession: each bred genome moves toward the global best and away from the worst."""

    toward: Probability = 0.3
    away: Probability = 0.1


class MutationSpecModel(ApiModel):
    """Mutation of factors, ranks and hyperparameter genes (see ``nora.genetics.mutation``)."""

    probability: Probability = 1.0
    gene_probability: Probability = 0.05
    sigma: Annotated[float, Field(ge=0.0)] = 0.1
    """Gene noise; with ``sigmaScale: relative`` in units of each factor's root-mean-square entry."""
    sigma_scale: Literal["relative", "absolute"] = "relative"
    scale_sigma: Annotated[float, Field(ge=0.0, le=2.0)] = 0.3
    """Magnitude gene: a bred genome's whole update times ``exp(N(0, scaleSigma^2))`` (0 turns it off); +2.9
    points on the toy task's test split over 5 seeds (README, "Quality at equal compute")."""
    succession: SuccessionSpecModel | None = None
    reset_probability: Probability = 0.0
    rank_grow_probability: Probability = 0.1
    rank_shrink_probability: Probability = 0.1
    max_rank: Annotated[int, Field(ge=1, le=1024)] = 64
    hyperparameter_probability: Probability = 0.2
    hyperparameters: dict[str, tuple[float, float]] = Field(default_factory=dict)


class AdapterSpec(ApiModel):
    """Fresh adapters of generation 0."""

    initial_rank: Annotated[int, Field(ge=1, le=1024)] = 8
    alpha: Annotated[float, Field(gt=0.0)] = 16.0
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    target_modules: TargetModules = Field(default_factory=lambda: list(DEFAULT_TARGET_MODULES))


class SeedAdapter(ApiModel):
    """A PEFT LoRA adapter folder to start a genome of generation 0 from."""

    uri: DataUri


class TrainingSpec(ApiModel):
    """IRPO (DPO + NLL), plain DPO, or ``none`` (evaluate only: gradient-free evolution)."""

    method: Literal["irpo", "dpo", "none"] = "irpo"
    samples_per_prompt: Annotated[int, Field(ge=2, le=256)] = 8
    pairs_per_prompt: Annotated[int, Field(ge=1, le=256)] = 2
    temperature: Annotated[float, Field(gt=0.0, le=5.0)] = 1.0
    beta: Annotated[float, Field(gt=0.0)] = 0.1
    nll_weight: Annotated[float, Field(ge=0.0)] = 1.0
    learning_rate: Annotated[float, Field(gt=0.0, le=1.0)] = 1e-4
    max_steps: Annotated[int, Field(ge=1)] = 50
    batch_size: Annotated[int, Field(ge=1)] = 4
    max_prompts: Annotated[int, Field(ge=1)] = 64
    max_new_tokens: Annotated[int, Field(ge=1, le=8192)] = 128
    eval_prompts: Annotated[int, Field(ge=1)] = 200
    rotate_eval: bool = False
    """Generation ``g`` is scored on ``evalPrompts`` eval rows from row ``g * evalPrompts`` on (wrapping
    around the file) instead of the first ones, so no generation is picked on rows an earlier one was."""
    prompt_windows: Literal["generation", "genome"] = "generation"
    """Which ``maxPrompts`` train rows a genome samples on: ``generation`` gives every genome of generation
    ``g`` the same window (rows from ``g * maxPrompts`` on, wrapping around); ``genome`` gives genome ``i``
    of generation ``g`` its own window ``g * populationSize + i``, so siblings learn from different prompts
    and a crossover merges adapters trained on different data."""


GENE_FIELDS = ("learning_rate", "beta", "nll_weight", "temperature")
"""Training fields that hyperparameter genes may override (genes are named in camelCase or snake_case)."""
GENE_NAMES = {alias: name for name in GENE_FIELDS for alias in (to_camel(name), name)}
"""Every accepted gene name and the :class:`TrainingSpec` field it sets."""


def _gene_problems(genes: dict[str, tuple[float, float]]) -> list[str]:
    """Gene names the trainer knows, with bounds inside its own field's range (no Job would fail later)."""
    problems = []
    for gene, bounds in genes.items():
        path = f"spec.mutation.hyperparameters.{gene}"
        field = GENE_NAMES.get(gene)
        if field is None:
            known = ", ".join(to_camel(name) for name in GENE_FIELDS)
            problems.append(f"{path}: not a gene the trainer knows; use one of {known}")
            continue
        for value in bounds:
            try:
                TrainingSpec.model_validate({field: value})
            except ValidationError as error:
                reason = error.errors()[0]["msg"].lower()
                training = f"spec.training.{to_camel(field)}"
                problems.append(f"{path}: {gene}: outside {training}'s range ({value}: {reason})")
                break
    return problems


class PopulationSpec(ApiModel):
    """Everything a ``Population`` asks for."""

    base_model: BaseModelSpec
    dataset: DatasetSpec
    population_size: Annotated[int, Field(ge=2, le=MAX_GENOMES)] = 8
    max_generations: Annotated[int, Field(ge=1, le=10000)] = 10
    seed: Annotated[int, Field(ge=0)] = 0
    stopping: StoppingSpec = Field(default_factory=StoppingSpec)
    fitness: FitnessSpec = Field(default_factory=FitnessSpec)
    selection: SelectionSpec = Field(default_factory=SelectionSpec)
    crossover: CrossoverSpecModel = Field(default_factory=CrossoverSpecModel)
    mutation: MutationSpecModel = Field(default_factory=MutationSpecModel)
    adapter: AdapterSpec = Field(default_factory=AdapterSpec)
    seed_adapters: list[SeedAdapter] = Field(default_factory=list)
    strategy: StrategySpec = Field(default_factory=StrategySpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    template: TemplateSpec = Field(default_factory=TemplateSpec)
    queue_name: str | None = None
    workload_priority_class_name: Annotated[str, Field(min_length=1, max_length=253)] | None = None
    """A Kueue WorkloadPriorityClass for the genome Jobs (label ``kueue.x-k8s.io/priority-class``)."""
    model_cache: ModelCacheSpec | None = None
    parallelism: Annotated[int, Field(ge=1, le=10000)] = 4
    retries: RetriesSpec = Field(default_factory=RetriesSpec)
    active_deadline_seconds: Annotated[int, Field(ge=60)] = 21600
    storage: StorageSpec = Field(default_factory=StorageSpec)
    suspend: bool = False
    """On a cluster: start no new Jobs and no new generation (phase Stopped) until unset."""

    @property
    def survivors(self) -> int:
        return self.selection.survivors or max(2, self.population_size // 2)

    @property
    def max_failed_genomes(self) -> int:
        limit = self.retries.max_failed_genomes
        return self.population_size // 2 if limit is None else limit


def _selection_problems(spec: PopulationSpec) -> list[tuple[bool, str]]:
    size, selection = spec.population_size, spec.selection
    return [
        (
            spec.survivors > size,
            f"spec.selection.survivors: {spec.survivors} exceeds spec.populationSize ({size})",
        ),
        (
            selection.elites >= size,
            f"spec.selection.elites: {selection.elites} leaves no room for offspring; use fewer than {size}",
        ),
        (
            selection.tournament_size > size,
            f"spec.selection.tournamentSize: {selection.tournament_size} exceeds "
            f"spec.populationSize ({size})",
        ),
        (
            spec.max_failed_genomes > size,
            f"spec.retries.maxFailedGenomes: {spec.max_failed_genomes} exceeds spec.populationSize ({size})",
        ),
    ]


def _breeding_problems(spec: PopulationSpec) -> list[tuple[bool, str]]:
    crossover, mutation, training = spec.crossover, spec.mutation, spec.training
    changes_ranks = mutation.rank_grow_probability > 0 or mutation.rank_shrink_probability > 0
    return [
        (
            spec.adapter.initial_rank > mutation.max_rank,
            f"spec.adapter.initialRank: {spec.adapter.initial_rank} exceeds spec.mutation.maxRank "
            f"({mutation.max_rank})",
        ),
        (
            training.pairs_per_prompt > training.samples_per_prompt,
            f"spec.training.pairsPerPrompt: {training.pairs_per_prompt} exceeds "
            f"spec.training.samplesPerPrompt ({training.samples_per_prompt})",
        ),
        (
            crossover.rank is not None and crossover.method != "svd",
            f"spec.crossover.rank: only the svd method truncates to a rank, not {crossover.method}",
        ),
        (
            crossover.method in EQUAL_RANK_CROSSOVERS and changes_ranks,
            f"spec.crossover.method: {crossover.method} needs equal ranks, but spec.mutation changes ranks; "
            "set rankGrowProbability and rankShrinkProbability to 0, or use nora, linear or svd",
        ),
    ]


def _fitness_and_storage_problems(spec: PopulationSpec) -> list[tuple[bool, str]]:
    metric, goal = spec.fitness.metric, spec.fitness.goal
    return [
        (
            metric == "irpo_loss" and goal != "minimize",
            "spec.fitness.goal: irpo_loss is a loss; set goal: minimize",
        ),
        (
            metric == "accuracy" and goal != "maximize",
            "spec.fitness.goal: accuracy is maximized; set goal: maximize",
        ),
        (
            spec.dataset.test in (spec.dataset.train, spec.dataset.eval),
            "spec.dataset.test: must be a split that neither training nor fitness reads; "
            "name one other than spec.dataset.train and spec.dataset.eval",
        ),
        (
            spec.storage.secret_ref is not None and spec.storage.bucket is None,
            "spec.storage.secretRef: credentials are given but spec.storage.bucket is not set",
        ),
    ]


def _cluster_problems(spec: PopulationSpec) -> list[tuple[bool, str]]:
    cache, template = spec.model_cache, spec.template
    volume_names = [str(volume.get("name")) for volume in template.volumes]
    mount_paths = [str(mount.get("mountPath", "")).rstrip("/") for mount in template.volume_mounts]
    return [
        (
            spec.workload_priority_class_name is not None and spec.queue_name is None,
            "spec.workloadPriorityClassName: Kueue ranks only the Jobs it queues; set spec.queueName too",
        ),
        (
            cache is not None and (cache.storage_class_name is None) == (cache.claim_name is None),
            "spec.modelCache: set exactly one of storageClassName (the operator creates the PVC) "
            "or claimName (an existing PVC)",
        ),
        (
            cache is not None and not spec.base_model.uri.startswith(("s3://", "hf://")),
            "spec.baseModel.uri: spec.modelCache fetches only s3:// or hf:// models; "
            "mount a volume with spec.template.volumes and use file:// instead",
        ),
        (
            any(name in RESERVED_VOLUMES for name in volume_names),
            f"spec.template.volumes: the names {', '.join(RESERVED_VOLUMES)} are the Job's own; rename yours",
        ),
        (
            any(path in RESERVED_MOUNT_PATHS for path in mount_paths),
            f"spec.template.volumeMounts: {', '.join(RESERVED_MOUNT_PATHS)} are the Job's own mount paths",
        ),
    ]


def semantic_problems(spec: PopulationSpec) -> list[str]:
    """Cross-field rules, each problem as ``spec.<path>: <what is wrong and the fix>``."""
    rules = [
        *_selection_problems(spec),
        *_breeding_problems(spec),
        *_fitness_and_storage_problems(spec),
        *_cluster_problems(spec),
        *strategy_problems(spec),
    ]
    problems = [message for broken, message in rules if broken]
    for name, (low, high) in spec.mutation.hyperparameters.items():
        if not low <= high:
            problems.append(f"spec.mutation.hyperparameters.{name}: low {low} exceeds high {high}")
    return problems + _gene_problems(spec.mutation.hyperparameters)
