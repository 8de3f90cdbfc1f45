"""The per-iteration summary of a run: one row per iteration, from the run directory's records
and manifest (prompts, responses, lengths, judge scores, parse failures, meta-judge position
share, pairs by type, DPO metrics, wall time and generated tokens per stage)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from metajudge.judging.meta_judge import META
from metajudge.records import Judgment, MetaJudgment, PreferencePair, Prompt, Response
from metajudge.store import RunStore

STAGES = ("generate", "judge", "meta-judge", "pairs", "train")


def iteration_row(store: RunStore, iteration: int) -> dict[str, Any]:
    """One iteration's numbers (missing stages give NaN/0)."""
    prompts = store.read(iteration, "prompts", Prompt)
    responses = store.read(iteration, "responses", Response)
    judgments = store.read(iteration, "judgments", Judgment)
    metas = store.read(iteration, META, MetaJudgment)
    pairs = store.read(iteration, "pairs", PreferencePair)
    scores = [j.score for j in judgments if j.score is not None]
    sources = Counter(j.score_source for j in judgments)
    verdicts = [m.winner for m in metas if m.winner is not None]
    row: dict[str, Any] = {
        "iteration": iteration,
        "prompts": len(prompts),
        "responses": len(responses),
        "mean_response_chars": float(np.mean([len(r.text) for r in responses]))
        if responses else np.nan,
        "judgments": len(judgments),
        "judge_score_mean": float(np.mean(scores)) if scores else np.nan,
        "judge_score_std": float(np.std(scores)) if scores else np.nan,
        "scores_parsed": sources["parsed"],
        "scores_forced": sources["forced"],
        "parse_failures": sources["failed"],
        "parse_failure_rate": sources["failed"] / len(judgments) if judgments else np.nan,
        "prob_weighted_share": (sum(j.prob_score is not None for j in judgments)
                                / len(judgments)) if judgments else np.nan,
        "meta_judgments": len(metas),
        "meta_first_position_share": (sum(v == "first" for v in verdicts) / len(verdicts))
        if verdicts else np.nan,
        "meta_no_verdict": sum(m.winner is None for m in metas),
        "actor_pairs": sum(p.pair_type == "actor" for p in pairs),
        "judge_pairs": sum(p.pair_type == "judge" for p in pairs),
    }
    counts = Counter(round(s) for s in scores)
    for points in range(6):
        row[f"scores_{points}"] = counts.get(points, 0)
    stages = store.manifest().get("stages", {})
    train = stages.get(f"iter_{iteration:02d}/train", {})
    row["dpo_pairs"] = train.get("pairs", 0)
    row["dpo_steps"] = train.get("steps", 0)
    row["dpo_loss"] = train.get("final_loss", np.nan)
    row["dpo_reward_margin"] = train.get("final_rewards/margins", np.nan)
    row["dpo_reward_accuracy"] = train.get("final_rewards/accuracies", np.nan)
    total = 0.0
    for stage in STAGES:
        entry = stages.get(f"iter_{iteration:02d}/{stage}", {})
        seconds = float(entry.get("seconds", 0.0))
        total += seconds
        row[f"{stage}_seconds"] = round(seconds, 1)
        if stage in ("generate", "judge", "meta-judge"):
            row[f"{stage}_generated_tokens"] = entry.get("generated_tokens", 0)
            row[f"{stage}_prompt_tokens"] = entry.get("prompt_tokens", 0)
            row[f"{stage}_backend_calls"] = entry.get("backend_calls", 0)
    row["total_seconds"] = round(total, 1)
    return row


def run_summary(store: RunStore) -> pd.DataFrame:
    """One row per iteration that has started."""
    rows = [iteration_row(store, t) for t in range(1, store.config.iterations + 1)
            if store.iteration_dir(t).is_dir()]
    return pd.DataFrame(rows)
