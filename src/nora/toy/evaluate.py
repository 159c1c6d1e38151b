"""Load a toy (or any causal LM) model directory and measure it on toy rows.

Greedy exact-match accuracy is what the build records and what the trainer's fitness means; the mixed
sample fraction (prompts whose sampled answers are partly right) tells whether IRPO will find pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from nora.api.defaults import DEFAULT_ANSWER_PATTERN, DEFAULT_PROMPT_TEMPLATE
from nora.toy.data import Row, extract_answer


def load_toy_model(model_dir: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a model directory the way any Hugging Face model is loaded (no network)."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32)
    model.train(False)
    return model, tokenizer


def generate_completions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int,
    *,
    samples: int = 1,
    temperature: float = 0.0,
    batch_size: int = 64,
) -> list[list[str]]:
    """``samples`` completions per prompt: greedy when ``temperature`` is 0, else sampled (global RNG)."""
    sampling: dict[str, Any] = {"do_sample": False}
    if temperature > 0:
        sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
    results: list[list[str]] = []
    for start in range(0, len(prompts), batch_size):
        batch = list(prompts[start : start + batch_size])
        encoded = tokenizer(batch, return_tensors="pt", padding=True, padding_side="left")
        with torch.no_grad():
            output = cast(Any, model).generate(
                **encoded,
                max_new_tokens=max_new_tokens,
                num_return_sequences=samples,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                **sampling,
            )
        texts = tokenizer.batch_decode(output[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
        results.extend(texts[i : i + samples] for i in range(0, len(texts), samples))
    return results


def _max_new_tokens(tokenizer: PreTrainedTokenizerBase, rows: Sequence[Row], limit: int | None) -> int:
    if limit is not None:
        return limit
    lengths = tokenizer([row["solution"] for row in rows], add_special_tokens=False)["input_ids"]
    return max(len(ids) for ids in lengths) + 8


def _prompts(rows: Sequence[Row]) -> list[str]:
    return [DEFAULT_PROMPT_TEMPLATE.format(question=row["question"]) for row in rows]


def accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[Row],
    max_new_tokens: int | None = None,
) -> float:
    """Greedy exact-match accuracy of ``model`` on ``rows`` (answers extracted with the default pattern)."""
    if not rows:
        raise ValueError("no rows to evaluate")
    budget = _max_new_tokens(tokenizer, rows, max_new_tokens)
    completions = generate_completions(model, tokenizer, _prompts(rows), budget)
    hits = sum(
        extract_answer(c[0], DEFAULT_ANSWER_PATTERN) == row["answer"]
        for c, row in zip(completions, rows, strict=True)
    )
    return hits / len(rows)


def evaluate_accuracy(model_dir: Path, rows: Sequence[Row], max_new_tokens: int | None = None) -> float:
    """Greedy exact-match accuracy of the model saved in ``model_dir`` on ``rows``."""
    model, tokenizer = load_toy_model(model_dir)
    return accuracy(model, tokenizer, rows, max_new_tokens)


def mixed_sample_fraction(
    model_dir: Path,
    rows: Sequence[Row],
    samples: int = 8,
    temperature: float = 1.0,
    seed: int = 0,
    max_new_tokens: int | None = None,
) -> float:
    """Fraction of prompts whose ``samples`` sampled answers include both a correct and an incorrect one."""
    model, tokenizer = load_toy_model(model_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        completions = generate_completions(
            model,
            tokenizer,
            _prompts(rows),
            _max_new_tokens(tokenizer, rows, max_new_tokens),
            samples=samples,
            temperature=temperature,
            batch_size=max(1, 256 // samples),
        )
    mixed = 0
    for group, row in zip(completions, rows, strict=True):
        correct = {extract_answer(text) == row["answer"] for text in group}
        mixed += correct == {True, False}
    return mixed / len(rows)
