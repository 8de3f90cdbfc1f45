"""The explorer without a browser: path traversal against the real server, the index extended
(not rebuilt) as a run grows, a replaced file indexed again, nothing but the index written into
the run, and the ratings shown equal to the pairs stage's."""

from __future__ import annotations

import hashlib
import http.client
import json
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from metajudge.viewer.index import INDEX_NAME, RunIndex, connect
from tests.browser.conftest import ROOT, Server, make_run, view_command

TRAVERSALS = ["/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/..%2f..%2fetc%2fpasswd",
              "/%252e%252e/%252e%252e/etc/passwd", "/app.js/../../../etc/passwd",
              "/static/../../../../etc/passwd", "//etc/passwd", "/api/../../../etc/passwd",
              "/api/iter/1/prompt/../../../../etc/passwd.json",
              "/api/iter/1/prompt/" + b"../../config.yaml".hex() + ".json",
              "/api/harness/alpaca_eval/" + b"../../../etc".hex() + ".json",
              "/api/harness/" + "..%2f..".replace("%", "%25") + "/2e2e.json",
              "/.explorer.sqlite", "/config.yaml", "/iter_01/responses.jsonl",
              "/api/overview.json/../../config.yaml", "/index.html%00.json",
              "/\\..\\..\\etc\\passwd"]


def _get(url: str, path: str, method: str = "GET") -> tuple[int, bytes]:
    host = url.removeprefix("http://").rstrip("/")
    connection = http.client.HTTPConnection(host, timeout=30)
    try:
        connection.putrequest(method, path, skip_host=False, skip_accept_encoding=True)
        connection.endheaders()
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def test_no_path_outside_the_app_and_its_answers_is_served(server: Server) -> None:
    secret = Path("/etc/passwd").read_bytes()[:20]
    for path in TRAVERSALS:
        status, body = _get(server.url, path)
        assert status == 404, (path, status)
        assert secret not in body and b"backend:" not in body, path
    status, body = _get(server.url, "/app.js")
    assert status == 200 and b"textContent" in body
    for method in ("POST", "PUT", "DELETE"):
        assert _get(server.url, "/api/overview.json", method)[0] == 405
    with urllib.request.urlopen(server.url, timeout=30) as answer:
        policy = answer.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy


def _snapshot(run: Path) -> dict[str, tuple[int, int, str]]:
    return {str(p.relative_to(run)): (p.stat().st_size, p.stat().st_mtime_ns,
                                     hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(run.rglob("*")) if p.is_file()}


def _stage(run: Path, stage: str, **backend_options: object) -> None:
    from echo_backend import EchoingInstantBackend

    from metajudge.config import load_config
    from metajudge.stages.judge import run_judge
    from metajudge.stages.meta_judge import run_meta_judge
    from metajudge.stages.pairs import run_pairs
    from metajudge.stages.runner import RetryableFailuresRemain
    from metajudge.store import Store

    config = load_config(run / "config.yaml", ["runner.retry_passes=0"])
    store = Store.open(run, config)
    try:
        if stage == "pairs":
            run_pairs(store, 1)
        elif stage == "redo-pairs":
            run_pairs(store, 1, redo=True)
        else:
            backend = EchoingInstantBackend(config.backend, **backend_options)  # type: ignore[arg-type]
            stages = {"judge": run_judge, "meta-judge": run_meta_judge}
            try:
                stages[stage](store, backend, 1, progress=False)
            except RetryableFailuresRemain:
                pass  # what a run stopped by failures leaves: a part of the file
    finally:
        store.close()


def _overview_counts(url: str) -> dict[str, int]:
    with urllib.request.urlopen(url + "api/overview.json", timeout=30) as answer:
        return json.loads(answer.read())["iterations"][0]["counts"]  # type: ignore[no-any-return]


def test_the_index_is_extended_as_the_run_grows_and_nothing_else_is_written(
        tmp_path: Path) -> None:
    run = make_run(tmp_path, stages=("generate",))
    _stage(run, "judge", fail_first=3)  # a third of the judgments fail once: a partial file
    judgments = run / "iter_01" / "judgments.jsonl"
    partial = judgments.stat().st_size
    before = _snapshot(run)
    first = RunIndex(run).update()
    assert first.created and not first.reindexed
    db = connect(run / INDEX_NAME)
    keys = dict(db.execute("SELECT id, pk FROM responses"))
    indexed = db.execute("SELECT COUNT(*) FROM judgments").fetchone()[0]
    db.close()
    assert 0 < indexed == len(judgments.read_text().splitlines()) < 4 * 3 * 3

    server = Server(view_command(str(run), "--port", "0", "--refresh", "0.5"),
                    "explorer: http://")
    try:
        assert _overview_counts(server.url)["judgments"] == indexed
        _stage(run, "judge")  # the rerun appends the missing judgments
        _stage(run, "meta-judge")
        _stage(run, "pairs")
        deadline = time.monotonic() + 60
        while _overview_counts(server.url)["dpo_rows"] == 0:  # written last by the pairs stage
            assert time.monotonic() < deadline
            time.sleep(0.3)
        assert _overview_counts(server.url)["judgments"] == 4 * 3 * 3
    finally:
        server.stop()
    again = RunIndex(run).update()
    assert not again.changed  # the server's refresh has read everything already
    db = connect(run / INDEX_NAME)
    files = {name: offset for name, offset in db.execute("SELECT name, offset FROM files")}
    assert files["iter_01/judgments.jsonl"] == judgments.stat().st_size > partial
    assert dict(db.execute("SELECT id, pk FROM responses")) == keys  # rows kept, not rebuilt
    assert db.execute("SELECT COUNT(*) FROM judgments").fetchone()[0] == 4 * 3 * 3
    db.close()

    growth = RunIndex(run)
    with judgments.open("ab") as fh:  # a write in progress: no newline yet
        fh.write(b'{"id": "partial')
    assert not growth.update().changed
    with judgments.open("r+b") as fh:
        fh.truncate(files["iter_01/judgments.jsonl"])

    _stage(run, "redo-pairs")  # --redo moves the pair files aside and writes them anew
    redone = RunIndex(run).update()
    assert "iter_01/pairs.jsonl" in redone.reindexed and not redone.extended
    assert "iter_01/judgments.jsonl" not in redone.reindexed

    after = _snapshot(run)
    written = set(after) - set(before)
    assert {INDEX_NAME} <= written
    stage_files = {n for n in written if not n.startswith((".explorer", "iter_01/replaced/"))}
    assert stage_files <= {f"iter_01/{n}" for n in (
        "judgments.jsonl", "meta_judgments.jsonl", "meta_judgments.failures.jsonl",
        "meta_judgments.settings.json", "meta_selection.jsonl", "pairs.jsonl",
        "pairs.settings.json", "pair_decisions.jsonl", "dpo_pairs.jsonl")} | {
        "manifest.json", "config.yaml", ".lock"}, stage_files
    assert not {n for n in written if n.startswith(".explorer") and n != INDEX_NAME}
    untouched = set(before) - {"iter_01/judgments.jsonl", "manifest.json", "config.yaml",
                               ".lock", "iter_01/judgments.failures.jsonl",
                               "iter_01/judgments.settings.json"}
    assert {n: before[n] for n in untouched} == {n: after[n] for n in untouched}

    lines = len(judgments.read_text().splitlines())
    with judgments.open("ab") as fh:  # a line that is not a record is named, not fatal
        fh.write(b"not json\n")
    assert RunIndex(run).update().extended == ["iter_01/judgments.jsonl"]
    db = connect(run / INDEX_NAME)
    problems = [tuple(r) for r in db.execute("SELECT name, line FROM problems")]
    db.close()
    assert problems == [("iter_01/judgments.jsonl", lines + 1)]


def test_the_bundle_and_server_write_only_their_index_into_the_run(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    before = _snapshot(run)
    made = subprocess.run(view_command(str(run), "--bundle", str(tmp_path / "bundle")),
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert made.returncode == 0, made.stderr
    server = Server(view_command(str(run), "--port", "0"), "explorer: http://")
    try:
        assert _overview_counts(server.url)["responses"] == 12
    finally:
        server.stop()
    after = _snapshot(run)
    assert set(after) - set(before) == {INDEX_NAME}  # its -wal and -shm are gone too
    assert {n: after[n] for n in before} == before


def test_the_ratings_shown_are_the_pairs_stage_ratings(server: Server, tiny_run: Path) -> None:
    pairs = [json.loads(x) for x in (tiny_run / "iter_01" / "pairs.jsonl").read_text()
             .splitlines()]
    judge_pairs = [p for p in pairs if p["pair_type"] == "judge"]
    assert judge_pairs
    for pair in judge_pairs:
        url = server.url + f"api/iter/1/prompt/{pair['prompt_id'].encode().hex()}.json"
        with urllib.request.urlopen(url, timeout=30) as answer:
            page = json.loads(answer.read())
        elo = {f"{page['meta']['selection']['response_id']}@j{r['index']}": r["elo"]
               for r in page["meta"]["ratings"]}
        assert elo[pair["chosen_id"]] == pytest.approx(pair["chosen_score"], abs=1e-6)
        assert elo[pair["rejected_id"]] == pytest.approx(pair["rejected_score"], abs=1e-6)



def _limit_files() -> None:  # in the server process, before it starts
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


def _open_files(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def test_a_long_session_keeps_open_files_flat_under_a_256_file_limit(server: Server,
                                                                    tiny_run: Path) -> None:
    """2,000 requests (a new connection and server thread each) to a server limited to 256
    open files, as macOS's default: every answer 200, open files flat (issue 30: one SQLite
    connection leaked per request thread, and request 507 of a 1,024-file server failed)."""
    limited = Server(view_command(str(tiny_run), "--port", "0", "--refresh", "0"),
                     "explorer: http://", preexec_fn=_limit_files)
    try:
        pid = limited.process.pid
        ids = [json.loads(x)["id"] for x in
               (tiny_run / "iter_01" / "prompts.jsonl").read_text().splitlines()]
        cycle = []  # per prompt: its page, the overview, the list and the page's polls
        for prompt_id in ids:
            cycle += [f"/api/iter/1/prompt/{prompt_id.encode().hex()}.json",
                      "/api/overview.json", "/api/iter/1/prompts.json?sort=spread"] + [
                      "/api/version.json"] * 7
        statuses: dict[int, int] = {}
        files = {}
        for n in range(1, 2001):
            status, _ = _get(limited.url, cycle[n % len(cycle)])
            statuses[status] = statuses.get(status, 0) + 1
            if n in (1, 1000, 2000):
                files[n] = _open_files(pid)
        assert statuses == {200: 2000}
        assert files[2000] <= files[1] + 4 and files[1000] <= files[1] + 4, files
    finally:
        limited.stop()


def test_a_linked_index_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    import sqlite3

    run = make_run(tmp_path / "a", stages=("generate",))
    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE mine (x INT)")
    db.commit()
    db.close()
    before = other.read_bytes()
    (run / INDEX_NAME).symlink_to(other)
    made = subprocess.run(view_command(str(run), "--bundle", str(tmp_path / "b")),
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert made.returncode == 2, made.stderr  # the CLI's error, with the way out
    assert "is a symbolic link" in made.stderr and "--index" in made.stderr
    assert "Traceback" not in made.stderr
    missing = tmp_path / "missing.sqlite"
    (run / INDEX_NAME).unlink()
    (run / INDEX_NAME).symlink_to(missing)  # a dangling link: SQLite would create its target
    with pytest.raises(ValueError, match="symbolic link"):
        RunIndex(run).update()
    assert other.read_bytes() == before and not missing.exists()
    assert not list(tmp_path.glob("other.sqlite-*"))  # no -wal or -shm: never opened
    (run / INDEX_NAME).unlink()
    (run / (INDEX_NAME + "-wal")).symlink_to(tmp_path / "wal")  # a linked companion too
    with pytest.raises(ValueError, match="symbolic link"):
        RunIndex(run).update()
    assert not (tmp_path / "wal").exists()


def test_a_wrong_typed_record_is_a_named_problem_left_out_of_every_figure(
        tmp_path: Path) -> None:
    run = make_run(tmp_path)
    judgments = run / "iter_01" / "judgments.jsonl"
    lines = judgments.read_text().splitlines()
    bad = next(n for n, x in enumerate(lines) if json.loads(x)["prompt_id"] == "rivers")
    record = json.loads(lines[bad])
    record["score"] = "five"
    lines[bad] = json.dumps(record)
    judgments.write_text("\n".join(lines) + "\n")
    server = Server(view_command(str(run), "--port", "0", "--refresh", "0"),
                    "explorer: http://")
    try:
        with urllib.request.urlopen(server.url + "api/overview.json", timeout=30) as answer:
            overview = json.loads(answer.read())
        figures = overview["iterations"][0]
        problem = (f"iter_01/judgments.jsonl, line {bad + 1}: field 'score': \"five\" is not "
                   "a number")
        assert [f"{p['name']}, line {p['line']}: {p['problem']}"
                for p in overview["problems"]] == [problem]
        assert figures["counts"]["judgments"] == len(lines) - 1
        assert "five" not in figures["score_distribution"]
        assert sum(figures["score_distribution"].values()) == len(lines) - 1
        assert figures["health"]["score_top_share"] is not None
        status, body = _get(server.url, "/api/iter/1/prompt/" + b"rivers".hex() + ".json")
        assert status == 200
        page = json.loads(body)
        assert page["problems"] == [problem]
        shown = [j["id"] for r in page["responses"] for j in r["judgments"]]
        assert record["id"] not in shown and len(shown) == 3 * 3 - 1
    finally:
        server.stop()
