"""The evaluated model's answers, one per benchmark item, resumable (the stage runner's)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import partial

from metajudge.backends.base import Backend
from metajudge.evaluation.records import EvalOutput
from metajudge.records import Completion, GenerationRequest, Message, Provenance, SamplingParams
from metajudge.seeds import derive_seed
from metajudge.stages.runner import Item, Result, StageRun, Step
from metajudge.store import Store, evaluation_file

OUTPUTS = evaluation_file("outputs")


def generate_outputs(
    store: Store, backend: Backend, items: Sequence[tuple[str, str]], *,
    progress: bool = True,
) -> dict[str, EvalOutput]:
    """Answers to ``(item id, instruction)`` pairs; existing answers are reused. Requests that
    fail are recorded in ``outputs.failures.jsonl`` and tried again (in the runner's retry
    passes, and on the next run)."""
    config = store.config
    sampling = config.generation
    params = SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p,
                            max_tokens=sampling.max_tokens)
    run = StageRun(store, OUTPUTS, backend, stage=f"{config.harness} answers", iteration=None,
                   settings={"params": params.model_dump(), "seed": config.seed},
                   runner=config.runner, progress=progress, unit="ans")

    def start(item_id: str, text: str) -> Step:
        request = GenerationRequest(id=item_id, messages=(Message(role="user", content=text),),
                                    params=params, seed=derive_seed(config.seed, "eval", item_id))

        def then(result: Result) -> EvalOutput | object:
            if not isinstance(result, Completion):
                return run.failed(item_id, step, result)  # type: ignore[arg-type]
            return EvalOutput(
                id=item_id, instruction=text, output=result.text, generator=config.name,
                finish_reason=result.finish_reason, prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens,
                provenance=Provenance(backend=backend.fingerprint, params=params,
                                      seed=request.seed, sample_index=0))

        step = Step(request, then)  # type: ignore[arg-type]
        return step

    def make() -> Iterator[Item]:
        for item_id, text in items:
            yield Item(item_id, partial(start, item_id, text))

    run.run(make, total=len(items), prompts=len(items))
    wanted = {item_id for item_id, _ in items}
    return {o.id: o for o in store.iter_records(OUTPUTS) if o.id in wanted}
