"""Each benchmark saves its headline rows as ``<name>.rows.json``; ``summary.py`` tabulates them."""

from __future__ import annotations

import json
from pathlib import Path


def save_rows(out: Path, name: str, rows: list[dict[str, str]]) -> None:
    """rows: {"measurement", "reference", "ratio", "figures"} each."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.rows.json").write_text(json.dumps(rows, indent=2) + "\n")
