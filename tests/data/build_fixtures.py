"""Rebuild the analysis fixtures in tests/data from the project's shared data (read-only).

    .venv/bin/python tests/data/build_fixtures.py --shared ../shared/data

Each fixture is a small slice of a public file, with the columns the tests need; PROVENANCE.md
says where each comes from and under which licence.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import pandas as pd

HERE = Path(__file__).parent
#: AlpacaEval models: two short files (positional difficulty), two whose CV-chosen C differs from
#: the leaderboard's, the null model, the baseline against itself
LC_MODELS = ["alpaca-7b_verbose", "phi-2", "OpenHermes-2.5-Mistral-7B", "vicuna-7b-v1.3",
             "NullModel", "gpt4_1106_preview"]
STYLE_ANSWERS = 40


def alpaca_eval(shared: Path) -> None:
    rows = []
    for model in LC_MODELS:
        frame = pd.read_json(shared / "alpaca_eval" / "annotations" / f"{model}.jsonl.gz",
                             lines=True)
        rows.append(frame[["generator_1", "generator_2", "index", "ref_index", "preference",
                           "len_1", "len_2"]].assign(model=model))
    table = pd.concat(rows, ignore_index=True)
    with gzip.open(HERE / "alpaca_eval_annotations.csv.gz", "wt", newline="") as fh:
        table.to_csv(fh, index=False)
    reproduction = pd.read_csv(shared / "alpaca_eval" / "lc_reproduction.csv")
    leaderboard = pd.read_csv(shared / "alpaca_eval" / "leaderboard.csv")
    expected = reproduction.merge(
        leaderboard[["model", "length_controlled_winrate", "lc_standard_error", "win_rate",
                     "standard_error", "n_total", "avg_length"]], on="model", how="left")
    expected[expected["model"].isin(LC_MODELS)].to_csv(
        HERE / "alpaca_eval_expected.csv", index=False)


def arena_hard(shared: Path) -> None:
    meta = pd.read_csv(shared / "arena_hard" / "answer_style_metadata_v0.1.csv")
    base = meta[meta["model"] == "gpt-4-0314"]
    answers = pd.read_json(shared / "benchmarks" / "arena_hard_v0.1_gpt-4-0314_answers.jsonl",
                           lines=True)
    text = answers.set_index("uid")["messages"].map(lambda m: m[1]["content"]["answer"])
    # the answers with the most markdown (and code), so every counter is exercised
    interesting = base.assign(
        richness=base["header_count"] + base["bold_count"] + base["list_count"]
        + text.reindex(base["question_id"]).str.count("```").to_numpy())
    chosen = interesting.sort_values("richness", ascending=False).head(STYLE_ANSWERS)
    with (HERE / "arena_hard_gpt-4-0314_answers.jsonl").open("w") as fh:
        for uid in chosen["question_id"]:
            fh.write(json.dumps({"uid": uid, "answer": text[uid]}) + "\n")
    chosen.drop(columns="richness").to_csv(HERE / "arena_hard_style_metadata.csv", index=False)
    means = meta.groupby("model")[["token_len", "answer_chars", "header_count", "list_count",
                                   "bold_count"]].mean()
    means.to_csv(HERE / "arena_hard_style_means.csv")
    published = pd.read_csv(shared / "arena_hard" / "leaderboard_v0.1_published.csv")
    published.drop(columns="source").to_csv(HERE / "arena_hard_leaderboard_published.csv",
                                             index=False)


def pandalm(shared: Path) -> None:
    pairs = pd.read_json(shared / "pandalm_human_pairwise" /
                         "pandalm_testset_v1_with_judges.jsonl", lines=True)
    pairs[["idx", "cmp_key", "human", "gpt35_turbo", "gpt35_turbo_raw", "pandalm_7b"]].to_json(
        HERE / "pandalm_human_pairwise.jsonl", orient="records", lines=True)


def oasst(shared: Path) -> None:
    rows = []
    for line in (shared / "oasst" / "oasst1_en_val_ranked.jsonl").read_text().splitlines():
        prompt = json.loads(line)
        if prompt["turn"] != 1:
            continue
        for reply in prompt["replies"]:
            rows.append({"prompt_id": prompt["prompt_id"], "message_id": reply["message_id"],
                         "rank": reply["rank"], "quality": reply["quality"],
                         "chars": len(reply["text"])})
    pd.DataFrame(rows).to_csv(HERE / "oasst_first_turn_ranks.csv", index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    alpaca_eval(args.shared)
    arena_hard(args.shared)
    pandalm(args.shared)
    oasst(args.shared)


if __name__ == "__main__":
    main()
