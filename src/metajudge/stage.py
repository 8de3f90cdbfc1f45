"""What every model-calling stage shares: the pass summary, progress, and token accounting."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from tqdm.auto import tqdm

from metajudge.records import Completion, GenerationResult
from metajudge.store import RunStore


@dataclass
class StageSummary:
    """What one pass of a stage did; saved in the manifest and printed by the CLI."""

    stage: str
    iteration: int
    prompts: int
    requested: int
    reused: int = 0
    completed: int = 0
    failed: int = 0
    backend_calls: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0
    extra: dict[str, float | int] = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        extra = "".join(f", {k} {v:g}" for k, v in self.extra.items())
        return (
            f"{self.stage} iteration {self.iteration}: {self.prompts} prompts, "
            f"{self.requested} requests: {self.completed} new, {self.reused} reused, "
            f"{self.failed} failed; {self.generated_tokens} tokens generated in "
            f"{self.seconds:.1f} s ({self.tokens_per_second:.1f} tokens/s, "
            f"{self.backend_calls} backend call{'s' if self.backend_calls != 1 else ''}){extra}"
        )


class StagePass:
    """Times a stage pass, counts tokens and results, and shows a progress bar."""

    def __init__(self, stage: str, iteration: int, prompts: int, requested: int, reused: int,
                 *, progress: bool = True, unit: str = "req"):
        self.summary = StageSummary(stage=stage, iteration=iteration, prompts=prompts,
                                    requested=requested, reused=reused)
        self._started = time.perf_counter()
        self._bar = tqdm(total=requested, initial=reused, desc=f"{stage} it{iteration}",
                         unit=unit, disable=not progress, dynamic_ncols=True)

    def count_call(self) -> None:
        self.summary.backend_calls += 1

    def tokens(self, result: GenerationResult) -> None:
        if isinstance(result, Completion):
            self.summary.prompt_tokens += result.prompt_tokens
            self.summary.generated_tokens += result.completion_tokens

    def finished(self, ok: bool) -> None:
        if ok:
            self.summary.completed += 1
        else:
            self.summary.failed += 1
        self._bar.update(1)

    def finish(self) -> StageSummary:
        """Stop the clock and the progress bar."""
        self._bar.close()
        self.summary.seconds = time.perf_counter() - self._started
        return self.summary

    def close(self, store: RunStore) -> StageSummary:
        """Finish and record the pass in the run's manifest."""
        store.record_stage(self.summary.iteration, self.summary.stage, asdict(self.finish()))
        return self.summary
