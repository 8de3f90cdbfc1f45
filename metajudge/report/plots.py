"""Figures from frames: every function takes frames and returns a matplotlib Figure.

The frames are the ones :mod:`metajudge.report.tables` builds (or any with the same columns), so
notebooks and ``metajudge report`` draw the same pictures.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from metajudge.extras import require

plt = require("matplotlib.pyplot", "report")

OURS = "#1f5aa6"
PAPER = "#b04a26"
PAPER_SR = "#d9a441"


def _iterations_axis(ax, iterations) -> None:  # type: ignore[no-untyped-def]
    ax.set_xlabel("iteration (0 = seed model)")
    ax.set_xticks(sorted(set(int(i) for i in iterations)))
    ax.grid(alpha=0.3)


def iteration_curves(ours: pd.DataFrame, reference: pd.DataFrame, run_label: str = "this run",
                     others: dict[str, pd.DataFrame] | None = None):  # type: ignore[no-untyped-def]
    """LC win rate, win rate, mean length, Arena-Hard and MT-Bench scores per iteration: the
    run's (with 95% intervals where it has them), other runs' (``others``: label → frame, e.g.
    the Self-Rewarding baseline), beside the paper's Meta-Rewarding and Self-Rewarding + LC
    curves (SPEC §11; the paper's MT-Bench numbers are not in SPEC §11)."""
    panels = [("lc_winrate", "length_controlled_winrate", "AlpacaEval 2 LC win rate (%)",
               ("lc_lower", "lc_upper")),
              ("win_rate", "win_rate", "AlpacaEval 2 win rate (%)", None),
              ("avg_length", "avg_length", "mean response length (chars)", None),
              ("arena_hard_score", "arena_hard_score", "Arena-Hard score (%)",
               ("arena_hard_lower", "arena_hard_upper")),
              ("mt_bench_score", None, "MT-Bench score (1-10)",
               ("mt_bench_lower", "mt_bench_upper"))]
    fig, axes = plt.subplots(1, len(panels), figsize=(21, 4))
    meta = reference[reference["method"] == "Meta-Rewarding"]
    self_rewarding = reference[reference["method"] == "Self-Rewarding + LC"]
    sft = reference[reference["method"] == "SFT on EFT"]
    runs = [(run_label, ours, OURS)] + [
        (label, frame, color) for (label, frame), color in zip(
            (others or {}).items(), ("#2e8b57", "#7b3fa0", "#444444"), strict=False)]
    for ax, (column, ref_column, title, interval) in zip(axes, panels, strict=True):
        if ref_column is not None:
            ax.plot(meta["iteration"], meta[ref_column], "o-", color=PAPER,
                    label="paper: Meta-Rewarding (Llama-3-8B)")
            if self_rewarding[ref_column].notna().any():
                ax.plot(self_rewarding["iteration"], self_rewarding[ref_column], "s--",
                        color=PAPER_SR, label="paper: Self-Rewarding + LC")
            ax.plot(sft["iteration"], sft[ref_column], "D", color="grey",
                    label="paper: SFT on EFT")
        for label, frame, color in runs:
            if column not in frame.columns or not frame[column].notna().any():
                continue
            rows = frame[frame[column].notna()]
            x = rows.index.to_numpy(dtype=float)
            y = rows[column].to_numpy(dtype=float)
            if interval and set(interval) <= set(rows.columns) and rows[list(interval)].notna(
                    ).all().all():
                low = y - rows[interval[0]].to_numpy(dtype=float)
                high = rows[interval[1]].to_numpy(dtype=float) - y
                ax.errorbar(x, y, yerr=[low, high], fmt="o-", color=color, capsize=4,
                            label=f"{label} (95% CI)")
            else:
                ax.plot(x, y, "o-", color=color, label=label)
        if column == "mt_bench_score":  # ratings only a forced read-out gave, drawn apart
            for label, frame, color in runs:
                forced = "mt_bench_score_with_readouts"
                if forced in frame.columns and frame[forced].notna().any():
                    rows = frame[frame[forced].notna()]
                    ax.plot(rows.index.to_numpy(dtype=float), rows[forced].to_numpy(dtype=float),
                            "x:", color=color, label=f"{label}, with forced read-outs")
                    ax.legend(fontsize=7, loc="best")
        if column == "mt_bench_score" and not any(
                c in f.columns and f[c].notna().any() for _, f, _ in runs
                for c in (column, "mt_bench_score_with_readouts")):
            ax.text(0.5, 0.5, "no MT-Bench result", ha="center", va="center",
                    transform=ax.transAxes)
        ax.set_title(title, fontsize=10)
        _iterations_axis(ax, list(reference["iteration"]) + [
            i for _, f, _ in runs for i in f.index])
    axes[0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def score_distributions(judgments: pd.DataFrame):  # type: ignore[no-untyped-def]
    """Share of each judge score (0–5, non-integer apart) per iteration, and the density of the
    scored values."""
    scored = judgments.dropna(subset=["score"])
    iterations = sorted(judgments["iteration"].unique())
    fig, (bars, density) = plt.subplots(1, 2, figsize=(12, 4))
    width = 0.8 / max(len(iterations), 1)
    labels = [str(k) for k in range(6)] + ["non-int."]
    for k, iteration in enumerate(iterations):
        values = scored.loc[scored["iteration"] == iteration, "score"].to_numpy(dtype=float)
        integer = np.isclose(values, np.round(values))
        counts = [np.sum(integer & (np.round(values) == point)) for point in range(6)]
        counts.append(np.sum(~integer))
        share = np.asarray(counts, dtype=float) / max(len(values), 1)
        bars.bar(np.arange(7) + k * width, share, width, label=f"iteration {iteration}")
        if len(values) > 1 and np.ptp(values) > 0:
            grid = np.linspace(0, 5, 200)
            bandwidth = 1.06 * values.std() * len(values) ** -0.2
            kernel = np.exp(-0.5 * ((grid[:, None] - values[None, :]) / bandwidth) ** 2)
            density.plot(grid, kernel.sum(1) / (len(values) * bandwidth * np.sqrt(2 * np.pi)),
                         label=f"iteration {iteration}")
        elif len(values):
            density.axvline(values[0], label=f"iteration {iteration} (all {values[0]:g})")
    bars.set_xticks(np.arange(7) + 0.4 - width / 2, labels)
    bars.set_ylabel("share of scored judgments")
    bars.set_title("judge score distribution", fontsize=10)
    bars.legend(fontsize=8)
    density.set_xlabel("score")
    density.set_title("score density (Gaussian kernel)", fontsize=10)
    density.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _line(ax, loop: pd.DataFrame, column: str, label: str, style: str = "o-",  # type: ignore[no-untyped-def]
          **kwargs) -> None:
    if column in loop.columns and loop[column].notna().any():
        ax.plot(loop.index.to_numpy(), loop[column].to_numpy(dtype=float), style, label=label,
                **kwargs)


def judge_behaviour(loop: pd.DataFrame):  # type: ignore[no-untyped-def]
    """Per iteration: where the judge's scores came from (parsed, completed, forced, failed);
    meta-judge first-position share, position consistency and preference for the higher score;
    judge length bias."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    x = loop.index.to_numpy()

    def line(ax, column: str, label: str, style: str = "o-") -> None:  # type: ignore[no-untyped-def]
        _line(ax, loop, column, label, style)

    if "share_parsed" in loop.columns:
        for source, style in (("parsed", "o-"), ("completed", "D-"), ("forced", "s--"),
                              ("failed", "x:")):
            line(axes[0], f"share_{source}", source, style)
    else:  # a table made before the shares were columns
        line(axes[0], "parse_failure_rate", "parse failures")
        if {"scores_forced", "judgments"} <= set(loop.columns):
            axes[0].plot(x, (loop["scores_forced"] / loop["judgments"]).to_numpy(dtype=float),
                         "s--", label="forced read-outs")
    axes[0].set_title("judge: where the scores came from (share of judgments)", fontsize=10)
    line(axes[1], "meta_first_share", "verdicts for the first-shown judgment")
    line(axes[1], "meta_position_consistency", "same verdict in both orders", "s-")
    line(axes[1], "meta_prefers_higher_score", "prefers the higher-scored judgment", "^-")
    axes[1].axhline(0.5, color="grey", lw=0.8, ls=":")
    axes[1].set_title("meta-judge position and score bias", fontsize=10)
    line(axes[2], "score_length_spearman", "Spearman(score, length)")
    axes[2].axhline(0.0, color="grey", lw=0.8, ls=":")
    axes[2].set_title("judge length bias", fontsize=10)
    for ax in axes:
        ax.set_ylim(-1.05 if ax is axes[2] else -0.02, 1.05)
        _iterations_axis(ax, x)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def judge_health(loop: pd.DataFrame, max_top_score_share: float | None = None,
                 first_position_band: tuple[float, float] | None = None):  # type: ignore[no-untyped-def]
    """Per iteration: the judge-health columns against their alarm thresholds (the most common
    score's share, score entropy, the meta-judge's first-position share; iterations with an
    alarm marked and named), the pairs by type with the DPO steps, and the DPO reward accuracy
    and margin at the first and the last step."""
    fig, axes = plt.subplots(1, 3, figsize=(16, 4))
    x = loop.index.to_numpy()
    health, pairs, dpo = axes
    _line(health, loop, "score_top_share", "most common score's share")
    _line(health, loop, "meta_first_share", "meta-judge: first-shown share", "s-")
    if max_top_score_share is not None:
        health.axhline(max_top_score_share, color=PAPER, lw=0.8, ls="--",
                       label=f"collapse above {max_top_score_share:g}")
    if first_position_band is not None:
        health.axhspan(*first_position_band, color="grey", alpha=0.12,
                       label=f"first-position band {list(first_position_band)}")
    if "alarms" in loop.columns:
        for iteration, names in loop["alarms"].items():
            if isinstance(names, str) and names:
                health.annotate(names.replace(";", "\n"), (float(iteration), 1.0), fontsize=7,
                                color=PAPER, ha="center", va="top")
    health.set_ylim(-0.02, 1.05)
    health.set_title("judge health (alarms named above their iteration)", fontsize=10)
    if "score_entropy" in loop.columns and loop["score_entropy"].notna().any():
        bits = health.twinx()
        bits.plot(x, loop["score_entropy"].to_numpy(dtype=float), "^:", color="#2e8b57",
                  label="score entropy (bits, right)")
        bits.set_ylim(0, np.log2(6) + 0.1)
        bits.legend(fontsize=7, loc="lower right")
    width = 0.25
    for k, (column, label) in enumerate((("actor_pairs", "actor pairs"),
                                         ("judge_pairs", "judge pairs"),
                                         ("judge_pairs_chosen_completed",
                                          "judge pairs, chosen completed"))):
        if column in loop.columns:
            pairs.bar(x + (k - 1) * width, loop[column].to_numpy(dtype=float), width,
                      label=label)
    _line(pairs, loop, "dpo_steps", "DPO steps", "ko-")
    pairs.set_title("pairs by type and DPO steps", fontsize=10)
    for column, label, style in (("dpo_first_reward_accuracy", "accuracy, first step", "o--"),
                                 ("dpo_reward_accuracy", "accuracy, last step", "o-"),
                                 ("dpo_first_reward_margin", "margin, first step", "s--"),
                                 ("dpo_reward_margin", "margin, last step", "s-")):
        _line(dpo, loop, column, label, style)
    dpo.axhline(0.0, color="grey", lw=0.8, ls=":")
    dpo.set_title("DPO rewards: first and last step", fontsize=10)
    for ax in axes:
        _iterations_axis(ax, x)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def judge_agreement(harness: pd.DataFrame):  # type: ignore[no-untyped-def]
    """Judge–human agreement on Open Assistant per iteration, with its 95% interval."""
    fig, ax = plt.subplots(figsize=(6, 4))
    rows = harness[harness.get("judge_agreement", pd.Series(dtype=float)).notna()] \
        if "judge_agreement" in harness.columns else harness.iloc[0:0]
    if len(rows):
        x = rows.index.to_numpy(dtype=float)
        y = rows["judge_agreement"].to_numpy(dtype=float)
        low = y - rows["judge_agreement_lower"].to_numpy(dtype=float)
        high = rows["judge_agreement_upper"].to_numpy(dtype=float) - y
        ax.errorbar(x, y, yerr=[low, high], fmt="o-", capsize=4, color=OURS,
                    label="agreement (judge ties = disagreement)")
        for column, style, color, label in (
                ("judge_agreement_without_ties", "s--", OURS, "without ties"),
                ("judge_weighted_agreement", "D-.", PAPER,
                 "probability-weighted score (judge ties = disagreement)"),
                ("judge_position_consistency", "^:", PAPER_SR,
                 "pairwise position consistency")):
            if column in rows.columns and rows[column].notna().any():
                ax.plot(x, rows[column].to_numpy(dtype=float), style, color=color, label=label)
        _iterations_axis(ax, x)
    else:
        ax.text(0.5, 0.5, "no judge evaluation for this run", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_ylim(0, 1)
    ax.set_title("judge–human agreement (Open Assistant ranks)", fontsize=10)
    if len(rows):
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def alpaca_eval_length_bias(models: pd.DataFrame):  # type: ignore[no-untyped-def]
    """AlpacaEval models: raw and LC win rate against mean output length, and how LC re-ranks
    them. ``models`` has ``model``, ``win_rate``, ``length_controlled_winrate``, ``avg_length``."""
    fig, (scatter, ranks) = plt.subplots(1, 2, figsize=(13, 5))
    scatter.scatter(models["avg_length"], models["win_rate"], color=PAPER, label="win rate")
    scatter.scatter(models["avg_length"], models["length_controlled_winrate"], color=OURS,
                    label="length-controlled win rate")
    for _, row in models.iterrows():
        scatter.plot([row["avg_length"]] * 2, [row["win_rate"],
                                               row["length_controlled_winrate"]],
                     color="grey", lw=0.6)
    scatter.set_xscale("log")
    scatter.set_xlabel("mean output length (chars, log scale)")
    scatter.set_ylabel("% against gpt4_1106_preview")
    scatter.legend(fontsize=8)
    scatter.set_title("length buys raw win rate; LC takes it back", fontsize=10)
    raw_rank = models["win_rate"].rank(ascending=False)
    lc_rank = models["length_controlled_winrate"].rank(ascending=False)
    shift = raw_rank - lc_rank
    colors = np.where(shift > 0, OURS, PAPER)
    ranks.scatter(np.log10(models["avg_length"]), shift, c=colors)
    ranks.axhline(0, color="grey", lw=0.8)
    ranks.set_xlabel("log10 mean output length")
    ranks.set_ylabel("rank gained by length control")
    ranks.set_title("re-ranking under length control", fontsize=10)
    for _, row in models.loc[shift.abs().nlargest(6).index].iterrows():
        ranks.annotate(row["model"], (np.log10(row["avg_length"]),
                                      (raw_rank - lc_rank)[row.name]), fontsize=7)
    fig.tight_layout()
    return fig
