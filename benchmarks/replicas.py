"""Served engines: the same judge stage over 1 and 2 replicas, and served against in-process.

On the embedded model (this CPU has 2 cores): responses are generated once (8 prompts × 2), then
the very same judge stage (N = 2 judgments per response, 48 tokens, greedy-free sampling as
configs/tiny.yaml sets it, no read-outs: `transformers serve` returns no log-probabilities) runs

1. in-process (transformers backend, both cores);
2. served by one `transformers serve` replica that metajudge starts itself (both cores);
3. served by one replica pinned to one core (``taskset -c 0``, one thread);
4. served by two replicas pinned to one core each (``taskset -c {replica}``), requests spread
   to the replica with the fewest in flight.

Each served run starts its servers through ``backend.serve`` (a custom command template) and
stops them after the stage. Reported: generated tokens per second of the stage (server start-up
excluded), 2 replicas against 1 (pinned), and served against in-process.

    .venv/bin/python benchmarks/replicas.py         # about 10 minutes here
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from rows import save_rows

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "benchmarks"
BASE = ["prompts.per_iteration=8", "generation.samples_per_prompt=2",
        "generation.max_tokens=64", "judge.judgments_per_response=2", "judge.max_tokens=48",
        "judge.forced_readout=false", "judge.probability_weighted=false",
        "runner.retry_delay_s=0"]
SERVE = "{python} -m transformers.cli.transformers serve {model} --host {host} --port {port} " \
        "--device cpu"


def served(replicas: int, pinned: bool) -> list[str]:
    command = ("taskset -c {replica} " if pinned else "") + SERVE
    return ["backend.kind=openai", "backend.serve.engine=custom",
            f"backend.serve.command={json.dumps(command)}",
            f"backend.serve.replicas={replicas}", "backend.openai.concurrency=4",
            "backend.openai.logprobs=false", "backend.openai.timeout_s=600"] + (
        ['backend.serve.env={"OMP_NUM_THREADS": "1"}'] if pinned else [])


def main() -> None:
    from metajudge.backends.serving import engine, served_path
    from metajudge.config import load_config
    from metajudge.stages.generate import run_generate
    from metajudge.stages.judge import run_judge
    from metajudge.store import Store

    rows, lines = [], []
    with tempfile.TemporaryDirectory() as tmp:
        seed = Path(tmp) / "seed"
        config = load_config(ROOT / "configs" / "tiny.yaml", BASE)
        store = Store.open(seed, config)
        with engine(config.backend, config.backend.model, seed) as backend:
            run_generate(store, backend, 1, progress=False)
        store.close()
        for name, extra in (("in-process", []), ("served, 1 replica", served(1, False)),
                            ("served, 1 replica pinned to 1 core", served(1, True)),
                            ("served, 2 replicas pinned to 1 core each", served(2, True))):
            run = Path(tmp) / name.replace(" ", "_").replace(",", "")
            config = load_config(ROOT / "configs" / "tiny.yaml", BASE + extra)
            store = Store.open(run, config)  # a run of its own backend, with the seed's responses
            shutil.copytree(seed / "iter_01", run / "iter_01",
                            ignore=shutil.ignore_patterns("judgments*", "servers"))
            with engine(config.backend, served_path(config.backend, config.backend.model)
                        if extra else config.backend.model, run / "iter_01") as backend:
                started = time.perf_counter()
                summary = run_judge(store, backend, 1, progress=False)
                seconds = time.perf_counter() - started
                stats = summary.backend.get("replicas", [])
            store.close()
            rate = summary.generated_tokens / seconds
            rows.append({"setting": name, "judgments": summary.completed,
                         "generated_tokens": summary.generated_tokens,
                         "seconds": round(seconds, 1), "tokens_per_second": round(rate, 2),
                         "served_per_replica": [r["served"] for r in stats]})
            print(rows[-1], flush=True)
    by = {r["setting"]: r["tokens_per_second"] for r in rows}
    two = by["served, 2 replicas pinned to 1 core each"] / by[
        "served, 1 replica pinned to 1 core"]
    served_ratio = by["served, 1 replica"] / by["in-process"]
    lines = ["# Served engines: replicas and served against in-process", "",
             "Command: `.venv/bin/python benchmarks/replicas.py` (this machine: "
             f"{os.cpu_count()} cores). The same 32 judge requests of the embedded model "
             "(16 responses × 2 judgments, 48 tokens) in each setting; servers are "
             "`transformers serve`, started and stopped by metajudge (`backend.serve`, a custom "
             "command); start-up is not timed.", "",
             "| setting | judgments | generated tokens | seconds | tokens/s | served per replica |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['setting']} | {r['judgments']} | {r['generated_tokens']} | {r['seconds']} "
              f"| {r['tokens_per_second']} | {r['served_per_replica'] or '-'} |" for r in rows]
    lines += ["", f"- 2 replicas / 1 replica (each pinned to one core): **{two:.2f}×**",
              f"- served (1 replica, both cores) / in-process: **{served_ratio:.2f}×**"]
    (OUT / "replicas.md").write_text("\n".join(lines) + "\n")
    save_rows(OUT, "replicas", [
        {"measurement": "judge stage over 2 `transformers serve` replicas (1 core each)",
         "reference": "1 replica (1 core)", "ratio": f"{two:.2f}× the throughput",
         "figures": f"{by['served, 2 replicas pinned to 1 core each']} vs "
                    f"{by['served, 1 replica pinned to 1 core']} tokens/s"},
        {"measurement": "judge stage served by `transformers serve` (1 replica, 2 cores)",
         "reference": "in-process transformers backend",
         "ratio": f"{served_ratio:.2f}× the throughput",
         "figures": f"{by['served, 1 replica']} vs {by['in-process']} tokens/s"}])
    print("\n".join(lines))


if __name__ == "__main__":
    main()
