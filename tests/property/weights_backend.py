"""The instant backend as the real backends name their model: by its weights.

The property test of the run's invariants (``test_run_invariants.py``) needs each checkpoint to
be its own model, as it is on the transformers and served backends, where a record's
fingerprint carries the weights' content hash (``revision``): ``InstantWeightsBackend``
(benchmarks/instant_backend.py) does that. This subclass also writes texts that say who made
them and from what, so that the test's oracle can tell a stale record by its content, not only
by its name: every text starts with ``[<revision>]``, a judgment names the digest of the
response its prompt showed (``{response <digest>}``), and scores are drawn from a hash of the
request id and the revision (another M_t gives other scores, so other pairs and other
weights).

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

from instant_backend import FILLER, InstantWeightsBackend, _hash  # noqa: E402

from metajudge.records import GenerationRequest  # noqa: E402

#: the response a judge prompt shows (the judge templates' ``<response>`` block)
SHOWN = re.compile(r"<response>\n?(.*?)\n?</response>", re.S)


class WeightsInstantBackend(InstantWeightsBackend):
    """:class:`InstantWeightsBackend` whose texts name their model and what they were shown."""

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
        h = _hash(f"{request.id}|{self._revision}")
        tag = f"[{self._revision}] "
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
