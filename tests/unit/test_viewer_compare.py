"""The explorer's word differences (hand-worked cases), its typed reason filter, pages past
the last, and an index it cannot write named with the way out."""

from __future__ import annotations

from pathlib import Path

import pytest

from metajudge.viewer import diff, queries
from metajudge.viewer.index import RunIndex, connect
from metajudge.viewer.paths import IndexRefused
from tests.browser.conftest import make_run


def test_word_differences_by_hand() -> None:
    left, right = diff.sides("the cat sat", "the dog sat")
    assert left == [[True, "the "], [False, "cat "], [True, "sat"]]
    assert right == [[True, "the "], [False, "dog "], [True, "sat"]]
    # a line break instead of a space is not a difference; words only one side has are marked
    left, right = diff.sides("a b\nc", "a b c d")
    assert left == [[True, "a b\nc"]]
    assert right == [[True, "a b c "], [False, "d"]]
    assert diff.sides("", "x") == ([], [[False, "x"]])


def test_long_texts_are_compared_on_their_head(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(diff, "MAX_WORDS", 3)
    left, right = diff.sides("a b c d e", "a x c d")
    assert left == [[True, "a "], [False, "b "], [True, "c "], [None, "d e"]]
    assert right == [[True, "a "], [False, "x "], [True, "c "], [None, "d"]]
    assert "".join(str(t) for _, t in left) == "a b c d e"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    run = make_run(tmp_path_factory.mktemp("reasons"))
    RunIndex(run).update()
    connection = connect(run / ".explorer.sqlite", readonly=True)
    yield connection
    connection.close()


def test_a_reason_filter_names_its_decision_type(db) -> None:  # type: ignore[no-untyped-def]
    rows = {r["prompt_id"]: r for r in queries.all_prompts(db, 1)["rows"]}
    for kind in ("actor", "judge"):
        for reason in {r[f"{kind}_reason"] for r in rows.values()} - {None}:
            listed = queries.prompt_list(db, 1, {"reason": f"{kind}:{reason}"})
            assert {r["prompt_id"] for r in listed["rows"]} == {
                p for p, r in rows.items() if r[f"{kind}_reason"] == reason}
    bare = queries.prompt_list(db, 1, {"reason": "pair"})  # an older link: either decision
    assert {r["prompt_id"] for r in bare["rows"]} == {
        p for p, r in rows.items() if "pair" in (r["actor_reason"], r["judge_reason"])}


def test_a_page_past_the_last_is_the_last(db) -> None:  # type: ignore[no-untyped-def]
    listed = queries.prompt_list(db, 1, {"page": "999", "size": "3"})
    assert (listed["page"], listed["total"], len(listed["rows"])) == (2, 4, 1)
    assert queries.prompt_list(db, 1, {"page": "999", "q": "no such text"})["page"] == 1


def test_an_index_that_cannot_be_written_names_the_way_out(tmp_path: Path) -> None:
    run = make_run(tmp_path, stages=("generate",))
    with pytest.raises(IndexRefused, match="--index"):
        RunIndex(run, tmp_path / "no such folder" / "index.sqlite").update()
