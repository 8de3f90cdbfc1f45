"""Harness folders in the explorer: AlpacaEval, Arena-Hard and MT-Bench per question.

A harness folder is what ``metajudge eval`` writes under one root
(``ROOT/{alpaca_eval,arena_hard,arena_hard_v2,mt_bench}/<model>/``, as ``metajudge report
--harness`` reads it). Per question: the model's answer beside the baseline's (AlpacaEval's
gpt4_1106_preview and Arena-Hard's gpt-4-0314 reference answers, from the bundled benchmark data;
Arena-Hard v2.0's per category, o3-mini's bundled or another from the folder's own
``data/arena-hard-v2.0/model_answer/``, with the category, the forced read-out beside the
verdict, and a note where the judge's prompt asks it to answer first), every game
the judge played with where the model's answer was shown, the verdict and its source, and the
lengths; for MT-Bench (single-answer grading, no baseline) the two turns and each turn's
rating. These folders are small (at most 805 questions), so they are read whole and kept while
their files are unchanged.

Only what lies inside the harness root is read: a folder or file that is a link resolving
outside it is skipped. Lines are read with :mod:`metajudge.jsonl`: a partial last line (a write
in progress) waits, and a line that is not a JSON object is named (file, line) in the folder's
``problems`` while the other lines are shown.
"""

from __future__ import annotations

import json
import threading
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from metajudge.evaluation.records import EvalOutput, MTBenchAnswer, MTBenchJudgment, PairwiseGame
from metajudge.jsonl import InputError, iter_lines, parse_object
from metajudge.viewer.index import inside

KINDS = {"alpaca_eval": "annotations", "arena_hard": "games", "arena_hard_v2": "v2_games",
         "mt_bench": "mt_judgments"}
_lock = threading.Lock()
_cache: dict[tuple[str, str, str], tuple[tuple, dict[str, Any]]] = {}


def models(root: Path) -> list[dict[str, Any]]:
    """Every (kind, model) folder under ``root`` with its metrics (links out of ``root``
    skipped)."""
    found = []
    for kind in KINDS:
        folder = root / kind
        if not folder.is_dir() or not inside(folder, root):
            continue
        for model in sorted(p for p in folder.iterdir() if p.is_dir() and inside(p, root)):
            metrics = model / "metrics.json"
            data = (json.loads(metrics.read_text(encoding="utf-8"))
                    if metrics.is_file() and inside(metrics, root) else {})
            keep = ("length_controlled_winrate", "win_rate", "score", "lower", "upper",
                    "score_with_readouts", "n_total", "battles", "questions", "judgments")
            found.append({"kind": kind, "model": model.name,
                          "metrics": {k: data[k] for k in keep if k in data}})
    return found


def folder_of(root: Path, kind: str, model: str) -> Path | None:
    """The folder of a listed (kind, model), never a path built from the request."""
    for entry in models(root):
        if entry["kind"] == kind and entry["model"] == model:
            return root / kind / model
    return None


def _records(files: dict[str, Path], name: str, model: type[BaseModel],
             problems: list[str]) -> list[dict[str, Any]]:
    """The file's records, each checked against ``model`` (its ``problems`` name what failed);
    a line that is not a JSON object is named in ``problems`` and skipped."""
    rows: list[dict[str, Any]] = []
    path = files.get(name)
    if path is None:
        return rows
    for number, line in iter_lines(path):
        try:
            data = parse_object(name, number, line)
        except InputError as exc:
            problems.append(str(exc))
            continue
        try:
            model.model_validate(data)
        except ValidationError as exc:
            data["problems"] = [f"{path.name}, line {number}, field "
                                f"'{'.'.join(str(p) for p in e['loc'])}': {e['msg']}"
                                for e in exc.errors() if e["type"] != "extra_forbidden"]
        rows.append(data)
    return rows


@cache
def _baselines(kind: str) -> dict[str, str]:
    from metajudge.evaluation import benchmarks

    if kind == "alpaca_eval":
        return {f"alpaca_eval/{i.index}": i.reference for i in benchmarks.alpaca_eval_items()}
    if kind == "arena_hard":
        return {q.uid: q.baseline_answer for q in benchmarks.arena_hard_questions()}
    return {}


def questions(root: Path, kind: str, model: str) -> dict[str, Any] | None:
    """Every question of one harness folder, each with its games or ratings in full."""
    folder = folder_of(root, kind, model)
    if folder is None:
        return None
    files = {p.name: p for p in sorted(folder.glob("*.jsonl"))
             if p.is_file() and inside(p, root)}
    stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files.values())
    key = (str(root), kind, model)
    with _lock:
        cached = _cache.get(key)
        if cached is not None and cached[0] == stamp:
            return cached[1]
    problems: list[str] = []
    data = _mt_bench(files, problems) if kind == "mt_bench" else _pairwise(files, kind, problems)
    data.update(kind=kind, model=model, problems=problems)
    with _lock:
        _cache[key] = (stamp, data)
    return data


def _pairwise(files: dict[str, Path], kind: str, problems: list[str]) -> dict[str, Any]:
    outputs = {o.get("id", ""): o for o in _records(files, "outputs.jsonl", EvalOutput, problems)}
    games: dict[str, list[dict[str, Any]]] = {}
    for game in _records(files, f"{KINDS[kind]}.jsonl", PairwiseGame, problems):
        games.setdefault(game.get("item_id", ""), []).append(game)
    baselines = _baselines(kind)
    if kind == "arena_hard_v2":
        baselines = _v2_baselines(files, games)
    items = []
    for item_id in list(outputs) + [i for i in games if i not in outputs]:
        output = outputs.get(item_id, {})
        baseline = baselines.get(item_id)
        mine = sorted(games.get(item_id, []), key=lambda g: str(g.get("id")))
        for game in mine:
            game["model_outcome"] = _outcome(game)
        items.append({
            "id": item_id, "instruction": output.get("instruction"),
            "model_answer": output.get("output"), "baseline_answer": baseline,
            "model_chars": _chars(output.get("output") or ""),
            "baseline_chars": len(baseline) if baseline is not None else None,
            "baseline": mine[0].get("baseline") if mine else None,
            "games": mine, "problems": output.get("problems", [])})
        if kind == "arena_hard_v2" and mine:
            from metajudge.evaluation.arena_hard_v2_prompts import ANSWERS_FIRST

            items[-1].update(category=mine[0].get("subcategory") or mine[0].get("category"),
                             judge_answers_first=mine[0].get("category") in ANSWERS_FIRST)
    return {"layout": "pairwise", "items": items}


def _v2_baselines(files: dict[str, Path], games: dict[str, list[dict[str, Any]]]
                  ) -> dict[str, str]:
    """Each v2.0 question's baseline answer: o3-mini's bundled, or the folder's own copy of
    the baseline its games name (``data/arena-hard-v2.0/model_answer/<baseline>.jsonl``)."""
    from metajudge.evaluation.benchmarks import arena_hard_v2_o3_mini

    answers = {"o3-mini-2025-01-31": {r["uid"]: r for r in arena_hard_v2_o3_mini()}}
    out = {}
    for item_id, mine in games.items():
        name = str(mine[0].get("baseline"))
        if name not in answers:
            answers[name] = {}
            folder = next(iter(files.values())).parent / "data" / "arena-hard-v2.0"
            path = folder / "model_answer" / f"{name}.jsonl"
            if path.is_file() and inside(path, folder.parent.parent):
                for _, line in iter_lines(path):
                    try:
                        row = json.loads(line)
                        answers[name][row["uid"]] = row
                    except (ValueError, KeyError, TypeError):
                        continue
        row = answers[name].get(item_id)
        if row is not None:
            out[item_id] = row["messages"][-1]["content"]["answer"]
    return out


def _chars(text: Any) -> int | None:
    """A text's length; None for a value that is not a text (its record names the problem)."""
    return len(text) if isinstance(text, str) else None


def _outcome(game: dict[str, Any]) -> float | None:
    try:
        return PairwiseGame.model_validate(game).model_outcome()
    except ValidationError:
        return None


def _mt_bench(files: dict[str, Path], problems: list[str]) -> dict[str, Any]:
    answers = {a.get("id", ""): a for a in _records(files, "mt_answers.jsonl", MTBenchAnswer,
                                                 problems)}
    ratings: dict[str, list[dict[str, Any]]] = {}
    for judgment in _records(files, "mt_judgments.jsonl", MTBenchJudgment, problems):
        ratings.setdefault(str(judgment.get("question_id")), []).append(judgment)
    from metajudge.evaluation.mt_bench import mt_bench_questions

    asked = {str(q.question_id): q for q in mt_bench_questions()}
    items = []
    for qid in list(answers) + [q for q in ratings if q not in answers]:
        answer = answers.get(qid, {})
        turns = list(answer.get("turns") or [])
        mine = sorted(ratings.get(qid, []), key=lambda j: j.get("turn", 0))
        question = asked.get(qid)
        items.append({"id": qid, "category": answer.get("category"), "turns": turns,
                      "questions": list(question.turns) if question else [],
                      "references": list(question.reference or ()) if question else [],
                      "turn_chars": [_chars(t) for t in turns], "ratings": mine,
                      "instruction": question.turns[0] if question else None,
                      "problems": answer.get("problems", [])})
    return {"layout": "single", "items": items}


def model_view(data: dict[str, Any]) -> dict[str, Any]:
    """One harness folder as its list view shows it: every question's row, no long texts, and
    the lines that could not be read."""
    return {"kind": data["kind"], "model": data["model"], "layout": data["layout"],
            "problems": data["problems"], "rows": summary_rows(data)}


def summary_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The list view's rows: no long texts."""
    rows = []
    for item in data["items"]:
        row = {"id": item["id"], "instruction": (item.get("instruction") or "")[:200],
               **({"category": item["category"]} if "category" in item else {})}
        if data["layout"] == "pairwise":
            row.update(model_chars=item["model_chars"], baseline_chars=item["baseline_chars"],
                       verdicts=[{"model_position": g.get("model_position"),
                                  "verdict": g.get("verdict"),
                                  "source": g.get("verdict_source"),
                                  "model_outcome": g.get("model_outcome")}
                                 for g in item["games"]])
        else:
            row.update(category=item["category"], turn_chars=item["turn_chars"],
                       ratings=[{"turn": r.get("turn"), "score": r.get("score"),
                                 "source": r.get("score_source"),
                                 "forced_score": r.get("forced_score")}
                                for r in item["ratings"]])
        rows.append(row)
    return rows
