"""Sampling and greedy evaluation use only the spec's settings; the model's generation config gives only EOS.

Two copies of one tiny Llama differ only in their ``generation_config.json``: one ships a repetition
penalty, a ban on repeated tokens and a minimum length, as published models ship such settings. Plain
``model.generate`` (which reads that file) answers differently on the two; the trainer's greedy evaluation
and its seeded sampling do not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import PreTrainedTokenizerBase

from nora.api.defaults import DEFAULT_PROMPT_TEMPLATE
from nora.trainer import models
from nora.trainer.data import Example
from nora.trainer.evaluate import greedy_accuracy
from nora.trainer.generation import eos_ids
from nora.trainer.irpo_config import BaseModelRef, IrpoConfig
from nora.trainer.irpo_trainer import sample_answers
from nora.trainer.tokens import encode_prompt
from tests.support.tiny_models import arithmetic_rows, build_tiny_model

pytestmark = pytest.mark.slow
SHIPPED = {"repetition_penalty": 1.8, "no_repeat_ngram_size": 1, "min_new_tokens": 8}
ROWS = [Example(**row) for row in arithmetic_rows(4)]
PROMPTS = [DEFAULT_PROMPT_TEMPLATE.format(question=row.question) for row in ROWS]
CONFIG = IrpoConfig(samples_per_prompt=3, max_new_tokens=12, eval_prompts=4)


def load(folder: Path) -> tuple[Any, PreTrainedTokenizerBase]:
    source = models.ModelSource(str(folder), None, True)
    tokenizer = models.load_tokenizer(source, BaseModelRef(uri=str(folder)))
    return models.load_base_model(source, BaseModelRef(uri=str(folder), dtype="float32")), tokenizer


@pytest.fixture(scope="module")
def pair_of_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("generation")
    plain = build_tiny_model(root / "plain", "llama", seed=4)
    shipped = build_tiny_model(root / "shipped", "llama", seed=4, generation_config=SHIPPED)
    return plain, shipped


def test_the_shipped_generation_config_would_change_plain_greedy_answers(
    pair_of_models: tuple[Path, Path],
) -> None:
    outputs = []
    for folder in pair_of_models:
        model, tokenizer = load(folder)
        assert model.generation_config.repetition_penalty == (1.8 if folder.name == "shipped" else None)
        ids = torch.tensor([encode_prompt(tokenizer, PROMPTS[0])])
        with torch.no_grad():
            output = model.generate(input_ids=ids, max_new_tokens=12, do_sample=False, pad_token_id=0)
        outputs.append(output[0, ids.shape[1] :].tolist())
    assert outputs[0] != outputs[1]


def test_greedy_evaluation_and_sampling_ignore_it(pair_of_models: tuple[Path, Path]) -> None:
    results = []
    for folder in pair_of_models:
        model, tokenizer = load(folder)
        accuracy = greedy_accuracy(model, tokenizer, ROWS, PROMPTS, CONFIG)
        samples = sample_answers(model, tokenizer, ROWS, PROMPTS, CONFIG, "train")
        results.append(([r["completion"] for r in accuracy.records], accuracy.tokens, samples))
        assert model.generation_config.repetition_penalty == (1.8 if folder.name == "shipped" else None)
    assert results[0] == results[1]
    completions = results[0][0]
    assert any(len(set(text)) < len(text) for text in completions)  # repeats the penalty would have stopped


def test_only_the_eos_tokens_come_from_the_model(pair_of_models: tuple[Path, Path]) -> None:
    model, tokenizer = load(pair_of_models[1])
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, 5]
    assert eos_ids(model, tokenizer) == [tokenizer.eos_token_id, 5]
    model.generation_config.eos_token_id = None
    assert eos_ids(model, tokenizer) == [tokenizer.eos_token_id]
