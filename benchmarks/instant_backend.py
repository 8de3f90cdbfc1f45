"""A backend that answers at once, so only metajudge's own pipeline cost shows.

It is also the README's example of a user's own backend: a subclass of
``metajudge.backends.Backend`` with a ``from_config`` constructor, named in a config as

    backend:
      kind: instant_backend:InstantBackend       # with benchmarks/ on PYTHONPATH

Answers are deterministic functions of the request (a hash of its id): responses of
``RESPONSE_CHARS`` characters, judgments of ``JUDGMENT_CHARS`` characters ending in
``Score: N``, meta-judgments ending in ``Winner: Judgment A|B``, and a label distribution for
scoring requests. ``fail_first`` makes the first attempt of every n-th request fail in a
retryable way (to test retries); ``delay_s`` sleeps per call.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from typing import Any

from metajudge.backends.base import Backend
from metajudge.config import BackendConfig
from metajudge.records import (
    BackendFingerprint,
    Capabilities,
    Completion,
    Failure,
    FailureKind,
    GenerationRequest,
)

try:  # the label-scoring protocol (absent from metajudge before the stage runner)
    from metajudge.records import LabelScores
except ImportError:  # pragma: no cover - benchmarks of older checkouts
    LabelScores = None

RESPONSE_CHARS = 2000
JUDGMENT_CHARS = 1000
FILLER = "The answer covers the question's main points and explains them clearly. "


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


class InstantBackend(Backend):
    kind = "instant"

    def __init__(self, config: BackendConfig | None = None, *, fail_first: int = 0,
                 delay_s: float = 0.0, name: str = "instant-model"):
        self._name = config.model if config is not None else name
        self.fail_first, self.delay_s = fail_first, delay_s
        self.seen: set[str] = set()
        self.calls = 0

    @classmethod
    def from_config(cls, config: BackendConfig) -> InstantBackend:
        """From a config; ``INSTANT_DELAY_S`` and ``INSTANT_FAIL_FIRST`` in the environment
        set ``delay_s`` and ``fail_first`` (for tests that run the CLI)."""
        return cls(config, delay_s=float(os.environ.get("INSTANT_DELAY_S", 0)),
                   fail_first=int(os.environ.get("INSTANT_FAIL_FIRST", 0)))

    @property
    def fingerprint(self) -> BackendFingerprint:
        return BackendFingerprint(kind=self.kind, model=self._name)

    @property
    def capabilities(self) -> Capabilities:
        extra = {"label_scores": True} if "label_scores" in Capabilities.model_fields else {}
        return Capabilities(logprobs=False, max_top_logprobs=0, seeds=True, prefill=True,
                            **extra)

    def _fails(self, request_id: str) -> bool:
        if not self.fail_first:
            return False  # and remember nothing: the benchmark measures metajudge's memory
        first = request_id not in self.seen
        self.seen.add(request_id)
        return bool(self.fail_first) and first and _hash(request_id) % self.fail_first == 0

    def generate(self, requests: Sequence[GenerationRequest], on_result: Any = None) -> list:
        self.calls += 1
        time.sleep(self.delay_s)
        results: list[Any] = []
        for index, request in enumerate(requests):
            result: Any
            if self._fails(request.id):
                result = Failure(request_id=request.id, kind=FailureKind.SERVER_ERROR,
                                 message="instant backend: first attempt fails", retryable=True)
            else:
                text = self._answer(request)
                result = Completion(request_id=request.id, text=text, finish_reason="stop",
                                    prompt_tokens=sum(len(m.content) for m in request.messages)
                                    // 4, completion_tokens=len(text) // 4)
            results.append(result)
            if on_result is not None:
                on_result(index, result)
        return results

    def score_labels(self, requests: Sequence[Any], on_result: Any = None) -> list:
        self.calls += 1
        results: list[Any] = []
        for index, request in enumerate(requests):
            weights = [1 + (_hash(request.id + label) % 7) for label in request.labels]
            total = sum(weights)
            result = LabelScores(request_id=request.id, probs=tuple(w / total for w in weights),
                                 prompt_tokens=len(request.prefill) // 4,
                                 logprobs_returned=len(request.labels))
            results.append(result)
            if on_result is not None:
                on_result(index, result)
        return results

    @staticmethod
    def _answer(request: GenerationRequest) -> str:
        prompt = request.messages[-1].content
        h = _hash(request.id)
        if "<judgment_a>" in prompt:
            body = (FILLER * 4)[:300]
            return f"{body}\nWinner: Judgment {'AB'[h % 2]}"
        if "Score:" in prompt and "<response>" in prompt:
            body = (FILLER * 20)[:JUDGMENT_CHARS - 10]
            return f"{body}\nScore: {h % 6}"
        return (FILLER * 40)[:RESPONSE_CHARS - (h % 500)]


class InstantWeightsBackend(InstantBackend):
    """The instant backend naming its model by its weights, as the real backends do: a
    checkpoint (M_t) is its weights' content hash (``revision``), the seed model its name and
    pinned revision, so records made by a retrained checkpoint name another model."""

    kind = "instant-weights"

    def __init__(self, config: BackendConfig | None = None, **kwargs: Any):
        super().__init__(config, **kwargs)
        from metajudge.models import resolve_model

        self._revision = (resolve_model(config.model, config.revision).revision
                          if config is not None else None)

    @property
    def fingerprint(self) -> BackendFingerprint:
        return BackendFingerprint(kind=self.kind, model=self._name, revision=self._revision)
