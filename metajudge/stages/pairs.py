"""Stage ``pairs``: actor pairs (SPEC §4) and judge pairs (SPEC §5) from an iteration's records.

    metajudge pairs RUN_DIR [--iteration 1]

Writes ``pairs.jsonl`` (every pair: actor pairs, and judge pairs where this iteration trains on
them), ``pair_decisions.jsonl`` (why each prompt did or did not yield a pair of each type made)
and ``dpo_pairs.jsonl`` (the TRL rows of the pair types this iteration trains on). An actor-only
iteration reads no meta-judge file: judge pairs are made only where they train. The stage makes
no model call; it is recomputed from the records and each file is replaced atomically, so a
rerun gives the same files; the three become current together, once all are written.

Judge pairs: a judge pair's chosen text must carry its verdict. One rule: a judgment whose
verdict is in its text, parsed (its own ``Score:`` line) or completed (``judge.complete_verdict``:
the read-out's ``Score:`` line appended), may be chosen, and its pair text ends at its verdict
line: a parsed judgment that ran on to ``max_tokens`` after its score is trimmed there, a
completed one is its completed text. A forced (no ``Score:`` line in its text) or failed
judgment is never chosen, because training on it teaches the judge to drop its verdict; it may
still be rejected. The decision record says when the chosen verdict was completed
(``chosen_source``). Chosen is the highest-rated judgment with its verdict in its text;
rejected is the lowest-rated judgment.
The judge prompt is rebuilt from the template the judgments were made with (recorded in
``judgments.settings.json``). Memory: the stage keeps scores, lengths and file offsets, and reads
back only the texts of the pairs it writes.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from metajudge import provenance
from metajudge.config import scheduled
from metajudge.judging.parse import through_verdict_line
from metajudge.pairs.actor import decide_actor_pair
from metajudge.pairs.export import to_trl_row
from metajudge.pairs.judge import ELO_PER_LOGIT, positional_weights, rate_judgments
from metajudge.records import Judgment, Message, PairDecision, PreferencePair, Response
from metajudge.stages.audit import audit_columns, audit_rows
from metajudge.stages.judge import recorded_judge_template
from metajudge.stages.meta_judge import audit_share
from metajudge.store import (
    AUDIT,
    DPO_PAIRS,
    JUDGMENTS,
    META_JUDGMENTS,
    META_SELECTION,
    PAIR_DECISIONS,
    PAIRS,
    PROMPTS,
    RESPONSES,
    StageFile,
    Store,
)
from metajudge.templates import Template

STAGE = "pairs"


@dataclass(frozen=True)
class _Seen:
    """What the pairs stage keeps of one record: where it is and what decides."""

    offset: int
    length: int
    index: int = 0
    eligible: bool = True
    source: str = "parsed"


def response_scores(store: Store, iteration: int, *, audit: bool = False) -> dict[str, float]:
    """Mean score per response over its scored judgments (unscored responses are absent).
    The audit's judgments (``judge.audit_share``) count only with ``audit``: the pairs are the
    adaptive procedure's on every prompt."""
    values: dict[str, list[float]] = defaultdict(list)
    for judgment in store.iter_records(JUDGMENTS, iteration):
        if judgment.score is not None and (audit or judgment.rule != "audit"):
            values[judgment.response_id].append(judgment.score)
    return {rid: sum(v) / len(v) for rid, v in values.items()}


def requests_by(store: Store, file: StageFile, iteration: int, key: Callable[[str], str]
                ) -> Counter[str]:
    """Requests made per ``key(record id)`` (records and failures for good; the audit's
    not counted: its records and failure records say rule ``audit``)."""
    counts: Counter[str] = Counter(key(r.id) for r in store.iter_records(file, iteration)
                                   if r.rule != "audit")
    audit = {r.id for r in store.iter_records(file, iteration) if r.rule == "audit"}
    audit.update(f.id for f in store.iter_records(file.failures, iteration)
                 if f.rule == "audit")
    counts.update(key(f) for f in store.final_failures(file, iteration) if f not in audit)
    return counts


def run_pairs(store: Store, iteration: int = 1, *, redo: bool = False) -> dict[str, Any]:
    """Build and write both pair sets of an iteration; returns counts by type. Like every
    stage it records its settings (``pairs.settings.json``) and refuses changed ones, or
    records made from remade ones, unless ``redo``."""
    if not store.path(JUDGMENTS, iteration).is_file():
        raise FileNotFoundError(f"{store.path(JUDGMENTS, iteration)}: run `metajudge judge`")
    types = scheduled(store.config.pairs.pair_types, iteration)
    cfg = store.config.pairs
    making = provenance.prepare(store, PAIRS, {
        "pair_types": sorted(types), "rho": float(scheduled(cfg.rho, iteration)),
        "first_iteration_max_chosen_chars": cfg.first_iteration_max_chosen_chars
        if iteration == 1 else None,
        "judge_max_chosen_chars": scheduled(cfg.judge_max_chosen_chars, iteration),
        "consistent_only": store.config.meta_judge.consistent_only,
        # the audit's rows (recorded when on only: runs made before it resume unchanged)
        **({"audit_share": audit_share(store.config)} if audit_share(store.config) else {})},
        iteration, redo=redo,  # meta-judgments are an input where judge pairs train
        inputs=(RESPONSES, JUDGMENTS) + ((META_JUDGMENTS,) if "judge" in types else ()),
        outputs=(PAIR_DECISIONS, DPO_PAIRS) + ((AUDIT,) if audit_share(store.config) else ()))
    actor, actor_decisions = actor_pairs(store, iteration)
    # judge pairs are made from the meta-judgments, an input only where judge pairs train: an
    # actor-only iteration reads no meta-judge file (it may be stale, or of another N)
    judge, judge_decisions = judge_pairs(store, iteration) if "judge" in types else ([], [])
    pairs = actor + judge
    store.write_all(PAIRS, _resolve(store, iteration, pairs), iteration)
    store.write_all(PAIR_DECISIONS, actor_decisions + judge_decisions, iteration)
    store.write_all(DPO_PAIRS, (to_trl_row(p) for p in store.iter_records(PAIRS, iteration)
                                if p.pair_type in types), iteration)
    counts: dict[str, Any] = {"actor_pairs": len(actor), "judge_pairs": len(judge),
                              "training_pairs": sum(p.pair_type in types for p in pairs)}
    if audit_share(store.config):  # SPEC §5a: the adaptive pairs against the full procedure's
        rows = audit_rows(store, iteration, judge_pairs="judge" in types)
        store.write_all(AUDIT, rows, iteration)
        counts.update(audit_columns(rows))
    making.commit()  # the files become current together, once all are written
    store.record_stage(f"iter_{iteration:02d}/{STAGE}", counts)
    return counts


@dataclass(frozen=True)
class _Pair:
    """A pair decided but not yet read back: which records, scores, and how to build it."""

    pair_type: str
    prompt_id: str
    chosen: int          # file offsets
    rejected: int
    chosen_score: float
    rejected_score: float
    rho: float | None = None
    omega: tuple[float, float] | None = None
    response: int | None = None  # judge pairs: offset of the judged response


def actor_pairs(store: Store, iteration: int) -> tuple[list[_Pair], list[PairDecision]]:
    cfg = store.config.pairs
    rho = float(scheduled(cfg.rho, iteration))
    limit = cfg.first_iteration_max_chosen_chars if iteration == 1 else None
    scores = response_scores(store, iteration)
    by_prompt: dict[str, list[tuple[int, str, _Seen]]] = defaultdict(list)
    for offset, r in store.iter_with_offsets(RESPONSES, iteration):
        by_prompt[r.prompt_id].append((r.provenance.sample_index, r.id, _Seen(offset,
                                                                            len(r.text))))
    prompt_of = {rid: prompt_id for prompt_id, group in by_prompt.items()
                 for _, rid, _ in group}
    asked = requests_by(store, JUDGMENTS, iteration,
                        lambda i: prompt_of.get(i.rpartition("@")[0], ""))
    pairs, decisions = [], []
    for prompt in store.iter_records(PROMPTS, iteration):
        candidates = sorted(by_prompt.get(prompt.id, []))
        decision = decide_actor_pair([scores.get(rid) for _, rid, _ in candidates],
                                     [seen.length for _, _, seen in candidates], rho, limit)
        pair_id = None
        if decision.pair is not None:
            (_, cid, chosen), (_, rid, rejected) = (candidates[i] for i in decision.pair)
            pair_id = f"actor:{prompt.id}"
            pairs.append(_Pair("actor", prompt.id, chosen.offset, rejected.offset,
                               scores[cid], scores[rid], rho=rho))
        decisions.append(PairDecision(id=f"actor:{prompt.id}", pair_type="actor",
                                      iteration=iteration, prompt_id=prompt.id,
                                      pair_id=pair_id, reason=decision.reason,
                                      requests=asked[prompt.id]))
    return pairs, decisions


def judge_pairs(store: Store, iteration: int) -> tuple[list[_Pair], list[PairDecision]]:
    cfg = store.config
    limit = scheduled(cfg.pairs.judge_max_chosen_chars, iteration)
    selections = store.read(META_SELECTION, iteration)
    selected = {s.response_id for s in selections if s.response_id is not None}
    winners: list[str | None] = []
    battles: dict[str, list[tuple[int, int, str | None]]] = defaultdict(list)
    for meta in store.iter_records(META_JUDGMENTS, iteration):
        if meta.rule == "audit":
            continue  # the audit's: the pairs are the adaptive procedure's (SPEC §5a)
        winners.append(meta.winner)
        if meta.response_id in selected:
            battles[meta.response_id].append((meta.first, meta.second, meta.winner))
    omega = positional_weights(winners)
    judgments: dict[str, dict[int, _Seen]] = defaultdict(dict)
    for offset, j in store.iter_with_offsets(JUDGMENTS, iteration):
        if j.response_id in selected:
            judgments[j.response_id][j.index] = _Seen(
                offset, len(_text(j)), j.index, eligible=_carries_verdict(j),
                source=j.score_source)
    responses = {r.id: o for o, r in store.iter_with_offsets(RESPONSES, iteration)
                 if r.id in selected}
    asked = requests_by(store, META_JUDGMENTS, iteration, lambda i: i.rpartition("@")[0])
    pairs, decisions = [], []
    for selection in selections:
        rid = selection.response_id
        found, reason, source = None, selection.reason, None
        if rid is not None and omega is None:
            reason = "no meta-judge verdict in this iteration (w1 + w2 = 0)"
        elif rid is not None and not battles[rid]:
            reason = "no meta-judgments for the selected response"
        elif rid is not None and omega is not None:
            found, reason = _judge_pair(battles[rid], judgments[rid], omega, limit,
                                        cfg.meta_judge.consistent_only)
            if found is not None:
                pairs.append(_Pair("judge", selection.id, *found, omega=omega,
                                   response=responses[rid]))
                source = next(seen.source for seen in judgments[rid].values()
                              if seen.offset == found[0])
        decisions.append(PairDecision(
            id=f"judge:{selection.id}", pair_type="judge", iteration=iteration,
            prompt_id=selection.id, pair_id=f"judge:{rid}" if found is not None else None,
            reason=reason + ("; chosen verdict completed" if source == "completed" else ""),
            chosen_source=source,  # type: ignore[arg-type]
            requests=asked[rid] if rid is not None else 0))
    return pairs, decisions


def _judge_pair(battles: Sequence[tuple[int, int, str | None]], seen: dict[int, _Seen],
                omega: tuple[float, float], limit: int | None, consistent_only: bool
                ) -> tuple[tuple[int, int, float, float] | None, str]:
    """(chosen offset, rejected offset, chosen Elo, rejected Elo) of one response, or None,
    with the reason."""
    frame = pd.DataFrame(battles, columns=["first", "second", "winner"])
    ratings = rate_judgments(frame, omega, consistent_only=consistent_only) * ELO_PER_LOGIT
    eligible = [n for n in ratings.index if seen[int(n)].eligible]
    dropped = len(ratings) - len(eligible)
    note = (f"; {dropped} of {len(ratings)} judgments without their verdict in their text "
            "(forced or failed) left out of chosen") if dropped else ""
    if not eligible:
        return None, "no judgment with its verdict in its text (parsed or completed)" + note
    best = max(eligible, key=lambda n: (ratings[n], -n))
    worst = ratings.idxmin()
    if ratings[best] - ratings[worst] <= 1e-9:
        return None, "ratings tie" + note
    chosen = seen[int(best)]
    if limit is not None and chosen.length > limit:
        return None, f"chosen judgment longer than {limit} characters" + note
    return (chosen.offset, seen[int(worst)].offset, float(ratings[best]),
            float(ratings[worst])), "pair" + note


def _resolve(store: Store, iteration: int, pairs: Sequence[_Pair]) -> Iterator[PreferencePair]:
    """Read back the texts of the decided pairs, one pair at a time."""
    template: Template | None = None
    for pair in pairs:
        if pair.pair_type == "actor":
            chosen = store.read_at(RESPONSES, pair.chosen, iteration)
            rejected = store.read_at(RESPONSES, pair.rejected, iteration)
            prompt: tuple[Message, ...] = (Message(role="user", content=chosen.instruction),)
            ids, ref = (f"actor:{pair.prompt_id}", None)
        else:
            template = template or recorded_judge_template(store, iteration)
            chosen = store.read_at(JUDGMENTS, pair.chosen, iteration)
            rejected = store.read_at(JUDGMENTS, pair.rejected, iteration)
            response = store.read_at(RESPONSES, pair.response, iteration)  # type: ignore[arg-type]
            prompt = (Message(role="user", content=template.render(
                instruction=response.instruction, response=response.text)),)
            ids, ref = (f"judge:{response.id}", template.ref)
        yield PreferencePair(
            id=ids, pair_type=pair.pair_type,  # type: ignore[arg-type]
            iteration=iteration, prompt_id=pair.prompt_id, prompt=prompt,
            chosen=_text(chosen), rejected=_text(rejected), chosen_id=chosen.id,
            rejected_id=rejected.id, chosen_score=pair.chosen_score,
            rejected_score=pair.rejected_score, rho=pair.rho, omega=pair.omega, template=ref,
            consistent_only=None if pair.pair_type == "actor"
            else store.config.meta_judge.consistent_only)


def _carries_verdict(judgment: Judgment) -> bool:
    """Whether a judgment's verdict is in its text (parsed, or completed): it may be chosen."""
    return judgment.score_source in ("parsed", "completed")


def _text(record: Response | Judgment) -> str:
    """What a pair trains on: a response's text; a judgment's completed text when its verdict
    was completed, its text through its verdict line when it wrote its own, else its text."""
    if not isinstance(record, Judgment):
        return record.text
    if record.score_source == "completed" and record.completed_text:
        return record.completed_text
    if record.score_source == "parsed":
        return through_verdict_line(record.text)
    return record.text
