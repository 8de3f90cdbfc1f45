"""AlpacaEval's length-controlled win rate (``length_controlled_v1``, SPEC §8), without alpaca_eval.

One row per instruction, ``y = preference − 1`` in [0, 1] (2 = the model wins, 1 = the baseline
wins, 1.5 or 0 = tie). A GLM without intercept predicts y from the standardised length difference,
the instruction's difficulty and a model indicator, regularised toward the baseline by the two
"gamed" baseline variants of ``df_gamed.csv`` (weight 0.1 each, model indicator 0):

    logit P(model wins on i) = θ_len·tanh(s_i) + θ_d·d_i + θ_m·g_i

fitted as an L1-penalised logistic regression on soft labels, C chosen by 5-fold grouped
cross-validation on the weighted log-loss over ``logspace(−4, 4, 10)``. The LC win rate is the
mean predicted win probability with the length term set to zero.

The folds are the ones scikit-learn ≥ 1.6 ``GroupKFold`` makes (group g of n goes to fold
(n − 1 − g) mod 5), so the cross-validated C agrees with alpaca-eval 0.6.6 on current
scikit-learn (``fold_scheme="sklearn>=1.6"``). ``fold_scheme="sklearn<1.6"`` gives the folds of
older installs: scikit-learn < 1.6 deals the (equal-sized) groups round-robin in the order
``np.argsort(sizes)[::-1]``, which numpy 1.26's AVX-512 sort scrambles; that order, recorded
for every n by ``scripts/lc_folds_sklearn_lt_1_6.py``, is bundled. Published leaderboard numbers
were computed with still other fold assignments; each is reproduced by a refit at one grid C,
which ``C=`` accepts.
"""

from __future__ import annotations

import gzip
import io
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TypedDict

import numpy as np
import pandas as pd

from metajudge.analysis.liblinear import fit_l1_logistic_liblinear
from metajudge.analysis.logistic import sigmoid

#: the C grid of scikit-learn's LogisticRegressionCV(Cs=10)
C_GRID = np.logspace(-4, 4, 10)
N_FOLDS = 5
#: total weight of the two gamed baselines (each gets half)
REGULARIZE_TO_BASELINE = 0.2
#: the fold schemes of scikit-learn's GroupKFold that alpaca-eval's LC can have run with
FOLD_SCHEMES = ("sklearn>=1.6", "sklearn<1.6")
COEFFICIENT_NAMES = ("tanh_length", "instruction_difficulty", "model")


@dataclass(frozen=True)
class LengthControlledResult:
    """AlpacaEval's metric fields, plus the fitted GLM and an optional bootstrap interval."""

    length_controlled_winrate: float
    lc_standard_error: float
    win_rate: float
    standard_error: float
    discrete_win_rate: float
    n_wins: int
    n_wins_base: int
    n_draws: int
    n_total: int
    avg_length: int
    C: float | None
    cv_C: float | None
    coefficients: dict[str, float]
    fold_scheme: str = FOLD_SCHEMES[0]
    lc_lower: float | None = None
    lc_upper: float | None = None
    bootstrap_rounds: int = 0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class _Design:
    """What the GLM sees of one model's annotations."""

    y: np.ndarray            # preference − 1, NaN where missing
    delta_length: np.ndarray  # len(baseline output) − len(model output)
    difficulty: np.ndarray   # instruction difficulty by row position


def gamed_baselines_path() -> Path:
    """Where the bundled ``df_gamed.csv`` lies."""
    return Path(str(resources.files("metajudge") / "data" / "alpaca_eval_df_gamed.csv"))


@cache
def gamed_baselines() -> pd.DataFrame:
    """The bundled ``df_gamed.csv`` (AlpacaEval's verbose/concise gpt4_1106_preview rows)."""
    return pd.read_csv(gamed_baselines_path())


@cache
def instruction_difficulty() -> np.ndarray:
    """Difficulty of each of the 805 AlpacaEval instructions, by position (AlpacaEval reads the
    first row of each ``index`` in ``df_gamed.csv``)."""
    frame = gamed_baselines().drop_duplicates("index")
    return frame.set_index("index")["instruction_difficulty"].sort_index().to_numpy()


def length_controlled_winrate(
    annotations: pd.DataFrame, *, C: float | None = None,
    bootstrap_rounds: int = 0, seed: int = 0, confidence: float = 0.95,
    fold_scheme: str = FOLD_SCHEMES[0],
) -> LengthControlledResult:
    """LC win rate of the model (``output_2``) against the baseline (``output_1``).

    ``annotations`` has AlpacaEval's layout: ``preference`` and either ``output_1``/``output_2``
    or precomputed character lengths ``len_1``/``len_2``; one row per instruction, row i being
    AlpacaEval instruction i (difficulties are taken by position, as AlpacaEval does). ``C=None``
    picks C by cross-validation (folds of ``fold_scheme``, see the module docstring); a grid value
    reproduces a published number. With
    ``bootstrap_rounds`` > 0, instructions are resampled and the GLM refitted at the chosen C to
    give a percentile interval that includes parameter uncertainty.
    """
    design = _design(annotations)
    if np.isnan(design.y).all():
        raise ValueError("no annotation has a preference: nothing to compute a win rate from")
    raw = _raw_winrate(design.y)
    avg_length = int(_lengths(annotations, 2).mean())
    if _is_baseline_against_itself(annotations):
        coefficients = dict.fromkeys(COEFFICIENT_NAMES, 0.0)
        return LengthControlledResult(
            50.0, 0.0, **raw, avg_length=avg_length, C=None, cv_C=None,
            coefficients=coefficients)

    if fold_scheme not in FOLD_SCHEMES:
        raise ValueError(f"fold_scheme must be one of {FOLD_SCHEMES}, got {fold_scheme!r}")
    cv_C = select_C(design, fold_scheme) if C is None or bootstrap_rounds else None
    chosen = cv_C if C is None else float(C)
    assert chosen is not None
    theta = _fit(design, chosen)
    terms = _lc_terms(design, theta)
    lower = upper = None
    if bootstrap_rounds:
        lower, upper = _bootstrap(design, chosen, bootstrap_rounds, seed, confidence)
    return LengthControlledResult(
        length_controlled_winrate=100.0 * float(terms.mean()),
        lc_standard_error=100.0 * float(pd.Series(terms).sem()),
        **raw, avg_length=avg_length, C=chosen, cv_C=cv_C,
        coefficients=dict(zip(COEFFICIENT_NAMES, map(float, theta), strict=True)),
        lc_lower=lower, lc_upper=upper, bootstrap_rounds=bootstrap_rounds,
        fold_scheme=fold_scheme,
    )


def folds(n: int, fold_scheme: str = FOLD_SCHEMES[0]) -> np.ndarray:
    """The fold of each of n training rows (one group each) under a scheme.

    >>> folds(7).tolist()
    [1, 0, 4, 3, 2, 1, 0]
    """
    order = np.arange(n) if fold_scheme == FOLD_SCHEMES[0] else _old_order(n)
    fold = np.empty(n, dtype=int)
    fold[order[::-1]] = np.arange(n) % N_FOLDS  # round-robin in reversed sort order
    return fold


@cache
def _old_orders() -> np.ndarray:
    path = resources.files("metajudge") / "data" / "alpaca_eval_folds_sklearn_lt_1_6.npy.gz"
    return np.load(io.BytesIO(gzip.decompress(path.read_bytes())))


def _old_order(n: int) -> np.ndarray:
    """numpy 1.26's argsort of n equal keys, as recorded (n = 1,611 .. 2,415)."""
    first, last = 1611, 2415
    if not first <= n <= last:
        raise ValueError(f"the sklearn<1.6 folds are recorded for {first}..{last} training "
                         f"rows (1,610 gamed rows + 1..805 annotations), not {n}")
    deltas = _old_orders()
    start = sum(range(first, n))
    return np.cumsum(deltas[start:start + n]) - 1


def select_C(design: _Design, fold_scheme: str = FOLD_SCHEMES[0]) -> float:
    """The grid C with the best summed out-of-fold weighted log-loss (first one on ties)."""
    X, y, w = _training_rows(design)
    n = len(y)
    fold = folds(n, fold_scheme)
    scores = np.zeros(len(C_GRID))
    for k in range(N_FOLDS):
        train, test = fold != k, fold == k
        for c, C in enumerate(C_GRID):
            theta = fit_l1_logistic_liblinear(X[train], y[train], w[train], C, path_position=c)
            p = np.clip(sigmoid(X[test] @ theta), 1e-15, 1 - 1e-15)
            loss = w[test] * -(y[test] * np.log(p) + (1 - y[test]) * np.log(1 - p))
            scores[c] -= loss.mean()
    return float(C_GRID[int(np.argmax(scores))])


def _fit(design: _Design, C: float) -> np.ndarray:
    X, y, w = _training_rows(design)
    return fit_l1_logistic_liblinear(X, y, w, C)


def _lc_terms(design: _Design, theta: np.ndarray) -> np.ndarray:
    """Predicted win probability of every row with the length term at zero."""
    return sigmoid(theta[1] * design.difficulty + theta[2])


def _training_rows(design: _Design) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gamed baselines first, then the model's rows with a preference (AlpacaEval's order)."""
    gamed = gamed_baselines()
    std = design.delta_length.std(ddof=1)
    # no spread in length (a degenerate bootstrap sample): the length feature carries nothing
    model_s = design.delta_length / std if std > 0 else np.zeros_like(design.delta_length)
    X = np.column_stack([
        np.tanh(np.concatenate([gamed["std_delta_len"].to_numpy(), model_s])),
        np.concatenate([gamed["instruction_difficulty"].to_numpy(), design.difficulty]),
        np.concatenate([np.zeros(len(gamed)), np.ones(len(model_s))]),
    ])
    y = np.concatenate([gamed["preference"].to_numpy(), design.y])
    w = np.concatenate([np.full(len(gamed), REGULARIZE_TO_BASELINE / 2), np.ones(len(model_s))])
    keep = ~np.isnan(y)
    return X[keep], y[keep], w[keep]


def _bootstrap(
    design: _Design, C: float, rounds: int, seed: int, confidence: float,
) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    n = len(design.y)
    estimates = np.empty(rounds)
    for r in range(rounds):
        rows = rng.integers(0, n, n)
        sample = _Design(design.y[rows], design.delta_length[rows], design.difficulty[rows])
        estimates[r] = 100.0 * _lc_terms(sample, _fit(sample, C)).mean()
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(estimates, [tail, 1.0 - tail])
    return float(low), float(high)


def _design(annotations: pd.DataFrame) -> _Design:
    if "preference" not in annotations.columns:
        raise ValueError("annotations need a 'preference' column (1 = baseline, 2 = model wins)")
    preference = pd.to_numeric(annotations["preference"], errors="raise").astype(float)
    preference = preference.replace({0.0: 1.5})
    bad = preference.notna() & ((preference < 1) | (preference > 2))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(
            f"annotations row {row}: preference {preference.iloc[row]} is not in [1, 2]")
    difficulty = instruction_difficulty()
    if len(annotations) > len(difficulty):
        raise ValueError(
            f"{len(annotations)} annotations, but AlpacaEval has {len(difficulty)} instructions")
    delta = (_lengths(annotations, 1) - _lengths(annotations, 2)).astype(float)
    return _Design(
        y=(preference - 1.0).to_numpy(), delta_length=delta,
        difficulty=difficulty[: len(annotations)],
    )


def _lengths(annotations: pd.DataFrame, which: int) -> np.ndarray:
    output, length = f"output_{which}", f"len_{which}"
    if output in annotations.columns:
        return annotations[output].astype(str).str.len().to_numpy()
    if length in annotations.columns:
        return annotations[length].to_numpy()
    raise ValueError(f"annotations need '{output}' (or its character length '{length}')")


def _is_baseline_against_itself(annotations: pd.DataFrame) -> bool:
    if {"generator_1", "generator_2"} <= set(annotations.columns):
        return bool((annotations["generator_1"] == annotations["generator_2"]).all())
    if {"output_1", "output_2"} <= set(annotations.columns):
        return bool((annotations["output_1"] == annotations["output_2"]).all())
    return False


class _RawWinRate(TypedDict):
    win_rate: float
    standard_error: float
    discrete_win_rate: float
    n_wins: int
    n_wins_base: int
    n_draws: int
    n_total: int


def _raw_winrate(y: np.ndarray) -> _RawWinRate:
    """AlpacaEval's ``get_winrate``: rows without a preference are dropped."""
    valid = pd.Series(y[~np.isnan(y)])
    return {
        "win_rate": 100.0 * float(valid.mean()),
        "standard_error": 100.0 * float(valid.sem()),
        "discrete_win_rate": 100.0 * float(((valid > 0.5) + 0.5 * (valid == 0.5)).mean()),
        "n_wins": int((valid > 0.5).sum()),
        "n_wins_base": int((valid < 0.5).sum()),
        "n_draws": int((valid == 0.5).sum()),
        "n_total": int(len(valid)),
    }


__all__ = [
    "C_GRID", "FOLD_SCHEMES", "LengthControlledResult", "folds", "gamed_baselines",
    "gamed_baselines_path", "instruction_difficulty", "length_controlled_winrate", "select_C",
]
