"""The run explorer at paper scale: index build time, index size against the run, p95 latency of
the overview, a filtered prompt list and a prompt page through the HTTP server, and the
server's peak RSS.

The run is synthetic but made by the real pipeline: ``configs/tiny.yaml`` at the paper's sizes
(4 iterations of 5,000 prompts from a 20,000-prompt pool made of the bundled pool's
prompts, K = 7, N = 11, meta-judge and both pair
types in every iteration: per iteration 35k responses, 385k judgments, 550k meta-judgments)
through the stage functions on the instant backend (``benchmarks/instant_backend.py``), which
answers at once. Training is not run (the instant backend has no weights); each iteration gets
a ``train_metrics.jsonl`` of 300 synthetic steps in TRL's keys (5,000 + 5,000 pairs at 32 per
step), so the overview draws DPO curves of the paper's length.

    .venv/bin/python benchmarks/explorer.py --run /tmp/explorer_paper     # makes the run once
    .venv/bin/python benchmarks/explorer.py --run /tmp/explorer_paper --prompts 200   # quicker

Writes ``results/benchmarks/explorer.md`` and ``explorer.rows.json`` (for the summary table).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ITERATIONS = 4
SETTINGS = ["backend.kind=instant_backend:InstantBackend", "iterations=4",
            "generation.samples_per_prompt=7", "judge.judgments_per_response=11",
            "prompts.pool_size=20000", "runner.retry_delay_s=0", "runner.chunk_size=8192",
            "pairs.rho=[0.0,0.32,0.32,0.4]", "pairs.pair_types=[[actor,judge]]"]
STEPS = 300
ROUNDS = 40


def make_run(run_dir: Path, prompts: int) -> None:
    """The synthetic run (resumable: each stage skips what is there)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from instant_backend import InstantBackend

    from metajudge.config import load_config
    from metajudge.stages.generate import run_generate
    from metajudge.stages.judge import run_judge
    from metajudge.stages.meta_judge import run_meta_judge
    from metajudge.stages.pairs import run_pairs
    from metajudge.store import Store

    pool = run_dir.parent / f"{run_dir.name}.prompts.jsonl"
    if not pool.is_file():
        write_pool(pool)
    config = load_config(ROOT / "configs" / "tiny.yaml",
                         [*SETTINGS, f"prompts.per_iteration={prompts}",
                          f"prompts.source={pool}"])
    backend = InstantBackend.from_config(config.backend)
    store = Store.open(run_dir, config)
    try:
        for iteration in range(1, ITERATIONS + 1):
            for name, stage in (("generate", run_generate), ("judge", run_judge),
                                ("meta-judge", run_meta_judge)):
                started = time.perf_counter()
                stage(store, backend, iteration, progress=False)
                logging.info("iteration %d %s: %.0f s", iteration, name,
                             time.perf_counter() - started)
            if not (store.iteration_dir(iteration) / "dpo_pairs.jsonl").is_file():
                run_pairs(store, iteration)
            metrics = store.iteration_dir(iteration) / "train_metrics.jsonl"
            if not metrics.is_file():
                metrics.write_text("".join(json.dumps(synthetic_step(iteration, step)) + "\n"
                                           for step in range(1, STEPS + 1)))
    finally:
        store.close()


def write_pool(path: Path) -> None:
    """20,000 prompts, as the paper's pool: the bundled 4,995 four times over (each copy with
    its own id and a note that makes its text differ), then 20 more."""
    from metajudge.prompts import load_prompts

    bundled = load_prompts("bundled")
    rows = [{"id": f"{p.id}~{copy}", "instruction": f"{p.instruction}\n\n(variant {copy})",
             "source": p.source} for copy in range(5) for p in bundled][:20_000]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def synthetic_step(iteration: int, step: int) -> dict[str, float]:
    """One DPO step's metrics in TRL's keys (a smooth made-up curve: only the size matters)."""
    x = step / STEPS
    return {"step": step, "loss": 0.693 * math.exp(-1.5 * x) + 0.05 * math.sin(step),
            "rewards/margins": 2.0 * x * iteration, "rewards/accuracies": 0.5 + 0.45 * x,
            "rewards/chosen": x, "rewards/rejected": -x, "learning_rate": 5e-6, "epoch": x}


def build_index(run_dir: Path) -> dict[str, float]:
    """In a child process (its own peak RSS): the index built from nothing, then an update
    that finds nothing new."""
    from metajudge.viewer.index import INDEX_NAME

    for leftover in run_dir.glob(INDEX_NAME + "*"):
        leftover.unlink()
    code = ("import json, resource, sys, time; from metajudge.viewer.index import RunIndex; "
            "index = RunIndex(sys.argv[1]); first = index.update(); "
            "t = time.perf_counter(); again = index.update(); "
            "print(json.dumps({'build_s': first.seconds, 'lines': first.lines, "
            "'noop_s': time.perf_counter() - t, 'changed': again.changed, "
            "'build_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))")
    out = subprocess.run([sys.executable, "-c", code, str(run_dir)], capture_output=True,
                         text=True, check=True)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    figures["index_mb"] = (run_dir / INDEX_NAME).stat().st_size / 1e6
    figures["run_mb"] = sum(p.stat().st_size for p in run_dir.rglob("*")
                            if p.is_file() and not p.name.startswith(INDEX_NAME)) / 1e6
    return figures


def _get(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as answer:
        body = answer.read()
    seconds = time.perf_counter() - started
    json.loads(body)
    return seconds


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1] if len(values) > 1 \
        else values[0]


def serve_and_measure(run_dir: Path, rounds: int) -> dict[str, object]:
    """p50/p95/max latency of the three kinds of request through the real server, and the
    server's peak RSS (VmHWM)."""
    import random

    rng = random.Random(0)
    process = subprocess.Popen([sys.executable, "-m", "metajudge.cli", "view", str(run_dir),
                                "--port", "0", "--refresh", "0"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = "http://" + line.split("http://", 1)[1].strip().rstrip("/") + "/"
        prompts = {it: [json.loads(x)["id"] for x in
                        (run_dir / f"iter_{it:02d}" / "prompts.jsonl").read_text().splitlines()]
                   for it in range(1, ITERATIONS + 1)}
        words = ["explain", "write", "what", "how", "list", "story", "code", "the"]
        timings: dict[str, list[float]] = {"overview": [], "filtered prompt list": [],
                                           "prompt page": []}
        for n in range(rounds):
            it = 1 + n % ITERATIONS
            timings["overview"].append(_get(url + "api/overview.json"))
            query = urllib.parse.urlencode({
                "q": rng.choice(words), "pair": rng.choice(["", "judge", "actor"]),
                "min_variance": rng.choice(["", "1", "2"]),
                "sort": rng.choice(["variance", "spread", "chars", "score"]),
                "desc": "1", "page": str(1 + rng.randrange(3))})
            timings["filtered prompt list"].append(
                _get(url + f"api/iter/{it}/prompts.json?{query}"))
            pid = rng.choice(prompts[it])
            timings["prompt page"].append(
                _get(url + f"api/iter/{it}/prompt/{pid.encode().hex()}.json"))
        status = Path(f"/proc/{process.pid}/status").read_text()
        peak = next(int(x.split()[1]) for x in status.splitlines() if x.startswith("VmHWM"))
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return {"timings": timings, "server_rss_mb": peak / 1024}


def table(build: dict, served: dict, prompts: int) -> str:
    lines = [
        "# Run explorer at paper scale", "",
        "Command: `.venv/bin/python benchmarks/explorer.py --run /tmp/explorer_paper` "
        f"(synthetic run through the real stages on the instant backend: 4 iterations of "
        f"{prompts:,} prompts, K = 7, N = 11; meta-judge and both pair types in every "
        "iteration; 300 synthetic DPO steps per iteration). Latencies: "
        f"{sum(len(v) for v in served['timings'].values()):,} requests through "
        "`metajudge view` over HTTP on 127.0.0.1, one at a time, random prompts and "
        "filters, on this 2-core machine shared with other jobs. Target: p95 under 300 ms.",
        "", "| measurement | value |", "|---|---|",
        f"| run size (JSONL and settings) | {build['run_mb']:,.0f} MB |",
        f"| records indexed | {build['lines']:,} lines |",
        f"| index build from nothing | {build['build_s']:.0f} s "
        f"({build['lines'] / build['build_s']:,.0f} lines/s; peak RSS "
        f"{build['build_rss_mb']:.0f} MB) |",
        f"| index size | {build['index_mb']:,.0f} MB "
        f"({build['index_mb'] / build['run_mb']:.1%} of the run) |",
        f"| update with nothing new (stat and tail check of every file) | "
        f"{build['noop_s'] * 1000:.0f} ms |",
        f"| server peak RSS (VmHWM) | {served['server_rss_mb']:.0f} MB |", "",
        "| request | n | p50 ms | p95 ms | max ms | under 300 ms at p95 |",
        "|---|---|---|---|---|---|"]
    for name, values in served["timings"].items():
        ms = [v * 1000 for v in values]
        lines.append(f"| {name} | {len(ms)} | {statistics.median(ms):.0f} | {p95(ms):.0f} | "
                     f"{max(ms):.0f} | {'yes' if p95(ms) < 300 else 'no'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="/tmp/explorer_paper", help="the synthetic run "
                        "(made when missing; about 5 GB at paper scale)")
    parser.add_argument("--prompts", type=int, default=5000, help="prompts per iteration")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="requests of each kind")
    parser.add_argument("--make-only", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "results" / "benchmarks"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    run_dir = Path(args.run)
    make_run(run_dir, args.prompts)
    if args.make_only:
        return
    build = build_index(run_dir)
    logging.info("index: %s", build)
    served = serve_and_measure(run_dir, args.rounds)
    text = table(build, served, args.prompts)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "explorer.md").write_text(text)
    (out / "explorer.json").write_text(json.dumps({"build": build, **served}, indent=2) + "\n")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from rows import save_rows

    pages = [v * 1000 for v in served["timings"]["prompt page"]]  # type: ignore[index]
    save_rows(out, "explorer", [
        {"measurement": "run explorer: index size against the run (paper scale)",
         "reference": "the run's JSONL", "ratio": f"{build['index_mb'] / build['run_mb']:.1%}",
         "figures": f"{build['index_mb']:,.0f} MB vs {build['run_mb']:,.0f} MB; built in "
                    f"{build['build_s']:.0f} s"},
        {"measurement": "run explorer: p95 latency of a prompt page (paper scale)",
         "reference": "the 300 ms target", "ratio": f"{p95(pages) / 300:.2f}×",
         "figures": f"{p95(pages):.0f} ms; server peak RSS {served['server_rss_mb']:.0f} MB"}])
    print(text)


if __name__ == "__main__":
    main()
