"""The one stage runner: every model-calling stage of the loop and of the harnesses runs on it.

A stage gives the runner *items* (one per record it will write: a response, a judgment, a
game), each of which starts with a :class:`Step`: one request (a generation or a label-scoring
request) and what to do with its result. What it does is the stage's own (parse a score, ask a
follow-up, read a label out); it returns the finished record, or the next step. The runner owns
everything else:

- it builds items lazily and skips every id the stage file already holds (or that failed for
  good), so a rerun continues where the last one stopped and never writes a record twice;
- it sends ``runner.chunk_size`` items at a time (one batch at a time to an engine that computes
  fixed batches, :attr:`Backend.batch_size`), each round of steps in one backend call
  (generations through ``generate``, read-outs through ``score_labels``), so memory does not
  grow with the stage's size;
- it appends records and failures as they arrive, retries retryable failures in up to
  ``runner.retry_passes`` extra passes, and refuses to add records made by another model or
  under other settings than those already in the file;
- it counts tokens, calls and outcomes, shows progress, and records the pass in the manifest.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from tqdm.auto import tqdm

from metajudge import provenance
from metajudge.backends.base import Backend, LabelCallback, ResultCallback
from metajudge.config import BackendConfig, RunnerConfig
from metajudge.records import (
    BackendFingerprint,
    Capabilities,
    Completion,
    FailedRequest,
    Failure,
    GenerationRequest,
    GenerationResult,
    LabelResult,
    LabelScores,
    Provenance,
    SamplingParams,
    ScoreRequest,
)
from metajudge.store import StageFile, Store

log = logging.getLogger(__name__)

Result = Completion | LabelScores | Failure


@dataclass
class Step:
    """One request of an item and what to do with its result: return the item's record (or a
    :class:`FailedRequest`), or the next step. Retryable failures never reach ``then``: the
    runner records them and retries the item from its first step."""

    request: GenerationRequest | ScoreRequest
    then: Callable[[Result], BaseModel | Step]


@dataclass(frozen=True)
class Item:
    """One record to make: its id (the record's id) and how to start."""

    id: str
    start: Callable[[], Step]


@dataclass
class StageSummary:
    """What one run of a stage did; saved in the manifest and printed by the CLI."""

    stage: str
    iteration: int | None
    prompts: int
    requested: int
    reused: int = 0
    completed: int = 0
    failed: int = 0
    failed_retryable: int = 0
    backend_calls: int = 0
    label_requests: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0
    passes_run: int = 0
    settings: str | None = None
    extra: dict[str, float | int] = field(default_factory=dict)
    backend: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        extra = "".join(f", {k} {v:g}" for k, v in self.extra.items())
        where = f" iteration {self.iteration}" if self.iteration is not None else ""
        return (
            f"{self.stage}{where}: {self.prompts} prompts, {self.requested} requests: "
            f"{self.completed} new, {self.reused} reused, {self.failed} failed; "
            f"{self.generated_tokens} tokens generated in {self.seconds:.1f} s "
            f"({self.tokens_per_second:.1f} tokens/s, {self.backend_calls} backend "
            f"call{'s' if self.backend_calls != 1 else ''}){extra}"
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class RetryableFailuresRemain(RuntimeError):
    """A stage still has requests that failed in a retryable way after its retry passes."""


class Progress:
    """A progress bar whose count and ETA are right from the first update.

    Backends deliver results in bursts (a sorted batch finishes at once); drawing the first
    result of a burst alone gives a rate, and an ETA, off by the batch size. Results are
    counted as they come and drawn twice a second and at the end of every backend call, so
    every drawn count includes its burst. The rate is the average since :meth:`start_clock`
    (the engine ready: a model load or a server start is not a request's time). ``clock``:
    the time source (tests give a fake one)."""

    def __init__(self, total: int, initial: int, desc: str, unit: str, *, enabled: bool,
                 interval: float = 0.5, file: Any = None,
                 clock: Callable[[], float] | None = None):
        self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, smoothing=0,
                         disable=not enabled, dynamic_ncols=True, file=file, mininterval=0)
        if clock is not None:  # the bar's time source, as tqdm's own tests set it
            self._bar._time = clock
            self._bar.start_t = self._bar.last_print_t = clock()
        self._pending = 0
        self._lock = threading.Lock()
        self._draw = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        if enabled:
            self._thread = threading.Thread(target=self._loop, args=(interval,), daemon=True)
            self._thread.start()

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self._pending += n

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.flush()

    def start_clock(self) -> None:
        """Time the rate from now, unless something was counted already."""
        with self._draw:
            if not self._bar.disable and self._pending == 0 and \
                    self._bar.n == self._bar.initial:
                self._bar.start_t = self._bar.last_print_t = self._bar._time()

    def flush(self) -> None:
        with self._draw:
            with self._lock:
                n, self._pending = self._pending, 0
            if n:
                self._bar.update(n)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.flush()
        self._bar.close()


def check_fingerprint(store: Store, file: StageFile, iteration: int | None,
                      fingerprint: BackendFingerprint) -> None:
    """Refuse to add records to a file whose records another model made."""
    path = store.path(file, iteration)
    first = store.first(file, iteration)
    if first is None:
        return
    made_by: BackendFingerprint = first.provenance.backend
    if made_by.identity() != fingerprint.identity():
        differ = [f"{k}: {v!r} -> {fingerprint.identity()[k]!r}"
                  for k, v in made_by.identity().items() if fingerprint.identity()[k] != v]
        raise store.refuse(
            f"{path} holds records made by another backend ({'; '.join(differ)}); use the "
            "model that made them, or --redo to move them aside")


class Deferred(Backend):
    """An engine started at its first request (M_t's servers): a stage that finds every record
    made sends none, so a resume with nothing left to do (after a training crash, say) starts
    nothing. Until then ``preview``, the same backend not yet connected, answers for the
    fingerprint's identity and the capabilities; the runner starts the engine before it builds
    the first record, so records carry the started engine's own fingerprint."""

    kind = "deferred"

    def __init__(self, start: Callable[[], AbstractContextManager[Backend]], preview: Backend):
        self._start, self._preview = start, preview
        self._stack = contextlib.ExitStack()
        self._engine: Backend | None = None

    @property
    def batch_size(self) -> int | None:
        return (self._engine or self._preview).batch_size

    def ready(self) -> None:
        self.started()

    def started(self) -> Backend:
        """The engine, started now if it is not yet."""
        if self._engine is None:
            self._engine = self._stack.enter_context(self._start())
        return self._engine

    @property
    def fingerprint(self) -> BackendFingerprint:
        return (self._engine or self._preview).fingerprint

    @property
    def capabilities(self) -> Capabilities:
        return (self._engine or self._preview).capabilities

    def generate(self, requests: Sequence[GenerationRequest],
                 on_result: ResultCallback | None = None) -> list[GenerationResult]:
        return self.started().generate(requests, on_result)

    def score_labels(self, requests: Sequence[ScoreRequest],
                     on_result: LabelCallback | None = None) -> list[LabelResult]:
        return self.started().score_labels(requests, on_result)

    def stats(self) -> dict[str, Any]:
        return self._engine.stats() if self._engine is not None else {}

    def close(self) -> None:
        self._engine = None
        self._stack.close()
        self._preview.close()


def stage_engine(config: BackendConfig, model: str, folder: Path
                 ) -> AbstractContextManager[Backend]:
    """The engine the model-calling stages of M_t = ``model`` share. Servers that metajudge
    starts for it (``backend.serve``) start at the first request (:class:`Deferred`); other
    engines at once."""
    from metajudge.backends import load_backend
    from metajudge.backends.serving import engine, served_config

    if config.kind != "openai" or config.serve is None:
        return engine(config, model, folder)
    preview = load_backend(served_config(config, model, ["http://127.0.0.1:0/v1"]))
    return Deferred(lambda: engine(config, model, folder), preview)


def failure_record(item_id: str, stage: str, iteration: int | None, failure: Failure,
                   request: GenerationRequest | ScoreRequest, fingerprint: BackendFingerprint,
                   template: str | None = None, asked: tuple[int, str] | None = None
                   ) -> FailedRequest:
    """The failure record of an item whose request ended in ``failure``; ``asked``: the
    (round, rule) of an adaptive stage's request (SPEC §5a)."""
    if isinstance(request, GenerationRequest):
        params, seed, sample = request.params, request.seed, request.sample_index
    else:
        params, seed, sample = SamplingParams(temperature=0.0, max_tokens=1), 0, 0
    return FailedRequest(id=item_id, stage=stage, iteration=iteration or 1,
                         failure=failure.model_copy(update={"request_id": item_id}),
                         provenance=Provenance(backend=fingerprint, params=params, seed=seed,
                                               sample_index=sample, template=template),
                         round=asked[0] if asked else None,
                         rule=asked[1] if asked else None)  # type: ignore[arg-type]


class StageRun:
    """One stage of one iteration (or one harness stage) on one backend."""

    #: the time source of the progress bar and of the summary's seconds
    clock: Callable[[], float] = staticmethod(time.perf_counter)
    #: seconds between the progress bar's draws while a backend call runs
    draw_interval: float = 0.5

    def __init__(self, store: Store, file: StageFile, backend: Backend, *, stage: str,
                 iteration: int | None, settings: dict[str, Any], runner: RunnerConfig,
                 progress: bool = True, unit: str = "req", redo: bool = False,
                 inputs: tuple[StageFile, ...] = (), together: tuple[StageFile, ...] = ()):
        """``inputs``: the stage files the records are made from; a stage of an iteration's
        records is also made by its M_t (see
        :func:`metajudge.provenance.check`): when one was remade, the old records are refused."""
        self.store, self.file, self.backend = store, file, backend
        self.stage, self.iteration, self.runner = stage, iteration, runner
        self.progress, self.unit = progress, unit
        self.counts: Counter[str] = Counter()
        if not redo:  # --redo moves the old records aside, whoever made them
            check_fingerprint(store, file, iteration, backend.fingerprint)
        self.settings_digest = provenance.check(store, file, settings, iteration, redo=redo,
                                                inputs=inputs, by_model=iteration is not None,
                                                together=together)

    def count(self, key: str, n: int = 1) -> None:
        """Count an outcome (``parsed``, ``forced``, ...) for the summary."""
        self.counts[key] += n

    def failed(self, item_id: str, step: Step, failure: Failure,
               template: str | None = None, asked: tuple[int, str] | None = None
               ) -> FailedRequest:
        return failure_record(item_id, self.stage, self.iteration, failure, step.request,
                              self.backend.fingerprint, template, asked)

    def run(self, items: Callable[[], Iterable[Item]] | None = None, *, total: int,
            prompts: int, extra: Callable[[], dict[str, float | int]] | None = None,
            rounds: Iterable[list[Item]] | None = None) -> StageSummary:
        """Make every record the stage still lacks; returns the summary (also in the
        manifest). ``items`` is called once per pass and may be a generator; ``extra`` gives
        figures of the finished file (e.g. the meta-judge's first-position share) for the
        summary and the manifest. ``rounds`` (adaptive stages, instead of ``items``): the
        items of one round at a time, each round run to the end (its retry passes included,
        every record written) before the next is asked for, so a round may be planned from
        the records of the rounds before it."""
        started = self.clock()
        summary = StageSummary(stage=self.stage, iteration=self.iteration, prompts=prompts,
                               requested=total, settings=self.settings_digest)
        reused = self.store.count(self.file, self.iteration)
        summary.reused = reused
        bar = Progress(total, reused, f"{self.stage}" + (
            f" it{self.iteration}" if self.iteration is not None else ""), self.unit,
            enabled=self.progress, interval=self.draw_interval, clock=self.clock)
        try:
            with self.store.appender(self.file, self.iteration) as out, \
                    self.store.appender(self.file.failures, self.iteration) as failures:
                if rounds is None:
                    assert items is not None
                    self._passes(items, out, failures, summary, bar)
                else:
                    for one in rounds:
                        self._passes(lambda one=one: one, out, failures, summary, bar)  # type: ignore[misc]
                        # this round's own failures only: a later round's, left by a
                        # killed or exhausted run, are retried when the replay reaches it
                        if (retryable_failures(self.store, self.file, self.iteration)
                                & {item.id for item in one}) - self.store.ids(
                                    self.file, self.iteration):
                            break  # a round left unfinished: the next cannot be planned
        finally:
            bar.close()
        failing = retryable_failures(self.store, self.file, self.iteration)
        summary.failed_retryable = len(failing - self.store.ids(self.file, self.iteration,
                                                                among=failing))
        summary.seconds = self.clock() - started
        summary.extra = {**self.counts, **(extra() if extra is not None else {})}
        summary.backend = self.backend.stats()
        key = self.stage if self.iteration is None else f"iter_{self.iteration:02d}/{self.stage}"
        self.store.record_stage(key, {**summary.as_dict(), "generation": self.store.generation(
            self.file, self.iteration)})  # costs add up over the passes of one making only
        return summary

    def _passes(self, items: Callable[[], Iterable[Item]], out: Any, failures: Any,
                summary: StageSummary, bar: Progress) -> None:
        """The first pass over ``items`` and up to ``runner.retry_passes`` more while
        retryable failures remain."""
        retryable = 0
        for attempt in range(1 + self.runner.retry_passes):
            if attempt:
                log.warning("%s: %d requests failed in a retryable way; pass %d of %d in "
                            "%.0f s", self.stage, retryable, attempt + 1,
                            1 + self.runner.retry_passes, self.runner.retry_delay_s)
                time.sleep(self.runner.retry_delay_s)
            skip = (self.store.ids(self.file, self.iteration)
                    | self.store.final_failures(self.file, self.iteration))
            retryable = self._pass(items(), skip, out, failures, summary, bar)
            summary.passes_run = max(summary.passes_run, attempt + 1)
            if not retryable:
                break

    def _pass(self, items: Iterable[Item], skip: set[str], out: Any, failures: Any,
              summary: StageSummary, bar: Progress) -> int:
        """One pass over the items not in ``skip``; returns its retryable failures."""
        retryable = 0
        size = min(self.runner.chunk_size, self.backend.batch_size or self.runner.chunk_size)
        for chunk in _chunks((i for i in items if i.id not in skip), size):
            # there is work: load the model or start the servers (records then carry the
            # started engine's fingerprint), and time the progress from here
            self.backend.ready()
            bar.start_clock()
            steps = [(item.id, item.start()) for item in chunk]
            while steps:
                steps, failed = self._round(steps, out, failures, summary, bar)
                retryable += failed
        return retryable

    def _round(self, steps: list[tuple[str, Step]], out: Any, failures: Any,
               summary: StageSummary, bar: Progress) -> tuple[list[tuple[str, Step]], int]:
        """One backend call per kind of request for the steps of a chunk; returns the steps
        that follow and the number of retryable failures."""
        following: list[tuple[str, Step]] = []
        retryable = 0

        def handle(item_id: str, step: Step, result: Result) -> None:
            nonlocal retryable
            if isinstance(result, Completion):
                summary.prompt_tokens += result.prompt_tokens
                if isinstance(step.request, GenerationRequest):
                    summary.generated_tokens += result.completion_tokens
            elif isinstance(result, LabelScores):
                summary.prompt_tokens += result.prompt_tokens
            if isinstance(result, Failure) and result.retryable:
                failures.write(self.failed(item_id, step, result))
                summary.failed += 1
                retryable += 1
                bar.advance()
                return
            outcome = step.then(result)
            if isinstance(outcome, Step):
                following.append((item_id, outcome))
                return
            if isinstance(outcome, FailedRequest):
                failures.write(outcome)
                summary.failed += 1
            else:
                out.write(outcome)
                summary.completed += 1
            bar.advance()

        generations = [(i, s) for i, s in steps if isinstance(s.request, GenerationRequest)]
        scorings = [(i, s) for i, s in steps if isinstance(s.request, ScoreRequest)]
        if generations:
            summary.backend_calls += 1
            self.backend.generate([s.request for _, s in generations],  # type: ignore[misc]
                                  on_result=lambda k, r: handle(*generations[k], r))
        if scorings:
            summary.backend_calls += 1
            summary.label_requests += len(scorings)
            self.backend.score_labels([s.request for _, s in scorings],  # type: ignore[misc]
                                      on_result=lambda k, r: handle(*scorings[k], r))
        bar.flush()
        return following, retryable


def _chunks(items: Iterator[Item] | Iterable[Item], size: int) -> Iterator[list[Item]]:
    chunk: list[Item] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def retryable_failures(store: Store, file: StageFile, iteration: int | None) -> set[str]:
    """Ids whose latest failure was retryable (whether or not they have succeeded since)."""
    latest: dict[str, bool] = {}
    for failure in store.iter_records(file.failures, iteration):
        latest[failure.id] = failure.failure.retryable
    return {item for item, retryable in latest.items() if retryable}


def require_finished(summary: StageSummary) -> None:
    """Stop when retryable failures remain: the next stage would silently work on less."""
    if summary.failed_retryable:
        where = f" iteration {summary.iteration}" if summary.iteration is not None else ""
        raise RetryableFailuresRemain(
            f"{summary.stage}{where}: {summary.failed_retryable} requests still fail after "
            f"{summary.passes_run} passes (see the .failures.jsonl file); rerun to retry them")
