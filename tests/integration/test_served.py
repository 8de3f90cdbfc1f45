"""Stages over HTTP across replicas of real `transformers serve` servers on 127.0.0.1: a replica
killed in the middle of a stage, a sick replica (resets, 5xx, hangs), and servers that metajudge
starts and stops itself for M_t, including after `kill -9` of metajudge (issue 13)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from metajudge.backends.openai_server import OpenAIBackend
from metajudge.backends.serving import free_port, wait_healthy
from metajudge.config import load_config
from metajudge.processes import Child
from metajudge.stages.generate import run_generate
from metajudge.store import RESPONSES, Store
from tests.fault_server import FaultServer

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not (Path(sys.executable).parent / "transformers").is_file(),
                                reason="needs metajudge[server] (transformers serve)")


def start_server(model: str, log: Path) -> tuple[Child, str]:
    port = free_port()
    child = Child.start([str(Path(sys.executable).parent / "transformers"), "serve", model,
                         "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
                        log=log, env={**os.environ, "OMP_NUM_THREADS": "1"})  # a core each
    return child, f"http://127.0.0.1:{port}/v1"


def config_for(urls: list[str], model: str, *extra: str):  # type: ignore[no-untyped-def]
    return load_config(ROOT / "configs" / "tiny.yaml", [
        "backend.kind=openai", f"backend.openai.base_url={json.dumps(urls)}",
        f"backend.openai.served_model={model}", "backend.openai.logprobs=false",
        "backend.openai.concurrency=2", "backend.openai.timeout_s=20",
        "backend.openai.health_interval_s=1", "backend.openai.backoff_s=0.1",
        "prompts.per_iteration=8", "generation.samples_per_prompt=2",
        "generation.max_tokens=24", "runner.retry_delay_s=0", *extra])


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.timeout(900)
def test_a_replica_killed_mid_stage_loses_and_duplicates_nothing(
        tmp_path: Path, embedded_model_dir: str) -> None:
    a, url_a = start_server(embedded_model_dir, tmp_path / "a.log")
    b, url_b = start_server(embedded_model_dir, tmp_path / "b.log")
    try:
        wait_healthy([a, b], [url_a, url_b], 300)
        # B's death is a reset, seen at once; the long timeout keeps a slow but live A (two
        # servers and the test share 2 cores) from being taken for a hung one
        config = config_for([url_a, url_b], embedded_model_dir, "backend.openai.timeout_s=180")
        store = Store.open(tmp_path / "run", config)
        responses = store.path(RESPONSES, 1)

        def kill_b_midway() -> None:
            deadline = time.monotonic() + 300
            while len(lines(responses)) < 4 and time.monotonic() < deadline:
                time.sleep(0.05)
            os.killpg(b.pid, signal.SIGKILL)  # the server and its guard, at once

        killer = threading.Thread(target=kill_b_midway)
        killer.start()
        with OpenAIBackend(config.backend) as backend:
            summary = run_generate(store, backend, 1, progress=False)
        killer.join()
        store.close()
    finally:
        a.stop()
        b.stop()
    ids = [r["id"] for r in lines(responses)]
    assert len(ids) == len(set(ids)) == 16  # every record once
    assert summary.completed == 16 and summary.failed == 0
    served = {r["url"]: r["served"] for r in summary.backend["replicas"]}
    assert served[url_a] > 0 and served[url_b] > 0  # both took part before the kill
    assert summary.backend["left_rotation"] == [url_b]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["stages"]["iter_01/generate"]["backend"]["left_rotation"] == [url_b]


@pytest.mark.timeout(900)
def test_a_sick_replica_beside_a_real_one(tmp_path: Path, embedded_model_dir: str) -> None:
    real, url = start_server(embedded_model_dir, tmp_path / "real.log")
    try:
        wait_healthy([real], [url], 300)
        with FaultServer(always=["hang", "reset", "500"]) as sick:
            config = config_for([sick.url, url], embedded_model_dir,
                                "backend.openai.timeout_s=30", "backend.openai.eject_after=2")
            store = Store.open(tmp_path / "run", config)
            with OpenAIBackend(config.backend) as backend:
                summary = run_generate(store, backend, 1, progress=False)
            store.close()
            assert sick.answered == 0 and sum(sick.attempts.values()) >= 1
    finally:
        real.stop()
    ids = [r["id"] for r in lines(store.path(RESPONSES, 1))]
    assert len(ids) == len(set(ids)) == 16 and summary.failed == 0
    served = {r["url"]: r for r in summary.backend["replicas"]}
    assert served[url]["served"] == 16 and served[sick.url]["served"] == 0
    assert sick.url in summary.backend["left_rotation"]


def _left(marker: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, ValueError):
                continue
            if marker in args and "pytest" not in args:
                found.append(args)
    return found


# about a minute here: managed servers (a core each) for two stages, a kill -9, a rerun
@pytest.mark.timeout(1200)
def test_servers_started_for_m_t_stopped_after_and_after_kill_9(
        tmp_path: Path, embedded_model_dir: str) -> None:
    run = tmp_path / "served"
    sets = ["--set", "backend.kind=openai", "--set", "backend.serve.engine=transformers",
            "--set", "backend.serve.replicas=2",
            "--set", "backend.serve.extra_args=--device cpu",
            "--set", "backend.openai.concurrency=2", "--set", "runner.retry_delay_s=0",
            "--set", "generation.max_tokens=24", "--set", "judge.max_tokens=24",
            "--set", "judge.judgments_per_response=2"]
    generate = [sys.executable, "-m", "metajudge.cli", "generate", "--config",
                str(ROOT / "configs" / "tiny.yaml"), "--out", str(run), "--limit", "6", "-k", "2",
                "--no-progress", *sets]
    proc = subprocess.Popen(generate, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    responses = run / "iter_01" / "responses.jsonl"
    deadline = time.monotonic() + 600
    while len(lines(responses)) < 3:
        assert proc.poll() is None, proc.stderr.read()  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    logs = sorted((run / "iter_01" / "servers").glob("replica_*.log"))
    assert len(logs) == 2  # each server's log in the run directory
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = lines(responses)
    deadline = time.monotonic() + 60
    while _left("transformers serve"):
        assert time.monotonic() < deadline, f"servers outlived metajudge: {_left('serve')}"
        time.sleep(0.2)
    done = subprocess.run(generate, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    records = lines(responses)
    assert records[: len(kept)] == kept and len(records) == 12
    assert len({r["id"] for r in records}) == 12
    judge = subprocess.run([sys.executable, "-m", "metajudge.cli", "judge", str(run),
                            "--no-progress"], capture_output=True, text=True, timeout=900)
    assert judge.returncode == 0, judge.stderr[-3000:]
    assert not _left("transformers serve")  # stopped after the stage
    judgments = lines(run / "iter_01" / "judgments.jsonl")
    assert len(judgments) == 24
    for record in records + judgments:  # the served model's fingerprint
        backend = record["provenance"]["backend"]
        assert backend["kind"] == "openai" and backend["revision"] == json.loads(
            (Path(embedded_model_dir) / "metajudge.json").read_text())["gguf_sha256"]
        assert backend["model"] == "smollm2-135m-instruct"
    counts = Counter(json.loads((run / "manifest.json").read_text())["stages"].keys())
    assert counts["iter_01/generate"] == 1 and counts["iter_01/judge"] == 1
