"""``metajudge analyze …``: the analyses on files, printed as tables and optionally written out.

Files are read here; the analyses themselves (:mod:`metajudge.analysis`) are pure.

    metajudge analyze lc annotations.json            # AlpacaEval leaderboard row(s)
    metajudge analyze bt battles.jsonl --baseline gpt-4-0314
    metajudge analyze agreement-pairwise pandalm.jsonl --verdict gpt35_turbo
    metajudge analyze agreement-ranked scored_replies.jsonl --score score
    metajudge analyze style answers.jsonl --out style.csv
    metajudge analyze bias runs/tiny
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd


def add_parser(sub: argparse._SubParsersAction) -> None:
    analyze = sub.add_parser("analyze", help="analyses on existing files (LC win rate, "
                             "Bradley–Terry, agreement, style, bias)",
                             description="Analyses on existing files; see `metajudge analyze "
                             "KIND --help`.")
    kinds = analyze.add_subparsers(dest="analysis", required=True)

    lc = kinds.add_parser(
        "lc", help="AlpacaEval win rate and length-controlled win rate",
        description="Win rate and length-controlled win rate (AlpacaEval length_controlled_v1) "
        "of annotation files in AlpacaEval's layout (instruction, output_1 = baseline, "
        "output_2 = model, preference in [1, 2]); .json (as alpaca_eval writes), .jsonl or "
        ".csv. A file holding several models (generator_2) gives one row per model.")
    lc.add_argument("files", nargs="+", help="annotation files")
    lc.add_argument("--C", type=float, help="fixed C (default: chosen by cross-validation)")
    lc.add_argument("--bootstrap", type=int, default=0,
                    help="bootstrap rounds for an LC interval (instructions resampled)")
    lc.add_argument("--seed", type=int, default=0)
    lc.add_argument("--fold-scheme", choices=["sklearn>=1.6", "sklearn<1.6"],
                    default="sklearn>=1.6", help="folds of the cross-validation choosing C "
                    "(installs of scikit-learn before 1.6 made other folds)")
    lc.add_argument("--out", help="write the leaderboard rows here (CSV)")

    bt = kinds.add_parser(
        "bt", help="Bradley–Terry scores against a baseline (Arena-Hard)",
        description="Bradley–Terry scores with bootstrap intervals from battles in "
        "arena-hard-auto's layout (model_a, model_b, winner, optional weight); with style "
        "columns (token_len_a/_b, header_count_a/_b, list_count_a/_b, bold_count_a/_b) also "
        "the style-controlled score.")
    bt.add_argument("battles")
    bt.add_argument("--baseline", required=True)
    bt.add_argument("--bootstrap", type=int, default=100)
    bt.add_argument("--seed", type=int, default=42)
    bt.add_argument("--out", help="write the table here (CSV)")

    pairwise = kinds.add_parser(
        "agreement-pairwise", help="pairwise verdicts vs the annotators' majority",
        description="Agreement of pairwise verdicts (0 tie, 1 first, 2 second) with the "
        "majority of several human labels per pair, with and without ties.")
    pairwise.add_argument("file")
    pairwise.add_argument("--verdict", required=True, action="append",
                          help="verdict column (repeatable)")
    pairwise.add_argument("--human", default="human", help="column of label lists")
    pairwise.add_argument("--bootstrap", type=int, default=1000)
    pairwise.add_argument("--seed", type=int, default=0)

    ranked = kinds.add_parser(
        "agreement-ranked", help="judge scores vs human ranks",
        description="Agreement of judge scores with human ranks (prompt_id, rank, score "
        "columns): pairwise agreement with and without judge ties, mean per-prompt Spearman.")
    ranked.add_argument("file")
    ranked.add_argument("--score", default="score")
    ranked.add_argument("--bootstrap", type=int, default=1000)
    ranked.add_argument("--seed", type=int, default=0)

    style = kinds.add_parser(
        "style", help="markdown style features of answers (Arena-Hard style control)",
        description="Header, list and bold counts outside code blocks and character length "
        "for each answer of an Arena-Hard answer file (messages[1].content.answer) or of a "
        "table with an 'answer' or 'output' column.")
    style.add_argument("file")
    style.add_argument("--out", help="write per-answer features here (CSV)")

    bias = kinds.add_parser(
        "bias", help="judge and meta-judge bias diagnostics of a run",
        description="The per-iteration table of a run directory (as in summary.csv): judge "
        "score distribution and parse-failure rate, score–length Spearman, mean response "
        "length, meta-judge position consistency, first-position share and score bias.")
    bias.add_argument("run_dir")
    bias.add_argument("--out", help="write the table here (CSV)")


def run(args: argparse.Namespace) -> None:
    from metajudge.tables import read_table

    if args.analysis == "lc":
        _print_and_save(_lc_table(args, read_table), args.out)
    elif args.analysis == "bt":
        from metajudge.analysis.bradley_terry import bradley_terry_scores

        battles = read_table(args.battles, required=("model_a", "model_b", "winner"))
        table = bradley_terry_scores(battles, args.baseline, bootstrap_rounds=args.bootstrap,
                                     seed=args.seed)
        _print_and_save(table, args.out)
    elif args.analysis == "agreement-pairwise":
        from metajudge.analysis.agreement import pairwise_agreement

        pairs = read_table(args.file, required=(args.human, *args.verdict))
        rows = {column: pairwise_agreement(pairs, column, human=args.human,
                                           bootstrap_rounds=args.bootstrap, seed=args.seed)
                for column in args.verdict}
        _print_and_save(pd.DataFrame(rows).T, None)
    elif args.analysis == "agreement-ranked":
        from metajudge.analysis.agreement import ranked_agreement

        replies = read_table(args.file, required=("prompt_id", "rank", args.score))
        result = ranked_agreement(replies, score=args.score, bootstrap_rounds=args.bootstrap,
                                  seed=args.seed)
        print(json.dumps(result, indent=2))
    elif args.analysis == "style":
        from metajudge.analysis.style import answer_style

        answers = read_table(args.file)
        _print_and_save(answer_style(_answer_texts(answers)).describe().T
                        if args.out is None else answer_style(_answer_texts(answers)), args.out)
    elif args.analysis == "bias":
        from metajudge.stages.summary import run_table

        _print_and_save(run_table(Path(args.run_dir)), args.out)


def _lc_table(args: argparse.Namespace, read_table) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    from metajudge.analysis.length_controlled import length_controlled_winrate

    rows = {}
    for file in args.files:
        frame = read_table(file, required=("preference",))
        groups = (frame.groupby("generator_2", sort=False) if "generator_2" in frame.columns
                  else [(Path(file).name.split(".")[0], frame)])
        for model, part in groups:
            result = length_controlled_winrate(
                part.reset_index(drop=True), C=args.C,
                bootstrap_rounds=args.bootstrap, seed=args.seed, fold_scheme=args.fold_scheme)
            row = result.as_dict()
            del row["coefficients"]
            row.update({f"coef_{k}": v for k, v in result.coefficients.items()})
            rows[model] = row
    table = pd.DataFrame(rows).T
    table.index.name = "model"
    return table.sort_values("length_controlled_winrate", ascending=False)


def _answer_texts(answers: pd.DataFrame) -> pd.Series:
    if "messages" in answers.columns:
        texts = answers["messages"].map(lambda turns: turns[-1]["content"]["answer"]
                                        if isinstance(turns[-1]["content"], dict)
                                        else turns[-1]["content"])
        key = "uid" if "uid" in answers.columns else None
        return texts.set_axis(answers[key]) if key else texts
    for column in ("answer", "output"):
        if column in answers.columns:
            return answers[column]
    raise ValueError("answers need 'messages' (Arena-Hard), 'answer' or 'output'")


def _print_and_save(table: pd.DataFrame, out: str | None) -> None:
    with pd.option_context("display.max_rows", 500, "display.width", 160,
                           "display.max_columns", 30, "display.precision", 4):
        print(table.to_string())
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(out)
        print(f"written to {out}")
