"""Bias diagnostics of judges and meta-judges (SPEC §10): position, length and score.

Position, for any pairwise judge run in both orders. ``verdicts`` has one row per shown order:
``pair_id`` (the unordered pair), ``swapped`` (bool: the second order) and ``winner`` in
{``first``, ``second``, ``tie``} or None/NaN (no verdict). Over pairs with a verdict in both
orders:

* consistency: share of pairs whose two verdicts agree (the same item twice, or a tie twice);
* primacy / recency: pairs where the judge chose the first-shown (second-shown) item both times;
* preference fairness = (recency − primacy) / pairs, in [−1, 1], positive favouring the second
  position;
* first share: share of all decisive verdicts that went to the first-shown item.

>>> import pandas as pd
>>> verdicts = pd.DataFrame({"pair_id": [1, 1, 2, 2], "swapped": [False, True, False, True],
...                          "winner": ["first", "second", "first", "first"]})
>>> position_bias(verdicts)["consistency"], position_bias(verdicts)["primacy"]
(0.5, 1)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from metajudge.analysis.agreement import spearman
from metajudge.analysis.length_controlled import LengthControlledResult

#: lengths must differ by more than this many characters for a length-preference test
MIN_LENGTH_DIFFERENCE = 30


def position_bias(verdicts: pd.DataFrame) -> dict[str, float | int]:
    """Position consistency, primacy/recency counts, preference fairness, first-shown share."""
    decisive = verdicts["winner"].isin(["first", "second"])
    first_share = float((verdicts.loc[decisive, "winner"] == "first").mean()) \
        if decisive.any() else np.nan
    both = verdicts.pivot_table(index="pair_id", columns="swapped", values="winner",
                                aggfunc="first")
    both = both.reindex(columns=[False, True]).dropna()
    pairs = len(both)
    original, swapped = both[False], both[True]
    consistent = int(((original == "first") & (swapped == "second")
                      | (original == "second") & (swapped == "first")
                      | (original == "tie") & (swapped == "tie")).sum())
    primacy = int(((original == "first") & (swapped == "first")).sum())
    recency = int(((original == "second") & (swapped == "second")).sum())
    return {
        "pairs": pairs,
        "consistency": consistent / pairs if pairs else np.nan,
        "primacy": primacy,
        "recency": recency,
        "preference_fairness": (recency - primacy) / pairs if pairs else np.nan,
        "verdicts": int(decisive.sum()),
        "first_share": first_share,
    }


def meta_judge_verdicts(meta_judgments: pd.DataFrame) -> pd.DataFrame:
    """Meta-judgment records (``response_id``, ``first``, ``second``, ``winner``) as the
    ``pair_id``/``swapped``/``winner`` frame :func:`position_bias` reads."""
    low = meta_judgments[["first", "second"]].min(axis=1).astype(str)
    high = meta_judgments[["first", "second"]].max(axis=1).astype(str)
    return pd.DataFrame({
        "pair_id": meta_judgments["response_id"].astype(str) + "|" + low + "|" + high,
        "swapped": meta_judgments["first"] > meta_judgments["second"],
        "winner": meta_judgments["winner"],
    })


def meta_judge_score_bias(meta_judgments: pd.DataFrame, judgments: pd.DataFrame) -> dict:
    """P(the meta-judge prefers the judgment with the higher score | the scores differ).

    ``judgments`` has ``response_id``, ``index`` and ``score``; ``meta_judgments`` has
    ``response_id``, ``first``, ``second`` and ``winner``."""
    score = judgments.set_index(["response_id", "index"])["score"]
    first = score.reindex(pd.MultiIndex.from_arrays(
        [meta_judgments["response_id"], meta_judgments["first"]])).to_numpy(float)
    second = score.reindex(pd.MultiIndex.from_arrays(
        [meta_judgments["response_id"], meta_judgments["second"]])).to_numpy(float)
    winner = meta_judgments["winner"].to_numpy()
    usable = (first != second) & ~np.isnan(first) & ~np.isnan(second) \
        & np.isin(winner, ["first", "second"])
    higher_first = first > second
    picked_higher = np.where(winner == "first", higher_first, ~higher_first)
    n = int(usable.sum())
    return {"comparisons": n,
            "prefers_higher_score": float(picked_higher[usable].mean()) if n else np.nan}


def prefers_longer(
    annotations: pd.DataFrame, *, min_difference: int = MIN_LENGTH_DIFFERENCE,
) -> dict[str, float | int]:
    """P(the preferred output is the longer one | lengths differ by more than ``min_difference``
    characters), from AlpacaEval-layout annotations (``preference`` 1 or 2, outputs or lengths);
    ties and fractional preferences of exactly 1.5 are left out."""
    len_1 = _lengths(annotations, 1)
    len_2 = _lengths(annotations, 2)
    preference = pd.to_numeric(annotations["preference"]).replace({0.0: 1.5}).to_numpy(float)
    usable = (np.abs(len_1 - len_2) > min_difference) & ~np.isnan(preference) \
        & (preference != 1.5)
    second_preferred = preference > 1.5
    second_longer = len_2 > len_1
    n = int(usable.sum())
    rate = float((second_preferred == second_longer)[usable].mean()) if n else np.nan
    return {"comparisons": n, "prefers_longer": rate}


def score_length_spearman(scores: pd.Series, lengths: pd.Series) -> float:
    """Spearman correlation of judge scores with response lengths (NaN scores left out)."""
    frame = pd.DataFrame({"score": scores, "length": lengths}).dropna()
    return spearman(frame["score"].to_numpy(), frame["length"].to_numpy())


def length_control_gap(result: LengthControlledResult) -> float:
    """Raw minus length-controlled win rate, in points: how much length bought."""
    return result.win_rate - result.length_controlled_winrate


def mean_length_by_iteration(responses: pd.DataFrame) -> pd.Series:
    """Mean response length in characters per iteration (``iteration``, ``text``)."""
    return responses.assign(length=responses["text"].str.len()).groupby("iteration")[
        "length"].mean()


def score_distribution(judgments: pd.DataFrame) -> pd.DataFrame:
    """Per iteration: judgments, parse failures and their rate, mean score, share of non-integer
    scores, and the count of each integer score 0–5 (non-integer scores counted apart).

    ``judgments`` has ``iteration``, ``score`` (NaN or None when none) and optionally
    ``score_source``.

    >>> frame = pd.DataFrame({"iteration": [1, 1], "score": [None, None]})
    >>> row = score_distribution(frame).iloc[0]
    >>> int(row["parse_failures"]), float(row["parse_failure_rate"]), int(row["score_4"])
    (2, 1.0, 0)
    """
    frame = judgments.copy()
    # all-None scores (every judgment failed) arrive as an object column
    frame["score"] = pd.to_numeric(frame["score"], errors="raise").astype(float)
    failed = frame["score"].isna()
    if "score_source" in frame.columns:
        failed |= frame["score_source"].eq("failed")
    frame["failed"] = failed
    scored = frame[~failed]
    integer = np.isclose(scored["score"], np.round(scored["score"]))
    rows = []
    for iteration, group in frame.groupby("iteration"):
        values = scored.loc[scored["iteration"] == iteration, "score"]
        whole = integer[(scored["iteration"] == iteration).to_numpy()]
        row = {"iteration": iteration, "judgments": len(group),
               "parse_failures": int(group["failed"].sum()),
               "parse_failure_rate": float(group["failed"].mean()),
               "mean_score": float(values.mean()) if len(values) else np.nan,
               "non_integer_share": float((~whole).mean()) if len(values) else np.nan}
        for point in range(6):
            row[f"score_{point}"] = int(((values == point) & whole).sum())
        row["score_non_integer"] = int((~whole).sum())
        rows.append(row)
    return pd.DataFrame(rows).set_index("iteration")


def _lengths(annotations: pd.DataFrame, which: int) -> np.ndarray:
    if f"output_{which}" in annotations.columns:
        return annotations[f"output_{which}"].astype(str).str.len().to_numpy(float)
    if f"len_{which}" in annotations.columns:
        return annotations[f"len_{which}"].to_numpy(float)
    raise ValueError(f"annotations need 'output_{which}' or 'len_{which}'")
