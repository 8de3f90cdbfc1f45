"""Parsers on realistic messy judge outputs, and templates that never evaluate user text."""

from __future__ import annotations

from pathlib import Path

import pytest

from metajudge.judging.parse import parse_score, parse_verdict, parse_winner
from metajudge.stages.meta_judge import hide_score_lines
from metajudge.templates import load_template, rubric_text


@pytest.mark.parametrize(
    ("text", "value", "error"),
    [
        ("The answer is relevant, so it earns Score: 1 at least. It also covers the basics "
         "(3 points) and is well organised.\nScore: 4", 4.0, None),
        ("Justification: decent.\n\nScore: 4/5", 4.0, None),
        ("Justification: decent.\n\nScore: **3**", 3.0, None),
        ("**Score:** 2", 2.0, None),
        ("Score: 4.5 points", 4.5, None),
        ("score: 0", 0.0, None),
        ("Score: 5.0\n", 5.0, None),
        ("Score: 4 out of 5", 4.0, None),
        ("Score: 6", None, "out of range: 6 not in [0, 5]"),
        ("Score: -1", None, "out of range: -1 not in [0, 5]"),
        ("Score: 9/10", None, "score given out of 10, not out of 5"),
        ("I'd rate this highly, four points.", None, "no Score: line"),
        ("Score: 3\nWait, let me reconsider.\nScore: N/A", None, "last Score: has no number"),
        ("", None, "no Score: line"),
    ],
)
def test_parse_score(text: str, value: float | None, error: str | None) -> None:
    parsed = parse_score(text)
    assert parsed.value == value
    assert parsed.error == error


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Judgment A follows the rubric.\nWinner: Judgment A", "A"),
        ("Winner: Judgment A\n...on reflection B is more accurate.\nWinner: Judgment B", "B"),
        ("**Winner: Judgment B**", "B"),
        ("Winner: judgement b", "B"),
        ("Winner: A", "A"),
        ("Both judgments are equally good.", None),
        ("Winner: Judgment C", None),
    ],
)
def test_parse_winner(text: str, value: str | None) -> None:
    assert parse_winner(text).value == value


def test_parse_verdict_takes_the_last_of_several() -> None:
    assert parse_verdict("[[A>>B]] hmm, no: [[A=B]]").value == "A=B"
    assert parse_verdict("[[B>A]]").value == "B>A"
    assert parse_verdict("[[A>>>B]]").value is None


def test_user_text_with_template_syntax_appears_literally() -> None:
    judge = load_template("judge")
    nasty = "Explain {{ response }} and {% for x in y %}{{ x }}{% endfor %} {{7*7}}"
    rendered = judge.render(instruction=nasty, response="{{ instruction }}")
    assert nasty in rendered
    assert "<response>\n{{ instruction }}\n</response>" in rendered
    assert "49" not in rendered


def test_templates_are_versioned_and_checked(tmp_path: Path) -> None:
    for role, ref in [("judge", "judge-additive-5pt@1"), ("meta_judge", "meta-judge-pairwise@1"),
                      ("pairwise", "pairwise-arena@1")]:
        assert load_template(role).ref == ref
    assert "Score: <points>" in load_template("judge").template
    assert "Winner: Judgment A" in load_template("meta_judge").template
    assert "[[A>>B]]" in load_template("pairwise").template
    assert "5th point" in rubric_text(load_template("judge"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nversion: 1\nvariables: [instruction]\noutput_format: s\n"
                   "template: 'Q: {{instruction}} R: {{response}}'\n")
    with pytest.raises(ValueError, match="placeholders"):
        load_template(bad)
    good = tmp_path / "mine.yaml"
    good.write_text("name: mine\nversion: 3\nvariables: [instruction, response]\n"
                    "output_format: s\ntemplate: 'Q: {{instruction}} R: {{ response }}'\n")
    assert load_template(good).render(instruction="a", response="b") == "Q: a R: b"
    with pytest.raises(ValueError, match="missing"):
        load_template(good).render(instruction="a")


def test_hide_scores_removes_score_lines_only() -> None:
    text = "It is relevant.\nScore: 3\nWell organised.\n**Score:** 4"
    assert hide_score_lines(text) == "It is relevant.\nWell organised.\n"
