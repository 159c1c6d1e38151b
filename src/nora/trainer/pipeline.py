"""One genome, start to finish: load, sample, pair, train, evaluate, write (DESIGN section 5).

:func:`run_job` runs the phases in order, logging each with its rate to the ``nora.trainer`` logger, and
writes to the output prefix only after everything was computed: ``samples.jsonl`` and ``pairs.jsonl``,
then ``adapter/`` (through :func:`nora.genetics.save_genome`: a temporary folder renamed into place
locally, manifest last on S3), then ``metrics.json``. A run that fails before the end leaves no adapter.
SIGTERM during training saves a checkpoint under the output prefix; the next run of the same task
resumes from it, skipping sampling (:mod:`nora.trainer.checkpoint`).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import peft
import torch
import transformers
import trl
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from nora.evolution.genome_store import download_genome
from nora.genetics import Genome, derive_seed, load_genome
from nora.storage import LocalStore, StoreError, open_uri
from nora.trainer import checkpoint, models
from nora.trainer.data import Example, format_prompts, load_split, prompt_window
from nora.trainer.errors import TrainerError, TrainerInputError
from nora.trainer.evaluate import Accuracy, HeldoutLoss, PairLogps, greedy_accuracy, irpo_loss, pair_logps
from nora.trainer.irpo_config import TrainerJob
from nora.trainer.irpo_trainer import Pair, PairStats, TrainStats, build_pairs, sample_answers
from nora.trainer.outputs import PhaseClock, write_outputs
from nora.trainer.targets import resolve_targets

log = logging.getLogger("nora.trainer")
T = TypeVar("T")


@dataclass(frozen=True)
class RunResult:
    """What a finished run reports: its fitness, where it wrote, and the full metrics."""

    genome: str
    fitness: float
    metrics: dict[str, Any]
    metrics_uri: str
    adapter_uri: str
    samples_uri: str


@dataclass
class _State:
    """Everything the phases hand to each other."""

    job: TrainerJob
    scratch: Path
    tokenizer: PreTrainedTokenizerBase | None = None
    model: PeftModel | None = None
    start: Genome | None = None
    train_rows: list[Example] = field(default_factory=list)
    eval_rows: list[Example] = field(default_factory=list)
    train_pairs: list[Pair] = field(default_factory=list)
    heldout_pairs: list[Pair] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    reference: PairLogps | None = None


def _need(value: T | None, what: str) -> T:
    if value is None:
        raise TrainerError(f"internal error: {what} is not ready")
    return value


def _starting_genome(state: _State, base: torch.nn.Module) -> Genome:
    job = state.job
    if job.adapter.uri is None:
        targets = resolve_targets(base, job.adapter.target_modules)
        for note in targets.notes:
            log.info("%s", note)
        log.info(
            "adapter: fresh LoRA rank %d alpha %g on %s (%d modules)",
            job.adapter.rank,
            job.adapter.alpha,
            ",".join(job.adapter.target_modules),
            len(targets.shapes),
        )
        return models.fresh_genome(targets, job.adapter, job.irpo.seed, job.base_model.uri)
    record = models.point_record(job.adapter.uri)
    if record is not None:
        log.info("adapter: projection of a %d-dimensional point", record.projection.dimension)
        targets = resolve_targets(base, job.adapter.target_modules)
        return models.projected_genome(targets, job.adapter, record, job.base_model.uri)
    return _download_adapter(job.adapter.uri, state.scratch)


def _download_adapter(uri: str, scratch: Path) -> Genome:
    try:
        store, key = open_uri(uri)
        if isinstance(store, LocalStore):
            return load_genome(store.root / key)
        return download_genome(store, key)
    except StoreError as error:
        raise TrainerInputError(f"adapter.uri: {error}") from None


def eval_rows(job: TrainerJob) -> list[Example]:
    """The rows fitness is measured on: the first ``evalPrompts``, or generation's window when rotating."""
    if not job.irpo.rotate_eval:
        return load_split(job.eval_uri, "eval", job.irpo.eval_prompts)
    return prompt_window(load_split(job.eval_uri, "eval"), job.irpo.eval_prompts, job.generation)


def _load(state: _State) -> None:
    job = state.job
    state.eval_rows = eval_rows(job)
    if job.irpo.trains:
        every_row = load_split(job.train_uri, "train")
        state.train_rows = prompt_window(every_row, job.irpo.max_prompts, job.window)
    source = models.resolve_model(job.base_model.uri)
    state.tokenizer = models.load_tokenizer(source, job.base_model)
    base = models.load_base_model(source, job.base_model)
    state.start = _starting_genome(state, base).with_hyperparameters(job.hyperparameters)
    state.model = models.attach_genome(base, state.start, job.adapter.dropout, state.scratch)
    log.info(
        "loaded: %d train rows, %d eval rows, base %s on %s (%s), adapter %d modules, %d parameters",
        len(state.train_rows),
        len(state.eval_rows),
        job.base_model.uri,
        models.device(),
        next(base.parameters()).dtype,
        len(state.start.modules),
        state.start.parameter_count,
    )


def _sample_and_pair(state: _State) -> None:
    job, model, tokenizer = state.job, _need(state.model, "model"), _need(state.tokenizer, "tokenizer")
    config = job.irpo
    heldout_rows = state.eval_rows[: config.heldout_prompt_count]
    heldout_prompts = format_prompts(heldout_rows, config.prompt_template)
    heldout_groups = sample_answers(model, tokenizer, heldout_rows, heldout_prompts, config, "heldout")
    state.heldout_pairs, heldout_stats = build_pairs(
        heldout_rows, heldout_prompts, heldout_groups, config.pairs_per_prompt, _pair_seed(job, "heldout")
    )
    state.stats["heldout_pairs"] = heldout_stats.as_dict()
    if config.trains:
        train_prompts = format_prompts(state.train_rows, config.prompt_template)
        groups = sample_answers(model, tokenizer, state.train_rows, train_prompts, config, "train")
        state.train_pairs, train_stats = build_pairs(
            state.train_rows, train_prompts, groups, config.pairs_per_prompt, _pair_seed(job, "train")
        )
        state.stats["pairs"] = train_stats.as_dict()
        state.stats["sampling_tokens"] = sum(s.tokens for g in groups + heldout_groups for s in g)
        _log_pairs("train", train_stats)
    else:
        state.stats["sampling_tokens"] = sum(s.tokens for g in heldout_groups for s in g)
    _log_pairs("heldout", heldout_stats)


def _pair_seed(job: TrainerJob, purpose: str) -> int:
    return derive_seed(job.irpo.seed, "pairs", purpose)


def _log_pairs(split: str, stats: PairStats) -> None:
    log.info(
        "pairs[%s]: %d pairs from %d/%d prompts (%d without a loser dropped, %d with only the gold winner)",
        split,
        stats.pairs,
        stats.prompts_with_pairs,
        stats.prompts,
        stats.prompts_without_loser,
        stats.gold_only_prompts,
    )


def _reference(state: _State) -> None:
    if state.heldout_pairs:
        model, tokenizer = _need(state.model, "model"), _need(state.tokenizer, "tokenizer")
        state.reference = pair_logps(model, tokenizer, state.heldout_pairs)


def _restore(state: _State, resume: checkpoint.Resume) -> None:
    phases, steps = resume.phases, state.job.irpo.max_steps
    state.train_pairs, state.heldout_pairs, state.reference = (
        phases.train_pairs,
        phases.heldout_pairs,
        phases.reference,
    )
    state.stats.update(phases.stats)
    log.info("resumed from step %d of %d (sampling skipped: pairs from the checkpoint)", resume.step, steps)


def _train(state: _State, run: checkpoint.TrainingRun) -> TrainStats | None:
    if not state.job.irpo.trains:
        log.info("training: skipped (method none: evaluate only)")
        return None
    if not state.train_pairs:
        log.info("training: skipped (no pairs: every sampled answer was correct)")
        return None
    model, tokenizer = _need(state.model, "model"), _need(state.tokenizer, "tokenizer")
    phases = checkpoint.Phases(state.train_pairs, state.heldout_pairs, dict(state.stats), state.reference)
    return checkpoint.train_resumably(model, tokenizer, phases, state.job.irpo, run)


def _evaluate(state: _State, trained: bool) -> tuple[Accuracy, HeldoutLoss | None]:
    model, tokenizer, config = (
        _need(state.model, "model"),
        _need(state.tokenizer, "tokenizer"),
        state.job.irpo,
    )
    prompts = format_prompts(state.eval_rows, config.prompt_template)
    accuracy = greedy_accuracy(model, tokenizer, state.eval_rows, prompts, config)
    if state.reference is None:
        log.info("held-out loss: no held-out pairs (every sampled answer was correct)")
        return accuracy, None
    policy = pair_logps(model, tokenizer, state.heldout_pairs) if trained else state.reference
    heldout = irpo_loss(policy, state.reference, config.beta, config.nll_weight)
    log.info(
        "held-out loss: irpo %.4f (dpo %.4f + %g x nll %.4f) on %d pairs",
        heldout.irpo_loss,
        heldout.dpo_loss,
        config.nll_weight,
        heldout.nll,
        heldout.pairs,
    )
    return accuracy, heldout


def _fitness(job: TrainerJob, accuracy: Accuracy, heldout: HeldoutLoss | None) -> float:
    if job.irpo.fitness_metric == "accuracy":
        return accuracy.accuracy
    if heldout is None:
        raise TrainerError(
            f"fitness.metric is irpo_loss but the first {job.irpo.heldout_prompt_count} eval prompts gave "
            "no held-out pair (every sampled answer was correct); use fitness.metric accuracy or more "
            "eval prompts"
        )
    return heldout.irpo_loss


def run_job(
    job: TrainerJob, scratch: Path | None = None, watch: checkpoint.StopWatch | None = None
) -> RunResult:
    """Train and score one genome and write its outputs; raises :class:`TrainerError` on bad input.

    With ``watch`` (the entrypoint installs it) SIGTERM checkpoints the training; see the module doc.
    """
    with tempfile.TemporaryDirectory(prefix="nora-train-", dir=scratch) as folder:
        return _run(job, Path(folder), watch or checkpoint.StopWatch())


def _run(job: TrainerJob, scratch: Path, watch: checkpoint.StopWatch) -> RunResult:
    clock, state = PhaseClock(), _State(job=job, scratch=scratch)
    log.info(
        "genome %s (population %s, generation %d): method %s, seed %d",
        job.genome,
        job.population,
        job.generation,
        job.irpo.method,
        job.irpo.seed,
    )
    with clock.phase("load"):
        _load(state)
    run = checkpoint.TrainingRun.prepare(job, scratch, watch)
    with clock.phase("sampling"):
        if run.resume is None:
            _sample_and_pair(state)
            _reference(state)
        else:
            _restore(state, run.resume)
    with clock.phase("training"):
        train = _train(state, run)
    with clock.phase("evaluation"):
        accuracy, heldout = _evaluate(state, trained=train is not None)
    fitness = _fitness(job, accuracy, heldout)
    trained = models.extract_genome(_need(state.model, "model"), _need(state.start, "start genome"))
    trained = models.on_base_model(trained, job.base_model.uri)
    metrics = _metrics(state, accuracy, heldout, train, fitness, clock)
    with clock.phase("write"):
        records = {"samples": accuracy.records, "pairs": _pair_records(state)}
        uris = write_outputs(job.output, trained, records, metrics, clock)
    metrics["durations"] = {**clock.durations, "total": clock.total()}  # metrics.json stops before "write"
    return RunResult(job.genome, fitness, metrics, *uris)


def _rate(tokens: int | float, seconds: float | None) -> float | None:
    return round(tokens / seconds, 1) if seconds else None


def _metrics(
    state: _State,
    accuracy: Accuracy,
    heldout: HeldoutLoss | None,
    train: TrainStats | None,
    fitness: float,
    clock: PhaseClock,
) -> dict[str, Any]:
    job, config = state.job, state.job.irpo
    durations = clock.durations
    return {
        "genome": job.genome,
        "population": job.population,
        "generation": job.generation,
        "seed": config.seed,
        "method": config.method,
        "fitness": fitness,
        "fitness_metric": config.fitness_metric,
        "fitness_goal": config.fitness_goal,
        "accuracy": accuracy.accuracy,
        "eval_prompts": len(accuracy.records),
        "eval_correct": accuracy.correct,
        "irpo_loss": heldout.irpo_loss if heldout else None,
        "heldout": {**heldout.__dict__} if heldout else None,
        "heldout_pairs": state.stats.get("heldout_pairs"),
        "pairs": state.stats.get("pairs"),
        "training": _training_metrics(config.__dict__, train),
        "hyperparameters": dict(job.hyperparameters),
        "durations": durations,
        "tokens_per_s": {
            "sampling": _rate(state.stats.get("sampling_tokens", 0), durations.get("sampling")),
            "training": _rate(train.tokens, train.seconds) if train else None,
            "evaluation": _rate(accuracy.tokens, accuracy.seconds),
        },
        "environment": _environment(state),
    }


def _training_metrics(config: dict[str, Any], train: TrainStats | None) -> dict[str, Any]:
    keys = (
        "learning_rate",
        "beta",
        "nll_weight",
        "max_steps",
        "batch_size",
        "samples_per_prompt",
        "pairs_per_prompt",
        "temperature",
        "max_new_tokens",
    )
    settings = {key: config[key] for key in keys}
    return {**settings, "skipped": train is None, **(train.as_dict() if train else {"steps": 0})}


def _environment(state: _State) -> dict[str, Any]:
    model = _need(state.model, "model")
    return {
        "device": str(models.device()),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "trl": trl.__version__,
            "peft": peft.__version__,
        },
    }


def _pair_records(state: _State) -> list[dict[str, Any]]:
    return [
        {"split": split, **pair.__dict__}
        for split, pairs in (("train", state.train_pairs), ("heldout", state.heldout_pairs))
        for pair in pairs
    ]
