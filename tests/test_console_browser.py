"""The console in a real browser (issue 18, must show 1): Debian's headless Chromium
(installed by `scripts/ensure_browser.sh`, never by `playwright install`) driven by
Playwright against a running `procflow serve`. An operator opens the list, filters it to
compensation_failed, opens the instance, sees its overlay, presses Retry with the token and
sees the status change. Screenshots of the three pages are saved under out/console/ (the
path is printed); the README shows the instance page from docs/console/.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.browser_helpers import ARGS, CHROMIUM
from tests.console_helpers import ROOT, STUCK, fill, running_console

TOKEN = "browser-token"
CURRENT = "#d6eaf8"  # how visualize/dot.py fills a step that waits now
FAILED = "#f5b7b1"


def node_fill(page: Page, node_id: str) -> str | None:
    """The fill of the drawn shape of flow node `node_id` in the page's inline SVG."""
    fill_of: str | None = page.evaluate(
        """(id) => {
            const node = [...document.querySelectorAll('#flow g.node')].find((g) => g.querySelector('title').textContent === id);
            const shape = node && node.querySelector('path, polygon, ellipse');
            return shape ? shape.getAttribute('fill') : null;
        }""",
        node_id,
    )
    return fill_of


@pytest.mark.slow
def test_an_operator_finds_and_retries_a_stuck_instance(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    fill(store)
    pictures = ROOT / "out" / "console"
    pictures.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    with running_console(store, TOKEN) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.goto(f"{base}/")
            expect(page.locator("#instances tbody tr")).to_have_count(5)
            expect(page.locator("#instances")).to_contain_text("<script>alert(1)</script>")  # shown as text
            page.screenshot(path=str(pictures / "instances.png"), full_page=True)

            page.select_option("#filter-status", "compensation_failed")
            page.click("#filter-apply")
            page.wait_for_url(re.compile(r"status=compensation_failed"))
            expect(page.locator("#instances tbody tr")).to_have_count(1)
            page.click(f"text={STUCK}")
            page.wait_for_url(f"{base}/instances/{STUCK}")
            expect(page.locator("#status")).to_have_text("compensation_failed")
            assert node_fill(page, "authorize_payment.undo") == FAILED  # the undo that could not be done
            page.screenshot(path=str(pictures / "instance.png"))  # the top: the record, the Retry and the overlay

            page.fill("#retry-token", TOKEN)
            page.click("#retry")
            page.wait_for_url(re.compile(rf"/instances/{STUCK}\?notice="))
            expect(page.locator("#status")).to_have_text("compensating")
            expect(page.locator("#notice")).to_have_text("retried: compensation_failed → compensating")
            # Now it waits for the undo again: that step is marked as waiting on the overlay.
            assert node_fill(page, "authorize_payment.undo") == CURRENT
            expect(page.locator("#commands")).to_contain_text("payment.void")
            page.screenshot(path=str(pictures / "instance-retried.png"), full_page=True)

            page.goto(f"{base}/instances/wf_wait")
            assert node_fill(page, "reserve_inventory") == CURRENT

            page.goto(f"{base}/processes")
            expect(page.locator("h2", has_text="order-fulfillment")).to_contain_text("5 instances")
            page.screenshot(path=str(pictures / "processes.png"), full_page=False)
        finally:
            browser.close()
    print(f"screenshots in {pictures}")
    assert errors == []  # no script error, no refused resource (the CSP lets the page's own files in)


@pytest.mark.slow
def test_the_list_refreshes_in_the_browser(tmp_path: Path) -> None:
    from procflow.interpreter.stores import open_store
    from procflow.operator_cli import load_definition, start_instance
    from tests.console_helpers import ORDER, at

    store = tmp_path / "s.sqlite"
    fill(store)
    with running_console(store, TOKEN) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{base}/")
            expect(page.locator("#instances tbody tr")).to_have_count(5)
            marker = page.evaluate("() => { window.stillHere = true; return true; }")
            with open_store(str(store)) as opened:
                start_instance(opened, load_definition(str(ORDER)), "wf_late", {"orderId": "ord_late", "amount": 1.0},
                               lambda: at("2026-01-03T00:00:00Z"))
            expect(page.locator("#instances tbody tr").first).to_contain_text("wf_late", timeout=15_000)
            assert marker and page.evaluate("() => window.stillHere") is True  # no reload: the same page
        finally:
            browser.close()
