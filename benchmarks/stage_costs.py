"""Where the judge and meta-judge stages spend their time, against the backend's own limit.

On the embedded model (transformers, CPU), one small run (configs/tiny.yaml with 8 prompts, K = 4,
N = 3; the judge stage sends its judgments in one call and its forced read-outs in a second, the
meta-judge stage, read-outs off, one call):

1. **Stage overhead**: generated tokens per second of the judge and meta-judge stages through
   metajudge (the stage runner: chunks, records, settings and fingerprint checks), versus the
   very same calls (recorded from the stage: ``generate`` and the forced read-outs'
   ``score_labels``) sent straight to the backend, and versus plain Hugging Face
   ``model.generate`` on the same rendered prompts (left-padded batches of the same size, same
   sampling settings; read-outs as one forward pass each batch).
2. **Prefix reuse**: the same requests through the backend with ``share_prefixes`` on and off
   (ordering by prompt tokens, computing a batch's common prefix and repeated prompts once).
3. **Probability-weighted score vs sampled judgments**: the judge stage with one greedy judgment
   per response read as a probability-weighted score versus the stage with N sampled judgments
   averaged, on the same responses: generated tokens, wall time, and how often the two agree on
   the better response of a pair.

Writes ``results/benchmarks/stage_costs.md`` and ``stage_costs.rows.json`` (for the summary).

    .venv/bin/python benchmarks/stage_costs.py
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADLINE: list[dict[str, str]] = []
# the judge keeps its forced read-outs (a second call of one-token read-outs), without which
# the small model scores nothing and the meta-judge has no judgments to compare
SETTINGS = ["prompts.per_iteration=8", "generation.samples_per_prompt=4",
            "judge.judgments_per_response=3", "judge.forced_readout=true",
            "meta_judge.forced_readout=false", "backend.transformers.batch_size=16"]


class Recorder:
    """A backend proxy that keeps the requests of each call: ("generate" | "score", requests)."""

    def __init__(self, backend):  # type: ignore[no-untyped-def]
        self.backend = backend
        self.calls: list[tuple[str, list]] = []

    def __getattr__(self, name):  # type: ignore[no-untyped-def]
        return getattr(self.backend, name)

    def generate(self, requests, on_result=None):  # type: ignore[no-untyped-def]
        self.calls.append(("generate", list(requests)))
        return self.backend.generate(requests, on_result=on_result)

    def score_labels(self, requests, on_result=None):  # type: ignore[no-untyped-def]
        self.calls.append(("score", list(requests)))
        return self.backend.score_labels(requests, on_result=on_result)


def timed_generate(backend, calls) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    """The recorded calls replayed straight to the backend, one call each. Tokens are counted
    as the stage counts them: the forced read-outs (label scoring) timed, not counted."""
    start = time.perf_counter()
    generated = 0
    for kind, requests in calls:
        if kind == "score":
            backend.score_labels(requests)
            continue
        results = backend.generate(requests)
        generated += sum(getattr(r, "completion_tokens", 0) for r in results)
    return time.perf_counter() - start, generated


def hf_generate(backend, calls, batch_size: int) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    """Plain ``model.generate`` on the rendered prompts, in input order, left-padded."""
    import torch

    model, tokenizer = backend.model, backend.tokenizer
    eos = set(backend._eos)
    start = time.perf_counter()
    generated = 0
    for kind, requests in calls:
        for first in range(0, len(requests), batch_size):
            batch = requests[first:first + batch_size]
            prompts = [backend.render(r) for r in batch]
            width = max(len(p) for p in prompts)
            pad = tokenizer.pad_token_id
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
            if kind == "score":  # read-outs: the next-token distribution after the prefill
                with torch.inference_mode():
                    model(input_ids=ids, attention_mask=mask).logits[:, -1].softmax(-1)
                continue
            params = batch[0].params
            sampling = ({"do_sample": True, "temperature": params.temperature,
                         "top_p": params.top_p} if params.temperature > 0
                        else {"do_sample": False})
            with torch.inference_mode():
                out = model.generate(input_ids=ids, attention_mask=mask, **sampling,
                                     max_new_tokens=params.max_tokens, pad_token_id=pad,
                                     eos_token_id=list(eos))
            for row in out[:, width:].tolist():
                length = next((k + 1 for k, t in enumerate(row) if t in eos), len(row))
                generated += length
    return time.perf_counter() - start, generated


def rate(tokens: int, seconds: float) -> float:
    return tokens / seconds if seconds else 0.0


def stage_rows(store, backend, iteration: int) -> tuple[list[str], dict, dict]:  # type: ignore[no-untyped-def]
    from metajudge.backends.transformers_local import TransformersBackend
    from metajudge.config import BackendConfig, TransformersOptions
    from metajudge.stages.judge import run_judge
    from metajudge.stages.meta_judge import run_meta_judge

    lines, recorded, summaries = [], {}, {}
    plain = TransformersBackend(BackendConfig(transformers=TransformersOptions(
        batch_size=16, share_prefixes=False)))
    plain._model = backend.model  # the same weights, loaded once
    for name, stage in (("judge", run_judge), ("meta-judge", run_meta_judge)):
        recorder = Recorder(backend)
        summary = summaries[name] = stage(store, recorder, iteration, progress=False)
        calls = recorder.calls
        recorded[name] = calls[0][1]
        shape = " + ".join(f"{len(c)} {kind}" for kind, c in calls)
        direct_s, direct_t = timed_generate(backend, calls)
        unshared_s, unshared_t = timed_generate(plain, calls)
        hf_s, hf_t = hf_generate(backend, calls, 16)
        stage_rate = rate(summary.generated_tokens, summary.seconds)
        direct_rate, unshared_rate = rate(direct_t, direct_s), rate(unshared_t, unshared_s)
        hf_rate = rate(hf_t, hf_s)
        HEADLINE.extend([
            {"measurement": f"{name} stage through metajudge (transformers, CPU)",
             "reference": "the same requests straight to `backend.generate`, one call per batch",
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
            f"| {name}: metajudge stage vs the same requests straight to backend.generate | "
            f"{shape} requests, {summary.generated_tokens} vs {direct_t} tokens, "
            f"{stage_rate:.1f} vs {direct_rate:.1f} tokens/s ({summary.seconds:.1f} s vs "
            f"{direct_s:.1f} s) | **{stage_rate / direct_rate:.2f}** |",
            f"| {name}: metajudge stage vs plain HF model.generate (left-padded, input order) | "
            f"{stage_rate:.1f} vs {hf_rate:.1f} tokens/s ({hf_s:.1f} s) | "
            f"**{stage_rate / hf_rate:.2f}** |",
            f"| {name}: backend with prefix sharing vs without | {direct_rate:.1f} vs "
            f"{unshared_rate:.1f} tokens/s ({direct_s:.1f} s vs {unshared_s:.1f} s) | "
            f"**{unshared_s / direct_s:.2f}× faster** |",
        ]
    return lines, recorded, summaries


def probability_weighted_vs_sampled(store, backend, sampled_summary, tmp: Path  # type: ignore[no-untyped-def]
                                    ) -> list[str]:
    """The judge stage as configured (N sampled judgments per response, averaged) versus the
    same stage with one greedy judgment per response read as a probability-weighted score, on
    the same responses. Both read forced read-outs where no score was written (tiny config)."""
    import shutil

    from metajudge.stages.judge import run_judge
    from metajudge.store import JUDGMENTS, RESPONSES, Store

    n = store.config.judge.judgments_per_response
    config = store.config.model_copy(update={"judge": store.config.judge.model_copy(
        update={"judgments_per_response": 1, "temperature": 0.0})})
    greedy = Store.open(tmp / "greedy", config)
    greedy.path(RESPONSES, 1).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(store.path(RESPONSES, 1), greedy.path(RESPONSES, 1))
    weighted_summary = run_judge(greedy, backend, 1, progress=False)
    mean_score: dict[str, float] = {}
    prompt_of: dict[str, str] = {}
    by_response: dict[str, list[float]] = {}
    for j in store.iter_records(JUDGMENTS, 1):
        prompt_of[j.response_id] = j.prompt_id
        if j.score is not None:
            by_response.setdefault(j.response_id, []).append(j.score)
    mean_score = {k: statistics.mean(v) for k, v in by_response.items()}
    expected = {j.response_id: j.prob_score for j in greedy.iter_records(JUDGMENTS, 1)
                if j.prob_score is not None}
    agree = total = 0
    ids_by_prompt = itertools.groupby(sorted(prompt_of, key=prompt_of.__getitem__),
                                      key=prompt_of.__getitem__)
    for _, group in ids_by_prompt:
        ids = [r for r in group if r in mean_score and r in expected]
        for a, b in itertools.combinations(ids, 2):
            d_sampled = mean_score[a] - mean_score[b]
            d_weighted = expected[a] - expected[b]
            if d_sampled == 0 or d_weighted == 0:
                continue
            total += 1
            agree += (d_sampled > 0) == (d_weighted > 0)
    sampled_tokens, sampled_s = sampled_summary.generated_tokens, sampled_summary.seconds
    weighted_tokens, weighted_s = weighted_summary.generated_tokens, weighted_summary.seconds
    token_ratio = weighted_tokens / sampled_tokens
    agreement = agree / total if total else float("nan")
    pairs_sampled = sum(1 for _, g in itertools.groupby(
        sorted(mean_score, key=prompt_of.__getitem__), key=prompt_of.__getitem__)
        for _ in itertools.combinations(list(g), 2))
    HEADLINE.extend([
        {"measurement": "probability-weighted score, 1 greedy judgment per response",
         "reference": f"{n} sampled judgments per response, averaged (judge stage)",
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
        f"| probability-weighted vs {n} sampled: judge stage wall time | {weighted_s:.1f} s vs "
        f"{sampled_s:.1f} s | **{weighted_s / sampled_s:.2f}** |",
        f"| agreement on the better response of a pair (of the {pairs_sampled} pairs of scored "
        f"responses, those neither method ties) | {agree} of {total} pairs ({len(expected)} "
        f"responses with a weighted score, {len(mean_score)} with a sampled score) | "
        f"**{agreement:.2f}** |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config overrides (a quick check: prompts.per_iteration=2)")
    args = parser.parse_args()
    from metajudge.backends import load_backend
    from metajudge.config import load_config
    from metajudge.stages.generate import run_generate
    from metajudge.store import Store

    config = load_config(ROOT / "configs" / "tiny.yaml", [*SETTINGS, *args.set])
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "run", config)
        with load_backend(config.backend) as backend:
            run_generate(store, backend, 1, progress=False)
            rows, _, summaries = stage_rows(store, backend, 1)
            rows += probability_weighted_vs_sampled(store, backend, summaries["judge"],
                                                    Path(tmp))
    args.out.mkdir(parents=True, exist_ok=True)
    table = "\n".join(["| measurement | figures | ratio |", "|---|---|---|", *rows])
    report = (
        "# Judge and meta-judge stages: overhead, prefix reuse, probability-weighted scores\n\n"
        "SmolLM2-135M-Instruct, transformers backend on CPU (float32, batch 16), configs/tiny.yaml "
        f"with {config.prompts.per_iteration} prompts, K = {config.generation.samples_per_prompt}, "
        f"N = {config.judge.judgments_per_response}, judge forced read-outs on (label scoring "
        "of the score after `Score: `, timed but counted as no generated tokens on either side), "
        "meta-judge "
        "read-outs off; one run, all figures from the same process. Sampled lengths differ "
        "between passes, so throughput is in generated tokens per second.\n\n"
        f"Command: `.venv/bin/python benchmarks/stage_costs.py {' '.join(sys.argv[1:])}`\n\n"
        + table + "\n")
    (args.out / "stage_costs.md").write_text(report)
    sys.path.insert(0, str(Path(__file__).parent))
    from rows import save_rows

    save_rows(args.out, "stage_costs", HEADLINE)
    print(report)


if __name__ == "__main__":
    main()
