"""The explorer over a long session: 10,000 requests to one ``metajudge view`` server whose
open-file limit is 256 (macOS's default; ``resource.setrlimit`` in the server process before it
starts), recording the server's open files (``/proc/PID/fd``) and resident memory
(``/proc/PID/status`` VmRSS) after 1, 1,000 and 10,000 requests.

The run is made by the real stages on the instant backend (``benchmarks/instant_backend.py``):
one iteration of 24 prompts, K = 4, N = 3, meta-judge and both pair types. The requests cycle
through what a reader's page views ask for: per prompt, the overview, a filtered and sorted
prompt list, the prompt's page and four polls of the version (the page polls every 3 s); one
request at a time, each on a new connection
(``http.server`` answers HTTP/1.0), so each is served by a new thread, as in a browser session.
Every answer must be 200.

    .venv/bin/python benchmarks/explorer_session.py            # about 2 minutes on 2 cores
    .venv/bin/python benchmarks/explorer_session.py --requests 2000

Writes ``results/benchmarks/explorer_session.md``, ``.json`` (the marks) and ``.rows.json``
(the benchmark summary's rows).
"""

from __future__ import annotations

import argparse
import http.client
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILE_LIMIT = 256
SETTINGS = ["backend.kind=instant_backend:InstantBackend", "iterations=1",
            "prompts.per_iteration=24", "generation.samples_per_prompt=4",
            "judge.judgments_per_response=3", "runner.retry_delay_s=0"]


def make_run(root: Path) -> Path:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from instant_backend import InstantBackend

    from metajudge.config import load_config
    from metajudge.stages.generate import run_generate
    from metajudge.stages.judge import run_judge
    from metajudge.stages.meta_judge import run_meta_judge
    from metajudge.stages.pairs import run_pairs
    from metajudge.store import Store

    run = root / "run"
    config = load_config(ROOT / "configs" / "tiny.yaml", SETTINGS)
    store = Store.open(run, config)
    backend = InstantBackend.from_config(config.backend)
    try:
        for stage in (run_generate, run_judge, run_meta_judge):
            stage(store, backend, 1, progress=False)
        run_pairs(store, 1)
    finally:
        store.close()
    return run


def _limit_files() -> None:  # in the server process, before it starts
    resource.setrlimit(resource.RLIMIT_NOFILE, (FILE_LIMIT, FILE_LIMIT))


def start_server(run: Path) -> tuple[subprocess.Popen[str], str]:
    """``metajudge view RUN --port 0`` with at most 256 open files; (process, base URL)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "metajudge.cli", "view", str(run), "--port", "0",
         "--refresh", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        cwd=ROOT, preexec_fn=_limit_files)
    assert process.stdout is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if "explorer: http://" in line:
            return process, line.split("http://", 1)[1].split()[0].rstrip("/")
        if not line and process.poll() is not None:
            break
    process.kill()
    raise RuntimeError("the explorer did not start")


def open_files(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def paths(run: Path) -> list[str]:
    """The request cycle, as a reader's page views ask: per prompt, the overview, the prompt
    list, the prompt's page and four version polls (the page polls every 3 s)."""
    ids = [json.loads(line)["id"] for line in
           (run / "iter_01" / "prompts.jsonl").read_text().splitlines() if line.strip()]
    cycle = []
    for prompt_id in ids:
        cycle += ["/api/overview.json", "/api/iter/1/prompts.json?sort=variance&desc=1&pair=actor",
                  f"/api/iter/1/prompt/{prompt_id.encode().hex()}.json"] + [
                  "/api/version.json"] * 4
    return cycle


def get(host: str, path: str) -> int:
    connection = http.client.HTTPConnection(host, timeout=60)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        answer.read()
        return answer.status
    finally:
        connection.close()


def session(run: Path, requests: int, marks: tuple[int, ...]) -> list[dict[str, float]]:
    """``requests`` requests to a fresh server; its open files and RSS after each mark."""
    process, host = start_server(run)
    cycle = paths(run)
    rows = []
    statuses: dict[int, int] = {}
    started = time.perf_counter()
    try:
        for n in range(1, requests + 1):
            status = get(host, cycle[(n - 1) % len(cycle)])
            statuses[status] = statuses.get(status, 0) + 1
            if n in marks:
                rows.append({"requests": n, "open_files": open_files(process.pid),
                             "rss_mb": round(rss_mb(process.pid), 1),
                             "seconds": round(time.perf_counter() - started, 1),
                             "non_200": sum(v for k, v in statuses.items() if k != 200)})
                print(json.dumps(rows[-1]), flush=True)
    finally:
        process.terminate()
        process.wait(timeout=30)
    return rows


def write(rows: list[dict[str, float]], requests: int, out: Path) -> str:
    """``explorer_session.md``, ``.json`` (the marks) and ``.rows.json`` (the summary's rows)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "explorer_session.json").write_text(json.dumps(rows, indent=1) + "\n")
    first, last = rows[0], rows[-1]
    marks = " / ".join(f"{r['requests']:,}" for r in rows)
    summary = [
        {"measurement": f"run explorer: open files after {last['requests']:,} requests "
                        f"({FILE_LIMIT}-file limit)",
         "reference": "after 1 request",
         "ratio": f"{last['open_files'] / first['open_files']:.2f}×",
         "figures": " → ".join(str(r["open_files"]) for r in rows) + f" at {marks} requests; "
                    f"{last['non_200']} answers not 200"},
        {"measurement": f"run explorer: server RSS after {last['requests']:,} requests",
         "reference": "after 1 request", "ratio": f"{last['rss_mb'] / first['rss_mb']:.2f}×",
         "figures": " → ".join(f"{r['rss_mb']}" for r in rows) + f" MB at {marks} requests"}]
    (out / "explorer_session.rows.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = ["# Explorer: a long session", "",
             f"`benchmarks/explorer_session.py`: {requests:,} requests (per prompt of a "
             "24-prompt run: overview, prompt list, its page, 4 version polls; a new connection "
             "and server thread each) to `metajudge view` with an open-file limit of "
             f"{FILE_LIMIT}, on this 2-core machine shared with other jobs.", "",
             "| requests | open files | RSS (MB) | seconds | answers not 200 |",
             "| ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['requests']:,} | {r['open_files']} | {r['rss_mb']} | {r['seconds']} | "
              f"{r['non_200']} |" for r in rows]
    text = "\n".join(lines) + "\n"
    (out / "explorer_session.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--out", default=str(ROOT / "results" / "benchmarks"))
    args = parser.parse_args()
    marks = tuple(m for m in (1, 1_000, 10_000) if m < args.requests) + (args.requests,)
    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp))
        rows = session(run, args.requests, marks)
    print(write(rows, args.requests, Path(args.out)))


if __name__ == "__main__":
    main()
