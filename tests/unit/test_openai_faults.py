"""The OpenAI-compatible backend against a fault-injecting server on 127.0.0.1."""

from __future__ import annotations

import time

import pytest

from metajudge.backends.openai_server import OpenAIBackend
from metajudge.config import BackendConfig, OpenAIOptions
from metajudge.records import (
    Completion,
    Failure,
    FailureKind,
    GenerationRequest,
    Message,
    SamplingParams,
)
from tests.fault_server import FaultServer


def _backend(url: str, **opts: object) -> OpenAIBackend:
    options = OpenAIOptions(base_url=url, timeout_s=3.0, max_retries=2, backoff_s=0.01,
                            concurrency=8, **opts)
    return OpenAIBackend(BackendConfig(kind="openai", model="fake-model", openai=options))


def _request(i: int, text: str) -> GenerationRequest:
    return GenerationRequest(id=f"r{i}", messages=(Message(role="user", content=text),),
                             params=SamplingParams(max_tokens=8), seed=i)


# fault -> (expected result type, failure kind, attempts the server sees)
CASES = {
    "": (Completion, None, 1),
    "FAULT 500x2": (Completion, None, 3),
    "FAULT 429x1": (Completion, None, 2),
    "FAULT malformedx1": (Completion, None, 2),
    "FAULT missingx2": (Completion, None, 3),
    "FAULT resetx1": (Completion, None, 2),
    "FAULT delay:0.2": (Completion, None, 1),
    "FAULT 500x5": (Failure, FailureKind.SERVER_ERROR, 3),
    "FAULT 429x9": (Failure, FailureKind.RATE_LIMITED, 3),
    "FAULT malformedx9": (Failure, FailureKind.MALFORMED_RESPONSE, 3),
    "FAULT resetx9": (Failure, FailureKind.CONNECTION, 3),
    "FAULT hang": (Failure, FailureKind.TIMEOUT, 3),
    "FAULT delay:10": (Failure, FailureKind.TIMEOUT, 3),
    "FAULT 400": (Failure, FailureKind.BAD_REQUEST, 1),
}


@pytest.mark.timeout(60)
def test_every_request_ends_as_result_or_typed_failure() -> None:
    texts = [f"q{i} {fault}" for i, fault in enumerate(list(CASES) * 3)]
    requests = [_request(i, t) for i, t in enumerate(texts)]
    seen: list[int] = []
    with FaultServer() as server, _backend(server.url) as backend:
        results = backend.generate(requests, on_result=lambda i, r: seen.append(i))
    assert len(results) == len(requests)
    assert sorted(seen) == list(range(len(requests)))  # each reported exactly once
    for request, result in zip(requests, results, strict=True):
        fault = request.messages[0].content.split(" ", 1)[1] if " " in request.messages[
            0].content else ""
        kind, failure_kind, attempts = CASES[fault]
        assert result.request_id == request.id
        assert isinstance(result, kind), (fault, result)
        assert server.attempts[request.messages[0].content] == attempts, fault
        if isinstance(result, Failure):
            assert result.kind is failure_kind
            assert result.attempts == attempts
            assert result.retryable == (failure_kind is not FailureKind.BAD_REQUEST)
        else:
            assert result.text == f"echo: {request.messages[0].content}"


@pytest.mark.timeout(30)
def test_unreachable_server_gives_connection_failures_quickly() -> None:
    with FaultServer() as server:
        url = server.url
    backend = _backend(url)  # the port is closed now
    started = time.monotonic()
    results = backend.generate([_request(i, "x") for i in range(5)])
    assert all(isinstance(r, Failure) and r.kind is FailureKind.CONNECTION for r in results)
    assert time.monotonic() - started < 20


def test_api_key_is_sent_but_never_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MJ_TEST_KEY", "sk-very-secret")
    with FaultServer() as server:
        backend = _backend(server.url + "?token=zzz", api_key_env="MJ_TEST_KEY")
        dumped = backend.fingerprint.model_dump_json()
    assert "sk-very-secret" not in dumped and "zzz" not in dumped
    assert backend.fingerprint.server_url == server.url
