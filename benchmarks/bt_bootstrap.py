"""Bradley–Terry scores with 100 bootstrap rounds: metajudge vs a scikit-learn reference.

The reference is arena-hard-auto v0.1's ``compute_mle_elo`` (pivot the battles into win counts per
model pair, ties counted half to each side, then ``LogisticRegression(fit_intercept=False,
penalty=None, tol=1e-6)`` on ±ln 10 design rows) inside its bootstrap (``np.random.seed(42)``,
``battles.sample(frac=1, replace=True)`` per round). Both sides get the same battles: 20 models
against gpt-4-0314 on 500 questions, two games each, ``>>`` verdicts as three rows (as
arena-hard-auto expands them), drawn from a Bradley–Terry model with ties (strengths ~ N(0, 0.6):
with weaker models, a bootstrap sample in which a model never wins in one position leaves a hole
in the reference's pivot tables, which then drops that model's battles with the baseline from the
fit — a quirk of the reference, not a disagreement about the likelihood). Needs scikit-learn
(``.venv-bench``, see ``make bench-analysis``).

    .venv-bench/bin/python benchmarks/bt_bootstrap.py --out results/benchmarks
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
from rows import save_rows

from metajudge.analysis import bradley_terry_scores

BASELINE = "gpt-4-0314"


def battles(n_models: int = 20, questions: int = 500, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    strengths = dict(zip([f"model_{k:02d}" for k in range(n_models)],
                         rng.normal(0, 0.6, n_models), strict=True))
    rows = []
    for model, strength in strengths.items():
        for q in range(questions):
            for baseline_first in (True, False):
                p = 1 / (1 + math.exp(-strength))
                u = rng.random()
                if abs(u - p) < 0.08:
                    outcome, repeat = "tie", 1
                else:
                    model_won = u < p
                    repeat = 3 if abs(u - p) > 0.35 else 1
                    model_is_a = not baseline_first
                    outcome = "model_a" if model_won == model_is_a else "model_b"
                a, b = (BASELINE, model) if baseline_first else (model, BASELINE)
                rows += [{"question_id": q, "model_a": a, "model_b": b, "winner": outcome}] * repeat
    return pd.DataFrame(rows)


def compute_mle_elo(df: pd.DataFrame, SCALE: int = 400, BASE: int = 10,
                    INIT_RATING: int = 1000) -> pd.Series:
    """arena-hard-auto v0.1 show_result.compute_mle_elo (rewritten from its description)."""
    from sklearn.linear_model import LogisticRegression

    ptbl_a_win = pd.pivot_table(df[df["winner"] == "model_a"], index="model_a",
                                columns="model_b", aggfunc="size", fill_value=0)
    ties = df[df["winner"].isin(["tie", "tie (bothbad)"])]
    if ties.empty:
        ptbl_tie = pd.DataFrame(0, index=ptbl_a_win.index, columns=ptbl_a_win.columns)
    else:
        ptbl_tie = pd.pivot_table(ties, index="model_a", columns="model_b", aggfunc="size",
                                  fill_value=0)
        ptbl_tie = ptbl_tie + ptbl_tie.T
    ptbl_b_win = pd.pivot_table(df[df["winner"] == "model_b"], index="model_a",
                                columns="model_b", aggfunc="size", fill_value=0)
    ptbl_win = ptbl_a_win * 2 + ptbl_b_win.T * 2 + ptbl_tie
    models = pd.Series(np.arange(len(ptbl_win.index)), index=ptbl_win.index)
    p = len(models)
    X = np.zeros([p * (p - 1) * 2, p])
    Y = np.zeros(p * (p - 1) * 2)
    row = 0
    weights = []
    for m_a in ptbl_win.index:
        for m_b in ptbl_win.columns:
            if m_a == m_b:
                continue
            if math.isnan(ptbl_win.loc[m_a, m_b]) or math.isnan(ptbl_win.loc[m_b, m_a]):
                continue
            X[row, models[m_a]] = +math.log(BASE)
            X[row, models[m_b]] = -math.log(BASE)
            Y[row] = 1.0
            weights.append(ptbl_win.loc[m_a, m_b])
            X[row + 1, models[m_a]] = math.log(BASE)
            X[row + 1, models[m_b]] = -math.log(BASE)
            Y[row + 1] = 0.0
            weights.append(ptbl_win.loc[m_b, m_a])
            row += 2
    X, Y = X[:row], Y[:row]
    lr = LogisticRegression(fit_intercept=False, C=np.inf, tol=1e-6, max_iter=1000)
    lr.fit(X, Y, sample_weight=weights)
    elo = SCALE * lr.coef_[0] + INIT_RATING
    if BASELINE in models.index:
        elo += 1000 - elo[models[BASELINE]]
    return pd.Series(elo, index=models.index)


def reference(df: pd.DataFrame, rounds: int) -> pd.DataFrame:
    point = compute_mle_elo(df)
    np.random.seed(42)
    samples = pd.DataFrame([compute_mle_elo(df.sample(frac=1.0, replace=True))
                            for _ in range(rounds)])
    to_score = lambda e: 100 / (1 + 10 ** ((1000 - e) / 400))  # noqa: E731
    return pd.DataFrame({"score": to_score(point), "lower": to_score(samples.quantile(0.025)),
                         "upper": to_score(samples.quantile(0.975))})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks"))
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    import warnings

    warnings.filterwarnings("ignore")
    data = battles()
    start = time.perf_counter()
    theirs = reference(data, args.rounds)
    their_s = time.perf_counter() - start
    start = time.perf_counter()
    ours = bradley_terry_scores(data, BASELINE, bootstrap_rounds=args.rounds, seed=42)
    our_s = time.perf_counter() - start
    common = theirs.index
    diff = (ours.loc[common, ["score", "lower", "upper"]] - theirs.loc[common]).abs()
    report = (
        "# Bradley–Terry with 100 bootstrap rounds: metajudge vs scikit-learn reference\n\n"
        f"{len(data):,} battles (20 models vs {BASELINE}, 500 questions, 2 games, `>>` as 3 "
        "rows), one run on the same machine. Reference: arena-hard-auto v0.1's pivot + "
        "scikit-learn LogisticRegression per round, with its bootstrap draws; metajudge: "
        "`bradley_terry_scores(battles, baseline, bootstrap_rounds=100, seed=42)` (same draws).\n\n"
        "Command: `.venv-bench/bin/python benchmarks/bt_bootstrap.py`\n\n"
        "| | reference s | metajudge s | speed-up | max abs Δ score | max abs Δ lower/upper |\n"
        "|---|---|---|---|---|---|\n"
        f"| BT + {args.rounds} rounds | {their_s:.2f} | {our_s:.2f} | {their_s / our_s:.1f}× | "
        f"{diff['score'].max():.1e} | {diff[['lower', 'upper']].max().max():.1e} |\n")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bt_bootstrap.md").write_text(report)
    save_rows(args.out, "bt_bootstrap", [{
        "measurement": f"Bradley–Terry + {args.rounds} bootstrap rounds, {len(data):,} battles",
        "reference": "scikit-learn LogisticRegression per round (arena-hard-auto v0.1 method)",
        "ratio": f"{their_s / our_s:.1f}× faster",
        "figures": f"{their_s:.2f} s vs {our_s:.2f} s; max abs Δ score "
                   f"{diff['score'].max():.1e}, interval ends "
                   f"{diff[['lower', 'upper']].max().max():.1e}"}])
    print(report)


if __name__ == "__main__":
    main()
