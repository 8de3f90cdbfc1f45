"""The analysis functions against published numbers in ../shared/data; writes a Markdown report.

    .venv/bin/python benchmarks/published_checks.py --data ../shared/data \\
        --out results/analysis/published_checks.md

* AlpacaEval LC win rate, all 58 annotation files: at the C that reproduces each leaderboard
  value, and with cross-validated C against alpaca-eval 0.6.6 + scikit-learn 1.9.1's recomputation;
* Arena-Hard: markdown style counts of the gpt-4-0314 answers against the published per-answer
  metadata, published avg_tokens from that metadata, length–score rank correlations;
* judge–human agreement of the two PandaLM-set judges with the 3-annotator majority.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from metajudge.analysis import answer_style, length_controlled_winrate, pairwise_agreement, spearman

#: per-model win rate, LC win rate and mean length: the data of notebook 03
MODELS_CSV = Path(__file__).resolve().parents[1] / "results" / "analysis" / "alpaca_eval_models.csv"


def alpaca_eval(data: Path) -> str:
    reproduction = pd.read_csv(data / "lc_reproduction.csv").set_index("model")
    leaderboard = pd.read_csv(data / "leaderboard.csv").set_index("model")
    rows = []
    start = time.perf_counter()
    for path in sorted((data / "annotations").glob("*.jsonl.gz")):
        model = path.name.removesuffix(".jsonl.gz")
        frame = pd.read_json(path, lines=True)
        cv = length_controlled_winrate(frame)
        row = reproduction.loc[model]
        out = {"model": model, "win_rate": cv.win_rate,
               "length_controlled_winrate": cv.length_controlled_winrate,
               "lc_standard_error": cv.lc_standard_error,
               "avg_length": int(frame["len_2"].mean()),
               "cv_C": cv.cv_C, "expected_cv_C": row.cv_chosen_C,
               "abs_diff_cv": abs(cv.length_controlled_winrate
                                  - row.recomputed_lc_ae066_sklearn191)}
        if model in leaderboard.index:  # the baseline against itself needs no C
            matched = (length_controlled_winrate(frame, C=row.leaderboard_matching_C)
                       if not np.isnan(row.leaderboard_matching_C) else cv)
            published = leaderboard.loc[model]
            out.update(abs_diff_matched=abs(matched.length_controlled_winrate - row.leaderboard_lc),
                       abs_diff_win_rate=abs(matched.win_rate - published.win_rate))
        rows.append(out)
    seconds = time.perf_counter() - start
    table = pd.DataFrame(rows)
    MODELS_CSV.parent.mkdir(parents=True, exist_ok=True)
    table[["model", "win_rate", "length_controlled_winrate", "lc_standard_error",
           "avg_length"]].to_csv(MODELS_CSV, index=False)
    on_board = table.dropna(subset=["abs_diff_matched"])
    return (
        "## AlpacaEval 2 LC win rate (annotations of 58 models)\n\n"
        "| comparison | models | max abs Δ (points) | mean abs Δ |\n|---|---|---|---|\n"
        f"| LC at the leaderboard-matching C vs leaderboard | {len(on_board)} "
        f"| {on_board.abs_diff_matched.max():.1e} | {on_board.abs_diff_matched.mean():.1e} |\n"
        f"| win rate vs leaderboard | {len(on_board)} | {on_board.abs_diff_win_rate.max():.1e} "
        f"| {on_board.abs_diff_win_rate.mean():.1e} |\n"
        f"| LC with cross-validated C vs alpaca-eval 0.6.6 (sklearn 1.9.1) | {len(table)} "
        f"| {table.abs_diff_cv.max():.1e} | {table.abs_diff_cv.mean():.1e} |\n\n"
        f"Cross-validation chose the same C as alpaca-eval 0.6.6 for "
        f"{int(np.isclose(table.cv_C, table.expected_cv_C).sum())} of "
        f"{int(table.cv_C.notna().sum())} fitted models (the baseline against itself, "
        f"gpt4_1106_preview, is 50 by definition and has no fit). The "
        f"{len(table) + len(on_board)} LC computations took {seconds:.1f} s.\n")


def arena_hard(data: Path, benchmarks: Path) -> str:
    meta = pd.read_csv(data / "answer_style_metadata_v0.1.csv")
    base = meta[meta["model"] == "gpt-4-0314"].set_index("question_id")
    answers = pd.read_json(benchmarks / "arena_hard_v0.1_gpt-4-0314_answers.jsonl", lines=True)
    ours = answer_style(answers.set_index("uid")["messages"].map(
        lambda m: m[1]["content"]["answer"]))
    columns = ["answer_chars", "header_count", "list_count", "bold_count"]
    mismatches = {c: int((ours.loc[base.index, c] != base[c]).sum()) for c in columns}
    published = pd.read_csv(data / "leaderboard_v0.1_published.csv")
    means = meta.groupby("model")["token_len"].mean()
    matched = published[published["model_file"].isin(means.index)]
    same_tokens = int((means.loc[matched["model_file"]].astype(int).to_numpy()
                       == matched["avg_tokens"].to_numpy()).sum())
    lines = [
        "## Arena-Hard v0.1\n",
        f"Markdown counts of the 500 gpt-4-0314 answers vs the published metadata: mismatching "
        f"answers per feature {mismatches}; mean per answer "
        + ", ".join(f"{c} {ours[c].mean():.3f}" for c in columns) + ".\n",
        f"Published avg_tokens equal to the truncated mean token_len of the metadata: "
        f"{same_tokens} of {len(matched)} leaderboard rows with an answer file.\n",
        "| table | models | Spearman(avg_tokens, score) |\n|---|---|---|",
    ]
    tables = {t: g.set_index("model") for t, g in published.groupby("table")}
    for name, table in tables.items():
        lines.append(f"| {name} | {len(table)} | "
                     f"{spearman(table.avg_tokens.to_numpy(), table.score.to_numpy()):.3f} |")
    standard, styled = tables["v0.1_standard_2024-11-14"], tables["v0.1_style_control_2024-11-14"]
    common = standard.index.intersection(styled.index)

    def rho(table: pd.DataFrame) -> float:
        return spearman(table.loc[common].avg_tokens.to_numpy(),
                        table.loc[common].score.to_numpy())

    lines.append(f"\nOn the {len(common)} models of both 2024-11-14 tables: "
                 f"{rho(standard):.3f} without and {rho(styled):.3f} with style control.\n")
    return "\n".join(lines)


def pandalm(data: Path) -> str:
    pairs = pd.read_json(data / "pandalm_testset_v1_with_judges.jsonl", lines=True)
    lines = ["## Judge–human agreement, PandaLM test set (999 pairs, 3 annotators)\n",
             "| judge | agreement (ties counted) | 95% CI | agreement without ties | 95% CI "
             "| pairs without ties |\n|---|---|---|---|---|---|"]
    for judge in ("gpt35_turbo", "pandalm_7b"):
        r = pairwise_agreement(pairs, judge, bootstrap_rounds=2000, seed=0)
        lines.append(
            f"| {judge} | {r['agreement']:.3f} | [{r['agreement_lower']:.3f}, "
            f"{r['agreement_upper']:.3f}] | {r['agreement_without_ties']:.3f} | "
            f"[{r['agreement_without_ties_lower']:.3f}, {r['agreement_without_ties_upper']:.3f}]"
            f" | {r['pairs_without_ties']} |")
    return "\n".join(lines) + "\n\nA missing verdict (25 unparsable gpt-3.5-turbo outputs) " \
        "counts as a disagreement; the interval resamples pairs (2,000 rounds).\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("results/analysis/published_checks.md"))
    args = parser.parse_args()
    report = "\n".join([
        "# Analysis checks against published numbers\n",
        "Command: `.venv/bin/python benchmarks/published_checks.py --data ../shared/data` "
        "(also writes `alpaca_eval_models.csv`: per model, our win rate, LC win rate and its "
        "standard error with cross-validated C, and the mean output length in characters)\n",
        alpaca_eval(args.data / "alpaca_eval"),
        arena_hard(args.data / "arena_hard", args.data / "benchmarks"),
        pandalm(args.data / "pandalm_human_pairwise"),
    ])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
