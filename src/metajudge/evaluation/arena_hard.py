"""Arena-Hard v0.1: answers to the 500 questions, two judged games per question against the
gpt-4-0314 answers, Bradley–Terry score with interval and style-controlled score (SPEC §7, §9).

Game 1 shows the baseline first (A) and the model second; game 2 the other way round. Verdicts
become battles with weight 3 for ``>>`` and 1 for ``>`` and ``=`` (a tie is half a win); a game
without a verdict (after one follow-up request) is left out and counted.

Files, in arena-hard-auto's layouts: ``model_answer/<model>.jsonl`` (``uid, ans_id, model,
messages, tstamp, metadata``; ``metadata`` holds the style features) and
``model_judgment/<judge>/<model>.jsonl`` (``uid, category, judge, model, baseline, games``),
plus ``battles.jsonl``, ``metrics.json`` and one row in the leaderboard CSV.

Style features count tokens with :func:`count_tokens` (words and punctuation marks), since
arena-hard-auto's tiktoken encoding cannot be fetched offline; the style differences are ratios
``(a − b)/(a + b + 1)``, so any consistent count serves.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pandas as pd

from metajudge.analysis.bradley_terry import bradley_terry_scores
from metajudge.analysis.style import markdown_counts
from metajudge.backends.base import Backend
from metajudge.evaluation.benchmarks import ARENA_HARD_BASELINE, arena_hard_questions
from metajudge.evaluation.generation import generate_outputs
from metajudge.evaluation.pairwise import Game, judge_games
from metajudge.jsonl import write_atomic
from metajudge.store import Store

WEIGHTS = {"A>>B": ("model_a", 3), "A>B": ("model_a", 1), "A=B": ("tie", 1),
           "B>A": ("model_b", 1), "B>>A": ("model_b", 3)}
_TOKEN = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """Words and punctuation marks: the token count behind the length style feature."""
    return len(_TOKEN.findall(text))


def style_metadata(text: str) -> dict[str, int]:
    counts = markdown_counts(text)
    return {"token_len": count_tokens(text), "header_count": counts["header_count"],
            "list_count": counts["list_count"], "bold_count": counts["bold_count"]}


def run_arena_hard(
    store: Store, model: Backend, judge: Backend, *, limit: int | None = None,
    bootstrap_rounds: int = 100, progress: bool = True,
) -> dict[str, object]:
    config = store.config
    questions = arena_hard_questions()[:limit]
    outputs = generate_outputs(store, model, [(q.uid, q.prompt) for q in questions],
                               progress=progress)
    answered = [q for q in questions if q.uid in outputs]
    stamp = dt.datetime.now(dt.timezone.utc).timestamp()
    _write_jsonl((store.root / "model_answer") / f"{config.name}.jsonl", [
        {"uid": q.uid, "ans_id": f"{config.name}:{q.uid}", "model": config.name,
         "messages": [{"role": "user", "content": q.prompt},
                      {"role": "assistant", "content": {"answer": outputs[q.uid].output}}],
         "tstamp": stamp, "metadata": style_metadata(outputs[q.uid].output)}
        for q in answered])
    games = []
    for q in answered:
        answer = outputs[q.uid].output
        for number, position in ((1, "B"), (2, "A")):
            games.append(Game(id=f"{q.uid}@{number}", item_id=q.uid, instruction=q.prompt,
                              model_answer=answer, baseline_answer=q.baseline_answer,
                              model_position=position, model=config.name,  # type: ignore[arg-type]
                              baseline=ARENA_HARD_BASELINE))
    judged = judge_games(store, judge, games, name="games", progress=progress)
    judge_name = judge.fingerprint.model.rstrip("/").split("/")[-1]
    _write_jsonl((store.root / "model_judgment") / judge_name / f"{config.name}.jsonl", [
        {"uid": q.uid, "category": q.category, "judge": judge_name, "model": config.name,
         "baseline": ARENA_HARD_BASELINE,
         "games": [{"score": g.verdict, "judgment": {"answer": g.judgment},
                    "model_position": g.model_position, "verdict_source": g.verdict_source}
                   for g in (judged.get(f"{q.uid}@1"), judged.get(f"{q.uid}@2")) if g]}
        for q in answered])
    battles = games_to_battles(judged.values(), {q.uid: q.baseline_answer for q in answered},
                               {q.uid: outputs[q.uid].output for q in answered})
    _write_jsonl((store.root / "battles.jsonl"), battles.to_dict(orient="records"))
    metrics = battle_metrics(battles, config.name, bootstrap_rounds=bootstrap_rounds,
                             seed=config.seed)
    metrics.update(judge=judge_name, questions=len(questions), answered=len(answered),
                   games=len(judged), no_verdict=sum(g.verdict is None for g in judged.values()),
                   avg_tokens=int(sum(count_tokens(outputs[q.uid].output) for q in answered)
                                  / max(len(answered), 1)))
    store.write_json("metrics.json", metrics)
    return metrics


def games_to_battles(games, baseline_answers: dict[str, str],  # type: ignore[no-untyped-def]
                     model_answers: dict[str, str]) -> pd.DataFrame:
    """One battle row per game with a verdict: model_a is whoever was shown as A."""
    rows = []
    for game in games:
        if game.verdict is None:
            continue
        winner, weight = WEIGHTS[game.verdict]
        a_is_model = game.model_position == "A"
        answer_a = model_answers[game.item_id] if a_is_model else baseline_answers[game.item_id]
        answer_b = baseline_answers[game.item_id] if a_is_model else model_answers[game.item_id]
        row = {"question_id": game.item_id, "game": game.id,
               "model_a": game.model if a_is_model else game.baseline,
               "model_b": game.baseline if a_is_model else game.model,
               "winner": winner, "weight": weight}
        for side, answer in (("a", answer_a), ("b", answer_b)):
            row.update({f"{k}_{side}": v for k, v in style_metadata(answer).items()})
        rows.append(row)
    return pd.DataFrame(rows)


def battle_metrics(battles: pd.DataFrame, name: str, *, bootstrap_rounds: int = 100,
                   seed: int = 42) -> dict[str, object]:
    """Score, interval and style-controlled score of ``name`` against the baseline."""
    if battles.empty:
        return {"score": None, "battles": 0}
    table = bradley_terry_scores(battles, ARENA_HARD_BASELINE, bootstrap_rounds=bootstrap_rounds,
                                 seed=seed)
    row = table.loc[name]
    return {key: (None if pd.isna(value) else float(value)) for key, value in row.items()}


def append_leaderboard_row(path: Path, name: str, metrics: dict[str, object]) -> pd.DataFrame:
    """Add (or replace) a row in an arena-hard-auto style leaderboard CSV (``model, score,
    rating_q025, rating_q975, CI, avg_tokens`` first)."""
    board = pd.read_csv(path) if path.is_file() else pd.DataFrame()
    lower, upper, score = metrics.get("lower"), metrics.get("upper"), metrics.get("score")
    row = {"model": name, "score": score, "rating_q025": lower, "rating_q975": upper,
           "CI": (f"(-{score - lower:.1f}, +{upper - score:.1f})"  # type: ignore[operator]
                  if None not in (score, lower, upper) else None),
           "avg_tokens": metrics.get("avg_tokens"),
           **{k: v for k, v in metrics.items() if k.startswith("style_")},
           "judge": metrics.get("judge"), "questions": metrics.get("questions"),
           "games": metrics.get("games"), "no_verdict": metrics.get("no_verdict"),
           "date": dt.date.today().isoformat()}
    if not board.empty:
        board = board[board["model"] != name]
    board = pd.concat([board, pd.DataFrame([row])], ignore_index=True)
    board = board.sort_values("score", ascending=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, board.to_csv(index=False))
    return board


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
