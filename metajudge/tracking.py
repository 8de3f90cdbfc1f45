"""The loop's per-iteration summary in the trackers training reports to (``training.report_to``).

TRL logs each DPO step to ``iter_NN/tracking`` (tensorboard) or the wandb run; after the loop
:func:`log_summary` writes every numeric column of the per-iteration table once per iteration:
as tensorboard scalars under ``RUN/tracking/summary`` (tag ``summary/<column>``, step = the
iteration), and to wandb as one history row per iteration of a run named after the run
directory (``WANDB_MODE=offline`` works without a network). Among them: the judge-health
columns (``score_top_share``, ``score_entropy``, the ``share_*`` of score sources,
``meta_first_share``, ``score_length_spearman``), the alarm flags as 0/1 (``alarm_*``), the
pairs by type, the completed verdicts and the DPO steps with their first- and last-step rewards.
The table is the whole run's, so the tensorboard folder is rewritten each time: a rerun or an
extended run leaves one value per iteration and tag, never a second copy.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd

from metajudge.extras import require
from metajudge.store import Store

log = logging.getLogger(__name__)


def numeric_rows(table: pd.DataFrame) -> dict[int, dict[str, float]]:
    """Per iteration, its finite numeric columns; flags (the judge-health alarms) as 0 or 1.
    A row whose records are stale (its ``stale`` column says why) is left out.

    >>> numeric_rows(pd.DataFrame({"judgments": [24], "alarm_parse_drop": [True],
    ...                            "alarms": ["parse_drop"]}, index=[1]))
    {1: {'judgments': 24.0, 'alarm_parse_drop': 1.0}}
    """
    rows: dict[int, dict[str, float]] = {}
    for iteration, row in table.iterrows():
        if isinstance(row.get("stale"), str) and row["stale"]:
            continue
        values = {}
        for column, value in row.items():
            if isinstance(value, bool | np.bool_):
                values[str(column)] = float(value)
            elif isinstance(value, int | float | np.number) and math.isfinite(float(value)):
                values[str(column)] = float(value)
        rows[int(iteration)] = values  # type: ignore[arg-type]
    return rows


def log_summary(store: Store, table: pd.DataFrame) -> None:
    trackers = store.config.training.report_to
    if not trackers or table.empty:
        return
    rows = numeric_rows(table)
    if "tensorboard" in trackers:
        tensorboard = require("torch.utils.tensorboard", "tracking")
        folder = store.root / "tracking" / "summary"
        for old in folder.glob("events.out.tfevents.*"):  # the previous call's copy of the table
            old.unlink()
        writer = tensorboard.SummaryWriter(log_dir=str(folder))
        for iteration, values in rows.items():
            for column, value in values.items():
                writer.add_scalar(f"summary/{column}", value, iteration)
        writer.close()
    if "wandb" in trackers:
        wandb = require("wandb", "tracking")
        run = wandb.init(project="metajudge", name=store.root.resolve().name,
                         dir=str(store.root), job_type="summary", reinit=True)
        for iteration, values in rows.items():
            run.log({f"summary/{k}": v for k, v in values.items()} | {"iteration": iteration})
        run.finish()
    log.info("per-iteration summary logged to %s", ", ".join(trackers))
