"""Projected cost of a run before running it: requests, calls, tokens, hours, training memory.

``metajudge run CONFIG --dry-run`` prints these tables. Per iteration with P prompts, K
responses per prompt and N judgments per response:

* generate: P·K requests; at most P·K·max_tokens generated tokens;
* judge: P·K·N requests (prompts: rubric + instruction + response), and with
  ``judge.probability_weighted`` up to one label-scoring request per judgment;
* meta-judge (iterations that train on judge pairs): one selected response per prompt, all
  N·(N − 1) ordered pairs of its judgments: at most P·N·(N − 1) requests;
* train: at most one actor and one judge pair per prompt; optimizer steps =
  ⌈pairs·epochs / global batch⌉.

With ``judge.adaptive`` / ``meta_judge.adaptive`` (SPEC §5a) the judge and meta-judge requests
are the full procedure's times the adaptive share s, plus the audit's a·(1 − s) (a: the audit
share), and with ``judge.adaptive`` the meta-judge's plus a (the audit also compares every
ordered pair of the full selection's response: at most one more response per audited prompt);
s is measured in a calibration run (``--calibrate RUN``: the share of the full procedure's
requests its adaptive stages made, audit requests left out) or else the default,
the pure simulation's at paper-like settings (SPEC §5a); the table's ``share`` column and the
line under it say which.

Generated tokens are shown as the bound (``max_tokens`` per request) and, given a finished run
to calibrate on (``--calibrate RUN``), as an estimate from that run's measured tokens per
request. Hours: the estimated (else half the bound) generated tokens over the decoding
throughput of one engine (``--tokens-per-second``, else the calibration run's measured
tokens/s per stage) times the number of replicas (``backend.serve.replicas`` or the
``openai.base_url`` list); prefill time is not modelled, which prefix caching keeps small for
the judge and meta-judge.

Training memory (``--gpus 8x80``): per-GPU gigabytes of the states each set-up keeps for a
model of P parameters (from the model's ``config.json`` when local, a table of known models, or
``--model-params``), before activations (which gradient checkpointing cuts):

* full DPO, one GPU: fp32 weights 4 + fp32 gradients 4 (they are the accumulation buffer) +
  Adam 8 = 16 bytes per parameter, plus the reference, which TRL loads like the policy, in
  fp32: 4 bytes (none with ``precompute_ref_log_probs``);
* ZeRO-3 over G GPUs in bf16: the module's weights, made bf16 by ``zero.Init``, 2 + the
  optimizer's fp32 master partition 4 + Adam 8 + the gradient-accumulation buffer, A = 4 bytes
  in fp32 (the shipped zero3.json's ``data_types.grad_accum_dtype``) or 2 in bf16 (DeepSpeed's
  default, the model's dtype), plus the reference as a bf16 DeepSpeed inference engine, 2
  bytes, all sharded: (2 + 4 + 8 + A + 2)·P / G;
* the EFT seed stage's SFT, launched as DPO is: the same without a reference, 16·P on one GPU,
  (2 + 4 + 8 + A)·P / G under ZeRO-3;
* LoRA: the frozen base in bf16 (2 bytes; ``metajudge.training.dpo`` loads it in the compute
  dtype) plus 16 bytes per fp32 adapter parameter; the reference is the base with the adapter
  disabled, no copy;
* QLoRA: the linear layers in 4-bit NF4 with double quantisation (~0.53 bytes), the embeddings
  and output head (not quantised) in bf16, 2 bytes, plus the adapter.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import yaml

from metajudge.config import RunConfig, scheduled
from metajudge.prompts import load_prompts
from metajudge.stages.adaptive import audit_share
from metajudge.templates import load_template

CHARS_PER_TOKEN = 4.0
GB = 1e9
#: parameters of models people run this with (decoder-only), when no config.json is at hand
KNOWN_PARAMS = {"meta-llama-3-8b": 8.03e9, "llama-3.1-8b": 8.03e9, "llama-2-7b": 6.74e9,
                "mistral-7b": 7.24e9, "qwen2.5-7b": 7.62e9, "smollm2-135m": 1.35e8,
                "llama-3-70b": 70.6e9}
#: headroom kept free of states on each GPU (activations, buffers, fragmentation)
ACTIVATION_SHARE = 0.25


def project_costs(config: RunConfig, calibrate: Path | None = None, *,
                  tokens_per_second: float | None = None) -> pd.DataFrame:
    """One row per (iteration, stage): requests, calls, tokens and, with a throughput, hours."""
    measured = _measured(calibrate) if calibrate else {}
    instruction_tokens = _mean_instruction_tokens(config)
    judge_template = len(load_template(config.judge.template or "judge").template)
    meta_template = len(load_template(config.meta_judge.template or "meta_judge").template)
    P = config.prompts.per_iteration
    K = config.generation.samples_per_prompt
    N = config.judge.judgments_per_response
    response = measured.get("generate", {}).get("generated", config.generation.max_tokens / 2)
    judgment = measured.get("judge", {}).get("generated", config.judge.max_tokens / 2)
    replicas = engines(config)
    chunk = config.runner.chunk_size
    if config.backend.kind == "transformers":  # fixed batches: sent one batch at a time
        chunk = min(chunk, config.backend.transformers.batch_size)
    shares = adaptive_shares(config, calibrate)
    audit = audit_share(config)
    rows = []
    for iteration in range(1, config.iterations + 1):
        types = scheduled(config.pairs.pair_types, iteration)
        stages = [
            ("generate", P * K, config.generation.max_tokens, instruction_tokens + 8, False),
            ("judge", P * K * N, config.judge.max_tokens,
             judge_template / CHARS_PER_TOKEN + instruction_tokens + response,
             config.judge.forced_readout or config.judge.probability_weighted),
        ]
        if "judge" in types:
            stages.append(("meta-judge", P * N * (N - 1), config.meta_judge.max_tokens,
                           meta_template / CHARS_PER_TOKEN + instruction_tokens + response
                           + 2 * judgment, config.meta_judge.forced_readout))
        for stage, requests, max_tokens, prompt_estimate, readouts in stages:
            share, full = shares.get(stage), requests
            if share is not None:
                requests = round(full * (share[0] + share[1] * (1 - share[0])))
            if stage == "meta-judge" and config.judge.adaptive:
                # the audit also compares every ordered pair of the full selection's
                # response (at most one more response per audited prompt)
                requests += round(full * audit)
            seen = measured.get(stage, {})
            generated = requests * seen["generated"] if "generated" in seen else None
            rate = tokens_per_second or seen.get("tokens_per_second")
            row = {
                "iteration": iteration, "stage": stage, "requests": requests,
                "label_requests_max": requests if readouts else 0,
                "backend_calls": math.ceil(requests / chunk) * (1 + int(readouts)),
                "prompt_tokens_est": round(requests * seen.get("prompt", prompt_estimate)),
                "generated_tokens_max": requests * max_tokens,
                "generated_tokens_est": round(generated) if generated is not None else None,
                **({"share": share[0]} if share is not None else {}),
            }
            if rate:
                tokens = generated if generated is not None else requests * max_tokens / 2
                row["hours_est"] = round(tokens / (rate * replicas) / 3600, 2)
            rows.append(row)
        pairs = P * len(types)
        batch = config.training.global_batch_size
        rows.append({"iteration": iteration, "stage": "train", "requests": 0,
                     "backend_calls": 0, "dpo_pairs_max": pairs,
                     "optimizer_steps_max": math.ceil(pairs * config.training.epochs / batch),
                     "train_tokens_max": pairs * config.training.max_length * 2})
    frame = pd.DataFrame(rows)
    frame.attrs["adaptive"] = "; ".join(
        f"{stage}: share {s:.2f} of the full procedure's requests ({source}) + audit {a:.0%}"
        + (" + the full selection's comparisons on the audited prompts"
           if stage == "meta-judge" and config.judge.adaptive and a else "")
        for stage, (s, a, source) in shares.items())
    return frame


#: adaptive shares of the full procedure's requests at the default rules, measured by
#: ``benchmarks/adaptive_pure_sim.py`` (400 prompts, K 7, N 11, score noise sd 1, first-position
#: bias 0.5 logits; SPEC §5a)
DEFAULT_ADAPTIVE_SHARES = {"judge": 0.50, "meta-judge": 0.57}


def adaptive_shares(config: RunConfig, calibrate: Path | None = None
                    ) -> dict[str, tuple[float, float, str]]:
    """Per adaptive stage, (share of the full procedure's requests, audit share, where the
    share comes from): the calibration run's measured share when it ran that stage
    adaptively, else the default."""
    out = {}
    audit = audit_share(config)  # one sample for both stages (SPEC §5a)
    for stage, on in (("judge", config.judge.adaptive),
                      ("meta-judge", config.meta_judge.adaptive)):
        if not on:
            continue
        measured = _measured_share(calibrate, stage) if calibrate else None
        out[stage] = ((measured, audit, f"measured in {calibrate}") if measured is not None
                      else (DEFAULT_ADAPTIVE_SHARES[stage], audit,
                            "default: the SPEC §5a simulation"))
    return out


def _measured_share(run_dir: Path, stage: str) -> float | None:
    """The share of the full procedure's requests an adaptive stage of a finished run made
    (audit requests left out), over its iterations; None when it did not run adaptively."""
    from metajudge.store import STAGE_FILES, Store

    store = Store.open(run_dir, lock=False)
    try:
        n = store.config.judge.judgments_per_response
        made = full = 0
        for folder in sorted(run_dir.glob("iter_[0-9][0-9]")):
            iteration = int(folder.name[5:])
            file = STAGE_FILES["judgments" if stage == "judge" else "meta_judgments"]
            records = list(store.iter_records(file, iteration))
            if not any(r.rule is not None for r in records):
                continue  # not run (yet), or not adaptively: neither made nor full counts
            made += sum(r.rule not in (None, "audit") for r in records)
            if stage == "judge":
                full += store.count(STAGE_FILES["responses"], iteration) * n
            else:
                full += sum(1 for s in store.iter_records(STAGE_FILES["meta_selection"],
                                                          iteration)
                            if s.response_id is not None) * n * (n - 1)
        return made / full if made and full else None
    finally:
        store.close()


def engines(config: RunConfig) -> int:
    """How many engines serve the stages at once (replicas)."""
    backend = config.backend
    if backend.kind == "openai":
        return backend.serve.replicas if backend.serve else len(backend.openai.urls)
    return 1


def model_params(config: RunConfig, given: float | None = None) -> float | None:
    """The seed model's parameter count: given, from a local config.json, or known."""
    if given:
        return given
    folder = Path(config.backend.model).expanduser()
    if (folder / "config.json").is_file():
        return decoder_params(json.loads((folder / "config.json").read_text()))
    name = re.sub(r"[^a-z0-9.]+", "-", config.backend.model.lower())
    for known, count in KNOWN_PARAMS.items():
        if known in name:
            return count
    return None


def decoder_params(cfg: dict) -> float:
    """Parameters of a Llama-style decoder from its config.json (embeddings included)."""
    h, layers, vocab = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    inter = cfg.get("intermediate_size", 4 * h)
    kv = h * cfg.get("num_key_value_heads", cfg["num_attention_heads"]) // cfg[
        "num_attention_heads"]
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * inter + 2 * h
    head = 0 if cfg.get("tie_word_embeddings") else vocab * h
    return float(layers * per_layer + vocab * h + head + h)


def lora_params(cfg: dict | None, params: float, r: int) -> float:
    """Adapter parameters of rank r on every linear layer (Llama-style), else ~0.52 % of P at
    r = 16 (Llama-3-8B's share), scaled with r."""
    if cfg is None:
        return params * 0.0052 * r / 16
    h, layers = cfg["hidden_size"], cfg["num_hidden_layers"]
    inter = cfg.get("intermediate_size", 4 * h)
    kv = h * cfg.get("num_key_value_heads", cfg["num_attention_heads"]) // cfg[
        "num_attention_heads"]
    shapes = [(h, h), (h, kv), (h, kv), (h, h), (h, inter), (h, inter), (inter, h)]
    return float(layers * sum(r * (a + b) for a, b in shapes))


def embedding_params(cfg: dict | None, params: float) -> float:
    """Parameters of the input embeddings and the output head (bitsandbytes leaves them in
    16 bits), else ~13.1 % of P (Llama-3-8B's share)."""
    if cfg is None:
        return params * 0.131
    tables = 1 if cfg.get("tie_word_embeddings") else 2
    return float(tables * cfg["vocab_size"] * cfg["hidden_size"])


#: bytes per parameter of DeepSpeed's data_types.grad_accum_dtype names
ACCUMULATION_BYTES = {"fp32": 4, "float32": 4, "bf16": 2, "bfloat16": 2, "fp16": 2,
                      "float16": 2}


def zero3_accumulation(config: RunConfig) -> str:
    """The gradient-accumulation dtype ZeRO-3 would use in bf16: the DeepSpeed JSON's
    ``data_types.grad_accum_dtype`` of ``training.accelerate_config`` when that is a ZeRO-3
    config with a JSON, else the shipped zero3's; ``bf16`` (the model's dtype, DeepSpeed's
    default) when the JSON names none."""
    from metajudge.stages.train import accelerate_config, deepspeed_file

    name = config.training.accelerate_config or "zero3"
    try:
        path = accelerate_config(name)
        raw = yaml.safe_load(path.read_text()) or {}
        ds_path = deepspeed_file(path, raw)
        data = json.loads(ds_path.read_text()) if ds_path is not None else {}
    except (OSError, ValueError):
        raw, data = {}, {}
    inline = raw.get("deepspeed_config") or {}
    if (ds_path is None and raw.get("distributed_type") == "DEEPSPEED"
            and str(inline.get("zero_stage")) == "3"):
        return "bf16"  # inline settings: accelerate passes no data_types, DeepSpeed's default
    if str((data.get("zero_optimization") or {}).get("stage")) != "3":
        path = accelerate_config("zero3")
        ds_path = deepspeed_file(path, yaml.safe_load(path.read_text()) or {})
        data = json.loads(ds_path.read_text()) if ds_path is not None else {}
    return str((data.get("data_types") or {}).get("grad_accum_dtype") or "bf16")


def training_memory(config: RunConfig, gpus: str, params: float | None = None) -> pd.DataFrame:
    """Per-GPU memory of the training set-ups for ``gpus`` ("8x80": count x GB), and which fit;
    ``grad_accum_gb_per_gpu`` is the part the gradient-accumulation buffer takes, in the dtype
    of ``grad_accum``."""
    match = re.fullmatch(r"(\d+)\s*[xX×]\s*(\d+(?:\.\d+)?)", gpus.strip())
    if not match:
        raise ValueError(f"--gpus {gpus!r}: expected COUNTxGB, e.g. 8x80")
    count, size = int(match.group(1)), float(match.group(2))
    total = model_params(config, params)
    if total is None:
        raise ValueError(f"cannot tell how many parameters {config.backend.model} has; pass "
                         "--model-params (e.g. 8.03e9)")
    folder = Path(config.backend.model).expanduser()
    cfg = json.loads((folder / "config.json").read_text()) if (
        folder / "config.json").is_file() else None
    r = config.training.lora.r if config.training.lora else 16
    adapter = lora_params(cfg, total, r)
    precomputed = config.training.precompute_ref_log_probs
    embeddings = embedding_params(cfg, total)
    accumulation = zero3_accumulation(config)
    a = ACCUMULATION_BYTES.get(accumulation.lower(), 4)
    zero3 = (2 + 4 + 8 + a) * total / count  # bf16 module, fp32 master, Adam, accumulation
    setups = [  # name, GPUs, states per GPU, accumulation dtype, accumulation bytes per GPU
        ("full DPO, 1 GPU", 1, (16 + (0 if precomputed else 4)) * total, "fp32", 4 * total),
        (f"DPO ZeRO-3 over {count} GPUs", count,
         zero3 + (0 if precomputed else 2) * total / count, accumulation, a * total / count),
        ("LoRA, 1 GPU", 1, 2 * total + 16 * adapter, "fp32", 4 * adapter),
        ("QLoRA, 1 GPU", 1, 0.53 * (total - embeddings) + 2 * embeddings + 16 * adapter,
         "fp32", 4 * adapter),
        ("EFT SFT, 1 GPU", 1, 16 * total, "fp32", 4 * total),
        (f"EFT SFT ZeRO-3 over {count} GPUs", count, zero3, accumulation, a * total / count),
    ]
    usable = size * (1 - ACTIVATION_SHARE)
    return pd.DataFrame([{
        "setup": name, "gpus": n, "states_gb_per_gpu": round(per / GB, 1),
        "grad_accum": dtype, "grad_accum_gb_per_gpu": round(accum / GB, 1),
        "gpu_gb": size, "fits": bool(n <= count and per / GB <= usable),
    } for name, n, per, dtype, accum in setups]).set_index("setup")


def _mean_instruction_tokens(config: RunConfig) -> float:
    source = config.prompts.source
    if source != "bundled" and not Path(source).is_file():
        source = "bundled"  # a dry run needs no prompt file; the bundled pool stands in
    prompts = load_prompts(source)[: config.prompts.pool_size]
    return sum(len(p.instruction) for p in prompts) / len(prompts) / CHARS_PER_TOKEN


def _measured(run_dir: Path) -> dict[str, dict[str, float]]:
    """Prompt and generated tokens per request and generated tokens/s, per stage, in a
    finished run's manifest."""
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    totals: dict[str, dict[str, float]] = {}
    for key, stage in manifest.get("stages", {}).items():
        name = key.split("/", 1)[-1]
        done = stage.get("completed", 0)
        if not done or "generated_tokens" not in stage:
            continue
        entry = totals.setdefault(name, {"requests": 0, "prompt": 0, "generated": 0,
                                         "seconds": 0.0})
        entry["requests"] += done
        entry["prompt"] += stage.get("prompt_tokens", 0)
        entry["generated"] += stage["generated_tokens"]
        entry["seconds"] += stage.get("seconds", 0.0)
    return {name: {"prompt": t["prompt"] / t["requests"],
                   "generated": t["generated"] / t["requests"],
                   **({"tokens_per_second": t["generated"] / t["seconds"]}
                      if t["seconds"] else {})}
            for name, t in totals.items() if t["requests"]}


def _counts(frame: pd.DataFrame) -> pd.DataFrame:
    """Whole-number columns as integers (hours keep their decimals)."""
    frame = frame.copy()
    for column in frame.columns:
        if column not in ("hours_est", "share") and pd.api.types.is_numeric_dtype(
                frame[column]):
            frame[column] = frame[column].round().astype("Int64")
    return frame


def format_costs(table: pd.DataFrame, memory: pd.DataFrame | None = None) -> str:
    """The projection as text, with per-stage totals over all iterations."""
    totals = table.groupby("stage", sort=False).sum(numeric_only=True, min_count=1)
    totals = totals.drop(columns=["iteration", *(["share"] if "share" in totals else [])])
    table, totals = _counts(table), _counts(totals)
    with pd.option_context("display.width", 200, "display.max_columns", 20,
                           "display.float_format", "{:,.1f}".format):
        text = (table.set_index(["iteration", "stage"]).to_string()
                + "\n\ntotal over all iterations:\n" + totals.to_string())
        if table.attrs.get("adaptive"):
            text += "\n\nadaptive judging (SPEC §5a): " + table.attrs["adaptive"]
        if memory is not None:
            text += ("\n\ntraining memory per GPU (model states, before activations; fits = "
                     f"within {1 - ACTIVATION_SHARE:.0%} of the GPU):\n" + memory.to_string())
    return text
