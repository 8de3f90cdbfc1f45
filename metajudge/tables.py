"""Reading the tables the analyses take: JSON arrays, JSON Lines or CSV, optionally gzipped.

A malformed file raises :class:`~metajudge.jsonl.InputError` naming the file, the line and, for
missing columns, the field.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from metajudge.jsonl import InputError


def read_table(path: str | Path, *, required: Iterable[str] = ()) -> pd.DataFrame:
    """A DataFrame from ``.json`` (an array of objects, as alpaca_eval writes), ``.jsonl`` or
    ``.csv`` (each optionally ``.gz``), checked to have the ``required`` columns."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    kind = Path(path.stem).suffix if path.suffix == ".gz" else path.suffix
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(path, None, None, f"not UTF-8 (byte {exc.start})") from None
    if kind == ".csv":
        frame = pd.read_csv(io.StringIO(text))
    elif kind == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(path, exc.lineno, None, f"not valid JSON: {exc.msg}") from None
        frame = _objects(path, rows, start=None)
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise InputError(path, number, None, f"not valid JSON: {exc.msg}") from None
            if not isinstance(rows[-1], dict):
                raise InputError(path, number, None, "expected a JSON object")
        frame = _objects(path, rows, start=1)
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise InputError(path, None, missing[0], "missing column")
    return frame


def _objects(path: Path, rows: list, start: int | None) -> pd.DataFrame:
    for number, row in enumerate(rows, start=start or 1):
        if not isinstance(row, dict):
            raise InputError(path, number if start else None, None,
                             f"item {number}: expected a JSON object")
    return pd.DataFrame(rows)
