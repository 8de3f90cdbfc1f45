"""Adaptive judging (SPEC §5a, issue 28): which judgments and comparisons to request next.

Pure functions of what one prompt's records hold so far; the judge and meta-judge stages call
them round by round, and the pairs stage and the audit replay them. Nothing here calls a model
or reads a file, and nothing is random except through a seed given by the caller, so the same
records always give the same requests (a killed stage resumes to the same decisions).

**Judge stage** (per prompt, K responses, at most N judgments each):

- round 0, rule ``initial``: every response gets ``initial`` judgments;
- the meta-judge's response is chosen on those ``initial`` judgments alone (largest population
  variance, seeded tie-break: :func:`select_on_initial`), and brought to N judgments in round 1,
  rule ``selected`` (its judgments are the meta-judge's candidates: with fewer, the best and
  worst of them would be worse than the full procedure's);
- every round, rule ``actor``: a response gets ``step`` more judgments when moving its mean to
  either end of its confidence interval, mean ± z·s/√n (s: the prompt's pooled within-response
  standard deviation of scores, at least ``sd_floor``), with the other means kept, changes the
  length-controlled rule's (chosen, rejected) pair (:func:`actor_sensitive`);
- it stops when no response is sensitive, or every sensitive one has N judgments.

**Meta-judge stage** (per selected response, its scored judgments):

- round 0, rule ``ring``: the judgments in a seeded random cycle, each neighbouring pair in both
  orders (2·M comparisons of the full M·(M−1));
- then LUCB, rules ``best`` and ``worst``: fit the position-weighted Bradley–Terry ratings
  (SPEC §5, with the ω of the comparisons made so far in the iteration); h = the current chosen
  (highest-rated eligible judgment), its challenger l = the eligible judgment whose rating
  difference to h is least certain, (ε_h − ε_l)/se(ε_h − ε_l) smallest; when that z-score is
  below ``z``, compare h with l in both orders, or, when they were compared, each of them with
  its most informative opponent not yet compared (rating closest). The same for the rejected
  judgment (lowest-rated of all). se comes from the Fisher information of the fit.
- it stops when both z-scores reach ``z`` or every ordered pair was compared (the full design).

Every comparison is made in both orders, so ω keeps its SPEC §5 meaning. See SPEC §5a for the
measured error of these stopping rules.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from metajudge.pairs.actor import decide_actor_pair
from metajudge.pairs.judge import RIDGE, fit_ratings

#: rule names a record can carry (``Judgment.rule`` / ``MetaJudgment.rule``)
JUDGE_RULES = ("initial", "selected", "actor", "audit")
META_RULES = ("ring", "best", "worst", "audit")


@dataclass(frozen=True)
class JudgeRule:
    """Settings of the adaptive judge stage (config ``judge.adaptive_*``)."""

    max_judgments: int = 11      # N: the most any response gets (judge.judgments_per_response)
    initial: int = 3             # judgments every response gets first
    step: int = 1                # judgments added to a sensitive response per round
    z: float = 1.2               # confidence-interval half-width, in standard errors
    sd_floor: float = 0.5        # least within-response sd (3 equal scores do not mean sd 0)
    tolerance: float = 0.1       # indifference zone of the pair's gap, in score points


@dataclass(frozen=True)
class MetaRule:
    """Settings of the adaptive meta-judge stage (config ``meta_judge.adaptive_*``)."""

    z: float = 0.8               # z-score the chosen and rejected must reach against challengers
    tolerance: float = 0.0       # indifference zone, in logits: a rival within it may stay
    prior: float = 1.0           # precision of the race's N(0, 1/prior) prior on each rating
    consistent_only: bool = False  # fit as the pairs do (meta_judge.consistent_only): only
    #                                pairs whose two orders name the same judgment count


@dataclass(frozen=True)
class Ask:
    """One request to add: a response's next judgments (judge) or one ordered comparison
    (meta-judge), and the rule that asked for it."""

    target: int | tuple[int, int]   # judge: response position; meta: (first, second) indices
    count: int                      # judge: how many more judgments; meta: 1
    rule: str


# ------------------------------------------------------------------------- judge stage


def pooled_sd(scores: Sequence[Sequence[float]], floor: float) -> float:
    """Pooled within-response standard deviation (ddof 1 per response), at least ``floor``.

    >>> round(pooled_sd([[1, 3], [2, 2, 2]], 0.1), 4)   # √((2·1 + 0·2) / 3)
    0.8165
    """
    num = sum(float(np.var(s, ddof=1)) * (len(s) - 1) for s in scores if len(s) > 1)
    den = sum(len(s) - 1 for s in scores if len(s) > 1)
    return max(floor, math.sqrt(num / den)) if den else floor


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _gap(means: Sequence[float | None], pair: tuple[int, int] | None) -> float:
    """The pair's mean-score gap (0 without a pair)."""
    return means[pair[0]] - means[pair[1]] if pair is not None else 0.0  # type: ignore[operator]


def actor_sensitive(scores: Sequence[Sequence[float]], lengths: Sequence[int], rho: float,
                    max_chosen_length: int | None, n_max: int, z: float, sd_floor: float,
                    tolerance: float = 0.0) -> list[int]:
    """Positions of the responses whose mean, moved to either end of its confidence interval
    for the mean of all ``n_max`` judgments (the others kept), changes the length-controlled
    pair (or whether there is one) and, under the moved means, the new pair's gap differs from
    the old pair's by more than ``tolerance`` (an indifference zone: a swap between responses
    whose means differ by less costs less than it). The target is the full procedure's mean,
    so the interval carries the finite-population correction: half-width
    z·s·√((N − n)/(N·n)), 0 at n = N.

    >>> actor_sensitive([[5, 5, 5], [1, 1, 1], [3, 3, 3]], [10, 10, 10], 0.0, None, 11, 1.0,
    ...                 0.5)
    []
    >>> actor_sensitive([[5, 4, 5], [4, 5, 5], [1, 1, 1]], [10, 20, 10], 0.0, None, 11, 1.0,
    ...                 0.5)
    [0, 1]
    """
    means = [_mean(s) for s in scores]
    base = decide_actor_pair(means, lengths, rho, max_chosen_length).pair
    sd = pooled_sd(scores, sd_floor)
    sensitive = []
    for i, s in enumerate(scores):
        if not s or len(s) >= n_max:
            continue
        half = z * sd * math.sqrt((n_max - len(s)) / (n_max * len(s)))
        for moved in (means[i] - half, means[i] + half):  # type: ignore[operator]
            trial = list(means)
            trial[i] = moved
            pair = decide_actor_pair(trial, lengths, rho, max_chosen_length).pair
            if pair != base and abs(_gap(trial, pair) - _gap(trial, base)) > tolerance:
                sensitive.append(i)
                break
    return sensitive


def select_on_initial(scores: Sequence[Sequence[float | None]], initial: int, seed: int
                      ) -> int | None:
    """The meta-judge's response: largest population variance of the scored among each
    response's first ``initial`` judgments (at least two scored), seeded tie-break.

    >>> select_on_initial([[3, 3, 3, 1], [1, 5, None], [4]], 3, 0)
    1
    """
    variances = {}
    for i, s in enumerate(scores):
        scored = [v for v in s[:initial] if v is not None]
        if len(scored) >= 2:
            variances[i] = float(np.var(scored))
    if not variances:
        return None
    top = max(variances.values())
    tied = sorted(i for i, v in variances.items() if v >= top - 1e-12)
    return random.Random(seed).choice(tied)


def judge_asks(scores: Sequence[Sequence[float | None]], lengths: Sequence[int], rho: float,
               max_chosen_length: int | None, rule: JudgeRule, seed: int,
               select: Callable[[], int | None] | None = None) -> list[Ask]:
    """The next round of judgments for one prompt. ``scores[i]``: response i's judgments so
    far in index order (None: unscored); ``seed``: the prompt's selection seed. Empty when the
    prompt is done. ``select`` (the stage's): the meta-judge's response once every response
    has its initial judgments, instead of :func:`select_on_initial` with ``seed``.

    >>> r = JudgeRule(max_judgments=4, initial=2)
    >>> judge_asks([[], []], [10, 20], 0.0, None, r, 0)
    [Ask(target=0, count=2, rule='initial'), Ask(target=1, count=2, rule='initial')]
    >>> judge_asks([[5, 5], [1, 2]], [10, 20], 0.0, None, r, 0)
    [Ask(target=1, count=2, rule='selected')]
    >>> judge_asks([[5, 5], [1, 2, 1, 2]], [10, 20], 0.0, None, r, 0)
    []
    """
    n = rule.max_judgments
    if any(len(s) < min(rule.initial, n) for s in scores):
        return [Ask(i, min(rule.initial, n) - len(s), "initial") for i, s in enumerate(scores)
                if len(s) < min(rule.initial, n)]
    asks: dict[int, Ask] = {}
    selected = select() if select is not None else select_on_initial(scores, rule.initial, seed)
    if selected is not None and len(scores[selected]) < n:
        asks[selected] = Ask(selected, n - len(scores[selected]), "selected")
    scored = [[v for v in s if v is not None] for s in scores]
    for i in actor_sensitive(scored, lengths, rho, max_chosen_length, n, rule.z,
                             rule.sd_floor, rule.tolerance):
        if i not in asks and len(scores[i]) < n:
            asks[i] = Ask(i, min(rule.step, n - len(scores[i])), "actor")
    return [asks[i] for i in sorted(asks)]


# -------------------------------------------------------------------- meta-judge stage

Verdicts = Mapping[tuple[int, int], str | None]


def ring(judgments: Sequence[int], seed: int) -> list[tuple[int, int]]:
    """Round 0: the judgments in a seeded random cycle, each neighbouring pair in both orders
    (one pair, both orders, for two judgments).

    >>> sorted(ring([0, 1, 2], 0))
    [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]
    """
    order = sorted(judgments)
    random.Random(seed).shuffle(order)
    if len(order) < 2:
        return []
    edges = {tuple(sorted((order[k], order[(k + 1) % len(order)]))) for k in range(len(order))}
    return [o for a, b in sorted(edges) for o in ((a, b), (b, a))]


def fit_with_errors(judgments: Sequence[int], verdicts: Verdicts, omega: tuple[float, float],
                    prior: float = RIDGE, consistent_only: bool = False
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Ratings (logit units, centred; the pairs stage's fit when ``prior`` is its ridge) and
    the covariance from the Fisher information Σ c_mn·p_mn·(1 − p_mn)·(e_m − e_n)(e_m − e_n)ᵀ
    + prior·I over the ordered comparisons made (c: comparisons with a verdict). ``prior`` is
    the precision of a N(0, 1/prior) prior on each rating: the race uses a real one, so that a
    judgment that won its two first comparisons is not rated infinitely far off. With
    ``consistent_only`` only the pairs whose two orders name the same judgment count, as in the
    pairs stage's fit (:func:`metajudge.pairs.judge.battle_matrix`).

    >>> split = {(0, 1): "first", (1, 0): "first"}  # each order for the first shown: no winner
    >>> fit_with_errors([0, 1], split, (0.5, 0.5), 1.0, consistent_only=True)[0].tolist()
    [0.0, 0.0]
    """
    if consistent_only:
        def named(pair: tuple[int, int], winner: str | None) -> int | None:
            return pair[0] if winner == "first" else pair[1] if winner == "second" else None
        verdicts = {pair: winner for pair, winner in verdicts.items()
                    if named(pair, winner) is not None
                    and named(pair[::-1], verdicts.get(pair[::-1])) == named(pair, winner)}
    index = {j: k for k, j in enumerate(judgments)}
    m = len(judgments)
    matrix = np.zeros((m, m))
    counts = np.zeros((m, m))
    for (first, second), winner in verdicts.items():
        a, b = index[first], index[second]
        if winner == "first":
            matrix[a, b] += omega[0]
        elif winner == "second":
            matrix[b, a] += omega[1]
        if winner is not None:
            counts[a, b] += 1
            counts[b, a] += 1
    ratings = fit_ratings(matrix, prior)
    p = 1.0 / (1.0 + np.exp(-(ratings[:, None] - ratings[None, :])))
    w = counts * p * (1 - p)  # counts[a, b] = counts[b, a]: comparisons of a with b
    info = np.diag(w.sum(axis=1)) - w + prior * np.eye(m)
    return ratings, np.linalg.inv(info)


def _z(ratings: np.ndarray, cov: np.ndarray, a: int, b: int, sign: int, tolerance: float
       ) -> float:
    """(sign·(ε_a − ε_b) + tolerance) / se(ε_a − ε_b)."""
    var = cov[a, a] + cov[b, b] - 2 * cov[a, b]
    return float((sign * (ratings[a] - ratings[b]) + tolerance) / math.sqrt(max(var, 1e-12)))


def meta_asks(judgments: Sequence[int], eligible: Sequence[int], verdicts: Verdicts,
              omega: tuple[float, float] | None, rule: MetaRule, seed: int) -> list[Ask]:
    """The next round of ordered comparisons for one selected response. ``judgments``: the
    indices of its scored judgments; ``eligible``: those a judge pair may choose (a parsed
    verdict that stopped, or a completed one); ``verdicts``: every comparison requested so far,
    (first, second) → winner ("first", "second" or None: no verdict); ``omega``: the iteration's
    position weights from the comparisons made so far (None: no verdict yet). Empty when done.

    >>> meta_asks([0, 1, 2], [0, 1, 2], {}, None, MetaRule(), 0)[0]
    Ask(target=(0, 1), count=1, rule='ring')
    """
    judgments = sorted(judgments)
    if len(judgments) < 2:
        return []
    if not verdicts:
        return [Ask(pair, 1, "ring") for pair in ring(judgments, seed)]
    everything = {(a, b) for a in judgments for b in judgments if a != b}
    missing = everything - set(verdicts)
    if not missing:
        return []
    ratings, cov = fit_with_errors(judgments, verdicts, omega or (0.5, 0.5), rule.prior,
                                   rule.consistent_only)
    pos = {j: k for k, j in enumerate(judgments)}
    asks: dict[tuple[int, int], str] = {}

    def compare(a: int, b: int, why: str) -> None:
        for pair in ((a, b), (b, a)):
            if pair in missing and pair not in asks:
                asks[pair] = why

    def closest(a: int, avoid: int) -> int | None:
        """a's most informative opponent with an ordered pair left (rating nearest)."""
        left = [b for b in judgments if b not in (a, avoid)
                and ((a, b) in missing or (b, a) in missing)]
        return min(left, key=lambda b: (abs(ratings[pos[a]] - ratings[pos[b]]), b),
                   default=None)

    def left_share(a: int, b: int) -> float:
        """Share of the ordered pairs involving a or b not yet compared (the finite-population
        correction: the target is the rating from every ordered pair)."""
        pairs = [p for p in everything if a in p or b in p]
        return sum(p in missing for p in pairs) / len(pairs)

    def race(top: int, rivals: Sequence[int], sign: int, why: str) -> None:
        # a rival with every ordered pair of it and of top compared is settled
        rivals = [r for r in rivals if r != top and left_share(top, r) > 0]
        if not rivals:
            return
        scores = {r: _z(ratings, cov, pos[top], pos[r], sign, rule.tolerance)
                  / math.sqrt(left_share(top, r)) for r in rivals}
        rival = min(rivals, key=lambda r: (scores[r], r))
        if scores[rival] >= rule.z:
            return
        if (top, rival) in missing or (rival, top) in missing:
            compare(top, rival, why)
            return
        for a, avoid in ((top, rival), (rival, top)):
            b = closest(a, avoid)
            if b is not None:
                compare(a, b, why)

    candidates = [j for j in judgments if j in set(eligible)]
    if candidates:
        best = max(candidates, key=lambda j: (ratings[pos[j]], -j))
        race(best, candidates, 1, "best")
    worst = min(judgments, key=lambda j: (ratings[pos[j]], j))
    race(worst, judgments, -1, "worst")
    return [Ask(pair, 1, why) for pair, why in sorted(asks.items())]
