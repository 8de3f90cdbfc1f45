"""``metajudge eft``: the EFT seed stage (iteration 0) on human-ranked replies."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from metajudge.config import load_config


def add_parser(sub: argparse._SubParsersAction) -> None:
    eft = sub.add_parser(
        "eft", help="the EFT seed stage: judge human-ranked replies, keep the judgments that "
        "agree with the humans, SFT the seed model on them",
        description="Evaluation fine-tuning (iteration 0, Self-Rewarding's EFT): M_0 judges "
        "every human-ranked reply N times; a prompt's judgments are kept when their scores "
        "order the replies as the humans did; SFT on the kept (judge prompt -> judgment) pairs "
        "gives DIR/checkpoint. Resumable. Then: metajudge run CONFIG --set eft.checkpoint=DIR.")
    eft.add_argument("--ranked", required=True, help="JSONL of prompts with human-ranked "
                     "replies (schema of oasst1_en_val_ranked.jsonl)")
    eft.add_argument("--out", required=True, help="output folder (created or resumed)")
    eft.add_argument("--config", help="run config (YAML): backend, judge template, eft.*")
    eft.add_argument("--limit", type=int, help="only the first N usable prompts")
    eft.add_argument("--set", dest="overrides", action="append", default=[],
                     metavar="KEY=VALUE")
    eft.add_argument("--redo", action="store_true", help="move the judgments aside and judge "
                     "again (the --ranked texts or --limit changed)")
    eft.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> None:
    from metajudge.stages.eft import run_eft

    saved = Path(args.out) / "config.yaml"
    path = args.config or (saved if saved.is_file() else None)
    summary = run_eft(load_config(path, args.overrides), args.ranked, args.out,
                      limit=args.limit, progress=not args.no_progress, redo=args.redo)
    print(json.dumps(summary, indent=2, default=str))
