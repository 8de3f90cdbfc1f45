"""A small fault-injecting OpenAI-compatible server for tests, on 127.0.0.1 only.

The last user message says what to do, e.g. ``FAULT 500x2`` (answer HTTP 500 to the first two
attempts, then succeed). Faults: ``500xN``, ``429xN`` (with Retry-After: 0), ``malformedxN``
(HTTP 200 with a body that is not JSON), ``missingxN`` (JSON without ``choices``), ``resetxN``
(close the connection without answering), ``delay:S`` (answer after S seconds), ``hang`` (never
answer), ``400`` (a non-retryable client error), ``401``, ``403``, ``404`` (a wrong key or
model). Anything else is answered at once: an echo of the text, or what ``reply`` makes of the
request's body (e.g. a text with log-probabilities). Every request body is kept in ``bodies``.
Attempts are counted per request id (the message text).
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FaultServer:
    """``always``: a list of faults applied in turn to every request whatever it says (a sick
    replica: e.g. ["reset", "500", "hang"]). ``reply``: the answer's choice (``message``,
    ``logprobs``, ``finish_reason``) made from a request's body, instead of an echo."""

    def __init__(self, always: list[str] | None = None,
                 reply: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        self.attempts: Counter[str] = Counter()
        self.always = always or []
        self.reply = reply
        self.bodies: list[dict[str, Any]] = []
        self.answered = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                text = body["messages"][-1]["content"]
                with server._lock:
                    server.attempts[text] += 1
                    attempt = server.attempts[text]
                    server.bodies.append(body)
                match = re.search(r"FAULT (\S+)", text)
                fault = match.group(1) if match else ""
                if server.always:
                    with server._lock:
                        turn = sum(server.attempts.values())
                    fault = server.always[turn % len(server.always)] + "x999"
                    if fault == "hangx999":
                        fault = "hang"
                count = re.fullmatch(r"(\w+)x(\d+)", fault)
                if count and attempt <= int(count.group(2)):
                    kind = count.group(1)
                    if kind == "500":
                        return self._send(500, b'{"error": "boom"}')
                    if kind in ("401", "403", "404"):  # e.g. always=["401"]: a wrong key
                        return self._send(int(kind), b'{"error": "refused"}')
                    if kind == "429":
                        return self._send(429, b'{"error": "slow down"}', {"Retry-After": "0"})
                    if kind == "malformed":
                        return self._send(200, b'{"choices": [{"message": ')
                    if kind == "missing":
                        return self._send(200, b'{"object": "chat.completion"}')
                    if kind == "reset":
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                        return None
                if fault in ("400", "401", "403", "404"):
                    return self._send(int(fault), b'{"error": "refused: ' + fault.encode()
                                      + b'"}')
                if fault == "hang":
                    server._stop.wait(60)
                    return None
                if fault.startswith("delay:"):
                    server._stop.wait(float(fault.split(":")[1]))
                with server._lock:
                    server.answered += 1
                choice = server.reply(body) if server.reply else {
                    "message": {"role": "assistant", "content": f"echo: {text}"}}
                answer = {
                    "id": "x", "object": "chat.completion", "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop", **choice}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 2},
                }
                return self._send(200, json.dumps(answer).encode())

            def _send(self, status: int, payload: bytes, headers: dict | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

        class QuietServer(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                pass  # resets and hangs are deliberate

        self.httpd = QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FaultServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        time.sleep(0)
