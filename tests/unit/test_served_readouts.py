"""Read-outs over an OpenAI-compatible server, against the fake server of tests/fault_server.py:
the guided read-out's request and its reading of masked log-probabilities, the EFT judge stage's
record of read-outs that cannot run, and a failed probability-weighted read-out kept as a
reason instead of a silent None."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pytest

from metajudge.backends.openai_server import OpenAIBackend
from metajudge.config import BackendConfig, OpenAIOptions, load_config
from metajudge.judging.readout import SCORE_LABELS, readouts_not_run
from metajudge.judging.scorers import Outcome, ReadoutPolicy, RubricJudge
from metajudge.records import (
    Capabilities,
    Completion,
    Failure,
    FailureKind,
    GenerationRequest,
    LabelScores,
    Message,
    SamplingParams,
    ScoreRequest,
)
from metajudge.stages.runner import Step
from metajudge.store import ConfigMismatchError
from metajudge.templates import load_template
from tests.fault_server import FaultServer

ROOT = Path(__file__).resolve().parents[2]
#: how vLLM reports a token that the structured-outputs regex masks out
MASKED = -9999.0


def _backend(url: str, **opts: object) -> OpenAIBackend:
    options = OpenAIOptions(base_url=url, timeout_s=5.0, max_retries=1, backoff_s=0.01,
                            prefill=True, logprobs=True, **opts)  # type: ignore[arg-type]
    return OpenAIBackend(BackendConfig(kind="openai", model="fake-model", openai=options))


def _step(token: str, logprob: float, top: dict[str, float]) -> dict[str, Any]:
    return {"token": token, "logprob": logprob,
            "top_logprobs": [{"token": t, "logprob": lp} for t, lp in top.items()]}


def _guided_answer(body: dict[str, Any]) -> dict[str, Any]:
    """What vLLM answers under the regex ' (0|1|2|3|4|5)' for a model that would rather write
    'The' or ' 4' after 'Score:': the space first (the only token allowed), then a digit, with
    every token the regex disallows at about -9999."""
    first = _step(" ", 0.0, {" ": 0.0, "The": MASKED, " 4": MASKED, "4": MASKED})
    second = _step("4", math.log(0.6), {"4": math.log(0.6), "5": math.log(0.3),
                                        "3": math.log(0.1), " 4": MASKED, "4.": MASKED,
                                        "\n": MASKED})
    return {"message": {"role": "assistant", "content": " 4"},
            "logprobs": {"content": [first, second]}, "finish_reason": "length"}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("guided", [True, False])
def test_a_guided_readout_sends_the_regex_and_reads_the_masked_steps(guided: bool) -> None:
    request = ScoreRequest(id="r0", messages=(Message(role="user", content="Judge this."),),
                           prefill="Clear and relevant.\nScore: ", labels=SCORE_LABELS)
    with FaultServer(reply=_guided_answer) as server, \
            _backend(server.url, structured_outputs=guided) as backend:
        result = backend.score_labels([request])[0]
        settings = readouts_not_run("judge", {"probability_weighted": True},
                                    backend.capabilities, backend.fingerprint)
    (body,) = server.bodies
    assert body["messages"][-1] == {"role": "assistant", "content": "Clear and relevant.\nScore:"}
    assert body["continue_final_message"] is True and body["max_tokens"] == 2
    if guided:
        assert body["structured_outputs"] == {"regex": " (0|1|2|3|4|5)"}
        assert settings == {"readouts_guided": True}
    else:
        assert "structured_outputs" not in body and settings == {}
    assert isinstance(result, LabelScores) and result.note is None
    assert result.probs == pytest.approx((0.0, 0.0, 0.0, 0.1, 0.6, 0.3))


@pytest.mark.timeout(120)
def test_the_eft_judge_records_readouts_that_cannot_run_and_refuses_a_toggle(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from metajudge.stages.eft import JUDGMENTS, RankedRow, run_eft_judgments
    from metajudge.store import Store

    rows = [RankedRow.model_validate({"prompt_id": "p0", "prompt": "Name a colour.", "replies": [
        {"message_id": "m0", "text": "Blue.", "rank": 0},
        {"message_id": "m1", "text": "Cheese.", "rank": 1}]})]
    sets = ["backend.kind=openai", "backend.model=fake-model", "eft.judgments_per_reply=1",
            "eft.max_tokens=8", "judge.forced_readout=true", "runner.retry_delay_s=0"]
    off = ["backend.openai.prefill=false", "backend.openai.logprobs=false"]
    on = ["backend.openai.prefill=true", "backend.openai.logprobs=true"]
    with FaultServer() as server:
        url = f"backend.openai.base_url={server.url}"
        for toggle in (off, on):
            config = load_config(ROOT / "configs" / "tiny.yaml", [*sets, url, *toggle])
            store = Store.open(tmp_path / "eft", config)
            try:
                with caplog.at_level(logging.WARNING), OpenAIBackend(config.backend) as backend:
                    if toggle is off:
                        run_eft_judgments(store, backend, rows, progress=False)
                        continue
                    with pytest.raises(ConfigMismatchError, match="readouts_not_run"):
                        run_eft_judgments(store, backend, rows, progress=False)
            finally:
                store.close()
            assert (store.settings(JUDGMENTS) or {})["readouts_not_run"] == ["forced_readout"]
            assert caplog.text.count("cannot score labels") == 1
            assert "eft judge: forced_readout" in caplog.text


def test_a_failed_weighted_readout_keeps_its_reason_and_warns_once(
        caplog: pytest.LogCaptureFixture) -> None:
    """paper.yaml: probability_weighted on, forced_readout off. A parsed score whose read-out
    fails keeps the score, with the read-out's note or failure in readout_error."""
    caps = Capabilities(logprobs=True, max_top_logprobs=20, seeds=True, prefill=True,
                        label_scores=True)
    judge = RubricJudge(load_template("judge"), ReadoutPolicy(False, True), caps)

    def outcome(finished: Outcome | Failure) -> Any:  # the stage would make its record of it
        return finished

    def judged(n: int, readout: LabelScores | Failure) -> Outcome:
        request = GenerationRequest(id=f"r{n}", messages=judge.messages("Q?", "A."),
                                    params=SamplingParams(max_tokens=8))
        first = judge.start(request, outcome, outcome)
        step = first.then(Completion(request_id=request.id, text="Clear.\nScore: 4",
                                     finish_reason="stop", prompt_tokens=5,
                                     completion_tokens=4))
        assert isinstance(step, Step) and isinstance(step.request, ScoreRequest)
        return step.then(readout)  # type: ignore[return-value]

    with caplog.at_level(logging.WARNING, logger="metajudge.judging.scorers"):
        note = judged(0, LabelScores(request_id="r0", probs=None, note="no label token among "
                                     "the alternatives (read up to step 1)"))
        failed = judged(1, Failure(request_id="r1", kind=FailureKind.BAD_REQUEST,
                                   message="HTTP 400: no logprobs", retryable=False))
        read = judged(2, LabelScores(request_id="r2", probs=(0, 0, 0, 0, 0.5, 0.5)))
    assert (note.value, note.source, note.prob_score) == (4.0, "parsed", None)
    assert note.readout_error == "no label token among the alternatives (read up to step 1)"
    assert failed.readout_error == "failed: bad_request: HTTP 400: no logprobs"
    assert (read.prob_score, read.readout_error) == (4.5, None)
    assert judge.readout_failures == 2
    assert caplog.text.count("probability-weighted read-out") == 1 and "r0" in caplog.text


def test_the_judgment_record_carries_the_readout_error() -> None:
    from metajudge.records import BackendFingerprint, Judgment, Provenance

    provenance = Provenance(backend=BackendFingerprint(kind="openai", model="m"),
                            params=SamplingParams(), seed=0, sample_index=0)
    judgment = Judgment(id="x@j0", response_id="x", prompt_id="p", iteration=1, index=0,
                        text="Score: 4", score=4.0, score_source="parsed",
                        readout_error="failed: timeout: t", finish_reason="stop",
                        prompt_tokens=1, completion_tokens=1, provenance=provenance)
    assert json.loads(judgment.model_dump_json())["readout_error"] == "failed: timeout: t"
