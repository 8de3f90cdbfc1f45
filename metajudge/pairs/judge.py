"""Judge pairs: a position-weighted Bradley–Terry (Elo) fit over meta-judge battles (SPEC §5).

Each meta-judgment shows judgments m and n of one response, in one order, and names a winner
("first", "second") or none. Over the iteration, w1 and w2 count verdicts for the first- and the
second-shown judgment; ω1 = w2/(w1+w2) weights a win in first position and ω2 = w1/(w1+w2) a win
in second position, so wins in the position the meta-judge disfavours count more. Then

    B[m, n] = ω1·#(m beat n shown first) + ω2·#(m beat n shown second)
    ε = argmax Σ B[m, n]·log σ(ε_m − ε_n) − (λ/2)·Σ ε²       (Σ ε = 0 follows)

with a tiny ridge λ so that a judgment winning every battle still gets a finite rating.

>>> import pandas as pd
>>> battles = pd.DataFrame({"first": [0, 1, 0, 2, 1, 2], "second": [1, 0, 2, 0, 2, 1],
...                         "winner": ["first", "second", "first", "second", "first", "second"]})
>>> ratings = rate_judgments(battles)
>>> list(ratings.sort_values(ascending=False).index)
[0, 1, 2]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from metajudge.analysis.logistic import fit_logistic

#: ridge that keeps ratings finite when one judgment wins everything
RIDGE = 1e-3
#: logit units -> Elo points
ELO_PER_LOGIT = 400 / math.log(10)


def positional_weights(winners: Sequence[str | None]) -> tuple[float, float] | None:
    """(ω1, ω2) from all verdicts of an iteration, or None when there is no verdict.

    >>> positional_weights(["first", "first", "first", "second", None])
    (0.25, 0.75)
    """
    w1 = sum(1 for w in winners if w == "first")
    w2 = sum(1 for w in winners if w == "second")
    if w1 + w2 == 0:
        return None
    return w2 / (w1 + w2), w1 / (w1 + w2)


def battle_matrix(
    comparisons: pd.DataFrame, ids: Sequence[int], omega: tuple[float, float],
    *, consistent_only: bool = False,
) -> np.ndarray:
    """B[m, n] over the given judgment ids (rows/columns in that order)."""
    index = {j: k for k, j in enumerate(ids)}
    rows = comparisons
    if consistent_only:
        rows = _consistent(comparisons)
    matrix = np.zeros((len(ids), len(ids)))
    for first, second, winner in rows[["first", "second", "winner"]].itertuples(index=False):
        if winner == "first":
            matrix[index[first], index[second]] += omega[0]
        elif winner == "second":
            matrix[index[second], index[first]] += omega[1]
    return matrix


def _consistent(comparisons: pd.DataFrame) -> pd.DataFrame:
    """Keep the verdicts of pairs whose two orders name the same judgment; other pairs (including
    both orders favouring one position) count as ties."""
    won: dict[tuple[int, int], dict[int, int | None]] = {}
    for first, second, winner in comparisons[["first", "second", "winner"]].itertuples(
            index=False):
        judged = first if winner == "first" else second if winner == "second" else None
        won.setdefault((min(first, second), max(first, second)), {})[first] = judged
    agreed = {pair for pair, orders in won.items()
              if len(orders) == 2 and len(set(orders.values())) == 1
              and None not in orders.values()}
    keep = [(min(f, s), max(f, s)) in agreed
            for f, s in zip(comparisons["first"], comparisons["second"], strict=True)]
    return comparisons.loc[keep]


def fit_ratings(matrix: np.ndarray, ridge: float = RIDGE) -> np.ndarray:
    """Maximise Σ B[m,n]·log σ(ε_m − ε_n) − (ridge/2)·‖ε‖² (logit units, centred).

    This is a logistic regression without intercept: one row per ordered pair (m, n) with
    B[m, n] > 0, design e_m − e_n, label 1, weight B[m, n], and an L2 penalty of strength
    ``ridge`` (C = 1/ridge), so it is solved by the same Newton solver as the Arena-Hard
    Bradley–Terry fit (:func:`metajudge.analysis.logistic.fit_logistic`)."""
    n = matrix.shape[0]
    winners, losers = np.nonzero(matrix > 0)
    if not len(winners):
        return np.zeros(n)
    design = np.zeros((len(winners), n))
    design[np.arange(len(winners)), winners] = 1.0
    design[np.arange(len(winners)), losers] = -1.0
    eps = fit_logistic(design, np.ones(len(winners)), matrix[winners, losers], l2_C=1.0 / ridge)
    return eps - eps.mean()


def rate_judgments(
    comparisons: pd.DataFrame, omega: tuple[float, float] | None = None,
    *, consistent_only: bool = False,
) -> pd.Series:
    """One rating (logit units, centred) per judgment of one response.

    ``comparisons`` has integer columns ``first`` and ``second`` (the judgments shown first and
    second) and ``winner`` in {"first", "second", None}. ``omega`` = (ω1, ω2) defaults to the
    weights computed from these comparisons; with no verdict at all every rating is 0.
    """
    missing = {"first", "second", "winner"} - set(comparisons.columns)
    if missing:
        raise ValueError(f"comparisons lack columns {sorted(missing)}")
    bad = set(comparisons["winner"].dropna()) - {"first", "second"}
    if bad:
        raise ValueError(f"winner must be 'first', 'second' or None, got {sorted(bad)}")
    ids = sorted(set(comparisons["first"]).union(comparisons["second"]))
    if omega is None:
        omega = positional_weights(list(comparisons["winner"]))
    if omega is None:
        return pd.Series(np.zeros(len(ids)), index=pd.Index(ids, name="judgment"),
                         name="rating")
    matrix = battle_matrix(comparisons, ids, omega, consistent_only=consistent_only)
    return pd.Series(fit_ratings(matrix), index=pd.Index(ids, name="judgment"), name="rating")
