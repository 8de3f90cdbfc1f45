"""`metajudge run`: one iteration on 4 prompts with a few DPO steps, then the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from safetensors import safe_open

from metajudge.backends.transformers_local import TransformersBackend
from metajudge.cli import main
from metajudge.config import BackendConfig
from metajudge.records import GenerationRequest, Message, SamplingParams
from metajudge.store import Store
from metajudge.tracking import log_summary
from metajudge.training.dpo import reward_margins

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = ["prompts.per_iteration=4", "generation.samples_per_prompt=3",
            "generation.max_tokens=40", "judge.judgments_per_response=2", "judge.max_tokens=32",
            "meta_judge.max_tokens=24", "training.learning_rate=1e-4",
            "training.global_batch_size=2", "training.epochs=2",
            "training.report_to=[tensorboard]"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, embedded_model_dir: str) -> Path:
    out = tmp_path_factory.mktemp("loop") / "run"
    args = ["run", str(ROOT / "configs" / "tiny.yaml"), "--iterations", "1", "--no-progress",
            "--out", str(out)]
    for item in SETTINGS:
        args += ["--set", item]
    assert main(args) == 0
    return out


def _tensor(path: Path, name: str):  # type: ignore[no-untyped-def]
    with safe_open(str(path), "pt") as fh:
        return fh.get_tensor(name)


@pytest.mark.timeout(900)
def test_checkpoint_weights_changed_and_reward_margin_rose(run_dir: Path,
                                                           embedded_model_dir: str) -> None:
    checkpoint = run_dir / "iter_01" / "checkpoint"
    assert (checkpoint / "model.safetensors").is_file()
    assert (checkpoint / "chat_template.jinja").is_file() or "chat_template" in (
        checkpoint / "tokenizer_config.json").read_text()
    assert not list(checkpoint.glob("*.bin")) and not list(checkpoint.glob("*.pt"))
    name = "model.layers.0.self_attn.q_proj.weight"
    before = _tensor(Path(embedded_model_dir) / "model.safetensors", name)
    after = _tensor(checkpoint / "model.safetensors", name)
    assert not bool((before == after).all())
    rows = [json.loads(x) for x in (run_dir / "iter_01" / "dpo_pairs.jsonl").read_text()
            .splitlines()]
    assert rows
    # the margin is 0 for the starting model (policy = reference) and must have risen
    assert reward_margins(embedded_model_dir, embedded_model_dir, rows[:1], 0.1) == [0.0]
    margins = reward_margins(str(checkpoint), embedded_model_dir, rows, beta=0.1)
    assert sum(margins) / len(margins) > 0
    metrics = [json.loads(x) for x in (run_dir / "iter_01" / "train_metrics.jsonl")
               .read_text().splitlines()]
    assert metrics and all("loss" in m and "rewards/margins" in m for m in metrics)


def test_checkpoint_loads_back_and_generates(run_dir: Path) -> None:
    checkpoint = run_dir / "iter_01" / "checkpoint"
    with TransformersBackend(BackendConfig(model=str(checkpoint))) as backend:
        result = backend.generate([GenerationRequest(
            id="x", messages=(Message(role="user", content="Name a colour."),),
            params=SamplingParams(max_tokens=12))])[0]
    assert result.text.strip()


def test_summary_and_rerun_of_a_finished_run(run_dir: Path, capsys: pytest.CaptureFixture
                                             ) -> None:
    table = pd.read_csv(run_dir / "summary.csv")
    assert list(table["iteration"]) == [1]
    row = table.iloc[0]
    assert row["prompts"] == 4 and row["responses"] == 12 and row["judgments"] == 24
    assert row["actor_pairs"] + row["judge_pairs"] == row["dpo_pairs"] > 0
    for column in ("generate_seconds", "judge_seconds", "train_seconds",
                   "judge_generated_tokens", "meta_first_share", "dpo_loss",
                   "judge_failed", "dpo_world_size"):
        assert column in table.columns
    files = {p: p.stat().st_mtime_ns for p in (run_dir / "iter_01").glob("*.jsonl")}
    capsys.readouterr()
    args = ["run", str(run_dir / "config.yaml"), "--no-progress", "--out", str(run_dir)]
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in files} == files  # nothing rewritten


def test_training_steps_and_the_summary_reach_tensorboard(run_dir: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = EventAccumulator(str(next((run_dir / "iter_01" / "tracking").rglob("events.*"))))
    steps.Reload()
    assert any(tag.endswith("loss") for tag in steps.Tags()["scalars"])
    # the loop wrote the summary, the rerun above wrote it again, and once more here: one copy
    log_summary(Store.open(run_dir, lock=False),
                pd.read_csv(run_dir / "summary.csv").set_index("iteration"))
    summary = EventAccumulator(str(run_dir / "tracking" / "summary"))
    summary.Reload()
    judgments = summary.Scalars("summary/judgments")
    assert [(e.step, e.value) for e in judgments] == [(1, 24.0)]


def test_analyze_bias_reads_the_run(run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    out = run_dir.parent / "bias.csv"
    assert main(["analyze", "bias", str(run_dir), "--out", str(out)]) == 0
    table = pd.read_csv(out).set_index("iteration")
    summary = pd.read_csv(run_dir / "summary.csv").set_index("iteration")
    row = table.loc[1]
    assert row["judgments"] == summary.loc[1, "judgments"] == 24
    scored = row[[f"score_{k}" for k in range(6)]].sum() + row["score_non_integer"]
    assert scored + row["parse_failures"] == row["judgments"]
    assert 0 <= row["meta_first_share"] <= 1
    assert row["meta_first_share"] == pytest.approx(summary.loc[1, "meta_first_share"])
    assert row["mean_response_chars"] > 0


def test_report_writes_tables_and_figures(run_dir: Path) -> None:
    out = run_dir.parent / "report"
    assert main(["report", str(run_dir), "--out", str(out)]) == 0
    for name in ("iteration_curves", "score_distributions", "judge_behaviour",
                 "judge_agreement"):
        assert (out / f"{name}.png").stat().st_size > 10_000
        assert (out / f"{name}.pdf").read_bytes().startswith(b"%PDF")
    loop = pd.read_csv(out / "loop.csv").set_index("iteration")
    assert loop.loc[1, "judgments"] == 24
    assert len(pd.read_csv(out / "judgment_scores.csv")) == 24
    assert "score_distributions.png" in (out / "README.md").read_text()
