"""The OpenAI-compatible backend against a fault-injecting server on 127.0.0.1."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from metajudge.backends.openai_server import OpenAIBackend, ServerRefused
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


def _backend(url: str | list[str], **opts: object) -> OpenAIBackend:
    options = OpenAIOptions(**{"base_url": url, "timeout_s": 3.0, "max_retries": 2,
                               "backoff_s": 0.01, "concurrency": 8, **opts})
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


OPEN_FILES_CHILD = r"""
import json, resource, sys
from metajudge.backends.openai_server import OpenAIBackend
from metajudge.config import BackendConfig, OpenAIOptions
from metajudge.records import Completion, GenerationRequest, Message, SamplingParams
options = OpenAIOptions(base_url=sys.argv[1], timeout_s=60.0, max_retries=0, concurrency=300)
backend = OpenAIBackend(BackendConfig(kind="openai", model="fake-model", openai=options))
requests = [GenerationRequest(id=f"r{i}", messages=(Message(role="user", content=f"q{i} FAULT "
            "delay:1.5"),), params=SamplingParams(max_tokens=8), seed=i) for i in range(300)]
results = backend.generate(requests)
print(json.dumps({"soft": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                  "done": sum(isinstance(r, Completion) for r in results),
                  "errors": sorted({r.message[:60] for r in results
                                    if not isinstance(r, Completion)})[:3]}))
"""


@pytest.mark.timeout(120)
def test_many_requests_in_flight_raise_the_open_files_limit() -> None:
    """300 requests in flight under a soft RLIMIT_NOFILE of 128 (a hard one far above): the
    backend raises its soft limit, and every connection opens (issue 21, item 4)."""
    import json
    import resource
    import subprocess
    import sys

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 1024:
        pytest.skip(f"the hard open-files limit here is {hard}")

    def low() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard))

    with FaultServer() as server:
        server.httpd.socket.listen(512)  # the test's server takes all 300 connections at once
        proc = subprocess.run([sys.executable, "-c", OPEN_FILES_CHILD, server.url],
                              capture_output=True, text=True, timeout=100, preexec_fn=low)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["done"] == 300, out
    assert out["soft"] == hard


@pytest.mark.timeout(60)
def test_a_lost_request_is_sent_again_to_another_replica() -> None:
    """A replica that resets every connection but stays in the rotation (eject_after is high):
    each request lost on it goes to the other replica next, never back to it (issue 22)."""
    with FaultServer(always=["reset"]) as sick, FaultServer() as good:
        backend = _backend([sick.url, good.url], eject_after=1000)
        results = backend.generate([_request(i, f"q{i}") for i in range(40)])
    assert all(isinstance(r, Completion) for r in results)
    assert sum(sick.attempts.values()) > 0  # the sick replica did draw work
    assert max(sick.attempts.values()) == 1, sick.attempts.most_common(3)


@pytest.mark.timeout(60)
def test_with_every_replica_out_of_the_rotation_requests_say_so() -> None:
    """The last replica leaves the rotation too; requests wait for a health check to bring one
    back, then end as retryable connection failures that say every replica is out."""
    with FaultServer() as a, FaultServer() as b:
        urls = [a.url, b.url]
    backend = _backend(urls, health_interval_s=0.2)  # both ports are closed now
    results = backend.generate([_request(i, "x") for i in range(6)])
    assert all(isinstance(r, Failure) and r.kind is FailureKind.CONNECTION and r.retryable
               for r in results)
    assert all("every replica is out of the rotation" in r.message for r in results), results
    assert [s["in_rotation"] for s in backend.stats()["replicas"]] == [False, False]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("status", "fix"), [
    ("401", "set the environment variable MJ_KEY (openai.api_key_env) to a valid key"),
    ("403", "may not use model 'fake-model'"),
    ("404", "check backend.model or openai.served_model"),
])
def test_a_wrong_key_or_model_stops_the_batch_and_says_what_to_fix(status: str, fix: str
                                                                   ) -> None:
    """401 / 403 / 404: no request can succeed; ``generate`` raises at once (the stage's error)
    and reports no failure for any request (issue 22, item 8)."""
    requests = [_request(i, f"q{i} FAULT delay:0.2") for i in range(30)]
    requests.insert(5, _request(99, f"q99 FAULT {status}"))
    reported: list[object] = []
    with FaultServer() as server:
        backend = _backend(server.url, api_key_env="MJ_KEY", concurrency=4)
        started = time.monotonic()
        with pytest.raises(ServerRefused, match=re.escape(fix)) as caught:
            backend.generate(requests, on_result=lambda i, r: reported.append(r))
        assert time.monotonic() - started < 2.0  # stopped at once, not after 30 x 0.2 s / 4
        assert server.attempts[f"q99 FAULT {status}"] == 1  # not retried
    assert f"HTTP {status}" in str(caught.value)
    assert not any(isinstance(r, Failure) for r in reported)


@pytest.mark.timeout(300)
def test_a_wrong_key_stops_the_stage_through_the_cli(tmp_path: Path) -> None:
    """Through the CLI: `metajudge generate` against a server that answers 401 exits with the
    fix named, and leaves no final failure behind; a rerun with the key set then continues."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "metajudge.cli", "generate", "--out", str(out),
               "--limit", "4", "-k", "1", "--no-progress", "--set", "backend.kind=openai",
               "--set", "backend.openai.api_key_env=MJ_KEY", "--set",
               "backend.openai.logprobs=false", "--set", "backend.openai.max_retries=1",
               "--set", "generation.max_tokens=8"]
    with FaultServer(always=["401"]) as server:
        command += ["--set", f"backend.openai.base_url={server.url}"]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=240,
                              env={**os.environ, "MJ_KEY": "wrong"})
        tried = sum(server.attempts.values())
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "MJ_KEY" in proc.stderr and "HTTP 401" in proc.stderr
    assert tried <= 8  # the concurrency's first wave at most, nothing retried
    failures = out / "iter_01" / "responses.failures.jsonl"
    assert not failures.exists() or not failures.read_text().strip()
    with FaultServer() as server:  # the key is fixed: the stage runs through
        command[-1] = f"backend.openai.base_url={server.url}"
        done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len((out / "iter_01" / "responses.jsonl").read_text().splitlines()) == 4


@pytest.mark.timeout(300)
def test_a_readout_that_cannot_run_is_named_recorded_and_a_change_refused(tmp_path: Path
                                                                        ) -> None:
    """Issue 22, item 9, through the CLI: a server without label scoring (prefill and
    log-probabilities off, as for `transformers serve`) and a judge asked for read-outs. The
    stage log names it once, the settings file records that the read-outs did not run, and a
    resume on a server that can make them is refused by name instead of mixing both kinds."""
    import json

    out = tmp_path / "run"
    common = ["--no-progress", "--set", "backend.kind=openai", "--set",
              "backend.openai.api_key_env=MJ_KEY", "--set", "generation.max_tokens=8",
              "--set", "judge.judgments_per_response=1", "--set", "judge.forced_readout=true"]
    with FaultServer() as server:
        common += ["--set", f"backend.openai.base_url={server.url}"]
        cli = [sys.executable, "-m", "metajudge.cli"]
        gen = subprocess.run([*cli, "generate", "--out", str(out), "--limit", "3", "-k", "1",
                              *common], capture_output=True, text=True, timeout=240)
        assert gen.returncode == 0, gen.stderr[-2000:]
        off = ["--set", "backend.openai.prefill=false", "--set", "backend.openai.logprobs=false"]
        judge = subprocess.run([*cli, "judge", str(out), *common, *off], capture_output=True,
                               text=True, timeout=240)
        assert judge.returncode == 0, judge.stderr[-2000:]
        assert judge.stderr.count("cannot score labels") == 1, judge.stderr[-2000:]
        settings = json.loads((out / "iter_01" / "judgments.settings.json").read_text())
        assert settings["readouts_not_run"] == ["forced_readout", "probability_weighted"]
        on = ["--set", "backend.openai.prefill=true", "--set", "backend.openai.logprobs=true"]
        again = subprocess.run([*cli, "judge", str(out), *common, *on], capture_output=True,
                               text=True, timeout=240)
    assert again.returncode == 2, again.stderr[-2000:]
    assert "readouts_not_run" in again.stderr
