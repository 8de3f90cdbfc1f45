"""Stage ``judge``: N judgments per response with the additive 5-point rubric (SPEC §2–§3).

    metajudge judge RUN_DIR [--iteration 1]

All judge requests of the iteration go to the backend in one batch call. Each judgment keeps its
raw text; its score is the last ``Score:`` parsed, else (with ``judge.forced_readout``) the most
likely score token after appending ``\\nScore: `` to the judgment (one more batch call for all of
them), else it is recorded as failed with the reason. Where the backend returns
log-probabilities, the probability-weighted score is recorded beside the sampled one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from metajudge.backends.base import Backend
from metajudge.judging.parse import parse_score
from metajudge.judging.readout import (
    SCORE_LABELS,
    SCORE_PREFILL,
    TOP_K,
    expected_score,
    first_step_distribution,
    most_probable_score,
    probability_weighted_score,
)
from metajudge.records import (
    Completion,
    FailedRequest,
    GenerationRequest,
    GenerationResult,
    Judgment,
    Message,
    Provenance,
    Response,
    SamplingParams,
)
from metajudge.seeds import derive_seed
from metajudge.stage import StagePass, StageSummary
from metajudge.store import RunStore
from metajudge.templates import Template, load_template

log = logging.getLogger(__name__)

STAGE = "judge"
JUDGMENTS = "judgments"
FAILURES = "judgments.failures"


def judge_template(store: RunStore) -> Template:
    return load_template(store.config.judge.template or "judge")


def judge_prompt(template: Template, instruction: str, response: str) -> tuple[Message, ...]:
    """The judge's chat prompt for one response; also the DPO prompt of judge pairs."""
    return (Message(role="user", content=template.render(instruction=instruction,
                                                         response=response)),)


def forced_request(request: GenerationRequest, text: str, prefill: str) -> GenerationRequest:
    """One-token read-out continuing ``text + prefill`` (SPEC §3, forced read-out)."""
    return request.model_copy(update={
        "id": request.id + "#forced",
        "prefill": text + prefill,
        "params": SamplingParams(temperature=0.0, max_tokens=1, logprobs=True,
                                 top_logprobs=TOP_K),
    })


def run_judge(store: RunStore, backend: Backend, iteration: int = 1,
              *, progress: bool = True) -> StageSummary:
    """Judge every response of an iteration N times; resumable like every stage."""
    cfg = store.config.judge
    template = judge_template(store)
    responses = store.read(iteration, "responses", Response)
    if not responses:
        raise FileNotFoundError(f"{store.path(iteration, 'responses')}: no responses to judge; "
                                "run `metajudge generate` first")
    caps = backend.capabilities
    want_logprobs = cfg.probability_weighted and caps.logprobs
    params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p,
                            max_tokens=cfg.max_tokens, logprobs=want_logprobs,
                            top_logprobs=TOP_K if want_logprobs else 0)
    requests: list[GenerationRequest] = []
    meta: dict[str, Response] = {}
    for response in responses:
        messages = judge_prompt(template, response.instruction, response.text)
        for n in range(cfg.judgments_per_response):
            request = GenerationRequest(
                id=f"{response.id}@j{n}", messages=messages, params=params,
                seed=derive_seed(store.config.seed, STAGE, iteration, response.id, n),
                sample_index=n,
            )
            requests.append(request)
            meta[request.id] = response
    todo = store.pending(iteration, JUDGMENTS, Judgment, requests)
    run = StagePass(STAGE, iteration, len({r.prompt_id for r in responses}), len(requests),
                    len(requests) - len(todo), progress=progress, unit="judgment")
    forced_on = cfg.forced_readout and caps.prefill and caps.logprobs
    deferred: dict[str, tuple[GenerationRequest, Completion, str]] = {}
    sources = {"parsed": 0, "forced": 0, "failed": 0, "prob_weighted": 0}

    with store.appender(iteration, JUDGMENTS) as out, \
            store.appender(iteration, FAILURES) as fail_out:

        def write(request: GenerationRequest, completion: Completion, score: float | None,
                  source: str, error: str | None, prob: float | None,
                  probs: tuple[float, ...] | None) -> None:
            response = meta[request.id]
            sources[source] += 1
            sources["prob_weighted"] += prob is not None
            out.write(Judgment(
                id=request.id, response_id=response.id, prompt_id=response.prompt_id,
                iteration=iteration, index=request.sample_index, text=completion.text,
                score=score, score_source=source,  # type: ignore[arg-type]
                parse_error=error, prob_score=prob, score_probs=probs,
                finish_reason=completion.finish_reason,
                prompt_tokens=completion.prompt_tokens,
                completion_tokens=completion.completion_tokens,
                provenance=Provenance(backend=backend.fingerprint, params=request.params,
                                      seed=request.seed, sample_index=request.sample_index,
                                      template=template.ref),
            ))
            run.finished(True)

        def fail(request: GenerationRequest, result: GenerationResult) -> None:
            fail_out.write(FailedRequest(
                id=request.id, stage=STAGE, iteration=iteration, failure=result,
                provenance=Provenance(backend=backend.fingerprint, params=request.params,
                                      seed=request.seed, sample_index=request.sample_index,
                                      template=template.ref)))
            run.finished(False)

        def on_result(index: int, result: GenerationResult) -> None:
            request = todo[index]
            run.tokens(result)
            if not isinstance(result, Completion):
                return fail(request, result)
            parsed = parse_score(result.text)
            weighted = probability_weighted_score(result)
            prob, probs = weighted if weighted else (None, None)
            if parsed.value is not None:
                return write(request, result, parsed.value, "parsed", None, prob, probs)
            if forced_on:
                deferred[request.id] = (request, result, parsed.error or "")
                return None
            return write(request, result, None, "failed", parsed.error, None, None)

        if todo:
            run.count_call()
            backend.generate(todo, on_result=on_result)
        if deferred:
            items = list(deferred.values())

            def on_readout(index: int, dist: tuple[float, ...] | None, note: str | None) -> None:
                request, completion, error = items[index]
                if dist is None:
                    return write(request, completion, None, "failed",
                                 f"{error}; forced read-out: {note}", None, None)
                return write(request, completion, most_probable_score(dist), "forced", error,
                             expected_score(dist), dist)

            forced_readouts(backend, run, items, SCORE_PREFILL, SCORE_LABELS, on_readout)
    run.summary.extra = {f"{k}": v for k, v in sources.items()}
    return run.close(store)


#: called per forced read-out with (index, label distribution or None, failure note or None)
ReadoutHandler = Callable[[int, "tuple[float, ...] | None", "str | None"], None]


def forced_readouts(backend: Backend, run: StagePass,
                    items: Sequence[tuple[GenerationRequest, Completion, str]], prefill: str,
                    labels: Sequence[str], handle: ReadoutHandler) -> None:
    """One batch call of one-token read-outs continuing each completion with ``prefill``;
    ``handle`` gets each item's distribution over ``labels`` (SPEC §3, forced read-out)."""
    forced = [forced_request(req, comp.text, prefill) for req, comp, _ in items]

    def on_forced(index: int, result: GenerationResult) -> None:
        if isinstance(result, Completion):
            run.summary.prompt_tokens += result.prompt_tokens
            dist = first_step_distribution(result, labels)
            handle(index, dist, None if dist else "no label token among the alternatives")
        else:
            handle(index, None, f"failed: {result.kind.value}")

    run.count_call()
    backend.generate(forced, on_result=on_forced)
