"""``metajudge eval …``: the harnesses on the command line.

    metajudge eval alpaca-eval --model smollm2-135m-instruct --limit 40 --out results/ae/seed
    metajudge eval alpaca-eval --annotations annotations.json      # annotations made elsewhere
    metajudge eval arena-hard --model runs/tiny/iter_02/checkpoint --limit 20 --out results/ah/t2
    metajudge eval arena-hard --version 2.0 --model smollm2-135m-instruct --limit 3 \
        --creative-writing-baseline o3-mini-2025-01-31 --out results/ah2/seed
    metajudge eval judge --model runs/tiny/iter_02/checkpoint --limit 30 --out results/je/t2

The judge defaults to the model itself; ``--judge`` names another model, and ``--judge-backend
openai --judge-url URL`` any OpenAI-compatible server (``--model-backend``/``--model-url``
likewise for the model). ``--set`` overrides any field of the evaluation config, e.g.
``--set generation.max_tokens=256`` or ``--set model.transformers.batch_size=32``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Any

from metajudge.config import BackendConfig, apply_overrides
from metajudge.evaluation.config import EvalConfig, default_name

HARNESSES = {
    "alpaca-eval": "AlpacaEval 2: answers to the 805 instructions, pairwise annotation against "
                   "gpt4_1106_preview, win rate and length-controlled win rate with interval.",
    "arena-hard": "Arena-Hard v0.1: answers to the 500 questions, two games per question "
                  "against gpt-4-0314, Bradley-Terry score, interval and style-controlled score; "
                  "--version 2.0: the 750 v2.0 questions against each category's baseline "
                  "(o3-mini-2025-01-31 for hard prompts, gemini-2.0-flash-001 for creative "
                  "writing), scores per category with style control.",
    "judge": "Judge evaluation: the model as judge on the human-ranked Open Assistant replies "
             "(agreement with and without ties, Spearman) and on reply pairs in both orders "
             "(position consistency).",
    "mt-bench": "MT-Bench: two-turn answers to the 80 questions, single-answer grading 1-10 "
                "per turn (against GPT-4's reference for math, reasoning and coding), in "
                "FastChat's files; per-turn and overall means with intervals.",
}
DEFAULT_BOOTSTRAP = {"alpaca-eval": 1000, "arena-hard": 100, "judge": 1000, "mt-bench": 1000}


def add_parser(sub: argparse._SubParsersAction) -> None:
    evaluate = sub.add_parser("eval", help="evaluation harnesses (AlpacaEval 2, Arena-Hard, "
                              "MT-Bench, judge-human agreement)",
                              description="Evaluation harnesses; see `metajudge eval HARNESS "
                              "--help`.")
    harnesses = evaluate.add_subparsers(dest="harness", required=True)
    for name, text in HARNESSES.items():
        parser = harnesses.add_parser(name, help=text.split(":")[0], description=text
                                      + " Resumable: rerun with the same --out to continue.")
        parser.add_argument("--model", help="alias, local directory or hub id (the judge "
                            "itself for `eval judge`)")
        parser.add_argument("--model-backend", default="transformers",
                            choices=["transformers", "openai", "vllm"])
        parser.add_argument("--model-url", help="server root ending in /v1 (openai backend)")
        if name != "judge":
            parser.add_argument("--judge", help="judge model (default: the model itself)")
            parser.add_argument("--judge-backend", choices=["transformers", "openai", "vllm"])
            parser.add_argument("--judge-url", help="judge server root ending in /v1")
        parser.add_argument("--name", help="the model's name in outputs and leaderboards")
        parser.add_argument("--limit", type=int, help="only the first N items (quick checks)")
        parser.add_argument("--out", help="output directory (created or resumed)")
        parser.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP[name],
                            help="bootstrap rounds for intervals")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--set", dest="overrides", action="append", default=[],
                            metavar="KEY=VALUE", help="override an evaluation config field")
        parser.add_argument("--no-progress", action="store_true")
        if name != "judge":
            parser.add_argument("--leaderboard", help="CSV to add the result row to "
                                "(default: leaderboard.csv beside --out)")
        if name == "alpaca-eval":
            parser.add_argument("--annotations", help="compute the metrics from annotations "
                                "made elsewhere (AlpacaEval layout) instead of running a judge")
            parser.add_argument("--annotator", help="annotate with one of alpaca_eval's own "
                                "annotator configs (e.g. weighted_alpaca_eval_gpt4_turbo) or "
                                "a configs.yaml of yours, through alpaca_eval's Python API "
                                "(needs metajudge[alpaca-eval])")
            parser.add_argument("--annotator-model", help="with --annotator: the model name "
                                "its OpenAI client asks for")
            parser.add_argument("--annotator-url", help="with --annotator: an OpenAI-"
                                "compatible server root ending in /v1 for its client")
            parser.add_argument("--annotator-key-env", default="OPENAI_API_KEY",
                                help="with --annotator: the variable holding the key")
            parser.add_argument("--fold-scheme", choices=["sklearn>=1.6", "sklearn<1.6"],
                                default="sklearn>=1.6", help="the LC cross-validation's folds: "
                                "current scikit-learn's, or those of installs before 1.6")
        if name in ("alpaca-eval", "arena-hard"):
            parser.add_argument("--rescore", action="store_true",
                                help="rebuild the files and metrics from the records already in "
                                "--out, without loading a model")
        if name == "arena-hard":
            parser.add_argument("--version", choices=["0.1", "2.0"], default="0.1",
                                help="Arena-Hard version (0.1: the paper's; 2.0: 2025). With "
                                "2.0, --limit N takes the first N questions of each "
                                "subcategory (coding, math, creative writing)")
            parser.add_argument("--categories", nargs="+",
                                choices=["hard_prompt", "creative_writing"],
                                help="v2.0: the categories to run (default both; records of "
                                "the other already in --out are kept and scored)")
            parser.add_argument("--baseline-answers", action="append", default=[],
                                metavar="FILE", help="v2.0: a baseline's answer file in the "
                                "v2.0 layout, e.g. arena-hard-auto's data/arena-hard-v2.0/"
                                "model_answer/gemini-2.0-flash-001.jsonl (creative writing's "
                                "official baseline, not carried here)")
            parser.add_argument("--creative-writing-baseline", metavar="MODEL",
                                help="v2.0: judge creative writing against this baseline "
                                "instead of gemini-2.0-flash-001 (o3-mini-2025-01-31 is carried; "
                                "others from --baseline-answers); every output names it and "
                                "no official number is claimed")
            parser.add_argument("--layout", choices=["v0.1", "v2.0"], default="v0.1",
                                help="arena-hard-auto file layout (v0.1: what its v0.1 "
                                "show_result.py reads)")
        if name == "judge":
            parser.add_argument("--no-pairs", action="store_true",
                                help="skip the pairwise position-consistency games")


def _backend(kind: str, model: str, url: str | None) -> BackendConfig:
    data: dict[str, Any] = {"kind": kind, "model": model}
    if kind == "openai":
        data["openai"] = {"served_model": model, **({"base_url": url} if url else {})}
    return BackendConfig.model_validate(data)


def build_config(args: argparse.Namespace) -> EvalConfig:
    if not args.model:
        raise ValueError("--model is required (or --annotations for alpaca-eval)")
    model = _backend(args.model_backend, args.model, args.model_url)
    judge = None
    if getattr(args, "judge", None) or getattr(args, "judge_backend", None):
        judge = _backend(args.judge_backend or "transformers", args.judge or args.model,
                         args.judge_url)
    data = {"harness": args.harness, "name": args.name or default_name(args.model),
            "model": model.model_dump(), "judge": judge.model_dump() if judge else None,
            "seed": args.seed}
    if getattr(args, "layout", None):
        data["layout"] = args.layout
    if getattr(args, "version", None) == "2.0":
        data["version"] = "2.0"
        section: dict[str, Any] = {"baseline_answers": [str(Path(f).resolve())
                                                        for f in args.baseline_answers]}
        if args.creative_writing_baseline:
            section["creative_writing_baseline"] = args.creative_writing_baseline
        data["arena_hard_v2"] = section
    return EvalConfig.model_validate(apply_overrides(data, args.overrides, EvalConfig))


def run(args: argparse.Namespace) -> None:
    from metajudge.store import Store

    if args.harness == "alpaca-eval" and args.annotations:
        _external_annotations(args)
        return
    if getattr(args, "rescore", False):
        _rescore(args)
        return
    config = build_config(args)
    if getattr(args, "annotator", None):
        _official_annotator(args, config)
        return
    if not args.out:
        raise ValueError("--out is required")
    if config.harness == "arena-hard" and config.version == "2.0":
        import yaml

        from metajudge.evaluation.arena_hard_v2 import (
            CATEGORIES,
            merged_settings,
            resolve_baselines,
            select_questions,
        )

        categories = tuple(args.categories or CATEGORIES)
        saved = Path(args.out) / "config.yaml"
        data = yaml.safe_load(saved.read_text(encoding="utf-8")) if saved.is_file() else None
        if isinstance(data, dict) and data.get("harness") == config.harness:
            # a category added later keeps the baselines given before (Store.open checks the
            # rest of the saved config; the games' settings check each category's baseline)
            config = config.model_copy(update={"arena_hard_v2": merged_settings(
                EvalConfig.model_validate(data).arena_hard_v2, config.arena_hard_v2,
                categories)})
        # a category without its baseline is refused before any model is loaded
        resolve_baselines(config.arena_hard_v2, select_questions(categories, args.limit))
    store = Store.open(args.out, config)
    progress = not args.no_progress
    try:
        metrics, board = _run_harness(args, config, store, progress)
    finally:
        store.close()
    print(json.dumps(metrics, indent=2, default=str))
    if board is not None:
        print(f"leaderboard: {_leaderboard(args)} ({len(board)} rows)")


@contextlib.contextmanager
def _backends(config: EvalConfig):  # type: ignore[no-untyped-def]
    from metajudge.backends import load_backend

    with load_backend(config.model) as model:
        if config.judge is None or config.judge == config.model:
            yield model, model
        else:
            with load_backend(config.judge) as judge:
                yield model, judge


def _run_harness(args: argparse.Namespace, config: EvalConfig, store: Any,
                 progress: bool) -> tuple[dict[str, object], Any]:
    with _backends(config) as (model, judge):
        if args.harness == "alpaca-eval":
            from metajudge.evaluation import alpaca_eval

            metrics = alpaca_eval.run_alpaca_eval(store, model, judge, limit=args.limit,
                                                  bootstrap_rounds=args.bootstrap,
                                                  progress=progress,
                                                  fold_scheme=args.fold_scheme)
            board = alpaca_eval.append_leaderboard_row(_leaderboard(args), config.name, metrics)
        elif args.harness == "arena-hard" and config.version == "2.0":
            from metajudge.evaluation.arena_hard_v2 import CATEGORIES, run_arena_hard_v2

            metrics = run_arena_hard_v2(store, model, judge, limit=args.limit,
                                        categories=tuple(args.categories or CATEGORIES),
                                        bootstrap_rounds=args.bootstrap, progress=progress)
            board = None  # per category scores: metrics.json (no v0.1 leaderboard row)
        elif args.harness == "arena-hard":
            from metajudge.evaluation import arena_hard

            metrics = arena_hard.run_arena_hard(store, model, judge, limit=args.limit,
                                                bootstrap_rounds=args.bootstrap,
                                                progress=progress)
            board = arena_hard.append_leaderboard_row(_leaderboard(args), config.name, metrics)
        elif args.harness == "mt-bench":
            from metajudge.evaluation.mt_bench import run_mt_bench

            metrics = run_mt_bench(store, model, judge, limit=args.limit,
                                   bootstrap_rounds=args.bootstrap, progress=progress)
            board = None
        else:
            from metajudge.evaluation.judge_eval import run_judge_eval

            metrics = run_judge_eval(store, judge, limit=args.limit, pairs=not args.no_pairs,
                                     bootstrap_rounds=args.bootstrap, progress=progress)
            board = None
    return metrics, board


def _official_annotator(args: argparse.Namespace, config: EvalConfig) -> None:
    from metajudge.backends import load_backend
    from metajudge.evaluation.alpaca_eval import append_leaderboard_row
    from metajudge.evaluation.alpaca_eval_official import run_official_annotator
    from metajudge.store import Store

    if not args.out:
        raise ValueError("--out is required")
    store = Store.open(args.out, config)
    try:
        with load_backend(config.model) as model:
            metrics = run_official_annotator(
                store, model, annotator=args.annotator, annotator_model=args.annotator_model,
                annotator_url=args.annotator_url, api_key_env=args.annotator_key_env,
                limit=args.limit, bootstrap_rounds=args.bootstrap,
                progress=not args.no_progress, fold_scheme=args.fold_scheme)
        append_leaderboard_row(_leaderboard(args), config.name, metrics)
    finally:
        store.close()
    print(json.dumps(metrics, indent=2, default=str))


def _rescore(args: argparse.Namespace) -> None:
    from metajudge.store import Store

    if not args.out:
        raise ValueError("--rescore needs --out (a folder this harness wrote)")
    store = Store.open(args.out)
    if "layout" in args and args.layout != store.config.layout:
        store.config = store.config.model_copy(update={"layout": args.layout})
    try:
        if args.harness == "arena-hard" and store.config.version == "2.0":
            from metajudge.evaluation.arena_hard_v2 import score_arena_hard_v2

            metrics = score_arena_hard_v2(store, limit=args.limit,
                                          categories=tuple(args.categories) if args.categories
                                          else None, bootstrap_rounds=args.bootstrap)
        elif args.harness == "arena-hard":
            from metajudge.evaluation import arena_hard

            metrics = arena_hard.score_arena_hard(store, limit=args.limit,
                                                  bootstrap_rounds=args.bootstrap)
            arena_hard.append_leaderboard_row(_leaderboard(args), store.config.name, metrics)
        else:
            from metajudge.evaluation import alpaca_eval

            metrics = alpaca_eval.score_alpaca_eval(store, limit=args.limit,
                                                    bootstrap_rounds=args.bootstrap,
                                                    fold_scheme=args.fold_scheme)
            alpaca_eval.append_leaderboard_row(_leaderboard(args), store.config.name, metrics)
    finally:
        store.close()
    print(json.dumps(metrics, indent=2, default=str))


def _leaderboard(args: argparse.Namespace) -> Path:
    if args.leaderboard:
        return Path(args.leaderboard)
    return Path(args.out).resolve().parent / "leaderboard.csv"


def _external_annotations(args: argparse.Namespace) -> None:
    from metajudge.evaluation.alpaca_eval import append_leaderboard_row, metrics_from_file
    from metajudge.tables import read_table

    frame = read_table(args.annotations, required=("preference",))
    results = metrics_from_file(frame, bootstrap_rounds=args.bootstrap, seed=args.seed,
                                fold_scheme=args.fold_scheme)
    for name, metrics in results.items():
        name = args.name or name
        print(json.dumps({"model": name, **metrics}, indent=2, default=str))
        if args.leaderboard or args.out:
            append_leaderboard_row(_leaderboard(args), name, metrics)
