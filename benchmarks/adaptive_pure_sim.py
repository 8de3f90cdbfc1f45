"""A quick pure simulation of adaptive judging (issue 28): the rules of
:mod:`metajudge.judging.adaptive` against the full procedure, on the same samples.

    python benchmarks/adaptive_pure_sim.py [--prompts 400] [--noise 1.0] [--bias 0.5] ...

Per prompt, K responses of latent quality μ (prompt mean ~ N(3.3, 0.8), within-prompt sd
``--spread``), lengths lognormal (median 1,500 characters, sd 0.4 in log). Judgment k of a
response scores clip(round(μ + noise·Z), 0, 5) and has a latent quality of its own,
−|score − μ| + N(0, 0.5²) (a judgment far from the response's quality is a worse judgment). A
verdict on (first, second) goes to first with probability σ(q_first − q_second + bias). Every
sample is drawn once, so the adaptive and full procedures see the same judgment for
(response, k) and the same verdict for (first, second): the replay idea, without a model.

Token share counts a judgment as 2 comparison-equivalents (the paper dry-run: 11.0 h for
385,000 judgments against 7.8 h for 550,000 comparisons). This is the design-time check; the
benchmark of record is ``benchmarks/adaptive_judging.py`` (the real stages on a backend).
"""

from __future__ import annotations

import argparse
import json
import math
import random

import numpy as np
import pandas as pd

from metajudge.judging.adaptive import (
    JudgeRule,
    MetaRule,
    judge_asks,
    meta_asks,
    select_on_initial,
)
from metajudge.pairs.actor import decide_actor_pair
from metajudge.pairs.judge import positional_weights, rate_judgments

JUDGMENT_COST = 2.0


def world(prompts: int, k: int, n: int, noise: float, bias: float, spread: float, seed: int
          ) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(prompts):
        mu = rng.normal(3.3, 0.8) + rng.normal(0, spread, k)
        lengths = np.exp(rng.normal(math.log(1500), 0.4, k)).astype(int)
        scores = np.clip(np.rint(mu[:, None] + noise * rng.normal(size=(k, n))), 0, 5)
        quality = -np.abs(scores - mu[:, None]) + rng.normal(0, 0.5, (k, n))
        u = rng.random((k, n, n))
        first_wins = u < 1 / (1 + np.exp(-(quality[:, :, None] - quality[:, None, :] + bias)))
        out.append({"mu": mu, "lengths": lengths.tolist(), "scores": scores,
                    "quality": quality, "first_wins": first_wins})
    return out


def verdict(w: dict, r: int, a: int, b: int) -> str:
    return "first" if w["first_wins"][r, a, b] else "second"


def all_ratings(w: dict, r: int, n: int, omega: tuple[float, float]) -> pd.Series:
    rows = [(a, b, verdict(w, r, a, b)) for a in range(n) for b in range(n) if a != b]
    return rate_judgments(pd.DataFrame(rows, columns=["first", "second", "winner"]), omega)


def best_worst(ratings: pd.Series) -> tuple[int, int]:
    best = max(ratings.index, key=lambda j: (ratings[j], -j))
    return int(best), int(ratings.idxmin())


def full_procedure(ws: list[dict], n: int, rho: float, seed: int) -> dict:
    actor, selected = [], []
    for p, w in enumerate(ws):
        means = w["scores"].mean(axis=1)
        actor.append(decide_actor_pair(list(means), w["lengths"], rho).pair)
        var = w["scores"].var(axis=1)
        tied = sorted(i for i in range(len(var)) if var[i] >= var.max() - 1e-12)
        selected.append(random.Random(seed * 100003 + p).choice(tied))
    winners = [verdict(w, r, a, b) for w, r in zip(ws, selected, strict=True)
               for a in range(n) for b in range(n) if a != b]
    omega = positional_weights(winners)
    assert omega is not None
    ratings = [all_ratings(w, r, n, omega) for w, r in zip(ws, selected, strict=True)]
    judge = [best_worst(x) for x in ratings]
    cost = len(ws) * (JUDGMENT_COST * len(ws[0]["mu"]) * n + n * (n - 1))
    return {"actor": actor, "selected": selected, "judge": judge, "ratings": ratings,
            "omega": omega, "cost": cost}


def adaptive_procedure(ws: list[dict], n: int, rho: float, jr: JudgeRule, mr: MetaRule,
                       seed: int) -> dict:
    k = len(ws[0]["mu"])
    taken = [[[] for _ in range(k)] for _ in ws]   # scores requested so far
    judgments = 0
    for _ in range(2 * n + 2):
        asked = 0
        for p, w in enumerate(ws):
            for ask in judge_asks(taken[p], w["lengths"], rho, None, jr, seed * 100003 + p):
                r = ask.target
                start = len(taken[p][r])
                taken[p][r].extend(float(v) for v in w["scores"][r, start:start + ask.count])
                asked += ask.count
        judgments += asked
        if not asked:
            break
    actor, selected = [], []
    for p, w in enumerate(ws):
        means = [sum(s) / len(s) for s in taken[p]]
        actor.append(decide_actor_pair(means, w["lengths"], rho).pair)
        selected.append(select_on_initial(taken[p], jr.initial, seed * 100003 + p))
    verdicts: list[dict] = [{} for _ in ws]
    omega = None
    for _ in range(n * n):
        asked = 0
        new = []
        for p, w in enumerate(ws):
            r = selected[p]
            asks = meta_asks(range(len(taken[p][r])), range(len(taken[p][r])), verdicts[p],
                             omega, mr, seed * 7919 + p)
            for ask in asks:
                a, b = ask.target  # type: ignore[misc]
                new.append((p, a, b, verdict(w, r, a, b)))
            asked += len(asks)
        for p, a, b, v in new:
            verdicts[p][(a, b)] = v
        omega = positional_weights([v for d in verdicts for v in d.values()])
        if not asked:
            break
    judge = []
    for p in range(len(ws)):
        rows = [(a, b, v) for (a, b), v in verdicts[p].items()]
        frame = pd.DataFrame(rows, columns=["first", "second", "winner"])
        judge.append(best_worst(rate_judgments(frame, omega)))
    comparisons = sum(len(d) for d in verdicts)
    return {"actor": actor, "selected": selected, "judge": judge,
            "cost": JUDGMENT_COST * judgments + comparisons, "judgments": judgments,
            "comparisons": comparisons}


def compare(ws: list[dict], full: dict, adaptive: dict, n: int) -> dict:
    num = den = 0.0
    same_actor = 0
    for w, a, f in zip(ws, adaptive["actor"], full["actor"], strict=True):
        means = w["scores"].mean(axis=1)
        num += means[a[0]] - means[a[1]] if a else 0.0
        den += means[f[0]] - means[f[1]] if f else 0.0
        same_actor += a == f
    actor_retention = num / den
    jnum = jden = 0.0
    same_judge = 0
    for p, w in enumerate(ws):
        r = adaptive["selected"][p]
        ratings = (full["ratings"][p] if r == full["selected"][p]
                   else all_ratings(w, r, n, full["omega"]))
        b, wo = adaptive["judge"][p]
        jnum += ratings[b] - ratings[wo]
        fb, fw = full["judge"][p]
        jden += full["ratings"][p][fb] - full["ratings"][p][fw]
        same_judge += (r == full["selected"][p]) and (b, wo) == (fb, fw)
    total = len(ws)
    return {"token_share": round(adaptive["cost"] / full["cost"], 4),
            "judge_share": round(adaptive["judgments"] / (total * len(ws[0]["mu"]) * n), 4),
            "meta_share": round(adaptive["comparisons"] / (total * n * (n - 1)), 4),
            "actor_retention": round(actor_retention, 4),
            "judge_retention": round(jnum / jden, 4),
            "same_actor_pairs_share": round(same_actor / total, 4),
            "same_judge_pairs_share": round(same_judge / total, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=400)
    ap.add_argument("--k", type=int, default=7)
    ap.add_argument("--n", type=int, default=11)
    ap.add_argument("--noise", type=float, default=1.0)
    ap.add_argument("--bias", type=float, default=0.5)
    ap.add_argument("--spread", type=float, default=0.6)
    ap.add_argument("--rho", type=float, default=0.0)
    ap.add_argument("--initial", type=int, default=JudgeRule.initial)
    ap.add_argument("--step", type=int, default=JudgeRule.step)
    ap.add_argument("--judge-z", type=float, default=JudgeRule.z)
    ap.add_argument("--sd-floor", type=float, default=JudgeRule.sd_floor)
    ap.add_argument("--meta-z", type=float, default=MetaRule.z)
    ap.add_argument("--judge-tol", type=float, default=JudgeRule.tolerance)
    ap.add_argument("--meta-tol", type=float, default=MetaRule.tolerance)
    ap.add_argument("--meta-prior", type=float, default=MetaRule.prior)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    ws = world(args.prompts, args.k, args.n, args.noise, args.bias, args.spread, args.seed)
    full = full_procedure(ws, args.n, args.rho, args.seed)
    jr = JudgeRule(max_judgments=args.n, initial=args.initial, step=args.step, z=args.judge_z,
                   sd_floor=args.sd_floor, tolerance=args.judge_tol)
    adaptive = adaptive_procedure(ws, args.n, args.rho, jr, MetaRule(z=args.meta_z, tolerance=args.meta_tol, prior=args.meta_prior), args.seed)
    print(json.dumps({**{k: v for k, v in vars(args).items()},
                      **compare(ws, full, adaptive, args.n), **floor(ws, full, args)}))


def floor(ws: list[dict], full: dict, args: argparse.Namespace) -> dict:
    """The actor side of the noise floor: a second full run (new judgment samples of the same
    responses) rated on the first run's means."""
    rng = np.random.default_rng(args.seed + 1)
    num = den = 0.0
    same = 0
    for w, f in zip(ws, full["actor"], strict=True):
        again = np.clip(np.rint(w["mu"][:, None] + args.noise * rng.normal(
            size=w["scores"].shape)), 0, 5)
        pair = decide_actor_pair(list(again.mean(axis=1)), w["lengths"], args.rho).pair
        means = w["scores"].mean(axis=1)
        num += means[pair[0]] - means[pair[1]] if pair else 0.0
        den += means[f[0]] - means[f[1]] if f else 0.0
        same += pair == f
    return {"floor_actor_retention": round(num / den, 4),
            "floor_same_actor_pairs_share": round(same / len(ws), 4)}


if __name__ == "__main__":
    main()
