"""Bradley–Terry scores against a baseline, with bootstrap intervals and style control (SPEC §9).

Battles come in arena-hard-auto's layout: ``model_a``, ``model_b``, ``winner`` in
{``model_a``, ``model_b``, ``tie``} (``tie (bothbad)`` counts as a tie) and an optional ``weight``
(a ``>>`` verdict is three rows, as the tool writes them, or one row of weight 3, which is
expanded into three rows). A tie is half a win for each.

The ratings maximise the Bradley–Terry likelihood with win probability
``1 / (1 + 10^((E_b − E_a)/400))``; they are put on the Elo scale with the baseline at 1000, and a
model's score is its win probability against the baseline, in percent. Intervals: the battle
rows are resampled with replacement, each row of a ``>>`` verdict on its own, the model refitted
each round, and the 2.5th/97.5th percentiles of the ratings converted to scores. With seed 42
and the rows in the tool's order these are arena-hard-auto v0.1's own draws: its
``battles.sample(frac=1, replace=True)`` after ``np.random.seed(42)`` is
``RandomState(42).choice(n, n)`` round after round (and its style-control bootstrap the same, in
a run of its own).

Style control adds, per battle, the standardised differences of four style features —
``(a − b)/(a + b + 1)`` for token length, header, list and bold counts — to the design and fits
with an L2 penalty (C = 1) on all coefficients, as arena-hard-auto's style-controlled leaderboard
does; the score is read with the style features at zero. The features are standardised over the
battle rows, so their orientation matters: the tool's battles have the baseline as ``model_a``.
It needs the columns ``token_len_a``/``token_len_b``, ``header_count_a``/``_b``,
``list_count_a``/``_b``, ``bold_count_a``/``_b`` (see :mod:`metajudge.analysis.style`), or the
tool's ``conv_metadata`` (``sum_assistant_a_tokens``, counts as dicts). A feature that is the
same in every battle (no bold text anywhere) carries nothing and makes the tool divide by zero;
it is left out, with a warning naming it.

>>> import pandas as pd
>>> battles = pd.DataFrame({"model_a": ["base"] * 4, "model_b": ["m"] * 4,
...                         "winner": ["model_b", "model_b", "model_a", "tie"]})
>>> round(float(bradley_terry_scores(battles, "base", bootstrap_rounds=0).loc["m", "score"]), 6)
62.5
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from metajudge.analysis.logistic import fit_logistic

log = logging.getLogger(__name__)

SCALE = 400.0
INIT_RATING = 1000.0
LOG_BASE = math.log(10.0)
STYLE_FEATURES = ("token_len", "header_count", "list_count", "bold_count")
TIES = ("tie", "tie (bothbad)")


@dataclass(frozen=True)
class _Battles:
    """Battles as arrays: model indices, outcome for model_a in {0, 0.5, 1}, weights."""

    models: list[str]
    a: np.ndarray
    b: np.ndarray
    outcome: np.ndarray
    weight: np.ndarray


def bradley_terry_scores(
    battles: pd.DataFrame, baseline: str, *, bootstrap_rounds: int = 100, seed: int = 42,
    style_control: bool | None = None, confidence: float = 0.95,
) -> pd.DataFrame:
    """Score, interval and (where style columns are present) style-controlled score per model.

    Returns a frame indexed by model, sorted by score, with ``rating`` (Elo, baseline 1000),
    ``score``, ``lower``, ``upper`` (percent win probability against ``baseline``), ``battles``
    (total weight) and, with style control, ``style_rating``, ``style_score``, ``style_lower``,
    ``style_upper``. ``style_control=None`` turns it on when the style columns are there.
    """
    battles = expand_weights(with_style_columns(battles))
    data = _parse(battles, baseline)
    ratings = fit_ratings(data, baseline)
    tail = 100.0 * (1.0 - confidence) / 2
    frame = pd.DataFrame({"rating": ratings}, index=pd.Index(data.models, name="model"))
    frame["score"] = win_probability(frame["rating"])
    frame["lower"] = frame["upper"] = np.nan
    if bootstrap_rounds:
        samples = _bootstrap(data, bootstrap_rounds, seed, lambda d: fit_ratings(d, baseline))
        frame["lower"] = win_probability(np.percentile(samples, tail, axis=0))
        frame["upper"] = win_probability(np.percentile(samples, 100 - tail, axis=0))
    weight_per_model = pd.Series(0.0, index=frame.index)
    np.add.at(weight_per_model.values, data.a, data.weight)
    np.add.at(weight_per_model.values, data.b, data.weight)
    frame["battles"] = weight_per_model

    wants_style = style_control if style_control is not None else _has_style(battles)
    if wants_style:
        features = _standardised(style_features(battles), data.weight)
        if features.shape[1] == 0:
            if style_control:
                raise ValueError("every style feature is constant: no style control possible")
            log.warning("every style feature is constant: no style-controlled score")
            for column in ("style_rating", "style_score", "style_lower", "style_upper"):
                frame[column] = np.nan
            return frame.sort_values("score", ascending=False)
        style = fit_style_ratings(data, baseline, features)
        frame["style_rating"] = style
        frame["style_score"] = win_probability(frame["style_rating"])
        frame["style_lower"] = frame["style_upper"] = np.nan
        if bootstrap_rounds:
            samples = _bootstrap(
                data, bootstrap_rounds, seed,
                lambda d, rows: fit_style_ratings(d, baseline, features[rows]), with_rows=True)
            frame["style_lower"] = win_probability(np.percentile(samples, tail, axis=0))
            frame["style_upper"] = win_probability(np.percentile(samples, 100 - tail, axis=0))
    return frame.sort_values("score", ascending=False)


def win_probability(rating: np.ndarray | pd.Series) -> np.ndarray:
    """Score in percent: win probability against a baseline rated 1000."""
    return 100.0 / (1.0 + 10.0 ** ((INIT_RATING - np.asarray(rating, dtype=float)) / SCALE))


def fit_ratings(data: _Battles, baseline: str) -> np.ndarray:
    """Maximum-likelihood Elo ratings, baseline at 1000 (models that never met the baseline's
    component, or won or lost every game, get ±inf-like ratings limited by a 1e-9 ridge)."""
    n_models = len(data.models)
    anchor = data.models.index(baseline)
    free = [k for k in range(n_models) if k != anchor]
    # the likelihood depends on the battles only through, per ordered pair (a, b), the total
    # weight and the weighted wins of a: fit on those (at most n_models² rows)
    pair = data.a * n_models + data.b
    total = np.bincount(pair, weights=data.weight, minlength=n_models * n_models)
    wins = np.bincount(pair, weights=data.weight * data.outcome,
                       minlength=n_models * n_models)
    seen = np.flatnonzero(total > 0)
    pairs = _Battles(data.models, seen // n_models, seen % n_models,
                     wins[seen] / total[seen], total[seen])
    X = _design(pairs, n_models)[:, free]
    theta = np.zeros(n_models)
    theta[free] = fit_logistic(X, pairs.outcome, pairs.weight, l2_C=1e9)
    return SCALE * theta + INIT_RATING


def fit_style_ratings(data: _Battles, baseline: str, features: np.ndarray) -> np.ndarray:
    """Style-controlled Elo ratings: L2-penalised (C = 1) fit with the standardised style
    differences (standardised once, on all battles, also for bootstrap rounds) as extra columns;
    every model has a column, so the penalty is arena-hard's."""
    X = np.column_stack([_design(data, len(data.models)), features])
    # each battle enters twice in arena-hard-auto (a tie once as a win, once as a loss)
    theta = fit_logistic(X, data.outcome, 2.0 * data.weight, l2_C=1.0)
    ratings = SCALE * theta[: len(data.models)]
    return ratings - ratings[data.models.index(baseline)] + INIT_RATING


def style_features(battles: pd.DataFrame) -> np.ndarray:
    """Per battle, ``(a − b)/(a + b + 1)`` for each style feature (unstandardised)."""
    missing = [f"{name}_{side}" for name in STYLE_FEATURES for side in "ab"
               if f"{name}_{side}" not in battles.columns]
    if missing:
        raise ValueError(f"style control needs the battle columns {missing}")
    a = battles[[f"{name}_a" for name in STYLE_FEATURES]].to_numpy(dtype=float)
    b = battles[[f"{name}_b" for name in STYLE_FEATURES]].to_numpy(dtype=float)
    return (a - b) / (a + b + 1.0)


def _standardised(features: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Each feature centred and scaled over the battles; constant features are dropped."""
    mean = np.average(features, axis=0, weights=weight)
    std = np.sqrt(np.average((features - mean) ** 2, axis=0, weights=weight))
    constant = ~(std > 0)
    if constant.any():
        log.warning("style control: %s constant in every battle and left out",
                    ", ".join(f"{STYLE_FEATURES[k]} (always {features[0, k]:g})"
                              for k in np.flatnonzero(constant)))
    keep = ~constant
    return (features[:, keep] - mean[keep]) / std[keep]


def with_style_columns(battles: pd.DataFrame) -> pd.DataFrame:
    """Battles with ``<feature>_a``/``_b`` columns, taken from the tool's ``conv_metadata`` when
    that is how they come (dict counts summed, as the tool sums them)."""
    if "conv_metadata" not in battles.columns or _has_style(battles):
        return battles
    names = {"token_len": "sum_assistant_{}_tokens", "header_count": "header_count_{}",
             "list_count": "list_count_{}", "bold_count": "bold_count_{}"}
    out = battles.copy()
    for feature, key in names.items():
        for side in "ab":
            out[f"{feature}_{side}"] = [
                _total(meta[key.format(side)]) if isinstance(meta, dict) else np.nan
                for meta in battles["conv_metadata"]]
    return out


def _total(value: object) -> float:
    return float(sum(value.values())) if isinstance(value, dict) else float(value)  # type: ignore[arg-type]


def expand_weights(battles: pd.DataFrame) -> pd.DataFrame:
    """Rows of integer weight w repeated w times in place (the tool's own rows), so that the
    bootstrap resamples what the tool resamples; fractional weights stay weights."""
    if "weight" not in battles.columns:
        return battles
    weight = battles["weight"].fillna(1.0).to_numpy(dtype=float)
    if not np.all(weight == np.round(weight)) or np.any(weight < 0):
        return battles
    rows = np.repeat(np.arange(len(battles)), weight.astype(int))
    return battles.iloc[rows].drop(columns="weight").reset_index(drop=True)


def _design(data: _Battles, n_models: int) -> np.ndarray:
    X = np.zeros((len(data.a), n_models))
    rows = np.arange(len(data.a))
    X[rows, data.a] += LOG_BASE
    X[rows, data.b] -= LOG_BASE
    return X


def _bootstrap(data: _Battles, rounds: int, seed: int, fit, *, with_rows: bool = False):  # type: ignore[no-untyped-def]
    rng = np.random.RandomState(seed)
    n = len(data.a)
    samples = np.empty((rounds, len(data.models)))
    for r in range(rounds):
        rows = rng.choice(n, size=n, replace=True)
        sample = _Battles(data.models, data.a[rows], data.b[rows], data.outcome[rows],
                          data.weight[rows])
        samples[r] = fit(sample, rows) if with_rows else fit(sample)
    return samples


def _has_style(battles: pd.DataFrame) -> bool:
    return all(f"{name}_{side}" in battles.columns for name in STYLE_FEATURES for side in "ab")


def _parse(battles: pd.DataFrame, baseline: str) -> _Battles:
    for column in ("model_a", "model_b", "winner"):
        if column not in battles.columns:
            raise ValueError(f"battles need a {column!r} column")
    winner = battles["winner"].astype(str)
    unknown = sorted(set(winner) - {"model_a", "model_b", *TIES})
    if unknown:
        raise ValueError(f"unknown winner values {unknown}; expected model_a, model_b or tie")
    names = pd.unique(pd.concat([battles["model_a"], battles["model_b"]], ignore_index=True))
    models = [str(name) for name in names]
    if baseline not in models:
        raise ValueError(f"baseline {baseline!r} is in no battle")
    index = {name: k for k, name in enumerate(models)}
    weight = (battles["weight"].fillna(1.0).to_numpy(dtype=float) if "weight" in battles.columns
              else np.ones(len(battles)))  # a battle without a weight counts once
    if np.any(weight < 0) or not np.all(np.isfinite(weight)):
        raise ValueError("battle weights must be finite and non-negative")
    outcome = np.where(winner == "model_a", 1.0, np.where(winner == "model_b", 0.0, 0.5))
    return _Battles(
        models=models,
        a=battles["model_a"].astype(str).map(index).to_numpy(),
        b=battles["model_b"].astype(str).map(index).to_numpy(),
        outcome=outcome, weight=weight,
    )
