"""The static bundle: the explorer's app and every API answer it needs, pre-rendered as files,
so that any static host (a plain ``python -m http.server``) serves the same pages.

The answers are written at the paths the server answers (``api/overview.json``, …), except
that an id in a file name is the SHA-256 (hex) of its UTF-8 bytes, not the hex of the bytes
themselves: a name of fixed length whatever the id (a file name holds at most 255 bytes). The
app computes the same digest (SubtleCrypto, in a secure context such as http://127.0.0.1 or
https) or looks it up in ``api/names.json`` (id → digest, every id named in the bundle).
An iteration's prompt list is written whole
(``complete: true``) and the app filters, sorts and pages it in the browser; a static host
ignores the query string the app sends. Routes are hash routes (``#/iter/1/prompt/ID``), so a
deep link needs nothing from the host. ``limit`` keeps the first prompts of each iteration only,
in its prompt list as in its pages
(a paper-scale run gives 20,000 prompt pages).

    metajudge view runs/tiny --bundle share/tiny
    python -m http.server --bind 127.0.0.1 -d share/tiny      # this machine only
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from metajudge.viewer import harness as harness_data
from metajudge.viewer import queries
from metajudge.viewer.server import STATIC, Explorer, static_file

log = logging.getLogger(__name__)


def file_key(text: str) -> str:
    """The file name stem of an id in the bundle: the SHA-256 (hex) of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _write(root: Path, relative: str, data: Any) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False, allow_nan=False, default=str),
                    encoding="utf-8")


def write_bundle(explorer: Explorer, out: Path, *, limit: int | None = None) -> int:
    """Write the bundle into ``out`` (emptied first when it is an earlier bundle); returns the
    number of files written."""
    if out.exists():
        if not (out / "api" / "overview.json").is_file() and any(out.iterdir()):
            raise FileExistsError(f"{out} exists and is not an explorer bundle; name a new or "
                                  "empty folder")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    count = 0
    names: dict[str, str] = {}

    def key(text: str) -> str:
        names[text] = file_key(text)
        return names[text]

    for name in sorted({name for name, _ in STATIC.values()}):
        (out / name).write_bytes(static_file(name))
        count += 1
    overview = explorer.answer("overview", (), {})
    overview["static"] = True
    _write(out, "api/overview.json", overview)
    count += 1
    if explorer.run is not None:
        db = explorer.db()
        for figures in overview["iterations"]:
            iteration = figures["iteration"]
            if "counts" not in figures:
                continue
            listing = queries.all_prompts(db, iteration)
            if limit is not None and listing["total"] > limit:  # no row links to a missing page
                listing.update(rows=listing["rows"][:limit], limited=listing["total"],
                               total=limit)
            _write(out, f"api/iter/{iteration}/prompts.json", listing)
            count += 1
            for row in listing["rows"]:
                page = queries.prompt_page(db, explorer.run, iteration, row["prompt_id"])
                _write(out, f"api/iter/{iteration}/prompt/{key(row['prompt_id'])}.json", page)
                count += 1
    count += _harness(explorer, out, key)
    _write(out, "api/names.json", names)
    count += 1
    log.info("explorer bundle: %d files in %s", count, out)
    return count


def _harness(explorer: Explorer, out: Path, key: Callable[[str], str]) -> int:
    listing = explorer.answer("harness", (), {})
    _write(out, "api/harness.json", listing)
    count = 1
    if explorer.harness is None:
        return count
    for entry in listing:
        kind, model = entry["kind"], entry["model"]
        data = harness_data.questions(explorer.harness, kind, model)
        if data is None:
            continue
        base = f"api/harness/{kind}/{key(model)}"
        _write(out, f"{base}.json", harness_data.model_view(data))
        count += 1
        for item in data["items"]:
            _write(out, f"{base}/{key(str(item['id']))}.json",
                   explorer.answer("harness_item", (kind, model.encode().hex(),
                                                    str(item["id"]).encode().hex()), {}))
            count += 1
    return count
