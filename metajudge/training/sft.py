"""Supervised fine-tuning through TRL's ``SFTTrainer``: the EFT seed stage's training, in one
process or in every rank of a job launched as DPO's is (``python -m metajudge.stages.eft OUT``,
started by :func:`metajudge.stages.train.launch` with the training section's launcher).

Prompt/completion conversational rows (the loss on the completion only), the model loaded in
float32 with the training section's mixed precision and gradient checkpointing, as
:mod:`metajudge.training.dpo` trains (under DeepSpeed ZeRO-3 in bf16 the module is bf16, the
optimizer's master partitions fp32, the gradients accumulated in the DeepSpeed config's
``data_types.grad_accum_dtype``); accumulation to ``eft.global_batch_size`` = per-device batch ×
accumulation × ``training.num_processes``. Rank 0 writes the checkpoint to ``checkpoint.tmp``
and renames it when complete, with the same marker as the DPO checkpoints (the ``engine`` that
ran among it), so every backend loads it. The marker records what the checkpoint was trained
from (:func:`sft_made_from`: the examples file's digest, the base model and the SFT settings
that shape the result); a rerun keeps the checkpoint while these are the same, and otherwise
moves it aside into ``replaced/`` and trains again, saying what differed. A checkpoint made
before this was recorded is kept.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

from metajudge.config import RunConfig
from metajudge.extras import require
from metajudge.jsonl import read_objects
from metajudge.models import resolve_model
from metajudge.store import replaced_path
from metajudge.training.checkpoint import (
    CHECKPOINT,
    MARKER,
    cast_checkpoint,
    checkpoint_done,
    engine_record,
    file_digest,
    weight_dtypes,
    weights_digest,
)
from metajudge.training.compat import checkpointing_args, quiet_checkpointing_alias
from metajudge.training.dpo import PRECISION_ENV, check_master_weights, precision

log = logging.getLogger(__name__)

METRICS = "sft_metrics.jsonl"
#: the SFT settings that shape the trained weights (not how much memory a step takes)
SHAPING = {"eft": ("learning_rate", "epochs", "global_batch_size", "max_length"),
           "training": ("lr_scheduler", "mixed_precision", "save_dtype")}


def sft_made_from(model: str, examples: Path, config: RunConfig) -> dict[str, Any]:
    """What an EFT checkpoint is trained from: the digest of the examples file, the base model
    (name and revision; a checkpoint by its weights' digest) and the shaping settings."""
    resolved = resolve_model(model, config.backend.revision)
    identity = (str(resolved.revision) if (Path(model) / MARKER).is_file()
                else f"{resolved.name}@{resolved.revision}")
    settings = {f"{section}.{key}": getattr(getattr(config, section), key)
                for section, keys in SHAPING.items() for key in keys}
    return {examples.name: file_digest(examples), "model": identity, "seed": config.seed,
            **settings}


def reusable_checkpoint(folder: Path, made_from: dict[str, Any] | None) -> dict[str, Any] | None:
    """The record of ``folder``'s finished checkpoint when it was trained from ``made_from``
    (or before that was recorded); else None, with a checkpoint trained from something else
    moved aside into ``folder/replaced/`` and a warning naming what differed."""
    if not checkpoint_done(folder):
        return None
    target = folder / CHECKPOINT
    meta: dict[str, Any] = json.loads((target / MARKER).read_text())
    recorded = meta.get("made_from")
    if recorded is None or made_from is None:
        return meta
    differs = sorted(k for k in set(recorded) | set(made_from)
                     if recorded.get(k) != made_from.get(k))
    if not differs:
        return meta
    aside = replaced_path(folder, CHECKPOINT)  # its own name, however many redos a second
    shutil.move(str(target), aside)
    log.warning("%s was trained from another %s than now: moved aside to %s; training again",
                target, ", ".join(differs), aside)
    return None


@quiet_checkpointing_alias()
def train_sft(model: str, rows: list[dict[str, Any]], folder: Path, config: RunConfig, *,
              progress: bool = True, made_from: dict[str, Any] | None = None) -> dict[str, Any]:
    """SFT ``model`` on ``rows`` into ``folder/checkpoint``; reuses a finished one trained from
    ``made_from`` (:func:`reusable_checkpoint`), which goes into the record as it is. Works in a
    single process and in every rank of a launched job (the others return ``{}``)."""
    target = folder / CHECKPOINT
    reused = reusable_checkpoint(folder, made_from)
    if reused is not None:
        return reused
    torch = require("torch", "transformers")
    transformers = require("transformers", "transformers")
    trl = require("trl", "transformers")
    datasets = require("datasets", "transformers")
    started = time.perf_counter()
    cfg = config.eft
    resolved = resolve_model(model, config.backend.revision)
    cuda = torch.cuda.is_available()
    mixed = precision(config.training.mixed_precision, cuda,
                      cuda and torch.cuda.is_bf16_supported())
    if os.environ.get(PRECISION_ENV, mixed) != mixed:  # exported by an accelerate launch
        os.environ[PRECISION_ENV] = mixed
    load = {"revision": None if resolved.local else resolved.revision,
            "trust_remote_code": config.backend.trust_remote_code}
    tokenizer = transformers.AutoTokenizer.from_pretrained(resolved.path, **load)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    world = config.training.num_processes
    accumulation = cfg.global_batch_size // (cfg.per_device_batch_size * world)
    work = folder / "sft_trainer"
    args = trl.SFTConfig(
        output_dir=str(work), learning_rate=cfg.learning_rate,
        lr_scheduler_type=config.training.lr_scheduler,
        per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=accumulation,
        num_train_epochs=cfg.epochs, max_length=cfg.max_length, logging_steps=1,
        save_strategy="no", report_to=config.training.report_to or "none",
        bf16=mixed == "bf16", fp16=mixed == "fp16", use_cpu=not cuda, seed=config.seed,
        data_seed=config.seed, disable_tqdm=not progress, completion_only_loss=True,
        model_init_kwargs={"dtype": torch.float32, **load},
        **checkpointing_args(trl.SFTConfig, config.training.gradient_checkpointing))
    metrics = folder / METRICS

    class _Log(transformers.TrainerCallback):  # type: ignore[misc,name-defined]
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                metrics.write_text("")

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None,
                   **kwargs: Any) -> None:
            if logs and "loss" in logs and state.is_world_process_zero:
                memory = {}
                if cuda:  # this rank's peak since the last logged step
                    memory["gpu_peak_gb"] = torch.cuda.max_memory_allocated() / 1e9
                    torch.cuda.reset_peak_memory_stats()
                with metrics.open("a") as fh:
                    fh.write(json.dumps({"step": state.global_step, **logs, **memory}) + "\n")

    dataset = datasets.Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]}
                                          for r in rows])
    trainer = trl.SFTTrainer(model=resolved.path, args=args, train_dataset=dataset,
                             processing_class=tokenizer, callbacks=[_Log()])
    check_master_weights(trainer.model, trainer.is_deepspeed_enabled)
    weights = weight_dtypes(trainer.model)
    trainer.train()
    engine = engine_record(trainer, weights)
    main = trainer.accelerator.is_main_process
    tmp = folder / (CHECKPOINT + ".tmp")
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(tmp))  # every rank takes part (ZeRO-3 gathers); the main one writes
    trainer.accelerator.wait_for_everyone()
    if not main:
        return {}
    save_dtype = config.training.save_dtype if config.training.save_dtype != "auto" else (
        "bfloat16" if mixed == "bf16" else "float32")
    cast_checkpoint(tmp, save_dtype)
    tokenizer.save_pretrained(str(tmp))
    (tmp / "training_args.bin").unlink(missing_ok=True)
    shutil.rmtree(work, ignore_errors=True)
    logged = read_objects(metrics)
    final = {k: float(v) for k, v in (logged[-1] if logged else {}).items()
             if isinstance(v, int | float) and math.isfinite(v)}
    launched = engine["world_size"]
    meta = {"base_model": model, "base_revision": resolved.revision, "stage": "eft",
            "examples": len(rows), "steps": trainer.state.global_step,
            "seconds": time.perf_counter() - started, "final_metrics": final,
            "learning_rate": cfg.learning_rate, "mixed_precision": mixed,
            "save_dtype": save_dtype, "world_size": launched, "engine": engine,
            "launcher": config.training.launcher,
            "per_device_batch_size": cfg.per_device_batch_size,
            "gradient_accumulation": accumulation,
            "global_batch_size": cfg.per_device_batch_size * accumulation * launched,
            "weights_sha256": weights_digest(tmp), "made_from": made_from}
    (tmp / MARKER).write_text(json.dumps(meta, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return meta
