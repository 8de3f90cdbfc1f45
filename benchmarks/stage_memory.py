"""Peak memory and pipeline seconds of the generate, judge and meta-judge stages against their
request count, on the instant backend (only metajudge's own cost shows). K = 7, N = 11.

Each stage runs in its own process, whose peak RSS (``ru_maxrss``) is the figure; the
prompt counts (default 200 and 800) give 22k and 88k meta-judge requests. ``--src DIR`` runs
another checkout's code (e.g. the commit before the stage runner, for the "before" column):

    git worktree add /tmp/before c19ed6e
    .venv/bin/python benchmarks/stage_memory.py --src /tmp/before --label before
    .venv/bin/python benchmarks/stage_memory.py --label after

Writes ``results/benchmarks/stage_memory.md`` (both labels, when both were measured) and
``stage_memory.<label>.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("generate", "judge", "meta-judge")
SETTINGS = ["generation.samples_per_prompt=7",
            "judge.judgments_per_response=11", "judge.forced_readout=false",
            "judge.probability_weighted=false", "meta_judge.forced_readout=false",
            "prompts.pool_size=4995"]


def child(stage: str, run_dir: str, prompts: int, extra: list[str]) -> None:
    """One stage in this process; prints its figures as JSON."""
    logging_off()
    from instant_backend import InstantBackend

    from metajudge.config import load_config

    new = importlib.util.find_spec("metajudge.stages") is not None
    kind = ["backend.kind=instant_backend:InstantBackend"] if new else []  # old: not validated
    config = load_config(ROOT / "configs" / "tiny.yaml",
                         SETTINGS + kind + [f"prompts.per_iteration={prompts}"] + extra)
    backend = InstantBackend.from_config(config.backend)
    try:  # the stage runner's layout
        from metajudge.stages.generate import run_generate
        from metajudge.stages.judge import run_judge
        from metajudge.stages.meta_judge import run_meta_judge
        from metajudge.store import Store

        store = Store.open(run_dir, config)
    except ImportError:  # before it
        from metajudge.generate import run_generate  # type: ignore[no-redef]
        from metajudge.judging.judge import run_judge  # type: ignore[no-redef]
        from metajudge.judging.meta_judge import run_meta_judge  # type: ignore[no-redef]

        from metajudge.store import RunStore  # type: ignore[attr-defined]

        store = RunStore.open(run_dir, config)
    run = {"generate": run_generate, "judge": run_judge, "meta-judge": run_meta_judge}[stage]
    started = time.perf_counter()
    summary = run(store, backend, 1, progress=False)
    seconds = time.perf_counter() - started
    print(json.dumps({"stage": stage, "requests": summary.requested, "seconds": seconds,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def logging_off() -> None:
    import logging

    logging.disable(logging.WARNING)


def measure(src: Path, prompts: int, extra: list[str]) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = str(Path(tmp) / "run")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(ROOT / "benchmarks")])}
        for stage in STAGES:
            out = subprocess.run(
                [sys.executable, __file__, "--child", stage, run_dir, str(prompts), *extra],
                env=env, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                raise SystemExit(out.stderr[-3000:])
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["prompts"] = prompts
            rows.append(row)
            print(row, flush=True)
    return rows


def table(results: dict[str, list[dict]]) -> str:
    lines = ["# Stage memory against request count (instant backend, K = 7, N = 11)", "",
             "Command: `.venv/bin/python benchmarks/stage_memory.py --src /tmp/before "
             "--label before` (a worktree of c19ed6e, the commit before the stage runner) and "
             "`.venv/bin/python benchmarks/stage_memory.py --prompts 200 800 3200 --label "
             "after`. Each stage runs in its own process; the figure is its peak RSS. Growth is "
             "from 200 to 800 prompts (22k to 88k meta-judge requests); pipeline seconds per "
             "100k requests at 800 prompts. Below `runner.chunk_size` (4,096) requests a stage "
             "holds all of them, so generate's 1,400 → 5,600 still grows a little; past it, "
             "memory is flat (3,200 prompts).", "",
             "| stage | label | requests | peak RSS MB | growth 200 → 800 prompts | "
             "pipeline s / 100k requests |", "|---|---|---|---|---|---|"]
    for stage in STAGES:
        for label, rows in results.items():
            mine = sorted((r for r in rows if r["stage"] == stage), key=lambda r: r["prompts"])
            by = {r["prompts"]: r for r in mine}
            if 200 not in by or 800 not in by:
                continue
            growth = by[800]["peak_rss_mb"] / by[200]["peak_rss_mb"] - 1
            per = by[800]["seconds"] / by[800]["requests"] * 100_000
            lines.append(f"| {stage} | {label} | "
                         + " → ".join(f"{r['requests']:,}" for r in mine) + " | "
                         + " → ".join(f"{r['peak_rss_mb']:.0f}" for r in mine)
                         + f" | {growth:+.1%} | {per:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--src", default=str(ROOT))
    parser.add_argument("--label", default="after")
    parser.add_argument("--prompts", type=int, nargs="+", default=[200, 800])
    parser.add_argument("--out", default=str(ROOT / "results" / "benchmarks"))
    args = parser.parse_args()
    out = Path(args.out)
    rows = [row for p in args.prompts for row in measure(Path(args.src), p, [])]
    (out / f"stage_memory.{args.label}.json").write_text(json.dumps(rows, indent=2) + "\n")
    results = {}
    for label in ("before", "after"):
        path = out / f"stage_memory.{label}.json"
        if path.is_file():
            results[label] = json.loads(path.read_text())
    (out / "stage_memory.md").write_text(table(results))
    if len(results) == 2:
        save_headline(out, results)
    print(table(results))


def save_headline(out: Path, results: dict[str, list[dict]]) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from rows import save_rows

    def growth(label: str, stage: str) -> tuple[float, float, float]:
        by = {r["prompts"]: r["peak_rss_mb"] for r in results[label] if r["stage"] == stage}
        return by[800] / by[200] - 1, by[200], by[800]

    rows = []
    for stage in STAGES:
        after, before = growth("after", stage), growth("before", stage)
        rows.append({"measurement": f"{stage} stage: peak RSS growth, 4× the requests "
                                    "(instant backend)",
                     "reference": "the same stage before the stage runner (c19ed6e)",
                     "ratio": f"{after[0]:+.0%} vs {before[0]:+.0%}",
                     "figures": f"{after[1]:.0f} → {after[2]:.0f} MB vs {before[1]:.0f} → "
                                f"{before[2]:.0f} MB"})
    save_rows(out, "stage_memory", rows)


if __name__ == "__main__":
    main()
