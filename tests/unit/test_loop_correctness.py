"""Loop correctness and resume safety (issue 16), on the instant backend and hand-made records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from metajudge.cli import main
from metajudge.jsonl import Appender
from metajudge.pairs.judge import ELO_PER_LOGIT, rate_judgments
from metajudge.records import (
    BackendFingerprint,
    Judgment,
    MetaJudgment,
    MetaSelection,
    Prompt,
    Provenance,
    Response,
    SamplingParams,
)
from metajudge.stages.generate import iteration_prompts, run_generate
from metajudge.stages.judge import run_judge
from metajudge.stages.meta_judge import hide_score_lines, run_meta_judge, select_responses
from metajudge.stages.pairs import run_pairs
from metajudge.store import (
    JUDGMENTS,
    META_JUDGMENTS,
    META_SELECTION,
    PAIR_DECISIONS,
    PAIRS,
    PROMPTS,
    RESPONSES,
    Store,
)

ROOT = Path(__file__).resolve().parents[2]
SETS = ["--set", "backend.kind=instant_backend:InstantBackend", "--set", "runner.retry_delay_s=0"]
PROVENANCE = Provenance(backend=BackendFingerprint(kind="test", model="m"),
                        params=SamplingParams(), seed=0, sample_index=0)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "benchmarks") + os.pathsep
            + os.environ.get("PYTHONPATH", "")}


def test_stage_commands_of_iteration_2_use_the_previous_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["generate", "--config", str(ROOT / "configs" / "tiny.yaml"), "--out", str(run),
                 "--limit", "2", "-k", "2", "--no-progress", *SETS]) == 0
    checkpoint = run / "iter_01" / "checkpoint"
    checkpoint.mkdir(parents=True)
    (checkpoint / "metajudge.json").write_text("{}")  # iteration 1 has finished training
    assert main(["generate", "--out", str(run), "--iteration", "2", "--no-progress"]) == 0
    assert main(["judge", str(run), "--iteration", "2", "--no-progress"]) == 0
    for name in ("responses", "judgments"):
        records = [json.loads(x) for x in (run / "iter_02" / f"{name}.jsonl").read_text()
                   .splitlines()]
        assert records and {r["provenance"]["backend"]["model"] for r in records} == {
            str(checkpoint)}, name
    first = json.loads((run / "iter_01" / "responses.jsonl").read_text().splitlines()[0])
    assert first["provenance"]["backend"]["model"] == "smollm2-135m-instruct"


def test_a_second_writer_is_refused_and_nothing_is_written_twice(tmp_path: Path) -> None:
    out = tmp_path / "run"
    command = [sys.executable, "-m", "metajudge.cli", "generate", "--config",
               str(ROOT / "configs" / "tiny.yaml"), "--out", str(out), "--limit", "10", "-k", "2",
               "--no-progress", *SETS, "--set", "runner.chunk_size=1"]
    slow = _env() | {"INSTANT_DELAY_S": "0.2"}
    first = subprocess.Popen(command, env=slow, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / ".lock").is_file() or not (out / ".lock").read_text().strip():
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)
    second = subprocess.run(command, env=slow, capture_output=True, text=True, timeout=120)
    assert second.returncode == 2 and "is being written by pid" in second.stderr
    assert first.wait(timeout=120) == 0
    ids = [json.loads(x)["id"] for x in (out / "iter_01" / "responses.jsonl").read_text()
           .splitlines()]
    assert len(ids) == len(set(ids)) == 20


def test_prompts_are_written_atomically(instant_run, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    store, _ = instant_run
    real = Appender.write
    written: list[object] = []

    def dies_after_two(self, record):  # type: ignore[no-untyped-def]
        if len(written) == 2:
            raise KeyboardInterrupt  # a kill in the middle of the sample
        written.append(record)
        real(self, record)

    monkeypatch.setattr(Appender, "write", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        iteration_prompts(store, 1)
    assert not store.path(PROMPTS, 1).exists()  # no partial sample to trust later
    monkeypatch.setattr(Appender, "write", real)
    assert len(iteration_prompts(store, 1)) == 4


def test_the_saved_selection_is_reused_after_judgments_change(instant_run) -> None:  # type: ignore[no-untyped-def]
    store, backend = instant_run
    run_generate(store, backend, 1, progress=False)
    run_judge(store, backend, 1, progress=False)
    run_meta_judge(store, backend, 1, progress=False)
    saved = store.path(META_SELECTION, 1).read_text()
    chosen = {s.response_id for s in store.read(META_SELECTION, 1)}
    # a later pass sees other scores (e.g. judgments retried since): the selection stays
    records = store.read(JUDGMENTS, 1)
    flipped = [r.model_copy(update={"score": 5.0 if r.index == 0 else 0.0})
               if r.response_id not in chosen else r.model_copy(update={"score": 3.0})
               for r in records]
    store.write_all(JUDGMENTS, flipped, 1)
    run_meta_judge(store, backend, 1, progress=False)
    assert store.path(META_SELECTION, 1).read_text() == saved
    metas = store.read(META_JUDGMENTS, 1)
    assert {m.response_id for m in metas} == chosen
    run_pairs(store, 1)
    judge_pairs = [p for p in store.read(PAIRS, 1) if p.pair_type == "judge"]
    assert all(p.id.removeprefix("judge:") in chosen for p in judge_pairs)


def test_select_responses_population_variance_two_scores_seeded_ties() -> None:
    groups = {"p": [("p#0", [1.0, 5.0]), ("p#1", [0.0, 2.0, 4.0]), ("p#2", [5.0])],
              "q": [("q#0", [2.0, 2.0]), ("q#1", [2.0, 2.0])], "r": [("r#0", [3.0])]}
    picks = {s.id: s for s in select_responses(groups, seed=0, iteration=1)}
    assert picks["p"].response_id == "p#0" and picks["p"].variance == 4.0  # ddof 0: 4 > 8/3
    assert picks["p"].scored_judgments == 2
    assert picks["q"].response_id in {"q#0", "q#1"} and "2 tied" in picks["q"].reason
    same = {s.id: s.response_id for s in select_responses(groups, seed=0, iteration=1)}
    assert same["q"] == picks["q"].response_id
    assert {select_responses(groups, seed=s, iteration=1)[1].response_id
            for s in range(20)} == {"q#0", "q#1"}
    assert picks["r"].response_id is None and "2 scored" in picks["r"].reason


def _hand_made_run(store: Store, sources: list[str]) -> None:
    """One prompt, one response, three judgments with the given score sources, and the
    meta-judge preferring judgment 0 over 1 over 2 in both orders."""
    store.write_all(PROMPTS, [Prompt(id="p", instruction="Name a colour.")], 1)
    store.write_all(RESPONSES, [Response(
        id="p#0", prompt_id="p", instruction="Name a colour.", text="Blue.",
        finish_reason="stop", prompt_tokens=1, completion_tokens=1,
        provenance=PROVENANCE)], 1)
    store.write_all(JUDGMENTS, [Judgment(
        id=f"p#0@j{n}", response_id="p#0", prompt_id="p", iteration=1, index=n,
        text=f"Judgment {n}." + ("\nScore: 4" if source == "parsed" else ""),
        score=[4.0, 2.0, 1.0][n], score_source=source,  # type: ignore[arg-type]
        finish_reason="stop", prompt_tokens=1, completion_tokens=1, provenance=PROVENANCE)
        for n, source in enumerate(sources)], 1)
    store.write_all(META_SELECTION, [MetaSelection(
        id="p", iteration=1, response_id="p#0", variance=1.5, scored_judgments=3,
        reason="largest score variance")], 1)
    order = {0: 2, 1: 1, 2: 0}
    store.write_all(META_JUDGMENTS, [MetaJudgment(
        id=f"p#0@m{a}-{b}", response_id="p#0", prompt_id="p", iteration=1, first=a,
        second=b, winner="first" if order[a] > order[b] else "second",
        winner_source="parsed", hide_scores=False, text="", prompt_tokens=1,
        completion_tokens=1, provenance=PROVENANCE)
        for a in range(3) for b in range(3) if a != b], 1)


def test_judge_pairs_never_choose_a_judgment_without_its_verdict(tmp_path: Path) -> None:
    from metajudge.config import load_config

    config = load_config(ROOT / "configs" / "tiny.yaml", ["pairs.judge_max_chosen_chars=[null]"])
    store = Store.open(tmp_path / "run", config)
    _hand_made_run(store, ["forced", "parsed", "parsed"])
    run_pairs(store, 1)
    pair = next(p for p in store.read(PAIRS, 1) if p.pair_type == "judge")
    assert pair.chosen_id == "p#0@j1"  # the top-rated j0 was forced: it may not be chosen
    assert pair.rejected_id == "p#0@j2"
    decision = next(d for d in store.read(PAIR_DECISIONS, 1) if d.pair_type == "judge")
    assert "1 of 3 judgments without their verdict in their text" in decision.reason
    # the scores are Elo points: the fit's logit ratings times 400/ln 10
    metas = store.read(META_JUDGMENTS, 1)
    frame = pd.DataFrame([(m.first, m.second, m.winner) for m in metas],
                         columns=["first", "second", "winner"])
    ratings = rate_judgments(frame)
    assert pair.chosen_score == pytest.approx(ratings[1] * ELO_PER_LOGIT)
    assert pair.rejected_score == pytest.approx(ratings[2] * ELO_PER_LOGIT)
    assert ratings[0] > ratings[1] > ratings[2]
    store.close()
    again = Store.open(tmp_path / "again", config)
    _hand_made_run(again, ["forced", "forced", "forced"])
    run_pairs(again, 1)
    assert not [p for p in again.read(PAIRS, 1) if p.pair_type == "judge"]
    decision = next(d for d in again.read(PAIR_DECISIONS, 1) if d.pair_type == "judge")
    assert decision.reason.startswith("no judgment with its verdict in its text")


def test_judge_pairs_use_the_template_the_judgments_were_made_with(instant_run,
                                                                   tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store, backend = instant_run
    run_generate(store, backend, 1, progress=False)
    run_judge(store, backend, 1, progress=False)
    run_meta_judge(store, backend, 1, progress=False)
    other = tmp_path / "other.yaml"
    other.write_text((ROOT / "metajudge/templates/judge_additive.yaml").read_text()
                     .replace("name: judge-additive-5pt", "name: another-judge")
                     .replace("Review the user's question", "LOOK AT the user's question"))
    store.config = store.config.model_copy(update={"judge": store.config.judge.model_copy(
        update={"template": str(other)})})
    run_pairs(store, 1)
    judge_pairs = [p for p in store.read(PAIRS, 1) if p.pair_type == "judge"]
    assert judge_pairs
    for pair in judge_pairs:
        assert pair.template == "judge-additive-5pt@1"
        assert pair.prompt[0].content.startswith("Review the user's question")


def test_hidden_scores_leave_no_total_behind() -> None:
    text = ("The response is relevant, so the first point is earned. It is clear: 4/5 overall."
            "\nI award it 4 points.\nTotal score: 4\nScore: 4")
    hidden = hide_score_lines(text)
    assert "4/5" not in hidden and "4 points" not in hidden and "Score" not in hidden
    assert "first point is earned" in hidden
    from metajudge.templates import load_template

    template = load_template("meta_judge_hidden")
    assert "consistent with its own reasoning" not in template.template
    assert "final scores have been removed" in template.template
    assert "score is consistent" in load_template("meta_judge").template.replace(
        "final score is consistent", "score is consistent")


def test_hide_scores_meta_judge_uses_the_template_without_scores(instant_run) -> None:  # type: ignore[no-untyped-def]
    store, backend = instant_run
    store.config = store.config.model_copy(update={"meta_judge": store.config.meta_judge
                                                   .model_copy(update={"hide_scores": True})})
    run_generate(store, backend, 1, progress=False)
    run_judge(store, backend, 1, progress=False)
    run_meta_judge(store, backend, 1, progress=False)
    metas = store.read(META_JUDGMENTS, 1)
    assert metas and {m.provenance.template for m in metas} == {
        "meta-judge-pairwise-hidden-scores@1"}
    assert all(m.hide_scores for m in metas)
