"""A trained checkpoint: its folder and marker, dtype and identity, and the engine that made it.

A checkpoint is written into ``checkpoint.tmp`` and renamed into place once complete; the
marker (``metajudge.json``, written last) holds the training's record. ``engine_record`` reads
what actually ran from the trainer (accelerate's distributed type, the ZeRO stage, the world
size, the mixed precision, the weights' dtypes and, under DeepSpeed, the dtypes of the master
weights, of the gradient accumulation and of the gradient reduction), never from the settings
that asked for it. The DPO and the EFT checkpoints are recorded alike.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from metajudge.extras import require

CHECKPOINT = "checkpoint"
#: written last into a finished checkpoint
MARKER = "metajudge.json"


def checkpoint_done(iteration_dir: Path) -> bool:
    return (iteration_dir / CHECKPOINT / MARKER).is_file()


def engine_record(trainer: Any, weights: dict[str, str]) -> dict[str, Any]:
    """What trained: read from the trainer after training. ``weights`` holds the dtypes of the
    trainable and frozen weights as the trainer took them (before any engine wrapped them).

    ``grad_accum_dtype`` is the dtype gradients are summed in over the micro-steps: outside
    DeepSpeed, the trainable weights' own (``param.grad`` has the weight's dtype, whatever
    autocast computes in); under DeepSpeed, the dtype of the buffer its optimizer accumulates
    into (:func:`accumulation_dtype`). ``reduce_dtype`` is the dtype DeepSpeed all-reduces or
    reduce-scatters gradients in, and ``master_dtype`` that of the weights its optimizer
    updates."""
    accelerator = trainer.accelerator
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    engine = trainer.model_wrapped if trainer.is_deepspeed_enabled else None
    if engine is not None and hasattr(engine, "bfloat16_enabled"):
        mixed = ("bf16" if engine.bfloat16_enabled() else
                 "fp16" if engine.fp16_enabled() else "no")
    else:
        mixed = str(accelerator.mixed_precision)
    kind = accelerator.distributed_type
    record = {"distributed_type": str(getattr(kind, "value", kind)),
              "zero_stage": plugin.zero_stage if plugin is not None else None,
              "world_size": accelerator.num_processes, "mixed_precision": mixed, **weights,
              "grad_accum_dtype": weights.get("trainable_dtype")}
    if engine is not None and hasattr(engine, "get_data_types"):
        record["master_dtype"] = master_dtype(engine)
        record["grad_accum_dtype"] = accumulation_dtype(engine)
        record["reduce_dtype"] = _name(engine.communication_data_type)
    return record


#: where DeepSpeed's optimizer wrappers keep the master weights they update (0.19: ZeRO-3,
#: ZeRO-1/2, the bf16 optimizer)
MASTER_PARTITIONS = ("fp32_partitioned_groups_flat", "single_partition_of_fp32_groups",
                     "fp32_groups_flat_partition")


def master_dtype(engine: Any) -> str | None:
    """The dtype(s) of the weights a DeepSpeed engine's optimizer updates (its master copy: under
    ZeRO-3 the module's own parameters may be bf16 while these are float32); None when the
    optimizer keeps them where this does not look."""
    optimizer = getattr(engine, "optimizer", None)
    for name in MASTER_PARTITIONS:
        partitions = getattr(optimizer, name, None)
        if partitions:
            return ",".join(sorted({_name(t.dtype) for t in partitions}))
    return None


def accumulation_dtype(engine: Any) -> str:
    """The dtype a DeepSpeed engine sums gradients in over the micro-steps: that of ZeRO-3's
    flat gradient-partition buffer where it has one, else the optimizer's
    ``gradient_accumulation_dtype``, else the engine's (``get_data_types``: the config's
    ``data_types.grad_accum_dtype``, by default the model's 16-bit dtype)."""
    optimizer = getattr(engine, "optimizer", None)
    buffer = getattr(optimizer, "grad_partitions_flat_buffer", None)
    if buffer is not None:
        return _name(buffer.dtype)
    dtype = getattr(optimizer, "gradient_accumulation_dtype", None)
    return _name(dtype if dtype is not None else engine.get_data_types()[1])


def _name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def weight_dtypes(model: Any) -> dict[str, str]:
    """The dtypes of a model's trainable and frozen weights, e.g. ``{"trainable_dtype":
    "float32", "frozen_dtype": "bfloat16"}`` for LoRA on a bf16 base."""
    found: dict[str, set[str]] = {"trainable_dtype": set(), "frozen_dtype": set()}
    for param in model.parameters():
        key = "trainable_dtype" if param.requires_grad else "frozen_dtype"
        found[key].add(str(param.dtype).removeprefix("torch."))
    return {k: ",".join(sorted(v)) for k, v in found.items() if v}


def merge_adapter(base: str, adapter: Path, out: Path, dtype: str,
                  load: dict[str, Any]) -> None:
    """Merge a LoRA adapter into a fresh copy of its (unquantised) base model and save a full
    safetensors checkpoint that loads without peft.

    Under DeepSpeed ZeRO-3, transformers would build the base under ``zero.Init`` (its
    parameters partitioned over ranks that are not taking part), so the training's DeepSpeed
    settings are unregistered first: training is over, and this is one process's work."""
    torch = require("torch", "transformers")
    transformers = require("transformers", "transformers")
    peft = require("peft", "lora")
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        base, dtype=getattr(torch, dtype), **load)
    merged = peft.PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged.save_pretrained(str(out), safe_serialization=True)


def cast_checkpoint(folder: Path, dtype: str) -> None:
    """Rewrite a checkpoint's floating-point tensors in ``dtype`` (no-op when they are)."""
    torch = require("torch", "transformers")
    safetensors = require("safetensors.torch", "transformers")
    want = getattr(torch, dtype)
    for path in sorted(folder.glob("*.safetensors")):
        tensors = safetensors.load_file(str(path))
        if all(t.dtype == want or not t.is_floating_point() for t in tensors.values()):
            continue
        safetensors.save_file({k: t.to(want) if t.is_floating_point() else t
                               for k, t in tensors.items()}, str(path), metadata={"format": "pt"})
    config = folder / "config.json"
    if config.is_file():
        data = json.loads(config.read_text())
        data["torch_dtype" if "torch_dtype" in data else "dtype"] = dtype
        config.write_text(json.dumps(data, indent=2))


def file_digest(path: Path) -> str:
    """Content hash of one file (a checkpoint's training pairs)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def weights_digest(folder: Path) -> str:
    """Content hash of a checkpoint's weights: its revision in record fingerprints."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.safetensors")):
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()[:16]
