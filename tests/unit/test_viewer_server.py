"""The explorer's server without a browser: a request is always answered (400 for a bad
parameter, 500 for a failure, never a dropped connection), a Host that names the server by a
name it was not given is refused on every bind (DNS rebinding) while any port is accepted (port
forwarding), and a stage file replaced or rewritten under the server is read
again before any of its text is shown (never a text beside another record's judgments)."""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from metajudge.viewer import queries
from metajudge.viewer.index import RunIndex, connect
from metajudge.viewer.server import Explorer, ExplorerServer, HostCheck
from tests.browser.conftest import make_run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("viewer"))


@pytest.fixture
def served(run: Path) -> Iterator[ExplorerServer]:
    """``metajudge view RUN --port 0 --refresh 0`` in a thread of this process."""
    explorer = Explorer(run, None)
    explorer.update()
    server = ExplorerServer(explorer, "127.0.0.1", 0, refresh_s=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(timeout=30)


def get(server: ExplorerServer, path: str, host: str | None = None,
        method: str = "GET") -> tuple[int, Any]:
    port = server.httpd.server_address[1]
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest(method, path, skip_host=host is not None)
        if host is not None:
            connection.putheader("Host", host)
        connection.endheaders()
        answer = connection.getresponse()
        body = answer.read()
        is_json = answer.headers["Content-Type"].startswith("application/json")
        return answer.status, json.loads(body) if is_json else body
    finally:
        connection.close()


def test_hosts_naming_this_machine_are_answered_on_any_port(served: ExplorerServer) -> None:
    port = served.httpd.server_address[1]
    for host in ("127.0.0.1", f"127.0.0.1:{port}", "localhost", f"LOCALHOST:{port}",
                 f"[::1]:{port}", f"localhost:{port + 1}", "localhost:9000",  # forwarded
                 "127.0.0.2:80", "app.localhost:9000", "10.1.2.3:8765"):
        assert get(served, "/api/overview.json", host)[0] == 200, host
    for host in (f"attacker.example:{port}", "attacker.example", "localhost.attacker.example",
                 f"127.0.0.1.attacker.example:{port}", "", "[::1", "a b"):
        status, body = get(served, "/api/overview.json", host)
        assert status == 403 and body["error"].startswith("unknown Host"), host
        assert "--allow-host" in body["error"]
    assert get(served, "/", f"attacker.example:{port}")[0] == 403
    assert get(served, "/api/overview.json", f"attacker.example:{port}", "POST")[0] == 403
    check = HostCheck(["my-box.lan", "Other:99"])
    assert check.allows("my-box.lan:8765") and check.allows("OTHER") and check.allows("my-box.lan")
    assert not check.allows("evil.lan:8765") and not HostCheck().allows("my-box.lan")


@pytest.mark.parametrize("address", ["0.0.0.0", "::1"])
def test_every_bind_keeps_the_rebinding_defence(run: Path, address: str) -> None:
    explorer = Explorer(run, None)
    explorer.update()
    try:
        server = ExplorerServer(explorer, address, 0, refresh_s=0, allow_hosts=["my-box.lan"])
    except OSError as exc:  # no IPv6 on this machine
        pytest.skip(f"cannot bind {address}: {exc}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.httpd.server_address[1]
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        target = "::1" if family == socket.AF_INET6 else "127.0.0.1"
        for host, status in ((f"localhost:{port}", 200), ("my-box.lan:1", 200),
                             (f"attacker.example:{port}", 403)):
            connection = http.client.HTTPConnection(target, port, timeout=30)
            try:
                connection.putrequest("GET", "/api/version.json", skip_host=True)
                connection.putheader("Host", host)
                connection.endheaders()
                assert connection.getresponse().status == status, (address, host)
            finally:
                connection.close()
        assert server.url == (f"http://[::1]:{port}/" if address == "::1"
                              else f"http://0.0.0.0:{port}/")
    finally:
        server.shutdown()
        thread.join(timeout=30)


def test_every_request_is_answered_in_json(served: ExplorerServer,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    for page in ("1e300", "-1e300", "nan", "inf", "x", "99999999999999999999999"):
        status, body = get(served, f"/api/iter/1/prompts.json?page={page}&size={page}")
        assert status == 200, page
        assert 1 <= body["page"] <= queries.MAX_PAGE and 1 <= body["size"] <= 500
    status, body = get(served, "/api/iter/1/prompt/ff.json")  # not UTF-8
    assert status == 400 and "hex of UTF-8" in body["error"]

    def broken(*args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(queries, "overview", broken)
    assert get(served, "/api/overview.json") == (500, {"error": "RuntimeError: a bug"})

    def stale(*args: object) -> None:
        raise queries.StaleIndex("iter_01/responses.jsonl", "line 1 is not the record indexed")

    monkeypatch.setattr(queries, "prompt_page", stale)
    status, body = get(served, "/api/iter/1/prompt/" + b"rivers".hex() + ".json")
    assert status == 503 and "try again" in body["error"]


def _equal_lengths(path: Path, ids: tuple[str, str]) -> list[bytes]:
    """Pad two records' texts so their lines are as long as each other; the file's lines."""
    lines = path.read_bytes().splitlines(keepends=True)
    rows = {json.loads(line)["id"]: n for n, line in enumerate(lines)}
    a, b = (rows[i] for i in ids)
    short, long_ = sorted((a, b), key=lambda n: len(lines[n]))
    record = json.loads(lines[short])
    record["text"] += " " * (len(lines[long_]) - len(lines[short]))
    lines[short] = json.dumps(record, separators=(",", ":")).encode() + b"\n"
    assert len(lines[a]) == len(lines[b])
    return lines


def _check_page(page: dict[str, Any], responses: Path) -> None:
    texts = {r["id"]: r["text"] for r in map(json.loads, responses.read_text().splitlines())}
    assert page["responses"]
    for response in page["responses"]:
        assert response["text"] == texts[response["id"]]
        assert response["judgments"]
        assert all(j["response_id"] == response["id"] for j in response["judgments"])


def test_a_replaced_or_rewritten_file_is_read_again_before_its_texts(
        tmp_path: Path) -> None:
    run = make_run(tmp_path, stages=("generate", "judge"))
    responses = run / "iter_01" / "responses.jsonl"
    lines = _equal_lengths(responses, ("rivers#0", "rivers#1"))
    responses.write_bytes(b"".join(lines))
    explorer = Explorer(run, None)
    explorer.update()
    first, second = [n for n, line in enumerate(lines) if line.startswith(b'{"id":"rivers#')][:2]
    lines[first], lines[second] = lines[second], lines[first]

    # an atomic replacement (what --redo does): a new inode, the same size
    swap = responses.with_name("responses.jsonl.tmp")
    swap.write_bytes(b"".join(lines))
    os.replace(swap, responses)
    db = connect(explorer.index.path, readonly=True)  # type: ignore[union-attr]
    with pytest.raises(queries.StaleIndex):  # the index alone: no wrong record, an error
        queries.prompt_page(db, run, 1, "rivers")
    db.close()
    groups = ("1", b"rivers".hex())
    _check_page(explorer.answer("prompt", groups, {}), responses)  # caught up first

    # a rewrite in place that keeps inode, size and modification time: the ids tell
    stat = responses.stat()
    lines[first], lines[second] = lines[second], lines[first]
    with responses.open("r+b") as fh:
        fh.write(b"".join(lines))
    os.utime(responses, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    db = connect(explorer.index.path, readonly=True)  # type: ignore[union-attr]
    assert explorer.index.is_current(db)  # type: ignore[union-attr]
    db.close()
    _check_page(explorer.answer("prompt", groups, {}), responses)
    explorer.close()


def test_links_out_of_the_run_are_not_indexed(tmp_path: Path) -> None:
    run = make_run(tmp_path / "a", stages=("generate",))
    outside = make_run(tmp_path / "b")
    (run / "iter_01" / "judgments.jsonl").symlink_to(outside / "iter_01" / "judgments.jsonl")
    (run / "iter_02").symlink_to(outside / "iter_01", target_is_directory=True)
    inner = run / "iter_01" / "kept"
    inner.mkdir()
    (inner / "responses.jsonl").write_bytes((run / "iter_01" / "responses.jsonl").read_bytes())
    (run / "iter_03").mkdir()
    (run / "iter_03" / "responses.jsonl").symlink_to(inner / "responses.jsonl")  # inside: kept
    index = RunIndex(run)
    index.update()
    db = connect(index.path)
    try:
        files = {r[0] for r in db.execute("SELECT name FROM files")}
        assert files == {"iter_01/prompts.jsonl", "iter_01/responses.jsonl",
                         "iter_03/responses.jsonl"}
        assert db.execute("SELECT COUNT(*) FROM judgments").fetchone()[0] == 0
        assert index.is_current(db)
    finally:
        db.close()


def test_a_summary_or_config_linked_out_of_the_run_is_not_read(tmp_path: Path) -> None:
    run = make_run(tmp_path / "a", stages=("generate",))
    secret = tmp_path / "secret.csv"
    secret.write_text("iteration,password\n1,hunter2\n")
    (run / "summary.csv").unlink(missing_ok=True)
    (run / "summary.csv").symlink_to(secret)
    assert queries.summary_rows(run / "summary.csv") == {}
    RunIndex(run).update()
    assert "hunter2" not in json.dumps(Explorer(run, None).answer("overview", (), {}))
