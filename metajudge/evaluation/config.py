"""What an evaluation runs: the model, the judge, how each samples, and the template."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from metajudge.config import BackendConfig, RunnerConfig, Section


class EvalSampling(Section):
    temperature: float = Field(0.0, ge=0, description="0 = greedy")
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(512, ge=1)


class EvalJudging(EvalSampling):
    """How the judge samples, and its read-outs (SPEC §3) where the backend scores labels."""

    forced_readout: bool = Field(True, description="a score or verdict read out when none "
                                 "parsed (after the follow-up turn, for pairwise verdicts)")
    probability_weighted: bool = Field(True, description="judge evaluation: the expected "
                                       "score at the written score, beside it")


class ArenaHardV2Settings(Section):
    """Arena-Hard v2.0's baselines (which categories run is chosen per invocation, like
    ``--limit``)."""

    baseline_answers: tuple[str, ...] = Field(
        (), description="answer files in the v2.0 layout (uid, model, messages, metadata) of "
        "baselines the project does not carry, e.g. arena-hard-auto's "
        "data/arena-hard-v2.0/model_answer/gemini-2.0-flash-001.jsonl")
    creative_writing_baseline: str = Field(
        "gemini-2.0-flash-001", description="the model whose answers creative writing is "
        "judged against: the official gemini-2.0-flash-001 (its file in baseline_answers), or "
        "another, named in every output (o3-mini-2025-01-31 is carried)")


class EvalConfig(Section):
    """Saved as ``config.yaml`` in the output directory; a rerun must match it."""

    harness: str
    name: str = Field(description="the model's name in outputs and leaderboards")
    model: BackendConfig
    judge: BackendConfig | None = Field(None, description="None: the model judges itself")
    generation: EvalSampling = EvalSampling()
    judging: EvalJudging = EvalJudging()
    template: str = Field("pairwise", description="pairwise template: built-in role or YAML")
    score_template: str = Field("judge", description="scoring template (judge evaluation, "
                                "MT-Bench: mt_bench_single)")
    seed: int = 0
    layout: Literal["v0.1", "v2.0"] = Field(
        "v0.1", description="Arena-Hard file layout: v0.1 (what show_result.py of v0.1 reads) "
        "or the 2025 v2.0 schema")
    version: Literal["0.1", "2.0"] = Field(
        "0.1", description="Arena-Hard version: 0.1 (the paper's) or 2.0 (2025: per-category "
        "baselines and judge prompts, arena-hard-auto's v2.0 files)")
    arena_hard_v2: ArenaHardV2Settings = ArenaHardV2Settings()
    runner: RunnerConfig = RunnerConfig()

    @property
    def judge_backend(self) -> BackendConfig:
        return self.judge or self.model


def default_name(model: str) -> str:
    """A readable model name: a checkpoint directory ``<run>/iter_NN/checkpoint`` becomes
    ``<run>-iter_NN`` (whether or not it is still on disk)."""
    path = Path(model)
    parts = (path.resolve() if path.is_dir() else path).parts
    if len(parts) >= 3 and parts[-1] == "checkpoint" and parts[-2].startswith("iter_"):
        return f"{parts[-3]}-{parts[-2]}"
    if len(parts) >= 2 and parts[-1] == "checkpoint":  # an EFT folder's checkpoint
        return parts[-2]
    return model.rstrip("/").split("/")[-1]
