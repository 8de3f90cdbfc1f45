"""Stage ``generate`` (the actor): K sampled responses per prompt, resumable.

    metajudge generate --prompts prompts.jsonl --set generation.samples_per_prompt=4 --out runs/x

Each (prompt, sample index) is one request with a seed derived from the run seed, the prompt id
and the sample index. Results are appended to ``iter_NN/responses.jsonl`` as they finish; a rerun
skips every response already there (and every request that failed for good) and never writes a
duplicate. Requests that failed in a retryable way are tried again on the next run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from metajudge.backends.base import Backend
from metajudge.prompts import draw_for_iteration, load_prompts
from metajudge.records import (
    Completion,
    FailedRequest,
    GenerationRequest,
    GenerationResult,
    Message,
    Prompt,
    Provenance,
    Response,
    SamplingParams,
)
from metajudge.seeds import derive_seed
from metajudge.stage import StagePass, StageSummary
from metajudge.store import RunStore

log = logging.getLogger(__name__)

STAGE = "generate"
RESPONSES = "responses"
FAILURES = "responses.failures"


def iteration_prompts(store: RunStore, iteration: int) -> list[Prompt]:
    """This iteration's prompt sample, drawn once and saved in ``iter_NN/prompts.jsonl``."""
    saved = store.read(iteration, "prompts", Prompt)
    if saved:
        return saved
    cfg = store.config.prompts
    pool = load_prompts(cfg.source)[: cfg.pool_size]
    per_iteration = min(cfg.per_iteration, len(pool))
    drawn = draw_for_iteration(pool, iteration, per_iteration, store.config.seed)
    with store.appender(iteration, "prompts") as out:
        out.write_all(drawn)
    return drawn


def actor_requests(store: RunStore, iteration: int, prompts: Sequence[Prompt]
                   ) -> list[GenerationRequest]:
    gen = store.config.generation
    params = SamplingParams(temperature=gen.temperature, top_p=gen.top_p,
                            max_tokens=gen.max_tokens)
    return [
        GenerationRequest(
            id=f"{p.id}#{k}",
            messages=(Message(role="user", content=p.instruction),),
            params=params,
            seed=derive_seed(store.config.seed, STAGE, iteration, p.id, k),
            sample_index=k,
        )
        for p in prompts
        for k in range(gen.samples_per_prompt)
    ]


def run_generate(store: RunStore, backend: Backend, iteration: int = 1,
                 *, progress: bool = True) -> StageSummary:
    """Sample the missing responses of one iteration and append them to the run directory."""
    prompts = iteration_prompts(store, iteration)
    by_id = {p.id: p for p in prompts}
    requests = actor_requests(store, iteration, prompts)
    todo = store.pending(iteration, RESPONSES, Response, requests)
    run = StagePass(STAGE, iteration, len(prompts), len(requests), len(requests) - len(todo),
                    progress=progress, unit="resp")

    with store.appender(iteration, RESPONSES) as ok_out, \
            store.appender(iteration, FAILURES) as fail_out:

        def on_result(index: int, result: GenerationResult) -> None:
            request = todo[index]
            provenance = Provenance(backend=backend.fingerprint, params=request.params,
                                    seed=request.seed, sample_index=request.sample_index)
            run.tokens(result)
            if isinstance(result, Completion):
                prompt = by_id[request.id.rsplit("#", 1)[0]]
                ok_out.write(Response(
                    id=request.id, prompt_id=prompt.id, instruction=prompt.instruction,
                    text=result.text, finish_reason=result.finish_reason,
                    prompt_tokens=result.prompt_tokens,
                    completion_tokens=result.completion_tokens, iteration=iteration,
                    provenance=provenance,
                ))
            else:
                fail_out.write(FailedRequest(id=request.id, stage=STAGE, iteration=iteration,
                                             failure=result, provenance=provenance))
            run.finished(isinstance(result, Completion))

        if todo:
            run.count_call()
            backend.generate(todo, on_result=on_result)
    return run.close(store)
