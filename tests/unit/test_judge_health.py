"""Judge health (issue 23): each alarm fires on a hand-made collapsed iteration and stays quiet on
a healthy one, in summary.csv's columns and in the loop's check before training."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest

from metajudge.analysis.judge_health import (
    Thresholds,
    alarm_columns,
    alarms,
    health_columns,
    score_entropy,
    score_top_share,
)
from metajudge.cli import main
from metajudge.config import load_config
from metajudge.records import (
    BackendFingerprint,
    Judgment,
    MetaJudgment,
    Prompt,
    Provenance,
    Response,
    SamplingParams,
)
from metajudge.stages.summary import JudgeHealthAlarm, check_judge_health, run_table
from metajudge.store import JUDGMENTS, META_JUDGMENTS, PROMPTS, RESPONSES, Store

ROOT = Path(__file__).resolve().parents[2]
PROVENANCE = Provenance(backend=BackendFingerprint(kind="test", model="m"),
                        params=SamplingParams(), seed=0, sample_index=0)
#: a healthy iteration: scores spread over 1-5, 9 of 12 parsed, verdicts half first
HEALTHY = {"scores": [1, 2, 3, 4, 5, 3, 2, 4, 1, 5, 3, 2],
           "sources": ["parsed"] * 9 + ["completed", "forced", "failed"],
           "winners": ["first", "second"] * 3}
#: each alarm's pathology alone, the rest as in the healthy iteration
COLLAPSED = {
    "score_collapse": {**HEALTHY, "scores": [5] * 10 + [4, 4]},
    "first_position": {**HEALTHY, "winners": ["first"] * 6},
    "parse_drop": {**HEALTHY, "sources": ["parsed"] * 5 + ["completed"] * 4
                   + ["forced"] * 2 + ["failed"]},
}


def _write_iteration(store: Store, iteration: int, spec: dict) -> None:  # type: ignore[type-arg]
    """One prompt, 4 responses of 3 judgments each, and 6 meta-judgments of response 0."""
    store.write_all(PROMPTS, [Prompt(id="p", instruction="Name a colour.")], iteration)
    store.write_all(RESPONSES, [Response(
        id=f"p#{k}", prompt_id="p", instruction="Name a colour.", text="Blue." * (k + 1),
        finish_reason="stop", prompt_tokens=1, completion_tokens=1, iteration=iteration,
        provenance=PROVENANCE) for k in range(4)], iteration)
    judgments = []
    for n, (score, source) in enumerate(zip(spec["scores"], spec["sources"], strict=True)):
        judgments.append(Judgment(
            id=f"p#{n // 3}@j{n % 3}", response_id=f"p#{n // 3}", prompt_id="p",
            iteration=iteration, index=n % 3, text="Fine.",
            completed_text=f"Fine.\nScore: {score}" if source == "completed" else None,
            score=None if source == "failed" else float(score), score_source=source,
            finish_reason="stop", prompt_tokens=1, completion_tokens=1, provenance=PROVENANCE))
    store.write_all(JUDGMENTS, judgments, iteration)
    orders = [(a, b) for a in range(3) for b in range(3) if a != b]
    store.write_all(META_JUDGMENTS, [MetaJudgment(
        id=f"p#0@m{a}-{b}", response_id="p#0", prompt_id="p", iteration=iteration, first=a,
        second=b, winner=winner, winner_source="parsed", hide_scores=False, text="",
        prompt_tokens=1, completion_tokens=1, provenance=PROVENANCE)
        for (a, b), winner in zip(orders, spec["winners"], strict=True)], iteration)


def _run(tmp_path: Path, second: dict, overrides: list[str] | None = None) -> Store:  # type: ignore[type-arg]
    config = load_config(ROOT / "configs" / "tiny.yaml", overrides or [])
    store = Store.open(tmp_path / "run", config)
    _write_iteration(store, 1, HEALTHY)
    _write_iteration(store, 2, second)
    return store


@pytest.mark.parametrize("alarm", sorted(COLLAPSED))
def test_each_alarm_fires_on_its_collapsed_iteration_and_only_there(
        tmp_path: Path, alarm: str, caplog: pytest.LogCaptureFixture) -> None:
    store = _run(tmp_path, COLLAPSED[alarm])
    table = run_table(store.root)
    healthy, collapsed = table.loc[1], table.loc[2]
    for name in ("score_collapse", "first_position", "parse_drop"):
        assert not healthy[f"alarm_{name}"]
        assert bool(collapsed[f"alarm_{name}"]) == (name == alarm)
    assert healthy["alarms"] == "" and collapsed["alarms"] == alarm
    assert healthy["share_parsed"] == 0.75 and healthy["share_completed"] == 1 / 12
    assert healthy["meta_first_share"] == 0.5
    # the loop's check warns and goes on; with stop_on_alarm it stops, naming the alarm
    with caplog.at_level(logging.WARNING):
        assert check_judge_health(store, 1) == {}
        assert not caplog.records
        assert list(check_judge_health(store, 2)) == [alarm]
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert f"alarm {alarm}" in caplog.records[0].getMessage()
    store.close()
    stopping = _run(tmp_path / "stop", COLLAPSED[alarm], ["judge_health.stop_on_alarm=true"])
    assert check_judge_health(stopping, 1) == {}
    with pytest.raises(JudgeHealthAlarm, match=f"alarm {alarm} .*stopped before training"):
        check_judge_health(stopping, 2)
    stopping.close()


def test_thresholds_come_from_the_config(tmp_path: Path) -> None:
    store = _run(tmp_path, COLLAPSED["score_collapse"],
                 ["judge_health.max_top_score_share=0.95"])
    table = run_table(store.root)
    assert table.loc[2, "score_top_share"] == 10 / 11  # the failed judgment has no score
    assert table.loc[2, "alarms"] == ""  # 0.909 <= 0.95
    store.close()


def test_the_loop_stops_before_training_naming_the_alarm(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # the instant backend
    run = tmp_path / "run"
    sets = ["backend.kind=instant_backend:InstantBackend", "runner.retry_delay_s=0",
            "prompts.per_iteration=3", "generation.samples_per_prompt=2",
            "judge.judgments_per_response=2", "judge_health.stop_on_alarm=true",
            "judge_health.max_top_score_share=0.01"]  # one score always takes more
    args = ["run", str(ROOT / "configs" / "tiny.yaml"), "--out", str(run), "--no-progress"]
    assert main(args + [a for s in sets for a in ("--set", s)]) == 2
    err = capsys.readouterr().err
    assert "judge-health alarm score_collapse" in err and "stopped before training" in err
    assert (run / "iter_01" / "dpo_pairs.jsonl").is_file()
    assert not (run / "iter_01" / "checkpoint").exists()
    assert not (run / "iter_01" / "train_metrics.jsonl").exists()
    # the stopped iteration's health and its alarm are in summary.csv already
    import pandas as pd

    row = pd.read_csv(run / "summary.csv").set_index("iteration").loc[1]
    assert row["score_top_share"] > 0.01 and "score_collapse" in str(row["alarms"])


def test_pure_functions_on_edge_cases() -> None:
    assert math.isnan(score_top_share([None, math.nan]))
    assert math.isnan(score_entropy([]))
    assert score_entropy([1, 1, 2, 2]) == 1.0
    row = health_columns([], [])
    assert math.isnan(row["share_parsed"])
    # missing values (no meta-judge verdicts, a first iteration) raise nothing
    assert alarms({"score_top_share": math.nan, "meta_first_share": math.nan,
                   "share_parsed": 0.0}, None, Thresholds()) == {}
    # a fall within the tolerance is quiet; past it, the alarm fires
    assert alarms({"share_parsed": 0.55}, {"share_parsed": 0.6}, Thresholds()) == {}
    assert "parse_drop" in alarms({"share_parsed": 0.54}, {"share_parsed": 0.6}, Thresholds())
    assert "first_position" in alarms({"meta_first_share": 0.19}, None, Thresholds())
    assert alarms({"meta_first_share": 0.8}, None, Thresholds()) == {}
    assert alarm_columns({}) == {"alarm_score_collapse": False, "alarm_first_position": False,
                                 "alarm_parse_drop": False, "alarms": ""}
    with pytest.raises(ValueError, match="unknown score sources"):
        health_columns([1], ["guessed"])
