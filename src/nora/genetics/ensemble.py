"""GENOME+'s ensemble: the top-k genomes answer one question each, and the majority answer wins.

Members are given fittest first. A member whose answer could not be extracted (``None``) does not vote.
Ties go to the answer whose best voter ranks highest, so a 1-1 split follows the fitter genome and an
ensemble of one is that genome. Pure Python: no tensors, no model.
"""

from __future__ import annotations

from collections.abc import Sequence

from nora.genetics.errors import GeneticsError


def majority_vote(answers: Sequence[str | None]) -> str | None:
    """The majority answer among ``answers`` (fittest member first), or ``None`` if nobody answered."""
    counts: dict[str, int] = {}
    first_voter: dict[str, int] = {}
    for rank, answer in enumerate(answers):
        if answer is None:
            continue
        counts[answer] = counts.get(answer, 0) + 1
        first_voter.setdefault(answer, rank)
    if not counts:
        return None
    return min(counts, key=lambda answer: (-counts[answer], first_voter[answer]))


def ensemble_answers(member_answers: Sequence[Sequence[str | None]]) -> list[str | None]:
    """Per question, the majority vote of the members' answers.

    Args:
        member_answers: one list per member (fittest first), each with one answer per question.

    Raises:
        GeneticsError: if there are no members or they answered different numbers of questions.
    """
    if not member_answers:
        raise GeneticsError("ensemble: needs at least one member")
    lengths = {len(answers) for answers in member_answers}
    if len(lengths) != 1:
        raise GeneticsError(f"ensemble: members answered different numbers of questions ({sorted(lengths)})")
    return [majority_vote(list(question)) for question in zip(*member_answers, strict=True)]


def exact_match(predictions: Sequence[str | None], gold: Sequence[str]) -> float:
    """Share of ``predictions`` equal to ``gold`` (an unanswered question counts as wrong)."""
    if len(predictions) != len(gold) or not gold:
        raise GeneticsError(f"exact_match: {len(predictions)} predictions for {len(gold)} answers")
    return sum(p == g for p, g in zip(predictions, gold, strict=True)) / len(gold)
