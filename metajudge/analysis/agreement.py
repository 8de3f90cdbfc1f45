"""Judge–human agreement (SPEC §7), each figure with a bootstrap interval.

* Ranked replies (Open Assistant): the judge scores every reply of a prompt; every pair of replies
  with different human ranks (0 = best) is a test. ``agreement`` counts a judge tie as a
  disagreement, ``agreement_without_ties`` leaves judge ties out, and ``spearman`` is the mean over
  prompts of the Spearman correlation between judge scores and human quality (−rank).
  Intervals resample prompts.
* Pairwise labels (PandaLM style: several annotators per pair, 0 = tie, 1 = first, 2 = second):
  ``agreement`` is 3-way agreement with the annotators' majority, a missing verdict counting as
  wrong; ``agreement_without_ties`` keeps the pairs where neither the majority nor the judge says
  tie. Intervals resample pairs.

>>> import pandas as pd
>>> replies = pd.DataFrame({"prompt_id": ["p"] * 3, "rank": [0, 1, 2], "score": [5, 3, 3]})
>>> result = ranked_agreement(replies, bootstrap_rounds=0)
>>> result["agreement"], result["agreement_without_ties"], result["pairs"]
(0.6666666666666666, 1.0, 3)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd


def ranked_agreement(
    replies: pd.DataFrame, *, score: str = "score", bootstrap_rounds: int = 1000,
    seed: int = 0, confidence: float = 0.95,
) -> dict[str, float | int]:
    """Agreement of judge scores with human ranks; ``replies`` has ``prompt_id``, ``rank`` and
    the score column (NaN where the judge gave none: such replies drop out)."""
    scored = replies.dropna(subset=["rank", score])
    per_prompt = [_prompt_stats(group["rank"].to_numpy(float), group[score].to_numpy(float))
                  for _, group in scored.groupby("prompt_id", sort=False)]
    table = pd.DataFrame(per_prompt, columns=["agree", "tied", "pairs", "spearman"])
    table = table[table["pairs"] > 0]

    def summary(rows: pd.DataFrame) -> dict[str, float]:
        pairs, agree, tied = rows["pairs"].sum(), rows["agree"].sum(), rows["tied"].sum()
        return {
            "agreement": float(agree / pairs) if pairs else np.nan,
            "agreement_without_ties": float(agree / (pairs - tied)) if pairs > tied else np.nan,
            "spearman": float(rows["spearman"].mean()),
        }

    result: dict[str, float | int] = {
        **summary(table), "prompts": len(table), "pairs": int(table["pairs"].sum()),
        "judge_ties": int(table["tied"].sum()),
        "prompts_without_spearman": int(table["spearman"].isna().sum()),
    }
    result.update(_intervals(table, summary, bootstrap_rounds, seed, confidence))
    return result


def majority_label(labels: Sequence[int]) -> int | None:
    """The label most annotators gave, or None when no label has a strict majority."""
    (label, count), *rest = Counter(labels).most_common()
    if rest and rest[0][1] == count:
        return None
    return int(label)


def pairwise_agreement(
    pairs: pd.DataFrame, verdict: str, *, human: str = "human", bootstrap_rounds: int = 1000,
    seed: int = 0, confidence: float = 0.95,
) -> dict[str, float | int]:
    """Agreement of a pairwise judge (column ``verdict``: 0 tie, 1 first, 2 second, NaN none) with
    the annotators' majority (column ``human``: a list of labels per pair)."""
    majority = pairs[human].map(majority_label)
    if majority.isna().any():
        raise ValueError(f"{int(majority.isna().sum())} pairs have no majority label")
    table = pd.DataFrame({"majority": majority.astype(int), "judge": pairs[verdict]})
    table["agree"] = (table["judge"] == table["majority"])
    table["decisive"] = (table["majority"] != 0) & table["judge"].isin([1, 2])

    def summary(rows: pd.DataFrame) -> dict[str, float]:
        decisive = rows[rows["decisive"]]
        return {
            "agreement": float(rows["agree"].mean()),
            "agreement_without_ties": float(decisive["agree"].mean()) if len(decisive) else np.nan,
        }

    result: dict[str, float | int] = {
        **summary(table), "pairs": len(table), "pairs_without_ties": int(table["decisive"].sum()),
        "missing_verdicts": int(table["judge"].isna().sum()),
    }
    result.update(_intervals(table, summary, bootstrap_rounds, seed, confidence))
    return result


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either side is constant."""
    rx = pd.Series(x).rank().to_numpy()
    ry = pd.Series(y).rank().to_numpy()
    if len(rx) < 2 or np.ptp(rx) == 0 or np.ptp(ry) == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _prompt_stats(rank: np.ndarray, score: np.ndarray) -> tuple[int, int, int, float]:
    i, j = np.triu_indices(len(rank), k=1)
    differ = rank[i] != rank[j]
    i, j = i[differ], j[differ]
    human_first = rank[i] < rank[j]
    judge_diff = score[i] - score[j]
    agree = int(np.sum((judge_diff > 0) & human_first) + np.sum((judge_diff < 0) & ~human_first))
    tied = int(np.sum(judge_diff == 0))
    return agree, tied, len(i), spearman(score, -rank)


def _intervals(
    table: pd.DataFrame, summary: Callable[[pd.DataFrame], dict[str, float]],
    rounds: int, seed: int, confidence: float,
) -> dict[str, float]:
    if not rounds or table.empty:
        return {}
    rng = np.random.default_rng(seed)
    draws = [summary(table.iloc[rng.integers(0, len(table), len(table))]) for _ in range(rounds)]
    frame = pd.DataFrame(draws)
    tail = (1.0 - confidence) / 2
    out = {}
    for name in frame.columns:
        low, high = frame[name].quantile([tail, 1.0 - tail])
        out[f"{name}_lower"], out[f"{name}_upper"] = float(low), float(high)
    return out
