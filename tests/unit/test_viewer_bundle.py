"""The static bundle names an id's files by the SHA-256 of the id, so an id of any length or
script gives a file name of 64 characters, and lists every name in ``api/names.json``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from metajudge.viewer.bundle import file_key, write_bundle
from metajudge.viewer.server import Explorer
from tests.browser.conftest import make_run

LONG_IDS = ["long-" + "x" * 300, "née-" + "été" * 60 + "-答案" * 40]


def test_long_and_non_ascii_ids_name_files_of_fixed_length(tmp_path: Path) -> None:
    prompts = [{"id": i, "instruction": f"Say something about {i[:20]}."} for i in LONG_IDS]
    prompts += [{"id": "rivers", "instruction": "Name three rivers of France."},
                {"id": "sums", "instruction": "What is 2 + 2?"}]
    assert all(len(i.encode("utf-8").hex()) > 255 for i in LONG_IDS)
    run = make_run(tmp_path, prompts, stages=("generate", "judge"))
    explorer = Explorer(run, None)
    explorer.update()
    try:
        write_bundle(explorer, tmp_path / "bundle")
    finally:
        explorer.close()
    api = tmp_path / "bundle" / "api"
    names = json.loads((api / "names.json").read_text(encoding="utf-8"))
    assert names == {p["id"]: file_key(p["id"]) for p in prompts}
    for prompt_id in LONG_IDS:
        key = hashlib.sha256(prompt_id.encode("utf-8")).hexdigest()
        page = json.loads((api / "iter" / "1" / "prompt" / f"{key}.json").read_text("utf-8"))
        assert page["prompt"]["id"] == prompt_id and len(page["responses"]) == 3

    explorer = Explorer(run, None)  # --limit 2: the list holds the pages written, no more
    try:
        write_bundle(explorer, tmp_path / "limited", limit=2)
    finally:
        explorer.close()
    api = tmp_path / "limited" / "api"
    listing = json.loads((api / "iter" / "1" / "prompts.json").read_text("utf-8"))
    assert (listing["total"], listing["limited"], len(listing["rows"])) == (2, 4, 2)
    pages = {p.stem for p in (api / "iter" / "1" / "prompt").iterdir()}
    assert pages == {file_key(r["prompt_id"]) for r in listing["rows"]}
