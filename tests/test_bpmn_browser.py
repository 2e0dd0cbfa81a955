"""The BPMN export opened the way a modeler opens it: bpmn-js (from the npm registry,
installed by `scripts/ensure_browser.sh`) in the system's headless Chromium, driven by
Playwright. Every sample's export imports without a warning and draws every shape it holds; the
pictures are saved under out/bpmn/ (the path is printed) so a person can look at them.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import sync_playwright

import procflow
from procflow.visualize.bpmn import BPMNDI, bpmn_xml
from tests.browser_helpers import ARGS, CHROMIUM

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted((ROOT / "processes").glob("*.proc")) + sorted((ROOT / "tests" / "cases" / "diagrams").glob("*.proc"))
VIEWER = ROOT / "build" / "npm" / "node_modules" / "bpmn-js" / "dist" / "bpmn-navigated-viewer.development.js"
PAGE = """<!doctype html>
<html><head><meta charset="utf-8">
<link rel="stylesheet" href="{assets}/diagram-js.css">
<link rel="stylesheet" href="{assets}/bpmn-js.css">
<style>html, body, #canvas {{ margin: 0; width: 100%; height: 100%; background: white; }}</style>
<script src="{viewer}"></script>
</head><body><div id="canvas"></div></body></html>
"""


def _import_all(xmls: dict[str, str], page_file: Path, pictures: Path) -> dict[str, dict[str, Any]]:
    """Import each XML into a fresh bpmn-js viewer; its warnings and the elements it drew.
    A screenshot of each is saved in `pictures`."""
    page_file.write_text(
        PAGE.format(assets=(VIEWER.parent / "assets").as_uri(), viewer=VIEWER.as_uri()), encoding="utf-8"
    )
    results: dict[str, dict[str, Any]] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(page_file.as_uri())
            for name, xml in xmls.items():
                result: dict[str, Any] = page.evaluate(
                    """async (xml) => {
                        document.querySelector('#canvas').innerHTML = '';
                        const viewer = new BpmnJS({ container: '#canvas' });
                        const { warnings } = await viewer.importXML(xml);
                        viewer.get('canvas').zoom('fit-viewport');
                        const shapes = viewer.get('elementRegistry').getAll()
                            .filter((e) => !e.waypoints && e.type !== 'label')
                            .map((e) => e.businessObject.id);
                        return { warnings: warnings.map((w) => w.message), shapes };
                    }""",
                    xml,
                )
                page.screenshot(path=str(pictures / f"{name}-bpmn-js.png"))
                result["page_errors"] = list(errors)
                results[name] = result
        finally:
            browser.close()
    return results


@pytest.mark.slow
def test_bpmn_js_opens_every_export_without_warnings(tmp_path: Path) -> None:
    assert CHROMIUM.exists(), "Chromium is missing: `make setup` installs it (scripts/ensure_browser.sh)"
    assert VIEWER.exists(), "bpmn-js is missing: `make setup` installs it (scripts/ensure_browser.sh)"
    xmls = {path.stem: bpmn_xml(procflow.load(str(path))) for path in SAMPLES}
    pictures = ROOT / "out" / "bpmn"
    pictures.mkdir(parents=True, exist_ok=True)
    results = _import_all(xmls, tmp_path / "viewer.html", pictures)
    print(f"bpmn-js screenshots of the exports: {pictures}/*-bpmn-js.png "
          f"(the order process: {pictures / 'order_fulfillment-bpmn-js.png'})")
    for name, result in results.items():
        assert result["warnings"] == [], f"{name}: " + json.dumps(result["warnings"], indent=2)
        assert result["page_errors"] == [], name
        # Every element with a shape in the file is drawn.
        document = ET.fromstring(xmls[name])
        shaped = {e.get("bpmnElement") for e in document.iter(f"{{{BPMNDI}}}BPMNShape")}
        assert shaped <= set(result["shapes"]), f"{name}: not drawn: {sorted(shaped - set(result['shapes']))}"
    order = results["order_fulfillment"]["shapes"]
    for element in ("send_reserve_inventory", "receive_create_shipment", "timeout_authorize_payment",
                    "compensation_reserve_inventory", "undo_authorize_payment", "participant_payment"):
        assert element in order
    assert (pictures / "order_fulfillment-bpmn-js.png").stat().st_size > 10_000  # a picture, not an empty page
