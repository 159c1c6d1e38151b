"""Score finished genomes on a test split: each adapter's greedy accuracy and the top-k majority vote.

The overfitting guard: fitness picked the genomes on the eval split, so their eval accuracy flatters
them; a split that fitness never saw does not. :func:`score_adapters` takes the best genome first (and
the next ``k - 1`` fittest for GENOME+'s ensemble); the quality benchmark calls it at the end of each
run, and ``nora test-score`` (:mod:`nora.trainer.heldout_command`) at the end of a Population's run.
Nothing is trained and nothing is written.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nora.genetics import Genome
from nora.genetics.ensemble import ensemble_answers, exact_match
from nora.trainer import models
from nora.trainer.data import Example, format_prompts
from nora.trainer.evaluate import greedy_accuracy
from nora.trainer.irpo_config import BaseModelRef, IrpoConfig


@dataclass(frozen=True)
class TestScore:
    """Greedy test accuracy of each adapter (in the order given) and of their majority vote.

    Attributes:
        accuracy: one value per adapter, in input order (best genome first).
        ensemble: exact match of the members' majority vote (``None`` with fewer than 2 members).
        rows: test rows scored.
        tokens: tokens generated, all adapters together.
    """

    accuracy: tuple[float, ...]
    ensemble: float | None
    rows: int
    tokens: int


def answers_of(
    model: Any, tokenizer: Any, rows: Sequence[Example], config: IrpoConfig
) -> tuple[list[str | None], int]:
    """Each row's extracted greedy answer under ``model``, and the tokens generated."""
    prompts = format_prompts(rows, config.prompt_template)
    result = greedy_accuracy(model, tokenizer, rows, prompts, config)
    return [record["extracted"] for record in result.records], result.tokens


def score_adapters(
    base: BaseModelRef,
    adapters: Sequence[Genome | None],
    rows: Sequence[Example],
    config: IrpoConfig,
    ensemble: Sequence[int] | None = None,
) -> TestScore:
    """Greedy accuracy of base + each adapter on ``rows`` and of the members' majority vote.

    Each adapter generates once, all rows batched (``config.generation_batch_size`` sequences per call);
    the vote reuses those answers, so the ensemble costs no generation of its own.

    Args:
        base: the base model (loaded once; each adapter is attached, scored and detached).
        adapters: fittest first; ``None`` scores the bare base model.
        rows: the test split.
        config: answer pattern, prompt template, generation budget and batch size.
        ensemble: the members' indices in ``adapters``, fittest first (default: every adapter).
    """
    source = models.resolve_model(base.uri)
    tokenizer = models.load_tokenizer(source, base)
    model: Any = models.load_base_model(source, base)
    members: list[list[str | None]] = []
    tokens = 0
    for genome in adapters:
        if genome is None:
            answers, used = answers_of(model, tokenizer, rows, config)
        else:
            with tempfile.TemporaryDirectory(prefix="nora-test-") as scratch:
                attached = models.attach_genome(model, genome, 0.0, Path(scratch))
                answers, used = answers_of(attached, tokenizer, rows, config)
                model = attached.unload()
        members.append(answers)
        tokens += used
    gold = [row.answer for row in rows]
    accuracy = tuple(exact_match(answers, gold) for answers in members)
    voters = [members[i] for i in ensemble] if ensemble is not None else members
    vote = exact_match(ensemble_answers(voters), gold) if len(voters) > 1 else None
    return TestScore(accuracy=accuracy, ensemble=vote, rows=len(rows), tokens=tokens)
