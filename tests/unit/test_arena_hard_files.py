"""Arena-Hard files with a game missing still load in arena-hard-auto v0.1's own code (issue 22
item 6): the tool reads ``games[0]`` and ``games[1]`` of every judgment row, so a missing game is
written in its place with a null score, as the tool writes a game without a verdict."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from metajudge.config import BackendConfig
from metajudge.evaluation.arena_hard import score_arena_hard
from metajudge.evaluation.benchmarks import arena_hard_questions
from metajudge.evaluation.config import EvalConfig
from metajudge.evaluation.records import EvalOutput, PairwiseGame
from metajudge.records import BackendFingerprint, Provenance, SamplingParams
from metajudge.store import Store, evaluation_file

#: the tool's show_result.py, utils.py and utils_math.py, unchanged (tests/data/PROVENANCE.md)
TOOL = Path(__file__).resolve().parents[1] / "data" / "arena_hard_auto_v0.1"
PROVENANCE = Provenance(backend=BackendFingerprint(kind="test", model="judge-model"),
                        params=SamplingParams(), seed=0, sample_index=0)
#: the tool's own battle builder, run in the folder layout its README gives
BATTLES = """
import sys
from show_result import get_battles_from_judgment
battles = get_battles_from_judgment("arena-hard-v0.1", "judge-model", style_control=True)
battles[["question_id", "model_a", "model_b", "winner"]].to_json(sys.argv[1], orient="records",
                                                                  lines=True)
"""


def _game(uid: str, number: int, verdict: str | None) -> PairwiseGame:
    return PairwiseGame(id=f"{uid}@{number}", item_id=uid, model="mine", baseline="gpt-4-0314",
                        model_position="B" if number == 1 else "A", verdict=verdict,
                        verdict_source="parsed" if verdict else "failed", judgment="[[A>B]]",
                        prompt_tokens=1, completion_tokens=1, provenance=PROVENANCE)


def test_a_missing_game_is_a_null_game_the_official_tool_reads(tmp_path: Path) -> None:
    config = EvalConfig(harness="arena-hard", name="mine", model=BackendConfig())
    store = Store.open(tmp_path / "mine", config)
    questions = arena_hard_questions()[:3]
    store.write_all(evaluation_file("outputs"), [EvalOutput(
        id=q.uid, instruction=q.prompt, output=f"**Answer {k}.** " + "word " * (10 + k),
        generator="mine", finish_reason="stop", prompt_tokens=1, completion_tokens=1,
        provenance=PROVENANCE) for k, q in enumerate(questions)])
    a, b, c = (q.uid for q in questions)
    # a: both games; b: game 2 lost (say, a context-length failure); c: no game at all
    store.write_all(evaluation_file("games"), [
        _game(a, 1, "A>>B"), _game(a, 2, "A>B"), _game(b, 1, "B>A")])
    metrics = score_arena_hard(store, limit=3, bootstrap_rounds=0)
    store.close()
    assert metrics["games"] == 3 and metrics["missing_games"] == 3

    rows = [json.loads(x) for x in (tmp_path / "mine" / "model_judgment" / "judge-model" /
                                    "mine.jsonl").read_text().splitlines()]
    assert [len(r["games"]) for r in rows] == [2, 2, 2]
    assert [g["score"] for r in rows for g in r["games"]] == ["A>>B", "A>B", "B>A", None, None,
                                                              None]
    # the tool, in the layout its README gives: data/arena-hard-v0.1 -> the harness folder
    (tmp_path / "tool" / "data").mkdir(parents=True)
    (tmp_path / "tool" / "data" / "arena-hard-v0.1").symlink_to(tmp_path / "mine")
    out = tmp_path / "battles.jsonl"
    done = subprocess.run([sys.executable, "-c", BATTLES, str(out)], cwd=tmp_path / "tool",
                          env={**os.environ, "PYTHONPATH": str(TOOL)}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    theirs = pd.read_json(out, lines=True, dtype={"question_id": str})
    ours = pd.read_json(tmp_path / "mine" / "battles.jsonl", lines=True,
                        dtype={"question_id": str})
    columns = ["question_id", "model_a", "model_b", "winner"]
    assert theirs[columns].values.tolist() == ours[columns].values.tolist()
    assert theirs["winner"].tolist() == ["model_a"] * 3 + ["model_b", "model_b"]
