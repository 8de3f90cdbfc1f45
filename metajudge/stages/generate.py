"""Stage ``generate`` (the actor): K sampled responses per prompt, resumable.

    metajudge generate --prompts prompts.jsonl --set generation.samples_per_prompt=4 --out runs/x

Each (prompt, sample index) is one request with a seed derived from the run seed, the prompt id
and the sample index. Results are appended to ``iter_NN/responses.jsonl`` as they finish; a rerun
skips every response already there (and every request that failed for good) and never writes a
duplicate.
"""

from __future__ import annotations

from functools import partial

from metajudge.backends.base import Backend
from metajudge.prompts import draw_for_iteration, load_prompts
from metajudge.records import (
    Completion,
    GenerationRequest,
    Message,
    Prompt,
    Provenance,
    Response,
    SamplingParams,
)
from metajudge.seeds import derive_seed
from metajudge.stages.runner import Item, Result, StageRun, StageSummary, Step
from metajudge.store import PROMPTS, RESPONSES, Store, digest

STAGE = "generate"


def iteration_prompts(store: Store, iteration: int) -> list[Prompt]:
    """This iteration's prompt sample, drawn once and saved (atomically) in
    ``iter_NN/prompts.jsonl``."""
    if store.path(PROMPTS, iteration).is_file():
        return store.read(PROMPTS, iteration)
    cfg = store.config.prompts
    pool = load_prompts(cfg.source)[: cfg.pool_size]
    per_iteration = min(cfg.per_iteration, len(pool))
    drawn = draw_for_iteration(pool, iteration, per_iteration, store.config.seed)
    store.write_all(PROMPTS, drawn, iteration)
    return drawn


def run_generate(store: Store, backend: Backend, iteration: int = 1, *, progress: bool = True,
                 redo: bool = False) -> StageSummary:
    """Sample the missing responses of one iteration and append them to the run directory."""
    prompts = iteration_prompts(store, iteration)
    gen = store.config.generation
    params = SamplingParams(temperature=gen.temperature, top_p=gen.top_p,
                            max_tokens=gen.max_tokens)
    settings = {"samples_per_prompt": gen.samples_per_prompt, "params": params.model_dump(),
                "seed": store.config.seed,
                "prompts": digest(store.path(PROMPTS, iteration).read_text(encoding="utf-8"))}
    run = StageRun(store, RESPONSES, backend, stage=STAGE, iteration=iteration,
                   settings=settings, runner=store.config.runner, progress=progress,
                   unit="resp", redo=redo)

    def start(prompt: Prompt, k: int) -> Step:
        request = GenerationRequest(
            id=f"{prompt.id}#{k}", messages=(Message(role="user", content=prompt.instruction),),
            params=params, seed=derive_seed(store.config.seed, STAGE, iteration, prompt.id, k),
            sample_index=k)

        def then(result: Result) -> Response | object:
            if not isinstance(result, Completion):
                return run.failed(request.id, step, result)  # type: ignore[arg-type]
            return Response(
                id=request.id, prompt_id=prompt.id, instruction=prompt.instruction,
                text=result.text, finish_reason=result.finish_reason,
                prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                iteration=iteration,
                provenance=Provenance(backend=backend.fingerprint, params=params,
                                      seed=request.seed, sample_index=k))

        step = Step(request, then)  # type: ignore[arg-type]
        return step

    def items():  # type: ignore[no-untyped-def]
        for prompt in prompts:
            for k in range(gen.samples_per_prompt):
                yield Item(f"{prompt.id}#{k}", partial(start, prompt, k))

    return run.run(items, total=len(prompts) * gen.samples_per_prompt, prompts=len(prompts))
