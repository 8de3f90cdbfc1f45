"""Run arena-hard-auto's own v2.0 ``show_result.py``, unchanged, in Arena-Hard v2.0 folders this
project wrote, and set what it prints beside our numbers for the same files.

The tool's bootstrap is unseeded; it runs here as a script after ``np.random.seed(SEED)`` (through
``runpy``), and ours is computed from the same files with the same seed. Plain scores are then
equal; style-controlled ones differ by what the tool's float32 L-BFGS leaves (SPEC §9a). A
category without battles (every judgment row has a null game) makes the tool stop on its
``assert category in battles.category.unique()``; that is printed as it comes.

    PYTHONPATH=. .venv/bin/python scripts/arena_hard_v2_official.py \\
        results/harness/arena_hard_v2/smollm2-135m-instruct tests/data/arena_hard_v2_files \\
        --out results/harness/arena_hard_v2/official.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tests" / "data" / "arena_hard_auto_v2.0"
BENCH = "arena-hard-v2.0"


def tool(folder: Path, judge: str, category: str, style: bool, seed: int) -> str:
    flags = ["-j", judge, "-c", category] + (["-f", "length", "markdown"] if style else [])
    run = (f"import numpy, runpy, sys; numpy.random.seed({seed}); sys.argv = ['show_result.py']"
           f" + {flags!r}; runpy.run_path({str(TOOL / 'show_result.py')!r}, "
           "run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", run], cwd=folder, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(TOOL)}, timeout=1800)
    text = "\n".join(x for x in done.stdout.splitlines() if "it/s" not in x).strip()
    if done.returncode:
        text += f"\n[exit {done.returncode}] " + (done.stderr.strip().splitlines() or [""])[-1]
    return text


def ours(folder: Path, judge: str, category: str, seed: int) -> str:
    from metajudge.analysis.arena_hard_v2 import (
        battles_from_judgments,
        plain_scores,
        style_scores,
    )

    data = folder / "data" / BENCH
    rows = [json.loads(line) for f in sorted((data / "model_judgment" / judge).glob("*.jsonl"))
            for line in f.read_text().splitlines()]
    rows = [r for r in rows if category in (r["category"], r.get("subcategory"))]
    battles = battles_from_judgments(rows)
    if battles.empty:
        return f"{category}: no battles ({len(rows)} judgment rows, all with a null game)"
    meta = {f.stem: {r["uid"]: r["metadata"] for r in map(json.loads,
                                                           f.read_text().splitlines())}
            for f in (data / "model_answer").glob("*.jsonl")}
    baseline = rows[0]["baseline"]
    plain = plain_scores(battles, rounds=100, seed=seed)
    lines = [f"{category} against {baseline}, {len(battles)} outcome rows:"]
    for model, row in plain.iterrows():
        lines.append(f"  plain  {model}: {100 * row['score']:.4f} "
                     f"[{100 * row['lower']:.4f}, {100 * row['upper']:.4f}]")
    try:
        style, coefs = style_scores(battles, [meta[m][u] for m, u in zip(
            battles["model"], battles["uid"], strict=True)],
            [meta[baseline][u] for u in battles["uid"]], baseline, rounds=100, seed=seed)
        for model, row in style.iterrows():
            lines.append(f"  style  {model}: {100 * row['style_score']:.4f} "
                         f"[{100 * row['style_lower']:.4f}, {100 * row['style_upper']:.4f}]"
                         f"; coefs {json.dumps({k: round(v, 4) for k, v in coefs.items()})}")
    except ValueError as error:
        lines.append(f"  style: {error}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    lines = ["# arena-hard-auto v2.0 `show_result.py` on this project's files", "",
             "Made by `python scripts/arena_hard_v2_official.py "
             + " ".join(str(f) for f in args.folders) + f" --seed {args.seed}`: the tool "
             f"unchanged (tests/data/arena_hard_auto_v2.0), after `np.random.seed({args.seed})`; "
             "ours on the same files and seed. Scores in percent; the tool's interval is the "
             "5th-95th percentile.", ""]
    for folder in args.folders:
        judges = sorted(p.name for p in (folder / "data" / BENCH / "model_judgment").iterdir())
        for judge in judges:
            lines += [f"## `{folder}` (judge `{judge}`)", ""]
            for category in ("hard_prompt", "creative_writing"):
                for style in (False, True):
                    flags = f"-j {judge} -c {category}" + (" -f length markdown" if style else "")
                    lines += [f"`show_result.py {flags}`:", "", "```",
                              tool(folder, judge, category, style, args.seed), "```", ""]
                lines += ["Ours:", "", "```", ours(folder, judge, category, args.seed), "```",
                          ""]
    text = "\n".join(lines)
    if args.out:
        args.out.write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text)


if __name__ == "__main__":
    main()
