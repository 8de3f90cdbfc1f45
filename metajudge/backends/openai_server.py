"""Any OpenAI-compatible chat server: vLLM serve, SGLang, ``transformers serve``, llama.cpp, OpenAI.

``openai.base_url`` is one server or a list of replicas. Each request goes to the replica in the
rotation with the fewest requests in flight. A replica that refuses connections leaves the
rotation at once, one that resets or times out ``openai.eject_after`` times in a row leaves it
too, and a health check every ``openai.health_interval_s`` brings it back; a request lost to a
replica is sent again to another at once, so nothing is lost, duplicated or left hanging. With
no replica left, requests end as retryable ``connection`` failures (the stage stops, and a rerun
continues). :meth:`OpenAIBackend.stats` tells how many requests each replica served.

Requests are sent concurrently (``openai.concurrency`` per replica). Each attempt is bounded by
``openai.timeout_s`` in total; timeouts, connection errors, 429 and 5xx answers and malformed
bodies are retried up to ``openai.max_retries`` times with exponential backoff (honouring
``Retry-After``), then returned as typed :class:`~metajudge.records.Failure` values. Every request
ends as a completion or a failure; nothing hangs. The one exception is a 401, 403 or 404
answer (a wrong key or model name, which no request can get past): ``generate`` stops at once and
raises :class:`ServerRefused` saying what to fix, and none of the batch's requests is recorded
as failed.

The API key is read from the environment variable ``openai.api_key_env`` at call time and never
enters records, logs or saved configs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import random
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from metajudge.backends.base import Backend, ResultCallback, check_unique_ids
from metajudge.config import BackendConfig, OpenAIOptions
from metajudge.records import (
    RETRYABLE_KINDS,
    BackendFingerprint,
    Capabilities,
    Completion,
    Failure,
    FailureKind,
    GenerationRequest,
    GenerationResult,
    TokenLogprob,
    TopLogprob,
)

log = logging.getLogger(__name__)


class _AttemptFailed(Exception):
    def __init__(self, kind: FailureKind, message: str, retry_after: float | None = None,
                 refused: bool = False, status: int | None = None):
        super().__init__(message)
        self.kind, self.message, self.retry_after = kind, message, retry_after
        self.refused, self.status = refused, status


class ServerRefused(ValueError):
    """HTTP 401, 403 or 404: a wrong API key, a key without access, or a wrong model name or URL.
    No request can succeed, so this is the stage's error, not a failure of one request: the
    batch stops at once, none of its requests is recorded as failed, and the message says what
    to fix."""


#: statuses that no request of the batch can get past
REFUSALS = (401, 403, 404)


def public_url(url: str) -> str:
    """The server URL without credentials or query string, fit for records.

    >>> public_url("https://user:secret@api.example.com/v1?key=abc")
    'https://api.example.com/v1'
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


#: descriptors kept free beside the connections (stage files, logs, the event loop, servers)
FD_HEADROOM = 256


def raise_open_files_limit(connections: int) -> int:
    """Make room for ``connections`` sockets at once: raise this process's soft
    ``RLIMIT_NOFILE`` up to its hard limit when they and :data:`FD_HEADROOM` do not fit (a soft
    limit of 1,024 against paper.yaml's 1,024 requests in flight per replica turns into
    connection failures). Servers started afterwards inherit the limit. Returns the soft limit.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = connections + FD_HEADROOM
    if soft == resource.RLIM_INFINITY or soft >= want:
        return soft
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        log.info("open files: soft limit raised from %d to %s for %d connections", soft,
                 "unlimited" if hard == resource.RLIM_INFINITY else hard, connections)
        soft = hard
    if soft != resource.RLIM_INFINITY and soft < want:
        log.warning("open files: the hard limit %d is below the %d that %d requests in flight "
                    "need; some will fail to connect. Raise it (ulimit -Hn, limits.conf) or "
                    "lower openai.concurrency", soft, want, connections)
    return soft


class _Replica:
    """One server of the rotation and what it did."""

    def __init__(self, url: str):
        self.root = url.rstrip("/")
        self.public = public_url(url)
        self.in_flight = 0
        self.in_row = 0  # consecutive resets or timeouts
        self.in_rotation = True
        self.served = 0
        self.failed_attempts = 0
        self.left_rotation = 0

    def stats(self) -> dict[str, Any]:
        return {"url": self.public, "served": self.served,
                "failed_attempts": self.failed_attempts, "left_rotation": self.left_rotation,
                "in_rotation": self.in_rotation}


class OpenAIBackend(Backend):
    kind = "openai"

    def __init__(self, config: BackendConfig):
        self._opts: OpenAIOptions = config.openai
        self._model_name = self._opts.served_model or config.model
        self._replicas = [_Replica(url) for url in self._opts.urls]
        raise_open_files_limit(self._opts.concurrency * len(self._replicas))
        self._fingerprint = BackendFingerprint(  # the model's name, not what it is served as
            kind=self.kind, model=config.model, revision=config.revision,
            server_url=" ".join(r.public for r in self._replicas),
        )

    @property
    def fingerprint(self) -> BackendFingerprint:
        return self._fingerprint

    @property
    def capabilities(self) -> Capabilities:
        opts = self._opts
        return Capabilities(logprobs=opts.logprobs, max_top_logprobs=20 if opts.logprobs else 0,
                            seeds=True, prefill=opts.prefill,
                            label_scores=opts.prefill and opts.logprobs,
                            guided=opts.structured_outputs)

    def stats(self) -> dict[str, Any]:
        """Requests each replica served, and which left the rotation (since the last call)."""
        out = {"replicas": [r.stats() for r in self._replicas],
               "left_rotation": [r.public for r in self._replicas if r.left_rotation]}
        for replica in self._replicas:
            replica.served = replica.failed_attempts = replica.left_rotation = 0
        return out

    def generate(
        self, requests: Sequence[GenerationRequest], on_result: ResultCallback | None = None
    ) -> list[GenerationResult]:
        check_unique_ids(requests)
        if not requests:
            return []
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self._run_all(requests, on_result))
        # called from a running event loop (a notebook): run ours in a worker thread
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, self._run_all(requests, on_result)).result()

    async def _run_all(
        self, requests: Sequence[GenerationRequest], on_result: ResultCallback | None
    ) -> list[GenerationResult]:
        results: list[GenerationResult | None] = [None] * len(requests)
        slots = self._opts.concurrency * len(self._replicas)
        gate = asyncio.Semaphore(slots)
        limits = httpx.Limits(max_connections=slots)
        timeout = httpx.Timeout(self._opts.timeout_s)
        refused: list[ServerRefused] = []
        async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
            health = asyncio.create_task(self._health_checks(client))

            async def one(index: int) -> None:
                async with gate:
                    if refused:
                        return
                    try:
                        result = await self._with_retries(client, requests[index])
                    except ServerRefused as exc:  # the stage's error: stop every request
                        refused.append(exc)
                        for task in tasks:
                            if task is not asyncio.current_task():
                                task.cancel()
                        return
                results[index] = result
                if on_result is not None:
                    on_result(index, result)

            tasks = [asyncio.create_task(one(i)) for i in range(len(requests))]
            try:
                await asyncio.gather(*tasks, return_exceptions=True)
            finally:
                health.cancel()
        if refused:
            raise refused[0]
        return [r for r in results if r is not None]

    async def _pick(self, lost_on: _Replica | None = None) -> _Replica | None:
        """The replica in the rotation with the fewest requests in flight, other than
        ``lost_on`` (where the request was just lost) while another is in the rotation; with
        none in the rotation, wait up to two health-check intervals for one to come back."""
        deadline = time.monotonic() + 2 * self._opts.health_interval_s
        while True:
            live = [r for r in self._replicas if r.in_rotation]
            if live:
                others = [r for r in live if r is not lost_on]
                return min(others or live, key=lambda r: (r.in_flight, r.served))
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.05)

    def _eject(self, replica: _Replica, why: str, refused: bool) -> None:
        """Take a replica out of the rotation. The last one leaves only when nothing listens
        there any more (``refused``): requests then wait for a health check to bring one back,
        and end as retryable failures if none comes; a last replica that resets, times out or
        answers 5xx stays, and its requests are retried with backoff."""
        last = not any(r.in_rotation for r in self._replicas if r is not replica)
        if replica.in_rotation and (refused or not last):
            replica.in_rotation = False
            replica.left_rotation += 1
            log.warning("replica %s leaves the rotation: %s", replica.public, why)

    async def _health_checks(self, client: httpx.AsyncClient) -> None:
        """Bring replicas back into the rotation once they answer their health check."""
        while True:
            await asyncio.sleep(self._opts.health_interval_s)
            for replica in self._replicas:
                if not replica.in_rotation and await self._healthy(client, replica):
                    replica.in_rotation, replica.in_row = True, 0
                    log.warning("replica %s is healthy again and rejoins the rotation",
                                replica.public)

    async def _healthy(self, client: httpx.AsyncClient, replica: _Replica) -> bool:
        server = replica.root.removesuffix("/v1")
        for url in (server + "/health", replica.root + "/models"):
            try:
                answer = await client.get(url, timeout=min(5.0, self._opts.timeout_s))
            except httpx.HTTPError:
                return False
            if answer.status_code == 200:
                return True
        return False

    async def _with_retries(
        self, client: httpx.AsyncClient, request: GenerationRequest
    ) -> GenerationResult:
        attempts = moved = 0
        lost_on: _Replica | None = None
        while True:
            replica = await self._pick(lost_on)
            lost_on = None
            if replica is None:
                return Failure(request_id=request.id, kind=FailureKind.CONNECTION,
                               retryable=True, attempts=attempts,
                               message="every replica is out of the rotation: "
                               + ", ".join(r.public for r in self._replicas))
            replica.in_flight += 1
            try:
                result = await asyncio.wait_for(self._attempt(client, replica, request),
                                                self._opts.timeout_s)
                error = None
            except (TimeoutError, asyncio.TimeoutError):
                error = _AttemptFailed(FailureKind.TIMEOUT,
                                       f"no complete answer within {self._opts.timeout_s}s")
            except _AttemptFailed as exc:
                error = exc
            finally:
                replica.in_flight -= 1
            if error is None:
                replica.served += 1
                replica.in_row = 0
                return result
            if error.status in REFUSALS:
                raise ServerRefused(self._refusal(error, replica))
            replica.failed_attempts += 1
            lost = error.kind in (FailureKind.CONNECTION, FailureKind.TIMEOUT)
            if lost or error.kind is FailureKind.SERVER_ERROR:
                replica.in_row += 1  # a sick replica fails fast and would draw all the work
                if error.refused or replica.in_row >= self._opts.eject_after:
                    self._eject(replica, error.message, error.refused)
            else:
                replica.in_row = 0  # it answered: alive
            others = any(r.in_rotation and r is not replica for r in self._replicas)
            if lost and others and moved < len(self._replicas) * (self._opts.max_retries + 1):
                moved += 1  # the replica is the problem, not the request: try another now
                lost_on = replica
                continue
            attempts += 1
            retryable = error.kind in RETRYABLE_KINDS
            if not retryable or attempts > self._opts.max_retries:
                return Failure(request_id=request.id, kind=error.kind, message=error.message,
                               retryable=retryable, attempts=attempts)
            delay = min(self._opts.max_backoff_s, self._opts.backoff_s * 2 ** (attempts - 1))
            if error.retry_after is not None:
                delay = min(self._opts.max_backoff_s, max(delay, error.retry_after))
            log.debug("request %s attempt %d on %s: %s; retrying in %.2fs", request.id,
                      attempts, replica.public, error.message, delay)
            await asyncio.sleep(delay * (0.5 + random.random() / 2))

    def _refusal(self, error: _AttemptFailed, replica: _Replica) -> str:
        """What to fix after a 401, 403 or 404."""
        env = self._opts.api_key_env
        key = f"the environment variable {env} (openai.api_key_env)" if env else \
            "openai.api_key_env (unset: no key is sent)"
        fix = {
            401: f"the server did not accept the API key: set {key} to a valid key",
            403: f"the API key may not use model {self._model_name!r}: set {key} to a key "
                 "with access, or serve another model",
            404: f"the server has no model {self._model_name!r} or no chat completions at "
                 f"{replica.public}: check backend.model or openai.served_model (the name the "
                 "server serves it under) and openai.base_url (it ends in /v1)",
        }[error.status or 404]
        return f"{replica.public} answered {error.message} -- {fix}."

    async def _attempt(self, client: httpx.AsyncClient, replica: _Replica,
                       request: GenerationRequest) -> Completion:
        body = self._body(request)
        headers = {}
        key = os.environ.get(self._opts.api_key_env) if self._opts.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        try:
            answer = await client.post(replica.root + "/chat/completions", json=body,
                                       headers=headers)
        except httpx.TimeoutException as exc:
            raise _AttemptFailed(FailureKind.TIMEOUT, f"timeout: {type(exc).__name__}") from None
        except httpx.ConnectError as exc:  # nobody listening: the server is down
            raise _AttemptFailed(FailureKind.CONNECTION, f"{type(exc).__name__}: {exc}"[:300],
                                 refused=True) from None
        except httpx.TransportError as exc:  # resets, protocol errors
            raise _AttemptFailed(FailureKind.CONNECTION,
                                 f"{type(exc).__name__}: {exc}"[:300]) from None
        if answer.status_code != 200:
            raise _classify_status(answer)
        try:
            return _parse_completion(request.id, answer.json())
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise _AttemptFailed(FailureKind.MALFORMED_RESPONSE,
                                 f"unreadable answer body: {exc!s:.200}") from None

    def _body(self, request: GenerationRequest) -> dict[str, Any]:
        p = request.params
        body: dict[str, Any] = {
            "model": self._model_name,
            "messages": [m.model_dump() for m in request.messages]
            + ([{"role": "assistant", "content": request.prefill}] if request.prefill else []),
            "temperature": p.temperature,
            "top_p": p.top_p,
            "max_tokens": p.max_tokens,
            "seed": request.seed,
            "stream": False,
        }
        if request.prefill:  # vLLM / SGLang extension: continue the last assistant message
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
        if p.logprobs:
            body["logprobs"] = True
            if p.top_logprobs:
                body["top_logprobs"] = p.top_logprobs
        if request.guide is not None and self._opts.structured_outputs:
            body["structured_outputs"] = {"regex": request.guide}  # vLLM >= 0.11
        return body


def _classify_status(answer: httpx.Response) -> _AttemptFailed:
    status = answer.status_code
    text = answer.text[:300]
    if status == 429:
        retry_after = answer.headers.get("retry-after")
        try:
            seconds = float(retry_after) if retry_after is not None else None
        except ValueError:
            seconds = None
        return _AttemptFailed(FailureKind.RATE_LIMITED, f"HTTP 429: {text}", seconds)
    if status >= 500:
        return _AttemptFailed(FailureKind.SERVER_ERROR, f"HTTP {status}: {text}")
    if status in (400, 413) and ("context" in text.lower() or "too long" in text.lower()):
        return _AttemptFailed(FailureKind.CONTEXT_LENGTH, f"HTTP {status}: {text}")
    return _AttemptFailed(FailureKind.BAD_REQUEST, f"HTTP {status}: {text}", status=status)


def _parse_completion(request_id: str, data: Any) -> Completion:
    choice = data["choices"][0]
    text = choice["message"]["content"]
    if not isinstance(text, str):
        raise TypeError("message.content is not a string")
    finish = "length" if choice.get("finish_reason") == "length" else "stop"
    usage = data.get("usage") or {}
    logprobs = None
    content = (choice.get("logprobs") or {}).get("content")
    if content:
        logprobs = tuple(
            TokenLogprob(
                token=step["token"], logprob=float(step["logprob"]),
                top=tuple(TopLogprob(token=t["token"], logprob=float(t["logprob"]))
                          for t in step.get("top_logprobs") or ()),
            )
            for step in content
        )
    return Completion(
        request_id=request_id, text=text, finish_reason=finish,
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        logprobs=logprobs,
    )
