"""The explorer's side-by-side views: each pair's chosen beside its rejected text, and one
prompt across the iterations that drew it.

A pair (:func:`pair_views`) shows both texts with their word differences
(:mod:`metajudge.viewer.diff`), lengths and scores, and what decided it: the actor decision's
reason and the two responses' mean judge scores (with each judgment's score), or for a judge
pair the judge decision's reason, the two judgments' position-weighted ratings (the pair's
scores, Elo scale) and their own scores, and every meta-judge battle between the two judgments
(both orders), with its verdict, source and choice probabilities. The texts are the records' own
(the responses and judgments of the page), not the pair file's copies.

Across iterations (:func:`across`): the prompt's figures in each iteration whose prompts hold
its id (responses, mean length and score, variance, spread, both decisions, the pairs it gave
with their scores), from the index alone; and a harness question across the checkpoints that
answered it (:func:`harness_across`): each model folder's answer, length and verdicts.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from metajudge.viewer import harness as harness_data
from metajudge.viewer.diff import sides


def pair_views(page: dict[str, Any]) -> list[dict[str, Any]]:
    """One view per pair of the prompt page ``page`` (as :func:`queries.prompt_page` builds
    it before this is added)."""
    responses = {r.get("id"): r for r in page["responses"]}
    judgments = {j.get("id"): j for r in page["responses"] for j in r["judgments"]}
    reasons = {d["pair_type"]: d["reason"] for d in page["decisions"]}
    meta = page.get("meta") or {}
    ratings = {f"{(meta.get('selection') or {}).get('response_id')}@j{r['index']}": r
               for r in meta.get("ratings") or []}
    views = []
    for pair in page["pairs"]:
        kind = pair.get("pair_type")
        found = responses if kind == "actor" else judgments
        chosen, rejected = found.get(pair.get("chosen_id")), found.get(pair.get("rejected_id"))
        sides_ = [_side(pair, "chosen", chosen, kind, ratings),
                  _side(pair, "rejected", rejected, kind, ratings)]
        left, right = sides(sides_[0]["text"] or "", sides_[1]["text"] or "")
        sides_[0]["segments"], sides_[1]["segments"] = left, right
        view: dict[str, Any] = {"id": pair.get("id"), "pair_type": kind,
                                "reason": reasons.get(kind), "chosen": sides_[0],
                                "rejected": sides_[1], "problems": pair.get("problems", [])}
        if kind == "judge" and chosen is not None and rejected is not None:
            view["battles"] = _battles_between(meta.get("battles") or [], chosen.get("index"),
                                               rejected.get("index"))
        views.append(view)
    return views


def _side(pair: dict[str, Any], which: str, record: dict[str, Any] | None, kind: str | None,
          ratings: dict[str, dict[str, Any]]) -> dict[str, Any]:
    record_id = pair.get(f"{which}_id")
    text = None if record is None else record.get("text")
    side: dict[str, Any] = {"id": record_id, "text": text,
                            "chars": None if text is None else len(text),
                            "pair_score": pair.get(f"{which}_score"), "found": record is not None}
    if record is None:
        return side
    if kind == "actor":
        side["judge_scores"] = [j.get("score") for j in record.get("judgments", [])]
        side["mean_score"] = record.get("mean_score")
    else:
        side.update(score=record.get("score"), score_source=record.get("score_source"),
                    index=record.get("index"),
                    rating=(ratings.get(str(record_id)) or {}).get("rating"))
    return side


def _battles_between(battles: list[dict[str, Any]], a: Any, b: Any) -> list[dict[str, Any]]:
    """The battles between judgments ``a`` and ``b`` in either order, with the winner named."""
    out = []
    for battle in battles:
        if {battle.get("first"), battle.get("second")} == {a, b}:
            winner = battle.get("winner")
            index = battle.get(winner) if winner in ("first", "second") else None
            out.append({"id": battle.get("id"), "first": battle.get("first"),
                        "second": battle.get("second"), "winner": winner,
                        "winner_index": index,
                        "chosen_won": None if index is None else index == a,
                        "winner_source": battle.get("winner_source"),
                        "choice_probs": battle.get("choice_probs")})
    return out


def across(db: sqlite3.Connection, prompt_id: str) -> list[dict[str, Any]]:
    """The prompt's figures in every iteration that drew it, in iteration order."""
    rows = []
    for stats in db.execute("SELECT * FROM prompt_stats WHERE prompt_id=? ORDER BY iteration",
                            (prompt_id,)):
        row = {k: stats[k] for k in ("iteration", "responses", "judgments", "mean_chars",
                                     "score_mean", "score_variance", "score_spread",
                                     "actor_reason", "judge_reason")}
        row["pairs"] = [dict(p) for p in db.execute(
            "SELECT pair_type, chosen_id, rejected_id, chosen_score, rejected_score FROM "
            "pairs WHERE iteration=? AND prompt_id=? ORDER BY pair_type",
            (stats["iteration"], prompt_id))]
        rows.append(row)
    return rows


def harness_across(root: Path, kind: str, item_id: str) -> list[dict[str, Any]]:
    """One harness question in every model folder of ``kind`` that answered it (checkpoints
    in folder-name order): the answer, its length, and each game's outcome for the model
    (pairwise) or each turn's rating (MT-Bench)."""
    out = []
    for entry in harness_data.models(root):
        if entry["kind"] != kind:
            continue
        data = harness_data.questions(root, kind, entry["model"])
        item = next((i for i in (data or {}).get("items", []) if str(i["id"]) == item_id),
                    None)
        if item is None:
            continue
        row: dict[str, Any] = {"model": entry["model"], "metrics": entry["metrics"]}
        if data and data["layout"] == "pairwise":
            row.update(answer=item.get("model_answer"), chars=item.get("model_chars"),
                       games=[{"model_position": g.get("model_position"),
                               "verdict": g.get("verdict"),
                               "source": g.get("verdict_source"),
                               "model_outcome": g.get("model_outcome")}
                              for g in item["games"]])
        else:
            turns = [t for t in item.get("turns") or [] if isinstance(t, str)]
            row.update(answer="\n\n".join(turns),
                       chars=sum(c for c in item.get("turn_chars") or [] if c is not None),
                       ratings=[{"turn": r.get("turn"), "score": r.get("score"),
                                 "source": r.get("score_source")} for r in item["ratings"]])
        out.append(row)
    return out
