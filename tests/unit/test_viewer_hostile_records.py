"""Review of issue 30 (A7): a record whose field fails its type, in any stage file, is a problem
that names its file, line and field, and every page still answers 200. Found by review-30ab: a
judgment whose ``text`` is not a string made its prompt page 500 (the chosen-beside-rejected
diff), and a NaN or 1e999 (which ``json.loads`` reads as a float) made the prompt list, the
prompt page or the overview 500 (the answer is JSON without NaN)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from metajudge.viewer.server import Explorer
from tests.browser.conftest import make_run


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("hostile"))


def _edit(folder: Path, file: str, record_id: str, change: Callable[[str], str]) -> None:
    path = folder / f"{file}.jsonl"
    lines = [change(line) if json.loads(line)["id"] == record_id else line
             for line in path.read_text().splitlines()]
    path.write_text("\n".join(lines) + "\n")


def _set(field: str, value: object) -> Callable[[str], str]:
    return lambda line: json.dumps({**json.loads(line), field: value})


def _raw(field: str, token: str) -> Callable[[str], str]:  # a JSON token json.dumps won't write
    return lambda line: line.replace(f'"{field}":', f'"{field}":{token},"_was":', 1)


CASES: dict[str, tuple[str, str, str | Callable[[str], str], str]] = {
    "judgment text a number": ("judgments", "j1", _set("text", 5), "field 'text'"),
    "judgment text an object": ("judgments", "j1", _set("text", {"a": "<b>"}), "field 'text'"),
    "judgment score NaN": ("judgments", "j0", _raw("score", "NaN"), "field 'score'"),
    "judgment score 1e999": ("judgments", "j0", _raw("score", "1e999"), "field 'score'"),
    "selection variance Infinity": ("meta_selection", "prompt", _raw("variance", "Infinity"),
                                    "field 'variance'"),
    "train loss NaN": ("train_metrics", "", '{"step":1,"loss":NaN}', "field 'loss'"),
    "train loss a text": ("train_metrics", "", '{"step":1,"loss":"five"}', "field 'loss'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_wrong_typed_field_is_a_problem_and_every_page_answers(
        case: str, base: Path, tmp_path: Path) -> None:
    file, which, change, named = CASES[case]
    run = tmp_path / "run"
    shutil.copytree(base, run)
    folder = run / "iter_01"
    prompt = json.loads((folder / "pairs.jsonl").read_text().splitlines()[-1])
    prompt_id = prompt["prompt_id"]  # a prompt with a judge pair
    target = {"j1": prompt["chosen_id"], "j0": prompt["rejected_id"], "prompt": prompt_id}
    if isinstance(change, str):  # the first step's line, then a good one
        (folder / "train_metrics.jsonl").write_text(change + '\n{"step":2,"loss":0.5}\n')
    else:
        _edit(folder, file, target[which], change)
    explorer = Explorer(run, None)
    try:
        explorer.update()
        overview = explorer.answer("overview", (), {})
        listing = explorer.answer("prompts", ("1",), {})
        page = explorer.answer("prompt", ("1", prompt_id.encode().hex()), {})
        for data in (overview, listing, page):  # as the server sends them
            json.dumps(data, allow_nan=False, default=str)
        assert any(p["name"] == f"iter_01/{file}.jsonl" and named in p["problem"]
                   for p in overview["problems"]), overview["problems"]
        if file != "train_metrics":
            assert any(named in p for p in page["problems"]), page["problems"]
    finally:
        explorer.close()


def test_a_hard_linked_index_is_refused_and_its_target_untouched(base: Path,
                                                                   tmp_path: Path) -> None:
    """A4 by a hard link: ``ln OTHER.sqlite RUN/.explorer.sqlite`` made the index update add
    its tables to OTHER (outside the run) and switch it to WAL mode (review-30ab)."""
    import sqlite3

    from metajudge.viewer.index import INDEX_NAME, RunIndex
    from metajudge.viewer.paths import IndexRefused

    run = tmp_path / "run"
    shutil.copytree(base, run)
    (run / INDEX_NAME).unlink(missing_ok=True)
    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE mine (x)")
    db.commit()
    db.close()
    before = other.read_bytes()
    (run / INDEX_NAME).hardlink_to(other)
    with pytest.raises(IndexRefused, match="hard link"):
        RunIndex(run).update()
    assert other.read_bytes() == before


def test_the_version_changes_when_a_file_is_rewritten_in_place(base: Path,
                                                               tmp_path: Path) -> None:
    """A2: a stage file rewritten in place (same inode, same length, other scores) is indexed
    again and the overview's figures change, so the version the page polls must change too;
    it was a digest of (name, inode, offset, lines) alone and stayed the same (review-30ab)."""
    import re
    import time

    run = tmp_path / "run"
    shutil.copytree(base, run)
    explorer = Explorer(run, None)
    try:
        explorer.update()
        with explorer.request():
            before = explorer.answer("version", (), {})["version"]
            scores = explorer.answer("overview", (), {})["iterations"][0]["score_distribution"]
        path = run / "iter_01" / "judgments.jsonl"
        text = path.read_text()
        flipped = re.sub(r'"score":(\d)\.0', lambda m: f'"score":{5 - int(m[1])}.0', text)
        assert len(flipped) == len(text) and flipped != text
        time.sleep(0.01)
        with path.open("r+") as fh:  # in place: same inode, same size
            fh.write(flipped)
        with explorer.request():
            after = explorer.answer("version", (), {})["version"]
            now = explorer.answer("overview", (), {})["iterations"][0]["score_distribution"]
        assert now != scores  # the index read the new scores ...
        assert after != before  # ... and the page is told
        with explorer.request():  # nothing new: the same version
            assert explorer.answer("version", (), {})["version"] == after
    finally:
        explorer.close()
