"""The ``metajudge`` command: parse arguments, call one library function, show progress.

    metajudge run configs/tiny.yaml --out runs/tiny
    metajudge generate --prompts my_prompts.jsonl --set generation.samples_per_prompt=4 --out runs/g
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from metajudge import __version__
from metajudge.config import RunConfig, load_config
from metajudge.extras import MissingExtraError
from metajudge.jsonl import InputError
from metajudge.store import ConfigMismatchError


def _add_config_args(parser: argparse.ArgumentParser, config_required: bool,
                     out_required: bool = True) -> None:
    if config_required:
        parser.add_argument("config", help="run config (YAML)")
    else:
        parser.add_argument("--config", help="run config (YAML); defaults: the SPEC's")
    parser.add_argument("--out", required=out_required,
                        help="run directory (created or resumed)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a config field, e.g. --set backend.kind=openai")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metajudge",
        description="Meta-Rewarding self-improvement: actor, judge and meta-judge in one model.",
    )
    parser.add_argument("--version", action="version", version=f"metajudge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run or resume the loop described by a config",
                         description="Run or resume the Meta-Rewarding loop of a config.")
    _add_config_args(run, config_required=True, out_required=False)
    run.add_argument("--iterations", type=int, help="iterations in all (extends a finished run)")
    run.add_argument("--dry-run", action="store_true",
                     help="print the projected requests, backend calls and tokens per stage "
                     "and iteration, and run nothing")
    run.add_argument("--calibrate", metavar="RUN_DIR",
                     help="with --dry-run: estimate tokens per request from a finished run")

    gen = sub.add_parser(
        "generate", help="sample K responses per prompt (the actor stage)",
        description="Sample K responses per prompt from a prompt file (JSONL with an "
        "'instruction' field) or the bundled pool into RUN/iter_01/responses.jsonl. "
        "Rerunning with the same --out resumes and never duplicates.",
    )
    _add_config_args(gen, config_required=False)
    gen.add_argument("--prompts", help="JSONL prompt file, or 'bundled' (default: config)")
    gen.add_argument("--limit", type=int, help="number of prompts to draw")
    gen.add_argument("-k", "--samples", type=int, help="responses per prompt (K)")
    gen.add_argument("--iteration", type=int, default=1, help="iteration number (default 1)")

    from metajudge.analysis.cli import add_parser as add_analyze_parser
    from metajudge.evaluation.cli import add_parser as add_eval_parser

    add_eval_parser(sub)
    add_analyze_parser(sub)
    report = sub.add_parser(
        "report", help="a run's tables and figures (PNG and PDF)",
        description="Write a run's tables and figures into a folder: iteration curves beside "
        "the paper's, judge score distributions, parse failures, meta-judge position and score "
        "bias, judge length bias, judge-human agreement.")
    report.add_argument("run_dir")
    report.add_argument("--harness", help="folder of `metajudge eval` outputs "
                        "({alpaca_eval,arena_hard,judge}/<model>/) for the run's models")
    report.add_argument("--out", required=True, help="results folder")

    for name, text in STAGE_HELP.items():
        stage = sub.add_parser(name, help=text, description=text + " Resumable: a rerun "
                               "skips every record already in RUN_DIR.")
        stage.add_argument("run_dir", help="run directory made by `run` or `generate`")
        stage.add_argument("--iteration", type=int, default=1, help="iteration (default 1)")
        stage.add_argument("--set", dest="overrides", action="append", default=[],
                           metavar="KEY=VALUE", help="override a saved config field")
        stage.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


STAGE_HELP = {
    "judge": "Score every response of an iteration N times with the judge template.",
    "meta-judge": "Compare judgments pairwise, in both orders, with the meta-judge template.",
    "pairs": "Build actor and judge preference pairs and the TRL dataset of an iteration.",
}


def _config(args: argparse.Namespace) -> RunConfig:
    overrides = list(args.overrides)
    if args.command in STAGE_HELP:
        saved = Path(args.run_dir) / "config.yaml"
        if not saved.is_file():
            raise FileNotFoundError(f"{args.run_dir} is not a run directory (no config.yaml)")
        return load_config(saved, overrides)
    path = getattr(args, "config", None)
    if args.command == "run" and args.iterations:
        overrides.append(f"iterations={args.iterations}")
    if args.command == "generate":
        if args.prompts:
            overrides.append(f"prompts.source={args.prompts}")
        if args.limit:
            overrides += [f"prompts.per_iteration={args.limit}"]
        if args.samples:
            overrides.append(f"generation.samples_per_prompt={args.samples}")
        if path is None:
            saved = Path(args.out) / "config.yaml"
            path = saved if saved.is_file() else None
    return load_config(path, overrides)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        if args.command == "analyze":
            from metajudge.analysis.cli import run as run_analysis

            run_analysis(args)
            return 0
        if args.command == "report":
            from metajudge.report.build import write_report

            files = write_report(Path(args.run_dir), Path(args.out),
                                 Path(args.harness) if args.harness else None)
            print(f"{len(files)} files written to {args.out}")
            return 0
        if args.command == "eval":
            from metajudge.evaluation.cli import run as run_eval

            run_eval(args)
            return 0
        config = _config(args)
        progress = not args.no_progress
        if args.command == "run" and args.dry_run:
            from metajudge.costs import format_costs, project_costs

            calibrate = Path(args.calibrate) if args.calibrate else None
            print(format_costs(project_costs(config, calibrate)))
        elif args.command == "run":
            if not args.out:
                raise ValueError("--out is required (or --dry-run)")
            import pandas as pd

            from metajudge.loop import run_loop

            table = run_loop(config, args.out, progress=progress)
            with pd.option_context("display.max_rows", 200, "display.width", 120):
                print(table.set_index("iteration").T.to_string())
            print(f"summary written to {args.out}/summary.csv")
        elif args.command == "generate":
            from metajudge.backends import load_backend
            from metajudge.generate import run_generate
            from metajudge.loop import open_run

            store = open_run(config, args.out)
            with load_backend(config.backend) as backend:
                summary = run_generate(store, backend, args.iteration, progress=progress)
            print(summary.line())
        elif args.command in STAGE_HELP:
            _run_stage(args, config, progress)
    except (InputError, ConfigMismatchError, MissingExtraError, FileNotFoundError,
            ValueError) as exc:
        print(f"metajudge: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _run_stage(args: argparse.Namespace, config: RunConfig, progress: bool) -> None:
    from metajudge.store import RunStore

    store = RunStore.open(args.run_dir, config)
    if args.command == "pairs":
        from metajudge.pairs.build import run_pairs

        counts = run_pairs(store, args.iteration)
        print(f"pairs iteration {args.iteration}: " + ", ".join(f"{v} {k.replace('_', ' ')}"
                                                                 for k, v in counts.items()))
        return
    from metajudge.backends import load_backend
    from metajudge.judging.judge import run_judge
    from metajudge.judging.meta_judge import run_meta_judge

    stage = run_judge if args.command == "judge" else run_meta_judge
    with load_backend(config.backend) as backend:
        print(stage(store, backend, args.iteration, progress=progress).line())


if __name__ == "__main__":
    sys.exit(main())
