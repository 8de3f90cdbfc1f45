"""configs/paper_mini.yaml is configs/paper.yaml with only sizes and the model changed: the keys
that may differ are named here, so the miniature cannot drift away from the paper's set-up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from metajudge.config import load_config

ROOT = Path(__file__).resolve().parents[2]

#: sizes, the model, and what a model this small needs to give judge pairs at all
MAY_DIFFER = {
    "iterations",
    "backend.model",
    "backend.serve.data_parallel_size", "backend.serve.startup_timeout_s",
    "backend.serve.extra_args",
    "backend.openai.concurrency",
    "backend.vllm.gpu_memory_utilization", "backend.vllm.max_model_len",
    "prompts.source", "prompts.pool_size", "prompts.per_iteration",
    "generation.samples_per_prompt", "generation.max_tokens",
    "judge.judgments_per_response", "judge.max_tokens",
    "meta_judge.max_tokens",
    # a random-init model never writes `Score:`: completion (and the read-out it uses) gives
    # the judge pairs that paper.yaml's pair types ask for
    "judge.forced_readout", "judge.complete_verdict",
    "meta_judge.forced_readout", "meta_judge.complete_verdict",
    "training.global_batch_size", "training.max_length", "training.num_processes",
    # the EFT seed stage's sizes; its scores are the forced read-outs (as the judge's above)
    "eft.use_forced", "eft.judgments_per_reply", "eft.max_tokens", "eft.global_batch_size",
    "eft.per_device_batch_size", "eft.max_length",
    # on a GPU paper.yaml's `auto` trains bf16 and saves bf16; on a CPU `auto` is fp32
    "training.save_dtype",
}


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


def _resolved(name: str) -> dict[str, Any]:
    return _flat(load_config(ROOT / "configs" / name).model_dump(mode="json"))


def test_paper_mini_differs_from_paper_only_in_sizes_and_model() -> None:
    paper, mini = _resolved("paper.yaml"), _resolved("paper_mini.yaml")
    assert paper.keys() == mini.keys()
    differ = {key for key in paper if paper[key] != mini[key]}
    assert differ <= MAY_DIFFER, f"paper_mini.yaml differs from paper.yaml in {differ - MAY_DIFFER}"


def test_paper_mini_keeps_the_paper_path() -> None:
    mini = _resolved("paper_mini.yaml")
    assert mini["backend.kind"] == "openai" and mini["backend.serve.engine"] == "vllm"
    assert mini["training.launcher"] == "accelerate"
    assert mini["training.accelerate_config"] == "zero3"
    assert mini["training.num_processes"] == 2
    assert mini["training.precompute_ref_log_probs"] is True
    assert mini["training.gradient_checkpointing"] is True
    assert mini["training.mixed_precision"] == "auto"
    assert mini["pairs.pair_types"][:2] == [["actor", "judge"], ["actor", "judge"]]
    assert mini["backend.model"] == "llama3-mini"
    # EFT's SFT is launched with the training section's settings: nothing of its own to differ
    assert not {k for k in MAY_DIFFER if k.startswith("eft.")} & {
        "eft.learning_rate", "eft.epochs", "eft.checkpoint"}
