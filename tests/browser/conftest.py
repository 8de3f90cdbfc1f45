"""Fixtures of the explorer's browser tests: a tiny run made by the real stages on a user backend
that answers at once, ``metajudge view`` as a real server process, and headless Chromium
(Debian's ``chromium`` with its ``chromium-driver``) driven by Selenium.

Selenium rather than Playwright: Debian ships the browser and its driver as one matched pair
(same version, same source package), Selenium talks to it over the W3C WebDriver protocol and
is pure Python (no bundled Node runtime, no browser download, and with the driver's path given
Selenium Manager never runs). Playwright drives a browser through a protocol pinned to its own
Chromium build, so a distribution's Chromium is only "close enough".

Nothing outlives the session: the server is terminated (then killed), the browser quit, and any
Chromium process still running with this session's profile folder is killed by its id.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:  # the echoing backend, named 'echo_backend:EchoingInstantBackend'
    sys.path.insert(0, HERE)
CHROMIUM = os.environ.get("METAJUDGE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("METAJUDGE_CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1360,1000"]

PAYLOAD_SCRIPT = "<script>window.__pwned = 'script';</script>"
PAYLOAD_IMG = "<img src=x onerror=\"window.__pwned = 'img'\">"
PROMPTS = [
    {"id": "rivers", "instruction": "Name three rivers of France."},
    {"id": "xss-script", "instruction": f"Repeat this exactly: {PAYLOAD_SCRIPT}"},
    {"id": "xss-img", "instruction": f"Repeat this exactly: {PAYLOAD_IMG}"},
    {"id": "sums", "instruction": "What is 2 + 2? Say it in words."},
]
SETTINGS = ["backend.kind=echo_backend:EchoingInstantBackend", "iterations=1",
            "prompts.pool_size=4", "prompts.per_iteration=4",
            "generation.samples_per_prompt=3", "judge.judgments_per_response=3",
            "runner.retry_delay_s=0", "judge.forced_readout=true",
            "meta_judge.forced_readout=true"]


def make_run(root: Path, prompts: list[dict[str, str]] = PROMPTS,
             stages: tuple[str, ...] = ("generate", "judge", "meta-judge", "pairs")) -> Path:
    """A one-iteration run on the echoing instant backend through the real stages."""
    from echo_backend import EchoingInstantBackend

    from metajudge.config import load_config
    from metajudge.stages.generate import run_generate
    from metajudge.stages.judge import run_judge
    from metajudge.stages.meta_judge import run_meta_judge
    from metajudge.stages.pairs import run_pairs
    from metajudge.store import Store

    root.mkdir(parents=True, exist_ok=True)
    source = root / "prompts.jsonl"
    source.write_text("".join(json.dumps(p) + "\n" for p in prompts))
    run = root / "run"
    config = load_config(ROOT / "configs" / "tiny.yaml",
                         [*SETTINGS, f"prompts.source={source}"])
    store = Store.open(run, config)
    backend = EchoingInstantBackend.from_config(config.backend)
    try:
        for stage in stages:
            if stage == "pairs":
                run_pairs(store, 1)
            else:
                {"generate": run_generate, "judge": run_judge,
                 "meta-judge": run_meta_judge}[stage](store, backend, 1, progress=False)
    finally:
        store.close()
    return run


class Server:
    """``metajudge view ARGS`` (or any command that prints its URL) as a child process."""

    def __init__(self, command: list[str], marker: str, **popen: Any):
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, cwd=ROOT, **popen)
        self.url = ""
        lines = []
        deadline = time.monotonic() + 120
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if marker in line:
                self.url = "http://" + line.split("http://", 1)[1].split()[0].rstrip("/)") + "/"
                break
        if not self.url:
            self.stop()
            raise RuntimeError("the server did not start:\n" + "".join(lines))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)
        if self.process.stdout is not None:
            self.process.stdout.close()


def view_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "metajudge.cli", "view", *args]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("explorer"))


@pytest.fixture(scope="session")
def server(tiny_run: Path) -> Iterator[Server]:
    served = Server(view_command(str(tiny_run), "--port", "0", "--harness",
                                 str(ROOT / "results" / "harness"), "--refresh", "1"),
                    "explorer: http://")
    yield served
    served.stop()


def _chromium_pids(profile: Path) -> list[int]:
    """Processes whose command line names this session's profile folder (ours alone)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(profile).encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).is_file()]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium (pip install -e '.[browser-tests]')")
    if missing:
        message = ("the browser tests need " + ", ".join(missing) + ": apt-get install chromium "
                   "chromium-driver; pip install -e '.[browser-tests]' (.ci/run does both)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    profile = tmp_path_factory.mktemp("chromium-profile")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER,
                      log_output=str(tmp_path_factory.mktemp("chromedriver") / "log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        try:
            driver.quit()
        finally:
            driver_process = getattr(service, "process", None)
            if driver_process is not None and driver_process.poll() is None:
                driver_process.kill()
                driver_process.wait(timeout=20)
        for pid in _chromium_pids(profile):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(profile, ignore_errors=True)
