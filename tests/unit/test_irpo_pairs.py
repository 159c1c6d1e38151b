"""Rewards and preference pairs (IRPO steps 2-3): winners correct, losers incorrect, gold among winners."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from nora.api.defaults import DEFAULT_ANSWER_PATTERN
from nora.trainer.data import Example
from nora.trainer.irpo_trainer import Sample, build_pairs, extract_answer

ROW = Example(question="What is 2 + 2?", solution="2+2=4, 4\n#### 4", answer="4")


def _sample(text: str, answer: str = "4") -> Sample:
    extracted = extract_answer(text, DEFAULT_ANSWER_PATTERN)
    return Sample(text=text, extracted=extracted, correct=extracted == answer, tokens=len(text))


def test_extract_answer_takes_the_first_group_stripped() -> None:
    assert extract_answer("work\n####  42 \n", DEFAULT_ANSWER_PATTERN) == "42"
    assert extract_answer("no marker here", DEFAULT_ANSWER_PATTERN) is None
    assert extract_answer("The answer is (7).", r"answer is \((\d+)\)") == "7"
    assert extract_answer("x", r"(y)?x") is None  # an unmatched optional group is no answer


def test_prompt_without_a_loser_is_dropped_and_gold_joins_the_winners() -> None:
    all_correct = [_sample("#### 4"), _sample("2+2=4\n#### 4")]
    all_wrong = [_sample("#### 5"), _sample("#### 3"), _sample("no answer")]
    pairs, stats = build_pairs([ROW, ROW], ["p0", "p1"], [all_correct, all_wrong], 2, seed=0)
    assert {p.prompt_index for p in pairs} == {1}
    assert all(p.chosen == ROW.solution and p.chosen_is_gold for p in pairs)  # gold is the only winner
    assert len({p.rejected for p in pairs}) == 2
    assert stats.prompts_without_loser == 1
    assert stats.gold_only_prompts == 1
    assert stats.pairs == 2
    assert stats.gold_pairs == 2
    assert stats.prompts_with_pairs == 1
    assert stats.sample_accuracy == 2 / 5


def test_pairs_are_deterministic_for_a_seed() -> None:
    group = [_sample(t) for t in ("#### 4", "x\n#### 4", "#### 1", "#### 2", "#### 3")]
    first = build_pairs([ROW], ["p"], [group], 3, seed=11)
    assert build_pairs([ROW], ["p"], [group], 3, seed=11) == first


texts = st.text(alphabet="0123456789+=#, \n", max_size=12)
groups = st.lists(st.lists(texts, min_size=1, max_size=6), min_size=1, max_size=5)


@settings(max_examples=60, deadline=None)
@given(groups=groups, pairs_per_prompt=st.integers(1, 6), seed=st.integers(0, 2**32))
def test_every_pair_is_a_correct_winner_over_an_incorrect_loser(
    groups: list[list[str]], pairs_per_prompt: int, seed: int
) -> None:
    rows = [Example(f"q{i}", f"step\n#### {i}", str(i)) for i in range(len(groups))]
    samples = [[_sample(text, row.answer) for text in group] for group, row in zip(groups, rows, strict=True)]
    pairs, stats = build_pairs(rows, [f"p{i}" for i in range(len(rows))], samples, pairs_per_prompt, seed)
    for pair in pairs:
        row = rows[pair.prompt_index]
        assert extract_answer(pair.chosen, DEFAULT_ANSWER_PATTERN) == row.answer
        assert extract_answer(pair.rejected, DEFAULT_ANSWER_PATTERN) != row.answer
        assert pair.chosen_is_gold == (pair.chosen == row.solution)
        assert pair.prompt == f"p{pair.prompt_index}"
    for index, group in enumerate(samples):
        mine = [(p.chosen, p.rejected) for p in pairs if p.prompt_index == index]
        losers = {s.text for s in group if not s.correct}
        winners = {s.text for s in group if s.correct} | {rows[index].solution}
        assert len(mine) == len(set(mine)) == min(pairs_per_prompt, len(winners) * len(losers))
    assert stats.pairs == len(pairs)
    assert stats.prompts_without_loser == sum(all(s.correct for s in g) for g in samples)
