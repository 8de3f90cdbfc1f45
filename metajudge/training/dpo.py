"""One iteration's DPO through TRL's ``DPOTrainer`` (SPEC §6), in one process or one rank.

Each rank of a launched job runs ``python -m metajudge.stages.train RUN --iteration N``, which
calls :func:`train_dpo` here (the arrows run one way: stages → training).

The policy is loaded in float32. In one process or under DDP its weights, their gradients and
AdamW's states stay float32 (the master copy), and ``training.mixed_precision`` (bf16 on a GPU
that has it) only makes the forward and backward compute in 16 bits. AdamW on bf16 weights
would round most updates away at the paper's lr 5e-6 (bf16 keeps 8 significant bits), so that is
refused. Under DeepSpeed ZeRO-3 with bf16, ``zero.Init`` turns the fp32-loaded module into bf16
(the record's ``trainable_dtype``); the optimizer keeps its own fp32 master partitions
(``engine.master_dtype``, read from it); each micro-step's gradients are reduce-scattered in
bf16 (``engine.reduce_dtype``) and summed over the accumulation steps in the DeepSpeed config's
``data_types.grad_accum_dtype``, which DeepSpeed 0.19.8 otherwise sets to the model's bf16: the
shipped zero3 config asks for fp32 (``engine.grad_accum_dtype``, read from the buffer ZeRO-3
accumulates into). With
LoRA only the adapters train: the frozen base is loaded in the compute dtype (bf16 under bf16
mixed precision) and the adapters in float32; under QLoRA the base is 4-bit and the adapters are
float32 too (TRL casts them to bf16; they are cast back). The precision that runs is this
setting's, whatever an accelerate config exported (``ACCELERATE_MIXED_PRECISION``), and the
checkpoint record says what ran (``engine``).

The reference model is M_t: TRL loads it from the same path, revision and
``trust_remote_code``; with ``training.precompute_ref_log_probs`` its log-probabilities are
computed once and no reference stays in memory; with LoRA the reference is the base model with
the adapter disabled, and the adapter is merged into a full checkpoint at the end. The pairs
are written once into the iteration's ``trainer/pairs`` dataset, so every rank (and TRL's
caches, the precomputed reference among them) shares one on-disk copy. A pair whose prompt
alone fills ``training.max_length`` is dropped by TRL; the record names it.

Rank 0 alone writes the metrics (``train_metrics.jsonl``) and the checkpoint, first into
``checkpoint.tmp`` and renamed into place when complete, so a killed training leaves no half
checkpoint and simply reruns.
"""

from __future__ import annotations

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
from metajudge.jsonl import read_objects
from metajudge.models import resolve_model
from metajudge.training.checkpoint import (
    CHECKPOINT,
    MARKER,
    cast_checkpoint,
    checkpoint_done,
    engine_record,
    merge_adapter,
    weight_dtypes,
    weights_digest,
)
from metajudge.training.compat import checkpointing_args, quiet_checkpointing_alias

log = logging.getLogger(__name__)

METRICS = "train_metrics.jsonl"
#: the reference log-probabilities, when precomputed
REFERENCE = "reference_logps.jsonl"
#: the column that ties TRL's (filtered) dataset back to our rows
ROW = "metajudge_row"
#: what accelerate exports from its config and transformers applies when bf16 and fp16 are off
PRECISION_ENV = "ACCELERATE_MIXED_PRECISION"

@dataclass(frozen=True)
class TrainResult:
    checkpoint: Path
    pairs: int
    steps: int
    seconds: float
    final_metrics: dict[str, float]


def read_metrics(iteration_dir: Path) -> list[dict[str, Any]]:
    path = iteration_dir / METRICS
    if not path.is_file():
        return []
    return read_objects(path)  # a bad line is named by file and line


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


def upcast_trainable(model: Any) -> int:
    """Cast 16-bit trainable weights to float32 (master weights); returns how many.

    TRL casts a quantized model's LoRA adapters to bf16 (the QLoRA paper's choice); peft's own
    default keeps them in float32, and its 4-bit layers take float32 adapters under bf16
    autocast. The adapters are a fraction of a percent of the model, so their fp32 copy costs
    little, and lr 5e-6 updates are not rounded away."""
    torch = require("torch", "transformers")
    cast = 0
    for param in model.parameters():
        if param.requires_grad and param.dtype in (torch.bfloat16, torch.float16):
            param.data = param.data.float()
            cast += 1
    return cast


@quiet_checkpointing_alias()
def train_dpo(model: str, rows: list[dict[str, Any]], iteration_dir: Path,
              cfg: TrainingConfig, seed: int, *, revision: str | None = None,
              trust_remote_code: bool = False, progress: bool = True,
              made_from: dict[str, Any] | None = None) -> TrainResult:
    """Train one DPO iteration from ``model`` on TRL conversational rows; reuses a finished
    checkpoint. Works in a single process and in every rank of a launched job. ``made_from``
    (what the checkpoint is trained from: M_t's identity, the pairs' digest, the settings) goes
    into the checkpoint's record as it is."""
    torch = require("torch", "transformers")
    transformers = require("transformers", "transformers")
    trl = require("trl", "transformers")
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
    if os.environ.get(PRECISION_ENV, mixed) != mixed:  # exported by an accelerate config
        log.info("training.mixed_precision %s overrides the launcher's %s", mixed,
                 os.environ[PRECISION_ENV])
        os.environ[PRECISION_ENV] = mixed
    load = {"revision": None if resolved.local else resolved.revision,
            "trust_remote_code": trust_remote_code}
    tokenizer = transformers.AutoTokenizer.from_pretrained(resolved.path, **load)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    work = iteration_dir / "trainer"
    extra: dict[str, Any] = {}
    if cfg.data_order == "sequential":
        extra["train_sampling_strategy"] = "sequential"
    # under LoRA the frozen base computes in the compute dtype; trained weights stay float32
    base_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(
        mixed, torch.float32) if cfg.lora is not None else torch.float32
    args = trl.DPOConfig(
        output_dir=str(work), beta=cfg.beta, learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler, per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.accumulation, num_train_epochs=cfg.epochs,
        max_length=cfg.max_length, logging_steps=1, save_strategy="no",
        report_to=cfg.report_to or "none", bf16=mixed == "bf16", fp16=mixed == "fp16",
        use_cpu=not cuda, seed=seed, data_seed=seed, disable_tqdm=not progress,
        warmup_steps=0, precompute_ref_log_probs=cfg.precompute_ref_log_probs,
        model_init_kwargs={"dtype": base_dtype, **load},
        **checkpointing_args(trl.DPOConfig, cfg.gradient_checkpointing), **extra,
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
    trainer = trl.DPOTrainer(model=resolved.path, args=args,
                             train_dataset=pairs_dataset(rows, work / "pairs", args),
                             processing_class=tokenizer, callbacks=[_Log()],
                             peft_config=peft_config, quantization_config=quantization)
    if quantization is not None and not trainer.is_deepspeed_enabled:
        upcast_trainable(trainer.model)
    check_master_weights(trainer.model, trainer.is_deepspeed_enabled)
    weights = weight_dtypes(trainer.model)
    kept = list(trainer.train_dataset[ROW])
    dropped = [rows[k].get("id") or str(k) for k in sorted(set(range(len(rows))) - set(kept))]
    if not kept:
        raise ValueError(f"every pair's prompt alone fills training.max_length "
                         f"{cfg.max_length} tokens: nothing to train on")
    if dropped:
        log.warning("%d of %d pairs dropped: their prompt alone fills training.max_length "
                    "%d tokens (%s)", len(dropped), len(rows), cfg.max_length,
                    ", ".join(dropped[:5]) + (" ..." if len(dropped) > 5 else ""))
    main = trainer.accelerator.is_main_process
    if cfg.precompute_ref_log_probs and main:
        _write_reference(iteration_dir / REFERENCE, rows, trainer.train_dataset,
                         cfg.max_length)
    trainer.train()
    engine = engine_record(trainer, weights)  # under DeepSpeed: master and accumulation dtypes
    tmp = iteration_dir / (CHECKPOINT + ".tmp")
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
        "pairs_trained": len(kept), "pairs_dropped": dropped,
        "steps": steps, "seconds": seconds, "final_metrics": final, "beta": cfg.beta,
        "learning_rate": cfg.learning_rate, "seed": seed, "mixed_precision": mixed,
        "save_dtype": save_dtype, "world_size": world, "engine": engine,
        "per_device_batch_size": cfg.per_device_batch_size,
        "gradient_accumulation": cfg.accumulation,
        "global_batch_size": cfg.per_device_batch_size * cfg.accumulation * world,
        "lora": cfg.lora.model_dump() if cfg.lora else None,
        "weights_sha256": weights_digest(tmp), "made_from": made_from,
    }, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return TrainResult(target, len(rows), steps, seconds, final)


def pairs_dataset(rows: list[dict[str, Any]], folder: Path, args: Any) -> Any:
    """The pairs as a dataset saved in ``folder``, which every rank loads.

    An in-memory dataset would give each process its own random cache directory, and TRL's
    precomputed reference, written by rank 0 into the dataset's cache directory, would be
    missing on the other ranks. On disk, every cache TRL writes lies in ``folder``, under names
    derived from the data, for all ranks (the run directory is shared by every machine)."""
    datasets = require("datasets", "transformers")
    with args.main_process_first(local=False, desc="the pairs dataset"):
        if args.process_index == 0:  # first, while the others wait; never a stale copy
            shutil.rmtree(folder, ignore_errors=True)
            datasets.Dataset.from_list([
                {"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"],
                 ROW: k} for k, r in enumerate(rows)]).save_to_disk(str(folder))
        return datasets.load_from_disk(str(folder))


def _write_reference(path: Path, rows: list[dict[str, Any]], dataset: Any,
                     max_length: int) -> None:
    """The precomputed reference log-probabilities (M_t's), one line per pair in file order;
    a pair TRL dropped has none and says why."""
    found = {row: (chosen, rejected) for row, chosen, rejected in zip(
        dataset[ROW], dataset["ref_chosen_logps"], dataset["ref_rejected_logps"], strict=True)}
    with path.open("w") as fh:
        for k, row in enumerate(rows):
            line: dict[str, Any] = {"id": row.get("id"), "chosen": None, "rejected": None}
            if k in found:
                line["chosen"], line["rejected"] = found[k]
            else:
                line["dropped"] = f"its prompt alone fills training.max_length ({max_length})"
            fh.write(json.dumps(line) + "\n")


def _lora(cfg: TrainingConfig, cuda: bool) -> tuple[Any, Any]:
    if cfg.lora is None:
        return None, None
    peft = require("peft", "lora")
    quantization = None
    if cfg.lora.qlora:
        if not cuda:
            raise ValueError("training.lora.qlora needs a CUDA GPU (bitsandbytes 4-bit "
                             "kernels); none is visible here")
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
