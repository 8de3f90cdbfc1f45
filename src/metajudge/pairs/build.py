"""Stage ``pairs``: actor pairs (SPEC §4) and judge pairs (SPEC §5) from an iteration's records.

    metajudge pairs RUN_DIR [--iteration 1]

Writes ``pairs.jsonl`` (every pair, both types), ``pair_decisions.jsonl`` (why each prompt did or
did not yield a pair of each type) and ``dpo_pairs.jsonl`` (the TRL rows of the pair types this
iteration trains on). The stage makes no model call; it is recomputed from the records and each
file is replaced atomically, so a rerun gives the same files.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence

import pandas as pd

from metajudge.config import scheduled
from metajudge.jsonl import write_atomic
from metajudge.judging.judge import judge_prompt, judge_template
from metajudge.judging.meta_judge import META, SELECTION
from metajudge.pairs.actor import decide_actor_pair
from metajudge.pairs.export import to_trl_rows
from metajudge.pairs.judge import positional_weights, rate_judgments
from metajudge.records import (
    Judgment,
    Message,
    MetaJudgment,
    MetaSelection,
    PairDecision,
    PreferencePair,
    Prompt,
    Response,
)
from metajudge.store import RunStore

STAGE = "pairs"


def response_scores(judgments: Sequence[Judgment]) -> dict[str, float]:
    """Mean score per response over its scored judgments (unscored responses are absent)."""
    values: dict[str, list[float]] = defaultdict(list)
    for j in judgments:
        if j.score is not None:
            values[j.response_id].append(j.score)
    return {rid: sum(v) / len(v) for rid, v in values.items()}


def actor_pairs(store: RunStore, iteration: int, prompts: Sequence[Prompt],
                responses: Sequence[Response], judgments: Sequence[Judgment]
                ) -> tuple[list[PreferencePair], list[PairDecision]]:
    cfg = store.config.pairs
    rho = float(scheduled(cfg.rho, iteration))
    limit = cfg.first_iteration_max_chosen_chars if iteration == 1 else None
    scores = response_scores(judgments)
    by_prompt: dict[str, list[Response]] = defaultdict(list)
    for r in responses:
        by_prompt[r.prompt_id].append(r)
    pairs, decisions = [], []
    for prompt in prompts:
        candidates = sorted(by_prompt[prompt.id], key=lambda r: r.provenance.sample_index)
        decision = decide_actor_pair([scores.get(r.id) for r in candidates],
                                     [len(r.text) for r in candidates], rho, limit)
        pair_id = None
        if decision.pair is not None:
            chosen, rejected = (candidates[i] for i in decision.pair)
            pair_id = f"actor:{prompt.id}"
            pairs.append(PreferencePair(
                id=pair_id, pair_type="actor", iteration=iteration, prompt_id=prompt.id,
                prompt=(Message(role="user", content=prompt.instruction),),
                chosen=chosen.text, rejected=rejected.text, chosen_id=chosen.id,
                rejected_id=rejected.id, chosen_score=scores[chosen.id],
                rejected_score=scores[rejected.id], rho=rho,
            ))
        decisions.append(PairDecision(id=f"actor:{prompt.id}", pair_type="actor",
                                      iteration=iteration, prompt_id=prompt.id,
                                      pair_id=pair_id, reason=decision.reason))
    return pairs, decisions


def judge_pairs(store: RunStore, iteration: int, responses: Sequence[Response],
                judgments: Sequence[Judgment], selections: Sequence[MetaSelection],
                metas: Sequence[MetaJudgment]) -> tuple[list[PreferencePair], list[PairDecision]]:
    cfg = store.config
    limit = scheduled(cfg.pairs.judge_max_chosen_chars, iteration)
    omega = positional_weights([m.winner for m in metas])
    template = judge_template(store)
    by_id = {r.id: r for r in responses}
    judgment = {(j.response_id, j.index): j for j in judgments}
    metas_of: dict[str, list[MetaJudgment]] = defaultdict(list)
    for m in metas:
        metas_of[m.response_id].append(m)
    pairs, decisions = [], []
    for selection in selections:
        pair_id, reason = None, selection.reason
        rid = selection.response_id
        if rid is not None and omega is None:
            reason = "no meta-judge verdict in this iteration (w1 + w2 = 0)"
        elif rid is not None and not metas_of[rid]:
            reason = "no meta-judgments for the selected response"
        elif rid is not None:
            frame = pd.DataFrame([{"first": m.first, "second": m.second, "winner": m.winner}
                                  for m in metas_of[rid]])
            ratings = rate_judgments(frame, omega,
                                     consistent_only=cfg.meta_judge.consistent_only)
            best, worst = ratings.idxmax(), ratings.idxmin()
            chosen, rejected = judgment[(rid, int(best))], judgment[(rid, int(worst))]
            if ratings[best] - ratings[worst] <= 1e-9:
                reason = "ratings tie"
            elif limit is not None and len(chosen.text) > limit:
                reason = f"chosen judgment longer than {limit} characters"
            else:
                response = by_id[rid]
                pair_id, reason = f"judge:{rid}", "pair"
                pairs.append(PreferencePair(
                    id=pair_id, pair_type="judge", iteration=iteration,
                    prompt_id=response.prompt_id,
                    prompt=judge_prompt(template, response.instruction, response.text),
                    chosen=chosen.text, rejected=rejected.text, chosen_id=chosen.id,
                    rejected_id=rejected.id, chosen_score=float(ratings[best]),
                    rejected_score=float(ratings[worst]), omega=omega, template=template.ref,
                ))
        decisions.append(PairDecision(id=f"judge:{selection.id}", pair_type="judge",
                                      iteration=iteration, prompt_id=selection.id,
                                      pair_id=pair_id, reason=reason))
    return pairs, decisions


def run_pairs(store: RunStore, iteration: int = 1) -> dict[str, int]:
    """Build and write both pair sets of an iteration; returns counts by type."""
    prompts = store.read(iteration, "prompts", Prompt)
    responses = store.read(iteration, "responses", Response)
    judgments = store.read(iteration, "judgments", Judgment)
    selections = store.read(iteration, SELECTION, MetaSelection)
    metas = store.read(iteration, META, MetaJudgment)
    if not judgments:
        raise FileNotFoundError(f"{store.path(iteration, 'judgments')}: run `metajudge judge`")
    pairs, decisions = actor_pairs(store, iteration, prompts, responses, judgments)
    jp, jd = judge_pairs(store, iteration, responses, judgments, selections, metas)
    pairs, decisions = pairs + jp, decisions + jd
    types = scheduled(store.config.pairs.pair_types, iteration)
    _write(store.path(iteration, "pairs"), [p.model_dump_json() for p in pairs])
    _write(store.path(iteration, "pair_decisions"), [d.model_dump_json() for d in decisions])
    _write(store.path(iteration, "dpo_pairs"),
           [json.dumps(row, ensure_ascii=False) for row in to_trl_rows(pairs, types)])
    counts = {"actor_pairs": sum(p.pair_type == "actor" for p in pairs),
              "judge_pairs": sum(p.pair_type == "judge" for p in pairs),
              "training_pairs": sum(p.pair_type in types for p in pairs)}
    store.record_stage(iteration, STAGE, counts)
    return counts


def _write(path: object, lines: list[str]) -> None:
    write_atomic(path, "".join(line + "\n" for line in lines))  # type: ignore[arg-type]
