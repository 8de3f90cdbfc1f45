"""The ``metajudge`` command: parse arguments, call one library function, show progress.

    metajudge run configs/tiny.yaml --out runs/tiny
    metajudge generate --prompts my_prompts.jsonl --set generation.samples_per_prompt=4 --out runs/g
    metajudge judge runs/g --iteration 1
    metajudge train runs/g --iteration 1

Subcommands live beside this module: :mod:`~metajudge.cli.loop` (the loop and one command per
stage), :mod:`~metajudge.cli.evaluate` (``eval``), :mod:`~metajudge.cli.analyze`
(``analyze``), :mod:`~metajudge.cli.view` (``view``); ``report`` is here.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from metajudge import __version__
from metajudge.backends.serving import ServerError
from metajudge.extras import MissingExtraError
from metajudge.jsonl import InputError
from metajudge.loop import TrainingFailed
from metajudge.stages.runner import RetryableFailuresRemain
from metajudge.stages.summary import JudgeHealthAlarm
from metajudge.stages.train import LaunchFailed
from metajudge.store import ConfigMismatchError, LockedError


def build_parser() -> argparse.ArgumentParser:
    from metajudge.cli import analyze, evaluate, loop, view

    parser = argparse.ArgumentParser(
        prog="metajudge",
        description="Meta-Rewarding self-improvement: actor, judge and meta-judge in one model.",
    )
    parser.add_argument("--version", action="version", version=f"metajudge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    loop.add_parsers(sub)
    evaluate.add_parser(sub)
    analyze.add_parser(sub)
    view.add_parser(sub)
    report = sub.add_parser(
        "report", help="a run's tables and figures (PNG and PDF)",
        description="Write a run's tables and figures into a folder: iteration curves beside "
        "the paper's, judge score distributions, parse failures, meta-judge position and score "
        "bias, judge length bias, judge-human agreement.")
    report.add_argument("run_dir")
    report.add_argument("--harness", help="folder of `metajudge eval` outputs "
                        "({alpaca_eval,arena_hard,judge,mt_bench}/<model>/) for the run's models")
    report.add_argument("--compare", action="append", default=[], metavar="RUN_DIR",
                        help="another run (e.g. the Self-Rewarding baseline) to draw beside it")
    report.add_argument("--out", required=True, help="results folder")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        if args.command == "analyze":
            from metajudge.cli.analyze import run as run_analysis

            run_analysis(args)
        elif args.command == "report":
            from metajudge.report.build import write_report

            files = write_report(Path(args.run_dir), Path(args.out),
                                 Path(args.harness) if args.harness else None,
                                 [Path(p) for p in args.compare])
            print(f"{len(files)} files written to {args.out}")
        elif args.command == "view":
            from metajudge.cli.view import run as run_view

            run_view(args)
        elif args.command == "eval":
            from metajudge.cli.evaluate import run as run_eval

            run_eval(args)
        else:
            from metajudge.cli.loop import run as run_loop_command

            run_loop_command(args)
    except (InputError, ConfigMismatchError, LockedError, MissingExtraError,
            FileNotFoundError, RetryableFailuresRemain, ValueError, ServerError,
            TrainingFailed, LaunchFailed, JudgeHealthAlarm) as exc:
        print(f"metajudge: error: {exc}", file=sys.stderr)
        return 2
    return 0


__all__ = ["build_parser", "main"]
