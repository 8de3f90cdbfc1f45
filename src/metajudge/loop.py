"""The Meta-Rewarding loop: the stages of each iteration in order, resumable.

    metajudge run configs/tiny.yaml --out runs/tiny

Today the loop runs iteration 1 up to its preference pairs: ``generate`` (actor), ``judge``,
``meta-judge`` and ``pairs``; DPO training and later iterations come with the training stage
(SPEC §6). Every stage skips the records the run directory already holds, so rerunning a
finished run does nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path

from metajudge.backends import load_backend
from metajudge.config import RunConfig
from metajudge.generate import run_generate
from metajudge.judging.judge import run_judge
from metajudge.judging.meta_judge import run_meta_judge
from metajudge.pairs.build import run_pairs
from metajudge.prompts import load_prompts
from metajudge.stage import StageSummary
from metajudge.store import RunStore

log = logging.getLogger(__name__)

#: stages the loop can run today, in order
AVAILABLE_STAGES = ("generate", "judge", "meta-judge", "pairs")


def open_run(config: RunConfig, out: str | Path) -> RunStore:
    """Validate the inputs a run reads, then create or reopen its directory.

    Bad input stops here, before anything is written.
    """
    load_prompts(config.prompts.source)
    return RunStore.open(out, config)


def run_loop(config: RunConfig, out: str | Path, *, progress: bool = True) -> list[StageSummary]:
    """Run (or resume) a run directory with this config; returns one summary per stage pass."""
    store = open_run(config, out)
    summaries = []
    with load_backend(config.backend) as backend:
        summaries.append(run_generate(store, backend, 1, progress=progress))
        summaries.append(run_judge(store, backend, 1, progress=progress))
        summaries.append(run_meta_judge(store, backend, 1, progress=progress))
    counts = run_pairs(store, 1)
    log.info("iteration 1 pairs: %s", counts)
    log.warning("stopping after stage 'pairs' of iteration 1: DPO training is not implemented yet")
    return summaries
