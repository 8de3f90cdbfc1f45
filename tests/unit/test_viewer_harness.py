"""The explorer's harness views: links out of the harness folder are not followed, a partial
last line waits and a line that is not JSON is named (file, line) beside the others."""

from __future__ import annotations

import json
from pathlib import Path

from metajudge.viewer import harness


def _output(item_id: str) -> str:
    return json.dumps({"id": item_id, "instruction": f"question {item_id}",
                       "output": f"answer {item_id}", "generator": "m"}) + "\n"


def test_links_out_of_the_harness_folder_are_skipped(tmp_path: Path) -> None:
    root, outside = tmp_path / "harness", tmp_path / "outside"
    model = root / "arena_hard" / "mine"
    model.mkdir(parents=True)
    (model / "outputs.jsonl").write_text(_output("q1"))
    (outside / "secret").mkdir(parents=True)
    (outside / "secret" / "outputs.jsonl").write_text(_output("secret-question"))
    (outside / "metrics.json").write_text(json.dumps({"score": 99.0}))
    (outside / "games.jsonl").write_text(json.dumps({"id": "g", "item_id": "q1"}) + "\n")
    (root / "arena_hard" / "linked").symlink_to(outside / "secret", target_is_directory=True)
    (root / "alpaca_eval").symlink_to(outside, target_is_directory=True)
    (model / "metrics.json").symlink_to(outside / "metrics.json")
    (model / "games.jsonl").symlink_to(outside / "games.jsonl")
    (root / "arena_hard" / "alias").symlink_to(model, target_is_directory=True)  # inside: kept

    assert harness.models(root) == [
        {"kind": "arena_hard", "model": "alias", "metrics": {}},
        {"kind": "arena_hard", "model": "mine", "metrics": {}}]
    assert harness.questions(root, "arena_hard", "linked") is None
    data = harness.questions(root, "arena_hard", "mine")
    assert data is not None
    assert [i["id"] for i in data["items"]] == ["q1"] and data["items"][0]["games"] == []


def test_partial_and_bad_lines_are_held_back_and_named(tmp_path: Path) -> None:
    model = tmp_path / "arena_hard" / "mine"
    model.mkdir(parents=True)
    (model / "outputs.jsonl").write_text(_output("q1") + "not json\n" + _output("q2")
                                         + '{"id": "q3", "instr')  # a write in progress
    data = harness.questions(tmp_path, "arena_hard", "mine")
    assert data is not None
    assert [i["id"] for i in data["items"]] == ["q1", "q2"]
    assert data["problems"] == ["outputs.jsonl, line 2: not valid JSON: Expecting value"]
    assert harness.model_view(data)["problems"] == data["problems"]
