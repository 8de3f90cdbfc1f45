"""The Meta-Rewarding loop: the stages of each iteration in order, resumable.

    metajudge run configs/tiny.yaml --out runs/tiny

Today the loop runs the actor stage (``generate``) of iteration 1; judging, meta-judging, pair
building and DPO training are added as their stages land (SPEC §1–§6). Every stage skips the
records the run directory already holds, so rerunning a finished run does nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path

from metajudge.backends import load_backend
from metajudge.config import RunConfig
from metajudge.generate import StageSummary, run_generate
from metajudge.prompts import load_prompts
from metajudge.store import RunStore

log = logging.getLogger(__name__)

#: stages the loop can run today, in order
AVAILABLE_STAGES = ("generate",)


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
    log.warning(
        "stopping after stage 'generate' of iteration 1: the judge, meta-judge, pairs and "
        "training stages are not implemented yet"
    )
    return summaries
