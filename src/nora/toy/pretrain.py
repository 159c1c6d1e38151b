"""Deterministic CPU pre-training of the toy model on prompt + solution.

A seeded share of the examples (``ToyTrainConfig.direct_answer_fraction``, half by default) shows only
the bare final line instead of the worked solution (see :func:`nora.toy.data.with_direct_answers`). The
loss covers the completion (solution and ``</s>``) only. All randomness is explicit: the weights are
initialised inside ``torch.random.fork_rng`` from the seed, the data order comes from a seeded
``torch.Generator``, there is no dropout, the thread count is fixed and deterministic algorithms are on,
so the same seed and configs give byte-identical weights on a given machine.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from nora.api.defaults import DEFAULT_PROMPT_TEMPLATE
from nora.toy.cache import ToyBuild, ToyModelInfo, write_toy_info
from nora.toy.config import Progress, ToyModelConfig, ToyTrainConfig
from nora.toy.data import Row, generate_rows, iter_rows, with_direct_answers
from nora.toy.evaluate import accuracy
from nora.toy.tokenizer import build_tokenizer, toy_alphabet

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Encoded:
    """A tokenised training example: input ids and labels (prompt positions masked)."""

    input_ids: list[int]
    labels: list[int]


def llama_config(model: ToyModelConfig, tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    """The ``LlamaConfig`` for ``model`` over ``tokenizer``'s vocabulary."""
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=model.hidden_size,
        intermediate_size=model.intermediate_size,
        num_hidden_layers=model.num_layers,
        num_attention_heads=model.num_heads,
        num_key_value_heads=model.num_kv_heads,
        max_position_embeddings=model.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": model.rope_theta},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        attention_dropout=0.0,
    )


def init_model(config: LlamaConfig, seed: int) -> LlamaForCausalLM:
    """A freshly initialised model whose weights depend on ``seed`` only (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model


def encode_rows(rows: Sequence[Row], tokenizer: PreTrainedTokenizerFast) -> list[Encoded]:
    """Tokenise ``prompt + solution + </s>``, masking the prompt out of the labels."""
    prompts = [DEFAULT_PROMPT_TEMPLATE.format(question=row["question"]) for row in rows]
    prompt_ids = tokenizer(prompts)["input_ids"]
    completion_ids = tokenizer([row["solution"] for row in rows], add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    encoded: list[Encoded] = []
    for p_ids, c_ids in zip(prompt_ids, completion_ids, strict=True):
        completion = [*c_ids, eos]
        encoded.append(
            Encoded(input_ids=[*p_ids, *completion], labels=[IGNORE_INDEX] * len(p_ids) + completion)
        )
    return encoded


def collate(batch: Sequence[Encoded], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``(input_ids, labels)``; padding only follows real tokens, so no mask is needed."""
    width = max(len(item.input_ids) for item in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    for i, item in enumerate(batch):
        input_ids[i, : len(item.input_ids)] = torch.tensor(item.input_ids)
        labels[i, : len(item.labels)] = torch.tensor(item.labels)
    return input_ids, labels


def batch_order(n_items: int, batch_size: int, steps: int, seed: int) -> Iterator[list[int]]:
    """Indices of each step's batch: epochs of seeded permutations, cut into batches."""
    generator = torch.Generator().manual_seed(seed)
    buffer: list[int] = []
    for _ in range(steps):
        while len(buffer) < batch_size:
            buffer.extend(torch.randperm(n_items, generator=generator).tolist())
        yield buffer[:batch_size]
        buffer = buffer[batch_size:]


def lr_factor(step: int, train: ToyTrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio``."""
    if step < train.warmup_steps:
        return (step + 1) / train.warmup_steps
    progress = (step - train.warmup_steps) / max(1, train.steps - train.warmup_steps)
    return train.min_lr_ratio + (1 - train.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@contextmanager
def deterministic_cpu(num_threads: int) -> Iterator[None]:
    """Fix the thread count and turn deterministic algorithms on, restoring both afterwards."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(num_threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)


def pretrain(
    model: LlamaForCausalLM,
    examples: Sequence[Encoded],
    train: ToyTrainConfig,
    seed: int,
    pad_id: int,
    progress: Progress | None = None,
) -> list[float]:
    """Train ``model`` in place for ``train.steps`` steps and return the per-step losses.

    ``progress(step, steps, loss)`` is called every 50 steps and after the last one.
    """
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=train.learning_rate,
        betas=(0.9, 0.98),
        foreach=False,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, train))
    losses: list[float] = []
    model.train()
    with deterministic_cpu(train.num_threads):
        for indices in batch_order(len(examples), train.batch_size, train.steps, seed):
            input_ids, labels = collate([examples[i] for i in indices], pad_id)
            loss = model(input_ids=input_ids, labels=labels).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            if progress is not None and (len(losses) % 50 == 0 or len(losses) == train.steps):
                progress(len(losses), train.steps, losses[-1])
    model.train(False)
    return losses


def _save(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, out_dir: Path) -> None:
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    bars = hf_logging.is_progress_bar_enabled()  # no "Writing model shards" bar amid a CLI's output
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        model.save_pretrained(out_dir, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)
    finally:
        if bars:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


def train_into(out_dir: Path, build: ToyBuild, key: str, progress: Progress | None = None) -> ToyModelInfo:
    """Pre-train, evaluate and save one toy model into ``out_dir``, ``nora-toy.json`` last."""
    started = time.monotonic()
    tokenizer = build_tokenizer(toy_alphabet([DEFAULT_PROMPT_TEMPLATE]), build.model.max_position_embeddings)
    rows = list(
        itertools.islice(iter_rows(build.seed, "train", build.task, stream="pretrain"), build.train.pool_size)
    )
    examples = encode_rows(
        with_direct_answers(rows, build.train.direct_answer_fraction, build.seed), tokenizer
    )
    model = init_model(llama_config(build.model, tokenizer), build.seed)
    losses = pretrain(model, examples, build.train, build.seed, tokenizer.pad_token_id, progress)
    eval_rows = generate_rows(build.evaluation.data_seed, build.evaluation.rows, "eval", build.task)
    with deterministic_cpu(build.train.num_threads):
        eval_accuracy = accuracy(model, tokenizer, eval_rows, build.evaluation.max_new_tokens)
    _save(model, tokenizer, out_dir)
    info = ToyModelInfo(
        key=key,
        seed=build.seed,
        eval_accuracy=eval_accuracy,
        eval_rows=len(eval_rows),
        final_loss=sum(losses[-20:]) / max(1, len(losses[-20:])),
        build_seconds=round(time.monotonic() - started, 1),
    )
    write_toy_info(out_dir, info)
    return info
