"""Projected cost of a run before running it: requests, backend calls and tokens per stage.

``metajudge run CONFIG --dry-run`` prints this table. Per iteration with P prompts, K responses
per prompt and N judgments per response:

* generate: P·K requests; at most P·K·max_tokens generated tokens;
* judge: P·K·N requests (prompts: rubric + instruction + response);
* meta-judge (iterations that train on judge pairs): one selected response per prompt, all
  N·(N − 1) ordered pairs of its judgments: at most P·N·(N − 1) requests;
* train: at most one actor and one judge pair per prompt; optimizer steps =
  ⌈pairs·epochs / global batch⌉.

Generated tokens are shown as the bound (``max_tokens`` per request) and, given a finished run
to calibrate on (``--calibrate RUN``), as an estimate from that run's measured tokens per request
and its prompt lengths. Prompt tokens are estimated from characters (4 per token) of the bundled
pool and templates unless a calibration run gives measured averages. Each stage pass is one
backend call (plus one for forced read-outs when those are on).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from metajudge.config import RunConfig, scheduled
from metajudge.prompts import load_prompts
from metajudge.templates import load_template

CHARS_PER_TOKEN = 4.0


def project_costs(config: RunConfig, calibrate: Path | None = None, *,
                  tokens_per_second: float | None = None, gpus: str | None = None
                  ) -> pd.DataFrame:
    """One row per (iteration, stage) with requests, calls and token estimates."""
    measured = _measured(calibrate) if calibrate else {}
    instruction_tokens = _mean_instruction_tokens(config)
    judge_template = len(load_template(config.judge.template or "judge").template)
    meta_template = len(load_template(config.meta_judge.template or "meta_judge").template)
    P = config.prompts.per_iteration
    K = config.generation.samples_per_prompt
    N = config.judge.judgments_per_response
    response = measured.get("generate", {}).get("generated", config.generation.max_tokens / 2)
    judgment = measured.get("judge", {}).get("generated", config.judge.max_tokens / 2)
    rows = []
    for iteration in range(1, config.iterations + 1):
        types = scheduled(config.pairs.pair_types, iteration)
        stages = [
            ("generate", P * K, config.generation.max_tokens, instruction_tokens + 8),
            ("judge", P * K * N, config.judge.max_tokens,
             judge_template / CHARS_PER_TOKEN + instruction_tokens + response),
        ]
        if "judge" in types:
            stages.append(("meta-judge", P * N * (N - 1), config.meta_judge.max_tokens,
                           meta_template / CHARS_PER_TOKEN + instruction_tokens + response
                           + 2 * judgment))
        for stage, requests, max_tokens, prompt_estimate in stages:
            seen = measured.get(stage, {})
            forced = (stage == "judge" and config.judge.forced_readout) or (
                stage == "meta-judge" and config.meta_judge.forced_readout)
            rows.append({
                "iteration": iteration, "stage": stage, "requests": requests,
                "backend_calls": 1 + int(forced),
                "prompt_tokens_est": round(requests * seen.get("prompt", prompt_estimate)),
                "generated_tokens_max": requests * max_tokens,
                "generated_tokens_est": round(requests * seen["generated"])
                if "generated" in seen else None,
            })
        pairs = P * len(types)
        batch = config.training.global_batch_size
        rows.append({"iteration": iteration, "stage": "train", "requests": 0,
                     "backend_calls": 0, "dpo_pairs_max": pairs,
                     "optimizer_steps_max": math.ceil(pairs * config.training.epochs / batch),
                     "train_tokens_max": pairs * config.training.max_length * 2})
    return pd.DataFrame(rows)


def _mean_instruction_tokens(config: RunConfig) -> float:
    source = config.prompts.source
    if source != "bundled" and not Path(source).is_file():
        source = "bundled"  # a dry run needs no prompt file; the bundled pool stands in
    prompts = load_prompts(source)[: config.prompts.pool_size]
    return sum(len(p.instruction) for p in prompts) / len(prompts) / CHARS_PER_TOKEN


def _measured(run_dir: Path) -> dict[str, dict[str, float]]:
    """Prompt and generated tokens per request, per stage, in a finished run's manifest."""
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    totals: dict[str, dict[str, float]] = {}
    for key, stage in manifest.get("stages", {}).items():
        name = key.split("/", 1)[1]
        done = stage.get("completed", 0)
        if not done or "generated_tokens" not in stage:
            continue
        entry = totals.setdefault(name, {"requests": 0, "prompt": 0, "generated": 0})
        entry["requests"] += done
        entry["prompt"] += stage.get("prompt_tokens", 0)
        entry["generated"] += stage["generated_tokens"]
    return {name: {"prompt": t["prompt"] / t["requests"],
                   "generated": t["generated"] / t["requests"]}
            for name, t in totals.items() if t["requests"]}


def format_costs(table: pd.DataFrame) -> str:
    """The projection as text, with per-stage totals over all iterations."""
    totals = table.groupby("stage", sort=False).sum(numeric_only=True, min_count=1)
    totals = totals.drop(columns="iteration")
    with pd.option_context("display.width", 160, "display.max_columns", 20,
                           "display.float_format", "{:,.0f}".format):
        return (table.set_index(["iteration", "stage"]).to_string()
                + "\n\ntotal over all iterations:\n" + totals.to_string())
