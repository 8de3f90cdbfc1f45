"""What an evaluation runs: the model, the judge, how each samples, and the template."""

from __future__ import annotations

from pathlib import Path

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
    runner: RunnerConfig = RunnerConfig()

    @property
    def judge_backend(self) -> BackendConfig:
        return self.judge or self.model


def default_name(model: str) -> str:
    """A readable model name: a checkpoint directory becomes ``<run>-<iteration>``."""
    path = Path(model)
    if path.is_dir():
        parts = path.resolve().parts
        if parts[-1] == "checkpoint" and len(parts) >= 3:
            return f"{parts[-3]}-{parts[-2]}"
        return parts[-1]
    return model.rstrip("/").split("/")[-1]
