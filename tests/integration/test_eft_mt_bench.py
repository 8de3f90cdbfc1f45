"""The paper's remaining parts on the embedded model (issue 18): the EFT seed stage, the MT-Bench
harness in FastChat's layouts, and iteration 0 in a run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest

from metajudge.cli import main
from metajudge.config import load_config
from metajudge.training.checkpoint import file_digest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
EFT = ["--set", "eft.use_forced=true", "--set", "eft.judgments_per_reply=2",
       "--set", "eft.max_tokens=32", "--set", "eft.global_batch_size=2",
       "--set", "eft.per_device_batch_size=1", "--set", "eft.max_length=1024"]


@pytest.mark.timeout(900)
def test_eft_judges_filters_and_trains_a_checkpoint_that_loads(
        tmp_path: Path, embedded_model_dir: str, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "eft"
    args = ["eft", "--ranked", str(DATA / "oasst_ranked_later_turns.jsonl"), "--out", str(out),
            "--config", str(ROOT / "configs" / "tiny.yaml"), "--limit", "4", "--no-progress",
            *EFT]
    assert main(args) == 0
    judgments = [json.loads(x) for x in (out / "eft_judgments.jsonl").read_text().splitlines()]
    rows = [json.loads(x) for x in (DATA / "oasst_ranked_later_turns.jsonl").read_text()
            .splitlines()][:4]
    ranked = sum(sum(r["rank"] is not None for r in row["replies"]) for row in rows)
    assert len(judgments) == 2 * ranked  # N judgments of every ranked reply
    decisions = [json.loads(x) for x in (out / "eft_decisions.jsonl").read_text().splitlines()]
    assert {d["id"] for d in decisions} == {r["prompt_id"] for r in rows}
    for d in decisions:  # the filter: kept exactly when the judge orders the replies as humans
        means, ranks = d["judge_means"], d["human_ranks"]
        agree = None not in means and all(
            (means[a] > means[b]) == (ranks[a] < ranks[b])
            for a in range(len(ranks)) for b in range(len(ranks)) if ranks[a] != ranks[b])
        assert d["kept"] == agree, d
    examples = [json.loads(x) for x in (out / "eft_sft.jsonl").read_text().splitlines()]
    kept = {d["id"] for d in decisions if d["kept"]}
    by_id = {j["id"]: j for j in judgments}
    assert all(by_id[e["id"]]["prompt_id"] in kept for e in examples)
    assert all(e["completion"][0]["content"].rstrip().endswith(f"Score: {e['score']:g}")
               or by_id[e["id"]]["score_source"] == "parsed" for e in examples)
    manifest = json.loads((out / "manifest.json").read_text())["stages"]["iter_00/eft"]
    assert manifest["kept"] == len(kept) and manifest["examples"] == len(examples)
    checkpoint = out / "checkpoint"
    from metajudge.backends.transformers_local import TransformersBackend
    from metajudge.config import BackendConfig
    from metajudge.records import GenerationRequest, Message, SamplingParams

    with TransformersBackend(BackendConfig(model=str(checkpoint))) as backend:
        result = backend.generate([GenerationRequest(
            id="x", messages=(Message(role="user", content="Name a colour."),),
            params=SamplingParams(max_tokens=8))])[0]
    assert result.text.strip()
    # a rerun keeps everything: no new judgment, the same checkpoint
    stamp = (checkpoint / "metajudge.json").stat().st_mtime_ns
    assert main(args) == 0
    assert (checkpoint / "metajudge.json").stat().st_mtime_ns == stamp
    # trained from other examples or settings than now, it is moved aside and trained again
    made = json.loads((checkpoint / "metajudge.json").read_text())["made_from"]
    assert made["eft_sft.jsonl"] == file_digest(out / "eft_sft.jsonl")
    with caplog.at_level(logging.WARNING, logger="metajudge.training.sft"):
        assert main([*args, "--set", "eft.learning_rate=1e-5"]) == 0
    assert "another eft.learning_rate than now" in caplog.text
    (aside,) = (out / "replaced").iterdir()
    assert json.loads((aside / "metajudge.json").read_text())["made_from"] == made
    assert json.loads((checkpoint / "metajudge.json").read_text())["made_from"] == {
        **made, "eft.learning_rate": 1e-5}
    # metajudge run starts iteration 1 from it and records it as iteration 0
    from metajudge.loop import open_run, record_eft
    from metajudge.stages.summary import run_table
    from metajudge.stages.train import iteration_model

    config = load_config(ROOT / "configs" / "tiny.yaml", [f"eft.checkpoint={out}"])
    store = open_run(config, tmp_path / "run")
    record_eft(store)
    assert iteration_model(store, 1) == str(checkpoint)
    store.close()
    table = run_table(tmp_path / "run")
    assert table.loc[0, "eft_examples"] == len(examples) and table.loc[0, "eft_kept"] == len(
        kept)


@pytest.mark.timeout(900)
def test_mt_bench_two_questions_in_fastchat_layouts(tmp_path: Path,
                                                    embedded_model_dir: str) -> None:
    out = tmp_path / "mt"
    args = ["eval", "mt-bench", "--model", "smollm2-135m-instruct", "--limit", "2", "--out",
            str(out), "--no-progress", "--bootstrap", "20", "--set",
            "generation.max_tokens=24", "--set", "judging.max_tokens=24"]
    assert main(args) == 0
    answers = [json.loads(x) for x in (out / "model_answer" / "smollm2-135m-instruct.jsonl")
               .read_text().splitlines()]
    assert [a["question_id"] for a in answers] == [81, 82]
    for a in answers:
        assert set(a) == {"question_id", "answer_id", "model_id", "choices", "tstamp"}
        assert len(a["choices"][0]["turns"]) == 2 and all(a["choices"][0]["turns"])
    path = out / "model_judgment" / "smollm2-135m-instruct_single.jsonl"
    judgments = [json.loads(x) for x in path.read_text().splitlines()]
    assert sorted((j["question_id"], j["turn"]) for j in judgments) == [
        (81, 1), (81, 2), (82, 1), (82, 2)]
    for j in judgments:
        assert {"question_id", "model", "judge", "user_prompt", "judgment", "score", "turn",
                "tstamp"} <= set(j)
        assert j["score"] == -1 or 1 <= j["score"] <= 10  # FastChat's mark, never 0
    second = next(j for j in judgments if j["turn"] == 2)["user_prompt"]
    assert answers[0]["choices"][0]["turns"][0][:30] in second  # the whole conversation
    # what FastChat's show_result.py --mode single does with the file
    frame = pd.read_json(path, lines=True)[["model", "score", "turn"]]
    rated = frame[frame["score"] != -1]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["no_rating"] == int((frame["score"] == -1).sum())
    if len(rated):
        assert metrics["score"] == pytest.approx(rated["score"].mean())
    # the forced read-outs (the embedded model scores labels) sit beside the −1, not in it
    records = [json.loads(x) for x in (out / "mt_judgments.jsonl").read_text().splitlines()]
    unrated = [r for r in records if r["score"] == -1]
    assert all(r["forced_score"] in range(1, 11) for r in unrated)
    assert metrics["forced"] == len(unrated)
    values = [r["score"] if r["score"] != -1 else r["forced_score"] for r in records]
    assert metrics["score_with_readouts"] == pytest.approx(sum(values) / len(values))
    # resumable: a rerun makes nothing new
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())["stages"]
    assert manifest["mt-bench answers"]["passes"] == 2
    assert manifest["mt-bench answers"]["reused"] == 2
