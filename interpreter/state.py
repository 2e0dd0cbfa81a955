"""The state record of one instance: the lesson's fields first, then what an operator needs.

Everything here is plain JSON-friendly data (pydantic models), versioned by `schemaVersion`,
so a state can be stored, shown, diffed and published as a JSON Schema (`procflow schema state`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1
"""Bumped whenever the stored shape changes; older states are migrated when read."""

TERMINAL = frozenset({"completed", "failed", "timed_out", "compensated", "compensation_failed"})
"""Statuses after which the instance does nothing more by itself (an operator may resume
`compensation_failed`; a late success may still reopen compensation)."""

WaitKind = Literal["reply", "event", "timer", "race", "backoff", "compensation", "compensation_backoff"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DefinitionRef(_Record):
    """Which process definition an instance runs: pinned by version and fingerprint."""

    name: str
    version: int
    fingerprint: str


class Wait(_Record):
    """What one token of the instance waits for, and until when."""

    token: int
    step: str = Field(description="the step (or race) that waits; `undo:<step>` while compensating")
    node: str
    frame: str
    kind: WaitKind
    expects: list[str] = Field(description="reply or event names that end this wait")
    correlationId: str
    commandName: str | None = None
    attempt: int = 1
    since: str
    timeoutAt: str | None = None
    due: float | None = Field(default=None, description="timeoutAt as seconds since the epoch")


class Token(_Record):
    """A thread of control: where it stands, in which frame, with its loop counters and joins."""

    id: int
    node: str
    frame: str
    loops: dict[str, int] = Field(default_factory=dict)
    forks: list[str] = Field(default_factory=list)


class Frame(_Record):
    """The data of the main process or of a called one."""

    process: str
    input: dict[str, Any]
    data: dict[str, Any] = Field(default_factory=dict, description="payloads bound with `as`")
    steps: dict[str, str] = Field(default_factory=dict, description="step -> the reply that ended it")
    correlationId: str
    parent: str | None = None
    call: str | None = None


class UndoCommand(_Record):
    """The compensation of one completed step, computed when the step completed."""

    step: str
    frame: str
    process: str
    commandName: str
    correlationId: str
    data: dict[str, Any]


class Completion(_Record):
    """One completed step, in completion order."""

    step: str
    frame: str
    outcome: str
    at: str
    undo: UndoCommand | None = None


class Abandoned(_Record):
    """A command whose step gave up waiting: a late success must still be undone."""

    step: str
    frame: str
    process: str
    commandName: str
    correlationId: str
    successes: list[str]
    undo: UndoCommand | None = None
    at: str


class Failure(_Record):
    """Why the instance failed."""

    cause: Literal["reply", "timeout", "fail", "deadline", "error"]
    reason: str
    step: str | None = None
    at: str


class Compensation(_Record):
    """The undo work of a failed instance: what is left (next first) and what is done."""

    pending: list[UndoCommand] = Field(default_factory=list)
    undone: list[UndoCommand] = Field(default_factory=list)
    failed: UndoCommand | None = Field(default=None, description="the undo that could not complete")
    settledStatus: str | None = Field(default=None, description="the status to return to when a late undo is done")


class LateReply(_Record):
    """A reply that arrived after its step gave up, and what was done about it."""

    type: str
    step: str
    at: str
    action: Literal["compensated", "recorded"]


class HistoryEntry(_Record):
    """One transition: when, what came in, what changed, what was sent."""

    seq: int
    at: str
    event: str = Field(description="started, reply, event, timer, retry, late_reply, resumed, ...")
    message: dict[str, Any] | None = None
    changes: dict[str, Any] = Field(default_factory=dict)
    sent: list[str] = Field(default_factory=list)
    note: str | None = None


class InstanceState(_Record):
    """The explicit state of one instance: the lesson's visible process record and more."""

    model_config = ConfigDict(extra="forbid", title="procflow instance state")

    workflowId: str
    type: str = Field(description="the process name")
    status: str = Field(description="the business situation, e.g. waiting_for_payment, compensating, completed")
    completedSteps: list[str] = Field(description="milestones reached, in order (the reply that ended each step)")
    nextAction: str | None = Field(description="the step the instance waits on (or the undo it runs next)")
    timeoutAt: str | None = Field(description="when the instance acts by itself next (ISO-8601, UTC)")
    schemaVersion: int = SCHEMA_VERSION
    definition: DefinitionRef
    correlationId: str
    startedAt: str
    updatedAt: str
    deadlineAt: str | None = None
    input: dict[str, Any]
    waits: list[Wait] = Field(default_factory=list)
    tokens: list[Token] = Field(default_factory=list)
    frames: dict[str, Frame] = Field(default_factory=dict)
    joins: dict[str, int] = Field(default_factory=dict)
    completed: list[Completion] = Field(default_factory=list)
    compensation: Compensation | None = None
    failure: Failure | None = None
    abandoned: list[Abandoned] = Field(default_factory=list)
    lateReplies: list[LateReply] = Field(default_factory=list)
    seenMessageIds: list[str] = Field(default_factory=list)
    seq: int = 0
    history: list[HistoryEntry] = Field(default_factory=list)

    @property
    def is_terminal(self) -> bool:
        """True once the instance has nothing more to do by itself."""
        return self.status in TERMINAL

    def to_json(self) -> dict[str, Any]:
        """The state as a JSON object (what `run --json` prints and stores keep)."""
        return self.model_dump(mode="json")


def iso(moment: datetime) -> str:
    """A moment as ISO-8601 in UTC with a `Z`, to the second (or millisecond when it has one)."""
    moment = moment.astimezone(UTC)
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_instant(text: str) -> datetime:
    """ISO-8601 text -> an aware datetime (a missing zone means UTC). ValueError when malformed."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def from_epoch(seconds: float) -> datetime:
    """Seconds since the epoch -> an aware UTC datetime."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
