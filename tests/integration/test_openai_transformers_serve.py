"""The OpenAI-compatible backend against a real `transformers serve` on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from metajudge.cli import main

SECRET = "sk-test-secret-never-stored"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(embedded_model_dir: str) -> Iterator[str]:
    pytest.importorskip("fastapi", reason="needs metajudge[server]")
    port = _free_port()
    exe = Path(sys.executable).with_name("transformers")
    proc = subprocess.Popen(
        [str(exe), "serve", embedded_model_dir, "--host", "127.0.0.1", "--port", str(port),
         "--device", "cpu"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert proc.poll() is None, "transformers serve exited"
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        else:
            pytest.fail("transformers serve did not come up in 180 s")
        yield url + "/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.timeout(600)
def test_generate_through_transformers_serve(served: str, embedded_model_dir: str,
                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("MJ_SERVE_KEY", SECRET)
    out = tmp_path / "run"
    code = main([
        "generate", "--limit", "3", "-k", "2", "--no-progress", "--out", str(out),
        "--set", "backend.kind=openai", "--set", f"backend.openai.base_url={served}",
        "--set", f"backend.openai.served_model={embedded_model_dir}",
        "--set", "backend.openai.api_key_env=MJ_SERVE_KEY",
        "--set", "generation.max_tokens=24", "--set", "backend.openai.concurrency=4",
    ])
    assert code == 0, capsys.readouterr().err
    assert "6 new, 0 reused, 0 failed" in capsys.readouterr().out
    lines = (out / "iter_01" / "responses.jsonl").read_text().splitlines()
    records = [json.loads(x) for x in lines]
    assert len(records) == 6 and all(r["text"].strip() for r in records)
    assert all(r["provenance"]["backend"]["kind"] == "openai" for r in records)
    assert all(r["provenance"]["backend"]["server_url"] == served for r in records)
    assert all(0 < r["completion_tokens"] <= 24 for r in records)
    for path in out.rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(), path
