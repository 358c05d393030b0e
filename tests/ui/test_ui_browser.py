"""The web UI in a real browser: Playwright for Python driving Debian's Chromium
(``/usr/bin/chromium``; Playwright's own browser download is not used). Where Chromium or
Playwright is missing the tests skip saying so; under CI (``CI`` set) they fail instead."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.ui.conftest import TOKEN, settings_for

from trellis.ui.server import BackgroundServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.serial  # a browser and a server: timing-sensitive on a busy CPU


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"the browser tests cannot run under CI: {reason}", pytrace=False)
    pytest.skip(f"the browser tests need {reason}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright for Python (pip install playwright)")
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def ui(sample: tuple[Path, dict[str, str]]) -> Iterator[tuple[str, dict[str, str], Path]]:
    store, ids = sample
    with BackgroundServer(settings_for(store)) as url:
        yield url, ids, store


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    opened.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    yield opened
    context.close()
    assert errors == []  # no script error, no refused resource (CSP) on any page


def test_every_page_opens(page: Any, ui: tuple[str, dict[str, str], Path]) -> None:
    url, ids, _ = ui
    page.goto(url + "/")
    assert page.locator("table.runs tbody tr").count() == 6
    for role in ("batch", "failed", "waiting", "cascade", "cascade_llm", "agent"):
        page.goto(f"{url}/runs/{ids[role]}")
        assert page.locator("h1").inner_text().strip()
    page.goto(f"{url}/runs/{ids['failed']}")
    assert "could not convert string to float" in page.locator(".error-box").first.inner_text()
    page.goto(f"{url}/compare?a={ids['cascade']}&b={ids['cascade_llm']}")
    assert "they differ" in page.content()
    assert page.evaluate("typeof htmx") == "object"  # the vendored htmx loaded


def test_follow_a_run_from_the_list(page: Any, ui: tuple[str, dict[str, str], Path]) -> None:
    url, ids, _ = ui
    page.goto(url + "/")
    page.select_option("select[name=status]", "failed")
    page.click("button:has-text('Filter')")
    page.wait_for_url(re.compile(r"status=failed"))
    rows = page.locator("table.runs tbody tr")
    assert rows.count() == 1
    rows.first.locator("a.run-link").click()
    page.wait_for_url(f"{url}/runs/{ids['failed']}")
    page.click("svg.graph a.node.failed")  # the failed step, from the graph
    assert page.url.endswith("#step-parse_total")
    assert page.locator("#step-parse_total").get_attribute("open") is not None


def test_open_an_attempts_prompt_and_an_agents_failed_tool(
    page: Any, ui: tuple[str, dict[str, str], Path]
) -> None:
    url, ids, _ = ui
    page.goto(f"{url}/runs/{ids['cascade_llm']}")
    step = page.locator("#step-llm_review")
    step.locator("summary").first.click()
    convo = step.locator("details.convo").last
    assert not convo.locator(".msg").first.is_visible()  # closed until asked
    convo.locator("summary").click()
    sent = convo.locator(".msg.role-user .msg-text").first
    assert sent.is_visible() and "Consider context, idiom and sarcasm" in sent.inner_text()
    assert convo.locator(".msg.role-assistant").first.is_visible()
    page.goto(f"{url}/runs/{ids['agent']}")
    agent = page.locator("#step-answer")
    agent.locator("summary").first.click()
    failed = agent.locator(".tool-call.bad").first
    assert "raised ConnectionError" in failed.inner_text()
    assert "support_agent.py" in failed.locator(".traceback").inner_text()


def test_answer_a_waiting_step_in_the_browser(
    page: Any, ui: tuple[str, dict[str, str], Path]
) -> None:
    url, ids, _ = ui
    run = ids["waiting"]
    page.goto(f"{url}/?token={TOKEN}")  # the URL `trellis ui` prints
    page.fill("input[name=flow]", "approval")
    page.press("input[name=flow]", "Enter")
    page.wait_for_url(re.compile(r"flow=approval"))
    page.click(f"a[href='/runs/{run}']")
    assert page.locator(".badge.s-waiting").first.is_visible()
    page.fill("input[name=comment]", "confirmed with on-call")
    page.click("button.approve")
    page.wait_for_selector(".flash")
    assert "the run is done now" in page.locator(".flash").inner_text()
    assert page.locator("h1 .badge").inner_text() == "done"
    page.goto(f"{url}/api/runs/{run}")
    assert '"status":"done"' in page.content().replace(" ", "")
