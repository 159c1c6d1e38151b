"""The trainer's settings: :class:`IrpoConfig` (what IRPO does) and :class:`TrainerJob` (one genome's inputs).

Both are frozen dataclasses validated in ``__post_init__``; every message names the offending field by its
``genome.json`` path (``training.samplesPerPrompt``), so a config built by hand in a test or a benchmark
fails the same way as one read from a genome.json. :func:`job_from_task` maps a validated
:class:`~nora.api.task.GenomeTask` onto them, with the genome's hyperparameter genes already applied.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal

from nora.api.defaults import (
    ALL_LINEAR,
    DEFAULT_ANSWER_PATTERN,
    DEFAULT_PROMPT_TEMPLATE,
    DEFAULT_TARGET_MODULES,
)
from nora.api.task import GenomeTask
from nora.trainer.errors import TrainerInputError

Method = Literal["irpo", "dpo", "none"]
Metric = Literal["accuracy", "irpo_loss"]
Goal = Literal["maximize", "minimize"]
Dtype = Literal["auto", "float32", "bfloat16"]

METHODS: tuple[str, ...] = ("irpo", "dpo", "none")
METRICS: tuple[str, ...] = ("accuracy", "irpo_loss")
GOALS: tuple[str, ...] = ("maximize", "minimize")
DTYPES: tuple[str, ...] = ("auto", "float32", "bfloat16")


def _require(condition: bool, path: str, rule: str, value: object) -> None:
    if not condition:
        raise TrainerInputError(f"{path}: {rule} (got {value!r})")


@dataclass(frozen=True)
class IrpoConfig:
    """One IRPO round (Pang et al. 2024) as the trainer runs it.

    Attributes:
        method: ``irpo`` (DPO + NLL), ``dpo`` (DPO only) or ``none`` (evaluate only).
        samples_per_prompt: sampled answers per training prompt.
        pairs_per_prompt: at most this many (correct, incorrect) pairs per prompt.
        temperature: sampling temperature (no top-k/top-p truncation).
        beta: DPO's beta.
        nll_weight: weight of the NLL term on the chosen completion (IRPO's alpha).
        learning_rate: AdamW learning rate (linear decay to zero).
        max_steps: optimiser steps (the pairs are cycled through as often as needed).
        batch_size: pairs per optimiser step.
        max_prompts: training prompts per genome: generation ``g`` takes the rows from ``g * max_prompts``
            on (wrapping around the file), so successive generations train on new prompts.
        max_new_tokens: generation budget per completion.
        eval_prompts: eval prompts used for greedy accuracy (the first rows of the eval file).
        rotate_eval: generation ``g`` takes the ``eval_prompts`` rows from ``g * eval_prompts`` on instead.
        heldout_prompts: eval prompts whose sampled pairs give the held-out IRPO loss
            (0 means ``min(eval_prompts, max_prompts)``).
        prompt_template: ``str.format`` template with ``{question}``.
        answer_pattern: regex whose first group is the final answer.
        fitness_metric: which metric is the genome's fitness.
        fitness_goal: whether the engine maximises or minimises it.
        seed: seed of every random choice of the run.
        generation_batch_size: sequences per ``generate`` call (prompts x samples).
    """

    method: Method = "irpo"
    samples_per_prompt: int = 8
    pairs_per_prompt: int = 2
    temperature: float = 1.0
    beta: float = 0.1
    nll_weight: float = 1.0
    learning_rate: float = 1e-4
    max_steps: int = 50
    batch_size: int = 4
    max_prompts: int = 64
    max_new_tokens: int = 128
    eval_prompts: int = 200
    rotate_eval: bool = False
    heldout_prompts: int = 0
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    answer_pattern: str = DEFAULT_ANSWER_PATTERN
    fitness_metric: Metric = "accuracy"
    fitness_goal: Goal = "maximize"
    seed: int = 0
    generation_batch_size: int = 512

    def __post_init__(self) -> None:
        _require(self.method in METHODS, "training.method", f"must be one of {METHODS}", self.method)
        for name, path, low in (
            ("samples_per_prompt", "training.samplesPerPrompt", 1),
            ("pairs_per_prompt", "training.pairsPerPrompt", 1),
            ("max_steps", "training.maxSteps", 1),
            ("batch_size", "training.batchSize", 1),
            ("max_prompts", "training.maxPrompts", 1),
            ("max_new_tokens", "training.maxNewTokens", 1),
            ("eval_prompts", "training.evalPrompts", 1),
            ("heldout_prompts", "training.heldoutPrompts", 0),
            ("generation_batch_size", "generationBatchSize", 1),
            ("seed", "seed", 0),
        ):
            value = getattr(self, name)
            _require(isinstance(value, int) and value >= low, path, f"must be an integer >= {low}", value)
        for name, path, strict in (
            ("temperature", "training.temperature", True),
            ("beta", "training.beta", True),
            ("learning_rate", "training.learningRate", True),
            ("nll_weight", "training.nllWeight", False),
        ):
            value = float(getattr(self, name))
            ok = math.isfinite(value) and (value > 0 if strict else value >= 0)
            _require(ok, path, "must be a finite number " + ("> 0" if strict else ">= 0"), value)
        self._check_text_fields()
        _require(
            self.fitness_metric in METRICS, "fitness.metric", f"must be one of {METRICS}", self.fitness_metric
        )
        _require(self.fitness_goal in GOALS, "fitness.goal", f"must be one of {GOALS}", self.fitness_goal)

    def _check_text_fields(self) -> None:
        _require(
            "{question}" in self.prompt_template,
            "dataset.promptTemplate",
            "must contain the placeholder {question}",
            self.prompt_template,
        )
        try:
            self.prompt_template.format(question="")
        except (KeyError, IndexError, ValueError) as error:
            raise TrainerInputError(
                f"dataset.promptTemplate: not a valid template ({error}); write literal braces as {{{{ }}}}"
            ) from None
        try:
            groups = re.compile(self.answer_pattern).groups
        except re.error as error:
            raise TrainerInputError(f"dataset.answerPattern: not a valid regex ({error})") from None
        _require(groups >= 1, "dataset.answerPattern", "needs a capturing group", self.answer_pattern)

    @property
    def trains(self) -> bool:
        """Whether this run samples, pairs and trains (``method`` is not ``none``)."""
        return self.method != "none"

    @property
    def loss_types(self) -> list[str]:
        """TRL ``loss_type``: sigmoid DPO, plus the chosen-completion NLL (``sft``) for IRPO."""
        return ["sigmoid", "sft"] if self.method == "irpo" else ["sigmoid"]

    @property
    def loss_weights(self) -> list[float]:
        """TRL ``loss_weights`` matching :attr:`loss_types`."""
        return [1.0, float(self.nll_weight)] if self.method == "irpo" else [1.0]

    @property
    def heldout_prompt_count(self) -> int:
        """Eval prompts sampled for the held-out IRPO loss."""
        return self.heldout_prompts or min(self.eval_prompts, self.max_prompts)


@dataclass(frozen=True)
class BaseModelRef:
    """The base model: ``file://``/plain path, ``hf://org/name[@rev]`` or ``s3://bucket/prefix/``."""

    uri: str
    trust_remote_code: bool = False
    dtype: Dtype = "auto"

    def __post_init__(self) -> None:
        _require(bool(self.uri), "baseModel.uri", "must not be empty", self.uri)
        _require(self.dtype in DTYPES, "baseModel.dtype", f"must be one of {DTYPES}", self.dtype)


@dataclass(frozen=True)
class AdapterRef:
    """The starting adapter (``uri``), or a fresh LoRA with these settings when ``uri`` is None."""

    uri: str | None = None
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES

    def __post_init__(self) -> None:
        _require(self.rank >= 1, "adapter.rank", "must be >= 1", self.rank)
        _require(self.alpha > 0, "adapter.alpha", "must be > 0", self.alpha)
        _require(0.0 <= self.dropout < 1.0, "adapter.dropout", "must be in [0, 1)", self.dropout)
        _require(
            len(self.target_modules) > 0, "adapter.targetModules", "must not be empty", self.target_modules
        )
        _require(
            "lm_head" not in self.target_modules,
            "adapter.targetModules",
            "must not contain lm_head (TRL computes log-probs from lm_head.weight directly)",
            self.target_modules,
        )
        _require(
            ALL_LINEAR not in self.target_modules or len(self.target_modules) == 1,
            "adapter.targetModules",
            f"{ALL_LINEAR} stands alone (it means every Linear module but lm_head)",
            self.target_modules,
        )


@dataclass(frozen=True)
class TrainerJob:
    """Everything one genome's run needs, resolved from genome.json."""

    genome: str
    population: str
    generation: int
    base_model: BaseModelRef
    train_uri: str
    eval_uri: str
    adapter: AdapterRef
    output: str
    irpo: IrpoConfig
    hyperparameters: dict[str, float] = field(default_factory=dict)
    train_window: int | None = None

    @property
    def window(self) -> int:
        """The train window this genome samples on (``train_window``, else its generation's)."""
        return self.generation if self.train_window is None else self.train_window

    def __post_init__(self) -> None:
        _require(bool(self.genome), "genome", "must not be empty", self.genome)
        _require(bool(self.output), "output", "must not be empty", self.output)
        _require(bool(self.eval_uri), "dataset.eval", "must not be empty", self.eval_uri)
        if self.irpo.trains:
            _require(bool(self.train_uri), "dataset.train", "must not be empty", self.train_uri)


def job_from_task(task: GenomeTask) -> TrainerJob:
    """The :class:`TrainerJob` of a validated genome.json, hyperparameter genes applied."""
    training = task.effective_training()
    irpo = IrpoConfig(
        method=training.method,
        samples_per_prompt=training.samples_per_prompt,
        pairs_per_prompt=training.pairs_per_prompt,
        temperature=training.temperature,
        beta=training.beta,
        nll_weight=training.nll_weight,
        learning_rate=training.learning_rate,
        max_steps=training.max_steps,
        batch_size=training.batch_size,
        max_prompts=training.max_prompts,
        max_new_tokens=training.max_new_tokens,
        eval_prompts=training.eval_prompts,
        rotate_eval=training.rotate_eval,
        prompt_template=task.dataset.prompt_template,
        answer_pattern=task.dataset.answer_pattern,
        fitness_metric=task.fitness.metric,
        fitness_goal=task.fitness.goal,
        seed=task.seed,
    )
    adapter = AdapterRef(
        uri=task.adapter.uri,
        rank=task.adapter.rank,
        alpha=task.adapter.alpha,
        dropout=task.adapter.dropout,
        target_modules=tuple(task.adapter.target_modules),
    )
    base = task.base_model
    return TrainerJob(
        genome=task.genome,
        population=task.population,
        generation=task.generation,
        base_model=BaseModelRef(uri=base.uri, trust_remote_code=base.trust_remote_code, dtype=base.dtype),
        train_uri=task.dataset.train,
        eval_uri=task.dataset.eval,
        adapter=adapter,
        output=task.output,
        irpo=irpo,
        hyperparameters=dict(task.hyperparameters),
        train_window=task.train_window,
    )
