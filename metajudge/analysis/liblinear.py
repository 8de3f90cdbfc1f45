"""scikit-learn's liblinear L1 logistic regression, step for step: AlpacaEval's numbers reproduce.

AlpacaEval fits its length-control GLM with ``LogisticRegression(penalty="l1",
solver="liblinear", tol=1e-4, random_state=123)``. liblinear's newGLMNET solver stops at a
relative tolerance, not at the optimum: its coefficients differ from the exact minimiser by up to
~1e-3, which moves an LC win rate by up to ~0.01 points. Reproducing published numbers therefore
means reproducing the solver, including its stopping rules and its random coordinate order.

This module is a NumPy transcription of ``solve_l1r_lr`` from scikit-learn's patched copy of
LIBLINEAR (``sklearn/svm/src/liblinear/linear.cpp``; LIBLINEAR is BSD-3-Clause, Copyright (c)
2007-2015 The LIBLINEAR Project; algorithm from Yuan, Ho and Lin 2012, "An improved GLMNET for
L1-regularized logistic regression"), with the call path around it:

* rows with zero weight are dropped, label-0 rows come first (``remove_zero_weight``,
  ``group_classes``); ``C_i = C·w_i``; tolerance ``eps·max(min(#pos, #neg), 1)/l``;
* the coordinate order of each inner sweep is shuffled with ``std::mt19937`` seeded by
  ``RandomState(random_state).randint(INT_MAX)`` through scikit-learn's ``bounded_rand_int``
  (Lemire's method), reproduced here with NumPy's MT19937 in the state ``std::mt19937`` seeds.

Only sums over rows are evaluated in a different order (NumPy's dot), so results agree with
scikit-learn to rounding error, not bit for bit.
"""

from __future__ import annotations

from functools import cache
from operator import mul

import numpy as np

NU = 1e-12
SIGMA = 0.01
MAX_INNER_ITERATIONS = 1000
MAX_LINE_SEARCH = 20
INT_MAX = 2**31 - 1


@cache
def _seeded_key(seed: int) -> np.ndarray:
    """``std::mt19937::seed(seed)`` state (Knuth's init_genrand)."""
    key = [seed & 0xFFFFFFFF]
    for i in range(1, 624):
        previous = key[-1]
        key.append((1812433253 * (previous ^ (previous >> 30)) + i) & 0xFFFFFFFF)
    return np.array(key, dtype=np.uint32)


#: raw outputs kept per seed; a fit that needs more continues the stream
STREAM_PREFIX = 4096


@cache
def _stream_prefix(seed: int) -> tuple[int, ...]:
    generator = np.random.MT19937()
    generator.state = {
        "bit_generator": "MT19937", "state": {"key": _seeded_key(seed), "pos": 624}}
    return tuple(generator.random_raw(STREAM_PREFIX).tolist())


class _StdMT19937:
    """32-bit outputs of ``std::mt19937`` seeded with ``seed``."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._outputs = _stream_prefix(seed)
        self._position = 0

    def next32(self) -> int:
        if self._position == len(self._outputs):
            generator = np.random.MT19937()
            generator.state = {
                "bit_generator": "MT19937", "state": {"key": _seeded_key(self._seed), "pos": 624}}
            self._outputs = tuple(generator.random_raw(2 * len(self._outputs)).tolist())
        value = self._outputs[self._position]
        self._position += 1
        return value

    def bounded(self, orig_range: int) -> int:
        """scikit-learn's ``bounded_rand_int``: a uniform integer in [0, orig_range)."""
        span = orig_range & 0xFFFFFFFF
        m = self.next32() * span
        low = m & 0xFFFFFFFF
        if low < span:
            threshold = (-span) & 0xFFFFFFFF
            if threshold >= span:
                threshold -= span
                if threshold >= span:
                    threshold %= span
            while low < threshold:
                m = self.next32() * span
                low = m & 0xFFFFFFFF
        return m >> 32


@cache
def liblinear_seeds(random_state: int, count: int) -> tuple[int, ...]:
    """The seeds scikit-learn hands to liblinear for ``random_state``: one draw of
    ``randint(INT_MAX)`` per fit from one ``RandomState``, so the k-th C of a regularisation path
    (``LogisticRegressionCV`` fits a fold's Cs in order) gets the k-th draw."""
    generator = np.random.RandomState(random_state)
    return tuple(int(generator.randint(INT_MAX)) for _ in range(count))


def fit_l1_logistic_liblinear(
    X: np.ndarray, y: np.ndarray, weight: np.ndarray | None, C: float, *,
    tol: float = 1e-4, max_newton_iterations: int = 100, random_state: int = 123,
    path_position: int = 0,
) -> np.ndarray:
    """Coefficients ``LogisticRegression(penalty="l1", solver="liblinear", fit_intercept=False)``
    returns for soft labels ``y`` in [0, 1] entered as AlpacaEval enters them (each row twice:
    label 1 with weight ``w·y``, label 0 with weight ``w·(1 − y)``). ``path_position`` k gives
    the fit of the k-th C of a path (``LogisticRegressionCV``), which uses the k-th seed."""
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    w = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=float)
    positive = C * (y * w)
    negative = C * ((1.0 - y) * w)
    keep = (positive > 0) | (negative > 0)
    n_positive, n_negative = int((positive > 0).sum()), int((negative > 0).sum())
    n_rows = n_positive + n_negative
    eps = tol * max(min(n_positive, n_negative), 1) / n_rows
    seed = liblinear_seeds(random_state, path_position + 1)[-1]
    return _solve_l1r_lr(X[keep], positive[keep], negative[keep], n_rows, eps,
                         max_newton_iterations, _StdMT19937(seed))


def _solve_l1r_lr(  # noqa: C901 - one transcription of one C function, kept whole on purpose
    X: np.ndarray, c_positive: np.ndarray, c_negative: np.ndarray, n_rows: int, eps: float,
    max_newton_iterations: int, rng: _StdMT19937,
) -> np.ndarray:
    """``solve_l1r_lr`` with two changes of bookkeeping that leave every quantity the same up to
    rounding: the label-1 and label-0 copy of a row are summed as one row (costs ``c_positive``,
    ``c_negative``; they share ``x`` and so every per-row factor), and the inner coordinate
    descent reads ``Σ_i x_ij·D_i·(xᵀd)_i`` from the small matrix ``Xᵀ·diag(D)·X`` instead of
    re-summing over rows. ``n_rows`` is liblinear's ``l``, its row count (copies with non-zero
    weight)."""
    w_size = X.shape[1]
    C = c_positive + c_negative
    pairs = [(j, k) for j in range(w_size) for k in range(j, w_size)]
    products = np.column_stack([X[:, j] * X[:, k] for j, k in pairs])
    w = [0.0] * w_size
    wpd = [0.0] * w_size
    index = list(range(w_size))
    xjneg_sum = c_negative @ X
    exp_wTx = np.ones(len(C))
    w_norm = 0.0
    gmax_old = np.inf
    gnorm1_init = -1.0
    inner_eps = 1.0
    qp_no_change = 0
    needs_update = True

    for newton_iter in range(max_newton_iterations):
        if needs_update:
            tau_tmp = 1.0 / (1.0 + exp_wTx)
            tau = C * tau_tmp
            D = tau * (1.0 - tau_tmp)  # C·e^z/(1+e^z)², as liblinear's D
            hessian = [[0.0] * w_size for _ in range(w_size)]
            for (j, k), value in zip(pairs, (D @ products).tolist(), strict=True):
                hessian[j][k] = hessian[k][j] = value
            grad = (xjneg_sum - tau @ X).tolist()
            needs_update = False
        hdiag = [NU + hessian[j][j] for j in range(w_size)]
        gmax_new = gnorm1_new = 0.0
        active_size = w_size
        s = 0
        while s < active_size:
            j = index[s]
            gp, gn = grad[j] + 1.0, grad[j] - 1.0
            violation = 0.0
            if w[j] == 0:
                if gp < 0:
                    violation = -gp
                elif gn > 0:
                    violation = gn
                elif gp > gmax_old / n_rows and gn < -gmax_old / n_rows:
                    active_size -= 1
                    index[s], index[active_size] = index[active_size], index[s]
                    continue
            elif w[j] > 0:
                violation = abs(gp)
            else:
                violation = abs(gn)
            gmax_new = max(gmax_new, violation)
            gnorm1_new += violation
            s += 1

        if newton_iter == 0:
            gnorm1_init = gnorm1_new
        if gnorm1_new <= eps * gnorm1_init or qp_no_change >= 10:
            break
        qp_no_change += 1

        inner = 0
        qp_gmax_old = np.inf
        qp_active_size = active_size
        step = [0.0] * w_size  # wpd − w, i.e. xTd = X @ step
        while inner < MAX_INNER_ITERATIONS:
            qp_gmax_new = qp_gnorm1_new = 0.0
            bounded = rng.bounded
            for k in range(qp_active_size):
                i = k + bounded(qp_active_size - k)
                index[i], index[k] = index[k], index[i]
            s = 0
            while s < qp_active_size:
                j = index[s]
                H = hdiag[j]
                row = hessian[j]
                G = grad[j] + (wpd[j] - w[j]) * NU + sum(map(mul, row, step))
                gp, gn = G + 1.0, G - 1.0
                violation = 0.0
                if wpd[j] == 0:
                    if gp < 0:
                        violation = -gp
                    elif gn > 0:
                        violation = gn
                    elif gp > qp_gmax_old / n_rows and gn < -qp_gmax_old / n_rows:
                        qp_active_size -= 1
                        index[s], index[qp_active_size] = index[qp_active_size], index[s]
                        continue
                elif wpd[j] > 0:
                    violation = abs(gp)
                else:
                    violation = abs(gn)
                if gp < H * wpd[j]:
                    z = -gp / H
                elif gn > H * wpd[j]:
                    z = -gn / H
                else:
                    z = -wpd[j]
                if abs(z) < 1.0e-12:
                    s += 1
                    continue
                z = min(max(z, -10.0), 10.0)
                qp_no_change = 0
                qp_gmax_new = max(qp_gmax_new, violation)
                qp_gnorm1_new += violation
                wpd[j] += z
                step[j] += z
                s += 1
            inner += 1
            if qp_gnorm1_new <= inner_eps * gnorm1_init:
                if qp_active_size == active_size:
                    break
                qp_active_size = active_size
                qp_gmax_old = np.inf
                continue
            qp_gmax_old = qp_gmax_new

        xTd = X @ np.array(step)
        delta = sum(grad[j] * (wpd[j] - w[j]) for j in range(w_size))
        w_norm_new = sum(abs(v) for v in wpd)
        delta += w_norm_new - w_norm
        negsum_xTd = float(c_negative @ xTd)
        for _ in range(MAX_LINE_SEARCH):
            cond = w_norm_new - w_norm + negsum_xTd - SIGMA * delta
            exp_xTd = np.exp(xTd)
            exp_wTx_new = exp_wTx * exp_xTd
            cond += float(C @ np.log((1.0 + exp_wTx_new) / (exp_xTd + exp_wTx_new)))
            if cond <= 0:
                w_norm = w_norm_new
                w = list(wpd)
                exp_wTx = exp_wTx_new
                needs_update = True
                break
            wpd = [(a + b) * 0.5 for a, b in zip(w, wpd, strict=True)]
            w_norm_new = sum(abs(v) for v in wpd)
            delta *= 0.5
            negsum_xTd *= 0.5
            xTd *= 0.5
        else:
            exp_wTx = np.exp(X @ np.array(w))
        if inner == 1:
            inner_eps *= 0.25
        gmax_old = gmax_new
    return np.array(w)
