"""Analyses on pandas frames: LC win rate, Bradley–Terry scores, agreement, bias diagnostics.

Every function here is pure (frames in, numbers or frames out); ``metajudge analyze`` wraps them
for files on disk.

* :mod:`~metajudge.analysis.length_controlled` — AlpacaEval win rate and LC win rate (SPEC §8)
* :mod:`~metajudge.analysis.bradley_terry` — Arena-Hard scores, intervals, style control (§9)
* :mod:`~metajudge.analysis.style` — markdown style features of answers (§9)
* :mod:`~metajudge.analysis.agreement` — judge–human agreement (§7)
* :mod:`~metajudge.analysis.bias` — position, length and score bias (§10)
* :mod:`~metajudge.analysis.judge_health` — score collapse, position and parse-drop alarms (§10)
"""

from metajudge.analysis.agreement import pairwise_agreement, ranked_agreement, spearman
from metajudge.analysis.bias import (
    length_control_gap,
    mean_length_by_iteration,
    meta_judge_score_bias,
    meta_judge_verdicts,
    position_bias,
    prefers_longer,
    score_distribution,
    score_length_spearman,
)
from metajudge.analysis.bradley_terry import bradley_terry_scores, win_probability
from metajudge.analysis.length_controlled import (
    C_GRID,
    LengthControlledResult,
    gamed_baselines_path,
    length_controlled_winrate,
)
from metajudge.analysis.style import answer_style, markdown_counts

__all__ = [
    "C_GRID", "LengthControlledResult", "answer_style", "bradley_terry_scores",
    "gamed_baselines_path", "length_control_gap", "length_controlled_winrate",
    "markdown_counts", "mean_length_by_iteration", "meta_judge_score_bias", "meta_judge_verdicts",
    "pairwise_agreement", "position_bias", "prefers_longer", "ranked_agreement",
    "score_distribution", "score_length_spearman", "spearman", "win_probability",
]
