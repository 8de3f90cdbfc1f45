"""Kill `metajudge run` in the middle of a stage and of training; the rerun completes with no
record lost or duplicated and the same pairs as an uninterrupted run with the same seed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = ["prompts.per_iteration=2", "generation.samples_per_prompt=3",
            "generation.max_tokens=24", "judge.judgments_per_response=2", "judge.max_tokens=24",
            "meta_judge.max_tokens=16", "training.global_batch_size=1",
            "training.per_device_batch_size=1", "training.epochs=3",
            "backend.transformers.batch_size=1"]  # batch 1: bit-identical samples on rerun
STAGE_FILES = ("responses", "judgments", "meta_judgments", "meta_selection")


def _start(out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "metajudge.cli", "run", str(ROOT / "configs" / "tiny.yaml"),
           "--iterations", "1", "--no-progress", "--out", str(out)]
    for item in SETTINGS:
        cmd += ["--set", item]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"finished before the kill point: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "kill point never reached"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _no_process_left(out: Path, timeout: float = 60) -> None:
    """No process whose command line names the run directory survives its loop."""
    deadline = time.monotonic() + timeout
    while True:
        left = []
        for entry in Path("/proc").iterdir():
            try:
                args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, ValueError):
                continue
            if str(out) in args and entry.name.isdigit():
                left.append(args)
        if not left:
            return
        assert time.monotonic() < deadline, f"left behind: {left}"
        time.sleep(0.2)


def _finish(out: Path) -> None:
    proc = _start(out)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]


@pytest.mark.slow  # about 2.5 minutes here: a loop killed twice and rerun
@pytest.mark.timeout(1800)
def test_kills_during_judge_and_training_then_rerun(tmp_path: Path,
                                                   embedded_model_dir: str) -> None:
    killed = tmp_path / "killed"
    it = killed / "iter_01"
    proc = _start(killed)
    _kill_when(proc, lambda: len(_lines(it / "judgments.jsonl")) >= 2)
    judged_before = _lines(it / "judgments.jsonl")
    assert len(judged_before) < 12
    proc = _start(killed)
    _kill_when(proc, lambda: len(_lines(it / "train_metrics.jsonl")) >= 1)  # DPO is stepping
    assert not (it / "checkpoint" / "metajudge.json").exists()
    _no_process_left(killed)  # the training process went with the loop
    _finish(killed)

    fresh = tmp_path / "fresh"
    _finish(fresh)

    for name in STAGE_FILES:
        resumed = [json.loads(x) for x in _lines(it / f"{name}.jsonl")]
        ids = [r["id"] for r in resumed]
        assert ids and max(Counter(ids).values()) == 1, name  # nothing duplicated
        full = {r["id"]: r for r in map(json.loads, _lines(fresh / "iter_01" / f"{name}.jsonl"))}
        assert set(ids) == set(full), name  # nothing lost
        for record in resumed:
            other = full[record["id"]]
            for key in ("text", "score", "winner", "response_id"):
                assert record.get(key) == other.get(key), (name, key, record["id"])
    assert _lines(it / "judgments.jsonl")[: len(judged_before)] == judged_before
    assert (it / "pairs.jsonl").read_text() == (fresh / "iter_01" / "pairs.jsonl").read_text()
    assert (it / "checkpoint" / "metajudge.json").is_file()
