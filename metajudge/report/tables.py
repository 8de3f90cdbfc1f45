"""Frames for a run's report: per-iteration loop figures and harness results by iteration.

Harness outputs (``metajudge eval …``) are found under one directory laid out as
``<harness dir>/{alpaca_eval,arena_hard,arena_hard_v2,judge,mt_bench}/<model name>/metrics.json``
(Arena-Hard v2.0's per category, read by dotted paths, beside v0.1's); a model
name maps to an iteration when it is the run's seed model (iteration 0; −1 when the run starts
from an EFT checkpoint, which is then 0) or ``<run name>-iter_NN`` (the name ``metajudge eval``
gives the checkpoint ``<run>/iter_NN/checkpoint``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from metajudge.config import load_config
from metajudge.evaluation.config import default_name
from metajudge.stages.summary import frame, run_table
from metajudge.store import JUDGMENTS, Store

HARNESS_FIELDS = {
    "alpaca_eval": {"length_controlled_winrate": "lc_winrate", "lc_lower": "lc_lower",
                    "lc_upper": "lc_upper", "win_rate": "win_rate",
                    "standard_error": "win_rate_se", "avg_length": "avg_length",
                    "n_total": "alpaca_eval_annotations", "no_verdict": "alpaca_eval_no_verdict"},
    "arena_hard": {"score": "arena_hard_score", "lower": "arena_hard_lower",
                   "upper": "arena_hard_upper", "style_score": "arena_hard_style_score",
                   "avg_tokens": "arena_hard_avg_tokens", "no_verdict": "arena_hard_no_verdict"},
    "arena_hard_v2": {
        **{f"categories.{c}.{k}": f"arena_hard_v2_{short}_{k}"
           for c, short in (("hard_prompt", "hard"), ("creative_writing", "creative"))
           for k in ("score", "lower", "upper", "style_score", "style_lower", "style_upper",
                     "baseline", "no_verdict")}},
    "judge": {"agreement": "judge_agreement", "agreement_lower": "judge_agreement_lower",
              "agreement_upper": "judge_agreement_upper",
              "agreement_without_ties": "judge_agreement_without_ties",
              "spearman": "judge_spearman", "position_consistency": "judge_position_consistency",
              "first_share": "judge_first_share", "pairwise_agreement": "judge_pairwise_agreement",
              "forced_scores": "judge_forced_scores", "scored": "judge_scored",
              "weighted_agreement": "judge_weighted_agreement",
              "weighted_agreement_without_ties": "judge_weighted_agreement_without_ties",
              "weighted_spearman": "judge_weighted_spearman"},
    "mt_bench": {"score": "mt_bench_score", "score_lower": "mt_bench_lower",
                 "score_upper": "mt_bench_upper", "turn_1": "mt_bench_turn_1",
                 "turn_2": "mt_bench_turn_2", "no_rating": "mt_bench_no_rating",
                 "score_with_readouts": "mt_bench_score_with_readouts",
                 "score_with_readouts_lower": "mt_bench_with_readouts_lower",
                 "score_with_readouts_upper": "mt_bench_with_readouts_upper",
                 "forced": "mt_bench_forced"},
}


def iteration_of(name: str, run_dir: Path) -> int | None:
    """0 for the model iteration 1 starts from (the seed model, or the EFT checkpoint when the
    run names one; the seed is then −1), N for ``<run>-iter_N`` checkpoints, else None."""
    config = load_config(run_dir / "config.yaml")
    if config.eft.checkpoint:
        eft = Path(config.eft.checkpoint)
        if name in (default_name(str(eft)), default_name(str(eft / "checkpoint"))):
            return 0
        if name == default_name(config.backend.model):
            return -1
    if name == default_name(config.backend.model):
        return 0
    match = re.fullmatch(rf"{re.escape(run_dir.resolve().name)}-iter_(\d+)", name)
    return int(match.group(1)) if match else None


def harness_table(harness_dir: Path, run_dir: Path) -> pd.DataFrame:
    """One row per iteration with the harness metrics found for it (empty when none)."""
    rows: dict[int, dict[str, object]] = {}
    for harness, fields in HARNESS_FIELDS.items():
        for metrics_path in sorted((harness_dir / harness).glob("*/metrics.json")):
            iteration = iteration_of(metrics_path.parent.name, run_dir)
            if iteration is None:
                continue
            metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
            row = rows.setdefault(iteration, {"iteration": iteration,
                                              "model": metrics_path.parent.name})
            row.update({ours: _field(metrics, theirs) for theirs, ours in fields.items()})
    if not rows:
        return pd.DataFrame(columns=["iteration"])
    return pd.DataFrame([rows[i] for i in sorted(rows)]).set_index("iteration")


def _field(metrics: dict, path: str) -> object:
    """``metrics[a][b]…`` for the dotted path ``a.b…`` (None where a part is missing)."""
    value: object = metrics
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def judgment_scores(run_dir: Path) -> pd.DataFrame:
    """Every judge score of the run: ``iteration``, ``score`` (NaN where none), ``score_source``."""
    return frame(Store.open(run_dir, lock=False), JUDGMENTS, ("score", "score_source"))


def loop_table(run_dir: Path) -> pd.DataFrame:
    """The run's per-iteration table (the one ``summary.csv`` holds)."""
    return run_table(run_dir)
