"""Stage ``generate`` (the actor): K sampled responses per prompt, resumable.

    metajudge generate --prompts prompts.jsonl --set generation.samples_per_prompt=4 --out runs/x

Each (prompt, sample index) is one request with a seed derived from the run seed, the prompt id
and the sample index. Results are appended to ``iter_NN/responses.jsonl`` as they finish; a rerun
skips every response already there (and every request that failed for good) and never writes a
duplicate. Requests that failed in a retryable way are tried again on the next run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from tqdm.auto import tqdm

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
from metajudge.store import RunStore

log = logging.getLogger(__name__)

STAGE = "generate"
RESPONSES = "responses"
FAILURES = "responses.failures"


@dataclass
class StageSummary:
    """What one pass of a stage did; saved in the manifest and printed by the CLI."""

    stage: str
    iteration: int
    prompts: int
    requested: int
    reused: int
    completed: int
    failed: int
    backend_calls: int
    prompt_tokens: int
    generated_tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (
            f"{self.stage} iteration {self.iteration}: {self.prompts} prompts, "
            f"{self.requested} requests: {self.completed} new, {self.reused} reused, "
            f"{self.failed} failed; {self.generated_tokens} tokens generated in "
            f"{self.seconds:.1f} s ({self.tokens_per_second:.1f} tokens/s, "
            f"{self.backend_calls} backend call{'s' if self.backend_calls != 1 else ''})"
        )


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
    done = store.done_ids(iteration, RESPONSES, Response)
    done |= {f.id for f in store.read(iteration, FAILURES, FailedRequest)
             if not f.failure.retryable}
    todo = [r for r in requests if r.id not in done]
    counts = {"completed": 0, "failed": 0, "prompt_tokens": 0, "generated_tokens": 0}
    started = time.perf_counter()
    bar = tqdm(total=len(requests), initial=len(requests) - len(todo),
               desc=f"{STAGE} it{iteration}", unit="resp", disable=not progress,
               dynamic_ncols=True)

    with store.appender(iteration, RESPONSES) as ok_out, \
            store.appender(iteration, FAILURES) as fail_out:

        def on_result(index: int, result: GenerationResult) -> None:
            request = todo[index]
            provenance = Provenance(backend=backend.fingerprint, params=request.params,
                                    seed=request.seed, sample_index=request.sample_index)
            if isinstance(result, Completion):
                prompt = by_id[request.id.rsplit("#", 1)[0]]
                ok_out.write(Response(
                    id=request.id, prompt_id=prompt.id, instruction=prompt.instruction,
                    text=result.text, finish_reason=result.finish_reason,
                    prompt_tokens=result.prompt_tokens,
                    completion_tokens=result.completion_tokens, iteration=iteration,
                    provenance=provenance,
                ))
                counts["completed"] += 1
                counts["prompt_tokens"] += result.prompt_tokens
                counts["generated_tokens"] += result.completion_tokens
            else:
                fail_out.write(FailedRequest(id=request.id, stage=STAGE, iteration=iteration,
                                             failure=result, provenance=provenance))
                counts["failed"] += 1
            bar.update(1)

        if todo:
            backend.generate(todo, on_result=on_result)
    bar.close()
    summary = StageSummary(
        stage=STAGE, iteration=iteration, prompts=len(prompts), requested=len(requests),
        reused=len(requests) - len(todo), backend_calls=1 if todo else 0,
        seconds=time.perf_counter() - started, **counts,
    )
    store.record_stage(iteration, STAGE, asdict(summary))
    return summary
