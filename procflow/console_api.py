"""The console's HTTP API under `/api/` (FastAPI writes its OpenAPI document at
`/api/openapi.json`): list and get instances, start an instance, deliver a message, retry.

The actions run the CLI's own functions (`procflow.operator_cli`: `start_instance`,
`deliver_reply`, `retry_instance`), so the rules and the wording of refusals are the
CLI's. A refusal is JSON `{"error": "..."}` with 404 (no such instance or process), 409
(the instance's status forbids it), 422 (bad input) or 503 (the store failed); nothing is
changed by a refused action.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from procflow.console_data import read_page
from procflow.console_security import bearer, same_secret
from procflow.errors import InputError, MessageRefused, StoreError
from procflow.interpreter import engine
from procflow.operator_cli import deliver_reply, retry_instance, start_instance

CURSOR_PATTERN = r"^[0-9]+(\.[0-9]+)?(e[+-]?[0-9]+)?:.+$"
"""What a paging cursor looks like (`InstanceSummary.cursor`): its last change, `:`, its id."""


class ApiError(BaseModel):
    """What a refused request answers."""

    error: str


class InstanceLine(BaseModel):
    """One instance in a list."""

    workflowId: str
    type: str
    status: str
    version: int
    nextAction: str | None
    timeoutAt: str | None
    updatedAt: str


class InstanceList(BaseModel):
    """A page of instances, most recently changed first, with counts by status."""

    instances: list[InstanceLine]
    counts: dict[str, int]
    after: str | None = Field(description="cursor of the next page (pass as `after`), null on the last page")


class InstanceDetail(BaseModel):
    """An instance: its state record (procflow's state schema) and its commands."""

    version: int
    state: dict[str, Any]
    outbox: list[dict[str, Any]]


class StartRequest(BaseModel):
    """Start an instance of a deployed process (`procflow serve --processes DIR`)."""

    model_config = ConfigDict(extra="forbid")
    process: str = Field(min_length=1)
    workflowId: str = Field(min_length=1, max_length=200)
    input: dict[str, Any]


class ActionResult(BaseModel):
    """What an action did: the instance, its status before and after, and the outcome."""

    workflowId: str
    was: str
    status: str
    outcome: str


REFUSALS: dict[int | str, dict[str, Any]] = {
    401: {"model": ApiError, "description": "no token, or not the server's"},
    403: {"model": ApiError, "description": "the server was started without a token: actions are off"},
    404: {"model": ApiError, "description": "no such instance or process"},
    409: {"model": ApiError, "description": "the instance's status forbids it"},
    503: {"model": ApiError, "description": "the store failed; nothing was changed"},
}


class Refused(Exception):
    """A request the API answers with `status` and an error message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def refusal(request: Request, error: Exception) -> JSONResponse:
    """The JSON answer of a refusal (an exception handler of the app)."""
    if isinstance(error, Refused):
        return JSONResponse({"error": error.message}, status_code=error.status)
    if isinstance(error, InputError | MessageRefused):
        return JSONResponse({"error": str(error)}, status_code=422)
    if isinstance(error, StoreError):
        return JSONResponse({"error": str(error)}, status_code=503)
    return JSONResponse({"error": str(error)}, status_code=409)


def require_token(request: Request) -> None:
    """Refuse an action without the server's bearer token (403 when the server has none)."""
    token: str | None = request.app.state.console.token
    if not token:
        raise Refused(403, "this server was started without a token, so it takes no actions; restart it with --token or PROCFLOW_TOKEN")
    if not same_secret(bearer(request.headers), token):
        raise Refused(401, "this action needs the server's token: send `Authorization: Bearer TOKEN`")


router = APIRouter(prefix="/api", responses=REFUSALS)
Actor = Annotated[None, Depends(require_token)]


@router.get("/instances", response_model=InstanceList, summary="List instances")
async def list_instances(
    request: Request,
    process: Annotated[str | None, Query(max_length=200)] = None,
    status: Annotated[str | None, Query(max_length=64)] = None,
    q: Annotated[str | None, Query(max_length=200, description="an instance id or a correlation key")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    after: Annotated[str | None, Query(max_length=400, pattern=CURSOR_PATTERN, description="the `after` of the previous page")] = None,
) -> InstanceList:
    """Instances, most recently changed first, filtered by process, status and id or correlation key."""
    store = request.app.state.console.store
    page = read_page(store, process or None, status or None, q or None, limit, after or None)
    return InstanceList(
        instances=[
            InstanceLine(workflowId=r.workflow_id, type=r.process, status=r.status, version=r.version,
                         nextAction=r.next_action, timeoutAt=r.timeout_at, updatedAt=r.updated_at)
            for r in page.rows
        ],
        counts=store.status_counts(process or None),
        after=page.after,
    )


@router.get("/instances/{workflow_id}", response_model=InstanceDetail, summary="Get an instance")
async def get_instance(request: Request, workflow_id: str) -> InstanceDetail:
    """An instance's state record and its commands, as `procflow inspect --json` prints them."""
    store = request.app.state.console.store
    row = store.get(workflow_id)
    if row is None:
        raise Refused(404, f"no instance {workflow_id} in the store")
    outbox = [
        {"dispatch": e.dispatch.model_dump(mode="json"), "createdAt": e.created_at, "sentAt": e.sent_at, "emitted": e.emitted}
        for e in store.outbox_of(workflow_id)
    ]
    return InstanceDetail(version=row.version, state=row.state.to_json(), outbox=outbox)


@router.post("/instances", response_model=ActionResult, summary="Start an instance")
async def start(request: Request, body: StartRequest, _: Actor) -> ActionResult:
    """Start an instance of a deployed process; an existing id changes nothing (outcome `existing`)."""
    console = request.app.state.console
    definition = console.definitions.deployed.get(body.process)
    if definition is None:
        known = ", ".join(sorted(console.definitions.deployed)) or "none: start the server with --processes DIR"
        raise Refused(404, f"no deployed process `{body.process}`; deployed: {known}")
    state, created = start_instance(console.store, definition, body.workflowId, body.input)
    return ActionResult(workflowId=state.workflowId, was="-" if created else state.status, status=state.status,
                        outcome="started" if created else "existing")


@router.post("/messages", response_model=ActionResult, summary="Deliver a reply or an event")
async def deliver(request: Request, message: dict[str, Any], _: Actor) -> ActionResult:
    """Apply a participant's reply or an event, as `procflow deliver` does (outcome applied, duplicate or late)."""
    reply = engine.validate_reply(message)
    was, transition = deliver_reply(request.app.state.console.store, reply)
    state = transition.state
    return ActionResult(workflowId=state.workflowId, was=was, status=state.status, outcome=transition.outcome)


@router.post("/instances/{workflow_id}/retry", response_model=ActionResult, summary="Retry a compensation_failed instance")
async def retry(request: Request, workflow_id: str, _: Actor) -> ActionResult:
    """Send the failed undo of a compensation_failed instance again, as `procflow retry` does."""
    store = request.app.state.console.store
    if store.get(workflow_id) is None:
        raise Refused(404, f"no instance {workflow_id} in the store")
    before, after = retry_instance(store, workflow_id)
    return ActionResult(workflowId=after.workflowId, was=before.status, status=after.status, outcome="resumed")
