"""The explorer index's tables, and how one decoded JSONL line of each stage file becomes a row.

Each row function reads only the fields the index keeps, each checked for its type as the record
types of :mod:`metajudge.records` declare it (a score is a number or null, an index a whole
number, an id a string, ...): a line whose field has the wrong type raises :class:`FieldProblem`
naming the field, and the index records it as a problem (file, line, field) and leaves the line
out of every table, so no figure counts it. Fields a record type made optional are read with
``get``, so older and newer files both index.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from metajudge.viewer.stats import CURVES

SCHEMA_VERSION = 3  # 3: non-finite numbers and a judgment without its text are problems

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS files (name TEXT PRIMARY KEY, iteration INT, kind TEXT, size INT,
  mtime_ns INT, inode INT, offset INT, lines INT, tail TEXT);
CREATE TABLE IF NOT EXISTS problems (name TEXT, line INT, problem TEXT,
  prompt_id TEXT);
CREATE TABLE IF NOT EXISTS prompts (iteration INT, id TEXT, ord INT, instruction TEXT,
  source TEXT, off INT, line INT, PRIMARY KEY (iteration, id));
CREATE TABLE IF NOT EXISTS responses (pk INTEGER PRIMARY KEY, iteration INT, id TEXT,
  prompt_id TEXT, sample INT, chars INT, finish TEXT, tokens INT, off INT, line INT);
CREATE UNIQUE INDEX IF NOT EXISTS responses_id ON responses (iteration, id);
CREATE INDEX IF NOT EXISTS responses_prompt ON responses (iteration, prompt_id);
CREATE TABLE IF NOT EXISTS judgments (iteration INT, rpk INT, idx INT, score REAL, source TEXT,
  finish TEXT, prob REAL, off INT, line INT);
CREATE INDEX IF NOT EXISTS judgments_rpk ON judgments (rpk);
CREATE TABLE IF NOT EXISTS battles (iteration INT, rpk INT, first INT, second INT, winner TEXT,
  source TEXT, off INT, line INT);
CREATE INDEX IF NOT EXISTS battles_rpk ON battles (rpk);
CREATE TABLE IF NOT EXISTS selections (iteration INT, prompt_id TEXT, response_id TEXT,
  variance REAL, scored INT, reason TEXT, PRIMARY KEY (iteration, prompt_id));
CREATE TABLE IF NOT EXISTS pairs (iteration INT, id TEXT, pair_type TEXT, prompt_id TEXT,
  chosen_id TEXT, rejected_id TEXT, chosen_score REAL, rejected_score REAL, off INT, line INT);
CREATE INDEX IF NOT EXISTS pairs_prompt ON pairs (iteration, prompt_id);
CREATE TABLE IF NOT EXISTS decisions (iteration INT, id TEXT, pair_type TEXT, prompt_id TEXT,
  pair_id TEXT, reason TEXT, chosen_source TEXT);
CREATE INDEX IF NOT EXISTS decisions_prompt ON decisions (iteration, prompt_id);
CREATE TABLE IF NOT EXISTS dpo (iteration INT, id TEXT, pair_type TEXT, prompt_id TEXT,
  off INT, line INT);
CREATE INDEX IF NOT EXISTS dpo_prompt ON dpo (iteration, prompt_id);
CREATE TABLE IF NOT EXISTS steps (iteration INT, step INT, data TEXT);
CREATE TABLE IF NOT EXISTS prompt_stats (iteration INT, prompt_id TEXT, ord INT,
  instruction TEXT, responses INT, judgments INT, mean_chars REAL, max_chars INT,
  score_mean REAL, score_variance REAL, score_spread REAL, actor_reason TEXT,
  judge_reason TEXT, actor_pair INT, judge_pair INT, PRIMARY KEY (iteration, prompt_id));
CREATE TABLE IF NOT EXISTS iteration_stats (iteration INT PRIMARY KEY, data TEXT);
"""


class FieldProblem(ValueError):
    """A field of a record with the wrong type (or missing); ``field``: its name."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"field '{field}': {problem}")
        self.field = field


_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "str": ((str,), "a string"), "int": ((int,), "a whole number"),
    "num": ((int, float), "a number"), "list": ((list,), "a list")}


def get(v: dict[str, Any], name: str, kind: str, *, required: bool = False) -> Any:
    """``v[name]`` checked to be of ``kind`` (str, int, num, list); None may stand for an
    optional field, a required field must be there and not None."""
    if name not in v or v[name] is None:
        if required:
            raise FieldProblem(name, "missing" if name not in v else "null")
        return None
    value = v[name]
    types, label = _TYPES[kind]
    if isinstance(value, bool) or not isinstance(value, types):
        raise FieldProblem(name, f"{json.dumps(value)[:40]} is not {label}")
    if isinstance(value, float) and not math.isfinite(value):  # NaN, Infinity, 1e999
        raise FieldProblem(name, f"{value} is not a finite number")
    return value


def need(v: dict[str, Any], name: str, kind: str) -> Any:
    return get(v, name, kind, required=True)


@dataclass(frozen=True)
class Kind:
    """One stage file the index reads: its table and how a decoded line becomes a row."""

    name: str
    table: str
    row: Callable[[dict[str, Any], int, int, int, Any], tuple | None]
    leaf: bool = True  # no other table points at its rows


def _id(v: dict[str, Any], name: str) -> str:
    """An id: a string (a whole number, as some prompt files have, is read as its text)."""
    value = v.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return str(need(v, name, "str"))


def _prompt(v: dict, it: int, off: int, line: int, ctx: Any) -> tuple:
    row = (_id(v, "id"), need(v, "instruction", "str"), get(v, "source", "str"))
    ctx.ord += 1
    return (it, row[0], ctx.ord, row[1], row[2], off, line)


def _response(v: dict, it: int, off: int, line: int, ctx: Any) -> tuple:
    provenance = v.get("provenance")
    sample = get(provenance, "sample_index", "int") if isinstance(provenance, dict) else None
    return (it, _id(v, "id"), _id(v, "prompt_id"), sample, len(need(v, "text", "str")),
            get(v, "finish_reason", "str"), get(v, "completion_tokens", "int"), off, line)


def _judgment(v: dict, it: int, off: int, line: int, ctx: Any) -> tuple:
    need(v, "text", "str")  # the page diffs it beside its judge pair's other judgment
    fields = (need(v, "index", "int"), get(v, "score", "num"), get(v, "score_source", "str"),
              get(v, "finish_reason", "str"), get(v, "prob_score", "num"))
    return (it, ctx.rpk(it, _id(v, "response_id"), _id(v, "prompt_id")), *fields, off, line)


def _battle(v: dict, it: int, off: int, line: int, ctx: Any) -> tuple:
    fields = (need(v, "first", "int"), need(v, "second", "int"), get(v, "winner", "str"),
              get(v, "winner_source", "str"))
    return (it, ctx.rpk(it, _id(v, "response_id"), _id(v, "prompt_id")), *fields, off, line)


def _selection(v: dict, it: int, off: int, line: int, ctx: Any) -> tuple:
    return (it, _id(v, "id"), get(v, "response_id", "str"), get(v, "variance", "num"),
            get(v, "scored_judgments", "int"), get(v, "reason", "str"))


def _pair(v: dict, it: int, off: int, line: int, ctx: Any) -> tuple:
    return (it, need(v, "id", "str"), need(v, "pair_type", "str"), _id(v, "prompt_id"),
            get(v, "chosen_id", "str"), get(v, "rejected_id", "str"),
            get(v, "chosen_score", "num"), get(v, "rejected_score", "num"), off, line)


def _decision(v: dict, it: int, off: int, line: int, ctx: Any) -> tuple:
    return (it, need(v, "id", "str"), need(v, "pair_type", "str"), _id(v, "prompt_id"),
            get(v, "pair_id", "str"), get(v, "reason", "str"), get(v, "chosen_source", "str"))


def _dpo(v: dict, it: int, off: int, line: int, ctx: Any) -> tuple:
    return (it, need(v, "id", "str"), need(v, "pair_type", "str"), _id(v, "prompt_id"), off,
            line)


def _step(v: dict, it: int, off: int, line: int, ctx: Any) -> tuple:
    for name, value in v.items():  # the overview's curves: every number finite
        if isinstance(value, float) and not math.isfinite(value):
            raise FieldProblem(str(name), f"{value} is not a finite number")
    for name in CURVES:  # the overview's curves: a number, or the step is a problem
        get(v, name, "num")
    return (it, get(v, "step", "int"), json.dumps(v, allow_nan=False))


KINDS = (
    Kind("prompts", "prompts", _prompt),
    Kind("responses", "responses", _response, leaf=False),
    Kind("judgments", "judgments", _judgment),
    Kind("meta_judgments", "battles", _battle),
    Kind("meta_selection", "selections", _selection),
    Kind("pairs", "pairs", _pair),
    Kind("pair_decisions", "decisions", _decision),
    Kind("dpo_pairs", "dpo", _dpo),
    Kind("train_metrics", "steps", _step),
)
INSERT = {
    "prompts": "INSERT OR REPLACE INTO prompts VALUES (?,?,?,?,?,?,?)",
    "responses": "INSERT INTO responses (iteration, id, prompt_id, sample, chars, finish, "
                 "tokens, off, line) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (iteration, id) DO "
                 "UPDATE SET prompt_id=excluded.prompt_id, sample=excluded.sample, "
                 "chars=excluded.chars, finish=excluded.finish, tokens=excluded.tokens, "
                 "off=excluded.off, line=excluded.line",
    "judgments": "INSERT INTO judgments VALUES (?,?,?,?,?,?,?,?,?)",
    "battles": "INSERT INTO battles VALUES (?,?,?,?,?,?,?,?)",
    "selections": "INSERT OR REPLACE INTO selections VALUES (?,?,?,?,?,?)",
    "pairs": "INSERT INTO pairs VALUES (?,?,?,?,?,?,?,?,?,?)",
    "decisions": "INSERT INTO decisions VALUES (?,?,?,?,?,?,?)",
    "dpo": "INSERT INTO dpo VALUES (?,?,?,?,?,?)",
    "steps": "INSERT INTO steps VALUES (?,?,?)",
}
