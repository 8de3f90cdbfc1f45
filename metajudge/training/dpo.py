"""One iteration's DPO through TRL's ``DPOTrainer`` (SPEC §6), in one process or one rank.

    python -m metajudge.training.dpo RUN_DIR --iteration 1     # what each launched rank runs

The policy is loaded in float32: its weights and AdamW's states are the fp32 master copy, and
``training.mixed_precision`` (bf16 on a GPU that has it) only makes the forward and backward
compute in 16 bits. AdamW on bf16 weights would round most updates away at the paper's lr 5e-6
(bf16 keeps 8 significant bits), so that is refused. Under DeepSpeed ZeRO-3 the engine keeps its
own fp32 master weights. The reference model is M_t: TRL loads it from the same path, revision
and ``trust_remote_code``; with ``training.precompute_ref_log_probs`` its log-probabilities are
computed once and no reference stays in memory; with LoRA the reference is the base model with
the adapter disabled, and the adapter is merged into a full checkpoint at the end.

Rank 0 alone writes the metrics (``train_metrics.jsonl``) and the checkpoint, first into
``checkpoint.tmp`` and renamed into place when complete, so a killed training leaves no half
checkpoint and simply reruns.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metajudge.config import TrainingConfig
from metajudge.extras import require
from metajudge.models import resolve_model

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint"
METRICS = "train_metrics.jsonl"
#: the reference log-probabilities, when precomputed
REFERENCE = "reference_logps.jsonl"
#: written last into a finished checkpoint
MARKER = "metajudge.json"


@dataclass(frozen=True)
class TrainResult:
    checkpoint: Path
    pairs: int
    steps: int
    seconds: float
    final_metrics: dict[str, float]


def checkpoint_done(iteration_dir: Path) -> bool:
    return (iteration_dir / CHECKPOINT / MARKER).is_file()


def read_metrics(iteration_dir: Path) -> list[dict[str, Any]]:
    path = iteration_dir / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def precision(requested: str, cuda: bool, bf16_supported: bool) -> str:
    """The mixed precision to train with: ``bf16``, ``fp16`` or ``no``.

    >>> precision("auto", cuda=True, bf16_supported=True), precision("auto", False, False)
    ('bf16', 'no')
    """
    if requested == "auto":
        return "bf16" if cuda and bf16_supported else "no"
    return requested


def check_master_weights(model: Any, deepspeed: bool) -> None:
    """Refuse to train when a trainable weight is not float32 (outside DeepSpeed, which keeps
    fp32 master copies itself)."""
    if deepspeed:
        return
    low = sorted({str(p.dtype) for p in model.parameters()
                  if p.requires_grad and str(p.dtype) != "torch.float32"})
    if low:
        raise ValueError(f"trainable weights are {', '.join(low)}: AdamW on 16-bit weights "
                         "rounds small updates away; train float32 weights with mixed precision")


def train_dpo(model: str, rows: list[dict[str, Any]], iteration_dir: Path,
              cfg: TrainingConfig, seed: int, *, revision: str | None = None,
              trust_remote_code: bool = False, progress: bool = True) -> TrainResult:
    """Train one DPO iteration from ``model`` on TRL conversational rows; reuses a finished
    checkpoint. Works in a single process and in every rank of a launched job."""
    torch = require("torch", "transformers")
    transformers = require("transformers", "transformers")
    trl = require("trl", "transformers")
    datasets = require("datasets", "transformers")
    target = iteration_dir / CHECKPOINT
    if checkpoint_done(iteration_dir):
        meta = json.loads((target / MARKER).read_text())
        return TrainResult(target, meta["pairs"], meta["steps"], meta["seconds"],
                           meta["final_metrics"])
    if not rows:
        raise ValueError("no preference pairs to train on")
    started = time.perf_counter()
    resolved = resolve_model(model, revision)
    cuda = torch.cuda.is_available()
    mixed = precision(cfg.mixed_precision, cuda, cuda and torch.cuda.is_bf16_supported())
    load = {"revision": None if resolved.local else resolved.revision,
            "trust_remote_code": trust_remote_code}
    tokenizer = transformers.AutoTokenizer.from_pretrained(resolved.path, **load)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    dataset = datasets.Dataset.from_list(
        [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}
         for r in rows])
    work = iteration_dir / "trainer"
    extra: dict[str, Any] = {}
    if cfg.data_order == "sequential":
        extra["train_sampling_strategy"] = "sequential"
    args = trl.DPOConfig(
        output_dir=str(work), beta=cfg.beta, learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler, per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.accumulation, num_train_epochs=cfg.epochs,
        max_length=cfg.max_length, logging_steps=1, save_strategy="no",
        report_to=cfg.report_to or "none", bf16=mixed == "bf16", fp16=mixed == "fp16",
        use_cpu=not cuda, seed=seed, data_seed=seed, disable_tqdm=not progress,
        warmup_steps=0, gradient_checkpointing=cfg.gradient_checkpointing,
        precompute_ref_log_probs=cfg.precompute_ref_log_probs,
        model_init_kwargs={"dtype": torch.float32, **load},
        **extra,
    )
    if "tensorboard" in cfg.report_to:  # the step scalars beside the run's other records
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(iteration_dir / "tracking"))
    metrics_path = iteration_dir / METRICS

    class _Log(transformers.TrainerCallback):  # type: ignore[misc,name-defined]
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                metrics_path.write_text("")  # a rerun after a kill starts the log afresh

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None,
                   **kwargs: Any) -> None:
            if logs and "loss" in logs and state.is_world_process_zero:
                memory = {}
                if cuda:  # this rank's peak since the last logged step
                    memory["gpu_peak_gb"] = torch.cuda.max_memory_allocated() / 1e9
                    torch.cuda.reset_peak_memory_stats()
                with metrics_path.open("a") as fh:
                    fh.write(json.dumps({"step": state.global_step, "time": time.time(),
                                         **logs, **memory}) + "\n")

    peft_config, quantization = _lora(cfg, cuda)
    trainer = trl.DPOTrainer(model=resolved.path, args=args, train_dataset=dataset,
                             processing_class=tokenizer, callbacks=[_Log()],
                             peft_config=peft_config, quantization_config=quantization)
    check_master_weights(trainer.model, trainer.is_deepspeed_enabled)
    if cfg.precompute_ref_log_probs and trainer.accelerator.is_main_process:
        _write_reference(iteration_dir, rows, trainer.train_dataset)
    trainer.train()
    tmp = iteration_dir / (CHECKPOINT + ".tmp")
    main = trainer.accelerator.is_main_process
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    save_dtype = cfg.save_dtype if cfg.save_dtype != "auto" else (
        "bfloat16" if mixed == "bf16" else "float32")
    if peft_config is not None:
        adapter = work / "adapter"
        trainer.save_model(str(adapter))  # every rank takes part; the main one writes
        if main:
            merge_adapter(resolved.path, adapter, tmp, save_dtype, load)
    else:
        trainer.save_model(str(tmp))
    trainer.accelerator.wait_for_everyone()
    steps = trainer.state.global_step
    world = trainer.accelerator.num_processes
    if not main:
        return TrainResult(target, len(rows), steps, time.perf_counter() - started, {})
    cast_checkpoint(tmp, save_dtype)
    tokenizer.save_pretrained(str(tmp))
    (tmp / "training_args.bin").unlink(missing_ok=True)  # a pickle; checkpoints hold none
    shutil.rmtree(work, ignore_errors=True)
    logged = read_metrics(iteration_dir)
    final = {k: float(v) for k, v in (logged[-1] if logged else {}).items()
             if isinstance(v, int | float) and math.isfinite(v) and k not in ("time",)}
    seconds = time.perf_counter() - started
    (tmp / MARKER).write_text(json.dumps({
        "base_model": model, "base_revision": resolved.revision, "pairs": len(rows),
        "steps": steps, "seconds": seconds, "final_metrics": final, "beta": cfg.beta,
        "learning_rate": cfg.learning_rate, "seed": seed, "mixed_precision": mixed,
        "save_dtype": save_dtype, "world_size": world,
        "per_device_batch_size": cfg.per_device_batch_size,
        "gradient_accumulation": cfg.accumulation,
        "global_batch_size": cfg.per_device_batch_size * cfg.accumulation * world,
        "lora": cfg.lora.model_dump() if cfg.lora else None,
        "weights_sha256": weights_digest(tmp),
    }, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return TrainResult(target, len(rows), steps, seconds, final)


def _write_reference(iteration_dir: Path, rows: list[dict[str, Any]], dataset: Any) -> None:
    """The precomputed reference log-probabilities (M_t's), one line per pair."""
    columns = dataset.select_columns(["ref_chosen_logps", "ref_rejected_logps"]).to_list()
    with (iteration_dir / REFERENCE).open("w") as fh:
        for row, ref in zip(rows, columns, strict=True):
            fh.write(json.dumps({"id": row.get("id"), "chosen": ref["ref_chosen_logps"],
                                 "rejected": ref["ref_rejected_logps"]}) + "\n")


def _lora(cfg: TrainingConfig, cuda: bool) -> tuple[Any, Any]:
    if cfg.lora is None:
        return None, None
    peft = require("peft", "lora")
    quantization = None
    if cfg.lora.qlora:
        if not cuda:
            raise ValueError("training.lora.qlora needs a GPU (bitsandbytes 4-bit kernels)")
        require("bitsandbytes", "qlora")
        torch = require("torch", "transformers")
        transformers = require("transformers", "transformers")
        quantization = transformers.BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)
    config = peft.LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha,
                             lora_dropout=cfg.lora.dropout,
                             target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM")
    return config, quantization


def merge_adapter(base: str, adapter: Path, out: Path, dtype: str,
                  load: dict[str, Any]) -> None:
    """Merge a LoRA adapter into a fresh copy of its (unquantised) base model and save a full
    safetensors checkpoint that loads without peft."""
    torch = require("torch", "transformers")
    transformers = require("transformers", "transformers")
    peft = require("peft", "lora")
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


def weights_digest(folder: Path) -> str:
    """Content hash of a checkpoint's weights: its revision in record fingerprints."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.safetensors")):
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def sequence_logprob(model: Any, tokenizer: Any, prompt: list[dict[str, str]],
                     completion: str) -> float:
    """Sum of log-probabilities of an assistant completion after a chat prompt."""
    torch = require("torch", "transformers")
    prefix = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(
        prompt + [{"role": "assistant", "content": completion}], tokenize=False)
    prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
    logprobs = torch.log_softmax(logits, -1)
    targets = torch.tensor(ids[1:])
    picked = logprobs[torch.arange(len(targets)), targets]
    return float(picked[len(prefix_ids) - 1:].sum())


def reward_margins(policy: str, reference: str, rows: list[dict[str, Any]], beta: float
                   ) -> list[float]:
    """DPO's implicit reward margin per pair, β·[(log π(c) − log π_ref(c)) − (log π(r) −
    log π_ref(r))], for a policy checkpoint against its reference; 0 when they are equal."""
    transformers = require("transformers", "transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(resolve_model(reference).path)
    models = [transformers.AutoModelForCausalLM.from_pretrained(
        resolve_model(path).path, use_safetensors=True).eval() for path in (policy, reference)]
    margins = []
    for row in rows:
        prompt = row["prompt"]
        lp = [[sequence_logprob(m, tokenizer, prompt, row[side][0]["content"])
               for side in ("chosen", "rejected")] for m in models]
        margins.append(beta * ((lp[0][0] - lp[1][0]) - (lp[0][1] - lp[1][1])))
    return margins


def main(argv: list[str] | None = None) -> None:
    """One rank of a launched training job (torchrun / accelerate launch run this)."""
    from metajudge.processes import die_with_parent
    from metajudge.stages.train import train_iteration

    die_with_parent()  # a rank never outlives its launcher
    parser = argparse.ArgumentParser(prog="python -m metajudge.training.dpo")
    parser.add_argument("run_dir")
    parser.add_argument("--iteration", type=int, required=True)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    train_iteration(Path(args.run_dir), args.iteration, progress=not args.no_progress)


if __name__ == "__main__":
    main()
