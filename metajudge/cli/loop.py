"""``metajudge run`` and one command per stage: generate, judge, meta-judge, pairs, train, eft.

Every stage command works on a run directory on its own, with the iteration's model M_t (the
seed model for iteration 1, else the previous iteration's checkpoint), through the same engine
the loop uses (in-process, or servers it starts at the first request and stops for M_t).
``--redo`` moves a stage's records aside and makes them again under the current settings; a
later stage then refuses its records made from the old ones, naming them, until it is redone
too (:mod:`metajudge.provenance`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from metajudge.config import RunConfig, load_config

STAGE_HELP = {
    "judge": "Score every response of an iteration N times with the judge template.",
    "meta-judge": "Compare judgments pairwise, in both orders, with the meta-judge template.",
    "pairs": "Build actor and judge preference pairs and the TRL dataset of an iteration.",
    "train": "Train one iteration's DPO on its dpo_pairs.jsonl from M_t (training.launcher: "
             "inprocess, torchrun or accelerate).",
}


def _config_args(parser: argparse.ArgumentParser, config_required: bool,
                 out_required: bool = True) -> None:
    if config_required:
        parser.add_argument("config", help="run config (YAML)")
    else:
        parser.add_argument("--config", help="run config (YAML); defaults: the SPEC's")
    parser.add_argument("--out", required=out_required,
                        help="run directory (created or resumed)")
    _common(parser)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a config field, e.g. --set backend.kind=openai")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run or resume the loop described by a config",
                         description="Run or resume the Meta-Rewarding loop of a config.")
    _config_args(run, config_required=True, out_required=False)
    run.add_argument("--iterations", type=int, help="iterations in all (extends a finished run)")
    run.add_argument("--dry-run", action="store_true",
                     help="print the projected requests, tokens and hours per stage and "
                     "iteration, and which training set-ups fit the GPUs; run nothing")
    run.add_argument("--calibrate", metavar="RUN_DIR",
                     help="with --dry-run: tokens per request and tokens/s from a finished run")
    run.add_argument("--tokens-per-second", type=float, metavar="TPS",
                     help="with --dry-run: generated tokens/s of one replica (or engine)")
    run.add_argument("--gpus", metavar="COUNTxGB", help="with --dry-run: the GPUs training may "
                     "use, e.g. 8x80: which training set-ups fit")
    run.add_argument("--model-params", type=float, metavar="N",
                     help="with --gpus: the model's parameter count, when metajudge cannot "
                     "tell it (e.g. 8.03e9)")

    gen = sub.add_parser(
        "generate", help="sample K responses per prompt (the actor stage)",
        description="Sample K responses per prompt from a prompt file (JSONL with an "
        "'instruction' field) or the bundled pool into RUN/iter_NN/responses.jsonl. "
        "Rerunning with the same --out resumes and never duplicates.")
    _config_args(gen, config_required=False)
    gen.add_argument("--prompts", help="JSONL prompt file, or 'bundled' (default: config)")
    gen.add_argument("--limit", type=int, help="number of prompts to draw")
    gen.add_argument("-k", "--samples", type=int, help="responses per prompt (K)")
    gen.add_argument("--iteration", type=int, default=1, help="iteration number (default 1)")
    gen.add_argument("--redo", action="store_true",
                     help="move the iteration's responses aside and sample them again")

    for name, text in STAGE_HELP.items():
        stage = sub.add_parser(name, help=text, description=text + " Resumable: a rerun "
                               "skips every record already in RUN_DIR.")
        stage.add_argument("run_dir", help="run directory made by `run` or `generate`")
        stage.add_argument("--iteration", type=int, default=1, help="iteration (default 1)")
        if name in ("judge", "meta-judge", "pairs"):
            stage.add_argument("--redo", action="store_true", help="move this stage's records "
                               "aside and make them again under the current settings and "
                               "from the current records of the stages before it")
        if name == "train":
            stage.add_argument("--redo", action="store_true", help="move the iteration's "
                               "checkpoint aside and train again from M_t on the current pairs")
        _common(stage)

    from metajudge.cli.eft import add_parser as add_eft

    add_eft(sub)


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


def run(args: argparse.Namespace) -> None:
    if args.command == "eft":
        from metajudge.cli.eft import run as run_eft

        run_eft(args)
        return
    config = _config(args)
    progress = not args.no_progress
    if args.command == "run" and args.dry_run:
        from metajudge.costs import format_costs, project_costs, training_memory

        table = project_costs(config, Path(args.calibrate) if args.calibrate else None,
                              tokens_per_second=args.tokens_per_second)
        memory = training_memory(config, args.gpus, args.model_params) if args.gpus else None
        print(format_costs(table, memory))
    elif args.command == "run":
        if not args.out:
            raise ValueError("--out is required (or --dry-run)")
        from metajudge.loop import run_loop
        from metajudge.report.digest import format_digest
        from metajudge.stages.summary import JudgeHealthAlarm, health_thresholds

        try:
            table = run_loop(config, args.out, progress=progress)
        except JudgeHealthAlarm:  # stopped before training: the table of what was made
            import pandas as pd

            summary = Path(args.out) / "summary.csv"
            if summary.is_file():
                print(format_digest(pd.read_csv(summary), args.out, health_thresholds(config)))
            raise
        print(format_digest(table, args.out, health_thresholds(config)))
    else:
        _stage(args, config, progress)


def _stage(args: argparse.Namespace, config: RunConfig, progress: bool) -> None:
    from metajudge.loop import open_run
    from metajudge.store import Store

    out = args.out if args.command == "generate" else args.run_dir
    store = open_run(config, out) if args.command == "generate" else Store.open(out, config)
    iteration = args.iteration
    try:
        if args.command == "pairs":
            from metajudge.stages.pairs import run_pairs

            counts = run_pairs(store, iteration, redo=args.redo)
            print(f"pairs iteration {iteration}: " + ", ".join(
                f"{v} {k.replace('_', ' ')}" for k, v in counts.items()))
            return
        if args.command == "train":
            from metajudge.stages.train import run_train

            entry = run_train(store, iteration, progress=progress, redo=args.redo)
            print(f"train iteration {iteration}: {entry['pairs']} pairs, {entry['steps']} "
                  f"steps, launcher {entry['launcher']}, world size {entry['world_size']}, "
                  f"global batch {entry['global_batch_size']} in {entry['seconds']:.1f} s")
            return
        from metajudge.stages.generate import run_generate
        from metajudge.stages.judge import run_judge
        from metajudge.stages.meta_judge import run_meta_judge
        from metajudge.stages.runner import stage_engine
        from metajudge.stages.train import iteration_model

        stage = {"generate": run_generate, "judge": run_judge,
                 "meta-judge": run_meta_judge}[args.command]
        model = iteration_model(store, iteration)
        with stage_engine(config.backend, model, store.iteration_dir(iteration)) as backend:
            print(stage(store, backend, iteration, progress=progress,
                        redo=args.redo).line())
    finally:
        store.close()
