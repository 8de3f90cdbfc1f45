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

A line that is not a JSON object, or whose fields fail their types
(:mod:`metajudge.viewer.schema`), is kept out of every table and recorded in ``problems`` with
its file, line, field and prompt, so no figure counts it and the pages name it.

Only what lies inside the run is read: an ``iter_NN`` folder or stage file that is a link
resolving outside the run directory is skipped, and an index file that is a link is refused
(:mod:`metajudge.viewer.paths`). :meth:`RunIndex.is_current` compares each stage
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metajudge.viewer.paths import (
    INDEX_NAME,
    IndexRefused,
    inside,
    iterations_of,
    refuse_linked_index,
)
from metajudge.viewer.schema import INSERT, KINDS, SCHEMA, SCHEMA_VERSION, FieldProblem, Kind
from metajudge.viewer.stats import refresh_stats

__all__ = ["INDEX_NAME", "RunIndex", "Update", "connect", "inside", "iterations_of"]

log = logging.getLogger(__name__)

_BATCH = 20_000
_TAIL = 64

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
        refuse_linked_index(self.path)
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
        started = time.perf_counter()
        refuse_linked_index(self.path)  # checked again: a link may have appeared since
        report = Update(created=not self.path.exists())
        db = self._open()
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):  # an older layout: start again
                db.close()
                self.path.unlink()
                report.created = True
                db = self._open()
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
            if report.changed or gone:  # what the page's version follows (a rewrite in place
                # keeps each file's name, inode and length: the count says it was read again)
                db.execute("INSERT OR REPLACE INTO meta VALUES ('generation', COALESCE((SELECT "
                           "value FROM meta WHERE key='generation'), 0) + 1)")
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

    def _open(self) -> sqlite3.Connection:
        """The index, opened for writing with its tables; a run the explorer may not write
        into is named with the way out (``--index``), not a bare SQLite error."""
        try:
            db = connect(self.path)
            db.executescript(SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            return db
        except sqlite3.OperationalError as exc:
            raise IndexRefused(
                f"cannot write the explorer index {self.path} ({exc}): for a read-only run, "
                f"name a writable index file, e.g. metajudge view {self.run} --index "
                f"/tmp/{self.run.resolve().name}.explorer.sqlite") from None

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
        sql = INSERT[kind.table]
        end, first = offset, lines
        for number, off, raw in _complete_lines(path, offset, lines):
            end = off + len(raw) + 1
            lines = number
            if not raw.strip():
                continue
            values: Any = None
            try:
                values = json.loads(raw)
                if not isinstance(values, dict):
                    raise ValueError("not a JSON object")
                row = kind.row(values, iteration, off, number, ctx)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                problem = str(exc) if isinstance(exc, FieldProblem) else (
                    f"{type(exc).__name__}: {exc}")
                db.execute("INSERT INTO problems VALUES (?,?,?,?)",
                           (name, number, problem[:300], _prompt_of(kind, values)))
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


def _prompt_of(kind: Kind, values: Any) -> str | None:
    """The prompt a bad line belongs to, when it says (so its page can name the problem)."""
    if not isinstance(values, dict):
        return None
    found = values.get("id" if kind.name in ("prompts", "meta_selection") else "prompt_id")
    return str(found) if isinstance(found, str | int) and not isinstance(found, bool) else None


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
