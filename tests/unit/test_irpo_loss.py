"""The IRPO loss TRL optimises, checked against a hand computation on a fixed tiny batch.

TRL 1.16's ``DPOTrainer`` with ``loss_type=["sigmoid", "sft"]`` and ``loss_weights=[1, w]`` computes, for a
batch of pairs:

    mean_i -log sigmoid(beta * ((pi_c,i - ref_c,i) - (pi_r,i - ref_r,i)))
    + w * (sum over every chosen-completion token of the batch of -log p) / (number of those tokens)

with ``pi``/``ref`` the completion log-probabilities SUMMED over completion tokens (EOS included, prompt
excluded) under the policy and the reference. The NLL term is a token-weighted mean over the whole batch,
not a mean of per-sequence means (IRPO's paper normalises each sequence by its length). The hand
computation below uses two independent models (base + trained adapter, base + starting adapter) and
plain Python sums; ``nora.trainer.evaluate.irpo_loss`` must agree with both.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from peft import PeftModel
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase

from nora.genetics import Genome, init_genome, make_generator, save_genome
from nora.trainer import models
from nora.trainer.evaluate import PairLogps, irpo_loss, pair_logps
from nora.trainer.irpo_config import BaseModelRef, IrpoConfig
from nora.trainer.irpo_trainer import Pair, PretokenizedDPOTrainer, dpo_config, pairs_dataset
from nora.trainer.targets import resolve_targets
from nora.trainer.tokens import encode_pair
from tests.unit.test_trainer_models import build_tiny_llama

PAIRS = [
    Pair(0, "Question: What is 12 + 30?\nAnswer: ", "2+0=2, 2\n1+3=4, 42\n#### 42", "#### 41", True),
    Pair(1, "Question: What is 7 + 5?\nAnswer: ", "7+5=12, 12\n#### 12", "7+5=11, 11\n#### 11", True),
    Pair(2, "Question: What is 9 + 9?\nAnswer: ", "9+9=18, 18\n#### 18", "", False),
]
BETA, NLL_WEIGHT = 0.3, 0.7


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def _peft(model_dir: Path, genome: Genome, folder: Path) -> PeftModel:
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(save_genome(genome, folder, overwrite=True)))
    model.eval()
    return model


def _hand_logps(model: PeftModel, tokenizer: PreTrainedTokenizerBase, pair: Pair) -> tuple[float, float, int]:
    """(chosen logp sum, rejected logp sum, chosen token count), one sequence at a time."""
    prompt, chosen, rejected = encode_pair(tokenizer, pair)
    sums = []
    for completion in (chosen, rejected):
        ids = torch.tensor([prompt + completion])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0]
        total = 0.0
        for position in range(len(prompt), len(prompt) + len(completion)):
            total += float(F.log_softmax(logits[position - 1], dim=-1)[ids[0, position]])
        sums.append(total)
    return sums[0], sums[1], len(chosen)


def _hand_loss(policy: PeftModel, reference: PeftModel, tokenizer: PreTrainedTokenizerBase) -> float:
    dpo_terms, nll_sum, tokens = [], 0.0, 0
    for pair in PAIRS:
        pc, pr, count = _hand_logps(policy, tokenizer, pair)
        rc, rr, _ = _hand_logps(reference, tokenizer, pair)
        margin = (pc - rc) - (pr - rr)
        dpo_terms.append(math.log1p(math.exp(-BETA * margin)))  # -log sigmoid(beta * margin)
        nll_sum -= pc
        tokens += count
    return sum(dpo_terms) / len(dpo_terms) + NLL_WEIGHT * nll_sum / tokens


def test_trl_loss_on_a_fixed_batch_equals_the_hand_computation(tiny_model_dir: Path, tmp_path: Path) -> None:
    tokenizer = models.load_tokenizer(
        models.ModelSource(str(tiny_model_dir), None, True), BaseModelRef(uri=str(tiny_model_dir))
    )
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    shapes = resolve_targets(base, ("q_proj", "v_proj")).shapes
    start = init_genome(
        shapes, 4, 8.0, make_generator(3), b_std=0.05, config={"target_modules": ["q_proj", "v_proj"]}
    )
    model = models.attach_genome(base, start, 0.0, tmp_path)
    config = IrpoConfig(beta=BETA, nll_weight=NLL_WEIGHT, max_steps=1, batch_size=len(PAIRS))
    trainer = PretokenizedDPOTrainer(
        model=model,
        args=dpo_config(config, tmp_path / "dpo", 0.0),
        train_dataset=pairs_dataset(PAIRS, tokenizer),
        processing_class=tokenizer,
    )
    assert "ref" in model.peft_config  # TRL froze a copy of the starting adapter as the reference
    generator = make_generator(5)
    with torch.no_grad():  # move the policy away from the reference so the DPO term is not log 2
        for name, param in model.named_parameters():
            if ".default." in name:
                param.add_(torch.randn(param.shape, generator=generator) * 0.05)
    trained = models.extract_genome(model, start)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(PAIRS))])
    model.eval()
    with torch.no_grad():
        trl_loss = float(trainer.compute_loss(model, batch))

    policy = _peft(tiny_model_dir, trained, tmp_path / "policy")
    reference = _peft(tiny_model_dir, start, tmp_path / "reference")
    hand = _hand_loss(policy, reference, tokenizer)
    ours = irpo_loss(
        pair_logps(policy, tokenizer, PAIRS), pair_logps(reference, tokenizer, PAIRS), BETA, NLL_WEIGHT
    )

    assert hand > math.log(2) * 0.5  # a real, non-degenerate value
    assert trl_loss == pytest.approx(hand, rel=1e-5, abs=1e-6)
    assert ours.irpo_loss == pytest.approx(hand, rel=1e-5, abs=1e-6)
    assert ours.pairs == len(PAIRS)


def test_trl_trains_on_our_tokenization_of_pairs(tiny_model_dir: Path, tmp_path: Path) -> None:
    tokenizer = models.load_tokenizer(
        models.ModelSource(str(tiny_model_dir), None, True), BaseModelRef(uri=str(tiny_model_dir))
    )
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    start = init_genome(resolve_targets(base, ("q_proj",)).shapes, 2, 4.0, make_generator(0))
    model = models.attach_genome(base, replace(start, config={"target_modules": ["q_proj"]}), 0.0, tmp_path)
    trainer = PretokenizedDPOTrainer(
        model=model,
        args=dpo_config(IrpoConfig(max_steps=1), tmp_path / "dpo", 0.0),
        train_dataset=pairs_dataset(PAIRS, tokenizer),
        processing_class=tokenizer,
    )
    for index, pair in enumerate(PAIRS):
        row = trainer.train_dataset[index]
        prompt, chosen, rejected = encode_pair(tokenizer, pair)
        assert (row["prompt_ids"], row["chosen_ids"], row["rejected_ids"]) == (prompt, chosen, rejected)
        assert chosen[-1] == tokenizer.eos_token_id  # every completion ends with EOS


def test_irpo_loss_of_identical_policy_and_reference_is_log2_plus_nll() -> None:
    logps = PairLogps(
        chosen=torch.tensor([-3.0, -5.0]),
        rejected=torch.tensor([-9.0, -1.0]),
        chosen_nll_sum=8.0,
        chosen_tokens=16,
    )
    loss = irpo_loss(logps, logps, beta=0.1, nll_weight=2.0)
    assert loss.dpo_loss == pytest.approx(math.log(2))
    assert loss.nll == pytest.approx(0.5)
    assert loss.irpo_loss == pytest.approx(math.log(2) + 1.0)
