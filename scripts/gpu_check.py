"""The prepared GPU check: one iteration of the loop and launched DPO on a GPU with no network.

    scripts/gpu_check.sh                       # on the GPU machine (see the script for wheels)
    python scripts/gpu_check.py --cpu          # the same steps on a CPU, to check the script

No weights can travel, so a small Llama is built on the machine: a byte-level BPE tokenizer
trained on the bundled prompt pool, a ChatML chat template, and a random-init LlamaConfig
(~100M parameters). Then, timing each part:

1. the stages of one iteration (generate, judge with forced read-outs, meta-judge) through the
   in-process transformers backend on the GPU, bf16: tokens/s per stage;
2. DPO launched with ``accelerate launch`` and the shipped FSDP config (ZeRO-3 when DeepSpeed
   is installed), bf16 mixed precision over fp32 master weights, lr 5e-6, on 1 process, then on
   2 when the machine has 2 GPUs: seconds and peak GPU memory per step, and the share of a
   weight matrix's entries that moved (the check that updates did not round away);
3. iteration 2's model (the checkpoint) loaded again by the same backend, generating.

Prints the report and writes it to ``--out`` (results/gpu_check.md).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build_model(folder: Path, hidden: int, layers: int) -> Path:
    """A random-init Llama with a BPE tokenizer trained here; returns its directory."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    texts = [json.loads(line)["instruction"] for line in
             (ROOT / "metajudge" / "data" / "pool_human_en.jsonl").read_text()
             .splitlines()]
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=8192, special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", bos_token="<|im_start|>")
    fast.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    config = LlamaConfig(vocab_size=len(fast), hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=hidden // 64, num_key_value_heads=hidden // 256,
                         intermediate_size=hidden * 11 // 4, max_position_embeddings=4096,
                         bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                         pad_token_id=fast.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    fast.save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "results" / "gpu_check.md"))
    parser.add_argument("--cpu", action="store_true", help="run the steps on a CPU")
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=12)
    args = parser.parse_args()
    import torch

    from metajudge.backends import load_backend
    from metajudge.backends.serving import engine
    from metajudge.config import load_config
    from metajudge.stages.generate import run_generate
    from metajudge.stages.judge import run_judge
    from metajudge.stages.meta_judge import run_meta_judge
    from metajudge.stages.pairs import run_pairs
    from metajudge.stages.train import iteration_model, run_train
    from metajudge.store import Store

    cuda = torch.cuda.is_available() and not args.cpu
    if not cuda and not args.cpu:
        raise SystemExit("no CUDA GPU here; pass --cpu to run the steps on a CPU")
    gpus = torch.cuda.device_count() if cuda else 0
    lines = ["# GPU check", "", f"Command: `scripts/gpu_check.sh` ({time.strftime('%Y-%m-%d')})",
             "", f"- machine: {platform.node()}, "
             + (f"{gpus} × {torch.cuda.get_device_name(0)}" if cuda else "CPU (--cpu)")
             + f", torch {torch.__version__}"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        model_dir = build_model(work / "model", args.hidden, args.layers)
        params = sum(t.numel() for t in __import__("safetensors.torch").torch.load_file(
            str(model_dir / "model.safetensors")).values())
        lines.append(f"- model: random-init Llama, {params / 1e6:.0f}M parameters, built in "
                     f"{time.perf_counter() - started:.0f} s")
        base = ["prompts.per_iteration=16", "generation.samples_per_prompt=4",
                "generation.max_tokens=128", "judge.judgments_per_response=3",
                "judge.max_tokens=96", "meta_judge.max_tokens=48", "iterations=2",
                f"backend.model={model_dir}", "backend.transformers.batch_size=64",
                f"backend.dtype={'bfloat16' if cuda else 'float32'}",
                "training.learning_rate=5e-6", "training.per_device_batch_size=2",
                "training.save_dtype=float32", "runner.retry_delay_s=0"]
        lines += ["", "## Stages of iteration 1 (in-process transformers backend)", "",
                  "| stage | requests | generated tokens | seconds | tokens/s |",
                  "|---|---|---|---|---|"]
        run = work / "run"
        config = load_config(ROOT / "configs" / "tiny.yaml", base + [
            "training.global_batch_size=4"])
        store = Store.open(run, config)
        with load_backend(config.backend) as backend:
            for stage in (run_generate, run_judge, run_meta_judge):
                summary = stage(store, backend, 1, progress=False)
                lines.append(f"| {summary.stage} | {summary.requested} | "
                             f"{summary.generated_tokens} | {summary.seconds:.1f} | "
                             f"{summary.tokens_per_second:.0f} |")
        counts = run_pairs(store, 1)
        lines.append(f"\nPairs: {counts}")
        launches = [(1, "fsdp")] + ([(2, "fsdp")] if gpus >= 2 else [])
        if cuda and _has("deepspeed"):
            launches = [(n, "zero3") for n, _ in launches]
        lines += ["", "## Launched DPO (bf16 mixed precision, fp32 master weights, lr 5e-6)",
                  "", "| launch | world size | steps | s / step | peak GPU GB / step | "
                  "entries moved |", "|---|---|---|---|---|---|"]
        for processes, accel in launches:
            iteration_dir = run / "iter_01"
            shutil.rmtree(iteration_dir / "checkpoint", ignore_errors=True)
            training = ([f"training.launcher={'accelerate' if cuda else 'inprocess'}",
                         f"training.num_processes={processes if cuda else 1}",
                         f"training.accelerate_config={accel}",
                         f"training.global_batch_size={2 * processes * 2}"] if cuda else
                        ["training.mixed_precision=bf16"])
            store.close()  # reopened with the launch's settings (the ranks read config.yaml)
            store = Store.open(run, load_config(ROOT / "configs" / "tiny.yaml",
                                                base + training))
            entry = run_train(store, 1, progress=False)
            steps = [json.loads(x) for x in (iteration_dir / "train_metrics.jsonl")
                     .read_text().splitlines()]
            per_step = ((steps[-1]["time"] - steps[0]["time"]) / (len(steps) - 1)
                        if len(steps) > 1 else entry["seconds"] / max(entry["steps"], 1))
            peak = max((s.get("gpu_peak_gb", 0.0) for s in steps), default=0.0)
            lines.append(f"| {'accelerate ' + accel if cuda else 'inprocess (CPU)'} | "
                         f"{entry['world_size']} | {entry['steps']} | {per_step:.2f} | "
                         f"{peak:.2f} | {_moved(model_dir, iteration_dir / 'checkpoint'):.3f} |")
        lines += ["", "## Iteration 2 loads the checkpoint (the loop's path: M_2 = "
                  "iter_01/checkpoint)", ""]
        with engine(store.config.backend, iteration_model(store, 2),
                    store.iteration_dir(2)) as backend:
            summary = run_generate(store, backend, 2, progress=False)
        lines.append(f"generate iteration 2 from `iter_01/checkpoint`: {summary.completed} "
                     f"responses, {summary.tokens_per_second:.0f} tokens/s; fingerprint "
                     f"revision {backend.fingerprint.revision}")
        store.close()
    report = "\n".join(lines) + "\n"
    print(report)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(report)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _moved(base: Path, checkpoint: Path) -> float:
    """Share of the first attention matrix's entries that differ from M_t's."""
    from safetensors.torch import load_file

    name = "model.layers.0.self_attn.q_proj.weight"
    before = load_file(str(base / "model.safetensors"))[name].float()
    after = load_file(str(checkpoint / "model.safetensors"))[name].float()
    return float((before != after).float().mean())


if __name__ == "__main__":
    main()
