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


def test_a_wrong_typed_answer_is_named_and_no_other_checkpoint_breaks(tmp_path: Path) -> None:
    """A checkpoint whose answer is not a text (``"output": 7``; an MT-Bench turn ``1``) made
    its own pages 500, and, through the across-checkpoints view, every other checkpoint's page
    of that question too (review-30ab)."""
    from metajudge.viewer.server import Explorer

    for name, answer in (("good", "answer q1"), ("bad", 7)):
        folder = tmp_path / "arena_hard" / name
        folder.mkdir(parents=True)
        (folder / "outputs.jsonl").write_text(json.dumps(
            {"id": "q1", "instruction": "question q1", "output": answer, "generator": name})
            + "\n")
    bad = tmp_path / "mt_bench" / "bad"
    bad.mkdir(parents=True)
    (bad / "mt_answers.jsonl").write_text(json.dumps({"id": "81", "turns": [1, "two"]}) + "\n")
    explorer = Explorer(None, tmp_path)
    good = explorer.answer("harness_item", ("arena_hard", b"good".hex(), b"q1".hex()), {})
    assert [(r["model"], r["chars"]) for r in good["across"]] == [("bad", None),
                                                                    ("good", 9)]
    mine = explorer.answer("harness_item", ("arena_hard", b"bad".hex(), b"q1".hex()), {})
    assert any("output" in p for p in mine["item"]["problems"]), mine["item"]["problems"]
    item = explorer.answer("harness_item", ("mt_bench", b"bad".hex(), b"81".hex()), {})
    assert item["item"]["turn_chars"] == [None, 3] and item["across"][0]["answer"] == "two"
