"""Bad input stops with file, line and field; partial tails from kills are dropped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metajudge.cli import main
from metajudge.jsonl import Appender, InputError, read_records
from metajudge.prompts import bundled_pool_path, draw_for_iteration, load_prompts
from metajudge.records import Prompt


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("content", "line", "field", "problem"),
    [
        (b'{"instruction": "ok"}\n{"instruction": "ok2"\n', 2, None, "not valid JSON"),
        (b'{"instruction": "ok"}\n{"id": "b"}\n', 2, "instruction", "missing"),
        (b'{"instruction": 42}\n', 1, "instruction", "valid string"),
        (b'{"instruction": "a"}\n\n{"instruction": "   "}\n', 3, "instruction", "empty"),
        (b'{"instruction": "a"}\n{"instruction": "caf\xe9"}\n', 2, None, "not UTF-8"),
        (b'["instruction"]\n', 1, None, "JSON object"),
        (b'{"id": 1, "instruction": "a"}\n{"id": "1", "instruction": "b"}\n', 2, "id",
         "duplicate"),
    ],
)
def test_bad_prompt_files_name_file_line_and_field(
    tmp_path: Path, content: bytes, line: int, field: str | None, problem: str
) -> None:
    path = _write(tmp_path, content)
    with pytest.raises(InputError) as info:
        load_prompts(path)
    err = info.value
    assert (err.path, err.line, err.field) == (str(path), line, field)
    assert problem in str(err)
    assert str(path) in str(err) and f"line {line}" in str(err)


def test_cli_rejects_bad_input_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture
                                                  ) -> None:
    path = _write(tmp_path, b'{"instruction": "fine"}\n{"instruction": ""}\n')
    out = tmp_path / "run"
    assert main(["generate", "--prompts", str(path), "--limit", "1", "--out", str(out)]) == 2
    assert "line 2" in capsys.readouterr().err
    assert not out.exists()


def test_prompt_ids_default_to_content_hash(tmp_path: Path) -> None:
    path = _write(tmp_path, b'{"instruction": "a"}\n{"instruction": "b", "extra": 1}\n')
    first, second = load_prompts(path), load_prompts(path)
    assert [p.id for p in first] == [p.id for p in second]
    assert len({p.id for p in first}) == 2


def test_bundled_pool_is_shipped_and_valid() -> None:
    pool = load_prompts("bundled")
    assert len(pool) == 4995
    assert bundled_pool_path().with_name("PROVENANCE.md").is_file()


def test_draws_are_disjoint_and_reproducible() -> None:
    pool = [Prompt(id=str(i), instruction=f"q{i}") for i in range(30)]
    a = draw_for_iteration(pool, 1, 10, seed=3)
    b = draw_for_iteration(pool, 2, 10, seed=3)
    assert a == draw_for_iteration(pool, 1, 10, seed=3)
    assert not {p.id for p in a} & {p.id for p in b}
    assert a != draw_for_iteration(pool, 1, 10, seed=4)
    with pytest.raises(ValueError, match="pool"):
        draw_for_iteration(pool, 4, 10, seed=3)


def test_partial_last_line_is_dropped_and_repaired(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "x.jsonl"
    with Appender(path) as out:
        out.write(Prompt(id="a", instruction="one"))
        out.write(Prompt(id="b", instruction="two"))
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"id": "c", "instru')  # what a kill mid-write leaves
    assert [p.id for p in read_records(path, Prompt)] == ["a", "b"]
    assert "partial last line" in caplog.text
    assert path.read_bytes().endswith(b'"instru')  # not repaired unless asked
    assert [p.id for p in read_records(path, Prompt, repair_tail=True)] == ["a", "b"]
    assert path.read_bytes() == whole
    with Appender(path) as out:  # appends start on a clean line
        out.write(Prompt(id="c", instruction="three"))
    assert [p.id for p in read_records(path, Prompt)] == ["a", "b", "c"]


def test_corrupt_line_inside_a_stage_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"id": "a", "instruction": "x"}) + "\n{oops}\n"
                    + json.dumps({"id": "b", "instruction": "y"}) + "\n")
    with pytest.raises(InputError, match="line 2"):
        read_records(path, Prompt)
