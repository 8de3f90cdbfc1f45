"""The three harnesses on the embedded model (model and judge at once), small --limit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from metajudge.config import BackendConfig
from metajudge.evaluation.alpaca_eval import run_alpaca_eval
from metajudge.evaluation.arena_hard import run_arena_hard
from metajudge.evaluation.benchmarks import alpaca_eval_items, arena_hard_questions
from metajudge.evaluation.config import EvalConfig, EvalJudging, EvalSampling
from metajudge.evaluation.judge_eval import run_judge_eval
from metajudge.evaluation.pairwise import hashed_position
from metajudge.store import Store

SHORT = {"generation": EvalSampling(max_tokens=16), "judging": EvalJudging(max_tokens=24)}
#: the columns alpaca_eval reads from annotations (alpaca_eval.metrics.glm_winrate)
ALPACA_EVAL_COLUMNS = {"instruction", "output_1", "generator_1", "output_2", "generator_2",
                       "annotator", "preference"}


def workdir(path: Path, harness: str) -> Store:
    config = EvalConfig(harness=harness, name="smollm2", model=BackendConfig(), **SHORT)
    return Store.open(path, config)


@pytest.mark.timeout(600)
def test_alpaca_eval_files_are_in_alpaca_eval_layout(tmp_path: Path,
                                                     transformers_backend) -> None:
    wd = workdir(tmp_path / "ae", "alpaca-eval")
    metrics = run_alpaca_eval(wd, transformers_backend, transformers_backend, limit=3,
                              bootstrap_rounds=20, progress=False)
    outputs = json.loads((wd.root / "model_outputs.json").read_text())
    assert [set(o) for o in outputs] == [{"instruction", "output", "generator", "dataset"}] * 3
    assert [o["instruction"] for o in outputs] == [i.instruction for i in alpaca_eval_items()[:3]]
    annotations = pd.read_json(wd.root / "annotations.json")  # as alpaca_eval loads it
    assert ALPACA_EVAL_COLUMNS <= set(annotations.columns) and len(annotations) == 3
    assert set(annotations["verdict_source"]) <= {"parsed", "follow_up", "forced", "failed"}
    assert set(annotations["generator_1"]) == {"gpt4_1106_preview"}
    assert annotations["preference"].dropna().isin([1.0, 1.5, 2.0]).all()
    for row, item in zip(annotations.itertuples(), alpaca_eval_items()[:3], strict=True):
        assert row.output_1 == item.reference
        assert row.model_position == hashed_position(item.instruction, row.output_2,
                                                     item.reference)
    assert metrics["n_total"] + metrics["no_verdict"] == 3
    stages = json.loads((wd.root / "manifest.json").read_text())["stages"]
    assert stages["alpaca-eval judge"]["generated_tokens"] > 0


@pytest.mark.timeout(600)
def test_arena_hard_files_are_in_arena_hard_v01_layout(tmp_path: Path,
                                                       transformers_backend) -> None:
    wd = workdir(tmp_path / "ah", "arena-hard")
    metrics = run_arena_hard(wd, transformers_backend, transformers_backend, limit=1,
                             bootstrap_rounds=10, progress=False)
    # what arena-hard-auto v0.1's show_result.py and add_markdown_info.py read
    answers = [json.loads(line) for line in
               (wd.root / "model_answer" / "smollm2.jsonl").read_text().splitlines()]
    assert len(answers) == 1
    for answer in answers:
        assert {"question_id", "answer_id", "model_id", "choices", "tstamp",
                "conv_metadata"} <= set(answer)
        turn = answer["choices"][0]["turns"][0]
        assert isinstance(turn["content"], str) and turn["token_len"] > 0
        meta = answer["conv_metadata"]
        assert meta["token_len"] == turn["token_len"]
        assert set(meta["header_count"]) == {f"h{k}" for k in range(1, 7)}
        assert set(meta["list_count"]) == {"ordered", "unordered"}
        assert set(meta["bold_count"]) == {"**", "__"}
    baseline = (wd.root / "model_answer" / "gpt-4-0314.jsonl").read_text().splitlines()
    assert len(baseline) == 500
    judgment_files = list((wd.root / "model_judgment").glob("*/smollm2.jsonl"))
    assert len(judgment_files) == 1
    judgments = [json.loads(line) for line in judgment_files[0].read_text().splitlines()]
    for judgment in judgments:
        assert {"question_id", "model", "judge", "games"} <= set(judgment)
        assert len(judgment["games"]) == 2
        for g in judgment["games"]:
            assert isinstance(g["judgment"], str) and isinstance(g["user_prompt"], str)
            assert g["score"] is None or g["score"] in {"A>>B", "A>B", "A=B", "B>A", "B>>A"}
        first = judgment["games"][0]["user_prompt"]  # game 1 shows the baseline as A
        start = arena_hard_questions()[0].baseline_answer[:40]
        assert first.index("<answer_a>") < first.index(start) < first.index("<answer_b>")
    battles = [json.loads(line) for line in (wd.root / "battles.jsonl").read_text()
               .splitlines()]
    assert all(b["model_a"] == "gpt-4-0314" and b["model_b"] == "smollm2" for b in battles)
    assert metrics["games"] == 2 and metrics["layout"] == "v0.1"
    assert metrics["score"] is None or 0 <= metrics["score"] <= 100


@pytest.mark.timeout(600)
def test_judge_evaluation_scores_and_pairs(tmp_path: Path, transformers_backend) -> None:
    wd = workdir(tmp_path / "je", "judge")
    metrics = run_judge_eval(wd, transformers_backend, limit=1, bootstrap_rounds=10,
                             progress=False)
    assert metrics["replies"] == metrics["scored"] + metrics["unparsed_scores"]
    # transformers gives log-probabilities: every scored reply has a probability-weighted score
    scores = [json.loads(line) for line in (wd.root / "scores.jsonl").read_text().splitlines()]
    for s in scores:
        if s["score_source"] == "forced":  # the read-out's distribution gives both
            assert 0 <= s["prob_score"] <= 5
        if s["prob_score"] is not None:
            assert 0 <= s["prob_score"] <= 5 and s["score"] is not None
    assert metrics["weighted_scored"] == sum(s["prob_score"] is not None for s in scores)
    assert metrics["weighted_scored"] > 0 and "weighted_agreement" in metrics
    assert metrics["pair_games"] == 2 * metrics["pairs"]  # every ranked pair in both orders
    assert 0 <= metrics["position_consistency"] <= 1


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.timeout(900)
def test_alpaca_eval_resumes_after_kill_9(tmp_path: Path, embedded_model_dir: str) -> None:
    out = tmp_path / "ae"
    cmd = [sys.executable, "-m", "metajudge.cli", "eval", "alpaca-eval", "--model",
           "smollm2-135m-instruct", "--limit", "4", "--out", str(out), "--no-progress",
           "--bootstrap", "10", "--set", "generation.max_tokens=24",
           "--set", "judging.max_tokens=16", "--set", "model.transformers.batch_size=1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outputs = out / "outputs.jsonl"
    deadline = time.monotonic() + 400
    while len(_lines(outputs)) < 1 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = _lines(outputs)
    assert 1 <= len(kept) < 4, "the kill should land while answers are being written"
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    lines = _lines(outputs)
    assert lines[:len(kept)] == kept  # finished answers kept, byte for byte
    ids = [json.loads(line)["id"] for line in lines]
    assert len(ids) == 4 and not [i for i, n in Counter(ids).items() if n > 1]
    annotations = pd.read_json(out / "annotations.json")
    assert len(annotations) == 4
    games = [json.loads(line)["id"] for line in _lines(out / "annotations.jsonl")]
    assert sorted(games) == sorted(ids)
