"""Bradley–Terry scores: closed form, direct likelihood maximisation, style control, bootstrap;
style features and length–score correlations against Arena-Hard's published data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize

from metajudge.analysis import bradley_terry_scores, spearman, win_probability
from metajudge.analysis.bradley_terry import _design, _parse, style_features
from metajudge.analysis.style import answer_style, markdown_counts

DATA = Path(__file__).parents[1] / "data"
MODELS = ["base", "a", "b", "c", "d"]
STRENGTH = {"base": 0.0, "a": 0.5, "b": -0.3, "c": 1.0, "d": 0.2}


def battles(n: int = 1500, seed: int = 0, style: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        a, b = rng.choice(MODELS, 2, replace=False)
        p = 1 / (1 + np.exp(-(STRENGTH[a] - STRENGTH[b])))
        u = rng.random()
        winner = "tie" if abs(u - p) < 0.05 else ("model_a" if u < p else "model_b")
        row = {"model_a": a, "model_b": b, "winner": winner, "weight": float(rng.choice([1, 3]))}
        if style:
            for side in "ab":
                row[f"token_len_{side}"] = int(rng.integers(50, 900))
                row[f"header_count_{side}"] = int(rng.integers(0, 4))
                row[f"list_count_{side}"] = int(rng.integers(0, 12))
                row[f"bold_count_{side}"] = int(rng.integers(0, 8))
        rows.append(row)
    return pd.DataFrame(rows)


def test_closed_form_when_every_battle_is_against_the_baseline() -> None:
    games = battles()
    games = games[(games.model_a == "base") | (games.model_b == "base")]
    table = bradley_terry_scores(games, "base", bootstrap_rounds=0)
    for model in MODELS[1:]:
        mine = games[(games.model_a == model) | (games.model_b == model)]
        won = ((mine.winner == "model_a") & (mine.model_a == model)) | (
            (mine.winner == "model_b") & (mine.model_b == model))
        rate = np.where(mine.winner == "tie", 0.5, won.astype(float))
        assert table.loc[model, "score"] == pytest.approx(
            100 * np.average(rate, weights=mine.weight), abs=1e-7)
    assert table.loc["base", "score"] == 50.0


def test_ratings_maximise_the_likelihood() -> None:
    games = battles()
    table = bradley_terry_scores(games, "base", bootstrap_rounds=0)
    data = _parse(games, "base")
    X = _design(data, len(data.models))
    anchor = data.models.index("base")
    free = [k for k in range(len(data.models)) if k != anchor]

    def negative_log_likelihood(theta: np.ndarray) -> float:
        full = np.zeros(len(data.models))
        full[free] = theta
        z = X @ full
        return float(data.weight @ (data.outcome * np.logaddexp(0, -z)
                                    + (1 - data.outcome) * np.logaddexp(0, z)))

    best = minimize(negative_log_likelihood, np.zeros(len(free)), method="BFGS",
                    options={"gtol": 1e-10})
    expected = 400 * best.x + 1000
    assert table.loc[[data.models[k] for k in free], "rating"].to_numpy() == pytest.approx(
        expected, abs=1e-3)
    assert table["score"].to_numpy() == pytest.approx(win_probability(table["rating"]))


def test_style_control_maximises_the_penalised_likelihood_with_features_at_zero() -> None:
    games = battles(style=True)
    table = bradley_terry_scores(games, "base", bootstrap_rounds=0)
    data = _parse(games, "base")
    features = style_features(games)
    w = data.weight
    mean = np.average(features, axis=0, weights=w)
    std = np.sqrt(np.average((features - mean) ** 2, axis=0, weights=w))
    X = np.column_stack([_design(data, len(data.models)), (features - mean) / std])
    # arena-hard-auto: each battle twice (a tie once won, once lost), L2 with C = 1
    X2 = np.concatenate([X, X])
    y2 = np.concatenate([np.where(data.outcome >= 0.5, 1.0, 0.0),
                         np.where(data.outcome > 0.5, 1.0, 0.0)])
    w2 = np.concatenate([w, w])

    def objective(theta: np.ndarray) -> float:
        z = X2 @ theta
        loss = y2 * np.logaddexp(0, -z) + (1 - y2) * np.logaddexp(0, z)
        return 0.5 * float(theta @ theta) + float(w2 @ loss)

    best = minimize(objective, np.zeros(X.shape[1]), method="BFGS", options={"gtol": 1e-8})
    ratings = 400 * best.x[: len(data.models)]
    ratings = ratings - ratings[data.models.index("base")] + 1000
    assert table.loc[data.models, "style_rating"].to_numpy() == pytest.approx(ratings, abs=1e-3)


def test_bootstrap_is_seeded_resamples_battles_and_brackets_the_score() -> None:
    games = battles(600)
    one = bradley_terry_scores(games, "base", bootstrap_rounds=40, seed=42)
    two = bradley_terry_scores(games, "base", bootstrap_rounds=40, seed=42)
    other = bradley_terry_scores(games, "base", bootstrap_rounds=40, seed=7)
    pd.testing.assert_frame_equal(one, two)
    assert not np.allclose(one["lower"], other["lower"])
    others = one.drop(index="base")
    assert (others["lower"] <= others["score"]).all() and (others["score"] <= others["upper"]).all()
    # arena-hard-auto's draws: np.random.seed(42) then battles.sample(frac=1, replace=True)
    np.random.seed(42)
    sampled = games.sample(frac=1.0, replace=True)
    rows = np.random.RandomState(42).choice(len(games), size=len(games), replace=True)
    assert (sampled.index.to_numpy() == rows).all()


def test_unknown_winner_and_missing_baseline_are_errors() -> None:
    games = battles(20)
    with pytest.raises(ValueError, match="unknown winner"):
        bradley_terry_scores(games.assign(winner="A>B"), "base")
    with pytest.raises(ValueError, match="baseline 'gpt-4' is in no battle"):
        bradley_terry_scores(games, "gpt-4")


def test_markdown_counts_reproduce_arena_hard_metadata_for_gpt_4_0314() -> None:
    answers = pd.read_json(DATA / "arena_hard_gpt-4-0314_answers.jsonl", lines=True)
    expected = pd.read_csv(DATA / "arena_hard_style_metadata.csv").set_index("question_id")
    ours = answer_style(answers.set_index("uid")["answer"])
    columns = ["answer_chars", "header_count", "list_count", "bold_count", "h1", "h2", "h3",
               "h4", "list_ordered", "list_unordered", "bold_star", "bold_underscore"]
    pd.testing.assert_frame_equal(ours.loc[expected.index, columns], expected[columns],
                                  check_dtype=False, check_names=False)
    assert expected["header_count"].sum() > 0 and expected["bold_count"].sum() > 0


def test_code_blocks_are_emptied_as_arena_hard_does() -> None:
    counts = markdown_counts("**bold**\n```python\n# comment\n- item\n**x**\n```\n1. one")
    assert (counts["header_count"], counts["list_count"], counts["bold_count"]) == (0, 1, 1)


def test_published_avg_tokens_and_length_score_rank_correlations() -> None:
    published = pd.read_csv(DATA / "arena_hard_leaderboard_published.csv")
    means = pd.read_csv(DATA / "arena_hard_style_means.csv").set_index("model")
    matched = published[published["model_file"].isin(means.index)]
    # the published avg_tokens is the truncated mean token_len of the per-answer metadata
    assert (means.loc[matched["model_file"], "token_len"].astype(int).to_numpy()
            == matched["avg_tokens"].to_numpy()).all()
    assert len(matched) >= 190
    by_table = {t: g.set_index("model") for t, g in published.groupby("table")}
    standard = by_table["v0.1_standard_2024-11-14"]
    styled = by_table["v0.1_style_control_2024-11-14"]
    common = standard.index.intersection(styled.index)
    rho_standard = spearman(standard.loc[common, "avg_tokens"].to_numpy(),
                            standard.loc[common, "score"].to_numpy())
    rho_style = spearman(styled.loc[common, "avg_tokens"].to_numpy(),
                         styled.loc[common, "score"].to_numpy())
    # on the 54 models of both 2024-11-14 tables: 0.740 without and 0.652 with style control
    assert (len(common), round(rho_standard, 3), round(rho_style, 3)) == (54, 0.740, 0.652)
    whole = {t: spearman(g["avg_tokens"].to_numpy(), g["score"].to_numpy())
             for t, g in by_table.items()}
    assert {t: round(r, 3) for t, r in whole.items()} == {
        "v0.1_standard_2024-08-31": 0.559, "v0.1_standard_2024-11-14": 0.699,
        "v0.1_style_control_2024-11-14": 0.600}
