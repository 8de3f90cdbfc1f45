"""The per-iteration table of a run: ``RUN/summary.csv``, ``metajudge analyze bias`` and the
report's ``loop.csv`` are this one table.

One row per iteration (0 for the EFT seed stage when the run has one): prompts, responses and
their mean length, judge scores (distribution, non-integer share, parsed / completed / forced /
failed, probability-weighted share), backend failures per stage, the meta-judge's position and
score bias, the judge-health columns and alarms (these judge and meta-judge columns over the
records the procedure used: an adaptive audit's, rule ``audit``, are left out), pairs by type
(and judge pairs whose chosen verdict was completed), the DPO metrics at the first and the last
step, and wall time, prompt and generated tokens and backend calls per stage. Records are read
a field at a time (the run directory is never opened for writing) and the diagnostics are
:mod:`metajudge.analysis.bias`'s and :mod:`metajudge.analysis.judge_health`'s pure functions.

:func:`check_judge_health` is the loop's check before training: it logs an iteration's
judge-health columns, warns for each alarm and, with ``judge_health.stop_on_alarm``, raises
:class:`JudgeHealthAlarm` naming them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from metajudge import provenance
from metajudge.analysis import bias, judge_health
from metajudge.config import RunConfig
from metajudge.stages.audit import audit_columns
from metajudge.store import (
    AUDIT,
    JUDGMENTS,
    META_JUDGMENTS,
    PAIR_DECISIONS,
    PAIRS,
    PROMPTS,
    RESPONSES,
    ConfigMismatchError,
    StageFile,
    Store,
)
from metajudge.training.checkpoint import CHECKPOINT, MARKER
from metajudge.training.dpo import read_metrics

log = logging.getLogger(__name__)

STAGES = ("generate", "judge", "meta-judge", "pairs", "train")
_STAGE_FILES = {"generate": RESPONSES, "judge": JUDGMENTS, "meta-judge": META_JUDGMENTS}


def iterations(store: Store) -> list[int]:
    """Iteration numbers with a directory in the run, in order."""
    return sorted(int(p.name.removeprefix("iter_")) for p in store.root.glob("iter_[0-9][0-9]")
                  if p.is_dir())


def frame(store: Store, file: StageFile, fields: tuple[str, ...],
          only: Collection[int] | None = None) -> pd.DataFrame:
    """Some fields of one stage file over every iteration (or those in ``only``; ``text``
    becomes its length ``chars``), with an ``iteration`` column."""
    rows = []
    for iteration in iterations(store):
        if only is not None and iteration not in only:
            continue
        for record in store.iter_records(file, iteration):
            row = {"iteration": iteration}
            for name in fields:
                value = getattr(record, name)
                row["chars" if name == "text" else name] = len(value) if name == "text" \
                    else value
            rows.append(row)
    columns = ["iteration", *("chars" if f == "text" else f for f in fields)]
    return pd.DataFrame(rows, columns=columns)


def run_table(run_dir: str | Path) -> pd.DataFrame:
    """One row per iteration of a run directory, indexed by iteration."""
    return store_table(Store.open(run_dir, lock=False))


def store_table(store: Store, only: Collection[int] | None = None) -> pd.DataFrame:
    """The per-iteration table of an open store (of the iterations in ``only``, when given)."""
    responses = frame(store, RESPONSES, ("id", "text"), only)
    # the judge and meta-judge columns (judge health included) are the procedure's: an
    # adaptive audit's records (rule ``audit``, SPEC §5a) are left out, so it changes no alarm
    judgments = _procedure(frame(store, JUDGMENTS, ("response_id", "index", "score",
                                                    "score_source", "prob_score", "rule"), only))
    metas = _procedure(frame(store, META_JUDGMENTS, ("response_id", "first", "second", "winner",
                                                     "winner_source", "rule"), only))
    stale = [i for i in iterations(store) if _stale_meta_judgments(store, i)]
    metas = metas[~metas["iteration"].isin(stale)] if len(metas) else metas
    pairs = frame(store, PAIRS, ("pair_type",), only)
    decisions = frame(store, PAIR_DECISIONS, ("pair_type", "chosen_source"), only)
    stages = store.manifest().get("stages", {})
    for iteration in iterations(store):  # a redo stopped before its first pass was recorded:
        for stage, file in _STAGE_FILES.items():  # the entry is the discarded making's costs
            key = f"iter_{iteration:02d}/{stage}"
            if stages.get(key, {}).get("generation") not in (
                    None, store.generation(file, iteration)):
                stages = {k: v for k, v in stages.items() if k != key}
    known = [i for i in iterations(store) if only is None or i in only]
    rows = []
    if "iter_00/eft" in stages and (only is None or 0 in only):
        rows.append({"iteration": 0, **_stage_columns(stages, 0),
                     **{f"eft_{k}": v for k, v in stages["iter_00/eft"].items()
                        if isinstance(v, int | float) and not isinstance(v, bool)}})
    for iteration in known:
        row: dict[str, Any] = {"iteration": iteration,
                               "prompts": len(store.ids(PROMPTS, iteration))}
        mine = responses[responses["iteration"] == iteration]
        row["responses"] = len(mine)
        row["mean_response_chars"] = float(mine["chars"].mean()) if len(mine) else np.nan
        judged = judgments[judgments["iteration"] == iteration]
        row.update(_judge_columns(judged))
        if len(judged) and len(mine):
            mean_score = judged.groupby("response_id")["score"].mean()
            lengths = mine.set_index("id")["chars"]
            row["score_length_spearman"] = bias.score_length_spearman(
                mean_score, lengths.reindex(mean_score.index))
        row.update(_meta_columns(metas[metas["iteration"] == iteration], judged))
        these = pairs[pairs["iteration"] == iteration]
        row["actor_pairs"] = int((these["pair_type"] == "actor").sum())
        row["judge_pairs"] = int((these["pair_type"] == "judge").sum())
        decided = decisions[decisions["iteration"] == iteration]
        row["judge_pairs_chosen_completed"] = int(
            ((decided["pair_type"] == "judge") & (decided["chosen_source"] == "completed")).sum())
        row.update(audit_columns(store.read(AUDIT, iteration))  # SPEC §5a, when audited
                   if store.path(AUDIT, iteration).is_file() else {})
        for stage, file in _STAGE_FILES.items():  # backend failures without a record since
            row[f"{stage}_failed"] = len(store.ids(file.failures, iteration)
                                         - store.ids(file, iteration))
        row.update(_stage_columns(stages, iteration, store.iteration_dir(iteration)))
        row["stale"] = stale_files(store, iteration)
        rows.append(row)
    thresholds = health_thresholds(store)
    by_iteration = {row["iteration"]: row for row in rows}
    for row in rows:
        if row["iteration"] == 0:
            continue
        row.update(judge_health.alarm_columns(judge_health.alarms(
            row, by_iteration.get(row["iteration"] - 1), thresholds)))
    table = pd.DataFrame(rows)
    return table.set_index("iteration") if len(table) else table


def stale_files(store: Store, iteration: int) -> str:
    """Why an iteration's row counts records a rerun would refuse ('' when it counts none):
    its first stage file made from an earlier making of its inputs or by an earlier M_t
    (:func:`metajudge.provenance.require_current`), e.g. after the checkpoint before it was
    retrained. The row still shows what the files hold; the trackers leave it out."""
    for file in (RESPONSES, JUDGMENTS, META_JUDGMENTS, PAIRS):
        if not store.path(file, iteration).is_file():
            continue
        try:
            provenance.require_current(Store(store.root, store.config), file, iteration)
        except (ConfigMismatchError, FileNotFoundError) as exc:
            return f"{file.filename}: {exc}"
    return ""


def health_thresholds(run: Store | RunConfig) -> judge_health.Thresholds:
    """The alarm thresholds of a run's (or a config's) ``judge_health`` settings."""
    cfg = (run.config if isinstance(run, Store) else run).judge_health
    return judge_health.Thresholds(cfg.max_top_score_share, tuple(cfg.first_position_band),
                                   cfg.parse_rate_drop)


#: the judge-health columns the loop logs for each iteration
HEALTH_COLUMNS = ("score_top_share", "score_entropy", "share_parsed", "share_completed",
                  "share_forced", "share_failed", "meta_first_share", "score_length_spearman")


class JudgeHealthAlarm(RuntimeError):
    """A judge-health alarm fired with ``judge_health.stop_on_alarm``: the loop stops before
    training."""


def check_judge_health(store: Store, iteration: int) -> dict[str, str]:
    """Log an iteration's judge-health columns and warn for each alarm (reads this iteration and
    the previous one); returns the alarms fired. With ``judge_health.stop_on_alarm`` an alarm
    raises :class:`JudgeHealthAlarm` naming it, before training."""
    table = store_table(store, only={iteration - 1, iteration})
    if iteration not in table.index:
        return {}
    row = table.loc[iteration].to_dict()
    previous = table.loc[iteration - 1].to_dict() if iteration - 1 in table.index else None
    fired = judge_health.alarms(row, previous, health_thresholds(store))
    log.info("iteration %d judge health: %s", iteration, ", ".join(
        f"{name} {row[name]:.3g}" for name in HEALTH_COLUMNS
        if name in row and pd.notna(row[name])))
    for name, reason in fired.items():
        log.warning("iteration %d judge-health alarm %s: %s", iteration, name, reason)
    if fired and store.config.judge_health.stop_on_alarm:
        raise JudgeHealthAlarm(
            f"iteration {iteration}: judge-health alarm {', '.join(fired)} "
            f"({'; '.join(fired.values())}); stopped before training "
            "(judge_health.stop_on_alarm; set it to false, or change the judge_health "
            "thresholds, and rerun to train)")
    return fired


def _stale_meta_judgments(store: Store, iteration: int) -> bool:
    """Whether an iteration's meta-judgments were made from records the run no longer holds.
    The loop leaves them so in an actor-only iteration (its pairs read no meta-judge file, and
    nothing remakes it): their columns, and the first-position alarm, are then left empty.
    (Every other stale file stops the loop until it is remade.)"""
    if not store.path(META_JUDGMENTS, iteration).is_file():
        return False
    try:  # checked on a store of its own: a refusal here refuses no command's settings
        provenance.require_current(Store(store.root, store.config), META_JUDGMENTS, iteration)
    except (ConfigMismatchError, FileNotFoundError):
        return True
    return False


def _trained_now(iteration_dir: Path, train: dict[str, Any]) -> bool:
    """Whether the manifest's training entry is the iteration's checkpoint now (by its
    weights' digest; an entry recorded before digests were is taken as it is)."""
    marker = iteration_dir / CHECKPOINT / MARKER
    if not marker.is_file():
        return False
    recorded = train.get("weights_sha256")
    return recorded is None or json.loads(marker.read_text(encoding="utf-8")).get(
        "weights_sha256") == recorded


def _dpo_first_step(iteration_dir: Path) -> dict[str, Any]:
    """Loss, reward margin and accuracy at the first DPO step (``dpo_first_*``; the last
    step's are ``dpo_loss``, ``dpo_reward_margin``, ``dpo_reward_accuracy``)."""
    logged = read_metrics(iteration_dir)
    first = logged[0] if logged else {}
    return {"dpo_first_loss": first.get("loss", np.nan),
            "dpo_first_reward_margin": first.get("rewards/margins", np.nan),
            "dpo_first_reward_accuracy": first.get("rewards/accuracies", np.nan)}


def _procedure(records: pd.DataFrame) -> pd.DataFrame:
    """The records the procedure used: an adaptive audit's (rule ``audit``) left out."""
    return records[records["rule"] != "audit"].drop(columns="rule")


def _judge_columns(judged: pd.DataFrame) -> dict[str, Any]:
    n = len(judged)
    scores = judged["score"].dropna().astype(float)
    row: dict[str, Any] = {
        "judgments": n,
        "judge_score_mean": float(scores.mean()) if len(scores) else np.nan,
        "judge_score_std": float(scores.std(ddof=0)) if len(scores) else np.nan,
        "scores_parsed": int((judged["score_source"] == "parsed").sum()),
        "scores_forced": int((judged["score_source"] == "forced").sum()),
        "verdicts_completed": int((judged["score_source"] == "completed").sum()),
        "prob_weighted_share": float(judged["prob_score"].notna().mean()) if n else np.nan,
        **judge_health.health_columns(judged["score"], judged["score_source"]),
    }
    if n:
        dist = bias.score_distribution(judged.assign(iteration=0)).iloc[0]
        row.update({k: dist[k] for k in dist.index if k != "judgments"})
    else:
        row.update({"parse_failures": 0, "parse_failure_rate": np.nan, "mean_score": np.nan,
                    "non_integer_share": np.nan, **{f"score_{k}": 0 for k in range(6)},
                    "score_non_integer": 0})
    return row


def _meta_columns(these: pd.DataFrame, judged: pd.DataFrame) -> dict[str, Any]:
    row: dict[str, Any] = {"meta_judgments": len(these),
                           "meta_no_verdict": int(these["winner"].isna().sum()),
                           "meta_verdicts_completed": int(
                               (these["winner_source"] == "completed").sum())}
    if len(these):
        position = bias.position_bias(bias.meta_judge_verdicts(these))
        row.update({"meta_pairs_both_orders": position["pairs"],
                    "meta_position_consistency": position["consistency"],
                    "meta_first_share": position["first_share"],
                    "meta_preference_fairness": position["preference_fairness"],
                    "meta_prefers_higher_score": bias.meta_judge_score_bias(
                        these, judged)["prefers_higher_score"]})
    return row


def _stage_columns(stages: dict[str, Any], iteration: int,
                   iteration_dir: Path | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {}
    key = f"iter_{iteration:02d}/train"
    train = stages.get(key, {})
    moved = iteration_dir is not None and bool(train) and not _trained_now(iteration_dir, train)
    if moved:  # the checkpoint it recorded was moved aside (`train --redo`, stopped before the
        # new one was complete): that training, its time and its logged steps are not the
        # iteration's
        stages, train = {k: v for k, v in stages.items() if k != key}, {}
    row["dpo_pairs"] = train.get("pairs", 0)
    row["dpo_steps"] = train.get("steps", 0)
    row["dpo_world_size"] = train.get("world_size", np.nan)
    row["dpo_global_batch"] = train.get("global_batch_size", np.nan)
    row["dpo_loss"] = train.get("final_loss", np.nan)
    row["dpo_reward_margin"] = train.get("final_rewards/margins", np.nan)
    row["dpo_reward_accuracy"] = train.get("final_rewards/accuracies", np.nan)
    if iteration_dir is not None:
        first = _dpo_first_step(iteration_dir)
        row.update({k: np.nan for k in first} if moved else first)
    total = 0.0
    for stage in (*STAGES, "eft"):
        entry = stages.get(f"iter_{iteration:02d}/{stage}", {})
        if stage == "eft" and not entry:
            continue
        seconds = float(entry.get("seconds", 0.0))
        total += seconds
        row[f"{stage}_seconds"] = round(seconds, 1)
        if stage in ("generate", "judge", "meta-judge"):
            row[f"{stage}_generated_tokens"] = entry.get("generated_tokens", 0)
            row[f"{stage}_prompt_tokens"] = entry.get("prompt_tokens", 0)
            row[f"{stage}_backend_calls"] = entry.get("backend_calls", 0)
    row["total_seconds"] = round(total, 1)
    return row
