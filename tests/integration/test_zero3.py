"""DeepSpeed ZeRO-3 for real on this CPU: `metajudge train` launches `accelerate launch` with the
shipped zero3 config on 2 ranks over gloo (DeepSpeed picks its CPU accelerator itself). The
paper's set-up, killed with kill -9 mid-training and rerun: precomputed reference
log-probabilities, the engine recorded as it ran, a consolidated 16-bit checkpoint the next
iteration loads; and LoRA under ZeRO-3, merged at the end."""

from __future__ import annotations

import json
import math
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
from tests.integration.test_training import losses, make_run

ZERO3 = ["training.launcher=accelerate", "training.accelerate_config=zero3",
         "training.num_processes=2", "training.per_device_batch_size=1",
         "training.global_batch_size=2", "training.max_length=96"]
Q_PROJ = "model.layers.0.self_attn.q_proj.weight"


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


def _sets(*overrides: str) -> list[str]:
    return [word for item in overrides for word in ("--set", item)]


@pytest.mark.timeout(600)  # the merge used to hang until DeepSpeed's barrier timed out
def test_lora_under_zero3_merges_into_a_full_checkpoint(tmp_path: Path,
                                                        embedded_model_dir: str) -> None:
    # bf16 as on a GPU: DeepSpeed's bf16 mode over a bf16 base, the merge in bf16
    run = make_run(tmp_path / "lora")
    lora = "training.lora={r: 8, alpha: 16, dropout: 0.0, target_modules: [q_proj, v_proj]}"
    assert main(["train", str(run), "--iteration", "1", "--no-progress",
                 *_sets(*ZERO3, lora, "training.mixed_precision=bf16",
                        "training.learning_rate=1e-2")]) == 0  # a change bf16 keeps
    checkpoint = run / "iter_01" / "checkpoint"
    meta = json.loads((checkpoint / "metajudge.json").read_text())
    # DeepSpeed's bf16 mode: AdamW updates its fp32 master partitions, whatever the module holds;
    # the gradients are reduce-scattered in bf16 and summed over the micro-steps in fp32 (the
    # shipped zero3.json's data_types.grad_accum_dtype; DeepSpeed 0.19.8 would sum them in the
    # model's bf16), read from the buffer ZeRO-3 accumulates into
    assert (meta["engine"]["zero_stage"], meta["engine"]["world_size"],
            meta["engine"]["mixed_precision"], meta["engine"]["master_dtype"],
            meta["engine"]["trainable_dtype"], meta["engine"]["grad_accum_dtype"],
            meta["engine"]["reduce_dtype"]) == (
                3, 2, "bf16", "float32", "bfloat16", "float32", "bfloat16")
    assert not (checkpoint / "adapter_config.json").exists()
    merged = load_file(str(checkpoint / "model.safetensors"))
    base = load_file(str(Path(embedded_model_dir) / "model.safetensors"))
    assert set(merged) == set(base)
    assert {t.dtype for t in merged.values()} == {torch.bfloat16}
    changed = {k for k in base if not torch.equal(base[k].bfloat16(), merged[k])}
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed)


@pytest.mark.timeout(900)
def test_kill_9_during_zero3_with_precompute_then_the_rerun_trains_fp32_and_saves_16_bit(
        tmp_path: Path, embedded_model_dir: str) -> None:
    # the paper's pairing (ZeRO-3 + precomputed reference) through our CLI. The shipped config
    # says bf16; training.mixed_precision says no, so fp32 must be what runs
    run = make_run(tmp_path / "killed", *ZERO3, "training.epochs=20",
                   "training.precompute_ref_log_probs=true", "training.mixed_precision=no")
    command = [sys.executable, "-m", "metajudge.cli", "train", str(run), "--no-progress"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = run / "iter_01" / "train_metrics.jsonl"
    try:
        deadline = time.monotonic() + 600
        while not (metrics.is_file() and metrics.read_text().strip()):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
    finally:  # the kill, or the clean-up of a test that failed before it
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 60
    while _left(run):
        assert time.monotonic() < deadline, f"orphans: {_left(run)}"
        time.sleep(0.2)
    assert not (run / "iter_01" / "checkpoint").exists()
    assert main(["train", str(run), "--iteration", "1", "--no-progress", *_sets(
        "training.epochs=1", "training.save_dtype=bfloat16")]) == 0
    assert not _left(run)
    folder = run / "iter_01"
    meta = json.loads((folder / "checkpoint" / "metajudge.json").read_text())
    assert meta["steps"] == 2
    # the engine as DeepSpeed ran it, in the checkpoint record and the manifest
    engine = meta["engine"]
    assert (engine["distributed_type"], engine["zero_stage"], engine["world_size"],
            engine["mixed_precision"], engine["trainable_dtype"], engine["master_dtype"],
            engine["grad_accum_dtype"]) == ("DEEPSPEED", 3, 2, "no", "float32", "float32",
                                            "float32")
    entry = json.loads((run / "manifest.json").read_text())["stages"]["iter_01/train"]
    assert (entry["distributed_type"], entry["zero_stage"], entry["world_size"],
            entry["mixed_precision"], entry["grad_accum_dtype"]) == (
                "DEEPSPEED", 3, 2, "no", "float32")
    # retrained from M_t, with M_t's reference on every rank: the first loss is ln 2
    assert losses(run)[0] == pytest.approx(math.log(2), abs=1e-3)
    refs = [json.loads(x) for x in (folder / "reference_logps.jsonl").read_text().splitlines()]
    assert [r["id"] for r in refs] == [f"actor:p{k}" for k in range(4)]
    assert all(math.isfinite(r["chosen"]) and r["chosen"] < 0 for r in refs)
    # a full, consolidated 16-bit model that the next iteration's engine loads as it is
    weights = load_file(str(folder / "checkpoint" / "model.safetensors"))
    base = load_file(str(Path(embedded_model_dir) / "model.safetensors"))
    assert set(weights) == set(base) and all(t.numel() for t in weights.values())
    assert {t.dtype for t in weights.values()} == {torch.bfloat16}
    assert not torch.equal(weights[Q_PROJ], base[Q_PROJ].bfloat16())
    from metajudge.backends.transformers_local import TransformersBackend
    from metajudge.config import BackendConfig
    from metajudge.records import GenerationRequest, Message, SamplingParams
    from metajudge.stages.train import iteration_model
    from metajudge.store import Store

    store = Store.open(run, lock=False)
    with TransformersBackend(BackendConfig(model=iteration_model(store, 2))) as backend:
        out = backend.generate([GenerationRequest(
            id="x", messages=(Message(role="user", content="Name a colour."),),
            params=SamplingParams(max_tokens=8))])[0]
    assert out.text.strip()
