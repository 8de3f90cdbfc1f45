"""`metajudge train` on the embedded model: torchrun with 2 ranks against one process with
accumulation, LoRA merged into a full checkpoint, fp32 master weights at lr 5e-6, and kill -9
during a launched job (issue 14)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from metajudge.cli import main
from metajudge.config import load_config
from metajudge.records import DPORow, Message
from metajudge.store import DPO_PAIRS, Store

ROOT = Path(__file__).resolve().parents[2]
PAIRS = [("Name a colour.", "Blue.", "I refuse to answer questions about colours."),
         ("What is 2 + 2?", "2 + 2 = 4.", "It is 5, obviously."),
         ("Say hello in French.", "Bonjour !", "Hello."),
         ("Name a planet.", "Mars.", "The sun is a planet.")]


def make_run(path: Path, *overrides: str) -> Path:
    """A run directory whose iteration 1 has four preference pairs to train on."""
    config = load_config(ROOT / "configs" / "tiny.yaml", [
        "training.per_device_batch_size=1", "training.global_batch_size=2",
        "training.data_order=sequential", "training.learning_rate=1e-4", *overrides])
    store = Store.open(path, config)
    store.write_all(DPO_PAIRS, [DPORow(
        prompt=(Message(role="user", content=q),),
        chosen=(Message(role="assistant", content=good),),
        rejected=(Message(role="assistant", content=bad),), pair_type="actor",
        id=f"actor:p{k}", iteration=1, prompt_id=f"p{k}", chosen_id=f"p{k}#0",
        rejected_id=f"p{k}#1", chosen_score=4.0, rejected_score=1.0)
        for k, (q, good, bad) in enumerate(PAIRS)], 1)
    store.close()
    return path


def losses(run: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (run / "iter_01" / "train_metrics.jsonl")
            .read_text().splitlines()]


@pytest.mark.timeout(900)
def test_torchrun_two_ranks_give_the_losses_of_one_process_with_accumulation(
        tmp_path: Path, embedded_model_dir: str) -> None:
    ranks = make_run(tmp_path / "ranks", "training.launcher=torchrun",
                     "training.num_processes=2")
    single = make_run(tmp_path / "single")
    assert main(["train", str(ranks), "--no-progress"]) == 0
    assert main(["train", str(single), "--no-progress"]) == 0
    entry = json.loads((ranks / "manifest.json").read_text())["stages"]["iter_01/train"]
    assert (entry["launcher"], entry["world_size"], entry["per_device_batch_size"],
            entry["gradient_accumulation"], entry["global_batch_size"]) == ("torchrun", 2, 1,
                                                                            1, 2)
    one = json.loads((single / "manifest.json").read_text())["stages"]["iter_01/train"]
    assert (one["world_size"], one["gradient_accumulation"], one["global_batch_size"]) == (
        1, 2, 2)
    assert len(losses(ranks)) == len(losses(single)) == 2
    assert losses(ranks) == pytest.approx(losses(single), rel=1e-4, abs=1e-5)
    assert losses(ranks)[1] != pytest.approx(losses(ranks)[0])  # the first step moved it
    a = load_file(str(ranks / "iter_01" / "checkpoint" / "model.safetensors"))
    b = load_file(str(single / "iter_01" / "checkpoint" / "model.safetensors"))
    name = "model.layers.0.self_attn.q_proj.weight"
    assert torch.allclose(a[name], b[name], atol=1e-5)


def test_a_batch_that_cannot_be_split_exactly_is_refused() -> None:
    with pytest.raises(ValueError, match=r"not a multiple of 3 × 2 = 6"):
        load_config(None, ["training.per_device_batch_size=3", "training.num_processes=2",
                           "training.launcher=torchrun"])


@pytest.mark.timeout(900)
def test_lora_merges_into_a_full_checkpoint_with_m_t_as_reference(
        tmp_path: Path, embedded_model_dir: str) -> None:
    lora = make_run(tmp_path / "lora", "training.precompute_ref_log_probs=true",
                    "training.lora={r: 8, alpha: 16, dropout: 0.0, "
                    "target_modules: [q_proj, v_proj]}")
    full = make_run(tmp_path / "full", "training.precompute_ref_log_probs=true")
    assert main(["train", str(lora), "--no-progress"]) == 0
    assert main(["train", str(full), "--no-progress"]) == 0
    checkpoint = lora / "iter_01" / "checkpoint"
    assert not (checkpoint / "adapter_config.json").exists()
    merged = load_file(str(checkpoint / "model.safetensors"))
    base = load_file(str(Path(embedded_model_dir) / "model.safetensors"))
    assert set(merged) == set(base)  # a plain model: no peft names
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed)
    # the reference is M_t itself: the LoRA run's reference log-probabilities (adapter
    # disabled) equal the full run's (a copy of M_t)
    refs = [[json.loads(x) for x in (run / "iter_01" / "reference_logps.jsonl").read_text()
             .splitlines()] for run in (lora, full)]
    for a, b in zip(*refs, strict=True):
        assert a["chosen"] == pytest.approx(b["chosen"], abs=1e-4)
        assert a["rejected"] == pytest.approx(b["rejected"], abs=1e-4)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(checkpoint))  # no peft needed
    assert not hasattr(model, "peft_config")


@pytest.mark.timeout(600)
def test_mixed_precision_keeps_fp32_master_weights_that_move_at_lr_5e_6(
        tmp_path: Path, embedded_model_dir: str) -> None:
    # the GPU path's dtype handling on this CPU: float32 weights, bf16 autocast
    run = make_run(tmp_path / "bf16", "training.mixed_precision=bf16",
                   "training.learning_rate=5e-6", "training.save_dtype=float32",
                   "training.global_batch_size=4")
    assert main(["train", str(run), "--no-progress"]) == 0
    meta = json.loads((run / "iter_01" / "checkpoint" / "metajudge.json").read_text())
    assert meta["mixed_precision"] == "bf16" and meta["steps"] == 1
    name = "model.layers.0.self_attn.q_proj.weight"
    before = load_file(str(Path(embedded_model_dir) / "model.safetensors"))[name]
    after = load_file(str(run / "iter_01" / "checkpoint" / "model.safetensors"))[name]
    moved = (after != before).float().mean().item()
    assert moved > 0.9  # Adam's first step moves every weight with a gradient by ~lr
    # the same update applied to bf16 weights rounds away for most of them
    in_bf16 = (before.bfloat16() + (after - before).bfloat16()) != before.bfloat16()
    assert in_bf16.float().mean().item() < 0.5
    from metajudge.training.dpo import check_master_weights

    with pytest.raises(ValueError, match="16-bit weights"):
        check_master_weights(torch.nn.Linear(2, 2).bfloat16(), deepspeed=False)


def _left(run: Path) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, ValueError):
                continue
            if str(run) in args:
                found.append(args)
    return found


@pytest.mark.timeout(900)
def test_kill_9_during_launched_training_leaves_no_rank_and_no_half_checkpoint(
        tmp_path: Path, embedded_model_dir: str) -> None:
    run = make_run(tmp_path / "killed", "training.launcher=torchrun",
                   "training.num_processes=2", "training.epochs=20")
    command = [sys.executable, "-m", "metajudge.cli", "train", str(run), "--no-progress"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = run / "iter_01" / "train_metrics.jsonl"
    deadline = time.monotonic() + 600
    while not (metrics.is_file() and metrics.read_text().strip()):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 60
    while _left(run):
        assert time.monotonic() < deadline, f"orphans: {_left(run)}"
        time.sleep(0.2)
    assert not (run / "iter_01" / "checkpoint").exists()
    assert main(["train", str(run), "--no-progress", "--set", "training.epochs=1"]) == 0
    meta = json.loads((run / "iter_01" / "checkpoint" / "metajudge.json").read_text())
    assert meta["steps"] == 2 and meta["world_size"] == 2
    assert losses(run)[0] == pytest.approx(0.6931, abs=1e-3)  # retrained from M_t
    assert not _left(run)
