"""The evaluated model's answers, one per benchmark item, resumable."""

from __future__ import annotations

from collections.abc import Sequence

from metajudge.backends.base import Backend
from metajudge.evaluation.records import EvalOutput
from metajudge.evaluation.workdir import EvalDir
from metajudge.records import (
    Completion,
    FailedRequest,
    GenerationRequest,
    GenerationResult,
    Message,
    Provenance,
    SamplingParams,
)
from metajudge.seeds import derive_seed
from metajudge.stage import StagePass

OUTPUTS = "outputs"


def generate_outputs(
    workdir: EvalDir, backend: Backend, items: Sequence[tuple[str, str]], *,
    progress: bool = True,
) -> dict[str, EvalOutput]:
    """Answers to ``(item id, instruction)`` pairs; existing answers are reused. Requests that
    fail are recorded in ``outputs.failures.jsonl`` and tried again on the next run."""
    config = workdir.config
    done = {o.id: o for o in workdir.read(OUTPUTS, EvalOutput)}
    sampling = config.generation
    params = SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p,
                            max_tokens=sampling.max_tokens)
    instruction = dict(items)
    todo = [GenerationRequest(id=item_id, messages=(Message(role="user", content=text),),
                              params=params, seed=derive_seed(config.seed, "eval", item_id))
            for item_id, text in items if item_id not in done]
    run = StagePass(f"{config.harness} answers", 1, len(items), len(items),
                    len(items) - len(todo), progress=progress, unit="ans")
    with workdir.appender(OUTPUTS) as out, workdir.appender(f"{OUTPUTS}.failures") as failed:

        def on_result(index: int, result: GenerationResult) -> None:
            request = todo[index]
            provenance = Provenance(backend=backend.fingerprint, params=params,
                                    seed=request.seed, sample_index=0)
            run.tokens(result)
            if isinstance(result, Completion):
                record = EvalOutput(
                    id=request.id, instruction=instruction[request.id], output=result.text,
                    generator=config.name, finish_reason=result.finish_reason,
                    prompt_tokens=result.prompt_tokens,
                    completion_tokens=result.completion_tokens, provenance=provenance)
                out.write(record)
                done[request.id] = record
            else:
                failed.write(FailedRequest(id=request.id, stage="eval-answers", iteration=1,
                                           failure=result, provenance=provenance))
            run.finished(isinstance(result, Completion))

        if todo:
            run.count_call()
            backend.generate(todo, on_result=on_result)
    workdir.record_stage(run.finish())
    return done
