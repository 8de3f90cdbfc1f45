"""A backend that answers from recorded runs: the same response for (prompt, k), the same
judgment for (response, k) and the same verdict for (first, second) as the run it replays.

Issue 28's exact comparison: run a procedure (adaptive judging) on a replay of a full run, and
both are compared on identical samples, with no sampling noise between them. Named in a config as

    backend:
      kind: replay_backend:ReplayBackend          # with benchmarks/ on PYTHONPATH
      model: smollm2-135m-instruct                # the recorded run's model: M_t's identity

with the recorded run in ``METAJUDGE_REPLAY`` (several: joined by ``os.pathsep``).

How a request is found. The stages name each request by what it is: ``<prompt>#<k>`` (a
response), ``<response>@j<k>`` (a judgment), ``<response>@m<first>-<second>`` (a comparison);
their records carry the same ids. A request is answered by the record of its id, and only when
the request is the one the record was made from: its prompt must equal the prompt rebuilt from
the recording with the recording's own templates (``*.settings.json``): the recorded instruction
for a response; the judge template on the recorded response for a judgment (and the same sample
index); the meta-judge template on the two recorded judgments, in that order and as the
meta-judge was shown them (completed text, scores hidden with ``hide_scores``), for a
comparison. A request whose
id is not recorded goes to ``fallback`` when one is given (the model itself), else it fails;
one whose content differs from the recording fails, non-retryably, naming both. ``stats()``
counts each case. Label-scoring requests (forced and probability-weighted read-outs) are
answered with the recorded label distribution of the judgment or comparison.

Several recordings may be given: a full run, and the comparisons of the responses the full run
did not select (benchmarks/adaptive_judging.py records those for the ratings of a procedure that
selects another response); the first recording that holds an id answers it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from functools import cache, lru_cache
from pathlib import Path
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
    Judgment,
    LabelScores,
    MetaJudgment,
    Response,
    ScoreRequest,
)
from metajudge.stages.meta_judge import hide_score_lines
from metajudge.store import JUDGMENTS, META_JUDGMENTS, RESPONSES, StageFile, Store
from metajudge.templates import Template, rubric_text

log = logging.getLogger(__name__)
FILES = (RESPONSES, JUDGMENTS, META_JUDGMENTS)
#: where ``from_config`` finds the recorded runs
REPLAY_ENV = "METAJUDGE_REPLAY"


class ReplayBackend(Backend):
    """Answers from recorded runs (see the module docstring)."""

    kind = "replay"

    def __init__(self, recordings: Sequence[str | Path], *, iteration: int = 1,
                 fallback: Backend | None = None):
        if not recordings:
            raise ValueError("replay backend: no recorded run given")
        self.iteration = iteration
        self.fallback = fallback
        self.stores = [Store.open(path, lock=False) for path in recordings]
        #: request id -> (recording, file, offset)
        self.index: dict[str, tuple[int, StageFile, int]] = {}
        for k, store in enumerate(self.stores):
            for file in FILES:
                if not store.path(file, iteration).is_file():
                    continue
                for offset, record in store.iter_with_offsets(file, iteration):
                    self.index.setdefault(record.id, (k, file, offset))
        if not self.index:
            raise ValueError(f"replay backend: {recordings[0]} holds no records of iteration "
                             f"{iteration}")
        first = self._record(next(iter(self.index)))
        self._recorded = first.provenance.backend
        settings = [s.settings(f, iteration) or {} for s in self.stores
                    for f in (JUDGMENTS, META_JUDGMENTS)]
        self._label_scores = not any("readouts_not_run" in s for s in settings)
        self._guided = any(s.get("readouts_guided") for s in settings)
        self.counts = {"replayed": 0, "fallback": 0, "missing": 0, "mismatched": 0,
                       "labels_replayed": 0}

    @classmethod
    def from_config(cls, config: BackendConfig) -> ReplayBackend:
        """The recordings are ``METAJUDGE_REPLAY`` (paths joined by ``os.pathsep``);
        ``backend.model`` names the recorded model, which the records' inputs are checked
        against like any M_t."""
        paths = os.environ.get(REPLAY_ENV, "")
        if not paths:
            raise ValueError(f"replay backend: set {REPLAY_ENV} to the recorded run directory")
        backend = cls(paths.split(os.pathsep))
        if backend.fingerprint.model != config.model:
            raise ValueError(f"replay backend: {paths} was recorded with "
                             f"{backend.fingerprint.model!r}, not backend.model {config.model!r}")
        return backend

    @property
    def fingerprint(self) -> BackendFingerprint:
        return BackendFingerprint(kind=self.kind, model=self._recorded.model,
                                  revision=self._recorded.revision, dtype=self._recorded.dtype,
                                  chat_template_sha256=self._recorded.chat_template_sha256)

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(logprobs=False, max_top_logprobs=0, seeds=True,
                            prefill=self._label_scores, label_scores=self._label_scores,
                            guided=self._guided)

    def stats(self) -> dict[str, Any]:
        return {"replay": dict(self.counts)}

    def close(self) -> None:
        for store in self.stores:
            store.close()
        if self.fallback is not None:
            self.fallback.close()

    # ---------------------------------------------------------------- reading the recording
    @lru_cache(maxsize=8192)  # noqa: B019 - one backend per run; the cache dies with it
    def _record(self, record_id: str) -> Any:
        k, file, offset = self.index[record_id]
        return self.stores[k].read_at(file, offset, self.iteration)

    def _judgment(self, response_id: str, index: int) -> Judgment | None:
        key = f"{response_id}@j{index}"
        return self._record(key) if key in self.index else None

    @cache  # noqa: B019
    def _template(self, recording: int, file: StageFile) -> Template | None:
        """The template a recording's judgments or comparisons were made with."""
        settings = self.stores[recording].settings(file, self.iteration) or {}
        definition = settings.get("template_definition")
        return Template.model_validate(definition) if definition else None

    def expected_prompt(self, record: Any) -> str | None:
        """The prompt ``record`` was made from, rebuilt with the recording's own templates
        (None where the recording does not say which)."""
        k = self.index[record.id][0]
        if isinstance(record, Response):
            return record.instruction
        response = self._record(record.response_id) if record.response_id in self.index \
            else None
        judge = self._template(k, JUDGMENTS)
        if response is None or judge is None:
            return None
        if isinstance(record, Judgment):
            return judge.render(instruction=response.instruction, response=response.text)
        meta = self._template(k, META_JUDGMENTS)
        shown = [self._judgment(record.response_id, n) for n in (record.first, record.second)]
        if meta is None or None in shown:
            return None
        texts = [j.completed_text or j.text for j in shown]  # type: ignore[union-attr]
        if record.hide_scores:
            texts = [hide_score_lines(t) for t in texts]
        return meta.render(instruction=response.instruction, response=response.text,
                           rubric=rubric_text(judge), judgment_a=texts[0], judgment_b=texts[1])

    def mismatch(self, request: GenerationRequest, record: Any) -> str | None:
        """Why ``request`` is not the request ``record`` was made from, or None."""
        if isinstance(record, Judgment) and request.sample_index != record.index:
            return f"sample index {request.sample_index}, recorded {record.index}"
        expected = self.expected_prompt(record)
        if expected is None:
            return "the recording lacks what its prompt was made from"
        if request.messages[-1].content != expected:
            what = {Response: "another prompt", Judgment: "another response or template"}
            return what.get(type(record), "other judgments, another order or template")
        return None

    # ---------------------------------------------------------------- the protocol
    def generate(self, requests: Sequence[GenerationRequest], on_result: Any = None
                 ) -> list[Any]:
        out: list[Any] = [None] * len(requests)
        missing: list[int] = []
        for i, request in enumerate(requests):
            if request.id not in self.index:
                missing.append(i)
                continue
            record = self._record(request.id)
            why = self.mismatch(request, record)
            if why is not None:
                self.counts["mismatched"] += 1
                out[i] = Failure(request_id=request.id, kind=FailureKind.BAD_REQUEST,
                                 retryable=False, message=f"replay: request {request.id} is "
                                 f"not the recorded one ({why})")
            else:
                self.counts["replayed"] += 1
                out[i] = Completion(request_id=request.id, text=record.text,
                                    finish_reason=getattr(record, "finish_reason", "stop"),
                                    prompt_tokens=record.prompt_tokens,
                                    completion_tokens=record.completion_tokens)
            if on_result is not None:
                on_result(i, out[i])
        if missing and self.fallback is not None:
            self.counts["fallback"] += len(missing)

            def forward(j: int, result: Any) -> None:
                out[missing[j]] = result
                if on_result is not None:
                    on_result(missing[j], result)

            self.fallback.generate([requests[i] for i in missing], on_result=forward)
        elif missing:
            self.counts["missing"] += len(missing)
            for i in missing:
                out[i] = Failure(request_id=requests[i].id, kind=FailureKind.BAD_REQUEST,
                                 retryable=False,
                                 message=f"replay: {requests[i].id} is not in the recording")
                if on_result is not None:
                    on_result(i, out[i])
        return out

    def score_labels(self, requests: Sequence[ScoreRequest], on_result: Any = None
                     ) -> list[Any]:
        out: list[Any] = [None] * len(requests)
        missing = [i for i, r in enumerate(requests) if r.id not in self.index]
        if missing and self.fallback is not None:
            self.counts["fallback"] += len(missing)

            def forward(j: int, result: Any) -> None:
                out[missing[j]] = result
                if on_result is not None:
                    on_result(missing[j], result)

            self.fallback.score_labels([requests[i] for i in missing], on_result=forward)
        for i, request in enumerate(requests):
            result: Any
            if out[i] is not None:
                continue
            record = self._record(request.id) if request.id in self.index else None
            probs = (record.score_probs if isinstance(record, Judgment) else
                     record.choice_probs if isinstance(record, MetaJudgment) else None)
            if record is None or not isinstance(record, Judgment | MetaJudgment):
                self.counts["missing"] += 1
                result = Failure(request_id=request.id, kind=FailureKind.BAD_REQUEST,
                                 retryable=False, message=f"replay: no recorded read-out for "
                                 f"{request.id}")
            elif probs is not None and len(probs) != len(request.labels):
                self.counts["mismatched"] += 1
                result = Failure(request_id=request.id, kind=FailureKind.BAD_REQUEST,
                                 retryable=False, message=f"replay: {request.id} asks for "
                                 f"{len(request.labels)} labels, recorded {len(probs)}")
            else:
                self.counts["labels_replayed"] += 1
                note = None if probs is not None else (
                    getattr(record, "readout_error", None) or record.parse_error
                    or "no label distribution recorded")
                result = LabelScores(request_id=request.id, probs=probs, note=note,
                                     prompt_tokens=record.prompt_tokens)
            out[i] = result
            if on_result is not None:
                on_result(i, result)
        return out
