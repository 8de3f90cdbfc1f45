"""How much of the full procedure's pairs another run keeps (SPEC §13): gap retention of actor
and judge pairs, the share of the same pairs, and the judging cost, of a run (adaptive judging,
or a second full run: the noise floor) against a full run on the same prompts and responses.

Everything is rated by the full run: a response by its mean score over all its judgments there
(``S``), a judgment by its position-weighted Bradley–Terry rating (SPEC §5) from all ordered
comparisons of its response, with the full run's ω. Comparisons of responses the full run did
not select come from ``extra`` recordings (the meta-judge stage run on those responses with the
same backend; benchmarks/adaptive_judging.py makes them).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import pandas as pd

from metajudge.pairs.judge import positional_weights, rate_judgments
from metajudge.stages.pairs import response_scores
from metajudge.store import JUDGMENTS, META_JUDGMENTS, PAIRS, PROMPTS, Store


@dataclass(frozen=True)
class Comparison:
    """What one run keeps of the full run's pairs, and what it costs."""

    prompts: int
    actor_retention: float | None   # Σ S(chosen) − S(rejected) ÷ the full run's sum
    judge_retention: float | None   # the same with the judgments' ratings
    same_actor_pairs: float | None  # share of the full run's actor pairs made identically
    same_judge_pairs: float | None
    actor_pairs: tuple[int, int]    # (this run, full run)
    judge_pairs: tuple[int, int]
    token_share: float              # judge + meta-judge generated tokens ÷ the full run's
    prompt_token_share: float
    request_share: float            # judgments + comparisons ÷ the full run's
    judge_requests: tuple[int, int]
    meta_requests: tuple[int, int]
    unrated_judge_pairs: int        # judge pairs whose response has no recorded comparisons

    def row(self) -> dict[str, object]:
        return asdict(self)


class FullRatings:
    """The full run's ratings: mean scores of responses, BT ratings of judgments."""

    def __init__(self, full: Store, extra: Sequence[Store] = (), iteration: int = 1):
        self.scores = response_scores(full, iteration)
        battles: dict[str, list[tuple[int, int, str | None]]] = defaultdict(list)
        winners = []
        for meta in full.iter_records(META_JUDGMENTS, iteration):
            winners.append(meta.winner)
            battles[meta.response_id].append((meta.first, meta.second, meta.winner))
        self.omega = positional_weights(winners)
        seen = {(rid, f, s) for rid, rows in battles.items() for f, s, _ in rows}
        for store in extra:
            for meta in store.iter_records(META_JUDGMENTS, iteration):
                if (meta.response_id, meta.first, meta.second) not in seen:
                    seen.add((meta.response_id, meta.first, meta.second))
                    battles[meta.response_id].append((meta.first, meta.second, meta.winner))
        self.battles = battles
        self._ratings: dict[str, dict[int, float]] = {}

    def ratings(self, response_id: str) -> dict[int, float] | None:
        """Ratings (logits) of a response's judgments by index, None without comparisons."""
        if response_id not in self._ratings:
            rows = self.battles.get(response_id)
            if not rows or self.omega is None:
                return None
            frame = pd.DataFrame(rows, columns=["first", "second", "winner"])
            rated = rate_judgments(frame, self.omega)
            self._ratings[response_id] = {int(k): float(v) for k, v in rated.items()}
        return self._ratings[response_id]

    def judgment_gap(self, chosen_id: str, rejected_id: str) -> float | None:
        rid, _, c = chosen_id.rpartition("@j")
        rid2, _, r = rejected_id.rpartition("@j")
        ratings = self.ratings(rid) if rid == rid2 else None
        if ratings is None or int(c) not in ratings or int(r) not in ratings:
            return None
        return ratings[int(c)] - ratings[int(r)]


def pairs_by_prompt(store: Store, iteration: int = 1) -> dict[str, dict[str, tuple[str, str]]]:
    """pair type -> prompt id -> (chosen id, rejected id)."""
    out: dict[str, dict[str, tuple[str, str]]] = {"actor": {}, "judge": {}}
    for pair in store.iter_records(PAIRS, iteration):
        out[pair.pair_type][pair.prompt_id] = (pair.chosen_id, pair.rejected_id)
    return out


def cost(store: Store, iteration: int = 1) -> dict[str, int]:
    """Requests and tokens of the judge and meta-judge stages (records made)."""
    totals = dict.fromkeys(("judge_requests", "meta_requests", "generated", "prompt"), 0)
    for key, file in (("judge_requests", JUDGMENTS), ("meta_requests", META_JUDGMENTS)):
        for record in store.iter_records(file, iteration):
            totals[key] += 1
            totals["generated"] += record.completion_tokens
            totals["prompt"] += record.prompt_tokens
    return totals


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def compare(run: Store, full: Store, ratings: FullRatings, iteration: int = 1,
            *, judge_pairs: bool = True) -> Comparison:
    """``run`` against ``full`` (see the module docstring); ``judge_pairs=False`` leaves the
    judge-pair figures out (a run whose judgments are other samples than the full run's)."""
    mine, theirs = pairs_by_prompt(run, iteration), pairs_by_prompt(full, iteration)
    s = ratings.scores

    def actor_gap(pairs: dict[str, tuple[str, str]]) -> float:
        return sum(s[c] - s[r] for c, r in pairs.values())

    unrated = 0

    def judge_gap(pairs: dict[str, tuple[str, str]]) -> float:
        nonlocal unrated
        total = 0.0
        for c, r in pairs.values():
            gap = ratings.judgment_gap(c, r)
            if gap is None:
                unrated += 1
            else:
                total += gap
        return total

    def same(kind: str) -> float | None:
        full_pairs = theirs[kind]
        hits = sum(mine[kind].get(p) == pair for p, pair in full_pairs.items())
        return _ratio(hits, len(full_pairs))

    a, f = cost(run, iteration), cost(full, iteration)
    return Comparison(
        prompts=full.count(PROMPTS, iteration),
        actor_retention=_ratio(actor_gap(mine["actor"]), actor_gap(theirs["actor"])),
        judge_retention=_ratio(judge_gap(mine["judge"]), judge_gap(theirs["judge"]))
        if judge_pairs else None,
        same_actor_pairs=same("actor"), same_judge_pairs=same("judge") if judge_pairs else None,
        actor_pairs=(len(mine["actor"]), len(theirs["actor"])),
        judge_pairs=(len(mine["judge"]), len(theirs["judge"])),
        token_share=a["generated"] / f["generated"],
        prompt_token_share=a["prompt"] / f["prompt"],
        request_share=(a["judge_requests"] + a["meta_requests"])
        / (f["judge_requests"] + f["meta_requests"]),
        judge_requests=(a["judge_requests"], f["judge_requests"]),
        meta_requests=(a["meta_requests"], f["meta_requests"]),
        unrated_judge_pairs=unrated)


def selected_responses(stores: Iterable[Store], iteration: int = 1) -> set[str]:
    """Responses any of these runs' meta-judges compared."""
    return {m.response_id for store in stores for m in store.iter_records(META_JUDGMENTS,
                                                                         iteration)}


#: the judge statistics the synthetic judge is matched on (columns of summary.csv, SPEC §10)
STATISTICS = ("judge_score_mean", "judge_score_std", "score_top_share", "score_entropy",
              "share_parsed", "share_failed", "meta_first_share", "meta_position_consistency",
              "meta_prefers_higher_score", "score_length_spearman")


def judge_statistics(store: Store, iteration: int = 1) -> dict[str, float]:
    """A run's judge statistics: summary.csv's (SPEC §10) and the score spread within a
    response (pooled sd of its judgments' scores, ddof 1) and between the responses of a prompt
    (pooled sd of their mean scores, ddof 1)."""
    from metajudge.stages.summary import store_table

    row = store_table(store, only=[iteration]).iloc[0]
    out = {k: float(row[k]) for k in STATISTICS if k in row and pd.notna(row[k])}
    by_response: dict[str, list[float]] = defaultdict(list)
    for j in store.iter_records(JUDGMENTS, iteration):
        if j.score is not None:
            by_response[j.response_id].append(j.score)
    within = _pooled_sd(by_response.values())
    by_prompt: dict[str, list[float]] = defaultdict(list)
    for rid, values in by_response.items():
        by_prompt[rid.rpartition("#")[0]].append(sum(values) / len(values))
    out["within_response_sd"] = within
    out["between_response_sd"] = _pooled_sd(by_prompt.values())
    return out


def _pooled_sd(groups: Iterable[Sequence[float]]) -> float:
    """√(Σ within-group squared deviations ÷ Σ (n − 1)), over groups of two or more."""
    ss, dof = 0.0, 0
    for values in groups:
        if len(values) > 1:
            mean = sum(values) / len(values)
            ss += sum((v - mean) ** 2 for v in values)
            dof += len(values) - 1
    return (ss / dof) ** 0.5 if dof else float("nan")
