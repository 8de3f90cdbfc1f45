"""Reading and appending JSONL safely.

Inputs are validated line by line into typed records; a bad line stops everything with an error
naming the file, the line and the field. Appends are one ``write`` of one whole line followed by a
flush, so a process killed at any moment leaves at most one partial last line, which
:func:`read_records` detects, drops with a warning and (when asked) truncates away.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

from pydantic import BaseModel, ValidationError

log = logging.getLogger(__name__)

R = TypeVar("R", bound=BaseModel)


class InputError(ValueError):
    """Bad input: names the file, the line (1-based) and the field."""

    def __init__(self, path: str | Path, line: int | None, field: str | None, problem: str):
        self.path, self.line, self.field, self.problem = str(path), line, field, problem
        where = self.path + (f", line {line}" if line is not None else "")
        what = f"field '{field}': " if field else ""
        super().__init__(f"{where}: {what}{problem}")


def _first_error(exc: ValidationError) -> tuple[str | None, str]:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or None
    problem = err["msg"]
    if err["type"] == "missing":
        problem = "missing"
    elif "input" in err and err["type"] != "extra_forbidden":
        problem += f" (got {err['input']!r:.60})"
    return field, problem


def parse_object(path: str | Path, number: int | None, raw: bytes) -> dict[str, Any]:
    """Decode one JSONL line into a JSON object (no schema)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(path, number, None, f"not UTF-8 (byte {exc.start})") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(path, number, None, f"not valid JSON: {exc.msg}") from None
    if not isinstance(obj, dict):
        raise InputError(path, number, None, "expected a JSON object")
    return obj


def parse_line(path: str | Path, number: int | None, raw: bytes, model: type[R]) -> R:
    """Decode and validate one JSONL line into ``model``."""
    obj = parse_object(path, number, raw)
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        field, problem = _first_error(exc)
        raise InputError(path, number, field, problem) from None


def iter_lines_at(path: str | Path, *, repair_tail: bool = False
                  ) -> Iterator[tuple[int, int, bytes]]:
    """Yield (line number, byte offset, bytes) of non-blank complete lines, reading the file a
    line at a time.

    A last line without a newline is what a kill leaves behind: it is dropped with a warning and,
    with ``repair_tail``, truncated from the file so later appends start on a clean line.
    """
    path = Path(path)
    offset = 0
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.endswith(b"\n"):
                if raw.strip():
                    log.warning("%s: dropping a partial last line (%d bytes) left by an "
                                "interrupted write", path, len(raw))
                    if repair_tail:
                        with path.open("r+b") as out:
                            out.truncate(offset)
                return
            if raw.strip():
                yield number, offset, raw[:-1]
            offset += len(raw)


def iter_lines(path: str | Path, *, repair_tail: bool = False) -> Iterator[tuple[int, bytes]]:
    """Yield (line number, bytes) of non-blank complete lines (see :func:`iter_lines_at`)."""
    for number, _, raw in iter_lines_at(path, repair_tail=repair_tail):
        yield number, raw


def read_records(path: str | Path, model: type[R], *, repair_tail: bool = False) -> list[R]:
    """Read and validate every line of a JSONL file; :class:`InputError` on the first bad one."""
    return [parse_line(path, n, raw, model) for n, raw in iter_lines(path, repair_tail=repair_tail)]


def read_objects(path: str | Path) -> list[dict[str, Any]]:
    """Every line of a JSONL file as a JSON object, for files without a record type (a
    trainer's metrics); :class:`InputError` names the first bad line."""
    return [parse_object(path, n, raw) for n, raw in iter_lines(path)]


class Appender:
    """Append records to a JSONL file, one flushed line each."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[bytes] = self.path.open("ab")

    def write(self, record: BaseModel) -> None:
        line = record.model_dump_json().encode("utf-8") + b"\n"
        self._fh.write(line)
        self._fh.flush()

    def write_all(self, records: Iterable[BaseModel]) -> None:
        for record in records:
            self.write(record)

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()

    def __enter__(self) -> Appender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_atomic(path: str | Path, text: str) -> None:
    """Replace a small file atomically (write a sibling, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
