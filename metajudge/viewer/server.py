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
The index is extended every ``refresh_s`` seconds by a background thread while requests are
read through read-only SQLite connections (one per thread).
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from metajudge.viewer import harness as harness_data
from metajudge.viewer import queries
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
    (re.compile(r"/api/iter/([0-9]{1,4})/prompts\.json"), "prompts"),
    (re.compile(rf"/api/iter/([0-9]{{1,4}})/prompt/{_HEX}\.json"), "prompt"),
    (re.compile(r"/api/harness\.json"), "harness"),
    (re.compile(rf"/api/harness/([a-z_]+)/{_HEX}\.json"), "harness_model"),
    (re.compile(rf"/api/harness/([a-z_]+)/{_HEX}/{_HEX}\.json"), "harness_item"),
]


def static_file(name: str) -> bytes:
    return (resources.files("metajudge.viewer") / "static" / name).read_bytes()


def unhex(text: str) -> str:
    return bytes.fromhex(text).decode("utf-8")


class Explorer:
    """What the server answers, without HTTP: shared by the server and the static bundle."""

    def __init__(self, run: Path | None, harness: Path | None, index_path: Path | None = None):
        self.run, self.harness = run, harness
        self.index = RunIndex(run, index_path) if run is not None else None
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._guard = threading.Lock()

    def update(self) -> None:
        if self.index is not None:
            self.index.update()

    def db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            assert self.index is not None
            db = self._local.db = connect(self.index.path, readonly=True)
            with self._guard:
                self._opened.append(db)
        return db  # type: ignore[no-any-return]

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
        if route == "overview":
            data = queries.overview(self.db(), self.run) if self.run is not None else {
                "run": None, "iterations": [], "problems": []}
            data["harness"] = self.harness is not None
            return data
        if self.run is None:
            return None
        iteration = int(groups[0])
        if route == "prompts":
            if params.get("all") == "1":
                return queries.all_prompts(self.db(), iteration)
            return queries.prompt_list(self.db(), iteration, params)
        return queries.prompt_page(self.db(), self.run, iteration, unhex(groups[1]))

    def _harness(self, route: str, groups: tuple[str, ...]) -> Any:
        if self.harness is None:
            return [] if route == "harness" else None
        if route == "harness":
            return harness_data.models(self.harness)
        data = harness_data.questions(self.harness, groups[0], unhex(groups[1]))
        if data is None:
            return None
        if route == "harness_model":
            return {"kind": data["kind"], "model": data["model"], "layout": data["layout"],
                    "rows": harness_data.summary_rows(data)}
        wanted = unhex(groups[2])
        item = next((i for i in data["items"] if str(i["id"]) == wanted), None)
        return None if item is None else {"kind": data["kind"], "model": data["model"],
                                          "layout": data["layout"], "item": item}


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

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self._respond(send_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._respond(send_body=False)

    def _refuse(self) -> None:
        self._send(405, b'{"error": "read-only"}', "application/json", True)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse  # noqa: N815

    def _respond(self, send_body: bool) -> None:
        split = urlsplit(self.path)
        if split.path in STATIC:
            name, kind = STATIC[split.path]
            self._send(200, static_file(name), kind, send_body)
            return
        found = route_of(split.path)
        if found is None:
            self._send(404, b'{"error": "not found"}', "application/json", send_body)
            return
        params = dict(parse_qsl(split.query))
        try:
            data = self.explorer.answer(found[0], found[1], params)
        except (ValueError, UnicodeDecodeError) as exc:
            body = json.dumps({"error": str(exc)}).encode()
            self._send(400, body, "application/json", send_body)
            return
        if data is None:
            self._send(404, b'{"error": "not found"}', "application/json", send_body)
            return
        body = json.dumps(data, ensure_ascii=False, allow_nan=False, default=str).encode()
        self._send(200, body, "application/json; charset=utf-8", send_body)

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


class ExplorerServer:
    """The server over one :class:`Explorer`; ``refresh_s`` > 0 extends the index that
    often."""

    def __init__(self, explorer: Explorer, host: str = "127.0.0.1", port: int = 8765,
                 refresh_s: float = 10.0):
        handler = type("Handler", (_Handler,), {"explorer": explorer})
        self.explorer = explorer
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
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
