"""The explorer's newer views in a real headless Chromium: a page that follows a run growing
under it (no reload), the chosen-vs-rejected view, a prompt and a harness question across
iterations and checkpoints, and the page reached through a forwarded port (``ssh -L``, VS
Code), whose Host names another port."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import ROOT, Server, make_run, view_command
from tests.browser.test_explorer_browser import click, go, texts
from tests.browser.test_explorer_server import _stage


def _wait(driver: Any, check: Any, timeout: float = 60) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout, poll_frequency=0.3).until(lambda d: check(d))


def _page(server: Server, iteration: int, prompt_id: str) -> Any:
    url = server.url + f"api/iter/{iteration}/prompt/{prompt_id.encode().hex()}.json"
    with urllib.request.urlopen(url, timeout=30) as answer:
        return json.loads(answer.read())


def test_the_page_follows_a_growing_run(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    run = make_run(tmp_path, stages=("generate",))
    server = Server(view_command(str(run), "--port", "0", "--refresh", "0.5"),
                    "explorer: http://")
    try:
        go(browser, server.url)
        counts = browser.find_element(By.CSS_SELECTOR, "section.iteration p.muted").text
        assert "judgments 0" in counts and "pairs 0" in counts
        browser.execute_script("window.__same_document = true")  # gone after any reload
        for stage in ("judge", "meta-judge", "pairs"):
            _stage(run, stage)
        _wait(browser, lambda d: "pairs 0" not in d.find_element(
            By.CSS_SELECTOR, "section.iteration p.muted").text)
        counts = browser.find_element(By.CSS_SELECTOR, "section.iteration p.muted").text
        assert "judgments 36" in counts and "meta judgments 24" in counts, counts
        assert browser.find_elements(By.CSS_SELECTOR, "a.reason-link")
        assert browser.execute_script("return window.__same_document") is True  # no reload

        click(browser, "a.prompts-link")  # moving within the app: the new figures
        options = texts(browser, "select[name=reason] option")
        assert len(options) > 1 and any(o.startswith("judge decision:") for o in options)

        # a prompt page drawn before the run grew says so, and redraws on request
        go(browser, server.url + "#/iter/1/prompt/rivers")
        shown = len(browser.find_elements(By.CSS_SELECTOR, "tr.judgment"))
        judgments = run / "iter_01" / "judgments.jsonl"
        with judgments.open("a") as fh:  # one judgment more, of this prompt
            extra = next(j for j in map(json.loads, judgments.read_text().splitlines())
                         if j["prompt_id"] == "rivers")
            extra.update(id=extra["response_id"] + "@j9", index=9)
            fh.write(json.dumps(extra) + "\n")
        _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#stale"))
        browser.find_element(By.CSS_SELECTOR, "#stale button").click()
        _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "tr.judgment")) == shown + 1)
    finally:
        server.stop()


def test_chosen_beside_rejected(browser: Any, server: Server) -> None:
    from selenium.webdriver.common.by import By

    candidates = [r for r in json.loads(urllib.request.urlopen(
        server.url + "api/iter/1/prompts.json?pair=both", timeout=30).read())["rows"]]
    assert candidates, "the tiny run gives a prompt with both pairs"
    prompt_id = candidates[0]["prompt_id"]
    page = _page(server, 1, prompt_id)
    go(browser, server.url + f"#/iter/1/prompt/{urllib.parse.quote(prompt_id)}")
    shown = browser.find_elements(By.CSS_SELECTOR, "section#compare div.comparison")
    assert [c.get_attribute("data-type") for c in shown] == ["actor", "judge"]
    responses = {r["id"]: r for r in page["responses"]}
    judgments = {j["id"]: j for r in page["responses"] for j in r["judgments"]}
    for box, pair in zip(shown, sorted(page["pairs"], key=lambda p: p["pair_type"]), strict=True):
        records = responses if pair["pair_type"] == "actor" else judgments
        chosen = box.find_element(By.CSS_SELECTOR, "pre.chosen-text")
        rejected = box.find_element(By.CSS_SELECTOR, "pre.rejected-text")
        # the texts are the records' own, whole; differences marked on each side
        assert chosen.get_attribute("textContent") == records[pair["chosen_id"]]["text"]
        assert rejected.get_attribute("textContent") == records[pair["rejected_id"]]["text"]
        if records[pair["chosen_id"]]["text"] != records[pair["rejected_id"]]["text"]:
            assert chosen.find_elements(By.CSS_SELECTOR, "span.only")
            assert rejected.find_elements(By.CSS_SELECTOR, "span.only")
        facts = box.find_elements(By.CSS_SELECTOR, "p.facts")
        assert f"{len(records[pair['chosen_id']]['text'])} chars" in facts[0].text
        decided = box.find_element(By.CSS_SELECTOR, "p.decided").text
        reason = next(d["reason"] for d in page["decisions"] if d["pair_type"] == pair["pair_type"])
        assert reason in decided
    judge = next(p for p in page["pairs"] if p["pair_type"] == "judge")
    a, b = judgments[judge["chosen_id"]]["index"], judgments[judge["rejected_id"]]["index"]
    between = [x for x in page["meta"]["battles"] if {x["first"], x["second"]} == {a, b}]
    rows = shown[1].find_elements(By.CSS_SELECTOR, "tr.between-battle")
    assert len(rows) == len(between) == 2  # both orders
    for row, battle in zip(rows, between, strict=True):
        winner = battle[battle["winner"]] if battle["winner"] else None
        if winner is not None:
            assert f"j{winner}" in row.text
            assert ("chosen" if winner == a else "rejected") in row.text


@pytest.fixture
def two_iteration_run(tmp_path: Path) -> Iterator[Path]:
    """A run whose iteration 2 drew the same prompts (its stage files, before the pairs)."""
    run = make_run(tmp_path)
    second = run / "iter_02"
    second.mkdir()
    for name in ("prompts", "responses", "judgments"):
        shutil.copy(run / "iter_01" / f"{name}.jsonl", second / f"{name}.jsonl")
    yield run


def test_a_prompt_and_a_harness_question_across_iterations(browser: Any,
                                                           two_iteration_run: Path) -> None:
    from selenium.webdriver.common.by import By

    server = Server(view_command(str(two_iteration_run), "--port", "0", "--refresh", "0",
                                 "--harness", str(ROOT / "results" / "harness")),
                    "explorer: http://")
    try:
        go(browser, server.url + "#/iter/1/prompt/rivers")
        rows = browser.find_elements(By.CSS_SELECTOR, "#across-table tr.across-row")
        assert [r.text.split()[0] for r in rows] == ["1", "2"]
        page = _page(server, 1, "rivers")
        assert [r["iteration"] for r in page["across"]] == [1, 2]
        assert page["across"][0]["pairs"] and not page["across"][1]["pairs"]
        assert "none" in rows[1].text  # iteration 2 made no pairs (yet)
        click(browser, "a.across-link")
        assert browser.current_url.endswith("#/iter/2/prompt/rivers")
        assert "(this page)" in browser.find_element(By.CSS_SELECTOR, "tr.across-row.target").text

        go(browser, server.url + "#/harness/arena_hard/tiny-iter_02")
        click(browser, "a.question-link")
        checkpoints = browser.find_elements(By.CSS_SELECTOR, "section.checkpoint")
        models = [c.get_attribute("data-model") for c in checkpoints]
        assert models == ["smollm2-135m-instruct", "tiny-iter_02"]
        answers = texts(browser, "pre.checkpoint-answer")
        assert answers[1] == browser.find_element(By.CSS_SELECTOR, "pre.model-answer").text
        click(browser, "a.checkpoint-link")  # the other checkpoint's own page, same question
        assert "/harness/arena_hard/smollm2-135m-instruct/q/" in browser.current_url
        assert browser.find_element(By.CSS_SELECTOR, "pre.model-answer").text == answers[0]
    finally:
        server.stop()


class Forward:
    """A TCP port forwarded to another (what ``ssh -L PORT:127.0.0.1:TARGET`` does)."""

    def __init__(self, target: int):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.target = target
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:  # the server has stopped (a page still polling it)
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


def test_the_page_through_a_forwarded_port(browser: Any, server: Server) -> None:
    target = int(urllib.parse.urlsplit(server.url).port or 0)
    forward = Forward(target)
    try:
        url = f"http://localhost:{forward.port}/"
        go(browser, url)  # the browser sends Host: localhost:<forwarded port>
        assert texts(browser, "section.iteration h2")[0].startswith("Iteration 1")
        click(browser, "a.prompts-link")
        assert len(texts(browser, "tr.prompt-row")) == 4
        assert browser.current_url.startswith(url)
    finally:
        forward.close()


def test_the_smaller_defects(browser: Any, server: Server, tiny_run: Path,
                             tmp_path: Path) -> None:
    """Issue 30's small ones: a stray % in the fragment, a page past the last, header and cell
    aligned alike, every score of the scale drawn (zeros too), and a run with its config.yaml
    alone explained."""
    from selenium.webdriver.common.by import By

    go(browser, server.url + "#/iter/1/prompt/%E0%A4%A")  # not a whole UTF-8 escape
    assert texts(browser, "h1") == ["Not found"]
    go(browser, server.url + "#/iter/1?page=999")
    assert texts(browser, "#total") == ["4 prompts · page 1 of 1"]
    go(browser, server.url + "#/iter/1/prompt/rivers")
    table = browser.find_element(By.CSS_SELECTOR, "table#ratings")
    align = "return getComputedStyle(arguments[0]).textAlign"
    header = [browser.execute_script(align, c) for c in table.find_elements(By.CSS_SELECTOR, "th")]
    row = table.find_elements(By.CSS_SELECTOR, "tr")[1]
    cells = [browser.execute_script(align, c) for c in row.find_elements(By.CSS_SELECTOR, "td")]
    assert header == cells and cells[1:3] == ["right", "right"]
    summary = browser.find_element(By.CSS_SELECTOR, "details.judgments summary").text
    assert "scores" in summary  # without expanding
    go(browser, server.url)
    labels = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "svg.chart text")]
    assert {"0", "1", "2", "3", "4", "5"} <= set(labels)

    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(tiny_run / "config.yaml", bare / "config.yaml")
    empty = Server(view_command(str(bare), "--port", "0", "--refresh", "0"),
                   "explorer: http://")
    try:
        go(browser, empty.url)
        assert "No iteration yet" in browser.find_element(By.ID, "empty-run").text
    finally:
        empty.stop()


def test_the_page_follows_a_redo_that_shrinks_the_run(browser: Any, tmp_path: Path) -> None:
    """A ``--redo`` rewrites a stage file with fewer records: the overview redraws with the
    smaller count, and a prompt page says the run has changed (it said "grown") and redraws
    with what is left (review-30ab)."""
    import os

    from selenium.webdriver.common.by import By

    run = make_run(tmp_path)
    judgments = run / "iter_01" / "judgments.jsonl"
    server = Server(view_command(str(run), "--port", "0", "--refresh", "0.5"),
                    "explorer: http://")
    try:
        go(browser, server.url + "#/iter/1/prompt/rivers")
        shown = len(browser.find_elements(By.CSS_SELECTOR, "tr.judgment"))
        kept = [line for line in judgments.read_text().splitlines()
                if json.loads(line)["index"] != 2]  # a redo with N = 2 instead of 3
        temporary = judgments.with_suffix(".tmp")
        temporary.write_text("".join(line + "\n" for line in kept))
        os.replace(temporary, judgments)  # as the store rewrites: a new file
        _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#stale"))
        banner = browser.find_element(By.CSS_SELECTOR, "#stale").text
        assert "changed" in banner and "grown" not in banner, banner
        browser.find_element(By.CSS_SELECTOR, "#stale button").click()
        _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "tr.judgment"))
              == shown * 2 // 3)
        go(browser, server.url)
        counts = browser.find_element(By.CSS_SELECTOR, "section.iteration p.muted").text
        assert f"judgments {len(kept)}" in counts, counts
    finally:
        server.stop()
