"""The BPMN export opened the way a modeler opens it: bpmn-js (from the npm registry,
installed by `scripts/ensure_browser.sh`) in the system's headless Chromium, driven by
Playwright. The exported order process imports without a warning, and its picture is saved
(the path is printed) so a person can look at it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

import procflow
from procflow.visualize.bpmn import bpmn_xml

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
VIEWER = ROOT / "build" / "npm" / "node_modules" / "bpmn-js" / "dist" / "bpmn-navigated-viewer.development.js"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
PAGE = """<!doctype html>
<html><head><meta charset="utf-8">
<link rel="stylesheet" href="{assets}/diagram-js.css">
<link rel="stylesheet" href="{assets}/bpmn-js.css">
<style>html, body, #canvas {{ margin: 0; width: 100%; height: 100%; background: white; }}</style>
<script src="{viewer}"></script>
</head><body><div id="canvas"></div></body></html>
"""


def _imported(xml: str, page_file: Path, picture: Path) -> dict[str, object]:
    """Import the XML into a bpmn-js viewer; return its warnings and what it drew."""
    page_file.write_text(
        PAGE.format(assets=(VIEWER.parent / "assets").as_uri(), viewer=VIEWER.as_uri()), encoding="utf-8"
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(page_file.as_uri())
            result: dict[str, object] = page.evaluate(
                """async (xml) => {
                    const viewer = new BpmnJS({ container: '#canvas' });
                    const { warnings } = await viewer.importXML(xml);
                    viewer.get('canvas').zoom('fit-viewport');
                    const shapes = viewer.get('elementRegistry').getAll()
                        .filter((e) => !e.waypoints && e.type !== 'bpmn:Collaboration' && e.type !== 'label')
                        .map((e) => e.businessObject.id);
                    return { warnings: warnings.map((w) => w.message), shapes };
                }""",
                xml,
            )
            page.screenshot(path=str(picture))
            result["page_errors"] = errors
            return result
        finally:
            browser.close()


@pytest.mark.slow
def test_bpmn_js_opens_the_order_process_without_warnings(tmp_path: Path) -> None:
    assert CHROMIUM.exists(), "Chromium is missing: `make setup` installs it (scripts/ensure_browser.sh)"
    assert VIEWER.exists(), "bpmn-js is missing: `make setup` installs it (scripts/ensure_browser.sh)"
    xml = bpmn_xml(procflow.load(str(ROOT / "processes" / "order_fulfillment.proc")))
    picture = ROOT / "out" / "bpmn" / "order_fulfillment-bpmn-js.png"
    picture.parent.mkdir(parents=True, exist_ok=True)
    result = _imported(xml, tmp_path / "viewer.html", picture)
    print(f"bpmn-js screenshot of the exported order process: {picture}")
    assert result["warnings"] == [], json.dumps(result["warnings"], indent=2)
    assert result["page_errors"] == []
    drawn = set(result["shapes"])  # type: ignore[arg-type]
    for element in ("send_reserve_inventory", "receive_create_shipment", "timeout_authorize_payment",
                    "compensation_reserve_inventory", "undo_authorize_payment", "participant_payment"):
        assert element in drawn
    assert picture.stat().st_size > 10_000  # a picture, not an empty page
