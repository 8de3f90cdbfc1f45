"""What the explorer precomputes when the index changes: per-prompt figures for the prompt list
and per-iteration figures for the run overview.

Per prompt (``prompt_stats``): responses, judgments, mean and longest response length, the
mean of the responses' mean scores, the score variance (the largest population variance of one
response's scored judgments, over responses with at least two: the meta-judge's selection
figure), the score spread (best minus worst response mean), the actor and judge decisions'
reasons and which pairs the prompt gave.

Per iteration (``iteration_stats``, one JSON object): record counts, the score distribution and
score sources, meta-judge verdicts and their sources, pairs by type, decisions by reason, the
DPO curves, and the judge-health figures computed by the same pure functions as
``summary.csv`` (:mod:`metajudge.analysis.judge_health`, :mod:`metajudge.analysis.bias`) with
the run's alarm thresholds. A figure whose function is not available is left absent.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from metajudge.viewer.paths import inside

log = logging.getLogger(__name__)

#: the DPO metrics drawn per step (TRL's names)
CURVES = ("loss", "rewards/margins", "rewards/accuracies")
_MAX_POINTS = 600

_PROMPT_STATS = """
INSERT INTO prompt_stats
WITH per_response AS (
  SELECT r.pk, r.prompt_id, r.chars, AVG(j.score) AS mean, COUNT(j.score) AS scored,
         AVG(j.score * j.score) - AVG(j.score) * AVG(j.score) AS var, COUNT(j.rpk) AS judged
  FROM responses r LEFT JOIN judgments j ON j.rpk = r.pk
  WHERE r.iteration = :it AND r.off IS NOT NULL GROUP BY r.pk)
SELECT :it, p.id, p.ord, p.instruction, COUNT(x.pk), COALESCE(SUM(x.judged), 0),
       AVG(x.chars), MAX(x.chars), AVG(x.mean),
       MAX(CASE WHEN x.scored >= 2 THEN MAX(x.var, 0.0) END), MAX(x.mean) - MIN(x.mean),
       (SELECT reason FROM decisions d WHERE d.iteration = :it AND d.prompt_id = p.id
          AND d.pair_type = 'actor' LIMIT 1),
       (SELECT reason FROM decisions d WHERE d.iteration = :it AND d.prompt_id = p.id
          AND d.pair_type = 'judge' LIMIT 1),
       EXISTS (SELECT 1 FROM pairs q WHERE q.iteration = :it AND q.prompt_id = p.id
          AND q.pair_type = 'actor'),
       EXISTS (SELECT 1 FROM pairs q WHERE q.iteration = :it AND q.prompt_id = p.id
          AND q.pair_type = 'judge')
FROM prompts p LEFT JOIN per_response x ON x.prompt_id = p.id
WHERE p.iteration = :it GROUP BY p.id
"""


def refresh_stats(db: sqlite3.Connection, run: Path, iterations: list[int]) -> None:
    """Recompute the figures of the changed ``iterations``, then every iteration's alarms."""
    for iteration in iterations:
        db.execute("DELETE FROM prompt_stats WHERE iteration=?", (iteration,))
        db.execute(_PROMPT_STATS, {"it": iteration})
        data = iteration_figures(db, iteration)
        db.execute("INSERT OR REPLACE INTO iteration_stats VALUES (?, ?)",
                   (iteration, json.dumps(data, default=_plain)))
    if iterations:
        _alarms(db, run)
    db.commit()


def _counts(db: sqlite3.Connection, sql: str, iteration: int) -> dict[str, int]:
    return {("none" if k is None else _label(k)): int(n)
            for k, n in db.execute(sql, (iteration,))}


def _label(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def iteration_figures(db: sqlite3.Connection, iteration: int) -> dict[str, Any]:
    one = lambda sql: db.execute(sql, (iteration,)).fetchone()[0]  # noqa: E731
    counts = {
        "prompts": one("SELECT COUNT(*) FROM prompts WHERE iteration=?"),
        "responses": one("SELECT COUNT(*) FROM responses WHERE iteration=? AND off IS NOT NULL"),
        "judgments": one("SELECT COUNT(*) FROM judgments WHERE iteration=?"),
        "meta_judgments": one("SELECT COUNT(*) FROM battles WHERE iteration=?"),
        "pairs": one("SELECT COUNT(*) FROM pairs WHERE iteration=?"),
        "dpo_rows": one("SELECT COUNT(*) FROM dpo WHERE iteration=?"),
        "train_steps": one("SELECT COUNT(*) FROM steps WHERE iteration=?"),
    }
    scores = _counts(db, "SELECT score, COUNT(*) FROM judgments WHERE iteration=? "
                     "GROUP BY score ORDER BY score", iteration)
    winners = _counts(db, "SELECT winner, COUNT(*) FROM battles WHERE iteration=? "
                      "GROUP BY winner", iteration)
    decisions = [{"pair_type": t, "reason": r, "count": n} for t, r, n in db.execute(
        "SELECT pair_type, reason, COUNT(*) AS n FROM decisions WHERE iteration=? "
        "GROUP BY pair_type, reason ORDER BY pair_type, n DESC", (iteration,))]
    return {
        "iteration": iteration,
        "counts": counts,
        "score_distribution": scores,
        "score_sources": _counts(db, "SELECT source, COUNT(*) FROM judgments WHERE "
                                 "iteration=? GROUP BY source", iteration),
        "meta_winners": winners,
        "omega": _omega(winners),
        "meta_sources": _counts(db, "SELECT source, COUNT(*) FROM battles WHERE iteration=? "
                                "GROUP BY source", iteration),
        "pairs_by_type": _counts(db, "SELECT pair_type, COUNT(*) FROM pairs WHERE "
                                 "iteration=? GROUP BY pair_type", iteration),
        "decisions_by_reason": decisions,
        "health": _health(db, iteration),
        "curves": _curves(db, iteration),
    }


def _omega(winners: dict[str, int]) -> list[float] | None:
    """The iteration's position weights (ω1, ω2), as the pairs stage computes them."""
    from metajudge.pairs.judge import positional_weights

    omega = positional_weights(["first"] * winners.get("first", 0)
                               + ["second"] * winners.get("second", 0))
    return list(omega) if omega else None


def _health(db: sqlite3.Connection, iteration: int) -> dict[str, Any]:
    """The judge-health figures, by the functions behind ``summary.csv``."""
    from metajudge.analysis import bias

    values: dict[str, Any] = {}
    judged = pd.read_sql_query("SELECT score, source FROM judgments WHERE iteration=?", db,
                               params=(iteration,))
    try:
        from metajudge.analysis import judge_health

        values.update(judge_health.health_columns(judged["score"], judged["source"]))
    except (ImportError, ValueError) as exc:  # before the judge-health module, or odd sources
        log.debug("judge-health columns left out: %s", exc)
    means = pd.read_sql_query(
        "SELECT r.chars AS chars, AVG(j.score) AS mean FROM responses r JOIN judgments j "
        "ON j.rpk = r.pk WHERE r.iteration=? GROUP BY r.pk", db, params=(iteration,))
    if len(means):
        values["score_length_spearman"] = bias.score_length_spearman(means["mean"],
                                                                     means["chars"])
    metas = pd.read_sql_query("SELECT rpk AS response_id, first, second, winner FROM battles "
                              "WHERE iteration=?", db, params=(iteration,))
    if len(metas):
        position = bias.position_bias(bias.meta_judge_verdicts(metas))
        values["meta_first_share"] = position["first_share"]
        values["meta_position_consistency"] = position["consistency"]
    return {k: _finite(v) for k, v in values.items()}


def _curves(db: sqlite3.Connection, iteration: int) -> dict[str, list[list[float]]]:
    rows = [json.loads(d) for (d,) in db.execute(
        "SELECT data FROM steps WHERE iteration=? ORDER BY step", (iteration,))]
    curves: dict[str, list[list[float]]] = {}
    every = max(1, math.ceil(len(rows) / _MAX_POINTS))
    for name in CURVES:
        points = [[row.get("step", n + 1), row[name]] for n, row in enumerate(rows)
                  if isinstance(row.get(name), int | float)]
        if points:
            curves[name] = points[::every]
    return curves


def _alarms(db: sqlite3.Connection, run: Path) -> None:
    """Each iteration's alarms against the previous iteration, with the run's thresholds."""
    try:
        from metajudge.analysis import judge_health
    except ImportError:
        return
    thresholds = _thresholds(run, judge_health.Thresholds)
    stats = {it: json.loads(d) for it, d in db.execute(
        "SELECT iteration, data FROM iteration_stats ORDER BY iteration")}
    for iteration, data in stats.items():
        previous = stats.get(iteration - 1, {}).get("health")
        fired = judge_health.alarms(data["health"], previous, thresholds)
        data["alarms"] = fired
        db.execute("UPDATE iteration_stats SET data=? WHERE iteration=?",
                   (json.dumps(data, default=_plain), iteration))


def _thresholds(run: Path, kind: Any) -> Any:
    """The run's ``judge_health`` thresholds from its config.yaml (defaults where absent)."""
    config: dict[str, Any] = {}
    path = run / "config.yaml"
    if path.is_file() and inside(path, run):  # never a link out of the run
        config = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get(
            "judge_health") or {}
    default = kind()
    band = config.get("first_position_band", default.first_position_band)
    return kind(float(config.get("max_top_score_share", default.max_top_score_share)),
                (float(band[0]), float(band[1])),
                float(config.get("parse_rate_drop", default.parse_rate_drop)))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return _finite(value.item())
    return value


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON: {type(value).__name__}")
