"""Judge–human agreement on real labels (PandaLM, Open Assistant) and the bias diagnostics."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from metajudge.analysis import (
    pairwise_agreement,
    position_bias,
    prefers_longer,
    ranked_agreement,
    score_distribution,
    spearman,
)
from metajudge.analysis.agreement import majority_label
from metajudge.analysis.bias import meta_judge_score_bias, meta_judge_verdicts

DATA = Path(__file__).parents[1] / "data"


@pytest.mark.parametrize("judge, agree, pairs, agree_no_ties, pairs_no_ties", [
    ("gpt35_turbo", 697, 999, 692, 849),
    ("pandalm_7b", 667, 999, 635, 819),
])
def test_pandalm_judges_against_the_annotator_majority(
        judge: str, agree: int, pairs: int, agree_no_ties: int, pairs_no_ties: int) -> None:
    labels = pd.read_json(DATA / "pandalm_human_pairwise.jsonl", lines=True)
    result = pairwise_agreement(labels, judge, bootstrap_rounds=200, seed=1)
    assert result["pairs"] == pairs and result["pairs_without_ties"] == pairs_no_ties
    assert result["agreement"] == pytest.approx(agree / pairs)
    assert result["agreement_without_ties"] == pytest.approx(agree_no_ties / pairs_no_ties)
    assert result["agreement_lower"] < result["agreement"] < result["agreement_upper"]


def test_majority_label() -> None:
    assert majority_label([2, 2, 1]) == 2 and majority_label([0, 0, 0]) == 0
    assert majority_label([0, 1, 2]) is None


def test_ranked_agreement_matches_a_pair_by_pair_count_on_open_assistant() -> None:
    replies = pd.read_csv(DATA / "oasst_first_turn_ranks.csv")
    # the crowd's mean quality label plays the judge: a real score to set against the ranks
    result = ranked_agreement(replies, score="quality", bootstrap_rounds=100, seed=0)
    agree = tied = pairs = 0
    rhos = []
    for _, group in replies.dropna(subset=["rank", "quality"]).groupby("prompt_id"):
        for (_, x), (_, y) in combinations(group.iterrows(), 2):
            if x["rank"] == y["rank"]:
                continue
            pairs += 1
            better, worse = (x, y) if x["rank"] < y["rank"] else (y, x)
            agree += better["quality"] > worse["quality"]
            tied += better["quality"] == worse["quality"]
        if len(group) >= 2 and group["quality"].nunique() > 1 and group["rank"].nunique() > 1:
            rhos.append(spearmanr(group["quality"], -group["rank"]).statistic)
    assert result["pairs"] == pairs and result["judge_ties"] == tied
    assert result["agreement"] == pytest.approx(agree / pairs)
    assert result["agreement_without_ties"] == pytest.approx(agree / (pairs - tied))
    assert result["spearman"] == pytest.approx(np.mean(rhos))
    assert result["agreement_lower"] <= result["agreement"] <= result["agreement_upper"]


def test_spearman_matches_scipy_with_ties() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, 50), rng.integers(0, 5, 50)
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)
    assert np.isnan(spearman(np.ones(4), np.arange(4)))


def test_position_bias_hand_worked() -> None:
    verdicts = pd.DataFrame({
        "pair_id": [1, 1, 2, 2, 3, 3, 4, 4, 5],
        "swapped": [False, True] * 4 + [False],
        "winner": ["first", "second",   # consistent (item 1 both times)
                   "first", "first",    # primacy
                   "second", "second",  # recency
                   "second", "second",  # recency
                   "first"],            # one order only: not a pair
    })
    result = position_bias(verdicts)
    assert result["pairs"] == 4 and result["consistency"] == 0.25
    assert (result["primacy"], result["recency"]) == (1, 2)
    assert result["preference_fairness"] == pytest.approx(0.25)
    assert result["first_share"] == pytest.approx(4 / 9)


def test_meta_judge_records_become_position_and_score_bias() -> None:
    metas = pd.DataFrame({"response_id": ["r"] * 4, "first": [0, 1, 0, 2],
                          "second": [1, 0, 2, 0],
                          "winner": ["first", "first", "second", None]})
    verdicts = meta_judge_verdicts(metas)
    assert verdicts["pair_id"].nunique() == 2 and verdicts["swapped"].tolist() == [
        False, True, False, True]
    judgments = pd.DataFrame({"response_id": ["r"] * 3, "index": [0, 1, 2],
                              "score": [4.0, 2.0, 4.0]})
    result = meta_judge_score_bias(metas, judgments)
    # scores differ only for the pair (0, 1): verdicts 0 (higher) then 1 (lower)
    assert result == {"comparisons": 2, "prefers_higher_score": 0.5}


def test_prefers_longer_ignores_ties_and_small_differences() -> None:
    annotations = pd.DataFrame({"len_1": [100, 100, 100, 100, 100],
                                "len_2": [200, 20, 200, 110, 300],
                                "preference": [2.0, 1.0, 1.0, 2.0, 1.5]})
    # usable: rows 0 (longer preferred), 1 (longer preferred), 2 (shorter preferred)
    result = prefers_longer(annotations)
    assert result["comparisons"] == 3 and result["prefers_longer"] == pytest.approx(2 / 3)


def test_score_distribution_counts_failures_and_fractions() -> None:
    judgments = pd.DataFrame({"iteration": [1, 1, 1, 1, 2],
                              "score": [4.0, 2.5, None, 4.0, 5.0],
                              "score_source": ["parsed", "parsed", "failed", "forced", "parsed"]})
    table = score_distribution(judgments)
    assert table.loc[1, "parse_failures"] == 1 and table.loc[1, "parse_failure_rate"] == 0.25
    assert table.loc[1, "score_4"] == 2 and table.loc[1, "score_non_integer"] == 1
    assert table.loc[1, "non_integer_share"] == pytest.approx(1 / 3)
    assert table.loc[2, "score_5"] == 1 and table.loc[2, "mean_score"] == 5.0
