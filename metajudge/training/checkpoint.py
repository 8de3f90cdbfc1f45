"""A trained checkpoint: its folder and marker, dtype and identity, and the engine that made it.

A checkpoint is written into ``checkpoint.tmp`` and renamed into place once complete; the
marker (``metajudge.json``, written last) holds the training's record. ``engine_record`` reads
what actually ran from the trainer (accelerate's distributed type, the ZeRO stage, the world
size, the mixed precision, the weights' dtypes), never from the settings that asked for it.
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
    trainable and frozen weights as the trainer took them (before any engine wrapped them)."""
    accelerator = trainer.accelerator
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    engine = trainer.model_wrapped if trainer.is_deepspeed_enabled else None
    if engine is not None and hasattr(engine, "bfloat16_enabled"):
        mixed = ("bf16" if engine.bfloat16_enabled() else
                 "fp16" if engine.fp16_enabled() else "no")
    else:
        mixed = str(accelerator.mixed_precision)
    kind = accelerator.distributed_type
    return {"distributed_type": str(getattr(kind, "value", kind)),
            "zero_stage": plugin.zero_stage if plugin is not None else None,
            "world_size": accelerator.num_processes, "mixed_precision": mixed, **weights}


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
