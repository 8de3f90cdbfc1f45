"""Weighted logistic regression without intercept, solved to machine precision by Newton steps.

The analyses fit small models (3 to ~100 coefficients) on a few thousand rows, many times over
(cross-validation, bootstrap). A dense Newton method converges in a handful of steps there, so
these solvers are both exact and far faster than a general-purpose library call.

Labels may be soft: ``y`` in [0, 1] stands for a row entering once with label 1 and weight
``w·y`` and once with label 0 and weight ``w·(1 − y)``, which is how AlpacaEval feeds
probabilistic preferences to scikit-learn. The objectives are the ones scikit-learn's
``LogisticRegression(fit_intercept=False)`` minimises:

* L2: ``½‖θ‖² + C·Σ wᵢ·ℓᵢ(θ)``
* none: ``Σ wᵢ·ℓᵢ(θ)``

with ``ℓᵢ(θ) = −yᵢ·log σ(xᵢθ) − (1 − yᵢ)·log σ(−xᵢθ)``.

>>> import numpy as np
>>> X = np.array([[1.0], [1.0], [1.0], [1.0]])
>>> theta = fit_logistic(X, np.array([1.0, 1.0, 1.0, 0.0]))   # 3 wins in 4: logit(0.75)
>>> round(float(theta[0]), 6) == round(float(np.log(3)), 6)
True
"""

from __future__ import annotations

import numpy as np

#: convergence threshold on the largest (sub)gradient entry, relative to the total weight
TOLERANCE = 1e-12
MAX_NEWTON_STEPS = 100


def sigmoid(z: np.ndarray) -> np.ndarray:
    """σ(z) without overflow."""
    return np.exp(-np.logaddexp(0.0, -z))


def log_loss_terms(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ℓ for each row: −y·log σ(z) − (1 − y)·log σ(−z)."""
    return y * np.logaddexp(0.0, -z) + (1.0 - y) * np.logaddexp(0.0, z)


def _smooth_parts(
    X: np.ndarray, y: np.ndarray, w: np.ndarray, theta: np.ndarray,
) -> tuple[float, np.ndarray, np.ndarray]:
    z = X @ theta
    p = sigmoid(z)
    value = float(w @ log_loss_terms(z, y))
    gradient = X.T @ (w * (p - y))
    hessian = (X.T * (w * p * (1.0 - p))) @ X
    return value, gradient, hessian


def fit_logistic(
    X: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None, *,
    l2_C: float | None = None,
) -> np.ndarray:
    """Coefficients of an unpenalised (``l2_C=None``) or L2-penalised logistic regression.

    An unpenalised fit needs data that do not separate; columns that are all zero get 0.
    """
    X, y, w = _checked(X, y, weight)
    n_features = X.shape[1]
    active = np.any(X != 0.0, axis=0)
    theta = np.zeros(n_features)
    ridge = 0.0 if l2_C is None else 1.0 / l2_C
    scale = max(float(w.sum()), 1.0)

    def objective(t: np.ndarray) -> float:
        return float(w @ log_loss_terms(X @ t, y)) + 0.5 * ridge * float(t @ t)

    value = objective(theta)
    for _ in range(MAX_NEWTON_STEPS):
        _, gradient, hessian = _smooth_parts(X, y, w, theta)
        gradient = gradient + ridge * theta
        hessian = hessian + ridge * np.eye(n_features)
        gradient[~active] = 0.0
        if np.max(np.abs(gradient)) <= TOLERANCE * scale:
            break
        sub = np.ix_(active, active)
        step = np.zeros(n_features)
        step[active] = -np.linalg.solve(
            hessian[sub] + 1e-12 * scale * np.eye(int(active.sum())), gradient[active])
        theta, value = _line_search(objective, theta, step, value, float(gradient @ step))
    return theta


def _line_search(objective, theta, step, value, slope):  # type: ignore[no-untyped-def]
    t = 1.0
    for _ in range(60):
        candidate = theta + t * step
        new_value = objective(candidate)
        if new_value <= value + 1e-4 * t * slope or abs(new_value - value) <= 1e-15 * abs(value):
            return candidate, new_value
        t *= 0.5
    return theta, value


def _checked(
    X: np.ndarray, y: np.ndarray, weight: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    w = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=float)
    if X.ndim != 2 or len(X) != len(y) or len(w) != len(y):
        raise ValueError(f"shapes do not match: X {X.shape}, y {y.shape}, weight {w.shape}")
    if np.any((y < 0) | (y > 1)) or np.any(w < 0):
        raise ValueError("labels must lie in [0, 1] and weights be non-negative")
    return X, y, w
