"""The explorer's answers, as JSON-ready dicts: the run overview, an iteration's prompt list
(search, filters, sorting, pages) and one prompt with everything the loop made of it.

Small fields come from the index; texts are read back from the run's JSONL files by byte offset
and validated against their record types (:mod:`metajudge.records`): a field the record type
does not know (a newer file) is shown as it is, any other problem is named with the file, line
and field beside the record, and a field a file lacks (an older file) is absent.

A text is shown only when it is the one indexed: the file opened must be the indexed file (same
inode, not shorter than the indexed part) and the line at the offset must be a whole JSON object
with the indexed id (and response, judgment index, …); anything else raises :class:`StaleIndex`
(the caller updates the index and asks again), never a wrong record.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import sqlite3
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ValidationError

from metajudge.records import DPORow, Judgment, MetaJudgment, PreferencePair, Response
from metajudge.viewer import compare
from metajudge.viewer.paths import INDEX_NAME, inside

SORTS = {"order": "ord", "variance": "score_variance", "spread": "score_spread",
         "chars": "mean_chars", "score": "score_mean", "id": "prompt_id",
         "judgments": "judgments"}
RANGES = {"variance": "score_variance", "spread": "score_spread", "chars": "mean_chars"}
PAGE_SIZE = 50
MAX_PAGE = 10**9  # page × size stays far inside SQLite's 64-bit integers
LIST_COLUMNS = ("prompt_id", "ord", "instruction", "responses", "judgments", "mean_chars",
                "max_chars", "score_mean", "score_variance", "score_spread", "actor_reason",
                "judge_reason", "actor_pair", "judge_pair")


def overview(db: sqlite3.Connection, run: Path) -> dict[str, Any]:
    """The run: its settings in brief, the index, and per iteration the figures of
    :mod:`metajudge.viewer.stats` beside its ``summary.csv`` row."""
    summary = summary_rows(run / "summary.csv")
    iterations = []
    for iteration, data in db.execute("SELECT iteration, data FROM iteration_stats "
                                      "ORDER BY iteration"):
        figures = json.loads(data)
        figures["summary"] = summary.get(iteration)
        iterations.append(figures)
    known = {f["iteration"] for f in iterations}
    for iteration in sorted(set(summary) - known):  # the EFT stage (row 0), say
        iterations.append({"iteration": iteration, "summary": summary[iteration]})
    iterations.sort(key=lambda f: f["iteration"])
    problems = [dict(r) for r in db.execute(
        "SELECT name, line, problem FROM problems ORDER BY name, line LIMIT 50")]
    return {"run": run_settings(run), "iterations": iterations, "problems": problems,
            "problem_count": db.execute("SELECT COUNT(*) FROM problems").fetchone()[0],
            "version": version(db),
            "index": {"file": INDEX_NAME, "updated": _meta(db, "updated")}}


def version(db: sqlite3.Connection) -> str:
    """A digest of what the index holds (each stage file's indexed length and identity): it
    changes when, and only when, the index read something new. The page polls it and refreshes
    its figures when it changes."""
    digest = hashlib.sha256(str(_meta(db, "generation")).encode())
    for row in db.execute("SELECT name, inode, offset, lines FROM files ORDER BY name"):
        digest.update(repr(tuple(row)).encode())
    return digest.hexdigest()[:16]


def _meta(db: sqlite3.Connection, key: str) -> str | None:
    row = db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    return None if row is None else str(row[0])


def _stamp(path: Path) -> tuple[str, int, int]:
    """A top-level file of the run as a cache key; a link out of the run is absent."""
    stat = path.stat() if path.is_file() and inside(path, path.parent) else None
    return (str(path), stat.st_mtime_ns if stat else 0, stat.st_size if stat else -1)


def run_settings(run: Path) -> dict[str, Any]:
    """The few settings the overview names (from ``config.yaml``, when there)."""
    return _settings(_stamp(run / "config.yaml"), run.resolve().name)


@lru_cache(maxsize=32)
def _settings(stamp: tuple[str, int, int], name: str) -> dict[str, Any]:
    import yaml

    path = Path(stamp[0])
    data = yaml.safe_load(path.read_text(encoding="utf-8")) if stamp[2] >= 0 else {}
    data = data or {}

    def get(*keys: str) -> Any:
        value: Any = data
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return value

    return {"name": name, "model": get("backend", "model"),
            "backend": get("backend", "kind"), "iterations": get("iterations"),
            "prompts_per_iteration": get("prompts", "per_iteration"),
            "K": get("generation", "samples_per_prompt"),
            "N": get("judge", "judgments_per_response"),
            "consistent_only": bool(get("meta_judge", "consistent_only"))}


def summary_rows(path: Path) -> dict[int, dict[str, Any]]:
    """``summary.csv`` by iteration, numbers as numbers; any column set is read."""
    return _summary(_stamp(path))


@lru_cache(maxsize=32)
def _summary(stamp: tuple[str, int, int]) -> dict[int, dict[str, Any]]:
    path = Path(stamp[0])
    if stamp[2] < 0:
        return {}
    rows = {}
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            try:
                iteration = int(float(row.get("iteration") or ""))
            except ValueError:
                continue
            rows[iteration] = {k: _number(v) for k, v in row.items() if k}
    return rows


def _number(text: str | None) -> Any:
    if text is None or text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    try:
        value = float(text)
    except ValueError:
        return text
    if not math.isfinite(value):
        return None
    return int(value) if value.is_integer() and "." not in text else value


def prompt_list(db: sqlite3.Connection, iteration: int, params: dict[str, str]
                ) -> dict[str, Any]:
    """One page of an iteration's prompts. ``params``: ``q`` (text in the instruction or id),
    ``reason`` (``actor:<reason>`` or ``judge:<reason>``: that decision's reason; a bare reason
    matches either decision), ``pair`` (actor, judge, both, none),
    ``min_<x>`` / ``max_<x>`` for variance, spread and chars, ``sort`` (order, variance,
    spread, chars, score, id, judgments), ``desc`` (1), ``page`` (from 1), ``size``."""
    where: list[str] = ["iteration = ?"]
    args: list[Any] = [iteration]
    query = params.get("q", "").strip()
    if query:
        like = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where.append("(instruction LIKE ? ESCAPE '\\' OR prompt_id LIKE ? ESCAPE '\\')")
        args += [like, like]
    kind, reason = reason_filter(params.get("reason", ""))
    if kind is not None:
        where.append(f"{kind}_reason = ?")
        args.append(reason)
    elif reason:
        where.append("(actor_reason = ? OR judge_reason = ?)")
        args += [reason, reason]
    pair = params.get("pair", "")
    if pair in ("actor", "judge"):
        where.append(f"{pair}_pair = 1")
    elif pair == "both":
        where.append("actor_pair = 1 AND judge_pair = 1")
    elif pair == "none":
        where.append("actor_pair = 0 AND judge_pair = 0")
    for name, column in RANGES.items():
        for bound, op in (("min", ">="), ("max", "<=")):
            value = _float(params.get(f"{bound}_{name}"))
            if value is not None:
                where.append(f"{column} {op} ?")
                args.append(value)
    sort = SORTS.get(params.get("sort", "order"), "ord")
    direction = "DESC" if params.get("desc") in ("1", "true") else "ASC"
    size = _bounded(params.get("size"), PAGE_SIZE, 1, 500)
    page = _bounded(params.get("page"), 1, 1, MAX_PAGE)
    sql_where = " AND ".join(where)
    total = db.execute(f"SELECT COUNT(*) FROM prompt_stats WHERE {sql_where}",  # noqa: S608
                       args).fetchone()[0]
    page = min(page, max(1, math.ceil(total / size)))  # past the last page: the last page
    rows = db.execute(
        f"SELECT {', '.join(LIST_COLUMNS)} FROM prompt_stats WHERE {sql_where} "  # noqa: S608
        f"ORDER BY {sort} IS NULL, {sort} {direction}, ord LIMIT ? OFFSET ?",
        [*args, size, (page - 1) * size]).fetchall()
    return {"iteration": iteration, "complete": False, "total": total, "page": page,
            "size": size, "rows": [_list_row(r) for r in rows]}


def reason_filter(text: str) -> tuple[str | None, str]:
    """``actor:pair`` → (actor, pair); a bare reason (older links) → (None, reason)."""
    kind, sep, reason = text.partition(":")
    return (kind, reason) if sep and kind in ("actor", "judge") else (None, text)


def all_prompts(db: sqlite3.Connection, iteration: int) -> dict[str, Any]:
    """Every prompt row of an iteration (the static bundle filters them in the browser)."""
    rows = db.execute(f"SELECT {', '.join(LIST_COLUMNS)} FROM prompt_stats "  # noqa: S608
                      "WHERE iteration=? ORDER BY ord", (iteration,)).fetchall()
    return {"iteration": iteration, "complete": True, "total": len(rows),
            "rows": [_list_row(r, cut=False) for r in rows]}


def _list_row(row: sqlite3.Row, cut: bool = True) -> dict[str, Any]:
    out = dict(row)
    out["instruction"] = (out["instruction"] or "")[:240 if cut else None]
    out["actor_pair"], out["judge_pair"] = bool(out["actor_pair"]), bool(out["judge_pair"])
    return out


def _bounded(text: str | None, default: int, low: int, high: int) -> int:
    """A whole-number parameter, clamped to [low, high]; ``default`` when absent or not a
    finite number."""
    value = _float(text)
    return default if value is None else int(min(max(value, low), high))


def _float(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None  # type: ignore[arg-type]
    except ValueError:
        return None
    return value if value is None or math.isfinite(value) else None


class StaleIndex(RuntimeError):
    """A record is not where the index says: the run's files changed since it was extended.
    ``name``: the stage file (as in the index's ``files``)."""

    def __init__(self, name: str, problem: str):
        super().__init__(f"{name}: {problem}")
        self.name = name


class _Reader:
    """Reads records back from the run's files by offset, one open file per stage file, each
    checked to be the file the index read (``files``: its inode, its indexed length)."""

    def __init__(self, db: sqlite3.Connection, run: Path, iteration: int):
        self.db = db
        self.folder = run / f"iter_{iteration:02d}"
        self.handles: dict[str, Any] = {}

    def _open(self, name: str) -> Any:
        handle = self.handles.get(name)
        if handle is not None:
            return handle
        label = f"{self.folder.name}/{name}.jsonl"
        known = self.db.execute("SELECT inode, offset FROM files WHERE name=?",
                                (label,)).fetchone()
        try:
            handle = (self.folder / f"{name}.jsonl").open("rb")
        except OSError as exc:
            raise StaleIndex(label, str(exc.strerror)) from None
        self.handles[name] = handle
        stat = os.fstat(handle.fileno())
        if known is None or stat.st_ino != known["inode"] or stat.st_size < known["offset"]:
            raise StaleIndex(label, "not the file indexed")
        return handle

    def raw(self, name: str, offset: int) -> bytes:
        """The whole line at ``offset``, without its newline."""
        handle = self._open(name)
        handle.seek(offset)
        raw = handle.readline()
        if not raw.endswith(b"\n"):
            raise StaleIndex(f"{self.folder.name}/{name}.jsonl", f"no whole line at byte {offset}")
        return bytes(raw[:-1])

    def record(self, name: str, offset: int, line: int, model: type[BaseModel],
               expect: dict[str, Any]) -> dict[str, Any]:
        """The line's fields, checked against ``model``; ``problems`` names what failed.
        ``expect``: the fields the index holds for it (its id, …), which must match."""
        try:
            data = json.loads(self.raw(name, offset))
        except ValueError:
            data = None
        if not isinstance(data, dict) or any(str(data.get(k)) != str(v)
                                             for k, v in expect.items()):
            raise StaleIndex(f"{self.folder.name}/{name}.jsonl",
                             f"line {line} is not the record indexed")
        try:
            model.model_validate(data)
        except ValidationError as exc:
            problems = [f"{self.folder.name}/{name}.jsonl, line {line}, field "
                        f"'{'.'.join(str(p) for p in e['loc'])}': {e['msg']}"
                        for e in exc.errors() if e["type"] != "extra_forbidden"]
            if problems:
                data["problems"] = problems
        return data  # type: ignore[no-any-return]

    def close(self) -> None:
        for handle in self.handles.values():
            handle.close()


def prompt_page(db: sqlite3.Connection, run: Path, iteration: int, prompt_id: str
                ) -> dict[str, Any] | None:
    """One prompt of one iteration: its K responses with their N judgments, the meta-judge's
    battles over the selected response with the position-weighted ratings, both decisions and
    pairs, and the DPO rows exactly as written (None when the prompt is unknown)."""
    prompt = db.execute("SELECT * FROM prompts WHERE iteration=? AND id=?",
                        (iteration, prompt_id)).fetchone()
    if prompt is None:
        return None
    reader = _Reader(db, run, iteration)
    try:
        return _page(db, reader, run, iteration, prompt)
    finally:
        reader.close()


def _page(db: sqlite3.Connection, reader: _Reader, run: Path, iteration: int,
          prompt: sqlite3.Row) -> dict[str, Any]:
    prompt_id = prompt["id"]
    pairs = [reader.record("pairs", r["off"], r["line"], PreferencePair, {"id": r["id"]})
             | {"line": r["line"]}
             for r in db.execute("SELECT id, off, line FROM pairs WHERE iteration=? AND "
                                 "prompt_id=? ORDER BY pair_type", (iteration, prompt_id))]
    marks: dict[str, str] = {}
    for pair in pairs:
        marks[pair.get("chosen_id", "")] = "chosen"
        marks[pair.get("rejected_id", "")] = "rejected"
    for pair in pairs:  # the long texts are the responses' and judgments' own
        pair.pop("prompt", None)
    responses = []
    keys = {}
    for r in db.execute("SELECT pk, id, off, line FROM responses WHERE iteration=? AND "
                        "prompt_id=? AND off IS NOT NULL ORDER BY sample, id",
                        (iteration, prompt_id)):
        record = reader.record("responses", r["off"], r["line"], Response, {"id": r["id"]})
        record.pop("instruction", None)
        record.update(mark=marks.get(r["id"]), judgments=[])
        keys[r["pk"]] = record
        responses.append(record)
    if keys:
        marks_ = ",".join("?" * len(keys))
        for j in db.execute(f"SELECT rpk, idx, off, line FROM judgments WHERE rpk IN "  # noqa: S608
                            f"({marks_}) ORDER BY rpk, idx", list(keys)):
            judgment = reader.record("judgments", j["off"], j["line"], Judgment,
                                     {"response_id": keys[j["rpk"]]["id"], "index": j["idx"]})
            judgment["mark"] = marks.get(judgment.get("id", ""))
            keys[j["rpk"]]["judgments"].append(judgment)
    for record in responses:
        scores = [j["score"] for j in record["judgments"] if j.get("score") is not None]
        record["mean_score"] = sum(scores) / len(scores) if scores else None
        record["chars"] = len(record.get("text") or "")
    decisions = [dict(r) for r in db.execute(
        "SELECT id, pair_type, pair_id, reason, chosen_source FROM decisions WHERE "
        "iteration=? AND prompt_id=? ORDER BY pair_type", (iteration, prompt_id))]
    selection = db.execute("SELECT response_id, variance, scored, reason FROM selections "
                           "WHERE iteration=? AND prompt_id=?", (iteration, prompt_id)
                           ).fetchone()
    meta = _meta_judge(db, reader, run, iteration, selection, marks)
    dpo = [{"id": r["id"], "pair_type": r["pair_type"], "line": r["line"],
            "raw": reader.raw("dpo_pairs", r["off"]).decode("utf-8", "replace"),
            "problems": _dpo_problems(reader, r)}
           for r in db.execute("SELECT id, pair_type, off, line FROM dpo WHERE iteration=? "
                               "AND prompt_id=? ORDER BY pair_type", (iteration, prompt_id))]
    page = {"iteration": iteration,
            "prompt": {"id": prompt_id, "instruction": prompt["instruction"],
                       "source": prompt["source"]},
            "responses": responses, "decisions": decisions, "pairs": pairs,
            "meta": meta, "dpo_rows": dpo,
            "problems": [f"{r['name']}, line {r['line']}: {r['problem']}" for r in db.execute(
                "SELECT name, line, problem FROM problems WHERE prompt_id=? AND name LIKE ? "
                "ORDER BY name, line LIMIT 50", (prompt_id, f"iter_{iteration:02d}/%"))],
            "across": compare.across(db, prompt_id)}
    page["comparisons"] = compare.pair_views(page)
    return page


def _dpo_problems(reader: _Reader, row: sqlite3.Row) -> list[str]:
    return reader.record("dpo_pairs", row["off"], row["line"], DPORow,
                         {"id": row["id"]}).get("problems", [])


def _meta_judge(db: sqlite3.Connection, reader: _Reader, run: Path, iteration: int,
                selection: sqlite3.Row | None, marks: dict[str, str]) -> dict[str, Any] | None:
    if selection is None:
        return None
    out: dict[str, Any] = {"selection": dict(selection), "battles": [], "ratings": [],
                           "omega": None}
    rid = selection["response_id"]
    key = db.execute("SELECT pk FROM responses WHERE iteration=? AND id=?",
                     (iteration, rid)).fetchone() if rid else None
    if key is None:
        return out
    scores = {j["idx"]: (j["score"], j["source"]) for j in db.execute(
        "SELECT idx, score, source FROM judgments WHERE rpk=?", (key[0],))}
    battles = []
    for b in db.execute("SELECT first, second, off, line FROM battles WHERE rpk=? "
                        "ORDER BY first, second", (key[0],)):
        battle = reader.record("meta_judgments", b["off"], b["line"], MetaJudgment,
                               {"response_id": rid, "first": b["first"],
                                "second": b["second"]})
        for side in ("first", "second"):
            score, source = scores.get(battle.get(side), (None, None))
            battle[f"{side}_score"], battle[f"{side}_source"] = score, source
        battles.append(battle)
    out["battles"] = battles
    out["ratings"], out["omega"] = _ratings(db, run, iteration, rid, battles, marks)
    return out


def _ratings(db: sqlite3.Connection, run: Path, iteration: int, rid: str,
             battles: list[dict[str, Any]], marks: dict[str, str]
             ) -> tuple[list[dict[str, Any]], list[float] | None]:
    """The position-weighted ratings of the selected response's judgments, by the pairs
    stage's own function with the iteration's weights (ω1, ω2)."""
    from metajudge.pairs.judge import ELO_PER_LOGIT, rate_judgments

    usable = [b for b in battles if isinstance(b.get("first"), int)
              and isinstance(b.get("second"), int)]
    if not usable:
        return [], None
    stats = db.execute("SELECT data FROM iteration_stats WHERE iteration=?",
                       (iteration,)).fetchone()
    omega = json.loads(stats[0]).get("omega") if stats else None
    frame = pd.DataFrame({"first": [b["first"] for b in usable],
                          "second": [b["second"] for b in usable],
                          "winner": [b.get("winner") for b in usable]})
    consistent = run_settings(run)["consistent_only"]
    ratings = rate_judgments(frame, tuple(omega) if omega else None,
                             consistent_only=consistent)
    return [{"index": int(i), "rating": float(v), "elo": float(v * ELO_PER_LOGIT),
             "mark": marks.get(f"{rid}@j{int(i)}")} for i, v in ratings.items()], \
        (list(omega) if omega else None)
