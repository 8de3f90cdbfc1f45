"""The explorer's read-only HTTP server: the app's three static files and the JSON API, nothing
else.

Routes (every other path is 404, every method but GET and HEAD 405)::

    /  /app.js  /app.css                        the app (metajudge/viewer/static/)
    /api/overview.json                          the run overview
    /api/iter/<n>/prompts.json?q=&sort=&page=   a page of an iteration's prompts
    /api/iter/<n>/prompt/<hex id>.json          one prompt
    /api/harness.json                           the harness folders
    /api/harness/<kind>/<hex model>.json        one harness folder's questions
    /api/harness/<kind>/<hex model>/<hex id>.json   one question

Ids travel as the hex of their UTF-8 bytes, so no request path is ever joined to a file path:
the static files come from a fixed table and records from the index, which is why a path such as
``/../../etc/passwd`` (or any encoding of it) can only be 404. Answers carry a strict
Content-Security-Policy (scripts and styles from this origin only, no inline code, no framing).

Whatever the address bound (loopback, 0.0.0.0, ::), the server answers only requests whose
``Host`` names it by an IP address, by ``localhost`` (or a ``*.localhost`` name), or by a name
allowed with ``--allow-host``, on any port (a forwarded port, ``ssh -L 9000:127.0.0.1:8765``,
says ``localhost:9000``); any other name is 403 with the way out. A page whose own name was
rebound to this machine's address (DNS rebinding) sends that name, so it cannot read the run.

The index is extended every ``refresh_s`` seconds by a background thread, and before any
answer from the run when a stage file is not the one indexed (a ``--redo``, an append).
Each request reads through its own read-only SQLite connection, closed when it is answered
(``ThreadingHTTPServer`` starts a thread per request: a connection kept per thread would leak
one file per request), so open files and memory stay flat over a long session. A bad parameter
is a JSON 400, a run whose files change under a request a JSON 503, any other failure a JSON
500 (logged): a request is always answered.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import socket
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from metajudge.viewer import compare, queries
from metajudge.viewer import harness as harness_data
from metajudge.viewer.index import RunIndex, connect

log = logging.getLogger(__name__)

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/index.html": ("index.html", "text/html; charset=utf-8"),
          "/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/app.css": ("app.css", "text/css; charset=utf-8")}
_HEX = "((?:[0-9a-f]{2})+)"
ROUTES = [
    (re.compile(r"/api/overview\.json"), "overview"),
    (re.compile(r"/api/version\.json"), "version"),
    (re.compile(r"/api/iter/([0-9]{1,4})/prompts\.json"), "prompts"),
    (re.compile(rf"/api/iter/([0-9]{{1,4}})/prompt/{_HEX}\.json"), "prompt"),
    (re.compile(r"/api/harness\.json"), "harness"),
    (re.compile(rf"/api/harness/([a-z_]+)/{_HEX}\.json"), "harness_model"),
    (re.compile(rf"/api/harness/([a-z_]+)/{_HEX}/{_HEX}\.json"), "harness_item"),
]


def static_file(name: str) -> bytes:
    return (resources.files("metajudge.viewer") / "static" / name).read_bytes()


class BadRequest(ValueError):
    """A request the server cannot answer as asked (answered 400)."""


def unhex(text: str) -> str:
    try:
        return bytes.fromhex(text).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise BadRequest(f"{text[:40]}…: not the hex of UTF-8 text") from None


class Explorer:
    """What the server answers, without HTTP: shared by the server and the static bundle."""

    def __init__(self, run: Path | None, harness: Path | None, index_path: Path | None = None):
        self.run, self.harness = run, harness
        self.index = RunIndex(run, index_path) if run is not None else None
        self._local = threading.local()
        self._opened: set[sqlite3.Connection] = set()
        self._guard = threading.Lock()

    def update(self) -> None:
        if self.index is not None:
            self.index.update()

    def _from_run(self, ask: Any) -> Any:
        """``ask()`` on an index caught up with the run's files; when a record was not where the
        index said, once more after that file is indexed again (the second time, the
        :class:`~metajudge.viewer.queries.StaleIndex` is raised)."""
        assert self.index is not None
        self.index.catch_up(self.db())
        try:
            return ask()
        except queries.StaleIndex as exc:
            self.index.catch_up(self.db(), stale=exc.name)
            return ask()

    def db(self) -> sqlite3.Connection:
        """This thread's read-only connection, opened on first use; :meth:`request` closes it
        when the request is answered."""
        db = getattr(self._local, "db", None)
        if db is None:
            assert self.index is not None
            db = self._local.db = connect(self.index.path, readonly=True)
            with self._guard:
                self._opened.add(db)
        return db  # type: ignore[no-any-return]

    @contextmanager
    def request(self) -> Iterator[None]:
        """One request: the connection it opened is closed at its end (the server's threads
        live for one request each)."""
        try:
            yield
        finally:
            db = getattr(self._local, "db", None)
            if db is not None:
                self._local.db = None
                with self._guard:
                    self._opened.discard(db)
                db.close()

    def close(self) -> None:
        """Close every connection (SQLite then removes its -wal and -shm files)."""
        with self._guard:
            for db in self._opened:
                db.close()
            self._opened.clear()
        if self.index is not None and self.index.path.exists():
            connect(self.index.path).close()  # the last writer out folds the log back in

    def answer(self, route: str, groups: tuple[str, ...], params: dict[str, str]) -> Any:
        """The JSON answer of a route, or None when it names nothing."""
        if route.startswith("harness"):
            return self._harness(route, groups)
        run = self.run
        if route == "version":
            return {"version": self._from_run(lambda: queries.version(self.db()))
                    if run else "harness", "static": False}
        if route == "overview":
            data = self._from_run(lambda: queries.overview(self.db(), run)) if run else {
                "run": None, "iterations": [], "problems": []}
            data["harness"] = self.harness is not None
            return data
        if run is None:
            return None
        iteration = int(groups[0])
        if route == "prompts":
            if params.get("all") == "1":
                return self._from_run(lambda: queries.all_prompts(self.db(), iteration))
            return self._from_run(lambda: queries.prompt_list(self.db(), iteration, params))
        prompt_id = unhex(groups[1])
        return self._from_run(lambda: queries.prompt_page(self.db(), run, iteration, prompt_id))

    def _harness(self, route: str, groups: tuple[str, ...]) -> Any:
        if self.harness is None:
            return [] if route == "harness" else None
        if route == "harness":
            return harness_data.models(self.harness)
        data = harness_data.questions(self.harness, groups[0], unhex(groups[1]))
        if data is None:
            return None
        if route == "harness_model":
            return harness_data.model_view(data)
        wanted = unhex(groups[2])
        item = next((i for i in data["items"] if str(i["id"]) == wanted), None)
        return None if item is None else {
            "kind": data["kind"], "model": data["model"], "layout": data["layout"],
            "item": item, "across": compare.harness_across(self.harness, groups[0], wanted)}


def route_of(path: str) -> tuple[str, tuple[str, ...]] | None:
    for pattern, name in ROUTES:
        match = pattern.fullmatch(path)
        if match:
            return name, match.groups()
    return None


class _Handler(BaseHTTPRequestHandler):
    server_version = "metajudge-explorer"
    sys_version = ""
    explorer: Explorer
    hosts: HostCheck

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self._respond(send_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._respond(send_body=False)

    def _refuse(self) -> None:
        if self._host_allowed():
            self._send(405, b'{"error": "read-only"}', "application/json", True)
        else:
            self._send(403, self._unknown_host(), "application/json", True)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse  # noqa: N815

    def _host_allowed(self) -> bool:
        return self.hosts.allows(self.headers.get("Host") or "")

    def _unknown_host(self) -> bytes:
        host = (self.headers.get("Host") or "")[:100]
        name = host_name(host) or host
        return _error(f"unknown Host {host!r}: this explorer answers requests that name it by "
                      "an IP address or localhost (any port); to open it as "
                      f"{name!r}, restart it with --allow-host {name}")

    def _respond(self, send_body: bool) -> None:
        try:
            with self.explorer.request():
                status, body, kind = self._answer()
        except BadRequest as exc:
            status, body, kind = 400, _error(str(exc)), "application/json"
        except queries.StaleIndex as exc:
            status, body, kind = 503, _error(f"the run changed while it was read: {exc}; "
                                             "try again"), "application/json"
        except Exception as exc:  # a request is always answered (a bug, a bad file)
            log.exception("explorer: %s failed", self.path)
            status, body, kind = 500, _error(f"{type(exc).__name__}: {exc}"), "application/json"
        self._send(status, body, kind, send_body)

    def _answer(self) -> tuple[int, bytes, str]:
        if not self._host_allowed():
            return 403, self._unknown_host(), "application/json"
        split = urlsplit(self.path)
        if split.path in STATIC:
            name, kind = STATIC[split.path]
            return 200, static_file(name), kind
        found = route_of(split.path)
        if found is None:
            return 404, _error("not found"), "application/json"
        params = dict(parse_qsl(split.query))
        data = self.explorer.answer(found[0], found[1], params)
        if data is None:
            return 404, _error("not found"), "application/json"
        body = json.dumps(data, ensure_ascii=False, allow_nan=False, default=str).encode()
        return 200, body, "application/json; charset=utf-8"

    def _send(self, status: int, body: bytes, kind: str, send_body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("%s " + format, self.address_string(), *args)


def _error(message: str) -> bytes:
    return json.dumps({"error": message}, ensure_ascii=False).encode()


def host_name(host: str) -> str | None:
    """The name part of a ``Host`` value, lower-cased (``[::1]:9000`` → ``::1``,
    ``LocalHost:80`` → ``localhost``); None when it is not a well-formed host[:port]."""
    match = re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[^\[\]:/@\s]+)(?::([0-9]{1,5}))?", host.strip())
    if match is None:
        return None
    return match.group(1).strip("[]").lower().rstrip(".")


class HostCheck:
    """Which ``Host`` values are answered: any IP address (no name was resolved, so no name
    can have been rebound), ``localhost`` and ``*.localhost`` (browsers resolve them to the
    loopback address themselves), and the names in ``allowed``; any port."""

    def __init__(self, allowed: Iterable[str] = ()):
        self.allowed = frozenset(n for n in (host_name(a) for a in allowed) if n)

    def allows(self, host: str) -> bool:
        name = host_name(host)
        if name is None:
            return False
        if name == "localhost" or name.endswith(".localhost") or name in self.allowed:
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return address == "localhost"


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class ExplorerServer:
    """The server over one :class:`Explorer`; ``refresh_s`` > 0 extends the index that
    often."""

    def __init__(self, explorer: Explorer, host: str = "127.0.0.1", port: int = 8765,
                 refresh_s: float = 10.0, allow_hosts: Iterable[str] = ()):
        handler: type[_Handler] = type("Handler", (_Handler,), {
            "explorer": explorer, "hosts": HostCheck(allow_hosts)})
        self.explorer = explorer
        host = host.strip("[]")
        try:
            six = isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address)
        except ValueError:  # a name: bound as the system resolves it
            six = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0] == \
                socket.AF_INET6
        self.httpd = (_Server6 if six else _Server)((host, port), handler)
        self.refresh_s = refresh_s
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None

    @property
    def url(self) -> str:
        address, port = self.httpd.server_address[:2]
        host = address.decode() if isinstance(address, bytes) else str(address)
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/"

    def serve_forever(self) -> None:
        if self.refresh_s > 0 and self.explorer.index is not None:
            self._refresher = threading.Thread(target=self._refresh, daemon=True,
                                               name="explorer-refresh")
            self._refresher.start()
        try:
            self.httpd.serve_forever(poll_interval=0.2)
        finally:
            self.close()

    def _refresh(self) -> None:
        while not self._stop.wait(self.refresh_s):
            try:
                self.explorer.update()
            except (OSError, sqlite3.Error) as exc:
                log.warning("could not extend the explorer index: %s", exc)

    def shutdown(self) -> None:
        self._stop.set()
        self.httpd.shutdown()

    def close(self) -> None:
        self._stop.set()
        self.httpd.server_close()
        if self._refresher is not None:
            self._refresher.join(timeout=30)
        self.explorer.close()
