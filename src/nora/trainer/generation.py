"""Text generation for sampling and greedy evaluation, with exactly the spec's settings.

:func:`generate` decodes with the settings it is given and nothing else: pure temperature sampling (no
top-k, no top-p) or greedy decoding, ``max_new_tokens``, and the given number of sequences per prompt.
From the model's own ``generation_config`` (its ``generation_config.json``) it takes only the
end-of-sequence tokens (the tokenizer's EOS when the model names none). Everything else a published model
ships there (``repetition_penalty``, ``top_k``, ``top_p``, ``min_new_tokens``, ``no_repeat_ngram_size``,
...) is ignored: during each call the model's generation config is replaced by one holding only those EOS
tokens, so transformers fills every unset setting with its neutral global default instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from peft import PeftModel
from transformers import GenerationConfig, PreTrainedTokenizerBase


def eos_ids(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The model's end-of-sequence ids (its generation config's, else the tokenizer's EOS)."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if configured is None:
        configured = tokenizer.eos_token_id
    ids = configured if isinstance(configured, list) else [configured]
    return [int(i) for i in ids if i is not None]


def spec_generation_config(
    eos: list[int], pad_id: int, samples: int, temperature: float | None, max_new_tokens: int
) -> GenerationConfig:
    """Every setting a ``generate`` call uses: greedy when ``temperature`` is None, else pure sampling."""
    sampling: dict[str, Any] = {"do_sample": False}
    if temperature is not None:
        sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
    return GenerationConfig(  # type: ignore[no-untyped-call]
        max_new_tokens=max_new_tokens,
        num_return_sequences=samples,
        pad_token_id=pad_id,
        eos_token_id=eos,
        use_cache=True,  # the Trainer sets model.config.use_cache = False
        **sampling,
    )


@contextmanager
def only_eos_from_model(model: torch.nn.Module, eos: list[int]) -> Iterator[None]:
    """While inside, the model's own generation config holds nothing but ``eos``."""
    target: Any = model.get_base_model() if isinstance(model, PeftModel) else model
    saved = target.generation_config
    target.generation_config = GenerationConfig(eos_token_id=eos)  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        target.generation_config = saved


def _left_pad(batch: Sequence[list[int]], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, width - len(ids) :] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}


def _completion_lengths(generated: torch.Tensor, eos: list[int]) -> list[int]:
    """Tokens of each row up to and including its first EOS (the whole row when it has none)."""
    is_eos = torch.zeros_like(generated, dtype=torch.bool)
    for token in eos:
        is_eos |= generated == token
    width = generated.shape[1]
    positions = torch.arange(width, device=generated.device).expand_as(generated)
    first = torch.where(is_eos, positions, torch.full_like(positions, width)).min(dim=1).values
    return [min(int(i) + 1, width) for i in first]


def _generate_batch(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    batch: Sequence[list[int]],
    settings: GenerationConfig,
) -> list[tuple[str, int]]:
    device = next(model.parameters()).device
    encoded = _left_pad(batch, int(settings.pad_token_id), device)
    with torch.no_grad():
        output = model.generate(**encoded, generation_config=settings)  # type: ignore[operator]
    generated = output[:, encoded["input_ids"].shape[1] :].cpu()
    lengths = _completion_lengths(generated, list(settings.eos_token_id))
    return [
        (str(tokenizer.decode(row[:length], skip_special_tokens=True)), length)
        for row, length in zip(generated, lengths, strict=True)
    ]


def generate(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: Sequence[list[int]],
    samples: int,
    temperature: float | None,
    max_new_tokens: int,
    *,
    seed: int,
    batch_sequences: int,
) -> list[list[tuple[str, int]]]:
    """``samples`` completions ``(text, tokens)`` per prompt; greedy when ``temperature`` is None.

    Sampling is seeded with ``seed`` inside ``fork_rng``: the same inputs give the same completions and
    the caller's RNG state is untouched. Only the EOS tokens come from the model's generation config.
    """
    model.eval()
    eos = eos_ids(model, tokenizer)
    settings = spec_generation_config(eos, int(tokenizer.pad_token_id), samples, temperature, max_new_tokens)
    per_batch = max(1, batch_sequences // samples)
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    results: list[list[tuple[str, int]]] = []
    with torch.random.fork_rng(devices=devices), only_eos_from_model(model, eos):
        torch.manual_seed(seed)
        for start in range(0, len(prompt_ids), per_batch):
            flat = _generate_batch(model, tokenizer, prompt_ids[start : start + per_batch], settings)
            results.extend(flat[i : i + samples] for i in range(0, len(flat), samples))
    return results
