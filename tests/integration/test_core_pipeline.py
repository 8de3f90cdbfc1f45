"""generate -> judge -> meta-judge -> pairs on the embedded model, 4 prompts, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metajudge.cli import main
from metajudge.config import load_config
from metajudge.pairs.judge import ELO_PER_LOGIT, positional_weights, rate_judgments
from metajudge.stages.pairs import run_pairs
from metajudge.store import (
    DPO_PAIRS,
    JUDGMENTS,
    META_JUDGMENTS,
    META_SELECTION,
    PAIR_DECISIONS,
    PAIRS,
    RESPONSES,
    Store,
)

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
    store = Store.open(run, lock=False)
    responses = store.read(RESPONSES, 1)
    judgments = store.read(JUDGMENTS, 1)
    metas = store.read(META_JUDGMENTS, 1)
    selections = store.read(META_SELECTION, 1)
    decisions = store.read(PAIR_DECISIONS, 1)
    assert len(responses) == 12 and len(judgments) == 36
    assert {j.score_source for j in judgments} <= {"parsed", "completed", "forced", "failed"}
    for j in judgments:
        assert j.provenance.template == "judge-additive-5pt@1"
        assert (j.score is None) == (j.score_source == "failed")
        if j.score_source == "failed":
            assert j.parse_error
        if j.score_source in ("forced", "completed"):  # completed: on in tiny.yaml
            assert j.score_probs is not None and abs(sum(j.score_probs) - 1) < 1e-6
        assert (j.completed_text is not None) == (j.score_source == "completed")
        if j.prob_score is not None:
            assert 0 <= j.prob_score <= 5
    # forced read-out (on in tiny.yaml) leaves almost nothing unscored
    assert sum(j.score is not None for j in judgments) >= 30
    assert len(selections) == 4
    scores: dict[str, list[float]] = {}
    for j in judgments:
        if j.score is not None:
            scores.setdefault(j.response_id, []).append(j.score)
    omega = positional_weights([m.winner for m in metas])
    pairs_by_id = {p.id: p for p in store.read(PAIRS, 1)}
    for sel in selections:
        if sel.response_id is None:
            continue
        # the selected response has the largest population variance among its prompt's
        # responses with two scored judgments
        candidates = [r.id for r in responses if r.prompt_id == sel.id
                      and len(scores.get(r.id, [])) >= 2]
        assert sel.response_id in candidates
        assert sel.variance == pytest.approx(np.var(scores[sel.response_id]))
        assert all(np.var(scores[c]) <= sel.variance + 1e-12 for c in candidates)
        # every ordered pair of its scored judgments is compared, once
        scored = sorted(j.index for j in judgments
                        if j.response_id == sel.response_id and j.score is not None)
        mine = [m for m in metas if m.response_id == sel.response_id]
        shown = [(m.first, m.second) for m in mine]
        assert sorted(shown) == [(a, b) for a in scored for b in scored if a != b]
        assert all(m.provenance.swapped == (m.first > m.second) for m in mine)
        # a judge pair's chosen is the top-rated judgment with a parsed or completed verdict
        pair = pairs_by_id.get(f"judge:{sel.response_id}")
        if pair is not None and omega is not None:
            ratings = rate_judgments(pd.DataFrame(
                [(m.first, m.second, m.winner) for m in mine],
                columns=["first", "second", "winner"]), omega) * ELO_PER_LOGIT
            by_index = {j.index: j for j in judgments if j.response_id == sel.response_id}
            eligible = [n for n in ratings.index if by_index[n].score_source == "completed"
                        or by_index[n].score_source == "parsed"
                        and by_index[n].finish_reason == "stop"]
            best = max(eligible, key=lambda n: (ratings[n], -n))
            assert pair.chosen_id == by_index[best].id
            assert pair.chosen_score == pytest.approx(ratings[best])
            assert pair.rejected_id == by_index[int(ratings.idxmin())].id
    assert {d.id for d in decisions} == ({f"actor:{s.id}" for s in selections}
                                         | {f"judge:{s.id}" for s in selections})
    assert all(d.reason for d in decisions)
    rows = [json.loads(x) for x in store.path(DPO_PAIRS, 1).read_text().splitlines()]
    assert rows, "4 prompts x 3 responses should give at least one pair"
    # each side is its own record's text (a judgment's with its completed verdict, if any)
    texts = {r.id: r.text for r in responses} | {
        j.id: j.completed_text or j.text for j in judgments}
    for row in rows:
        assert row["prompt"][0]["role"] == "user"
        assert row["chosen"][0]["role"] == row["rejected"][0]["role"] == "assistant"
        assert row["pair_type"] in {"actor", "judge"}
        assert row["chosen_id"] != row["rejected_id"]
        assert row["chosen"][0]["content"] == texts[row["chosen_id"]]
        assert row["rejected"][0]["content"] == texts[row["rejected_id"]]
    assert "pairs iteration 1" in out

    # every stage resumes: a rerun makes no new record and the pairs come out the same
    before = store.path(DPO_PAIRS, 1).read_text()
    for stage in ("judge", "meta-judge"):
        assert main([stage, str(run), "--no-progress"]) == 0
        assert "0 new" in capsys.readouterr().out
    config_obj = load_config(run / "config.yaml")
    reopened = Store.open(run, config_obj)
    run_pairs(reopened, 1)
    reopened.close()
    assert store.path(DPO_PAIRS, 1).read_text() == before
