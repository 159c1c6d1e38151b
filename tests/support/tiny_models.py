"""Tiny random-initialised causal LMs of real architectures, each with a BPE tokenizer trained here.

Nothing is downloaded: :func:`train_bpe_tokenizer` trains a byte-level BPE tokenizer on a small
arithmetic corpus with the ``tokenizers`` library, and :func:`build_tiny_model` builds a one- or
two-layer model of the named architecture from its transformers config (hidden size 32), seeds its weights,
and saves it with the tokenizer in Hugging Face format. Qwen2 gets a ChatML chat template, as Qwen2's
chat models have. :data:`ARCHITECTURES` names every architecture the trainer is tested on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    LlamaConfig,
    MistralConfig,
    Phi3Config,
    PretrainedConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2MoeConfig,
)

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
ARCHITECTURES = ("llama", "mistral", "qwen2", "phi3", "gemma2", "qwen2_moe")
HIDDEN = 32


def arithmetic_rows(count: int, offset: int = 0) -> list[dict[str, str]]:
    """``count`` rows ``{"question", "solution", "answer"}`` of two-number sums (deterministic)."""
    rows = []
    for index in range(offset, offset + count):
        a, b = index % 7 + 1, index % 5 + 2
        rows.append(
            {
                "question": f"What is {a} + {b}?",
                "solution": f"{a}+{b}={a + b}\n#### {a + b}",
                "answer": str(a + b),
            }
        )
    return rows


def write_rows(path: Path, rows: list[dict[str, str]]) -> Path:
    """``rows`` as a JSONL file at ``path``."""
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _corpus() -> list[str]:
    lines = []
    for row in arithmetic_rows(60):
        lines.append(f"Question: {row['question']}\nAnswer: {row['solution']}")
        lines.append(f"{IM_START}user\n{row['question']}{IM_END}\n{IM_START}assistant\n{row['solution']}")
    return lines


def train_bpe_tokenizer(chat: bool = False, vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on an arithmetic corpus; ChatML template when ``chat``."""
    specials = [PAD, BOS, EOS, IM_START, IM_END]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=IM_END if chat else EOS,
        additional_special_tokens=[IM_START, IM_END] if chat else None,
    )
    if chat:
        fast.chat_template = CHATML_TEMPLATE
    return fast


def _common(tokenizer: PreTrainedTokenizerFast) -> dict[str, Any]:
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": HIDDEN,
        "intermediate_size": 2 * HIDDEN,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 256,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "tie_word_embeddings": False,
    }


def model_config(architecture: str, tokenizer: PreTrainedTokenizerFast) -> PretrainedConfig:
    """The transformers config of a tiny ``architecture`` model over ``tokenizer``'s vocabulary."""
    common = _common(tokenizer)
    if architecture == "llama":
        return LlamaConfig(**common)
    if architecture == "mistral":
        return MistralConfig(**common, sliding_window=64)
    if architecture == "qwen2":
        return Qwen2Config(**common)
    if architecture == "phi3":
        return Phi3Config(**common)
    if architecture == "gemma2":
        return Gemma2Config(**common, head_dim=16, sliding_window=64)
    if architecture == "qwen2_moe":
        return Qwen2MoeConfig(
            **common,
            moe_intermediate_size=HIDDEN,
            shared_expert_intermediate_size=2 * HIDDEN,
            num_experts=4,
            num_experts_per_tok=2,
        )
    raise ValueError(f"unknown architecture {architecture!r}; one of {', '.join(ARCHITECTURES)}")


def build_tiny_model(
    folder: Path,
    architecture: str,
    *,
    seed: int = 0,
    generation_config: dict[str, Any] | None = None,
) -> Path:
    """A seeded random ``architecture`` model and its BPE tokenizer saved in ``folder`` (safetensors).

    ``generation_config`` entries (e.g. ``{"repetition_penalty": 1.5}``) are written to the model's
    ``generation_config.json``, as a published model ships them.
    """
    tokenizer = train_bpe_tokenizer(chat=architecture == "qwen2")
    config = model_config(architecture, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    for key, value in (generation_config or {}).items():
        setattr(model.generation_config, key, value)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder
