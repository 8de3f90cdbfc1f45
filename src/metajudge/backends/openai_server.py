"""Any OpenAI-compatible chat server: vLLM serve, SGLang, ``transformers serve``, llama.cpp, OpenAI.

Requests are sent concurrently (``openai.concurrency`` at a time). Each attempt is bounded by
``openai.timeout_s`` in total; timeouts, connection errors, 429 and 5xx answers and malformed
bodies are retried up to ``openai.max_retries`` times with exponential backoff (honouring
``Retry-After``), then returned as typed :class:`~metajudge.records.Failure` values. Every request
ends as a completion or a failure; nothing raises, nothing hangs.

The API key is read from the environment variable ``openai.api_key_env`` at call time and never
enters records, logs or saved configs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import random
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
    def __init__(self, kind: FailureKind, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.kind, self.message, self.retry_after = kind, message, retry_after


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


class OpenAIBackend(Backend):
    kind = "openai"

    def __init__(self, config: BackendConfig):
        self._opts: OpenAIOptions = config.openai
        self._model_name = self._opts.served_model or config.model
        self._url = self._opts.base_url.rstrip("/") + "/chat/completions"
        self._fingerprint = BackendFingerprint(
            kind=self.kind, model=self._model_name, revision=config.revision,
            server_url=public_url(self._opts.base_url),
        )

    @classmethod
    def from_config(cls, config: BackendConfig) -> OpenAIBackend:
        return cls(config)

    @property
    def fingerprint(self) -> BackendFingerprint:
        return self._fingerprint

    @property
    def capabilities(self) -> Capabilities:
        # servers differ; logprobs are used when the answer carries them
        return Capabilities(logprobs=True, max_top_logprobs=20, seeds=True)

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
        gate = asyncio.Semaphore(self._opts.concurrency)
        limits = httpx.Limits(max_connections=self._opts.concurrency)
        timeout = httpx.Timeout(self._opts.timeout_s)
        async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:

            async def one(index: int) -> None:
                async with gate:
                    result = await self._with_retries(client, requests[index])
                results[index] = result
                if on_result is not None:
                    on_result(index, result)

            await asyncio.gather(*(one(i) for i in range(len(requests))))
        return [r for r in results if r is not None]

    async def _with_retries(
        self, client: httpx.AsyncClient, request: GenerationRequest
    ) -> GenerationResult:
        attempts = self._opts.max_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return await asyncio.wait_for(self._attempt(client, request),
                                              self._opts.timeout_s)
            except (TimeoutError, asyncio.TimeoutError):
                error = _AttemptFailed(FailureKind.TIMEOUT,
                                       f"no complete answer within {self._opts.timeout_s}s")
            except _AttemptFailed as exc:
                error = exc
            retryable = error.kind in RETRYABLE_KINDS
            if not retryable or attempt == attempts:
                return Failure(request_id=request.id, kind=error.kind, message=error.message,
                               retryable=retryable, attempts=attempt)
            delay = min(self._opts.max_backoff_s, self._opts.backoff_s * 2 ** (attempt - 1))
            if error.retry_after is not None:
                delay = min(self._opts.max_backoff_s, max(delay, error.retry_after))
            log.debug("request %s attempt %d: %s; retrying in %.2fs", request.id, attempt,
                      error.message, delay)
            await asyncio.sleep(delay * (0.5 + random.random() / 2))
        raise AssertionError("unreachable")

    async def _attempt(self, client: httpx.AsyncClient, request: GenerationRequest
                       ) -> Completion:
        body = self._body(request)
        headers = {}
        key = os.environ.get(self._opts.api_key_env) if self._opts.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        try:
            answer = await client.post(self._url, json=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise _AttemptFailed(FailureKind.TIMEOUT, f"timeout: {type(exc).__name__}") from None
        except httpx.TransportError as exc:  # connect errors, resets, protocol errors
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
    return _AttemptFailed(FailureKind.BAD_REQUEST, f"HTTP {status}: {text}")


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
