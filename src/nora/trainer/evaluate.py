"""IRPO step 5: greedy exact-match accuracy on the eval split and the held-out IRPO loss.

Accuracy: greedy completions of the first ``eval_prompts`` eval rows, answer extracted with
``answer_pattern``, exact match with the row's answer; every completion is returned so ``samples.jsonl``
can be recounted. Held-out IRPO loss: pairs are built from the first ``heldout_prompt_count`` eval prompts
exactly as training pairs are (samples from the starting adapter, gold among winners), and scored as

    mean over pairs of -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))
    + nll_weight * (sum of chosen-completion token NLLs / number of chosen-completion tokens)

where ``pi_*``/``ref_*`` are log-probabilities summed over completion tokens (EOS included) under the
trained and the starting adapter. This is TRL's ``["sigmoid", "sft"]`` loss with the whole held-out set as
one batch: TRL's ``sft`` term is the mean token NLL over a batch's chosen completions (token-weighted, not
a mean of per-sequence means). Sequences are cut into prompt and completion by
:func:`nora.trainer.tokens.encode_pair`, exactly as the training pairs are; greedy decoding uses only the
spec's settings (:mod:`nora.trainer.generation`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from nora.genetics import derive_seed
from nora.trainer.data import Example
from nora.trainer.generation import generate
from nora.trainer.irpo_config import IrpoConfig
from nora.trainer.irpo_trainer import Pair, extract_answer
from nora.trainer.tokens import encode_pair, encode_prompt

log = logging.getLogger("nora.trainer")


@dataclass(frozen=True)
class Accuracy:
    """Greedy exact-match accuracy and one record per eval prompt."""

    accuracy: float
    correct: int
    records: list[dict[str, Any]]
    tokens: int
    seconds: float


@dataclass(frozen=True)
class PairLogps:
    """Summed completion log-probabilities of held-out pairs under one adapter."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_nll_sum: float
    chosen_tokens: int


@dataclass(frozen=True)
class HeldoutLoss:
    """The held-out IRPO loss and its two terms."""

    irpo_loss: float
    dpo_loss: float
    nll: float
    pairs: int


def greedy_accuracy(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[Example],
    prompts: Sequence[str],
    config: IrpoConfig,
) -> Accuracy:
    """Greedy completions of ``prompts`` scored against ``rows``' answers."""
    started = time.monotonic()
    ids = [encode_prompt(tokenizer, prompt) for prompt in prompts]
    seed = derive_seed(config.seed, "greedy")
    batch = config.generation_batch_size
    outputs = generate(
        model, tokenizer, ids, 1, None, config.max_new_tokens, seed=seed, batch_sequences=batch
    )
    records: list[dict[str, Any]] = []
    for index, (row, prompt, output) in enumerate(zip(rows, prompts, outputs, strict=True)):
        text = output[0][0]
        extracted = extract_answer(text, config.answer_pattern)
        records.append(
            {
                "index": index,
                "question": row.question,
                "prompt": prompt,
                "completion": text,
                "extracted": extracted,
                "answer": row.answer,
                "correct": extracted == row.answer,
            }
        )
    correct = sum(bool(r["correct"]) for r in records)
    tokens = sum(output[0][1] for output in outputs)
    seconds = time.monotonic() - started
    log.info(
        "evaluation: %d/%d correct (%.1f%%), %d tokens in %.1fs (%.0f tokens/s)",
        correct,
        len(records),
        100.0 * correct / len(records),
        tokens,
        seconds,
        tokens / max(seconds, 1e-9),
    )
    return Accuracy(correct / len(records), correct, records, tokens, seconds)


def _sequence_logps(
    model: torch.nn.Module, sequences: Sequence[tuple[list[int], list[int]]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sequence: completion log-prob summed over tokens, and the per-token log-probs' count."""
    device = next(model.parameters()).device
    width = max(len(p) + len(c) for p, c in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    completion = torch.zeros((len(sequences), width), dtype=torch.bool)
    for row, (prompt, answer) in enumerate(sequences):
        length = len(prompt) + len(answer)
        input_ids[row, :length] = torch.tensor(prompt + answer, dtype=torch.long)
        attention[row, :length] = 1
        completion[row, len(prompt) : length] = True
    logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits.float().cpu()
    token_logps = torch.gather(F.log_softmax(logits[:, :-1], dim=-1), 2, input_ids[:, 1:, None]).squeeze(2)
    mask = completion[:, 1:]
    return (token_logps * mask).sum(dim=1), mask.sum(dim=1)


def pair_logps(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[Pair], batch_size: int = 16
) -> PairLogps:
    """Summed completion log-probs of each pair's chosen and rejected completion under ``model``."""
    encoded = [encode_pair(tokenizer, pair) for pair in pairs]
    chosen: list[torch.Tensor] = []
    rejected: list[torch.Tensor] = []
    nll_sum, tokens = 0.0, 0
    pad_id = int(tokenizer.pad_token_id)
    model.eval()
    with torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            batch = encoded[start : start + batch_size]
            c_logps, c_counts = _sequence_logps(model, [(p, c) for p, c, _ in batch], pad_id)
            r_logps, _ = _sequence_logps(model, [(p, r) for p, _, r in batch], pad_id)
            chosen.append(c_logps)
            rejected.append(r_logps)
            nll_sum -= float(c_logps.sum())
            tokens += int(c_counts.sum())
    empty = torch.zeros(0)
    return PairLogps(
        chosen=torch.cat(chosen) if chosen else empty,
        rejected=torch.cat(rejected) if rejected else empty,
        chosen_nll_sum=nll_sum,
        chosen_tokens=tokens,
    )


def irpo_loss(policy: PairLogps, reference: PairLogps, beta: float, nll_weight: float) -> HeldoutLoss:
    """DPO sigmoid loss (mean over pairs) + ``nll_weight`` x mean chosen-token NLL, as TRL computes it."""
    if policy.chosen.numel() == 0:
        raise ValueError("no pairs to score")
    margin = (policy.chosen - reference.chosen) - (policy.rejected - reference.rejected)
    dpo = float(-F.logsigmoid(beta * margin).mean())
    nll = policy.chosen_nll_sum / max(1, policy.chosen_tokens)
    pairs = int(policy.chosen.numel())
    return HeldoutLoss(irpo_loss=dpo + nll_weight * nll, dpo_loss=dpo, nll=nll, pairs=pairs)
