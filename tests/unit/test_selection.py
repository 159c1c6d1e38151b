"""Selection: each method's law, elites, and genomes without fitness never selected."""

from __future__ import annotations

from collections import Counter

import pytest

from nora.genetics import GeneticsError, Scored, elites, make_generator, select
from nora.genetics.selection import SelectionMethod, select_parents

POOL = [Scored("a", 0.1), Scored("b", 0.9), Scored("c", None), Scored("d", 0.5), Scored("e", float("nan"))]


def ids(selected: list[Scored]) -> list[str]:
    return [s.id for s in selected]


def test_truncation_and_elites_take_the_best_in_order() -> None:
    assert ids(select("truncation", POOL, 2, make_generator(0))) == ["b", "d"]
    assert ids(elites(POOL, 10)) == ["b", "d", "a"]


@pytest.mark.parametrize("method", ["truncation", "tournament", "roulette", "rank"])
def test_genomes_without_fitness_are_never_selected(method: str) -> None:
    chosen = select(method, POOL, 200, make_generator(1))  # type: ignore[arg-type]
    assert not {"c", "e"} & set(ids(chosen))


@pytest.mark.parametrize("method", ["truncation", "tournament", "roulette", "rank"])
def test_nothing_to_select_is_an_error(method: str) -> None:
    with pytest.raises(GeneticsError, match="no genome has a fitness"):
        select(method, [Scored("x", None)], 1, make_generator(0))  # type: ignore[arg-type]


def test_tournament_of_the_whole_pool_always_picks_the_best() -> None:
    assert set(ids(select("tournament", POOL, 50, make_generator(2), tournament_size=10))) == {"b"}
    counts = Counter(ids(select("tournament", POOL, 3000, make_generator(3), tournament_size=2)))
    assert counts["b"] > counts["d"] > counts["a"]


def test_roulette_works_with_negative_fitness_and_favours_the_fitter() -> None:
    losses = [Scored("low-loss", -0.2), Scored("mid", -1.0), Scored("high-loss", -3.0)]
    counts = Counter(ids(select("roulette", losses, 4000, make_generator(4))))
    assert counts["low-loss"] > counts["mid"] > counts["high-loss"] > 0


def test_roulette_with_equal_fitness_is_uniform() -> None:
    equal = [Scored(str(i), -1.0) for i in range(4)]
    counts = Counter(ids(select("roulette", equal, 4000, make_generator(5))))
    assert all(800 < counts[str(i)] < 1200 for i in range(4))


def test_rank_selection_weights_by_rank_not_by_fitness_gaps() -> None:
    skewed = [Scored("best", 1000.0), Scored("second", 1.0), Scored("third", 0.0)]
    counts = Counter(ids(select("rank", skewed, 6000, make_generator(6))))
    assert counts["best"] == pytest.approx(3000, rel=0.1)
    assert counts["third"] == pytest.approx(1000, rel=0.15)


def test_selection_is_deterministic_by_generator() -> None:
    first = ids(select("roulette", POOL, 20, make_generator(7)))
    assert first == ids(select("roulette", POOL, 20, make_generator(7)))
    assert first != ids(select("roulette", POOL, 20, make_generator(8)))


@pytest.mark.parametrize("method", ["truncation", "tournament", "roulette", "rank"])
def test_the_parents_of_one_child_are_distinct_while_two_are_eligible(method: SelectionMethod) -> None:
    survivors = [Scored("a", 0.9), Scored("b", 0.8)]
    for seed in range(20):
        assert sorted(ids(select_parents(method, survivors, 2, make_generator(seed), 2))) == ["a", "b"]


def test_a_lone_eligible_parent_is_returned_once() -> None:
    assert ids(select_parents("tournament", [Scored("a", 0.5), Scored("x", None)], 2, make_generator(0))) == [
        "a"
    ]
