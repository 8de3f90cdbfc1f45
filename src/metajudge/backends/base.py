"""The backend protocol: one batch call in, results in the same order out.

A backend is a context manager that owns its model or connection. Its one required operation,
:meth:`Backend.generate`, takes every request of a stage at once (so it can sort, batch or fan
out), returns one :class:`~metajudge.records.Completion` or :class:`~metajudge.records.Failure` per
request in input order, and reports each result through ``on_result`` as soon as it is final, so
the caller can persist it before the batch ends. Exceptions are for setup errors only.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from types import TracebackType

from metajudge.records import (
    BackendFingerprint,
    Capabilities,
    GenerationRequest,
    GenerationResult,
)

#: called with (index in the batch, result) once per request, in completion order
ResultCallback = Callable[[int, GenerationResult], None]


class Backend(ABC):
    """Base class for generation backends."""

    kind: str = "abstract"

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


def check_unique_ids(requests: Sequence[GenerationRequest]) -> None:
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
