"""The audit of adaptive judging (SPEC §5a): on a seeded sample of prompts, the adaptive
procedure's pairs against the full procedure's, on the same samples.

The judge and meta-judge stages give the audited prompts every request of the full procedure
as well (rule ``audit``, never read by the adaptive decisions or the training pairs). Per
audited prompt, the pairs stage writes an :class:`~metajudge.records.AuditRow` to
``audit.jsonl``:

- actor pairs (with ``judge.adaptive``: the judge stage audits the whole sample): the
  length-controlled pair from the adaptive judgments and from all N; each pair's gap is
  measured in the N-judgment means;
- judge pairs: the adaptive pair (its selection, its comparisons, the ω of the adaptive
  comparisons) and the full procedure's (the selection over all judgments, every ordered
  comparison of it, the ω of those comparisons: what a full run on the sample would use);
  each pair's gap is measured in ratings from every ordered comparison of its response, with
  the full procedure's ω;
- generated tokens and requests of the adaptive and of the full procedure.

:func:`audit_columns` sums them into the iteration's ``summary.csv`` columns: retention
(Σ adaptive gaps ÷ Σ full gaps), the share of prompts with the same chosen and rejected, and
the token share.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd

from metajudge.config import scheduled
from metajudge.pairs.actor import decide_actor_pair
from metajudge.pairs.judge import ELO_PER_LOGIT, positional_weights, rate_judgments
from metajudge.records import AuditRow
from metajudge.stages.adaptive import actor_rule, audit_share, audited
from metajudge.stages.meta_judge import full_selection
from metajudge.store import JUDGMENTS, META_JUDGMENTS, META_SELECTION, PROMPTS, RESPONSES, Store


def audit_rows(store: Store, iteration: int, *, judge_pairs: bool = True) -> list[AuditRow]:
    """The audited prompts' rows (none without an audit); the judge pairs' columns only with
    ``judge_pairs`` (iterations that train on them: others read no meta-judge file)."""
    from metajudge.stages.pairs import _carries_verdict, _judge_pair, _Seen, _text

    config = store.config
    share = audit_share(config)
    if not share:
        return []
    seed = config.seed
    prompts = [p.id for p in store.iter_records(PROMPTS, iteration)
               if audited(seed, iteration, p.id, share)]
    wanted = set(prompts)
    # with judge.adaptive the judge stage audits every prompt of the sample (SPEC §5a)
    judge_sample = set(prompts) if config.judge.adaptive else set()
    members: dict[str, list[tuple[int, str, int]]] = defaultdict(list)
    for r in store.iter_records(RESPONSES, iteration):
        if r.prompt_id in wanted:
            members[r.prompt_id].append((r.provenance.sample_index, r.id, len(r.text)))
    judged: dict[str, list[Any]] = defaultdict(list)
    seen: dict[str, dict[int, Any]] = defaultdict(dict)
    for offset, j in store.iter_with_offsets(JUDGMENTS, iteration):
        if j.prompt_id in wanted:
            judged[j.response_id].append(j)
            if j.score is not None:
                seen[j.response_id][j.index] = _Seen(offset, len(_text(j)), j.index,
                                                     eligible=_carries_verdict(j),
                                                     source=j.score_source)
    ids = {(j.response_id, j.index): j.id for js in judged.values() for j in js}
    at = {s.offset: (rid, n) for rid, found in seen.items() for n, s in found.items()}
    selected = {s.id: s.response_id for s in store.iter_records(META_SELECTION, iteration)}
    full_selected = {**selected, **full_selection(store, iteration, judge_sample)}
    compared: dict[str, list[Any]] = defaultdict(list)
    adaptive_winners = []
    for m in store.iter_records(META_JUDGMENTS, iteration) if judge_pairs else ():
        if m.rule != "audit":
            adaptive_winners.append(m.winner)
        if m.prompt_id in wanted:
            compared[m.response_id].append(m)
    omega_adaptive = positional_weights(adaptive_winners)
    omega_full = positional_weights([m.winner for p in prompts if full_selected.get(p)
                                     for m in compared[full_selected[p]]])
    rho, limit = actor_rule(config, iteration)
    judge_limit = scheduled(config.pairs.judge_max_chosen_chars, iteration)
    consistent = config.meta_judge.consistent_only

    def mean(rid: str, audit: bool) -> float | None:
        values = [j.score for j in judged[rid] if j.score is not None
                  and (audit or j.rule != "audit")]
        return sum(values) / len(values) if values else None

    def judge_pair(rid: str | None, audit: bool, omega: tuple[float, float] | None
                   ) -> tuple[int, int] | None:
        battles = [(m.first, m.second, m.winner) for m in compared.get(rid or "", [])
                   if audit or m.rule != "audit"]
        if rid is None or omega is None or not battles:
            return None
        found, _ = _judge_pair(battles, seen[rid], omega, judge_limit, consistent)
        return None if found is None else (at[found[0]][1], at[found[1]][1])

    def full_ratings(rid: str) -> pd.Series:
        frame = pd.DataFrame([(m.first, m.second, m.winner) for m in compared[rid]],
                             columns=["first", "second", "winner"])
        return rate_judgments(frame, omega_full, consistent_only=consistent) * ELO_PER_LOGIT

    rows = []
    for p in prompts:
        group = sorted(members[p])
        row: dict[str, Any] = {"id": p, "iteration": iteration}
        judge_audit = p in judge_sample
        if judge_audit:
            lengths = [length for *_, length in group]
            full_means = [mean(rid, True) for _, rid, _ in group]
            pairs = {}
            for name, means in (("adaptive", [mean(rid, False) for _, rid, _ in group]),
                                ("full", full_means)):
                pair = decide_actor_pair(means, lengths, rho, limit).pair
                pairs[name] = pair
                row[f"actor_{name}"] = (None if pair is None
                                        else (group[pair[0]][1], group[pair[1]][1]))
                row[f"actor_{name}_gap"] = (0.0 if pair is None else
                                            full_means[pair[0]] - full_means[pair[1]])  # type: ignore[operator]
        rid_a, rid_f = selected.get(p), full_selected.get(p)
        pair_a = judge_pair(rid_a, False, omega_adaptive)
        pair_f = judge_pair(rid_f, True, omega_full)
        if judge_pairs and omega_full is not None:
            for name, rid, pair in (("adaptive", rid_a, pair_a), ("full", rid_f, pair_f)):
                if rid is None or pair is None:
                    row[f"judge_{name}"], row[f"judge_{name}_gap"] = None, 0.0
                    continue
                ratings = full_ratings(rid)
                row[f"judge_{name}"] = (ids[(rid, pair[0])], ids[(rid, pair[1])])
                row[f"judge_{name}_gap"] = float(ratings[pair[0]] - ratings[pair[1]])
        mine = [j for _, rid, _ in group for j in judged[rid]]
        full_judged = mine if judge_audit else [j for j in mine if j.rule != "audit"]
        adaptive_made = [j for j in mine if j.rule != "audit"] + [
            m for m in compared.get(rid_a or "", []) if m.rule != "audit"]
        full_made = full_judged + compared.get(rid_f or "", [])
        row["adaptive_tokens"] = sum(r.completion_tokens for r in adaptive_made)
        row["full_tokens"] = sum(r.completion_tokens for r in full_made)
        row["adaptive_requests"], row["full_requests"] = len(adaptive_made), len(full_made)
        rows.append(AuditRow(**row))
    return rows


def audit_columns(rows: list[AuditRow]) -> dict[str, float | int]:
    """An iteration's audit columns (summary.csv): prompts audited, actor and judge retention,
    shares of prompts with the same pairs, token and request shares. Empty without rows.

    >>> row = AuditRow(id="p", iteration=1, actor_adaptive=("a", "b"), actor_full=("a", "c"),
    ...                actor_adaptive_gap=1.5, actor_full_gap=2.0, adaptive_tokens=30,
    ...                full_tokens=100, adaptive_requests=3, full_requests=10)
    >>> audit_columns([row])["audit_actor_retention"], audit_columns([row])["audit_token_share"]
    (0.75, 0.3)
    """
    if not rows:
        return {}
    out: dict[str, float | int] = {"audit_prompts": len(rows)}
    for kind in ("actor", "judge"):
        mine = [r for r in rows if getattr(r, f"{kind}_full_gap") is not None]
        if not mine:
            continue
        full = sum(getattr(r, f"{kind}_full_gap") for r in mine)
        adaptive = sum(getattr(r, f"{kind}_adaptive_gap") for r in mine)
        out[f"audit_{kind}_retention"] = round(adaptive / full, 4) if full else np.nan
        out[f"audit_same_{kind}_pairs"] = round(float(np.mean(
            [getattr(r, f"{kind}_adaptive") == getattr(r, f"{kind}_full") for r in mine])), 4)
    full_tokens = sum(r.full_tokens for r in rows)
    out["audit_token_share"] = (round(sum(r.adaptive_tokens for r in rows) / full_tokens, 4)
                                if full_tokens else np.nan)
    out["audit_request_share"] = round(sum(r.adaptive_requests for r in rows)
                                       / max(1, sum(r.full_requests for r in rows)), 4)
    return out
