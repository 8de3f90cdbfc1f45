"""LC win rate of the AlpacaEval models in ../shared/data: metajudge vs alpaca-eval 0.6.6.

Runs in an environment that has both packages (``make bench-env`` creates ``.venv-bench`` with
``alpaca-eval==0.6.6`` and ``scikit-learn==1.9.1``). alpaca-eval downloads ``df_gamed.csv`` from the
Hugging Face hub; with no network here its ``hf_hub_download`` is pointed at the identical local
file (same sha256 as the bundled copy). Both sides get the same annotation frames, and each side's
time covers only its LC function. Writes a Markdown table and a per-model CSV.

    .venv-bench/bin/python benchmarks/lc_winrate_alpaca_eval.py \\
        --data ../shared/data/alpaca_eval --out results/benchmarks
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from rows import save_rows


def load_annotations(data: Path, model: str, reference: pd.DataFrame) -> pd.DataFrame:
    """One model's annotations in the layout alpaca_eval works on (full output texts)."""
    frame = pd.read_json(data / "annotations" / f"{model}.jsonl.gz", lines=True)
    frame["output_1"] = reference.loc[frame["ref_index"], "output"].to_numpy()
    assert (frame["output_1"].str.len().to_numpy() == frame["len_1"].to_numpy()).all()
    assert (frame["output_2"].str.len().to_numpy() == frame["len_2"].to_numpy()).all()
    return frame[["instruction", "output_1", "output_2", "generator_1", "generator_2",
                  "annotator", "preference"]].reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/alpaca_eval"))
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks"))
    parser.add_argument("--models", nargs="*", help="default: every annotation file")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")

    from alpaca_eval.metrics import glm_winrate

    from metajudge.analysis import gamed_baselines_path, length_controlled_winrate

    local = str(gamed_baselines_path())
    glm_winrate.hf_hub_download = lambda *a, filename, **k: (  # no network: the same file
        local if filename == "df_gamed.csv" else
        str(args.data / "instruction_difficulty.csv"))

    reference = pd.read_json(args.data / "reference_outputs_gpt4_1106_preview.jsonl.gz",
                             lines=True).set_index("ref_index")
    published = pd.read_csv(args.data / "lc_reproduction.csv").set_index("model")
    models = args.models or sorted(p.name.removesuffix(".jsonl.gz")
                                   for p in (args.data / "annotations").glob("*.jsonl.gz"))
    rows = []
    for model in models:
        frame = load_annotations(args.data, model, reference)
        start = time.perf_counter()
        theirs = glm_winrate.get_length_controlled_winrate(
            frame.copy(), save_weights_dir=None, is_add_glm_preference_inplace=False)
        their_s = time.perf_counter() - start
        start = time.perf_counter()
        ours = length_controlled_winrate(frame)
        our_s = time.perf_counter() - start
        rows.append({
            "model": model,
            "lc_alpaca_eval": theirs["length_controlled_winrate"],
            "lc_metajudge": ours.length_controlled_winrate,
            "abs_diff_lc": abs(theirs["length_controlled_winrate"]
                               - ours.length_controlled_winrate),
            "abs_diff_lc_se": abs(theirs["lc_standard_error"] - ours.lc_standard_error),
            "abs_diff_win_rate": abs(theirs["win_rate"] - ours.win_rate),
            "abs_diff_published_recompute": abs(
                published.loc[model, "recomputed_lc_ae066_sklearn191"]
                - ours.length_controlled_winrate) if model in published.index else np.nan,
            "cv_C": ours.cv_C,
            "seconds_alpaca_eval": their_s,
            "seconds_metajudge": our_s,
        })
        print(f"{model:40s} {rows[-1]['lc_metajudge']:8.4f} Δ={rows[-1]['abs_diff_lc']:.1e}"
              f"  {their_s:.3f}s vs {our_s:.3f}s", flush=True)
    table = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "lc_winrate_alpaca_eval.csv", index=False)
    total_theirs, total_ours = table.seconds_alpaca_eval.sum(), table.seconds_metajudge.sum()
    summary = (
        "# LC win rate: metajudge vs alpaca-eval 0.6.6 (scikit-learn 1.9.1)\n\n"
        "Command: `.venv-bench/bin/python benchmarks/lc_winrate_alpaca_eval.py`\n\n"
        "| models | max abs Δ LC | mean abs Δ LC | max abs Δ LC SE | max abs Δ win rate "
        "| alpaca-eval s | metajudge s | speed-up |\n|---|---|---|---|---|---|---|---|\n"
        f"| {len(table)} | {table.abs_diff_lc.max():.2e} | {table.abs_diff_lc.mean():.2e} "
        f"| {table.abs_diff_lc_se.max():.2e} | {table.abs_diff_win_rate.max():.2e} "
        f"| {total_theirs:.2f} | {total_ours:.2f} | {total_theirs / total_ours:.1f}× |\n\n"
        "Times cover each side's LC function only, summed over the models, in one run on the "
        "same machine. Per-model rows: `lc_winrate_alpaca_eval.csv`.\n")
    (args.out / "lc_winrate_alpaca_eval.md").write_text(summary)
    save_rows(args.out, "lc_winrate_alpaca_eval", [{
        "measurement": f"LC win rate of {len(table)} AlpacaEval models (cross-validated C)",
        "reference": "alpaca-eval 0.6.6 `get_length_controlled_winrate` (scikit-learn 1.9.1)",
        "ratio": f"{total_theirs / total_ours:.1f}× faster",
        "figures": f"{total_theirs:.2f} s vs {total_ours:.2f} s; max abs Δ LC "
                   f"{table.abs_diff_lc.max():.1e} points"}])
    print(summary)


if __name__ == "__main__":
    main()
