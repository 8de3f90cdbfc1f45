"""The one store for run directories and evaluation folders: stage files, settings, manifest, lock.

A run directory::

    RUN/config.yaml                        the resolved config (no secrets)
    RUN/manifest.json                      version, per-stage counts, tokens and timings
    RUN/iter_01/prompts.jsonl              this iteration's prompt sample
    RUN/iter_01/responses.jsonl            stage `generate`: one Response per (prompt, sample)
    RUN/iter_01/responses.failures.jsonl   requests that ended in a backend failure
    RUN/iter_01/responses.settings.json    the settings the records were made under, their
                                           generation and their inputs' generations

An evaluation folder has the same files without ``iter_NN/``. The store owns every stage file's
name and record type (:data:`STAGE_FILES`). A stage file's *generation* is drawn when it starts
(first made, or remade by ``--redo``); a stage records those of the files it was made from and
refuses its records once one of them is remade (:mod:`metajudge.provenance`, which builds on
this module; the store itself knows nothing of provenance but the settings file's name and its
``generation``). Stage files are
append-only; reopening repairs a partial last line left by a kill. One process at a time writes
a store: :meth:`Store.open` takes a lock that a second writer is refused, and child processes
the holder starts (training, launched ranks) inherit it through ``METAJUDGE_LOCKED``.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml
from pydantic import BaseModel

import metajudge
from metajudge.jsonl import (
    Appender,
    InputError,
    iter_lines,
    iter_lines_at,
    parse_line,
    parse_object,
    read_records,
    write_atomic,
)
from metajudge.records import (
    AuditRow,
    DPORow,
    FailedRequest,
    Judgment,
    MetaJudgment,
    MetaSelection,
    PairDecision,
    PreferencePair,
    Prompt,
    Response,
)

log = logging.getLogger(__name__)

#: set for child processes that work under their parent's lock
LOCK_ENV = "METAJUDGE_LOCKED"
#: config sections whose change would make existing records inconsistent with new ones
_RECORD_SHAPING = ("seed", "backend", "prompts", "generation")
#: the backend fields that shape records (where a server is and how it is fed do not; each
#: stage file also checks the fingerprint of the backend that made its records)
_BACKEND_SHAPING = ("kind", "model", "revision", "dtype", "trust_remote_code")
#: config sections that never shape records (how the work is fed, not what it is)
_HARMLESS = ("runner",)
#: evaluation config sections whose records check them part by part (Arena-Hard v2.0's
#: baselines: each category's games record their own baseline in ``v2_games``' settings, so a
#: category may be added with its baseline file): not compared here, and saved as given when
#: the command ends well (the CLI gives the saved section merged with the new one)
_CHECKED_PER_PART = ("arena_hard_v2",)
#: stage-summary fields that add up over passes
_ACCUMULATE = ("seconds", "completed", "failed", "backend_calls", "prompt_tokens",
               "generated_tokens", "label_requests")
_ID = re.compile(rb'^\{"id":"((?:[^"\\]|\\.)*)"')
#: a settings file's key for which making of its stage file the records are
GENERATION = "generation"


class ConfigMismatchError(ValueError):
    """A store was created with different settings than the ones given now."""


class LockedError(RuntimeError):
    """Another process is writing the same store."""



def replaced_path(folder: Path, name: str) -> Path:
    """A new place in ``folder/replaced/`` for what a redo moves aside: ``<name>-<time>``, with
    ``-2``, ``-3``... when an earlier redo of the same second took that name."""
    parent = folder / "replaced"
    parent.mkdir(parents=True, exist_ok=True)
    stamp = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    count = 1
    while (parent / (stamp if count == 1 else f"{stamp}-{count}")).exists():
        count += 1
    return parent / (stamp if count == 1 else f"{stamp}-{count}")

@dataclass(frozen=True)
class StageFile:
    """One JSONL file of a store and the record type of its lines."""

    name: str
    record: type[BaseModel]

    @property
    def failures(self) -> StageFile:
        return StageFile(f"{self.name}.failures", FailedRequest)

    @property
    def filename(self) -> str:
        return f"{self.name}.jsonl"


PROMPTS = StageFile("prompts", Prompt)
RESPONSES = StageFile("responses", Response)
JUDGMENTS = StageFile("judgments", Judgment)
META_SELECTION = StageFile("meta_selection", MetaSelection)
META_JUDGMENTS = StageFile("meta_judgments", MetaJudgment)
PAIRS = StageFile("pairs", PreferencePair)
PAIR_DECISIONS = StageFile("pair_decisions", PairDecision)
DPO_PAIRS = StageFile("dpo_pairs", DPORow)
AUDIT = StageFile("audit", AuditRow)


def _evaluation_files() -> dict[str, StageFile]:
    from metajudge.evaluation import records as ev

    return {f.name: f for f in (
        StageFile("outputs", ev.EvalOutput), StageFile("annotations", ev.PairwiseGame),
        StageFile("games", ev.PairwiseGame), StageFile("pair_games", ev.PairwiseGame),
        StageFile("scores", ev.ReplyScore), StageFile("mt_answers", ev.MTBenchAnswer),
        StageFile("mt_judgments", ev.MTBenchJudgment), StageFile("eft_judgments", Judgment),
        StageFile("eft_decisions", ev.EFTDecision),
        StageFile("v2_games", ev.ArenaHardV2Game))}


#: every stage file of a run directory by name
STAGE_FILES = {f.name: f for f in (PROMPTS, RESPONSES, JUDGMENTS, META_SELECTION,
                                   META_JUDGMENTS, PAIRS, PAIR_DECISIONS, DPO_PAIRS, AUDIT)}


def evaluation_file(name: str) -> StageFile:
    """An evaluation folder's stage file by name."""
    return _evaluation_files()[name]


class Store:
    """A run directory or an evaluation folder."""

    def __init__(self, root: str | Path, config: Any, *, lock: IO[str] | None = None):
        self.root = Path(root)
        self.config = config
        self._lock = lock
        #: a reopened run's new settings, saved when the command ends unless a stage refused
        #: them, or when training starts (every stage before it accepted them)
        self._pending_config: str | None = None
        self._refused = False

    # -------------------------------------------------------------- opening
    @classmethod
    def open(cls, root: str | Path, config: Any | None = None, *, lock: bool = True) -> Store:
        """Create a store, or reopen one. A given config must agree with the saved one on what
        shapes records (for a run: seed, backend, prompts, generation; for an evaluation:
        everything but ``runner``). With ``lock`` the store is this process's to write until
        :meth:`close` or exit; a second writer gets :class:`LockedError`."""
        from metajudge.config import RunConfig

        root = Path(root)
        saved_path = root / "config.yaml"
        _migrate(root)
        handle = None
        if saved_path.is_file():
            handle = _take_lock(root) if lock else None
            try:
                saved = _load_saved(saved_path, type(config) if config is not None else None)
                if config is not None:
                    _check_compatible(saved, config, root)
            except BaseException:
                if handle is not None:  # a refused open writes nothing: the lock goes now,
                    handle.close()      # not when its traceback is collected
                raise
            store = cls(root, config if config is not None else saved, lock=handle)
            if isinstance(config, RunConfig) or config is not None and any(
                    getattr(saved, k, None) != getattr(config, k, None)
                    for k in _CHECKED_PER_PART):  # later stages' settings may change
                store._pending_config = _to_yaml(config)
            return store
        if config is None:
            raise FileNotFoundError(f"{root} is not a run directory (no config.yaml)")
        root.mkdir(parents=True, exist_ok=True)
        handle = _take_lock(root) if lock else None
        write_atomic(saved_path, _to_yaml(config))
        store = cls(root, config, lock=handle)
        store._write_manifest({"metajudge_version": metajudge.__version__, "created": _now(),
                               "stages": {}})
        return store

    def save_config(self) -> None:
        """Save a reopened run's settings as ``config.yaml``, unless a stage refused them: a
        refused ``--set`` must not become the settings the next plain resume starts from. Not
        saved as each stage accepts them, since a later stage of the same command may still
        refuse them (training saves them, for its own process to read, once every stage
        before it accepted)."""
        if self._pending_config is not None and not self._refused and self.writable:
            write_atomic(self.root / "config.yaml", self._pending_config)
            self._pending_config = None

    def refuse(self, message: str) -> ConfigMismatchError:
        """The error that refuses this command's settings; they are then never saved."""
        self._refused = True
        return ConfigMismatchError(message)

    def close(self) -> None:
        """Release the lock (the files stay), saving the settings first only when the command
        ends well: not when a stage refused them (see :meth:`save_config`), and not when it
        stops on any other error (called from a ``finally`` while an exception propagates,
        ``sys.exc_info()`` holds it), since a stage after the one that stopped has not yet
        checked them."""
        if sys.exc_info()[1] is None:
            self.save_config()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # ---------------------------------------------------------------- files
    def iteration_dir(self, iteration: int) -> Path:
        return self.root / f"iter_{iteration:02d}"

    def folder(self, iteration: int | None) -> Path:
        return self.root if iteration is None else self.iteration_dir(iteration)

    def path(self, file: StageFile, iteration: int | None = None) -> Path:
        return self.folder(iteration) / file.filename

    def read(self, file: StageFile, iteration: int | None = None) -> list[Any]:
        """All records of a small stage file (none if it does not exist)."""
        path = self.path(file, iteration)
        return read_records(path, file.record, repair_tail=self.writable) if path.is_file() \
            else []

    def iter_records(self, file: StageFile, iteration: int | None = None) -> Iterator[Any]:
        """The records of a stage file one at a time (memory does not grow with the file)."""
        for _, record in self.iter_with_offsets(file, iteration):
            yield record

    def iter_with_offsets(self, file: StageFile, iteration: int | None = None
                          ) -> Iterator[tuple[int, Any]]:
        """(byte offset, record) of each line; :meth:`read_at` reads one back."""
        path = self.path(file, iteration)
        if not path.is_file():
            return
        for number, offset, raw in iter_lines_at(path, repair_tail=self.writable):
            yield offset, parse_line(path, number, raw, file.record)

    def first(self, file: StageFile, iteration: int | None = None) -> Any | None:
        """The record of a stage file's first complete line (None when it has none)."""
        path = self.path(file, iteration)
        if not path.is_file():
            return None
        for number, _, raw in iter_lines_at(path):
            return parse_line(path, number, raw, file.record)
        return None

    def read_at(self, file: StageFile, offset: int, iteration: int | None = None) -> Any:
        """The record of the line starting at ``offset``."""
        path = self.path(file, iteration)
        with path.open("rb") as fh:
            fh.seek(offset)
            return parse_line(path, None, fh.readline().rstrip(b"\n"), file.record)

    def ids(self, file: StageFile, iteration: int | None = None, *,
            among: set[str] | None = None) -> set[str]:
        """The ids in a stage file (only those ``among`` a given set, when one is given), read
        without building records."""
        path = self.path(file, iteration)
        if not path.is_file():
            return set()
        found = set()
        for number, raw in iter_lines(path, repair_tail=self.writable):
            match = _ID.match(raw)
            if match and b"\\" not in match.group(1):
                item = match.group(1).decode("utf-8")
            else:
                obj = parse_object(path, number, raw)
                if "id" not in obj:
                    raise InputError(path, number, "id", "missing")
                item = str(obj["id"])
            if among is None or item in among:
                found.add(item)
        return found

    def count(self, file: StageFile, iteration: int | None = None) -> int:
        """The number of records in a stage file."""
        path = self.path(file, iteration)
        return sum(1 for _ in iter_lines(path)) if path.is_file() else 0

    def final_failures(self, file: StageFile, iteration: int | None = None) -> set[str]:
        """Ids that failed for good (not retryable) in ``<name>.failures.jsonl``."""
        return {f.id for f in self.iter_records(file.failures, iteration)
                if not f.failure.retryable}

    def appender(self, file: StageFile, iteration: int | None = None) -> Appender:
        return Appender(self.path(file, iteration))

    def write_all(self, file: StageFile, records: Iterable[BaseModel],
                  iteration: int | None = None) -> int:
        """Replace a stage file atomically with ``records`` (streamed, so it may be large)."""
        path = self.path(file, iteration)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.unlink(missing_ok=True)  # what a killed rewrite left: never appended to
        count = 0
        with Appender(tmp) as out:
            for record in records:
                out.write(record)
                count += 1
        os.replace(tmp, path)
        return count

    @property
    def writable(self) -> bool:
        return self._lock is not None or os.environ.get(LOCK_ENV) == str(self.root.resolve())

    # ------------------------------------------------------------- settings
    def settings_path(self, file: StageFile, iteration: int | None = None) -> Path:
        """``<name>.settings.json``: what a stage file's records were made under and from
        (written and checked by :mod:`metajudge.provenance`)."""
        return self.folder(iteration) / f"{file.name}.settings.json"

    def settings(self, file: StageFile, iteration: int | None = None) -> dict[str, Any] | None:
        """What a stage file's settings file holds (None when it has none)."""
        path = self.settings_path(file, iteration)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]
        except ValueError as exc:  # names the file (JSONDecodeError alone does not)
            raise InputError(path, getattr(exc, "lineno", None), None,
                             f"not a settings file ({exc}); move it aside, or remake "
                             f"{file.filename} with --redo") from exc

    def generation(self, file: StageFile, iteration: int | None = None) -> str | None:
        """Which making of a stage file its records are (None for a file without one: not
        made yet, or made before generations were recorded); see :mod:`metajudge.provenance`."""
        return (self.settings(file, iteration) or {}).get(GENERATION)

    def replaced_path(self, name: str, iteration: int | None = None) -> Path:
        """A new place in ``replaced/`` for what a redo moves aside: ``<name>-<time>``, with
        ``-2``, ``-3``... when an earlier redo of the same second took that name."""
        return replaced_path(self.folder(iteration), name)

    def move_aside(self, file: StageFile, iteration: int | None = None, *,
                   together: tuple[StageFile, ...] = ()) -> Path:
        """Move a stage file, its failures and settings, and the other outputs of its stage
        (``together``), into ``replaced/<name>-<time>/``. The settings go last: a kill between
        two moves leaves them in place, naming the making whose files are now missing (an
        output whose digest they record is refused; a stage resumed there starts a new
        making, with no file of the old one left to take up, such as the meta-judge's
        selection)."""
        target = self.replaced_path(file.name, iteration)
        target.mkdir()
        names = [*(f.filename for f in together), file.failures.filename, file.filename,
                 f"{file.name}.settings.json"]
        for name in names:
            source = self.folder(iteration) / name
            if source.exists():
                shutil.move(str(source), target / name)
        log.warning("moved %s aside to %s", ", ".join(
            n for n in names if (target / n).exists()), target)
        return target

    # ------------------------------------------------------------- manifest
    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def manifest(self) -> dict[str, Any]:
        if not self.manifest_path.is_file():
            return {"stages": {}}
        return json.loads(self.manifest_path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]

    def _write_manifest(self, data: dict[str, Any]) -> None:
        write_atomic(self.manifest_path, json.dumps(data, indent=2, default=str) + "\n")

    def record_stage(self, key: str, summary: dict[str, Any], *, replace: bool = False) -> None:
        """Store a stage pass's counts and timings under ``key`` (``iter_01/judge``, or a
        harness stage's name). Work done (seconds, tokens, calls, records) adds up over the
        passes that finished; everything else is the latest pass's. ``replace`` starts the
        entry again (a retrained checkpoint's training is its own, not added to the last), as
        does a pass over another making of the stage's file (its ``generation``: after a
        redo, the costs are the new file's only)."""
        data = self.manifest()
        previous = {} if replace else data.setdefault("stages", {}).get(key, {})
        if previous.get("generation") not in (None, summary.get("generation")):
            previous = {}
        data.setdefault("stages", {})
        merged = {**summary, "updated": _now(), "passes": previous.get("passes", 0) + 1}
        for name in _ACCUMULATE:
            if name in summary and name in previous:
                merged[name] = previous[name] + summary[name]
        data["stages"][key] = merged
        self._write_manifest(data)

    def write_json(self, name: str, data: Any) -> Path:
        """Strict JSON that any reader takes: an undefined number (NaN, ±inf) is ``null``."""
        path = self.root / name
        write_atomic(path, json.dumps(_strict(data), indent=2, ensure_ascii=False,
                                      default=str, allow_nan=False) + "\n")
        return path


def _strict(data: Any) -> Any:
    """``data`` with every non-finite float replaced by None.

    >>> _strict({"a": float("nan"), "b": [1.5, float("inf")], "c": "x"})
    {'a': None, 'b': [1.5, None], 'c': 'x'}
    """
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _strict(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_strict(v) for v in data]
    return data


def _migrate(root: Path) -> None:
    """An evaluation folder made before the one store (``eval_config.yaml``, ``stages.json``)
    takes the store's names (``config.yaml``, ``manifest.json``)."""
    old = root / "eval_config.yaml"
    if old.is_file() and not (root / "config.yaml").exists():
        os.replace(old, root / "config.yaml")
        stages = root / "stages.json"
        if stages.is_file() and not (root / "manifest.json").exists():
            data = {"metajudge_version": metajudge.__version__, "created": _now(),
                    "stages": json.loads(stages.read_text(encoding="utf-8"))}
            write_atomic(root / "manifest.json", json.dumps(data, indent=2) + "\n")
            stages.unlink()


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _take_lock(root: Path) -> IO[str] | None:
    if os.environ.get(LOCK_ENV) == str(root.resolve()):
        return None  # our parent holds it for us
    handle = (root / ".lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            raise LockedError(
                f"{root} is being written by {holder}; wait for it to finish, or use another "
                "--out") from None
        raise
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} ({' '.join(sys.argv)[:200]})\n")
    handle.flush()
    return handle


def _load_saved(path: Path, kind: type | None) -> Any:
    from metajudge.config import RunConfig, load_config

    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if kind is None:
        kind = RunConfig if "harness" not in data else None
    if kind is RunConfig:
        return load_config(path)
    from metajudge.evaluation.config import EvalConfig

    return EvalConfig.model_validate(data)


def _check_compatible(saved: Any, given: Any, root: Path) -> None:
    from metajudge.config import RunConfig

    if type(saved) is not type(given):
        raise ConfigMismatchError(f"{root} holds a {type(saved).__name__}, not a "
                                  f"{type(given).__name__}")
    old, new = saved.model_dump(mode="json"), given.model_dump(mode="json")
    for data in (old, new):
        for key in ("backend", "model", "judge"):
            if isinstance(data.get(key), dict) and "kind" in data[key]:
                data[key] = {k: data[key][k] for k in _BACKEND_SHAPING}
    keys = _RECORD_SHAPING if isinstance(given, RunConfig) else [
        k for k in new if k not in _HARMLESS + _CHECKED_PER_PART]
    diffs = [key for key in keys if old.get(key) != new.get(key)]
    if diffs:
        raise ConfigMismatchError(
            f"{root} was created with different settings for {', '.join(diffs)}; resume with "
            "the same config (omit --config to reuse the saved one) or use a new --out")


def _to_yaml(config: BaseModel) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
