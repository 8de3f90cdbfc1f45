"""generate -> judge -> meta-judge -> pairs on the embedded model, 4 prompts, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metajudge.cli import main
from metajudge.config import load_config
from metajudge.pairs.build import run_pairs
from metajudge.records import Judgment, MetaJudgment, MetaSelection, PairDecision, Response
from metajudge.store import RunStore

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = ["generation.samples_per_prompt=3", "generation.max_tokens=48",
            "judge.judgments_per_response=3", "judge.max_tokens=48",
            "meta_judge.max_tokens=32", "prompts.per_iteration=4"]


def _sets(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


@pytest.mark.timeout(900)
def test_core_stages_end_to_end(tmp_path: Path, embedded_model_dir: str,
                                capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    config = str(ROOT / "configs" / "tiny.yaml")
    assert main(["generate", "--config", config, "--no-progress", "--out", str(run),
                 *_sets(SETTINGS)]) == 0
    for stage in ("judge", "meta-judge", "pairs"):
        assert main([stage, str(run), "--no-progress"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    store = RunStore.open(run)
    responses = store.read(1, "responses", Response)
    judgments = store.read(1, "judgments", Judgment)
    metas = store.read(1, "meta_judgments", MetaJudgment)
    selections = store.read(1, "meta_selection", MetaSelection)
    decisions = store.read(1, "pair_decisions", PairDecision)
    assert len(responses) == 12 and len(judgments) == 36
    assert {j.score_source for j in judgments} <= {"parsed", "forced", "failed"}
    for j in judgments:
        assert j.provenance.template == "judge-additive-5pt@1"
        assert (j.score is None) == (j.score_source == "failed")
        if j.score_source == "failed":
            assert j.parse_error
        if j.score_source == "forced":
            assert j.score_probs is not None and abs(sum(j.score_probs) - 1) < 1e-6
        if j.prob_score is not None:
            assert 0 <= j.prob_score <= 5
    # forced read-out (on in tiny.yaml) leaves almost nothing unscored
    assert sum(j.score is not None for j in judgments) >= 30
    assert len(selections) == 4
    for sel in selections:
        if sel.response_id is None:
            continue
        mine = [m for m in metas if m.response_id == sel.response_id]
        pairs = {(m.first, m.second) for m in mine}
        assert all((b, a) in pairs for a, b in pairs)  # both orders of every pair
        assert all(m.provenance.swapped == (m.first > m.second) for m in mine)
    assert {d.id for d in decisions} == ({f"actor:{s.id}" for s in selections}
                                         | {f"judge:{s.id}" for s in selections})
    assert all(d.reason for d in decisions)
    rows = [json.loads(x) for x in store.path(1, "dpo_pairs").read_text().splitlines()]
    assert rows, "4 prompts x 3 responses should give at least one pair"
    for row in rows:
        assert row["prompt"][0]["role"] == "user"
        assert row["chosen"][0]["role"] == row["rejected"][0]["role"] == "assistant"
        assert row["pair_type"] in {"actor", "judge"}
        assert row["chosen"][0]["content"] != row["rejected"][0]["content"] or (
            row["chosen_id"] != row["rejected_id"])
    assert "pairs iteration 1" in out

    # every stage resumes: a rerun makes no new record and the pairs come out the same
    before = store.path(1, "dpo_pairs").read_text()
    for stage in ("judge", "meta-judge"):
        assert main([stage, str(run), "--no-progress"]) == 0
        assert "0 new" in capsys.readouterr().out
    config_obj = load_config(run / "config.yaml")
    run_pairs(RunStore.open(run, config_obj), 1)
    assert store.path(1, "dpo_pairs").read_text() == before
