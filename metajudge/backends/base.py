"""The backend protocol: one batch call in, results in the same order out.

A backend is a context manager that owns its model or connection. Its one required operation,
:meth:`Backend.generate`, takes a batch of requests (so it can sort, batch or fan out), returns
one :class:`~metajudge.records.Completion` or :class:`~metajudge.records.Failure` per request in
input order, and reports each result through ``on_result`` as soon as it is final, so the caller
can persist it before the batch ends. Exceptions are for setup errors only.

One optional operation, :meth:`Backend.score_labels`, answers scoring requests: the next-token
distribution over a few labels (``0``…``5``, ``A``/``B``) after a chat and an assistant prefix.
The default implementation is a one-token prefilled generation that reads the labels from the
top alternatives, for backends that can continue a prefix and return log-probabilities (vLLM,
servers that take a prefilled assistant turn); the transformers backend computes it exactly.

Users' own backends subclass :class:`Backend` (public as ``metajudge.backends.Backend``), give it
a ``from_config(config)`` constructor and are named in the config as ``package.module:Class``.
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from metajudge.records import (
    BackendFingerprint,
    Capabilities,
    Completion,
    Failure,
    FailureKind,
    GenerationRequest,
    GenerationResult,
    LabelResult,
    LabelScores,
    SamplingParams,
    ScoreRequest,
    TopLogprob,
)

if TYPE_CHECKING:
    from metajudge.config import BackendConfig

#: called with (index in the batch, result) once per request, in completion order
ResultCallback = Callable[[int, GenerationResult], None]
LabelCallback = Callable[[int, LabelResult], None]
#: alternatives read per step by the default label scoring
TOP_K = 20

B = TypeVar("B", bound="Backend")


class Backend(ABC):
    """Base class for generation backends."""

    kind: str = "abstract"

    @classmethod
    def from_config(cls: type[B], config: BackendConfig) -> B:
        """Build the backend a config describes (``backend.*``)."""
        return cls(config)  # type: ignore[call-arg]

    @property
    @abstractmethod
    def fingerprint(self) -> BackendFingerprint:
        """Stable identity of the model and settings; stamped on every record."""

    @property
    @abstractmethod
    def capabilities(self) -> Capabilities:
        """What this backend supports."""

    @abstractmethod
    def generate(
        self, requests: Sequence[GenerationRequest], on_result: ResultCallback | None = None
    ) -> list[GenerationResult]:
        """Produce one result per request, in input order; failures are values."""

    def score_labels(
        self, requests: Sequence[ScoreRequest], on_result: LabelCallback | None = None
    ) -> list[LabelResult]:
        """P(label) for each request's labels at the next token after its prefill.

        Default: a greedy one-token continuation of the prefill with the top alternatives'
        log-probabilities; labels absent from them get no mass. Backends without prefill or
        log-probabilities answer every request with a non-retryable failure."""
        caps = self.capabilities
        if not (caps.prefill and caps.logprobs and caps.max_top_logprobs > 0):
            results: list[LabelResult] = [Failure(
                request_id=r.id, kind=FailureKind.BAD_REQUEST, retryable=False,
                message=f"backend {self.kind} cannot score labels (it needs prefill and "
                "log-probabilities)") for r in requests]
            for i, result in enumerate(results):
                if on_result is not None:
                    on_result(i, result)
            return results
        top = min(TOP_K, caps.max_top_logprobs)
        generation = [GenerationRequest(
            id=r.id, messages=r.messages, prefill=r.prefill,
            params=SamplingParams(temperature=0.0, max_tokens=1, logprobs=True,
                                  top_logprobs=top)) for r in requests]
        out: list[LabelResult | None] = [None] * len(requests)

        def convert(index: int, result: GenerationResult) -> None:
            scored: LabelResult = result if isinstance(result, Failure) else read_labels(
                result, requests[index].labels)
            out[index] = scored
            if on_result is not None:
                on_result(index, scored)

        self.generate(generation, on_result=convert)
        return [r for r in out if r is not None]

    def stats(self) -> dict[str, Any]:
        """Counters worth recording in the manifest (e.g. requests per replica)."""
        return {}

    def close(self) -> None:
        """Free the model, connections and memory. Safe to call twice."""
        return None

    def __enter__(self) -> Backend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def label_distribution(top: Sequence[TopLogprob], labels: Sequence[str]
                       ) -> tuple[float, ...] | None:
    """P(label) for each label from one step's alternatives (tokens compared without surrounding
    whitespace), renormalised; None when no alternative is a label.

    >>> label_distribution([TopLogprob(token=" 4", logprob=math.log(0.6)),
    ...                     TopLogprob(token="5", logprob=math.log(0.2)),
    ...                     TopLogprob(token="The", logprob=math.log(0.2))],
    ...                    ("0", "1", "2", "3", "4", "5"))
    (0.0, 0.0, 0.0, 0.0, 0.75, 0.25)
    """
    mass = dict.fromkeys(labels, 0.0)
    for alt in top:
        key = alt.token.strip()
        if key in mass:
            mass[key] += math.exp(alt.logprob)
    return normalised([mass[label] for label in labels])


def normalised(mass: Sequence[float]) -> tuple[float, ...] | None:
    """Masses scaled to sum to one (rounded to 12 digits), or None when they sum to zero."""
    total = sum(mass)
    if total <= 0:
        return None
    return tuple(round(m / total, 12) for m in mass)


def read_labels(completion: Completion, labels: Sequence[str]) -> LabelScores:
    """A one-token read-out's label distribution from its step's alternatives."""
    steps = completion.logprobs or ()
    probs = label_distribution(steps[0].top, labels) if steps else None
    return LabelScores(
        request_id=completion.request_id, probs=probs,
        note=None if probs else "no label token among the alternatives",
        prompt_tokens=completion.prompt_tokens,
        logprobs_returned=sum(1 + len(step.top) for step in steps))


def bisect_failures(run: Callable[[list[Any]], list[Any]], items: list[Any],
                    fail: Callable[[Any, Exception], Any]) -> list[Any]:
    """``run(items)``; when it raises, split the batch in halves and run each, down to single
    items, so that one bad request fails alone instead of taking its whole batch with it.

    >>> def run(xs):
    ...     if 3 in xs:
    ...         raise RuntimeError("bad")
    ...     return [x * 10 for x in xs]
    >>> bisect_failures(run, [1, 2, 3, 4], lambda x, exc: f"failed {x}")
    [10, 20, 'failed 3', 40]
    """
    try:
        return run(items)
    except (RuntimeError, ValueError) as exc:
        if len(items) == 1:
            return [fail(items[0], exc)]
        middle = len(items) // 2
        return (bisect_failures(run, items[:middle], fail)
                + bisect_failures(run, items[middle:], fail))


def check_unique_ids(requests: Sequence[GenerationRequest | ScoreRequest]) -> None:
    """Raise if two requests share an id (results are matched to requests by id)."""
    seen: set[str] = set()
    for request in requests:
        if request.id in seen:
            raise ValueError(f"duplicate request id {request.id!r} in one batch")
        seen.add(request.id)


def sha256_text(text: str | None) -> str | None:
    """Short content hash used in fingerprints."""
    if text is None:
        return None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
