"""GENOME+'s top-k ensemble: majority vote with ties to the fitter member."""

from __future__ import annotations

import pytest

from nora.genetics.ensemble import ensemble_answers, exact_match, majority_vote
from nora.genetics.errors import GeneticsError


def test_the_majority_answer_wins() -> None:
    assert majority_vote(["7", "9", "9"]) == "9"


def test_a_tie_goes_to_the_fitter_member() -> None:
    assert majority_vote(["7", "9"]) == "7"
    assert majority_vote(["9", "7", "7", "9"]) == "9"


def test_unanswered_members_do_not_vote() -> None:
    assert majority_vote([None, None, "5"]) == "5"
    assert majority_vote([None, None]) is None


def test_an_ensemble_of_one_is_that_member() -> None:
    assert ensemble_answers([["1", None, "3"]]) == ["1", None, "3"]


def test_ensemble_votes_per_question_and_can_beat_every_member() -> None:
    gold = ["1", "2", "3"]
    members = [["1", "2", "x"], ["1", "y", "3"], ["z", "2", "3"]]
    assert [exact_match(m, gold) for m in members] == pytest.approx([2 / 3] * 3)
    assert exact_match(ensemble_answers(members), gold) == 1.0


def test_members_must_answer_the_same_questions() -> None:
    with pytest.raises(GeneticsError, match="different numbers"):
        ensemble_answers([["1"], ["1", "2"]])
    with pytest.raises(GeneticsError, match="at least one member"):
        ensemble_answers([])
