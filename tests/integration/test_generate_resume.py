"""`metajudge generate` end to end on the embedded model, including kill -9 and resume."""

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

ARGS = ["--limit", "6", "-k", "2", "--no-progress", "--set", "generation.max_tokens=40",
        "--set", "backend.transformers.batch_size=1"]


def _generate(out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "metajudge.cli", "generate", *ARGS, *extra, "--out", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.timeout(600)
def test_kill_9_mid_generation_then_rerun_loses_and_duplicates_nothing(
    tmp_path: Path, embedded_model_dir: str
) -> None:
    killed = tmp_path / "killed"
    responses = killed / "iter_01" / "responses.jsonl"
    proc = _generate(killed)
    deadline = time.monotonic() + 300
    while len(_lines(responses)) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _lines(responses)
    assert 3 <= len(before) < 12, "the kill should land mid-generation"
    with responses.open("a") as fh:  # a kill in the middle of a write leaves a partial line
        fh.write('{"id": "dolly_open_qa_1#0", "prompt_id": "dolly_op')

    rerun = _generate(killed)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert "partial last line" in err
    summary = out.strip().splitlines()[-1]
    assert f"{12 - len(before)} new, {len(before)} reused, 0 failed" in summary
    after = _lines(responses)
    assert after[: len(before)] == before  # finished records untouched
    ids = [json.loads(line)["id"] for line in after]
    assert len(ids) == 12 and max(Counter(ids).values()) == 1

    # the resumed run holds exactly what an uninterrupted run with the same seed produces
    fresh = tmp_path / "fresh"
    full = _generate(fresh)
    _, err = full.communicate(timeout=300)
    assert full.returncode == 0, err
    texts = {json.loads(x)["id"]: json.loads(x)["text"] for x in after}
    fresh_texts = {json.loads(x)["id"]: json.loads(x)["text"]
                   for x in _lines(fresh / "iter_01" / "responses.jsonl")}
    assert texts == fresh_texts

    # a finished run does nothing on rerun
    again = _generate(killed)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert "0 new, 12 reused" in out
    assert _lines(responses) == after
    manifest = json.loads((killed / "manifest.json").read_text())
    assert manifest["stages"]["iter_01/generate"]["reused"] == 12
    # summed over the passes that finished (the killed one never recorded)
    assert manifest["stages"]["iter_01/generate"]["completed"] == 12 - len(before)
