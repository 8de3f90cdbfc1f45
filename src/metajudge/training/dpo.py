"""A thin wrapper over TRL's ``DPOTrainer`` (SPEC §6).

    train_dpo("smollm2-135m-instruct", rows, Path("runs/x/iter_01"), TrainingConfig(), seed=0)

The reference model is the starting model of the iteration (TRL copies it when ``ref_model`` is
None). bf16 where the GPU supports it, float32 otherwise; gradient accumulation reaches the global
batch. Per-step metrics (loss, reward margins, accuracies, ...) go to ``train_metrics.jsonl``;
the checkpoint (safetensors, tokenizer, chat template) is written to a temporary folder and
renamed into place when complete, so a killed training leaves no half checkpoint and simply
reruns.
"""

from __future__ import annotations

import json
import logging
import math
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


def train_dpo(model: str, rows: list[dict[str, Any]], iteration_dir: Path,
              cfg: TrainingConfig, seed: int, *, trust_remote_code: bool = False,
              progress: bool = True) -> TrainResult:
    """Train one DPO iteration from ``model`` on TRL conversational rows; returns where the
    checkpoint is. Reuses a finished checkpoint."""
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
    resolved = resolve_model(model)
    cuda = torch.cuda.is_available()
    bf16 = bool(cuda and torch.cuda.is_bf16_supported())
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        resolved.path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    policy = transformers.AutoModelForCausalLM.from_pretrained(
        resolved.path, dtype=torch.bfloat16 if bf16 else torch.float32, use_safetensors=True,
        trust_remote_code=trust_remote_code)
    dataset = datasets.Dataset.from_list(
        [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}
         for r in rows])
    accumulation = max(1, cfg.global_batch_size // cfg.per_device_batch_size)
    work = iteration_dir / "trainer"
    args = trl.DPOConfig(
        output_dir=str(work), beta=cfg.beta, learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler, per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=accumulation, num_train_epochs=cfg.epochs,
        max_length=cfg.max_length, logging_steps=1, save_strategy="no", report_to=[],
        bf16=bf16, use_cpu=not cuda, seed=seed, data_seed=seed,
        disable_tqdm=not progress, warmup_steps=0,
    )
    metrics_path = iteration_dir / METRICS
    metrics_path.write_text("")  # a rerun after a kill starts the log afresh

    class _Log(transformers.TrainerCallback):  # type: ignore[misc,name-defined]
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None,
                   **kwargs: Any) -> None:
            if logs and "loss" in logs:
                with metrics_path.open("a") as fh:
                    fh.write(json.dumps({"step": state.global_step, **logs}) + "\n")

    trainer = trl.DPOTrainer(model=policy, ref_model=None, args=args, train_dataset=dataset,
                             processing_class=tokenizer, callbacks=[_Log()])
    trainer.train()
    tmp = iteration_dir / (CHECKPOINT + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    (tmp / "training_args.bin").unlink(missing_ok=True)  # a pickle; checkpoints hold none
    shutil.rmtree(work, ignore_errors=True)
    steps = trainer.state.global_step
    logged = read_metrics(iteration_dir)
    final = {k: float(v) for k, v in (logged[-1] if logged else {}).items()
             if isinstance(v, int | float) and math.isfinite(v)}
    seconds = time.perf_counter() - started
    (tmp / MARKER).write_text(json.dumps({
        "base_model": model, "base_revision": resolved.revision, "pairs": len(rows),
        "steps": steps, "seconds": seconds, "final_metrics": final, "beta": cfg.beta,
        "learning_rate": cfg.learning_rate, "seed": seed, "bf16": bf16,
    }, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return TrainResult(target, len(rows), steps, seconds, final)


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
