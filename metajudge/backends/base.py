"""The backend protocol: one batch call in, results in the same order out.

A backend is a context manager that owns its model or connection. Its one required operation,
:meth:`Backend.generate`, takes a batch of requests (so it can sort, batch or fan out), returns
one :class:`~metajudge.records.Completion` or :class:`~metajudge.records.Failure` per request in
input order, and reports each result through ``on_result`` as soon as it is final, so the caller
can persist it before the batch ends. Exceptions are for setup errors only.

One optional operation, :meth:`Backend.score_labels`, answers scoring requests: the next-token
distribution over a few labels (``0``…``5``, ``A``/``B``) after a chat and an assistant prefix.
The default implementation is a short greedy prefilled generation that reads the labels from the
top alternatives, for backends that can continue a prefix and return log-probabilities (vLLM,
servers that take a prefilled assistant turn); the transformers backend computes it exactly.

Where the labels are read (:func:`read_labels`): a chat template may trim the prefilled turn
(Llama-3's does, so under ``continue_final_message`` ``"Score: "`` reaches the model as
``"Score:"``), and a tokenizer may write the space before a label as its own token (Llama-3's
``':' ' ' '4'``) or merge it into the label's (GPT-2's ``' 4'``). So the prefill is sent without
its trailing whitespace, which every template renders alike, and the labels are read where their
first token is predicted: at the first step, a label token with the whitespace merged in; while
the greedy continuation writes exactly the whitespace the prefill ended with, at the step after
it, weighted by the probability of that whitespace. A backend with structured outputs (served
vLLM) is given a regex (:func:`label_guide`) that makes the continuation write that whitespace
whatever the model prefers there, so the read-out always reaches the labels' step; without it, a
model whose greedy token after ``Score:`` is not the space gets no read-out, and the record says
where the read-out stopped.

Two optional hints let the stage runner time its work: :meth:`Backend.ready` loads or starts what
the first request needs (so a stage's progress times requests, not a model load), and
:attr:`Backend.batch_size`, for an engine that computes fixed batches, makes the runner take each
batch of records through all their requests before it starts the next.

Users' own backends subclass :class:`Backend` (public as ``metajudge.backends.Backend``), give it
a ``from_config(config)`` constructor and are named in the config as ``package.module:Class``.
"""

from __future__ import annotations

import hashlib
import math
import re
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
            id=r.id, messages=r.messages, prefill=r.prefill.rstrip() or None,
            guide=label_guide(r.prefill, r.labels) if caps.guided else None,
            params=SamplingParams(temperature=0.0, max_tokens=1 + len(trailing_space(r.prefill)),
                                  logprobs=True, top_logprobs=top)) for r in requests]
        out: list[LabelResult | None] = [None] * len(requests)

        def convert(index: int, result: GenerationResult) -> None:
            request = requests[index]
            scored: LabelResult = result if isinstance(result, Failure) else read_labels(
                result, request.labels, trailing_space(request.prefill))
            out[index] = scored
            if on_result is not None:
                on_result(index, scored)

        self.generate(generation, on_result=convert)
        return [r for r in out if r is not None]

    @property
    def batch_size(self) -> int | None:
        """Requests an engine computes together when it works in fixed batches (in-process
        transformers), else None (engines that schedule requests continuously). The runner then
        sends a record's follow-up requests (a read-out after a judgment) before the next batch,
        so records, and the progress bar's rate, come at the pace of the work."""
        return None

    def ready(self) -> None:
        """Load or start what the first request needs (a model loaded on first use, servers
        started at the first request); the runner calls it before it sends work. Default:
        nothing to do."""
        return None

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


def label_mass(top: Sequence[TopLogprob], labels: Sequence[str]) -> list[float]:
    """P(label) for each label among one step's alternatives (tokens compared without surrounding
    whitespace), not renormalised."""
    mass = dict.fromkeys(labels, 0.0)
    for alt in top:
        key = alt.token.strip()
        if key in mass:
            mass[key] += math.exp(alt.logprob)
    return [mass[label] for label in labels]


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
    return normalised(label_mass(top, labels))


def trailing_space(prefill: str) -> str:
    """The whitespace a read-out's prefill ends with (the default read-out sends the prefill
    without it and reads the labels after the model writes it).

    >>> trailing_space("Clear.\\nScore: "), trailing_space("Winner: Judgment")
    (' ', '')
    """
    return prefill[len(prefill.rstrip()):]


def label_guide(prefill: str, labels: Sequence[str]) -> str:
    """The structured-outputs regex of a read-out: the whitespace the prefill ends with, then one
    label (an optional space where the prefill ends without whitespace, as ``Judgment`` before
    `` A``). Under it the continuation writes that whitespace whatever the model would have
    written (a trimming template's ``Score:`` then ``' '``), and the log-probabilities at each
    step are over the allowed tokens: the labels, renormalised.

    >>> label_guide("Clear.\\nScore: ", ("0", "1")), label_guide("Winner: Judgment", ("A", "B"))
    (' (0|1)', ' ?(A|B)')
    """
    space = trailing_space(prefill)
    head = space or " ?"  # whitespace is literal in a regex
    return head + "(" + "|".join(re.escape(label) for label in labels) + ")"


def normalised(mass: Sequence[float]) -> tuple[float, ...] | None:
    """Masses scaled to sum to one (rounded to 12 digits), or None when they sum to zero."""
    total = sum(mass)
    if total <= 0:
        return None
    return tuple(round(m / total, 12) for m in mass)


def read_labels(completion: Completion, labels: Sequence[str], space: str = "") -> LabelScores:
    """The label distribution of a greedy continuation of a prefill sent without its trailing
    whitespace ``space``: the labels' mass at the first step (tokens such as ``' 4'``, the space
    merged in), plus, while the greedy tokens write exactly ``space`` (``' '`` then ``'4'``), the
    mass at the step after it times the probability of the whitespace written.

    >>> from metajudge.records import TokenLogprob
    >>> def step(token, **top):
    ...     alts = [TopLogprob(token=t.replace("_", " "), logprob=math.log(p))
    ...             for t, p in top.items()]
    ...     return TokenLogprob(token=token, logprob=max(a.logprob for a in alts), top=alts)
    >>> split = Completion(request_id="r", text=" 4", finish_reason="length", prompt_tokens=9,
    ...                    completion_tokens=2, logprobs=(step(" ", _=0.9, **{"4": 0.01}),
    ...                                                   step("4", **{"4": 0.5, "5": 0.4})))
    >>> read_labels(split, ("4", "5"), " ").probs  # (0.01 + 0.9 * 0.5, 0.9 * 0.4)
    (0.560975609756, 0.439024390244)
    >>> read_labels(split, ("4", "5")).probs  # no whitespace expected: the first step only
    (1.0, 0.0)
    >>> merged = Completion(request_id="r", text=" 4", finish_reason="length", prompt_tokens=9,
    ...                     completion_tokens=1, logprobs=(step(" 4", _4=0.6, _5=0.2),))
    >>> read_labels(merged, ("4", "5"), " ").probs
    (0.75, 0.25)
    """
    steps = completion.logprobs or ()
    mass, reach, rest, where = [0.0] * len(labels), 1.0, space, "no step was returned"
    for k, step in enumerate(steps):
        mass = [m + reach * p for m, p in zip(mass, label_mass(step.top, labels), strict=True)]
        if not rest:
            where = f"step {k + 1}"
            break
        token = step.token
        if not (token and token.isspace() and rest.startswith(token)):
            where = f"step {k + 1}, where the model wrote {token!r} instead of {rest!r}"
            break
        reach *= math.exp(step.logprob)
        rest = rest[len(token):]
    else:
        if steps:
            where = f"step {len(steps)}, before the model finished writing {space!r}"
    probs = normalised(mass)
    return LabelScores(
        request_id=completion.request_id, probs=probs,
        note=None if probs else f"no label token among the alternatives (read up to {where})",
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
