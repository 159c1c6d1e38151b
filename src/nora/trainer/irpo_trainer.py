"""IRPO's first four steps: sample answers, reward them, pair winners with losers, train with DPO + NLL.

Sampling draws ``samples_per_prompt`` completions per prompt with pure temperature sampling (no top-k or
top-p) and exactly the spec's settings (:mod:`nora.trainer.generation`), seeded inside
``torch.random.fork_rng`` so it is deterministic and leaves the global RNG alone.
A completion is correct when ``answer_pattern``'s first group, stripped, equals the row's answer. Each
prompt's winners are its distinct correct completions plus the gold solution; its losers are its distinct
incorrect completions; up to ``pairs_per_prompt`` distinct (winner, loser) pairs are drawn with a seeded
generator, and prompts without a loser are dropped. Training is TRL's ``DPOTrainer`` with
``loss_type=["sigmoid", "sft"]`` and ``loss_weights=[1, nll_weight]`` on the ``PeftModel`` passed in with
no ``ref_model``, so TRL copies the starting adapter into a frozen ``ref`` adapter: the reference is the
genome's own starting adapter (IRPO's M_t). TRL gets the pairs as token ids cut by
:mod:`nora.trainer.tokens`, the same cut sampling and evaluation use.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from peft import PeftModel
from transformers import PreTrainedTokenizerBase, TrainerCallback, TrainerControl, TrainerState
from transformers.trainer_callback import PrinterCallback
from transformers.training_args import TrainingArguments
from trl.trainer.dpo_config import DPOConfig
from trl.trainer.dpo_trainer import DPOTrainer

from nora.genetics import derive_seed, make_generator
from nora.trainer.data import Example
from nora.trainer.generation import generate
from nora.trainer.irpo_config import IrpoConfig
from nora.trainer.tokens import encode_prompt, preference_rows

log = logging.getLogger("nora.trainer")


@dataclass(frozen=True)
class Sample:
    """One generated completion and its reward."""

    text: str
    extracted: str | None
    correct: bool
    tokens: int


@dataclass(frozen=True)
class Pair:
    """A preference pair: ``chosen`` is correct (sampled or gold), ``rejected`` is incorrect."""

    prompt_index: int
    prompt: str
    chosen: str
    rejected: str
    chosen_is_gold: bool


@dataclass(frozen=True)
class PairStats:
    """How pairing went over one set of prompts."""

    prompts: int
    prompts_with_pairs: int
    prompts_without_loser: int
    gold_only_prompts: int
    pairs: int
    gold_pairs: int
    sample_accuracy: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class TrainStats:
    """What the DPO phase did."""

    steps: int
    train_loss: float | None
    loss_first: float | None
    loss_last: float | None
    reward_accuracy_last: float | None
    tokens: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def extract_answer(text: str, pattern: str) -> str | None:
    """The first group of ``pattern`` in ``text``, stripped, or None when it does not match."""
    match = re.search(pattern, text)
    if match is None or match.group(1) is None:
        return None
    return match.group(1).strip()


def sample_answers(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[Example],
    prompts: Sequence[str],
    config: IrpoConfig,
    purpose: str,
) -> list[list[Sample]]:
    """IRPO steps 1-2: ``samples_per_prompt`` rewarded samples per prompt (seeded by ``purpose``)."""
    started = time.monotonic()
    ids = [encode_prompt(tokenizer, prompt) for prompt in prompts]
    seed = derive_seed(config.seed, "sample", purpose)
    generated = generate(
        model,
        tokenizer,
        ids,
        config.samples_per_prompt,
        config.temperature,
        config.max_new_tokens,
        seed=seed,
        batch_sequences=config.generation_batch_size,
    )
    groups = [
        [_reward(text, tokens, row, config.answer_pattern) for text, tokens in group]
        for group, row in zip(generated, rows, strict=True)
    ]
    _log_sampling(purpose, groups, time.monotonic() - started)
    return groups


def _reward(text: str, tokens: int, row: Example, pattern: str) -> Sample:
    extracted = extract_answer(text, pattern)
    return Sample(text=text, extracted=extracted, correct=extracted == row.answer, tokens=tokens)


def _log_sampling(purpose: str, groups: list[list[Sample]], seconds: float) -> None:
    flat = [sample for group in groups for sample in group]
    tokens = sum(sample.tokens for sample in flat)
    correct = sum(sample.correct for sample in flat)
    log.info(
        "sampling[%s]: %d prompts x %d samples, %d tokens in %.1fs (%.0f tokens/s), %.1f%% correct",
        purpose,
        len(groups),
        len(flat) // max(1, len(groups)),
        tokens,
        seconds,
        tokens / max(seconds, 1e-9),
        100.0 * correct / max(1, len(flat)),
    )


def _distinct(texts: list[str]) -> list[str]:
    return list(dict.fromkeys(texts))


def build_pairs(
    rows: Sequence[Example],
    prompts: Sequence[str],
    groups: Sequence[Sequence[Sample]],
    pairs_per_prompt: int,
    seed: int,
) -> tuple[list[Pair], PairStats]:
    """IRPO step 3: up to ``pairs_per_prompt`` (correct, incorrect) pairs per prompt, gold among winners."""
    generator = make_generator(seed)
    pairs: list[Pair] = []
    without_loser = gold_only = 0
    for index, (row, prompt, group) in enumerate(zip(rows, prompts, groups, strict=True)):
        sampled_winners = _distinct([s.text for s in group if s.correct])
        winners = _distinct([*sampled_winners, row.solution])
        losers = _distinct([s.text for s in group if not s.correct])
        gold_only += not sampled_winners
        if not losers:
            without_loser += 1
            continue
        count = min(pairs_per_prompt, len(winners) * len(losers))
        for combo in torch.randperm(len(winners) * len(losers), generator=generator)[:count].tolist():
            chosen, rejected = winners[combo // len(losers)], losers[combo % len(losers)]
            pairs.append(Pair(index, prompt, chosen, rejected, chosen_is_gold=chosen == row.solution))
    samples = [s for group in groups for s in group]
    stats = PairStats(
        prompts=len(rows),
        prompts_with_pairs=len({p.prompt_index for p in pairs}),
        prompts_without_loser=without_loser,
        gold_only_prompts=gold_only,
        pairs=len(pairs),
        gold_pairs=sum(p.chosen_is_gold for p in pairs),
        sample_accuracy=sum(s.correct for s in samples) / max(1, len(samples)),
    )
    return pairs, stats


def pairs_dataset(pairs: Sequence[Pair], tokenizer: PreTrainedTokenizerBase) -> Dataset:
    """The pairs as TRL's tokenized preference rows, cut by :func:`nora.trainer.tokens.encode_pair`."""
    return Dataset.from_list(preference_rows(tokenizer, pairs))


class PretokenizedDPOTrainer(DPOTrainer):  # type: ignore[misc]
    """TRL's ``DPOTrainer`` on rows that are already token ids: it skips TRL's own tokenization, which
    re-tokenizes prompt + completion together and so cuts them at a different token than sampling does."""

    def _prepare_dataset(self, dataset: Dataset, *args: Any, **kwargs: Any) -> Dataset:
        return dataset


def dpo_config(config: IrpoConfig, output_dir: Path, dropout: float) -> DPOConfig:
    """TRL's config for one IRPO round: bf16 and gradient checkpointing on CUDA, plain float32 on CPU."""
    cuda = torch.cuda.is_available()
    seed = derive_seed(config.seed, "train") % (2**31)
    return DPOConfig(
        output_dir=str(output_dir),
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        beta=config.beta,
        loss_type=config.loss_types,
        loss_weights=config.loss_weights,
        max_length=None,
        seed=seed,
        data_seed=seed,
        use_cpu=not cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        gradient_checkpointing=cuda,
        disable_dropout=dropout == 0.0,
        report_to="none",
        save_strategy="no",
        logging_steps=max(1, config.max_steps // 10),
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


class _ProgressCallback(TrainerCallback):  # type: ignore[misc]
    """Logs TRL's training metrics to the ``nora.trainer`` logger with a step rate."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if not logs or "loss" not in logs:
            return
        seconds = time.monotonic() - self.started
        log.info(
            "training: step %d/%d loss %.4f reward accuracy %.2f (%.2f steps/s)",
            state.global_step,
            state.max_steps,
            float(logs["loss"]),
            float(logs.get("rewards/accuracies", float("nan"))),
            state.global_step / max(seconds, 1e-9),
        )


def train_dpo(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[Pair],
    config: IrpoConfig,
    scratch: Path,
    dropout: float = 0.0,
    *,
    trainer_class: type[DPOTrainer] = PretokenizedDPOTrainer,
    callbacks: Sequence[TrainerCallback] = (),
    resume_from: Path | None = None,
) -> TrainStats:
    """IRPO step 4: DPO (+ NLL for ``irpo``) on ``pairs``; trains ``model``'s ``default`` adapter in place.

    ``resume_from`` is a checkpoint folder ``trainer_class`` can load (:mod:`nora.trainer.checkpoint`);
    the run then continues from its step up to ``config.max_steps`` in total.
    """
    started = time.monotonic()
    trainer = trainer_class(
        model=model,
        args=dpo_config(config, scratch / "dpo", dropout),
        train_dataset=pairs_dataset(pairs, tokenizer),
        processing_class=tokenizer,
        callbacks=[_ProgressCallback(), *callbacks],
    )
    trainer.remove_callback(PrinterCallback)
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    model.eval()
    return _train_stats(trainer.state.log_history, result.global_step, result.training_loss, started)


def _train_stats(
    history: list[dict[str, float]], steps: int, train_loss: float | None, started: float
) -> TrainStats:
    losses = [entry for entry in history if "loss" in entry]
    tokens = max((int(entry.get("num_tokens", 0)) for entry in history), default=0)
    return TrainStats(
        steps=steps,
        train_loss=train_loss,
        loss_first=float(losses[0]["loss"]) if losses else None,
        loss_last=float(losses[-1]["loss"]) if losses else None,
        reward_accuracy_last=float(losses[-1].get("rewards/accuracies", 0.0)) if losses else None,
        tokens=tokens,
        seconds=time.monotonic() - started,
    )
