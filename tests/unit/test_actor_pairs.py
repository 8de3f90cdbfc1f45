"""Length-controlled actor pairs (SPEC §4) on hand-worked cases and properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metajudge.pairs import select_actor_pair
from metajudge.pairs.actor import decide_actor_pair


def test_rho_zero_is_best_versus_worst() -> None:
    assert select_actor_pair([3.0, 4.5, 1.0, 2.0], [100, 900, 50, 400], 0.0) == (1, 2)


def test_length_control_picks_shortest_good_and_longest_bad() -> None:
    # S_max = 5, S_min = 1, rho = 0.25: chosen range [4, 5], rejected range [1, 2]
    scores = [5.0, 4.0, 4.5, 1.0, 2.0, 3.0]
    lengths = [800, 300, 500, 200, 600, 50]
    assert select_actor_pair(scores, lengths, 0.25) == (1, 4)
    assert select_actor_pair(scores, lengths, 0.0) == (0, 3)


def test_rho_one_ignores_scores() -> None:
    # both ranges are [S_min, S_max]: shortest vs longest overall
    assert select_actor_pair([5.0, 1.0, 3.0], [400, 100, 900], 1.0) == (1, 2)


def test_length_ties() -> None:
    # chosen: equal shortest -> the better scored; rejected: equal longest -> the worse scored
    assert select_actor_pair([4.0, 5.0, 1.0, 2.0], [100, 100, 300, 300], 0.5) == (1, 2)
    # equal lengths and equal scores -> the earlier index
    assert select_actor_pair([5.0, 5.0, 1.0, 1.0], [10, 10, 10, 10], 0.0) == (0, 2)


def test_equal_lengths_reduce_to_score_order() -> None:
    assert select_actor_pair([2.0, 4.0, 3.0], [50, 50, 50], 0.0) == (1, 0)


def test_no_pair_cases_with_reasons() -> None:
    assert decide_actor_pair([3.0, 3.0, 3.0], [1, 2, 3], 0.0).reason == "all scores equal"
    assert decide_actor_pair([3.0, None, None], [1, 2, 3], 0.0).reason == (
        "fewer than two scored responses")
    assert decide_actor_pair([], [], 0.0).pair is None
    # rho = 1 and equal lengths: every response is in both ranges and shortest and longest at
    # once, but the length ties go to the better score for chosen and the worse for rejected,
    # so the two differ
    assert decide_actor_pair([5.0, 1.0], [100, 100], 1.0).pair == (0, 1)
    assert decide_actor_pair([5.0, 1.0, 3.0], [100, 50, 100], 1.0).pair == (1, 2)
    # rho = 0.5: the midpoint response is in both ranges; when it is the shortest good one and
    # the longest bad one, there is no pair
    same = decide_actor_pair([5.0, 3.0, 1.0], [400, 100, 50], 0.5)
    assert same.pair is None and same.reason == "chosen and rejected are the same response"


def test_same_response_and_length_filter() -> None:
    # rho = 0.6: chosen range [2.6, 5] and rejected range [1, 3.4] overlap; the short 3.0 answer
    # is both the shortest good and the longest bad one
    assert decide_actor_pair([5.0, 3.0, 1.0], [500, 100, 50], 0.6).reason == (
        "chosen and rejected are the same response")
    long = decide_actor_pair([5.0, 1.0], [2600, 100], 0.0, max_chosen_length=2500)
    assert long.pair is None and "2500" in long.reason
    assert decide_actor_pair([5.0, 1.0], [2500, 100], 0.0, max_chosen_length=2500).pair == (0, 1)


def test_unscored_responses_take_no_part() -> None:
    assert select_actor_pair([None, 2.0, None, 4.0], [1, 500, 9999, 600], 0.0) == (3, 1)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        select_actor_pair([1.0], [1, 2], 0.0)
    with pytest.raises(ValueError):
        select_actor_pair([1.0, 2.0], [1, 2], 1.5)


def _reference(scores: list[float | None], lengths: list[int], rho: float
               ) -> tuple[int, int] | str:
    """SPEC §4 written out independently: the pair, or why there is none."""
    scored = [i for i, s in enumerate(scores) if s is not None]
    if len(scored) < 2:
        return "fewer than two scored responses"
    values = [float(scores[i]) for i in scored]  # type: ignore[arg-type]
    s_max, s_min = max(values), min(values)
    if s_max - s_min <= 1e-9:
        return "all scores equal"
    high = [i for i in scored if scores[i] >= (1 - rho) * s_max + rho * s_min - 1e-9]  # type: ignore[operator]
    low = [i for i in scored if scores[i] <= (1 - rho) * s_min + rho * s_max + 1e-9]  # type: ignore[operator]
    shortest = min(lengths[i] for i in high)
    chosen = sorted((i for i in high if lengths[i] == shortest),
                    key=lambda i: (-scores[i], i))[0]  # type: ignore[operator]
    longest = max(lengths[i] for i in low)
    rejected = sorted((i for i in low if lengths[i] == longest),
                      key=lambda i: (scores[i], i))[0]  # type: ignore[return-value]
    if chosen == rejected:
        return "chosen and rejected are the same response"
    return chosen, rejected


@given(
    st.lists(st.tuples(st.one_of(st.none(), st.integers(0, 10).map(lambda x: x / 2)),
                       st.integers(1, 3000)), min_size=0, max_size=9),
    st.sampled_from([0.0, 0.1, 0.32, 0.4, 0.5, 1.0]),
)
def test_properties(items: list[tuple[float | None, int]], rho: float) -> None:
    scores = [s for s, _ in items]
    lengths = [n for _, n in items]
    decision = decide_actor_pair(scores, lengths, rho)
    expected = _reference(scores, lengths, rho)
    if isinstance(expected, str):  # every "no pair" is for the reason SPEC §4 gives
        assert decision.pair is None and decision.reason == expected
        return
    assert decision.pair == expected and decision.reason == "pair"
    chosen, rejected = expected
    if rho <= 0.5:  # the ranges do not cross
        assert scores[chosen] >= scores[rejected]  # type: ignore[operator]
