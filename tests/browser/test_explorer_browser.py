"""The run explorer in a real headless Chromium: clicking through overview → prompt list →
prompt → judgments → battles, model text shown as text with no script run, the static bundle
showing the same pages under a plain ``python -m http.server`` (ids of any length or script
too), and the harness pages.

``test_screenshots_of_each_view`` takes a screenshot of each view: of the tiny run into a
temporary folder, or (``make explorer-screenshots``) of ``$METAJUDGE_EXPLORER_RUN`` into
``$METAJUDGE_EXPLORER_SCREENSHOTS``.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.browser.conftest import PAYLOAD_IMG, PAYLOAD_SCRIPT, ROOT, Server, make_run, view_command

WAIT_S = 30


def _ready(driver: Any) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT_S).until(lambda d: d.execute_script(
        "return document.body.getAttribute('data-ready') === (location.hash || '#/')"))


def go(driver: Any, url: str) -> None:
    driver.get(url)
    _ready(driver)


def click(driver: Any, css: str, index: int = 0) -> None:
    from selenium.webdriver.common.by import By

    before = driver.execute_script("return location.hash")
    element = driver.find_elements(By.CSS_SELECTOR, css)[index]
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    is_link = element.tag_name == "a"
    element.click()
    if is_link:
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(driver, WAIT_S).until(
            lambda d: d.execute_script("return location.hash") != before)
        _ready(driver)


def texts(driver: Any, css: str) -> list[str]:
    from selenium.webdriver.common.by import By

    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, css)]


def shot(driver: Any, name: str, folder: Path) -> Path:
    """A screenshot of the whole page."""
    folder.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return Math.min(document.body.scrollHeight + 40, 3000)")
    driver.set_window_size(1360, max(700, int(height)))
    driver.execute_script("window.scrollTo(0, 0)")
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    driver.set_window_size(1360, 1000)
    assert path.stat().st_size > 10_000
    return path


def shot_element(driver: Any, element_id: str, name: str, folder: Path) -> Path:
    """A screenshot of one element of the page (a section), whole."""
    from selenium.webdriver.common.by import By

    height = driver.execute_script("return Math.min(document.body.scrollHeight + 40, 6000)")
    driver.set_window_size(1360, max(700, int(height)))
    path = folder / f"{name}.png"
    driver.find_element(By.ID, element_id).screenshot(str(path))
    driver.set_window_size(1360, 1000)
    assert path.stat().st_size > 5_000
    return path


def api(server: Server, path: str) -> Any:
    with urllib.request.urlopen(server.url + path, timeout=30) as answer:
        return json.loads(answer.read())


def test_click_through_overview_prompt_judgments_battles(browser: Any, server: Server,
                                                         tiny_run: Path) -> None:
    from selenium.webdriver.common.by import By

    go(browser, server.url)
    assert texts(browser, "section.iteration h2")[0].startswith("Iteration 1")
    assert browser.find_elements(By.CSS_SELECTOR, "section.iteration svg.chart rect.bar")
    health = browser.find_element(By.CSS_SELECTOR, "section.iteration .health").text
    assert "meta-judge first-position share" in health and "parsed" in health

    click(browser, "a.prompts-link")
    assert "/iter/1" in browser.current_url
    assert len(browser.find_elements(By.CSS_SELECTOR, "tr.prompt-row")) == 4
    box = browser.find_element(By.CSS_SELECTOR, "form#filters input[name=q]")
    box.send_keys("rivers")
    browser.find_element(By.CSS_SELECTOR, "form#filters button").click()
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, WAIT_S).until(lambda d: "q=rivers" in d.current_url)
    _ready(browser)
    assert texts(browser, "a.prompt-link") == ["rivers"]
    go(browser, server.url + "#/iter/1?sort=variance&desc=1")
    listed = api(server, "api/iter/1/prompts.json?sort=variance&desc=1")
    assert texts(browser, "a.prompt-link") == [r["prompt_id"] for r in listed["rows"]]

    click(browser, "a.prompt-link")
    prompt_id = browser.find_element(By.CSS_SELECTOR, "h1").text.removeprefix("Prompt ")
    page = api(server, f"api/iter/1/prompt/{prompt_id.encode().hex()}.json")
    assert len(browser.find_elements(By.CSS_SELECTOR, "section.response")) == 3
    judgments = browser.find_elements(By.CSS_SELECTOR, "section.response details.judgments")[0]
    assert not judgments.find_element(By.CSS_SELECTOR, "table").is_displayed()
    judgments.find_element(By.CSS_SELECTOR, "summary").click()
    scores = [e.text for e in judgments.find_elements(By.CSS_SELECTOR, "td.score")]
    assert scores == [str(int(j["score"])) if j["score"] is not None else "absent"
                      for j in page["responses"][0]["judgments"]]

    battles = browser.find_elements(By.CSS_SELECTOR, "table#battles tr.battle")
    assert len(battles) == len(page["meta"]["battles"]) == 6  # 3 judgments, ordered pairs
    assert [b.get_attribute("data-id") for b in battles] == [
        b["id"] for b in page["meta"]["battles"]]
    chosen = [p for p in page["pairs"] if p["pair_type"] == "judge"]
    if chosen:  # the rating shown for the chosen judgment is the pair's chosen score
        row = [r for r in browser.find_elements(By.CSS_SELECTOR, "table#ratings tr")
               if "chosen" in r.text][0]
        assert f"{chosen[0]['chosen_score']:.1f}" in row.text
    raw = texts(browser, "pre.dpo-raw")
    lines = (tiny_run / "iter_01" / "dpo_pairs.jsonl").read_text().splitlines()
    assert raw and all(r in lines for r in raw)  # the DPO rows exactly as written

    click(browser, "tr.battle a", 3)
    assert "/battle/" in browser.current_url
    target = browser.find_element(By.CSS_SELECTOR, "tr.battle.target")
    assert target.get_attribute("data-id") == page["meta"]["battles"][3]["id"]
    assert target.find_element(By.CSS_SELECTOR, "pre.battle-text").is_displayed()

    if chosen:  # the chosen judgment's link opens it among its response's judgments
        click(browser, "a.chosen-judgment")
        row = browser.find_element(By.CSS_SELECTOR, "tr.judgment.target")
        assert row.get_attribute("data-id") == chosen[0]["chosen_id"]
        assert row.find_element(By.CSS_SELECTOR, "pre.judgment-text").is_displayed()
        assert "chosen" in row.text

    response = page["responses"][1]["id"]
    go(browser, server.url + f"#/iter/1/prompt/{urllib.parse.quote(prompt_id)}/response/"
       f"{urllib.parse.quote(response)}")
    card = browser.find_element(By.CSS_SELECTOR, "section.response.target")
    assert card.get_attribute("data-id") == response
    assert card.find_element(By.CSS_SELECTOR, "details.judgments table").is_displayed()


def test_model_text_is_shown_as_text_and_no_script_runs(browser: Any, server: Server) -> None:
    from selenium.webdriver.common.by import By

    for prompt_id, payload in (("xss-script", PAYLOAD_SCRIPT), ("xss-img", PAYLOAD_IMG)):
        go(browser, server.url + f"#/iter/1/prompt/{prompt_id}")
        responses = texts(browser, "pre.response-text")
        assert len(responses) == 3 and all(payload in r for r in responses), responses
        assert payload in browser.find_element(By.CSS_SELECTOR, "pre.instruction").text
        assert any(payload.replace('"', '\\"') in r for r in texts(browser, "pre.dpo-raw"))
        assert browser.execute_script("return window.__pwned") is None
        assert not browser.find_elements(By.CSS_SELECTOR, "main img, main script")
        scripts = browser.execute_script(
            "return Array.from(document.scripts, s => s.getAttribute('src'))")
        assert scripts == ["app.js"]


def test_the_static_bundle_shows_the_same_pages(browser: Any, server: Server,
                                                tmp_path: Path, tiny_run: Path) -> None:
    import subprocess

    bundle = tmp_path / "bundle"
    made = subprocess.run(view_command(str(tiny_run), "--bundle", str(bundle), "--harness",
                                       str(ROOT / "results" / "harness")),
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert made.returncode == 0, made.stderr
    static = Server([sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1",
                     "--directory", str(bundle)], "Serving HTTP on")
    try:
        battle = api(server, "api/iter/1/prompt/" + b"rivers".hex() + ".json")[
            "meta"]["battles"][2]["id"]
        routes = ["#/", "#/iter/1", "#/iter/1?sort=spread&desc=1", "#/iter/1?q=repeat",
                  "#/iter/1?pair=judge&min_variance=0.5", "#/iter/1/prompt/xss-img",
                  f"#/iter/1/prompt/rivers/battle/{urllib.parse.quote(battle)}",
                  "#/harness", "#/harness/arena_hard/tiny-iter_02"]
        for route in routes:
            go(browser, server.url + route)
            served = browser.find_element("css selector", "main").text
            go(browser, static.url + route)
            bundled = browser.find_element("css selector", "main").text
            assert bundled == served, route
            assert "Not found" not in bundled, route
        assert browser.execute_script("return window.__pwned") is None
    finally:
        static.stop()


def test_the_bundle_opens_long_and_non_ascii_ids(browser: Any, tmp_path: Path) -> None:
    """Bundle files are named by the id's SHA-256: the app finds them by SubtleCrypto and,
    where there is none (not a secure context), by the bundle's ``api/names.json``."""
    import subprocess

    from selenium.webdriver.common.by import By

    ids = ["long-" + "x" * 300, "née-" + "été" * 60 + "-答案 / ?#" * 30]
    run = make_run(tmp_path, [{"id": i, "instruction": f"Say {n}."} for n, i in enumerate(ids)]
                   + [{"id": "a", "instruction": "Say a."}, {"id": "b", "instruction": "Say b."}],
                   stages=("generate", "judge"))
    bundle = tmp_path / "bundle"
    made = subprocess.run(view_command(str(run), "--bundle", str(bundle)),
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert made.returncode == 0, made.stderr
    static = Server([sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1",
                     "--directory", str(bundle)], "Serving HTTP on")
    no_subtle = None
    try:
        for subtle in (True, False):
            if not subtle:
                no_subtle = browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {
                    "source": "Object.defineProperty(Crypto.prototype, 'subtle', "
                              "{get: () => undefined})"})
            browser.get("about:blank")  # a new document: the script above runs first
            for prompt_id in ids:
                go(browser, static.url + "#/iter/1/prompt/" + urllib.parse.quote(prompt_id, ""))
                assert browser.execute_script("return !!crypto.subtle") is subtle
                assert texts(browser, "h1") == [f"Prompt {prompt_id}"]
                assert len(browser.find_elements(By.CSS_SELECTOR, "section.response")) == 3
                wide = browser.execute_script(  # a long id wraps: the page is not widened
                    "const w = document.documentElement.clientWidth;"
                    "return Array.from(document.querySelectorAll('body *'))"
                    ".filter(e => e.getBoundingClientRect().right > w + 1)"
                    ".map(e => e.tagName + '.' + e.className).slice(0, 5)")
                assert wide == [], wide
    finally:
        if no_subtle is not None:
            browser.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", no_subtle)
        static.stop()


def test_harness_views_show_model_beside_baseline(browser: Any, server: Server) -> None:
    from selenium.webdriver.common.by import By

    go(browser, server.url + "#/harness")
    assert {"alpaca_eval", "arena_hard", "mt_bench"} <= set(
        texts(browser, "table#harness td:first-child"))
    go(browser, server.url + "#/harness/arena_hard/tiny-iter_02")
    click(browser, "a.question-link")
    games = browser.find_elements(By.CSS_SELECTOR, "section.game")
    assert {g.find_element(By.CSS_SELECTOR, "h3").text.split()[-1] for g in games} == {"A", "B"}
    model = browser.find_element(By.CSS_SELECTOR, "pre.model-answer").text
    baseline = browser.find_element(By.CSS_SELECTOR, "pre.baseline-answer").text
    assert model and baseline and model != baseline
    go(browser, server.url + "#/harness/mt_bench/tiny-iter_02")
    click(browser, "a.question-link")
    assert len(browser.find_elements(By.CSS_SELECTOR, "section.turn")) == 2


def test_screenshots_of_each_view(browser: Any, server: Server, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    folder = Path(os.environ.get("METAJUDGE_EXPLORER_SCREENSHOTS") or tmp_path)
    other = os.environ.get("METAJUDGE_EXPLORER_RUN")
    served = server if other is None else Server(view_command(
        other, "--port", "0", "--harness", str(ROOT / "results" / "harness")),
        "explorer: http://")
    try:
        url = served.url
        go(browser, url)
        shot(browser, "1_overview", folder)
        go(browser, url + "#/iter/1?sort=variance&desc=1")
        shot(browser, "2_prompt_list", folder)
        paired = (api(served, "api/iter/1/prompts.json?pair=both")["rows"]
                  or api(served, "api/iter/1/prompts.json?pair=actor")["rows"])
        first = paired[0]["prompt_id"] if paired else browser.find_element(
            By.CSS_SELECTOR, "a.prompt-link").text
        page = api(served, f"api/iter/1/prompt/{first.encode().hex()}.json")
        selected = page["meta"]["selection"]["response_id"]
        base = f"#/iter/1/prompt/{urllib.parse.quote(first)}"
        go(browser, url + f"{base}/response/{urllib.parse.quote(selected)}")
        assert browser.find_elements(By.CSS_SELECTOR, "section.response.target tr.judgment")
        shot(browser, "3_prompt_responses_judgments", folder)
        battle = page["meta"]["battles"][1]["id"]
        go(browser, url + f"{base}/battle/{urllib.parse.quote(battle)}")
        assert browser.find_elements(By.CSS_SELECTOR, "tr.battle.target")
        shot(browser, "4_meta_judge_battles", folder)
        go(browser, url + base)
        if page["comparisons"]:
            browser.execute_script("document.getElementById('compare').scrollIntoView()")
            shot_element(browser, "compare", "8_chosen_beside_rejected", folder)
        go(browser, url + "#/harness")
        shot(browser, "5_harness", folder)
        go(browser, url + "#/harness/arena_hard/tiny-iter_02")
        shot(browser, "6_harness_arena_hard", folder)
        click(browser, "a.question-link")
        shot(browser, "7_harness_question", folder)
        shot_element(browser, "across", "9_harness_question_across_checkpoints", folder)
    finally:
        if served is not server:
            served.stop()
    assert len(list(folder.glob("*.png"))) >= 8
