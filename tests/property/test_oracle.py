"""The property test's oracle can fail: each invariant, on a real run directory made by the CLI
and then broken by hand in one way, names what is wrong (and says nothing on the intact one)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.property import oracle
from tests.property.test_run_invariants import Command, RunInvariants, _seed_revision


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """generate, judge, meta-judge and pairs of iteration 1 on the weights-named backend."""
    machine = RunInvariants()
    try:
        machine.start()
        for stage in ("judge", "meta-judge", "pairs"):
            machine.step(Command(stage))
        target = tmp_path_factory.mktemp("made") / "run"
        shutil.copytree(machine.run, target)
    finally:
        machine.teardown()
    return target


@pytest.fixture
def run(made: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(made, copy)
    return copy


@pytest.fixture(scope="module")
def seed() -> oracle.Seed:
    return oracle.Seed(_seed_revision())


def _rewrite(path: Path, change: Callable[[list[dict]], list[dict]]) -> None:
    rows = oracle.lines(path)
    path.write_text("".join(json.dumps(r) + "\n" for r in change(rows)))


def _problems(run: Path, seed: oracle.Seed) -> list[str]:
    return (oracle.integrity(run) + oracle.chain(run, 1, "pairs", seed)
            + oracle.manifest_counts(run, 1, "judge") + oracle.manifest_counts(run, 1, "pairs"))


def test_the_intact_run_breaks_nothing(run: Path, seed: oracle.Seed) -> None:
    assert _problems(run, seed) == []


def _judgment(rows: list[dict], **changes: object) -> list[dict]:
    rows[0] = {**rows[0], **changes}
    return rows


CASES = {
    "a judgment twice": (
        "judgments.jsonl", lambda rows: rows + rows[:1], "ids twice"),
    "a judgment by another model": (
        "judgments.jsonl", lambda rows: _judgment(rows, provenance={
            **rows[0]["provenance"], "backend": {**rows[0]["provenance"]["backend"],
                                                 "revision": "0123456789abcdef"}}),
        "made by another model than M_1 (1"),
    "a judgment under other sampling parameters": (
        "judgments.jsonl", lambda rows: _judgment(rows, provenance={
            **rows[0]["provenance"], "params": {**rows[0]["provenance"]["params"],
                                                "temperature": 0.1}}),
        "other sampling parameters"),
    "a response's judgments missing": (
        "judgments.jsonl", lambda rows: [r for r in rows
                                         if r["response_id"] != rows[0]["response_id"]],
        "not judgments 0..2"),
    "judgments of a response text remade since": (
        "responses.jsonl", lambda rows: _judgment(rows, text=rows[0]["text"] + " (remade)"),
        "judgments of a response text the current responses.jsonl does not hold"),
    "a training row that is no current pair": (
        "dpo_pairs.jsonl", lambda rows: _judgment(rows, chosen=[
            *rows[0]["chosen"][:-1], {**rows[0]["chosen"][-1], "content": "made up"}]),
        "is no current pair"),
    "a pair of a response no longer held": (
        "pairs.jsonl", lambda rows: _judgment(rows, chosen_id="nobody#9"),
        "not made of current"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_broken_record_is_named(run: Path, seed: oracle.Seed, case: str) -> None:
    name, change, words = CASES[case]
    _rewrite(run / "iter_01" / name, change)
    problems = _problems(run, seed)
    assert any(words in p for p in problems), problems


def test_an_input_remade_since_is_named(run: Path, seed: oracle.Seed) -> None:
    path = run / "iter_01" / "responses.settings.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "generation": "another"}))
    assert any("made from responses.jsonl as" in p for p in _problems(run, seed))


def test_manifest_counts_other_than_the_files_are_named(run: Path) -> None:
    path = run / "manifest.json"
    data = json.loads(path.read_text())
    data["stages"]["iter_01/judge"]["completed"] += 27
    data["stages"]["iter_01/pairs"]["actor_pairs"] += 1
    path.write_text(json.dumps(data))
    problems = oracle.manifest_counts(run, 1, "judge") + oracle.manifest_counts(run, 1, "pairs")
    assert len(problems) == 2 and "more than the 27" in problems[0], problems


def test_a_lost_record_and_an_overwritten_copy_are_named(run: Path) -> None:
    copy = run / "iter_01" / "replaced" / "judgments-1" / "judgments.jsonl"
    copy.parent.mkdir(parents=True)
    shutil.copy(run / "iter_01" / "judgments.jsonl", copy)
    before = oracle.Snapshot.take(run)
    assert oracle.lost_records(before, run) == []
    _rewrite(run / "iter_01" / "judgments.jsonl", lambda rows: rows[1:])
    copy.write_text("")
    problems = oracle.lost_records(before, run)
    assert len(problems) == 2 and "overwritten" in problems[0] and "gone" in problems[1]


def test_a_checkpoint_not_trained_from_the_current_rows_is_named(
        run: Path, seed: oracle.Seed) -> None:
    folder = run / "iter_01" / "checkpoint"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    pairs = run / "iter_01" / "dpo_pairs.jsonl"
    marker = {"weights_sha256": oracle.weights_digest(folder), "made_from": {
        "model": f"llama3-mini@{seed.seed_revision}", "dpo_pairs": oracle.sha16(pairs)}}
    (folder / "metajudge.json").write_text(json.dumps(marker))
    assert oracle.chain(run, 1, "train", seed) == []
    assert oracle.model_revision(run, 2, seed) == marker["weights_sha256"]
    _rewrite(pairs, lambda rows: rows[1:])
    problems = oracle.chain(run, 1, "train", seed)
    assert any("trained on other rows" in p for p in problems), problems
