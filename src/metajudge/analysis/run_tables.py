"""A run directory's records as frames, and the per-iteration bias table built from them.

Reads ``iter_NN/{responses,judgments,meta_judgments}.jsonl`` without opening the run for writing
(a partial last line left by a kill is skipped, not repaired).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel

from metajudge.analysis import bias
from metajudge.jsonl import read_records
from metajudge.records import Judgment, MetaJudgment, Response


def iterations(run_dir: Path) -> list[int]:
    """Iteration numbers with a directory in the run, in order."""
    return sorted(int(p.name.removeprefix("iter_")) for p in run_dir.glob("iter_[0-9][0-9]")
                  if p.is_dir())


def run_frame(run_dir: Path, name: str, model: type[BaseModel]) -> pd.DataFrame:
    """All records of one stage file over every iteration (empty frame when there are none)."""
    rows = []
    for iteration in iterations(run_dir):
        path = run_dir / f"iter_{iteration:02d}" / f"{name}.jsonl"
        if path.is_file():
            rows += [record.model_dump(exclude={"provenance"}) for record in
                     read_records(path, model)]
    return pd.DataFrame(rows)


def bias_table(run_dir: Path) -> pd.DataFrame:
    """One row per iteration: score distribution, parse failures, length and position bias."""
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.yaml)")
    responses = run_frame(run_dir, "responses", Response)
    judgments = run_frame(run_dir, "judgments", Judgment)
    metas = run_frame(run_dir, "meta_judgments", MetaJudgment)
    if judgments.empty:
        raise ValueError(f"{run_dir} has no judgments yet")
    table = bias.score_distribution(judgments)
    lengths = responses.set_index("id")["text"].str.len() if not responses.empty else None
    for iteration in table.index:
        if lengths is not None:
            mine = responses[responses["iteration"] == iteration]
            table.loc[iteration, "mean_response_chars"] = mine["text"].str.len().mean()
            judged = judgments[judgments["iteration"] == iteration]
            mean_score = judged.groupby("response_id")["score"].mean()
            table.loc[iteration, "score_length_spearman"] = bias.score_length_spearman(
                mean_score, lengths.reindex(mean_score.index))
        if not metas.empty:
            these = metas[metas["iteration"] == iteration]
            if len(these):
                position = bias.position_bias(bias.meta_judge_verdicts(these))
                table.loc[iteration, "meta_pairs_both_orders"] = position["pairs"]
                table.loc[iteration, "meta_position_consistency"] = position["consistency"]
                table.loc[iteration, "meta_first_share"] = position["first_share"]
                table.loc[iteration, "meta_preference_fairness"] = \
                    position["preference_fairness"]
                scores = bias.meta_judge_score_bias(
                    these, judgments[judgments["iteration"] == iteration])
                table.loc[iteration, "meta_prefers_higher_score"] = \
                    scores["prefers_higher_score"]
    return table.replace({None: np.nan})
