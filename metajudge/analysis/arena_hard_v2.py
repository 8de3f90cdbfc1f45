"""Arena-Hard v2.0's scores, as its ``show_result.py`` computes them (SPEC §9), in numpy.

**Battles** (``load_judgments``): a judgment row (one question, two games) with a null game or a
null score gives none; else its outcomes for the model, game 2's label first (the model shown
as A) and then game 1's complemented, a ``>>`` verdict as three rows (weight 3) and a tie as
0.5; the labels ``A<B``-style are the tool's too. The rows keep the files' order.

**Plain score** (``print_leaderboard``): per bootstrap round and per model (models in sorted
order), the model's outcome rows resampled with replacement and averaged; the score is the mean
of the rounds' means, the interval their 5th and 95th percentiles (a 90% interval). The tool
draws through numpy's global generator, unseeded (``groupby(...).sample(frac=1,
replace=True)`` is ``np.random.choice(n, n)`` per model); here ``RandomState(seed)`` draws the
same numbers, so under ``np.random.seed(seed)`` the tool's numbers are these.

**Style control** (``print_leaderboard_with_style_features``): per battle row the model's and
the baseline's answer metadata give four features, the length one ``(m − b)/(m + b)`` on
``token_len`` and, for headers, lists and bold text, the densities ``count/(token_len + 1)``
compared as ``(m − b)/(m + b + 1)``; each is standardised over the rows (sample standard
deviation). The Bradley–Terry model (natural-log scale, no penalty) has a column per model
(+1; the baseline is the reference) and the features; it is fitted on each of ``rounds``
bootstrap resamplings of the rows (``np.random.randint(0, n, (rounds, n))``, again the global
generator: ``RandomState(seed)`` here), and the score is the median of the rounds' win
probabilities against the baseline, the interval their 5th and 95th percentiles.

The tool fits with torch's L-BFGS in float32 (learning rate 0.1, at most 50 iterations, no line
search), which stops short of the maximum; here the likelihood is maximised to machine precision
(:func:`~metajudge.analysis.logistic.fit_logistic`), so style-controlled scores differ from the
tool's by what its optimiser leaves (``tests/unit/test_arena_hard_v2_official.py`` measures it
and shows the tool's own fit, run to convergence, agreeing with this one).

>>> rows = [{"uid": "q", "model": "m", "category": "hard_prompt",
...          "games": [{"score": "A>B"}, {"score": "A>>B"}]}]
>>> battles_from_judgments(rows)["scores"].tolist()   # game 2 (model A) x3, game 1 flipped
[1.0, 1.0, 1.0, 0.0]
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from metajudge.analysis.logistic import fit_logistic

log = logging.getLogger(__name__)

WEIGHT = 3
#: the tool's ``label_to_score``: the outcome rows of a label, for the answer shown as A
LABEL_TO_SCORE: dict[str, list[float]] = {
    "A>B": [1.0], "A>>B": [1.0] * WEIGHT, "A=B": [0.5], "A<<B": [0.0] * WEIGHT, "A<B": [0.0],
    "B>A": [0.0], "B>>A": [0.0] * WEIGHT, "B=A": [0.5], "B<<A": [1.0] * WEIGHT, "B<A": [1.0]}
STYLE_FEATURES = ("token_len", "header_count", "list_count", "bold_count")
CONTROLS = {("length",): slice(0, 1), ("markdown",): slice(1, 4),
            ("length", "markdown"): slice(0, 4)}
QUANTILES = (0.05, 0.95)


def null_judgment(row: Mapping) -> bool:
    """Whether the tool drops the row: a game, or a game's score, is null."""
    games = row.get("games") or [None, None]
    return any(g is None or g.get("score") is None for g in games[:2])


def battles_from_judgments(rows: Iterable[Mapping]) -> pd.DataFrame:
    """``uid, model, category, scores`` per outcome row (the model's outcome, float)."""
    out = []
    for row in rows:
        if null_judgment(row):
            continue
        first, second = row["games"][0]["score"], row["games"][1]["score"]
        for label in (first, second):
            if label not in LABEL_TO_SCORE:
                raise ValueError(f"judgment {row.get('uid')}: label {label!r} is not one the "
                                 f"tool scores ({sorted(LABEL_TO_SCORE)})")
        scores = LABEL_TO_SCORE[second] + [1.0 - s for s in LABEL_TO_SCORE[first]]
        model = str(row["model"]).split("/")[-1]
        out += [(row["uid"], model, row["category"], s) for s in scores]
    return pd.DataFrame(out, columns=["uid", "model", "category", "scores"])


def plain_scores(battles: pd.DataFrame, *, rounds: int = 100, seed: int = 0) -> pd.DataFrame:
    """Per model: ``score`` (mean of the bootstrap means), ``lower``, ``upper`` (5th/95th
    percentiles), ``mean`` (the outcome rows' plain mean) and ``rows``; fractions in [0, 1]."""
    rng = np.random.RandomState(seed)
    groups = {m: battles["scores"].to_numpy(float)[battles["model"].to_numpy() == m]
              for m in sorted(battles["model"].unique())}
    means = np.empty((rounds, len(groups)))
    for r in range(rounds):
        for k, values in enumerate(groups.values()):
            means[r, k] = values[rng.choice(len(values), size=len(values), replace=True)].mean()
    lower, upper = np.percentile(means, [100 * q for q in QUANTILES], axis=0)
    return pd.DataFrame({"score": means.mean(axis=0), "lower": lower, "upper": upper,
                         "mean": [v.mean() for v in groups.values()],
                         "rows": [len(v) for v in groups.values()]},
                        index=pd.Index(list(groups), name="model"))


def style_differences(model_meta: Sequence[Mapping], baseline_meta: Sequence[Mapping]
                      ) -> np.ndarray:
    """The tool's four unstandardised features per row (model against baseline)."""
    m, b = _metadata_array(model_meta), _metadata_array(baseline_meta)
    out = np.empty_like(m)
    out[:, 0] = (m[:, 0] - b[:, 0]) / (m[:, 0] + b[:, 0])
    md, bd = m[:, 1:] / (m[:, :1] + 1.0), b[:, 1:] / (b[:, :1] + 1.0)
    out[:, 1:] = (md - bd) / (md + bd + 1.0)
    return out


def style_scores(battles: pd.DataFrame, model_meta: Sequence[Mapping],
                 baseline_meta: Sequence[Mapping], baseline: str, *,
                 control: Sequence[str] = ("length", "markdown"), rounds: int = 100,
                 seed: int = 0) -> tuple[pd.DataFrame, dict[str, float]]:
    """Per model ``style_score`` (median), ``style_lower``, ``style_upper`` (fractions), and
    the features' median coefficients; ``model_meta``/``baseline_meta`` per battle row.

    A feature constant over the rows has no standard deviation (the tool divides by zero and
    stops); it is left out, with a warning naming it."""
    key = tuple(sorted(set(control)))
    if key not in CONTROLS:
        raise ValueError(f"control features {list(control)}: use length and/or markdown")
    names = STYLE_FEATURES[CONTROLS[key]]
    raw = style_differences(model_meta, baseline_meta)[:, CONTROLS[key]]
    if not np.isfinite(raw).all():
        raise ValueError("style features undefined (two empty answers have no length ratio)")
    std = raw.std(axis=0, ddof=1) if len(raw) > 1 else np.zeros(raw.shape[1])
    keep = std > 0
    if not keep.all():
        log.warning("style control: %s constant in every battle and left out (the official "
                    "tool stops on it)", ", ".join(n for n, k in zip(names, keep, strict=True)
                                                  if not k))
    features = (raw[:, keep] - raw[:, keep].mean(axis=0)) / std[keep]
    models = sorted(set(battles["model"]) - {baseline})
    column = {m: k for k, m in enumerate(models)}
    X = np.zeros((len(battles), len(models)))
    X[np.arange(len(battles)), battles["model"].map(column).to_numpy()] = 1.0
    X = np.column_stack([X, features])
    y = battles["scores"].to_numpy(float)
    draws = np.random.RandomState(seed).randint(0, len(y), size=(rounds, len(y)))
    coefs = np.array([fit_logistic(X[rows], y[rows]) for rows in draws])
    probs = 1.0 / (1.0 + np.exp(-coefs[:, : len(models)]))
    lower, upper = np.percentile(probs, [100 * q for q in QUANTILES], axis=0)
    table = pd.DataFrame({"style_score": np.percentile(probs, 50, axis=0),
                          "style_lower": lower, "style_upper": upper},
                         index=pd.Index(models, name="model"))
    kept = [n for n, k in zip(names, keep, strict=True) if k]
    medians = np.percentile(coefs[:, len(models):], 50, axis=0)
    return table, {n: float(c) for n, c in zip(kept, medians, strict=True)}


def _metadata_array(rows: Sequence[Mapping]) -> np.ndarray:
    """token_len and the header, list and bold totals (dict counts summed, as the tool does)."""
    return np.array([[float(v) if isinstance(v, int | float) else float(sum(v.values()))
                      for v in (meta[name] for name in STYLE_FEATURES)] for meta in rows],
                    dtype=float).reshape(-1, len(STYLE_FEATURES))
