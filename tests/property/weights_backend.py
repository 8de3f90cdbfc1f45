"""The instant backend as the real backends name their model: by its weights.

The property test of the run's invariants (``test_run_invariants.py``) needs each checkpoint to
be its own model, as it is on the transformers and served backends, where a record's
fingerprint carries the weights' content hash (``revision``). The instant backend names its
model by ``backend.model`` only, so a checkpoint retrained in the same folder would pass for
the old one. This subclass resolves the model as every backend does
(:func:`metajudge.models.resolve_model`: the embedded or mini model's hash, or a checkpoint's
``weights_sha256``) and puts that in its fingerprint, and it writes texts and scores that
depend on the model too (a tag of the revision, and scores drawn from a hash of the request id
and the revision), so that records of another M_t differ in content as well as in name.

Used in a config as ``backend.kind: tests.property.weights_backend:WeightsInstantBackend``
(the worktree root on ``PYTHONPATH``).
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCHMARKS = str(Path(__file__).resolve().parents[2] / "benchmarks")
if BENCHMARKS not in sys.path:
    sys.path.insert(0, BENCHMARKS)

from instant_backend import FILLER, InstantBackend, _hash  # noqa: E402

from metajudge.config import BackendConfig  # noqa: E402
from metajudge.models import resolve_model  # noqa: E402
from metajudge.records import BackendFingerprint, GenerationRequest  # noqa: E402

#: the response a judge prompt shows (the judge templates' ``<response>`` block)
SHOWN = re.compile(r"<response>\n?(.*?)\n?</response>", re.S)


class WeightsInstantBackend(InstantBackend):
    """:class:`InstantBackend` whose model is its weights' content hash."""

    kind = "instant"

    def __init__(self, config: BackendConfig | None = None, **kwargs: object):
        super().__init__(config, **kwargs)  # type: ignore[arg-type]
        revision = config.revision if config is not None else None
        self.revision = resolve_model(self._name, revision).revision

    @property
    def fingerprint(self) -> BackendFingerprint:
        return BackendFingerprint(kind=self.kind, model=self._name, revision=self.revision)

    def generate(self, requests: Sequence[GenerationRequest], on_result: Any = None) -> list:
        """As the instant backend, with ``WEIGHTS_INSTANT_RECORD_DELAY_S`` seconds per request
        (so that a kill can land between two records of a stage)."""
        pause = float(os.environ.get("WEIGHTS_INSTANT_RECORD_DELAY_S", 0))
        if not pause:
            return super().generate(requests, on_result)

        def slowly(index: int, result: Any) -> None:
            time.sleep(pause)
            if on_result is not None:
                on_result(index, result)

        return super().generate(requests, slowly)

    def _answer(self, request: GenerationRequest) -> str:  # type: ignore[override]
        """A text that names who made it and from what: ``[<revision>]`` for the model, and
        for a judgment ``{response <digest>}``, the digest of the response it was shown."""
        prompt = request.messages[-1].content
        h = _hash(f"{request.id}|{self.revision}")
        tag = f"[{self.revision}] "
        if "<judgment_a>" in prompt:
            return f"{tag}{(FILLER * 4)[:300]}\nWinner: Judgment {'AB'[h % 2]}"
        shown = SHOWN.search(prompt)
        if "Score:" in prompt and shown:
            return (f"{tag}{{response {text_digest(shown.group(1))}}} {(FILLER * 20)[:400]}"
                    f"\nScore: {h % 6}")
        return tag + (FILLER * 40)[:600 - (h % 300)]


def text_digest(text: str) -> str:
    """The digest a judgment names the response it was shown by (whitespace-trimmed)."""
    return hashlib.sha256(text.strip().encode()).hexdigest()[:12]
