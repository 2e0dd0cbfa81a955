"""The operator's console in-process (Starlette's TestClient): its pages, its API, its metrics
and its safety rules (issue 18). The browser tests are tests/test_console_browser.py; the
OpenAPI check against a running server is tests/test_console_api_schema.py."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from procflow.console_app import create_app
from procflow.console_data import read_page
from procflow.console_security import CSP, CSRF_COOKIE
from procflow.interpreter.stores import open_store
from procflow.operator_cli import load_definition, start_instance
from tests.console_helpers import ORDER, PROCESSES, SCRIPT_ID, STUCK, at, fill

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store made once; tests that change it copy it first."""
    path = tmp_path_factory.mktemp("console") / "s.sqlite"
    fill(path)
    return path


@pytest.fixture
def store(filled: Path, tmp_path: Path) -> Path:
    """A fresh copy of the filled store for one test."""
    copy = tmp_path / "s.sqlite"
    copy.write_bytes(filled.read_bytes())
    return copy


def client(store: Path, token: str | None = TOKEN, host: str = "127.0.0.1") -> TestClient:
    return TestClient(create_app(str(store), PROCESSES, token, host), base_url="http://127.0.0.1:8080")


@pytest.fixture
def web(store: Path) -> Iterator[TestClient]:
    with client(store) as opened:
        yield opened


def status_of(store: Path, workflow_id: str) -> tuple[str, int]:
    with open_store(str(store), create=False) as opened:
        row = opened.get(workflow_id)
        assert row is not None
        return row.state.status, row.version


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "the page has no CSRF field"
    return found.group(1)


# ---------------------------------------------------------------- the instances list


def test_the_list_counts_by_status_and_sorts_by_last_change(web: TestClient) -> None:
    page = web.get("/")
    assert page.status_code == 200
    ids = re.findall(r'class="instance-link" href="[^"]+">([^<]+)</a>', page.text)
    assert ids == ["&lt;script&gt;alert(1)&lt;/script&gt;", "wf_wait", STUCK, "wf_done", "wf_failed"]
    counts = dict(re.findall(r'<li class="status-(\w+)"><a [^>]+>\1 <b>(\d+)</b>', page.text))
    assert counts == {"compensation_failed": "1", "completed": "1", "failed": "1", "waiting_for_inventory": "2"}
    assert "all <b>5</b>" in page.text


def test_filters_by_status_process_and_text(web: TestClient) -> None:
    def ids(query: str) -> list[str]:
        return re.findall(r'class="instance-link" href="[^"]+">([^<]+)</a>', web.get(f"/?{query}").text)

    assert ids("status=compensation_failed") == [STUCK]
    assert ids("q=ord_done") == ["wf_done"]  # a correlation key
    assert ids("q=wf_failed") == ["wf_failed"]  # an id
    assert ids("process=order-fulfillment&status=failed") == ["wf_failed"]
    assert ids("process=refund") == []
    assert "No instances match these filters" in web.get("/?process=refund").text


def test_pages_follow_one_another_without_repeating(store: Path) -> None:
    with open_store(str(store)) as opened:
        first = read_page(opened, None, None, None, 2, None)
        second = read_page(opened, None, None, None, 2, first.after)
        third = read_page(opened, None, None, None, 2, second.after)
        everything = read_page(opened, None, None, None, 50, None)
    seen = [r.workflow_id for page in (first, second, third) for r in page.rows]
    assert seen == [r.workflow_id for r in everything.rows]
    assert third.after is None and everything.after is None


def test_the_list_refreshes_itself_from_a_fragment(web: TestClient, store: Path) -> None:
    page = web.get("/?status=waiting_for_inventory")
    assert 'data-refresh="/fragments/instances?status=waiting_for_inventory"' in page.text
    assert '<script src="/static/console.js" defer></script>' in page.text
    script = web.get("/static/console.js")
    assert script.status_code == 200 and "setInterval" in script.text
    before = web.get("/fragments/instances?status=waiting_for_inventory").text
    assert "<html" not in before and "wf_wait" in before
    with open_store(str(store)) as opened:
        start_instance(opened, load_definition(str(ORDER)), "wf_new", {"orderId": "ord_new", "amount": 1.0}, lambda: at("2026-01-02T00:00:00Z"))
    after = web.get("/fragments/instances?status=waiting_for_inventory").text
    assert "wf_new" in after and "wf_new" not in before


def test_a_bad_cursor_is_refused_in_words(web: TestClient) -> None:
    page = web.get("/?after=nonsense")
    assert page.status_code == 422
    assert "the paging cursor `nonsense` is not one procflow handed out; start again from the first page" in page.text
    assert web.get("/api/instances?after=nonsense").status_code == 422  # the document's pattern refuses it


# ---------------------------------------------------------------- one instance


def _node_fill(svg: str, node_id: str) -> str | None:
    """The fill of the shape of the node named `node_id` in Graphviz's SVG."""
    ns = {"s": "http://www.w3.org/2000/svg"}
    root = ET.fromstring(svg)
    for group in root.iter("{http://www.w3.org/2000/svg}g"):
        title = group.find("s:title", ns)
        if group.get("class") == "node" and title is not None and title.text == node_id:
            for shape in group.iter():
                if shape.tag.rsplit("}", 1)[-1] in ("path", "polygon", "ellipse") and shape.get("fill") not in (None, "none"):
                    return shape.get("fill")
    return None


def test_an_instance_page_shows_overlay_record_commands_timers_history(web: TestClient, store: Path) -> None:
    page = web.get("/instances/wf_wait").text
    record = re.findall(r"<tr><th>(\w+)</th><td>", page)
    assert record[:6] == ["workflowId", "type", "status", "completedSteps", "nextAction", "timeoutAt"]
    flow = re.search(r'<div class="diagram" id="flow">(.*?)</div>', page, re.S)
    assert flow is not None
    with open_store(str(store)) as opened:
        row = opened.get("wf_wait")
        assert row is not None
        wait_node = row.state.waits[0].node
    assert _node_fill(flow.group(1), wait_node) == "#d6eaf8"  # `current` in visualize/dot.py
    assert _node_fill(flow.group(1), "authorize_payment") != "#d6eaf8"
    assert "<code>ord_wait:inventory.reserve:reserve_inventory#1</code></td><td>not sent yet" in page
    assert re.search(r'<table id="timers">.*reserve_inventory \(attempt 1\).*2026-01-01T09:10:30Z', page, re.S)
    assert re.search(r'<ol class="timeline" id="history">\s*<li><span class="seq">1</span>', page)
    assert '<div class="diagram" id="sequence"><svg' in page
    assert 'id="retry-form"' not in page  # only a compensation_failed instance has a Retry


def test_a_compensation_failed_instance_has_a_retry_button(web: TestClient) -> None:
    page = web.get(f"/instances/{STUCK}").text
    assert 'id="retry-form"' in page and 'name="token"' in page
    assert "could not undo: payment.void" in page  # the overlay's legend


def test_a_missing_instance_is_a_worded_404(web: TestClient) -> None:
    answer = web.get("/instances/nope")
    assert answer.status_code == 404 and "no instance nope in the store" in answer.text


def test_the_processes_page_shows_definitions_paths_and_participants(web: TestClient) -> None:
    page = web.get("/processes").text
    order = page.index("<h2>order-fulfillment <small>version 1")
    section = page[order: page.index("</section>", order)]
    assert "5 instances" in section
    assert "<tr><td>happy</td><td>completed</td><td>reserve_inventory, authorize_payment, create_shipment</td><td>-</td></tr>" in section
    payment = section[section.index("<tr><td>payment</td>"):]
    payment = payment[: payment.index("</tr>")]
    assert "<summary>payment.authorize</summary>" in payment and "<summary>payment.void</summary>" in payment
    assert "<summary>payment_authorized</summary>" in payment
    assert section.count('<div class="diagram"><svg') >= 2
    assert "<h2>refund <small>version" in page and "0 instances" in page


# ---------------------------------------------------------------- actions and their safety


def test_retry_in_the_browser_form_needs_token_and_csrf(web: TestClient, store: Path) -> None:
    page = web.get(f"/instances/{STUCK}")
    csrf = csrf_of(page.text)
    assert web.cookies.get(CSRF_COOKIE) == csrf
    form = {"csrf": csrf, "workflowId": STUCK, "token": "wrong"}
    refused = web.post("/retry", data=form, headers={"Origin": "http://127.0.0.1:8080"})
    assert refused.status_code == 401 and status_of(store, STUCK)[0] == "compensation_failed"
    done = web.post("/retry", data={**form, "token": TOKEN}, headers={"Origin": "http://127.0.0.1:8080"}, follow_redirects=False)
    assert done.status_code == 303
    assert status_of(store, STUCK)[0] == "compensating"
    shown = web.get(done.headers["location"]).text
    assert 'id="status">compensating<' in shown and "retried: compensation_failed → compensating" in shown


def test_a_cross_site_form_post_is_refused_and_changes_nothing(web: TestClient, store: Path) -> None:
    before = status_of(store, STUCK)
    csrf = csrf_of(web.get(f"/instances/{STUCK}").text)
    form = {"csrf": csrf, "workflowId": STUCK, "token": TOKEN}
    # Another site's page posting the form: the browser says where it comes from.
    evil = web.post("/retry", data=form, headers={"Origin": "http://evil.example"})
    assert evil.status_code == 403 and "cross-site request refused" in evil.text
    # Without the page's cookie (SameSite=Strict keeps it from cross-site posts).
    web.cookies.clear()
    no_cookie = web.post("/retry", data=form)
    assert no_cookie.status_code == 403
    assert status_of(store, STUCK) == before


def test_an_action_without_the_token_is_refused_and_changes_nothing(web: TestClient, store: Path) -> None:
    before = status_of(store, STUCK)
    assert web.post(f"/api/instances/{STUCK}/retry").status_code == 401
    assert web.post(f"/api/instances/{STUCK}/retry", headers={"Authorization": "Bearer nope"}).status_code == 401
    start = {"process": "order-fulfillment", "workflowId": "wf_x", "input": {"orderId": "o", "amount": 1.0}}
    assert web.post("/api/instances", json=start).status_code == 401
    assert web.post("/api/messages", json={"type": "payment_voided", "correlationId": "ord_stuck"}).status_code == 401
    assert status_of(store, STUCK) == before
    with open_store(str(store)) as opened:
        assert opened.get("wf_x") is None


def test_without_a_server_token_actions_are_off(store: Path) -> None:
    with client(store, token=None) as web:
        answer = web.post(f"/api/instances/{STUCK}/retry", headers=AUTH)
        assert answer.status_code == 403 and "started without a token" in answer.json()["error"]
        assert web.get("/").status_code == 200  # reading on loopback needs no token


def test_beyond_loopback_reading_needs_the_token(store: Path) -> None:
    with client(store, host="0.0.0.0") as web:
        assert web.get("/").status_code == 401
        assert web.get("/api/instances").status_code == 401
        assert web.get("/", headers=AUTH).status_code == 200


def test_the_script_id_is_shown_as_text_and_pages_forbid_inline_scripts(web: TestClient) -> None:
    for path in ("/", "/instances/%3Cscript%3Ealert%281%29%3C%2Fscript%3E", "/processes"):
        answer = web.get(path)
        assert answer.headers["content-security-policy"] == CSP
        assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
        assert SCRIPT_ID not in answer.text
        # The only script tag is the server's own file.
        assert re.findall(r"<script[^>]*>", answer.text) == ['<script src="/static/console.js" defer>']
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in web.get("/").text


# ---------------------------------------------------------------- the API


def test_the_api_lists_gets_starts_delivers_and_retries(web: TestClient, store: Path) -> None:
    listed = web.get("/api/instances", params={"status": "waiting_for_inventory", "limit": 1}).json()
    assert [i["workflowId"] for i in listed["instances"]] == [SCRIPT_ID] and listed["after"]
    following = web.get("/api/instances", params={"status": "waiting_for_inventory", "after": listed["after"]}).json()
    assert [i["workflowId"] for i in following["instances"]] == ["wf_wait"] and following["after"] is None
    detail = web.get("/api/instances/wf_wait").json()
    assert detail["state"]["status"] == "waiting_for_inventory" and detail["outbox"][0]["sentAt"] is None
    start = {"process": "order-fulfillment", "workflowId": "wf_api", "input": {"orderId": "ord_api", "amount": 5.0}}
    started = web.post("/api/instances", json=start, headers=AUTH).json()
    assert started == {"workflowId": "wf_api", "was": "-", "status": "waiting_for_inventory", "outcome": "started"}
    again = web.post("/api/instances", json=start, headers=AUTH).json()
    assert again["outcome"] == "existing"
    delivered = web.post("/api/messages", json={"type": "inventory_reserved", "correlationId": "ord_api"}, headers=AUTH).json()
    assert delivered == {"workflowId": "wf_api", "was": "waiting_for_inventory", "status": "waiting_for_payment", "outcome": "applied"}
    retried = web.post(f"/api/instances/{STUCK}/retry", headers=AUTH).json()
    assert retried == {"workflowId": STUCK, "was": "compensation_failed", "status": "compensating", "outcome": "resumed"}


def test_the_api_refuses_as_the_cli_does(web: TestClient, store: Path) -> None:
    failed = web.post("/api/instances/wf_failed/retry", headers=AUTH)
    assert failed.status_code == 409
    assert failed.json()["error"] == (
        "instance wf_failed is failed (out of stock); it cannot be retried: only a compensation_failed "
        "instance has work an operator can resume. Start a new instance to try again."
    )
    assert web.post("/api/instances/nope/retry", headers=AUTH).status_code == 404
    assert web.get("/api/instances/nope").status_code == 404
    unknown = web.post("/api/messages", json={"type": "inventory_reserved", "correlationId": "ord_nobody"}, headers=AUTH)
    assert unknown.status_code == 422
    assert unknown.json()["error"] == "no instance correlates by `ord_nobody` (reply `inventory_reserved`)"
    bad = web.post("/api/messages", json={"type": 5}, headers=AUTH)
    assert bad.status_code == 422 and bad.json()["error"]
    wrong_input = {"process": "order-fulfillment", "workflowId": "wf_bad", "input": {"orderId": 3}}
    refused = web.post("/api/instances", json=wrong_input, headers=AUTH)
    assert refused.status_code == 422 and refused.json()["error"]
    assert web.post("/api/instances", json={**wrong_input, "process": "nope"}, headers=AUTH).status_code == 404
    with open_store(str(store)) as opened:
        assert opened.get("wf_bad") is None


# ---------------------------------------------------------------- metrics


def test_metrics_report_instances_transitions_outbox_and_timers(web: TestClient) -> None:
    text = web.get("/metrics").text
    assert 'procflow_instances{process="order-fulfillment",status="waiting_for_inventory"} 2.0' in text
    assert 'procflow_instances{process="order-fulfillment",status="compensation_failed"} 1.0' in text
    transitions = re.search(r'procflow_transitions_total\{process="order-fulfillment"\} (\d+)', text)
    assert transitions and int(transitions.group(1)) > 10
    unsent = re.search(r"^procflow_outbox_unsent (\S+)$", text, re.M)
    assert unsent and float(unsent.group(1)) > 0
    age = re.search(r"^procflow_outbox_oldest_unsent_age_seconds (\S+)$", text, re.M)
    assert age and float(age.group(1)) > 3600  # queued in 2026-01-01, long before any run of this test
    due = re.search(r"^procflow_timers_due (\S+)$", text, re.M)
    assert due and float(due.group(1)) == 2.0  # the two waiting instances' timers passed long ago


def test_json_of_the_api_is_the_cli_inspect_json(web: TestClient, store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from procflow.cli import main

    assert main(["inspect", "wf_wait", "--json", "--store", str(store)]) == 0
    assert json.loads(capsys.readouterr().out) == web.get("/api/instances/wf_wait").json()


# ---------------------------------------------------------------- both stores


def test_sqlite_and_postgresql_page_count_and_gauge_alike(filled: Path, postgres_url: str) -> None:
    fill(postgres_url)

    def reads(url: str) -> tuple[object, ...]:
        with open_store(url, create=False) as opened:
            first = read_page(opened, None, None, None, 2, None)
            second = read_page(opened, None, None, None, 2, first.after)
            return (
                [r.workflow_id for r in first.rows], [r.workflow_id for r in second.rows], first.after,
                [r.workflow_id for r in read_page(opened, None, "compensation_failed", None, 50, None).rows],
                [r.workflow_id for r in read_page(opened, None, None, "ord_done", 50, None).rows],
                [(r.next_action, r.timeout_at, r.updated_at) for r in read_page(opened, "order-fulfillment", None, None, 50, None).rows],
                opened.status_counts(), opened.status_counts("refund"), opened.gauges(1e10),
                sorted(opened.counts_by_definition().values()),
            )

    sqlite, postgres = reads(str(filled)), reads(postgres_url)
    assert sqlite == postgres
    assert sqlite[0] == [SCRIPT_ID, "wf_wait"] and sqlite[1] == [STUCK, "wf_done"]


def test_the_console_serves_a_postgresql_store(postgres_url: str) -> None:
    fill(postgres_url)
    with TestClient(create_app(postgres_url, PROCESSES, TOKEN)) as web:
        assert 'href="/instances/wf_stuck"' in web.get("/?status=compensation_failed").text
        assert 'id="retry-form"' in web.get(f"/instances/{STUCK}").text
        assert web.post(f"/api/instances/{STUCK}/retry", headers=AUTH).json()["status"] == "compensating"
        assert 'procflow_instances{process="order-fulfillment",status="compensating"} 1.0' in web.get("/metrics").text


# ---------------------------------------------------------------- procflow serve's refusals


def test_serve_refuses_bad_starts_in_words(tmp_path: Path, filled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from procflow.cli import main

    assert main(["serve", "--store", str(filled), "--host", "0.0.0.0"]) == 1
    assert "--host 0.0.0.0 is reachable from other machines: give --token" in capsys.readouterr().err
    assert main(["serve", "--store", str(tmp_path / "none.sqlite")]) == 1
    assert "there is no store at" in capsys.readouterr().err
    assert not (tmp_path / "none.sqlite").exists()  # reading never creates a store
    bad = tmp_path / "procs"
    bad.mkdir()
    (bad / "broken.proc").write_text("process broken {\n", encoding="utf-8")
    assert main(["serve", "--store", str(filled), "--processes", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "broken.proc:" in err and "Traceback" not in err
