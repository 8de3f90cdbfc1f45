"""The explorer's index of a run: one SQLite file, ``RUN/.explorer.sqlite``, built once and
extended as the run's files grow.

Why SQLite: it is in the standard library (no new dependency), one file, and its write-ahead
log lets the server's threads read while the index is extended; the explorer's queries are
point lookups (one prompt's responses, judgments and battles by key) and small aggregates over
5,000 prompts, where a row store with B-tree indexes answers in milliseconds. DuckDB would be
faster for scans over millions of rows, which the explorer precomputes once per extension
instead (:mod:`metajudge.viewer.stats`).

The index keeps the small fields of every record and each record's byte offset in its JSONL
file; texts stay in the run and are read back by offset when a page shows them. For every
stage file it remembers the size, modification time, inode, the offset indexed so far and a
digest of the bytes just before it: a file that grew is read from that offset on (only complete
lines), a file that was replaced (``--redo``, an atomic rewrite) is indexed again, with the
whole iteration when it is ``responses.jsonl`` (other rows point at its rows). Nothing but the
index file (and SQLite's ``-wal``/``-shm`` companions while it is open) is ever written.

Only what lies inside the run is read: an ``iter_NN`` folder or stage file that is a link
resolving outside the run directory is skipped. :meth:`RunIndex.is_current` compares each stage
file's identity (inode, size, modification time) with its ``files`` row, so a reader can catch
the index up (:meth:`RunIndex.catch_up`) before it trusts an offset.

    from metajudge.viewer.index import RunIndex
    RunIndex("runs/tiny").update()      # build or extend; returns what was read
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

INDEX_NAME = ".explorer.sqlite"
SCHEMA_VERSION = 1
_BATCH = 20_000
_TAIL = 64

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS files (name TEXT PRIMARY KEY, iteration INT, kind TEXT, size INT,
  mtime_ns INT, inode INT, offset INT, lines INT, tail TEXT);
CREATE TABLE IF NOT EXISTS problems (name TEXT, line INT, problem TEXT);
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


@dataclass(frozen=True)
class Kind:
    """One stage file the index reads: its table and how a decoded line becomes a row (fields
    a record type made optional are read with ``get``, so older and newer files both index)."""

    name: str
    table: str
    row: Callable[[dict[str, Any], int, int, int, Any], tuple | None]
    leaf: bool = True  # no other table points at its rows


def _prompt(v: dict, it: int, off: int, line: int, ctx: Any) -> tuple:
    ctx.ord += 1
    return (it, str(v["id"]), ctx.ord, v["instruction"], v.get("source"), off, line)


def _response(v: dict, it: int, off: int, line: int, ctx: Any) -> tuple:
    sample = (v.get("provenance") or {}).get("sample_index")
    return (it, str(v["id"]), str(v["prompt_id"]), sample, len(v["text"] or ""),
            v.get("finish_reason"), v.get("completion_tokens"), off, line)


def _judgment(v: dict, it: int, off: int, line: int, ctx: Any) -> tuple:
    return (it, ctx.rpk(it, v["response_id"], v["prompt_id"]), v["index"], v.get("score"),
            v.get("score_source"), v.get("finish_reason"), v.get("prob_score"), off, line)


def _battle(v: dict, it: int, off: int, line: int, ctx: Any) -> tuple:
    return (it, ctx.rpk(it, v["response_id"], v["prompt_id"]), v["first"], v["second"],
            v.get("winner"), v.get("winner_source"), off, line)


def _selection(v: dict, it: int, off: int, line: int, ctx: Any) -> tuple:
    return (it, str(v["id"]), v.get("response_id"), v.get("variance"),
            v.get("scored_judgments"), v.get("reason"))


def _pair(v: dict, it: int, off: int, line: int, ctx: Any) -> tuple:
    return (it, v["id"], v["pair_type"], v["prompt_id"], v.get("chosen_id"),
            v.get("rejected_id"), v.get("chosen_score"), v.get("rejected_score"), off, line)


def _decision(v: dict, it: int, off: int, line: int, ctx: Any) -> tuple:
    return (it, v["id"], v["pair_type"], v["prompt_id"], v.get("pair_id"), v.get("reason"),
            v.get("chosen_source"))


def _dpo(v: dict, it: int, off: int, line: int, ctx: Any) -> tuple:
    return (it, v["id"], v["pair_type"], v["prompt_id"], off, line)


def _step(v: dict, it: int, off: int, line: int, ctx: Any) -> tuple:
    return (it, v.get("step"), json.dumps(v))


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
_INSERT = {
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


@dataclass
class Update:
    """What one :meth:`RunIndex.update` did."""

    created: bool = False
    read_bytes: int = 0
    lines: int = 0
    new: list[str] = field(default_factory=list)        # files read for the first time
    extended: list[str] = field(default_factory=list)   # files read from their last offset
    reindexed: list[str] = field(default_factory=list)  # files read again from the start
    iterations: list[int] = field(default_factory=list)  # iterations whose stats were redone
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.new or self.extended or self.reindexed)


class _Context:
    """Per-pass state: prompt order, and response keys by (iteration, id)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db
        self.ord = 0
        self._keys: dict[int, dict[str, int]] = {}

    def rpk(self, iteration: int, response_id: str, prompt_id: str) -> int:
        keys = self._keys.get(iteration)
        if keys is None:
            keys = self._keys[iteration] = dict(self.db.execute(
                "SELECT id, pk FROM responses WHERE iteration=?", (iteration,)))
        pk = keys.get(response_id)
        if pk is None:  # a judgment of a response not (yet) in responses.jsonl
            cur = self.db.execute("INSERT INTO responses (iteration, id, prompt_id) VALUES "
                                  "(?,?,?)", (iteration, response_id, prompt_id))
            pk = keys[response_id] = int(cur.lastrowid or 0)
        return pk

    def forget(self, iteration: int) -> None:
        self._keys.pop(iteration, None)


def inside(path: Path, root: Path) -> bool:
    """Does ``path``, links resolved, lie inside ``root`` (links resolved too)?"""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # a link loop
        return False


def iterations_of(run: Path) -> list[int]:
    """Iteration numbers with a directory in the run (not a link out of it)."""
    return sorted(int(p.name[5:]) for p in run.glob("iter_[0-9][0-9]")
                  if p.is_dir() and inside(p, run))


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection to an index file (read-only ones for the server's threads)."""
    if readonly:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                             check_same_thread=False)
    else:
        db = sqlite3.connect(path, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
    db.row_factory = sqlite3.Row
    return db


class RunIndex:
    """The index of one run directory (``index_path`` defaults to ``RUN/.explorer.sqlite``)."""

    def __init__(self, run: str | Path, index_path: str | Path | None = None):
        self.run = Path(run)
        if not (self.run / "config.yaml").is_file() and not iterations_of(self.run):
            raise FileNotFoundError(f"{self.run} is not a run directory (no config.yaml and "
                                    "no iter_NN/)")
        self.path = Path(index_path) if index_path else self.run / INDEX_NAME
        self._lock = threading.Lock()  # one update at a time in this process

    def stage_file(self, iteration: int, kind: Kind) -> Path | None:
        """The stage file of ``kind`` in an iteration, when it is a file inside the run."""
        path = self.run / f"iter_{iteration:02d}" / f"{kind.name}.jsonl"
        return path if path.is_file() and inside(path, self.run) else None

    def identities(self) -> dict[str, tuple[int, int, int]]:
        """(inode, size, modification time) of every stage file, by its ``files`` name."""
        found = {}
        for iteration in iterations_of(self.run):
            for kind in KINDS:
                path = self.stage_file(iteration, kind)
                try:
                    stat = path.stat() if path is not None else None
                except OSError:  # removed just now
                    stat = None
                if stat is not None:
                    found[f"iter_{iteration:02d}/{kind.name}.jsonl"] = (
                        stat.st_ino, stat.st_size, stat.st_mtime_ns)
        return found

    def is_current(self, db: sqlite3.Connection) -> bool:
        """Is every stage file the one indexed, unchanged since (``db``: any connection)?"""
        indexed = {r[0]: (r[1], r[2], r[3]) for r in db.execute(
            "SELECT name, inode, size, mtime_ns FROM files")}
        return indexed == self.identities()

    def catch_up(self, db: sqlite3.Connection, *, stale: str | None = None) -> bool:
        """Update the index when a stage file changed; returns whether it updated. Readers call
        it before they trust the index's offsets, and with ``stale`` (a ``files`` name) when a
        record was not where the index said: that file is then indexed again from the start."""
        if stale is None and self.is_current(db):
            return False
        with self._lock:
            if stale is None and self.is_current(db):  # another thread has just updated
                return False
            self._update(stale)
        return True

    def update(self) -> Update:
        """Build the index, or extend it with what the run's files gained since."""
        with self._lock:
            return self._update()

    def _update(self, stale: str | None = None) -> Update:
        from metajudge.viewer.stats import refresh_stats

        started = time.perf_counter()
        report = Update(created=not self.path.exists())
        db = connect(self.path)
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):  # an older layout: start again
                db.close()
                self.path.unlink()
                report.created = True
                db = connect(self.path)
            db.executescript(SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            if stale is not None:  # no prefix matches: indexed again (see _same_prefix)
                db.execute("UPDATE files SET tail='' WHERE name=?", (stale,))
            ctx = _Context(db)
            changed: set[int] = set()
            for iteration in iterations_of(self.run):
                if self._update_iteration(db, ctx, iteration, report):
                    changed.add(iteration)
            gone = {r[0] for r in db.execute("SELECT DISTINCT iteration FROM files")} - set(
                iterations_of(self.run))
            for iteration in gone:
                _drop_iteration(db, iteration)
            report.iterations = sorted(changed | gone)
            refresh_stats(db, self.run, sorted(changed))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('run', ?)", (str(self.run),))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('updated', ?)", (str(time.time()),))
            db.commit()
        finally:
            db.close()
        report.seconds = time.perf_counter() - started
        if report.changed:
            log.info("explorer index %s: %d lines (%.1f MB) in %.1f s; %d new file(s), %d "
                     "extended, %d indexed again", self.path, report.lines,
                     report.read_bytes / 1e6, report.seconds, len(report.new),
                     len(report.extended), len(report.reindexed))
        return report

    def _update_iteration(self, db: sqlite3.Connection, ctx: _Context, iteration: int,
                          report: Update) -> bool:
        plans: list[tuple[Kind, Path, int, int]] = []  # kind, path, from offset, from line
        whole = False
        for kind in KINDS:
            found = self.stage_file(iteration, kind)
            name = f"iter_{iteration:02d}/{kind.name}.jsonl"
            known = db.execute("SELECT * FROM files WHERE name=?", (name,)).fetchone()
            if found is None:
                if known is not None:  # moved aside: index the iteration again
                    whole = True
                continue
            path, stat = found, found.stat()
            if known is None:
                plans.append((kind, path, 0, 0))
            elif _same_prefix(path, stat, known):
                if stat.st_size > known["offset"]:
                    plans.append((kind, path, known["offset"], known["lines"]))
                else:  # a partial last line gone: nothing to read, a new identity
                    db.execute("UPDATE files SET size=?, mtime_ns=? WHERE name=?",
                               (stat.st_size, stat.st_mtime_ns, name))
            elif kind.leaf:
                _drop_kind(db, kind, iteration, name)
                plans.append((kind, path, 0, 0))
                report.reindexed.append(name)
            else:
                whole = True
        if whole:
            log.info("iteration %d: a stage file was replaced; indexing it again", iteration)
            _drop_iteration(db, iteration)
            ctx.forget(iteration)
            plans = [(k, found, 0, 0) for k in KINDS
                     if (found := self.stage_file(iteration, k)) is not None]
            report.reindexed += [f"iter_{iteration:02d}/{p.name}" for _, p, _, _ in plans]
        ctx.ord = db.execute("SELECT COALESCE(MAX(ord), 0) FROM prompts WHERE iteration=?",
                             (iteration,)).fetchone()[0]
        read = 0
        for kind, path, offset, lines in plans:
            got = self._ingest(db, ctx, kind, iteration, path, offset, lines, report)
            read += got
            name = f"iter_{iteration:02d}/{path.name}"
            if name not in report.reindexed and (got or not offset):
                (report.extended if offset else report.new).append(name)
        return bool(read) or whole or any(not offset for _, _, offset, _ in plans)

    def _ingest(self, db: sqlite3.Connection, ctx: _Context, kind: Kind, iteration: int,
                path: Path, offset: int, lines: int, report: Update) -> int:
        """Read the complete lines from ``offset``; returns how many."""
        name = f"iter_{iteration:02d}/{path.name}"
        stat = path.stat()
        batch: list[tuple] = []
        sql = _INSERT[kind.table]
        end, first = offset, lines
        for number, off, raw in _complete_lines(path, offset, lines):
            end = off + len(raw) + 1
            lines = number
            if not raw.strip():
                continue
            try:
                values = json.loads(raw)
                if not isinstance(values, dict):
                    raise ValueError("not a JSON object")
                row = kind.row(values, iteration, off, number, ctx)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                db.execute("INSERT INTO problems VALUES (?,?,?)",
                           (name, number, f"{type(exc).__name__}: {exc}"[:300]))
                continue
            if row is not None:
                batch.append(row)
            if len(batch) >= _BATCH:
                db.executemany(sql, batch)
                batch.clear()
        if batch:
            db.executemany(sql, batch)
        report.read_bytes += end - offset
        report.lines += lines - first
        db.execute("INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?,?)",
                   (name, iteration, kind.name, stat.st_size, stat.st_mtime_ns, stat.st_ino,
                    end, lines, _tail(path, end)))
        db.commit()
        return lines - first


def _complete_lines(path: Path, offset: int, lines: int) -> Iterator[tuple[int, int, bytes]]:
    """(line number, offset, bytes without the newline) of complete lines from ``offset``; a
    last line without its newline (a write in progress) waits for the next update."""
    with path.open("rb") as fh:
        fh.seek(offset)
        number = lines
        for raw in fh:
            if not raw.endswith(b"\n"):
                return
            number += 1
            yield number, offset, raw[:-1]
            offset += len(raw)


def _tail(path: Path, end: int) -> str:
    with path.open("rb") as fh:
        fh.seek(max(0, end - _TAIL))
        return hashlib.sha256(fh.read(min(end, _TAIL))).hexdigest()[:32]


def _same_prefix(path: Path, stat: os.stat_result, known: sqlite3.Row) -> bool:
    """Is the file the one indexed, possibly grown (same inode, not shorter, same bytes before
    the indexed offset)? Not grown but modified is a rewrite in place: not the one indexed."""
    if stat.st_ino != known["inode"] or stat.st_size < known["offset"]:
        return False
    if stat.st_size == known["size"]:
        return stat.st_mtime_ns == known["mtime_ns"] and known["tail"] != ""
    return _tail(path, known["offset"]) == known["tail"]


def _drop_kind(db: sqlite3.Connection, kind: Kind, iteration: int, name: str) -> None:
    db.execute(f"DELETE FROM {kind.table} WHERE iteration=?", (iteration,))  # noqa: S608
    db.execute("DELETE FROM files WHERE name=?", (name,))
    db.execute("DELETE FROM problems WHERE name=?", (name,))


def _drop_iteration(db: sqlite3.Connection, iteration: int) -> None:
    for table in ("prompts", "responses", "judgments", "battles", "selections", "pairs",
                  "decisions", "dpo", "steps", "prompt_stats", "iteration_stats", "files"):
        db.execute(f"DELETE FROM {table} WHERE iteration=?", (iteration,))  # noqa: S608
    db.execute("DELETE FROM problems WHERE name LIKE ?", (f"iter_{iteration:02d}/%",))
