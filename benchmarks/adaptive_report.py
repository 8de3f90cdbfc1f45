"""The files of benchmarks/adaptive_judging.py from its rows: ``adaptive_judging.json`` (the
goal's setting), ``adaptive_judging.md`` (every row), the figure (retention against token share
over the sweep, ``.png`` and ``.pdf``) and the headline rows for results/benchmarks/README.md.

    PYTHONPATH=.:benchmarks .venv/bin/python benchmarks/adaptive_report.py  # from saved rows
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from rows import save_rows  # noqa: E402
from synthetic_judge import JudgeModel  # noqa: E402

GOAL = {"noise": 1.0, "bias": 0.5}
TARGET = {"retention": 0.90, "token_share": 0.40}
ACTOR_FLOOR, JUDGE_FLOOR = "floor: new judgments and verdicts", "floor: new verdicts"


def _f(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}" if isinstance(value, float) \
        else str(value)


def goal_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows at the goal's setting, at the largest size measured."""
    at = [r for r in rows if r["noise"] == GOAL["noise"] and r["bias"] == GOAL["bias"]]
    size = max((r["prompts"] for r in at), default=0)
    return [r for r in at if r["prompts"] == size]


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """adaptive_judging.json: the goal's setting, its adaptive runs and its noise floor."""
    at = goal_rows(rows)
    by = {r["run"]: r for r in at}
    adaptive = [r for r in at if r["run"].startswith("adaptive")]
    floor = {"actor_retention": by.get(ACTOR_FLOOR, {}).get("actor_retention"),
             "judge_retention": by.get(JUDGE_FLOOR, {}).get("judge_retention"),
             "same_pairs_share": {"actor": by.get(ACTOR_FLOOR, {}).get("same_actor_pairs"),
                                  "judge": by.get(JUDGE_FLOOR, {}).get("same_judge_pairs")}}

    def entry(r: dict[str, Any]) -> dict[str, Any]:
        meets = (r["token_share"] <= TARGET["token_share"]
                 and min(r["actor_retention"] or 0, r["judge_retention"] or 0)
                 >= TARGET["retention"])
        return {"run": r["run"], "token_share": r["token_share"],
                "actor_retention": r["actor_retention"], "judge_retention": r["judge_retention"],
                "same_pairs_share": {"actor": r["same_actor_pairs"],
                                     "judge": r["same_judge_pairs"]},
                "prompt_token_share": r["prompt_token_share"],
                "request_share": r["request_share"], "judge_requests": r["judge_requests"],
                "meta_requests": r["meta_requests"], "goal_met": meets}

    runs = [entry(r) for r in adaptive]
    best = next((r for r in runs if r["run"] == "adaptive default"), runs[0] if runs else None)
    model = JudgeModel(noise=GOAL["noise"], bias=GOAL["bias"])
    return {
        "replay_identical": next((r.get("replay_identical") for r in at
                                  if r.get("replay_identical") is not None), None),
        "setting": {**GOAL, "prompts": at[0]["prompts"] if at else None,
                    "first_position_share": at[0]["first_position_share"] if at else None,
                    "judge_model": asdict(model), "K": 7, "N": 11},
        "goal": {"retention_at_least": TARGET["retention"],
                 "token_share_at_most": TARGET["token_share"]},
        **({k: best[k] for k in ("token_share", "actor_retention", "judge_retention",
                                 "same_pairs_share")} if best else
           {"token_share": None, "actor_retention": None, "judge_retention": None,
            "same_pairs_share": None}),
        "adaptive_runs": runs,
        "noise_floor": floor,
    }


def table(rows: list[dict[str, Any]], args: dict[str, Any]) -> str:
    lines = ["# Adaptive judging against the full procedure (synthetic judge, K = 7, N = 11)",
             "", "Command: `PYTHONPATH=.:benchmarks .venv/bin/python "
             "benchmarks/adaptive_judging.py " + " ".join(
                 f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}")
                 for k, v in args.items() if k not in ("work", "out", "replay")
                 and v not in (False, None, 0)) + "` "
             "(definitions: docs/SPEC.md §13; the judge model: benchmarks/synthetic_judge.py).",
             "Each run is compared with the full run of its setting on the same prompts and "
             "responses. Floors: a second full run with new judgment and verdict samples "
             "(actor pairs), and with new verdicts on the same judgments (judge pairs).", "",
             "| noise sd | bias (logits) | first-pos. share | prompts | run | actor retention "
             "| judge retention | same actor pairs | same judge pairs | token share | "
             "prompt-token share | requests (judge + meta) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['noise']:g} | {r['bias']:g} | {r['first_position_share']:.2f} | "
            f"{r['prompts']} | {r['run']} | {_f(r['actor_retention'])} | "
            f"{_f(r['judge_retention'])} | {_f(r['same_actor_pairs'], 2)} | "
            f"{_f(r['same_judge_pairs'], 2)} | {_f(r['token_share'])} | "
            f"{_f(r['prompt_token_share'])} | {r['judge_requests'][0]:,} + "
            f"{r['meta_requests'][0]:,} of {r['judge_requests'][1]:,} + "
            f"{r['meta_requests'][1]:,} |")
    return "\n".join(lines) + "\n"


CALIBRATION = [("judge_score_mean", "score mean"), ("judge_score_std", "score sd"),
               ("score_top_share", "top score's share"), ("score_entropy", "entropy (bits)"),
               ("within_response_sd", "sd within a response"),
               ("between_response_sd", "sd between a prompt's responses (means)"),
               ("share_parsed", "parsed"), ("meta_first_share", "first-position share"),
               ("meta_position_consistency", "position consistency"),
               ("meta_prefers_higher_score", "prefers the higher score"),
               ("score_length_spearman", "Spearman(score, length)")]
WHY = """## The synthetic judge's parameters, and why

`benchmarks/synthetic_judge.py` states the model; its parameters are in every record's
provenance (the backend's model name). Latent response quality `q = 3 + 0.7·d + 0.6·z` (prompt
effect `d`, response effect `z`, both N(0, 1)); a judgment's score is `clip(round(q + e), 0, 5)`
with `e ~ N(0, noise)`; its own quality `g = −|s − q| + 0.5·u`; a verdict is Bradley–Terry
`P(first wins) = σ(bias + 1.0·(g_first − g_second))`; 1 % of judgments and of verdicts lack
their verdict line; responses are `N(1900 + 150·(q − 3), 500)` characters. Why these:

- **Score noise** is the issue's (sd 1 at the goal, 0.5 and 1.5 around it); after rounding and
  clipping, the measured sd of the 11 scores of one response is the row "sd within a response".
  A judge whose within-response spread is small against the spread between a prompt's responses
  (a large signal-to-noise ratio) makes any scheme look good; here the latent between-response
  sd (0.6) is below the judgment noise (1), so a single judgment orders two responses of a
  prompt little better than a coin and the mean of 11 is needed: the hard case.
- **Score distribution**: centred on the scale (mean ≈ 3, overall sd ≈ 1.3, the top score's
  share ≈ 0.3) so that clipping at 0 and 5 does not decide the pairs; the embedded model's
  overall sd is about the same (1.35) but piled on score 1 (share 0.61).
- **Position**: the bias sweep spans an unbiased meta-judge (0), the goal's 0.5 logits and 2.6
  logits, which gives the embedded model's measured first-position share of about 0.9 (0.90 and
  0.92 in results/tiny; the paper's ω exists because its meta-judge has such a bias).
- **Parse statistics**: the paper's config parses verdicts without read-outs; 1 % failures keeps
  that path (a failed judgment is unscored and never compared) in play. The embedded model
  writes almost no verdict line and is run with verdict completion (not modelled).
- **Length**: mean 1,900 characters, the paper's seed model's AlpacaEval length (1,899, SPEC
  §11), mildly longer when better, so length control and the 2,500-character first-iteration
  limit act as in the paper.

The table sets the measured statistics of each full run beside the embedded model's (its tiny
run, results/tiny/loop.csv, iteration 1; within/between spread from the recording replayed in
adaptive_judging.replay.md where there is one).
"""


def calibration(rows: list[dict[str, Any]]) -> str:
    """The judge statistics of each setting's full run beside the embedded model's."""
    columns: list[tuple[str, dict[str, Any]]] = []
    for r in rows:
        if "judge_statistics" in r:
            columns.append((f"noise {r['noise']:g}, bias {r['bias']:g}", r["judge_statistics"]))
    tiny = ROOT / "results" / "tiny" / "loop.csv"
    if tiny.is_file():
        import csv

        first = next(csv.DictReader(tiny.open()))
        embedded = {k: float(first[k]) for k, _ in CALIBRATION if first.get(k)}
        replay = ROOT / "results" / "benchmarks" / "adaptive_judging.replay.json"
        if replay.is_file():
            recorded = json.loads(replay.read_text())[0].get("judge_statistics", {})
            embedded.update({k: recorded[k] for k in ("within_response_sd",
                                                      "between_response_sd") if k in recorded})
        embedded.setdefault("share_parsed", float(first.get("share_parsed") or 0))
        columns.append(("embedded model (tiny run)", embedded))
    lines = ["| statistic | " + " | ".join(name for name, _ in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for key, label in CALIBRATION:
        lines.append(f"| {label} | " + " | ".join(_f(values.get(key), 2)
                                                  for _, values in columns) + " |")
    return "\n".join(lines) + "\n"


def figure(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    biases = sorted({r["bias"] for r in rows})
    noises = sorted({r["noise"] for r in rows})
    colours = dict(zip(biases, plt.cm.viridis([i / max(1, len(biases) - 1) * 0.85
                                               for i in range(len(biases))]), strict=True))
    markers = dict(zip(noises, "o^sDv"[: len(noises)], strict=True))
    for ax, kind, floor in ((axes[0], "actor", ACTOR_FLOOR), (axes[1], "judge", JUDGE_FLOOR)):
        ax.axvspan(0, TARGET["token_share"], ymin=0, ymax=1, color="0.93", zorder=0)
        ax.axhline(TARGET["retention"], color="0.5", lw=0.8, ls="--")
        for r in rows:
            value = r[f"{kind}_retention"]
            if value is None:
                continue
            is_floor = r["run"] == floor
            if r["run"].startswith("floor") and not is_floor:
                continue
            ax.scatter(r["token_share"], value, color=colours[r["bias"]],
                       marker=markers[r["noise"]], s=40,
                       facecolors="none" if is_floor else colours[r["bias"]])
        for setting in sorted({(r["noise"], r["bias"]) for r in rows}):
            curve = sorted((r["token_share"], r[f"{kind}_retention"]) for r in rows
                           if (r["noise"], r["bias"]) == setting and r["run"].startswith("adapt")
                           and r[f"{kind}_retention"] is not None)
            if len(curve) > 1:
                ax.plot(*zip(*curve, strict=True), color=colours[setting[1]], lw=0.8)
        ax.set_title(f"{kind} pairs")
        ax.set_xlabel("token share (judge + meta-judge generated tokens, ÷ full)")
        ax.set_xlim(0, 1.05)
    axes[0].set_ylabel("gap retention (full run's ratings)")
    for b in biases:
        axes[1].scatter([], [], color=colours[b], label=f"bias {b:g} logits")
    for n in noises:
        axes[1].scatter([], [], color="0.3", marker=markers[n], label=f"noise sd {n:g}")
    axes[1].scatter([], [], color="0.3", facecolors="none", label="noise floor (2nd full run)")
    axes[1].legend(fontsize=7, loc="upper left")
    fig.suptitle("Adaptive judging vs the full procedure on the same samples (shaded: the "
                 "goal's token share; dashed: 0.90)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=130)
    fig.savefig(path.with_suffix(".pdf"))
    plt.close(fig)


def write_report(rows: list[dict[str, Any]], out: Path, args: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    data = summary(rows)
    (out / "adaptive_judging.json").write_text(json.dumps(data, indent=2) + "\n")
    (out / "adaptive_judging.md").write_text(
        table(rows, args) + "\n![retention against token share](adaptive_judging.png)\n\n"
        + WHY + "\n" + calibration(rows))
    figure(rows, out / "adaptive_judging")
    floor = data["noise_floor"]
    setting = data["setting"]
    if data["token_share"] is not None:
        ratio = (f"actor {data['actor_retention']:.2f}, judge {data['judge_retention']:.2f} "
                 f"retention at {data['token_share']:.2f} of the tokens")
    else:
        ratio = "adaptive judging not in this checkout: noise floor only"
    save_rows(out, "adaptive_judging", [{
        "measurement": f"adaptive judging, synthetic judge at the goal's setting (bias 0.5 "
                       f"logits, noise sd 1; {setting['prompts']} prompts, K 7, N 11)",
        "reference": "the full procedure on the same samples; floor: a second full run",
        "ratio": ratio,
        "figures": f"floor retention actor {_f(floor['actor_retention'], 2)}, judge "
                   f"{_f(floor['judge_retention'], 2)}; same pairs "
                   f"{_f((data['same_pairs_share'] or {}).get('actor'), 2)} / "
                   f"{_f((data['same_pairs_share'] or {}).get('judge'), 2)} vs floor "
                   f"{_f(floor['same_pairs_share']['actor'], 2)} / "
                   f"{_f(floor['same_pairs_share']['judge'], 2)}"}])
    print(table(rows, args))
    print(json.dumps(data, indent=2))


def main() -> None:
    out = ROOT / "results" / "benchmarks"
    rows = [json.loads(line) for line in
            (out / "adaptive_judging.rows.jsonl").read_text().splitlines()]
    write_report(rows, out, {"prompts": max(r["prompts"] for r in rows), "resume": True})


if __name__ == "__main__":
    main()


def write_replay(rows: list[dict[str, Any]], out: Path, recorded: str) -> None:
    """adaptive_judging.replay.{json,md} and its headline rows: adaptive judging on a replay of
    a full run recorded on a real model."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "adaptive_judging.replay.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["# Adaptive judging on a replay of a recorded full run", "",
             f"Command: `PYTHONPATH=.:benchmarks .venv/bin/python benchmarks/adaptive_judging.py "
             f"--replay {recorded}` (definitions: docs/SPEC.md §13). The full procedure "
             "replayed gives the recorded pairs: "
             f"{rows[0].get('full_replayed_same_pairs')}.", "",
             "| model | prompts | first-pos. share | run | actor retention | judge retention "
             "| same actor pairs | same judge pairs | token share | prompt-token share | "
             "requests (judge + meta) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "run" not in r:
            continue
        lines.append(
            f"| {r['model']} | {r['prompts']} | {r['first_position_share']:.2f} | {r['run']} | "
            f"{_f(r['actor_retention'])} | {_f(r['judge_retention'])} | "
            f"{_f(r['same_actor_pairs'], 2)} | {_f(r['same_judge_pairs'], 2)} | "
            f"{_f(r['token_share'])} | {_f(r['prompt_token_share'])} | "
            f"{r['judge_requests'][0]:,} + {r['meta_requests'][0]:,} of "
            f"{r['judge_requests'][1]:,} + {r['meta_requests'][1]:,} |")
    (out / "adaptive_judging.replay.md").write_text("\n".join(lines) + "\n")
    save_rows(out, "adaptive_judging.replay", [{
        "measurement": f"adaptive judging ({r['run'].removeprefix('adaptive ')}) on a replay "
                       f"of a full run of {r['model']} ({r['prompts']} prompts)",
        "reference": "the recorded full procedure, same samples",
        "ratio": f"actor {_f(r['actor_retention'], 2)}, judge {_f(r['judge_retention'], 2)} "
                 f"retention at {_f(r['token_share'], 2)} of the tokens",
        "figures": f"same pairs {_f(r['same_actor_pairs'], 2)} / "
                   f"{_f(r['same_judge_pairs'], 2)}; requests {r['judge_requests'][0]} + "
                   f"{r['meta_requests'][0]} of {r['judge_requests'][1]} + "
                   f"{r['meta_requests'][1]}"} for r in rows if "run" in r])
    print("\n".join(lines))
