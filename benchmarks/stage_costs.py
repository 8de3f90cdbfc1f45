"""Where the judge and meta-judge stages spend their time, against the backend's own limit.

On the embedded model (transformers, CPU), one small run (configs/tiny.yaml with 8 prompts, K = 4,
N = 3, forced read-outs off so the stage sends exactly one batch):

1. **Stage overhead**: generated tokens per second of the judge and meta-judge stages through
   metajudge, versus the very same requests (recorded from the stage) sent straight to
   ``backend.generate`` in one call, and versus plain Hugging Face ``model.generate`` on the same
   rendered prompts (left-padded batches of the same size, same sampling settings).
2. **Prefix reuse**: the same requests through the backend with ``share_prefixes`` on and off
   (ordering by prompt tokens, computing a batch's common prefix and repeated prompts once).
3. **Probability-weighted score vs sampled judgments**: one greedy judgment per response read as
   a probability-weighted score versus N sampled judgments averaged: generated tokens, wall time,
   and how often the two agree on the better response of a pair.

Writes ``results/benchmarks/stage_costs.md`` and the recorded requests (``requests_*.jsonl``,
for the vLLM prefix-caching benchmark).

    .venv/bin/python benchmarks/stage_costs.py
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADLINE: list[dict[str, str]] = []
SETTINGS = ["prompts.per_iteration=8", "generation.samples_per_prompt=4",
            "judge.judgments_per_response=3", "judge.forced_readout=false",
            "meta_judge.forced_readout=false", "backend.transformers.batch_size=16"]


class Recorder:
    """A backend proxy that keeps the requests of each generate call."""

    def __init__(self, backend):  # type: ignore[no-untyped-def]
        self.backend = backend
        self.calls: list[list] = []

    def __getattr__(self, name):  # type: ignore[no-untyped-def]
        return getattr(self.backend, name)

    def generate(self, requests, on_result=None):  # type: ignore[no-untyped-def]
        self.calls.append(list(requests))
        return self.backend.generate(requests, on_result=on_result)


def timed_generate(backend, requests) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    results = backend.generate(requests)
    seconds = time.perf_counter() - start
    return seconds, sum(getattr(r, "completion_tokens", 0) for r in results)


def hf_generate(backend, requests, batch_size: int) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    """Plain ``model.generate`` on the rendered prompts, in input order, left-padded."""
    import torch

    model, tokenizer = backend.model, backend.tokenizer
    eos = set(backend._eos)
    start = time.perf_counter()
    generated = 0
    for first in range(0, len(requests), batch_size):
        batch = requests[first:first + batch_size]
        prompts = [backend.render(r) for r in batch]
        width = max(len(p) for p in prompts)
        pad = tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        params = batch[0].params
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True,
                                 temperature=params.temperature, top_p=params.top_p,
                                 max_new_tokens=params.max_tokens, pad_token_id=pad,
                                 eos_token_id=list(eos))
        for row in out[:, width:].tolist():
            length = next((k + 1 for k, t in enumerate(row) if t in eos), len(row))
            generated += length
    return time.perf_counter() - start, generated


def rate(tokens: int, seconds: float) -> float:
    return tokens / seconds if seconds else 0.0


def stage_rows(store, backend, iteration: int) -> tuple[list[str], dict]:  # type: ignore[no-untyped-def]
    from metajudge.backends.transformers_local import TransformersBackend
    from metajudge.config import BackendConfig, TransformersOptions
    from metajudge.judging.judge import run_judge
    from metajudge.judging.meta_judge import run_meta_judge

    lines, recorded = [], {}
    plain = TransformersBackend(BackendConfig(transformers=TransformersOptions(
        batch_size=16, share_prefixes=False)))
    plain._model = backend.model  # the same weights, loaded once
    for name, stage in (("judge", run_judge), ("meta-judge", run_meta_judge)):
        recorder = Recorder(backend)
        summary = stage(store, recorder, iteration, progress=False)
        requests = recorder.calls[0]
        recorded[name] = requests
        direct_s, direct_t = timed_generate(backend, requests)
        unshared_s, unshared_t = timed_generate(plain, requests)
        hf_s, hf_t = hf_generate(backend, requests, 16)
        stage_rate = rate(summary.generated_tokens, summary.seconds)
        direct_rate, unshared_rate = rate(direct_t, direct_s), rate(unshared_t, unshared_s)
        hf_rate = rate(hf_t, hf_s)
        HEADLINE.extend([
            {"measurement": f"{name} stage through metajudge (transformers, CPU)",
             "reference": "the same requests in one `backend.generate` call",
             "ratio": f"{stage_rate / direct_rate:.2f} of the throughput",
             "figures": f"{stage_rate:.1f} vs {direct_rate:.1f} tokens/s"},
            {"measurement": f"{name} stage through metajudge",
             "reference": "plain HF `model.generate`, same prompts and batch size",
             "ratio": f"{stage_rate / hf_rate:.2f} of the throughput",
             "figures": f"{stage_rate:.1f} vs {hf_rate:.1f} tokens/s"},
            {"measurement": f"{name} requests with prefix ordering and sharing (default)",
             "reference": "`share_prefixes=false` (plain left-padded batches)",
             "ratio": f"{unshared_s / direct_s:.2f}× faster",
             "figures": f"{direct_s:.1f} s vs {unshared_s:.1f} s"},
        ])
        lines += [
            f"| {name}: metajudge stage vs the same requests in one backend.generate call | "
            f"{len(requests)} requests, {stage_rate:.1f} vs {direct_rate:.1f} tokens/s | "
            f"**{stage_rate / direct_rate:.2f}** |",
            f"| {name}: metajudge stage vs plain HF model.generate (left-padded, input order) | "
            f"{stage_rate:.1f} vs {hf_rate:.1f} tokens/s | **{stage_rate / hf_rate:.2f}** |",
            f"| {name}: backend with prefix sharing vs without | {direct_rate:.1f} vs "
            f"{unshared_rate:.1f} tokens/s ({direct_s:.1f} s vs {unshared_s:.1f} s) | "
            f"**{unshared_s / direct_s:.2f}× faster** |",
        ]
    return lines, recorded


def probability_weighted_vs_sampled(store, backend, iteration: int) -> list[str]:  # type: ignore[no-untyped-def]
    """One greedy judgment read as an expected score vs N sampled judgments averaged."""
    from metajudge.judging.judge import judge_prompt, judge_template
    from metajudge.judging.parse import parse_score
    from metajudge.judging.readout import TOP_K, probability_weighted_score
    from metajudge.records import GenerationRequest, Response, SamplingParams

    responses = store.read(iteration, "responses", Response)
    template = judge_template(store)
    cfg = store.config.judge
    n = cfg.judgments_per_response
    sampled = [GenerationRequest(id=f"{r.id}@{k}", messages=judge_prompt(
        template, r.instruction, r.text), params=SamplingParams(
        temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens),
        seed=k, sample_index=k) for r in responses for k in range(n)]
    weighted = [GenerationRequest(id=r.id, messages=judge_prompt(template, r.instruction,
                                                                 r.text),
                                  params=SamplingParams(temperature=0.0,
                                                        max_tokens=cfg.max_tokens,
                                                        logprobs=True, top_logprobs=TOP_K))
                for r in responses]
    start = time.perf_counter()
    sampled_results = backend.generate(sampled)
    sampled_s = time.perf_counter() - start
    start = time.perf_counter()
    weighted_results = backend.generate(weighted)
    weighted_s = time.perf_counter() - start
    mean_score: dict[str, float] = {}
    for r in responses:
        values = [parse_score(c.text).value for c in sampled_results
                  if c.request_id.startswith(r.id + "@")]
        values = [v for v in values if v is not None]
        if values:
            mean_score[r.id] = statistics.mean(values)
    expected: dict[str, float] = {}
    for c in weighted_results:
        readout = probability_weighted_score(c)
        if readout is not None:
            expected[c.request_id] = readout[0]
    agree = total = 0
    by_prompt = itertools.groupby(sorted(responses, key=lambda r: r.prompt_id),
                                  key=lambda r: r.prompt_id)
    for _, group in by_prompt:
        ids = [r.id for r in group if r.id in mean_score and r.id in expected]
        for a, b in itertools.combinations(ids, 2):
            d_sampled = mean_score[a] - mean_score[b]
            d_weighted = expected[a] - expected[b]
            if d_sampled == 0 or d_weighted == 0:
                continue
            total += 1
            agree += (d_sampled > 0) == (d_weighted > 0)
    sampled_tokens = sum(c.completion_tokens for c in sampled_results)
    weighted_tokens = sum(c.completion_tokens for c in weighted_results)
    token_ratio = weighted_tokens / sampled_tokens
    agreement = agree / total if total else float("nan")
    HEADLINE.extend([
        {"measurement": "probability-weighted score, 1 greedy judgment per response",
         "reference": f"{n} sampled judgments per response, averaged",
         "ratio": f"{token_ratio:.2f} of the tokens, {weighted_s / sampled_s:.2f} of the time",
         "figures": f"{weighted_tokens} vs {sampled_tokens} tokens; {weighted_s:.1f} s vs "
                    f"{sampled_s:.1f} s"},
        {"measurement": "probability-weighted vs sampled: same better response of a pair",
         "reference": "pairs both methods order", "ratio": f"{agreement:.2f} agree",
         "figures": f"{agree} of {total} pairs"},
    ])
    return [
        f"| probability-weighted (1 greedy judgment) vs {n} sampled judgments: generated "
        f"tokens | {weighted_tokens} vs {sampled_tokens} | **{token_ratio:.2f}** |",
        f"| probability-weighted vs {n} sampled: wall time | {weighted_s:.1f} s vs "
        f"{sampled_s:.1f} s | **{weighted_s / sampled_s:.2f}** |",
        f"| agreement on the better response of a pair (pairs where both order them) | "
        f"{agree} of {total} pairs ({len(expected)} responses with a read-out, "
        f"{len(mean_score)} with a sampled score) | **{agreement:.2f}** |",
    ]


def save_requests(requests: Sequence, path: Path) -> None:  # type: ignore[type-arg]
    path.write_text("".join(r.model_dump_json() + "\n" for r in requests))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    args = parser.parse_args()
    from metajudge.backends import load_backend
    from metajudge.config import load_config
    from metajudge.generate import run_generate
    from metajudge.loop import open_run

    config = load_config(ROOT / "configs" / "tiny.yaml", SETTINGS)
    with tempfile.TemporaryDirectory() as tmp:
        store = open_run(config, Path(tmp) / "run")
        with load_backend(config.backend) as backend:
            run_generate(store, backend, 1, progress=False)
            rows, recorded = stage_rows(store, backend, 1)
            rows += probability_weighted_vs_sampled(store, backend, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, requests in recorded.items():
        save_requests(requests, args.out / f"requests_{name}.jsonl")
    table = "\n".join(["| measurement | figures | ratio |", "|---|---|---|", *rows])
    report = (
        "# Judge and meta-judge stages: overhead, prefix reuse, probability-weighted scores\n\n"
        "SmolLM2-135M-Instruct, transformers backend on CPU (float32, batch 16), configs/tiny.yaml "
        "with 8 prompts, K = 4, N = 3, forced read-outs off; one run, all figures from the same "
        "process. Sampled lengths differ between passes, so throughput is in generated tokens "
        "per second.\n\n"
        f"Command: `.venv/bin/python benchmarks/stage_costs.py {' '.join(sys.argv[1:])}`\n\n"
        + table + "\n")
    (args.out / "stage_costs.md").write_text(report)
    sys.path.insert(0, str(Path(__file__).parent))
    from rows import save_rows

    save_rows(args.out, "stage_costs", HEADLINE)
    print(report)


if __name__ == "__main__":
    main()
