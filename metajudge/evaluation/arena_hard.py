"""Arena-Hard v0.1: answers to the 500 questions, two judged games per question against the
gpt-4-0314 answers, Bradley–Terry score with interval and style-controlled score (SPEC §7, §9),
in files that arena-hard-auto's own v0.1 ``show_result.py`` reads unchanged.

Game 1 shows the baseline first (A) and the model second; game 2 the other way round. Verdicts
become battles the way the tool makes them: the baseline is always ``model_a``, a ``>>`` verdict
is three identical rows and ``>`` or ``=`` one (a tie is half a win); a game without a verdict
(after one follow-up request and, where possible, a read-out) gives no battle and is counted.

Files (``layout: v0.1``, the default; ``v2.0`` writes the 2025 schema instead):

* ``model_answer/<model>.jsonl``: ``question_id, answer_id, model_id, choices[0].turns[0].{content,
  token_len}, tstamp, conv_metadata`` (token_len and the header / list / bold counts as dicts),
  and ``model_answer/gpt-4-0314.jsonl``, the baseline with the tool's own metadata;
* ``model_judgment/<judge>/<model>.jsonl``: ``question_id, model, judge, games[{user_prompt,
  judgment, score}]`` (score: the verdict label, or null), always two games per answered
  question, as the tool reads them: a game that was never judged (its request failed for good,
  e.g. past the judge's context) has a null score and judgment (``verdict_source: missing``,
  counted as ``missing_games`` in the metrics);
* ``battles.jsonl``: the battles as the tool builds them, ``conv_metadata`` included;
* ``metrics.json`` and one row in the leaderboard CSV.

Token counts are cl100k (tiktoken's ``gpt-3.5-turbo`` encoding, as the tool's
``add_markdown_info.py`` counts them) through ``bpe-openai``; the bootstrap draws are the tool's
(seed 42, expanded rows resampled).

    cd OUT && mkdir -p data && ln -s .. data/arena-hard-v0.1 && \
        python show_result.py --judge-name JUDGE [--style-control]    # the official tool
"""

from __future__ import annotations

import datetime as dt
import json
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd

from metajudge.analysis.bradley_terry import bradley_terry_scores
from metajudge.analysis.style import markdown_counts
from metajudge.backends.base import Backend
from metajudge.evaluation.benchmarks import (
    ARENA_HARD_BASELINE,
    arena_hard_baseline,
    arena_hard_questions,
)
from metajudge.evaluation.config import default_name
from metajudge.evaluation.generation import generate_outputs
from metajudge.evaluation.pairwise import Game, judge_games
from metajudge.extras import require
from metajudge.jsonl import write_atomic
from metajudge.store import Store, evaluation_file
from metajudge.templates import load_template

#: verdict of the game where the baseline was shown as A -> (winner, rows)
BASELINE_FIRST = {"A>>B": ("model_a", 3), "A>B": ("model_a", 1), "A=B": ("tie", 1),
                  "B>A": ("model_b", 1), "B>>A": ("model_b", 3)}
#: the tool's bootstrap seed (``np.random.seed(42)`` in its utils_math.py)
BOOTSTRAP_SEED = 42


@cache
def _encoding(name: str) -> Any:
    return require("bpe_openai", "harness").get_encoding(name)


def count_tokens(text: str, encoding: str = "cl100k_base") -> int:
    """Tokens, special-token text counted as ordinary text (the tool's ``encode(text,
    disallowed_special=())``): cl100k for v0.1, ``o200k_base`` (tiktoken's ``gpt-4o``) for v2.0.

    >>> count_tokens("Hello world, this is a test.")
    8
    >>> count_tokens("Hello world, this is a test.", "o200k_base")
    8
    """
    return len(_encoding(encoding).encode_ordinary(text))


def conv_metadata(text: str, encoding: str = "cl100k_base") -> dict[str, Any]:
    """An answer's style metadata as the tool stores it (token_len, counts as dicts; v2.0's
    ``add_markdown_info.py`` writes the same keys in the same order, counting o200k tokens)."""
    counts = markdown_counts(text)
    return {"token_len": count_tokens(text, encoding),
            "header_count": {f"h{k}": counts[f"h{k}"] for k in range(1, 7)},
            "list_count": {"ordered": counts["list_ordered"],
                           "unordered": counts["list_unordered"]},
            "bold_count": {"**": counts["bold_star"], "__": counts["bold_underscore"]}}


def run_arena_hard(
    store: Store, model: Backend, judge: Backend, *, limit: int | None = None,
    bootstrap_rounds: int = 100, progress: bool = True,
) -> dict[str, object]:
    config = store.config
    questions = arena_hard_questions()[:limit]
    outputs = generate_outputs(store, model, [(q.uid, q.prompt) for q in questions],
                               progress=progress)
    answered = [q for q in questions if q.uid in outputs]
    games = []
    for q in answered:
        answer = outputs[q.uid].output
        for number, position in ((1, "B"), (2, "A")):
            games.append(Game(id=f"{q.uid}@{number}", item_id=q.uid, instruction=q.prompt,
                              model_answer=answer, baseline_answer=q.baseline_answer,
                              model_position=position, model=config.name,  # type: ignore[arg-type]
                              baseline=ARENA_HARD_BASELINE))
    judge_games(store, judge, games, name="games", progress=progress)
    return score_arena_hard(store, limit=limit, bootstrap_rounds=bootstrap_rounds)


def score_arena_hard(store: Store, *, limit: int | None = None,
                     bootstrap_rounds: int = 100) -> dict[str, object]:
    """The files and metrics from the answers and games already in ``store`` (no model call):
    what a run writes after judging, and ``metajudge eval arena-hard --rescore``."""
    config = store.config
    questions = arena_hard_questions()[:limit] if limit else arena_hard_questions()
    outputs = {o.id: o for o in store.iter_records(evaluation_file("outputs"))}
    judged = {g.id: g for g in store.iter_records(evaluation_file("games"))}
    answered = [q for q in questions if q.uid in outputs]
    if not answered:
        raise FileNotFoundError(f"{store.root}: no answers to score")
    judged = {k: g for k, g in judged.items() if g.item_id in {q.uid for q in answered}}
    judge_name = next((default_name(g.provenance.backend.model) for g in judged.values()),
                      "judge")
    answers = {q.uid: outputs[q.uid].output for q in answered}
    metadata = {uid: conv_metadata(text) for uid, text in answers.items()}
    write_files(store.root, config.name, judge_name, answered, answers, metadata, judged,
                config.template, layout=config.layout)
    battles = games_to_battles(judged.values(), metadata)
    _write_jsonl(store.root / "battles.jsonl", battles.to_dict(orient="records"))
    metrics = battle_metrics(battles, config.name, bootstrap_rounds=bootstrap_rounds)
    previous = store.root / "metrics.json"
    asked = len(questions) if limit or not previous.is_file() else json.loads(
        previous.read_text()).get("questions", len(answered))
    metrics.update(judge=judge_name, questions=asked, answered=len(answered),
                   games=len(judged), no_verdict=sum(g.verdict is None for g in judged.values()),
                   missing_games=2 * len(answered) - len(judged),
                   avg_tokens=int(sum(m["token_len"] for m in metadata.values())
                                  / max(len(metadata), 1)), layout=config.layout,
                   bootstrap_seed=BOOTSTRAP_SEED)
    store.write_json("metrics.json", metrics)
    return metrics


def write_files(root: Path, name: str, judge_name: str, questions: list, answers: dict,
                metadata: dict, judged: dict, template_name: str, *, layout: str) -> None:
    """The model's answers, the baseline's, and the judgments, in the tool's layout."""
    stamp = dt.datetime.now(dt.timezone.utc).timestamp()
    template = load_template(template_name)
    if layout == "v2.0":
        rows = [{"uid": q.uid, "ans_id": f"{name}:{q.uid}", "model": name,
                 "messages": [{"role": "user", "content": q.prompt},
                              {"role": "assistant", "content": {"answer": answers[q.uid]}}],
                 "tstamp": stamp, "metadata": metadata[q.uid]} for q in questions]
    else:
        rows = [{"question_id": q.uid, "answer_id": f"{name}:{q.uid}", "model_id": name,
                 "choices": [{"index": 0, "turns": [{"content": answers[q.uid],
                                                     "token_len": metadata[q.uid]["token_len"]}]}],
                 "tstamp": stamp, "conv_metadata": metadata[q.uid]} for q in questions]
    _write_jsonl(root / "model_answer" / f"{name}.jsonl", rows)
    _write_jsonl(root / "model_answer" / f"{ARENA_HARD_BASELINE}.jsonl",
                 list(arena_hard_baseline()))
    judgments = []
    for q in questions:
        games = []
        for number in (1, 2):
            game = judged.get(f"{q.uid}@{number}")
            a, b = ((q.baseline_answer, answers[q.uid]) if number == 1
                    else (answers[q.uid], q.baseline_answer))
            prompt = template.render(instruction=q.prompt, output_a=a, output_b=b)
            # a game never judged (its request failed for good) is written in its place with a
            # null score, as the tool writes a game without a verdict: it reads both games
            verdict, text, source = ((game.verdict, game.judgment, game.verdict_source)
                                     if game is not None else (None, None, "missing"))
            if layout == "v2.0":
                games.append({"score": verdict, "judgment": {"answer": text},
                              "prompt": prompt, "verdict_source": source})
            else:
                games.append({"user_prompt": prompt, "judgment": text, "score": verdict,
                              "verdict_source": source})
        key = "uid" if layout == "v2.0" else "question_id"
        judgments.append({key: q.uid, "category": q.category, "judge": judge_name,
                          "model": name, "baseline": ARENA_HARD_BASELINE, "games": games})
    _write_jsonl(root / "model_judgment" / judge_name / f"{name}.jsonl", judgments)


def games_to_battles(games, model_metadata: dict[str, dict]) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    """Battles as arena-hard-auto v0.1 builds them: the baseline is ``model_a``, a ``>>`` verdict
    three rows, with the tool's ``conv_metadata`` per battle; in game order (game 1 then game 2
    of each question, as the tool explodes them)."""
    baseline = {row["question_id"]: row["conv_metadata"] for row in arena_hard_baseline()}
    order = {q.uid: k for k, q in enumerate(arena_hard_questions())}
    rows = []
    for game in sorted(games, key=lambda g: (order.get(g.item_id, len(order)), g.id)):
        if game.verdict is None:
            continue
        winner, repeat = BASELINE_FIRST[game.verdict]
        if game.model_position == "A":  # game 2: A is the model, so the winner flips
            winner = {"model_a": "model_b", "model_b": "model_a", "tie": "tie"}[winner]
        a, b = baseline[game.item_id], model_metadata[game.item_id]
        row = {"question_id": game.item_id, "model_a": game.baseline, "model_b": game.model,
               "winner": winner, "game": game.id,
               "conv_metadata": {
                   "sum_assistant_a_tokens": a["token_len"],
                   "sum_assistant_b_tokens": b["token_len"],
                   **{f"{name}_{side}": meta[name] for name in ("header_count", "list_count",
                                                                "bold_count")
                      for side, meta in (("a", a), ("b", b))}}}
        rows += [row] * repeat
    return pd.DataFrame(rows, columns=["question_id", "model_a", "model_b", "winner", "game",
                                       "conv_metadata"])


def battle_metrics(battles: pd.DataFrame, name: str, *, bootstrap_rounds: int = 100,
                   seed: int = BOOTSTRAP_SEED) -> dict[str, object]:
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
