"""The prompt/completion boundary is cut at the same token in sampling, training and evaluation.

With a BPE tokenizer and the default prompt template (which ends with a space), tokenizing prompt +
completion as one text merges the space into the completion's first token, so TRL's own preprocessing
cuts the sequence elsewhere than sampling does. The trainer tokenizes prompts and completions apart
(``nora.trainer.tokens``) and feeds TRL the token ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from datasets import Dataset
from transformers import PreTrainedTokenizerBase
from trl.trainer.dpo_trainer import DPOTrainer

from nora.api.defaults import DEFAULT_PROMPT_TEMPLATE
from nora.trainer import evaluate, irpo_trainer, models
from nora.trainer.data import Example
from nora.trainer.evaluate import greedy_accuracy
from nora.trainer.generation import generate
from nora.trainer.irpo_config import AdapterRef, BaseModelRef, IrpoConfig
from nora.trainer.irpo_trainer import Pair, PretokenizedDPOTrainer, dpo_config, pairs_dataset, sample_answers
from nora.trainer.targets import resolve_targets
from nora.trainer.tokens import encode_pair, encode_prompt
from tests.support.tiny_models import arithmetic_rows, build_tiny_model

pytestmark = pytest.mark.slow
ROW = Example(**arithmetic_rows(1)[0])
PROMPT = DEFAULT_PROMPT_TEMPLATE.format(question=ROW.question)
CONFIG = IrpoConfig(samples_per_prompt=2, max_new_tokens=4, max_steps=1, batch_size=1)


def load(folder: Path) -> tuple[Any, PreTrainedTokenizerBase]:
    source = models.ModelSource(str(folder), None, True)
    tokenizer = models.load_tokenizer(source, BaseModelRef(uri=str(folder)))
    return models.load_base_model(source, BaseModelRef(uri=str(folder), dtype="float32")), tokenizer


def trainer_for(
    model: Any, tokenizer: PreTrainedTokenizerBase, dataset: Dataset, scratch: Path, kind: type[DPOTrainer]
) -> DPOTrainer:
    targets = resolve_targets(model, AdapterRef().target_modules)
    genome = models.fresh_genome(targets, AdapterRef(rank=2), seed=0, base_uri="file:///m")
    return kind(
        model=models.attach_genome(model, genome, 0.0, scratch),
        args=dpo_config(CONFIG, scratch / "dpo", 0.0),
        train_dataset=dataset,
        processing_class=tokenizer,
    )


def test_sampling_training_and_evaluation_cut_at_the_same_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = build_tiny_model(tmp_path / "llama", "llama")
    model, tokenizer = load(folder)
    prompt_ids = [int(i) for i in tokenizer(PROMPT)["input_ids"]]
    assert PROMPT.endswith(" ")
    joint = [int(i) for i in tokenizer(PROMPT + ROW.solution)["input_ids"]]
    assert joint[: len(prompt_ids)] != prompt_ids  # BPE merges the space: one text would cut elsewhere

    generated_from: list[list[int]] = []

    def spy(model: Any, tokenizer: Any, ids: Sequence[list[int]], *args: Any, **kwargs: Any) -> Any:
        generated_from.extend(list(i) for i in ids)
        return generate(model, tokenizer, ids, *args, **kwargs)

    monkeypatch.setattr(irpo_trainer, "generate", spy)
    monkeypatch.setattr(evaluate, "generate", spy)
    samples = sample_answers(model, tokenizer, [ROW], [PROMPT], CONFIG, "train")
    greedy_accuracy(model, tokenizer, [ROW], [PROMPT], CONFIG)
    assert generated_from == [prompt_ids, prompt_ids]  # sampling and greedy evaluation

    pair = Pair(0, PROMPT, ROW.solution, samples[0][0].text, True)
    trainer = trainer_for(
        model, tokenizer, pairs_dataset([pair], tokenizer), tmp_path, PretokenizedDPOTrainer
    )
    row = trainer.train_dataset[0]
    chosen = [int(i) for i in tokenizer(ROW.solution, add_special_tokens=False)["input_ids"]]
    assert row["prompt_ids"] == prompt_ids
    assert row["chosen_ids"] == [*chosen, tokenizer.eos_token_id]
    batch = trainer.data_collator([row])
    length = int(batch["attention_mask"][0].sum())
    assert batch["input_ids"][0, :length].tolist() == prompt_ids + row["chosen_ids"]
    assert batch["completion_mask"][0, :length].tolist() == [0] * len(prompt_ids) + [1] * len(
        row["chosen_ids"]
    )
    assert encode_pair(tokenizer, pair) == (row["prompt_ids"], row["chosen_ids"], row["rejected_ids"])

    text = Dataset.from_list([{"prompt": PROMPT, "chosen": ROW.solution, "rejected": "x"}])
    stock = trainer_for(load(folder)[0], tokenizer, text, tmp_path / "stock", DPOTrainer)
    assert stock.train_dataset[0]["prompt_ids"] != prompt_ids  # what TRL alone would have trained on


def test_a_chat_template_cut_follows_the_rendered_conversation(tmp_path: Path) -> None:
    model, tokenizer = load(build_tiny_model(tmp_path / "qwen2", "qwen2"))
    pair = Pair(0, PROMPT, ROW.solution, "#### 1", True)
    prompt, chosen, rejected = encode_pair(tokenizer, pair)
    assert prompt == encode_prompt(tokenizer, PROMPT)
    messages = [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": ROW.solution}]
    assert tokenizer.decode(prompt + chosen) == tokenizer.apply_chat_template(messages, tokenize=False)
    assert tokenizer.decode(prompt).endswith("<|im_start|>assistant\n")
    assert tokenizer.eos_token_id in chosen  # <|im_end|> ends the assistant turn
    assert tokenizer.eos_token_id in rejected
    dataset = pairs_dataset([pair], tokenizer)
    row = trainer_for(model, tokenizer, dataset, tmp_path, PretokenizedDPOTrainer).train_dataset[0]
    assert (row["prompt_ids"], row["chosen_ids"], row["rejected_ids"]) == (prompt, chosen, rejected)
