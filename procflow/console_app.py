"""`procflow serve`: the operator's console in the browser (issue 18).

Pages are rendered on the server (Jinja2, escaped by default) and one small script of the
server's own refreshes the instances list; the API is `procflow.console_api`; `/metrics`
is Prometheus' text format; the safety rules are `procflow.console_security`.

::

    /                       instances: counts by status, filters, pages, refreshed every few seconds
    /instances/ID           one instance: overlay, sequence, state record, commands, timers, history, Retry
    /processes              each definition with its flow, paths, saga table and participants
    /api/...                the HTTP API (`/api/docs`, `/api/openapi.json`)
    /metrics                Prometheus metrics

One store connection serves every request from the event loop's thread (the handlers are
`async` and call the store directly): SQLite connections belong to one thread, and an
operator's console has few users; a page is a few indexed queries and two Graphviz runs.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from procflow.console_api import Refused, refusal, router
from procflow.console_data import (
    Definitions,
    command_rows,
    history_rows,
    instance_svgs,
    load_processes,
    process_view,
    read_page,
    record_rows,
    timer_rows,
)
from procflow.console_security import (
    CSRF_COOKIE,
    CSRF_FIELD,
    SECURITY_HEADERS,
    TOKEN_ENV,
    bearer,
    is_loopback,
    new_csrf,
    same_origin,
    same_secret,
)
from procflow.errors import InputError, ProcflowError
from procflow.interpreter.stores import DurableStore, open_store
from procflow.operator_cli import retry_instance, store_path

HERE = Path(__file__).resolve().parent
PAGE_SIZE = 50
REFRESH_SECONDS = 5


@dataclass
class Console:
    """What every request of one server shares: its store, definitions and settings."""

    store_url: str
    processes: Path | None
    token: str | None
    loopback: bool
    store: Any = None  # the open DurableStore, from the lifespan's start
    definitions: Any = None  # Definitions over that store


class StoreCollector(Collector):
    """Reads the store's counts at each scrape (nothing is counted in the server itself, so
    every server over one store reports the same figures)."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        """The metric families of one scrape."""
        now = time.time()
        gauges = self.console.store.gauges(now)
        instances = GaugeMetricFamily("procflow_instances", "Instances by process and status", labels=["process", "status"])
        for (process, status), count in sorted(gauges.instances.items()):
            instances.add_metric([process, status], count)
        yield instances
        transitions = CounterMetricFamily("procflow_transitions", "History entries (transitions) written, by process", labels=["process"])
        for process, count in sorted(gauges.transitions.items()):
            transitions.add_metric([process], count)
        yield transitions
        yield GaugeMetricFamily("procflow_outbox_unsent", "Commands in the outbox not yet sent", value=gauges.outbox_unsent)
        age = 0.0
        if gauges.oldest_unsent_at is not None:
            age = max(0.0, now - datetime.fromisoformat(gauges.oldest_unsent_at.replace("Z", "+00:00")).timestamp())
        yield GaugeMetricFamily("procflow_outbox_oldest_unsent_age_seconds", "Age of the oldest command not yet sent (0 when none)", value=age)
        yield GaugeMetricFamily("procflow_timers_due", "Timers due now and not yet fired", value=gauges.timers_due)


class Guard(BaseHTTPMiddleware):
    """Security headers on every answer; the token for reading on a non-loopback address."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        """Refuse or pass the request, then add the headers."""
        console: Console = request.app.state.console
        if not console.loopback and not request.url.path.startswith("/static/") and not same_secret(bearer(request.headers), console.token):
            response: Response = Response("this console listens beyond loopback: every request needs `Authorization: Bearer TOKEN`\n",
                                          status_code=401, media_type="text/plain")
        else:
            response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response


TEMPLATES = Environment(loader=FileSystemLoader(HERE / "console-templates"), autoescape=select_autoescape(default=True))


def _page(request: Request, template: str, status_code: int = 200, **values: Any) -> HTMLResponse:
    """A page rendered with its CSRF value (the cookie's, or a new one set with it)."""
    csrf = request.cookies.get(CSRF_COOKIE) or new_csrf()
    html = TEMPLATES.get_template(template).render(csrf=csrf, csrf_field=CSRF_FIELD, refresh=REFRESH_SECONDS, **values)
    response = HTMLResponse(html, status_code=status_code)
    if request.cookies.get(CSRF_COOKIE) != csrf:
        response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict", path="/")
    return response


def _listing(request: Request) -> dict[str, Any]:
    """The instances list's values for the page and its refreshed fragment."""
    store: DurableStore = request.app.state.console.store
    params = request.query_params
    process = params.get("process") or None
    status = params.get("status") or None
    text = params.get("q") or None
    after = params.get("after") or None
    page = read_page(store, process, status, text, PAGE_SIZE, after)
    filters = {k: v for k, v in (("process", process), ("status", status), ("q", text)) if v}
    counts = store.status_counts(process)
    return {
        "rows": page.rows,
        "counts": counts,
        "total": sum(counts.values()),
        "filters": filters,
        "query": urlencode({**filters, **({"after": after} if after else {})}),
        "next_query": urlencode({**filters, "after": page.after}) if page.after else None,
        "first_query": urlencode(filters),
        "statuses": sorted(store.status_counts(None)) if process else sorted(counts),
        "processes": sorted({p.name for p in request.app.state.console.definitions.pinned()} | set(request.app.state.console.definitions.deployed)),
        "after": after,
    }


async def instances_page(request: Request) -> HTMLResponse:
    """The instances list (a bad paging cursor is a worded page, not a traceback)."""
    try:
        values = _listing(request)
    except InputError as error:
        return _page(request, "error.html", 422, title="Bad request", message=str(error))
    return _page(request, "instances.html", **values)


async def instances_fragment(request: Request) -> HTMLResponse:
    """The list alone, for the page's script to swap in without a reload."""
    return HTMLResponse(TEMPLATES.get_template("instances_list.html").render(**_listing(request)))


async def instance_page(request: Request) -> HTMLResponse:
    """One instance."""
    console: Console = request.app.state.console
    workflow_id = request.path_params["workflow_id"]
    row = console.store.get(workflow_id)
    if row is None:
        return _page(request, "error.html", 404, title="No such instance",
                     message=f"no instance {workflow_id} in the store; the instances list shows those it holds")
    state = row.state
    definition = console.definitions.of(state.definition.fingerprint)
    flow_svg, sequence_svg = instance_svgs(definition, state)
    outbox = console.store.outbox_of(workflow_id)
    return _page(
        request, "instance.html", state=state, version=row.version, record=record_rows(state),
        commands=command_rows(outbox), timers=timer_rows(state, outbox),
        history=history_rows(state), flow_svg=flow_svg, sequence_svg=sequence_svg,
        can_retry=state.status == "compensation_failed", notice=request.query_params.get("notice"),
    )


async def processes_page(request: Request) -> HTMLResponse:
    """Every definition: deployed ones and those the store's instances run."""
    console: Console = request.app.state.console
    counts = console.store.counts_by_definition()
    fingerprints = {p.fingerprint for p in console.definitions.pinned()} | {d.fingerprint for d in console.definitions.deployed.values()}
    views = []
    for fingerprint in sorted(fingerprints):
        definition = console.definitions.of(fingerprint)
        if definition is not None:
            views.append(process_view(definition, counts.get(fingerprint, 0)))
    views.sort(key=lambda v: (v.name, v.version))
    return _page(request, "processes.html", processes=views)


async def retry_form(request: Request) -> Response:
    """The Retry button: the token typed in the form, the page's CSRF value, the same origin."""
    console: Console = request.app.state.console
    form = await request.form()
    workflow_id = str(form.get("workflowId", ""))
    cookie = request.cookies.get(CSRF_COOKIE)
    if not same_origin(request.headers) or not same_secret(str(form.get(CSRF_FIELD, "")), cookie):
        return _page(request, "error.html", 403, title="Refused",
                     message="this form did not come from this console's own page (cross-site request refused); reload the page and try again")
    if not console.token:
        return _page(request, "error.html", 403, title="Refused",
                     message="this server was started without a token, so it takes no actions; restart it with --token or PROCFLOW_TOKEN")
    if not same_secret(str(form.get("token", "")), console.token):
        return _page(request, "error.html", 401, title="Refused", message="that is not the server's token; nothing was changed")
    try:
        before, after = _retry(console, workflow_id)
    except ProcflowError as error:
        return _page(request, "error.html", 409, title="Not retried", message=str(error))
    notice = f"retried: {before} → {after}"
    return RedirectResponse(f"/instances/{_quote(workflow_id)}?{urlencode({'notice': notice})}", status_code=303)


def _retry(console: Console, workflow_id: str) -> tuple[str, str]:
    before, after = retry_instance(console.store, workflow_id)
    return before.status, after.status


def _quote(text: str) -> str:
    return quote(text, safe="")


async def metrics(request: Request) -> Response:
    """Prometheus' text format."""
    return Response(generate_latest(request.app.state.registry), media_type="text/plain; version=0.0.4; charset=utf-8")


def create_app(store_url: str, processes: Path | None = None, token: str | None = None, host: str = "127.0.0.1") -> FastAPI:
    """The console's application over the store at `store_url` (opened when the server starts)."""
    console = Console(store_url, processes, token or None, is_loopback(host))
    deployed = load_processes(processes)  # errors in a .proc file stop the start, worded

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        console.store = open_store(store_url, create=False)
        console.definitions = Definitions(console.store, deployed)
        try:
            yield
        finally:
            console.store.close()

    app = FastAPI(title="procflow console", version="1", lifespan=lifespan, docs_url="/api/docs", redoc_url=None,
                  openapi_url="/api/openapi.json")
    app.state.console = console
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(console))
    app.state.registry = registry
    app.add_exception_handler(Refused, refusal)
    app.add_exception_handler(ProcflowError, refusal)
    app.include_router(router)
    app.add_route("/", instances_page, methods=["GET"], include_in_schema=False)
    app.add_route("/fragments/instances", instances_fragment, methods=["GET"], include_in_schema=False)
    app.add_route("/instances/{workflow_id:path}", instance_page, methods=["GET"], include_in_schema=False)
    app.add_route("/processes", processes_page, methods=["GET"], include_in_schema=False)
    app.add_route("/retry", retry_form, methods=["POST"], include_in_schema=False)
    app.add_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=HERE / "console-static"), name="static")
    app.add_middleware(Guard)
    return app


def serve(args: argparse.Namespace) -> int:
    """Run the console until interrupted (`procflow serve`)."""
    token = args.token or os.environ.get(TOKEN_ENV) or None
    if not is_loopback(args.host) and not token:
        raise ProcflowError(
            f"--host {args.host} is reachable from other machines: give --token (or {TOKEN_ENV}) so that reading and acting need it"
        )
    url = store_path(args.store)
    open_store(url, create=False).close()  # a missing or foreign store is refused before the server starts
    app = create_app(url, Path(args.processes) if args.processes else None, token, args.host)
    print(f"procflow console on http://{args.host}:{args.port}/ (store {url}); actions {'need the token' if token else 'are off: no token'}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
