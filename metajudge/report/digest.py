"""What ``metajudge run`` prints at the end: a short table per iteration, read at a glance, then
where the rest is.

Per iteration: pairs by type; where the judge's scores came from (parsed, completed, forced,
failed) and requests that failed at the backend; the judge-health alarms with their reasons;
DPO loss, reward margin and reward accuracy from the first step to the last; and the stages'
wall times. Then ``summary.csv`` (every column), ``metajudge report`` and ``metajudge view``.
:func:`format_digest` is a pure function of the per-iteration table
(:func:`metajudge.stages.summary.run_table`) and the run's alarm thresholds.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from metajudge.analysis.judge_health import Thresholds, alarms

#: ``metajudge view``'s default address (metajudge/cli/view.py: --host, --port)
VIEW_URL = "http://127.0.0.1:8765/"
#: the stages whose wall time the table shows, in loop order
STAGE_TIMES = ("eft", "generate", "judge", "meta-judge", "pairs", "train")
_FAILED = (("generate", "generate_failed"), ("judge", "judge_failed"),
           ("meta-judge", "meta-judge_failed"))


def _value(row: Mapping[str, Any], key: str) -> float | None:
    value = row.get(key)
    if value is None or isinstance(value, str):
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _count(row: Mapping[str, Any], key: str) -> int:
    value = _value(row, key)
    return 0 if value is None else int(round(value))


def duration(seconds: float) -> str:
    """Seconds as a person reads them.

    >>> duration(34.44), duration(59.96), duration(170.5), duration(3725)
    ('34.4 s', '1 min 00 s', '2 min 50 s', '1 h 02 min')
    """
    if seconds < 59.95:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def _moved(row: Mapping[str, Any], name: str, first: str, last: str, digits: int) -> str:
    start, end = _value(row, first), _value(row, last)
    shown = [f"{v:.{digits}f}" if v is not None else "absent" for v in (start, end)]
    return f"{name} {shown[0]} -> {shown[1]}"


def _lines(iteration: int, row: Mapping[str, Any], previous: Mapping[str, Any] | None,
           thresholds: Thresholds) -> list[tuple[str, str]]:
    if iteration == 0:  # the EFT seed stage (metajudge eft)
        loss = _value(row, "eft_final_loss")
        return [("EFT", f"{_count(row, 'eft_kept')} of {_count(row, 'eft_prompts')} prompts "
                 f"kept, {_count(row, 'eft_examples')} examples, "
                 f"{_count(row, 'eft_sft_steps')} SFT steps, last loss "
                 + (f"{loss:.3f}" if loss is not None else "absent")),
                ("stage times", f"eft {duration(_value(row, 'eft_seconds') or 0.0)}")]
    lines = []
    actor, judge = _count(row, "actor_pairs"), _count(row, "judge_pairs")
    completed = _count(row, "judge_pairs_chosen_completed")
    lines.append(("pairs", f"{actor} actor, {judge} judge"
                  + (f" ({completed} chosen with a completed verdict)" if completed else "")))
    judgments = _count(row, "judgments")
    sources = {"parsed": _count(row, "scores_parsed"),
               "completed": _count(row, "verdicts_completed"),
               "forced": _count(row, "scores_forced")}
    sources["failed"] = judgments - sum(sources.values())
    lines.append(("judge scores", f"{judgments} judgments: " + ", ".join(
        f"{n} {source}" for source, n in sources.items())))
    failed = [f"{stage} {_count(row, column)}" for stage, column in _FAILED
              if _count(row, column)]
    lines.append(("failed requests", ", ".join(failed) if failed else "none"))
    fired = alarms(row, previous, thresholds)
    if not fired:
        lines.append(("alarms", "none"))
    for name, reason in fired.items():
        lines.append(("alarms" if name == next(iter(fired)) else "", f"{name}: {reason}"))
    steps = _count(row, "dpo_steps")
    if steps:
        lines.append((f"DPO, {steps} step{'s' if steps != 1 else ''}", "; ".join([
            _moved(row, "loss", "dpo_first_loss", "dpo_loss", 3),
            _moved(row, "margin", "dpo_first_reward_margin", "dpo_reward_margin", 3),
            _moved(row, "accuracy", "dpo_first_reward_accuracy", "dpo_reward_accuracy", 2)])))
    else:
        lines.append(("DPO", "not trained"))
    times = [f"{stage} {duration(seconds)}" for stage in STAGE_TIMES
             if (seconds := _value(row, f"{stage}_seconds"))]
    total = _value(row, "total_seconds") or 0.0
    lines.append(("stage times", ", ".join(times) + f" (total {duration(total)})"))
    return lines


def format_digest(table: pd.DataFrame, run_dir: str | Path,
                  thresholds: Thresholds | None = None) -> str:
    """The end-of-run text of a per-iteration table (indexed by iteration, or with an
    ``iteration`` column) of the run in ``run_dir``; ``thresholds``: the run's
    ``judge_health`` settings, which give the alarms' reasons (default: SPEC §10's)."""
    thresholds = thresholds or Thresholds()
    if "iteration" in table.columns:
        table = table.set_index("iteration")
    rows = {int(k): v.to_dict() for k, v in table.iterrows()}
    blocks = []
    for iteration, row in rows.items():
        lines = _lines(iteration, row, rows.get(iteration - 1), thresholds)
        width = max(len(label) for label, _ in lines)
        title = f"iteration {iteration}" + (" (EFT seed stage)" if iteration == 0 else "")
        blocks.append("\n".join([title, *(f"  {label:<{width}}  {text}"
                                          for label, text in lines)]))
    run = str(run_dir)
    results = shlex.quote(str(Path("results") / Path(run).name))  # commands to paste: quoted
    where = [("every column, per iteration", str(Path(run) / "summary.csv")),
             ("tables and figures", f"metajudge report {shlex.quote(run)} --out {results}"),
             ("every record, in a browser",
              f"metajudge view {shlex.quote(run)}   (then open {VIEW_URL})")]
    width = max(len(label) for label, _ in where)
    return "\n\n".join(blocks + ["\n".join(f"{label + ':':<{width + 1}}  {text}"
                                           for label, text in where)])
