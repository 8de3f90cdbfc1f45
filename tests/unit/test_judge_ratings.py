"""The position-weighted Bradley–Terry fit over meta-judge battles (SPEC §5)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize

from metajudge.pairs import rate_judgments
from metajudge.pairs.judge import RIDGE, battle_matrix, fit_ratings, positional_weights


def _frame(rows: list[tuple[int, int, str | None]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["first", "second", "winner"])


def _direct(matrix: np.ndarray, ridge: float = RIDGE) -> np.ndarray:
    def negative(e: np.ndarray) -> float:
        diff = e[:, None] - e[None, :]
        return float(np.sum(matrix * np.logaddexp(0.0, -diff)) + ridge / 2 * e @ e)

    result = minimize(negative, np.zeros(len(matrix)), method="BFGS",
                      options={"gtol": 1e-10, "maxiter": 10_000})
    return result.x - result.x.mean()


@pytest.mark.parametrize("seed", range(8))
def test_fit_matches_direct_maximisation_of_the_likelihood(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 8))
    matrix = rng.integers(0, 4, size=(n, n)) * rng.uniform(0.2, 0.8)
    np.fill_diagonal(matrix, 0)
    ours = fit_ratings(matrix)
    np.testing.assert_allclose(ours, _direct(matrix), atol=1e-4)
    assert abs(ours.sum()) < 1e-9


def test_symmetric_battles_give_equal_ratings() -> None:
    rows = [(a, b, "first") for a in range(4) for b in range(4) if a != b]
    ratings = rate_judgments(_frame(rows))
    np.testing.assert_allclose(ratings.to_numpy(), 0.0, atol=1e-9)


def test_one_judgment_winning_every_battle_gets_a_finite_top_rating() -> None:
    rows = []
    for other in (1, 2, 3):
        rows += [(0, other, "first"), (other, 0, "second")]
    rows += [(1, 2, "first"), (2, 1, "second"), (2, 3, "first"), (3, 2, "second"),
             (1, 3, "first"), (3, 1, "second")]
    ratings = rate_judgments(_frame(rows))
    assert np.isfinite(ratings.to_numpy()).all()
    assert list(ratings.sort_values(ascending=False).index) == [0, 1, 2, 3]
    assert abs(ratings.sum()) < 1e-9


def test_position_weights_change_the_winner_for_a_biased_meta_judge() -> None:
    # judgment 0 beat 1 twice while shown first; 1 beat 0 once while shown second;
    # on another pair the meta-judge picks whatever is shown first
    rows = [(0, 1, "first"), (0, 1, "first"), (0, 1, "second"),
            (2, 3, "first"), (3, 2, "first")]
    assert positional_weights([r[2] for r in rows]) == (0.2, 0.8)
    unweighted = rate_judgments(_frame(rows), omega=(0.5, 0.5))
    weighted = rate_judgments(_frame(rows))
    assert unweighted[0] > unweighted[1]
    assert weighted[1] > weighted[0]
    assert weighted[2] == pytest.approx(weighted[3])


def test_invariant_to_the_order_judgments_are_listed() -> None:
    rng = np.random.default_rng(0)
    rows = [(int(a), int(b), str(rng.choice(["first", "second"])))
            for a in range(5) for b in range(5) if a != b]
    base = rate_judgments(_frame(rows))
    shuffled = rate_judgments(_frame([rows[i] for i in rng.permutation(len(rows))]))
    pd.testing.assert_series_equal(base, shuffled, atol=1e-9)
    relabel = {0: 40, 1: 10, 2: 30, 3: 0, 4: 20}
    renamed = rate_judgments(_frame([(relabel[a], relabel[b], w) for a, b, w in rows]))
    for old, new in relabel.items():
        assert renamed[new] == pytest.approx(base[old], abs=1e-8)


def test_no_verdicts_gives_zero_ratings() -> None:
    ratings = rate_judgments(_frame([(0, 1, None), (1, 0, None)]))
    assert list(ratings) == [0.0, 0.0]
    assert positional_weights([None, None]) is None


def test_consistent_only_keeps_agreeing_orders() -> None:
    rows = [(0, 1, "first"), (1, 0, "second"),   # both orders: 0 wins -> kept
            (0, 2, "first"), (2, 0, "first"),    # position-driven -> tie
            (1, 2, "second"), (2, 1, None)]      # one order without verdict -> tie
    omega = (0.5, 0.5)
    matrix = battle_matrix(_frame(rows), [0, 1, 2], omega, consistent_only=True)
    expected = np.zeros((3, 3))
    expected[0, 1] = 1.0
    np.testing.assert_allclose(matrix, expected)
    ratings = rate_judgments(_frame(rows), omega, consistent_only=True)
    # only "0 beat 1" survives: 0 above, 1 below by symmetry, 2 (all ties) in the middle
    assert ratings[0] > ratings[2] > ratings[1]
    assert ratings[0] == pytest.approx(-ratings[1], abs=1e-9)
    assert ratings[2] == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(ratings.to_numpy(), _direct(expected), atol=1e-4)


def test_bad_winner_values_are_rejected() -> None:
    with pytest.raises(ValueError, match="winner"):
        rate_judgments(_frame([(0, 1, "A")]))
