"""The Meta-Rewarding loop: a thin controller over the stage commands (SPEC §1).

    metajudge run configs/tiny.yaml --out runs/tiny [--iterations 3]

Iteration t starts from M_t (the seed model, or the EFT checkpoint the config names, then the
previous iteration's checkpoint), which is actor, judge and meta-judge: ``generate`` →
``judge`` → ``meta-judge`` (only when this iteration trains on judge pairs) → ``pairs`` →
``train`` → M_{t+1}. The model-calling stages share one engine for M_t: in-process, or servers
started for it at the first request and stopped before training (``backend.serve``). Training
runs as its own process (``metajudge train``), launched as a distributed job when
``training.launcher`` says so. A
stage with requests still failing after its retry passes stops the loop before pairs and
training. Every stage skips what the run directory already holds, so a rerun after a crash
continues where it stopped, rerunning a finished run does nothing, and ``--iterations N``
extends a finished run.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import pandas as pd

from metajudge.config import RunConfig, scheduled
from metajudge.processes import Child
from metajudge.prompts import load_prompts
from metajudge.stages.generate import run_generate
from metajudge.stages.judge import run_judge
from metajudge.stages.meta_judge import run_meta_judge
from metajudge.stages.pairs import run_pairs
from metajudge.stages.runner import require_finished, stage_engine
from metajudge.stages.summary import JudgeHealthAlarm, check_judge_health, store_table
from metajudge.stages.train import check_checkpoint, check_training, iteration_model
from metajudge.store import LOCK_ENV, Store
from metajudge.tracking import log_summary
from metajudge.training.dpo import checkpoint_done

log = logging.getLogger(__name__)


class TrainingFailed(RuntimeError):
    """The training process of an iteration exited with an error."""


def open_run(config: RunConfig, out: str | Path) -> Store:
    """Validate the inputs a run reads, then create or reopen (and lock) its directory.

    Bad input stops here, before anything is written.
    """
    load_prompts(config.prompts.source)
    return Store.open(out, config)


def run_stages(store: Store, iteration: int, *, progress: bool = True) -> None:
    """The model-calling stages of one iteration on one engine for M_t."""
    types = scheduled(store.config.pairs.pair_types, iteration)
    stages = [run_generate, run_judge] + ([run_meta_judge] if "judge" in types else [])
    model = iteration_model(store, iteration)
    with stage_engine(store.config.backend, model, store.iteration_dir(iteration)) as backend:
        for stage in stages:
            summary = stage(store, backend, iteration, progress=progress)
            log.info(summary.line())
            require_finished(summary)


def train_in_child(store: Store, iteration: int, *, progress: bool = True) -> None:
    """``metajudge train`` in its own process: its exit frees whatever training held."""
    command = [sys.executable, "-m", "metajudge.cli", "train", str(store.root),
               "--iteration", str(iteration)] + ([] if progress else ["--no-progress"])
    store.save_config()  # the child reads this run's settings from config.yaml
    child = Child.start(command, env={**os.environ, LOCK_ENV: str(store.root.resolve())})
    try:
        code = child.wait()
    finally:
        child.stop()
    if code != 0:
        raise TrainingFailed(f"training of iteration {iteration} failed (exit {code}; its "
                             f"error is above): {' '.join(command)}")


def run_iteration(store: Store, iteration: int, *, progress: bool = True) -> None:
    """All stages of one iteration; a finished iteration is skipped."""
    if checkpoint_done(store.iteration_dir(iteration)):
        check_checkpoint(store, iteration, settings=False)  # not from remade pairs or M_t
        log.info("iteration %d is finished (checkpoint present)", iteration)
        return
    run_stages(store, iteration, progress=progress)
    log.info("iteration %d pairs: %s", iteration, run_pairs(store, iteration))
    try:
        check_judge_health(store, iteration)  # warns; stops here with stop_on_alarm
    except JudgeHealthAlarm:
        # every stage so far accepted this command's settings, and the alarm was fired by its
        # thresholds: they become the run's, so that every later reading of the run (the
        # report, `analyze bias`) flags the alarm the loop stopped on, as summary.csv does
        store.save_config()
        raise
    finally:  # the iteration's judge health and alarms are in summary.csv before training
        publish_summary(store)
    train_in_child(store, iteration, progress=progress)  # it records the training, once
    publish_summary(store)


def publish_summary(store: Store) -> pd.DataFrame:
    """Write the per-iteration table to ``RUN/summary.csv`` and the trackers of
    ``training.report_to``: after each iteration's pairs (its judge health and alarms, before
    training, even when an alarm stops the loop) and after its training. The alarm flags use
    this command's thresholds, the ones the loop checked (a resumed run's new settings are
    saved only when the command ends well, so the saved config may still hold the old ones);
    the records are read without writing."""
    table = store_table(Store(store.root, store.config))
    table.to_csv(store.root / "summary.csv")
    log_summary(store, table)
    return table


def record_eft(store: Store) -> None:
    """With ``eft.checkpoint`` naming a ``metajudge eft`` folder, its summary becomes the run's
    iteration 0 (manifest ``iter_00/eft``, the summary table, the report)."""
    eft = store.config.eft.checkpoint
    manifest = Path(eft) / "manifest.json" if eft else None
    if manifest is None or not manifest.is_file():
        return
    entry = json.loads(manifest.read_text(encoding="utf-8")).get("stages", {}).get(
        "iter_00/eft")
    if entry and store.manifest().get("stages", {}).get("iter_00/eft", {}).get(
            "seconds") != entry.get("seconds"):
        store.record_stage("iter_00/eft", {**entry, "folder": str(Path(eft).resolve())})


def run_loop(config: RunConfig, out: str | Path, *, progress: bool = True) -> pd.DataFrame:
    """Run (or resume, or extend) a run directory; returns the per-iteration table, also
    written to ``RUN/summary.csv`` (and to the trackers of ``training.report_to``)."""
    check_training(config.training)  # a set-up that cannot train stops before generating
    store = open_run(config, out)
    try:
        record_eft(store)
        for iteration in range(1, config.iterations + 1):
            run_iteration(store, iteration, progress=progress)
        return publish_summary(store).reset_index()
    finally:
        store.close()
