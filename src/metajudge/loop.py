"""The Meta-Rewarding loop: each iteration's stages in order, resumable (SPEC §1).

    metajudge run configs/tiny.yaml --out runs/tiny [--iterations 3]

Iteration t starts from M_t (the seed model, then the previous iteration's checkpoint), which is
actor, judge and meta-judge: ``generate`` → ``judge`` → ``meta-judge`` (only when this
iteration trains on judge pairs) → ``pairs`` → ``train`` (DPO, reference M_t) → M_{t+1}.
Every stage skips what the run directory already holds, so a rerun after a crash continues where
it stopped, rerunning a finished run does nothing, and ``--iterations N`` extends a finished run.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from metajudge.backends import load_backend
from metajudge.config import RunConfig, scheduled
from metajudge.generate import run_generate
from metajudge.judging.judge import run_judge
from metajudge.judging.meta_judge import run_meta_judge
from metajudge.pairs.build import run_pairs
from metajudge.prompts import load_prompts
from metajudge.stage import StageSummary
from metajudge.store import RunStore
from metajudge.summary import run_summary
from metajudge.training.dpo import CHECKPOINT, checkpoint_done, train_dpo

log = logging.getLogger(__name__)


def open_run(config: RunConfig, out: str | Path) -> RunStore:
    """Validate the inputs a run reads, then create or reopen its directory.

    Bad input stops here, before anything is written.
    """
    load_prompts(config.prompts.source)
    return RunStore.open(out, config)


def iteration_model(store: RunStore, iteration: int) -> str:
    """M_t: the seed model for iteration 1, else the previous iteration's checkpoint."""
    if iteration == 1:
        return store.config.backend.model
    previous = store.iteration_dir(iteration - 1)
    if not checkpoint_done(previous):
        raise FileNotFoundError(f"{previous / CHECKPOINT} is missing: iteration {iteration - 1} "
                                "has not finished training")
    return str(previous / CHECKPOINT)


def run_iteration(store: RunStore, iteration: int, *, progress: bool = True
                  ) -> list[StageSummary]:
    """All stages of one iteration; a finished iteration is skipped."""
    folder = store.iteration_dir(iteration)
    if checkpoint_done(folder):
        log.info("iteration %d is finished (checkpoint present)", iteration)
        return []
    cfg = store.config
    types = scheduled(cfg.pairs.pair_types, iteration)
    model = iteration_model(store, iteration)
    backend_config = cfg.backend.model_copy(update={"model": model})
    summaries = []
    with load_backend(backend_config) as backend:
        summaries.append(run_generate(store, backend, iteration, progress=progress))
        summaries.append(run_judge(store, backend, iteration, progress=progress))
        if "judge" in types:
            summaries.append(run_meta_judge(store, backend, iteration, progress=progress))
    counts = run_pairs(store, iteration)
    log.info("iteration %d pairs: %s", iteration, counts)
    rows = [json.loads(line) for line in store.path(iteration, "dpo_pairs").read_text(
        encoding="utf-8").splitlines()]
    result = train_dpo(model, rows, folder, cfg.training,
                       seed=cfg.seed + iteration, trust_remote_code=cfg.backend.trust_remote_code,
                       progress=progress)
    store.record_stage(iteration, "train", {
        "stage": "train", "iteration": iteration, "pairs": result.pairs, "steps": result.steps,
        "seconds": result.seconds, **{f"final_{k}": v for k, v in result.final_metrics.items()},
    })
    return summaries


def run_loop(config: RunConfig, out: str | Path, *, progress: bool = True) -> pd.DataFrame:
    """Run (or resume, or extend) a run directory; returns the per-iteration summary table,
    also written to ``RUN/summary.csv``."""
    store = open_run(config, out)
    for iteration in range(1, config.iterations + 1):
        for summary in run_iteration(store, iteration, progress=progress):
            log.info(summary.line())
    table = run_summary(store)
    table.to_csv(store.root / "summary.csv", index=False)
    return table
