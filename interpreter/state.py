"""The state record of one instance: the lesson's fields first, then what an operator needs.

Everything here is plain JSON-friendly data, versioned by `schemaVersion`, so a state can be
stored, shown, diffed and published as a JSON Schema (`procflow schema state`). The records
are slotted dataclasses validated, serialized and described by pydantic (a `TypeAdapter` per
class): the engine builds them at the cost of a plain object, a parked instance stays small,
and `model_validate_json` / `model_dump_json` / `model_json_schema` work as on pydantic models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, with_config

from procflow.interpreter.records import Record

SCHEMA_VERSION = 1
"""Bumped whenever the stored shape changes; older states are migrated when read."""

TERMINAL = frozenset({"completed", "failed", "timed_out", "compensated", "compensation_failed"})
"""Statuses after which the instance does nothing more by itself (an operator may resume
`compensation_failed`; a late success may still reopen compensation)."""

WaitKind = Literal["reply", "event", "timer", "race", "backoff", "compensation", "compensation_backoff"]
FailureCause = Literal["reply", "timeout", "fail", "deadline", "error"]
LateAction = Literal["compensated", "recorded"]

_strict_record = with_config(ConfigDict(extra="forbid"))


@_strict_record
@dataclass(slots=True, kw_only=True)
class DefinitionRef(Record):
    """Which process definition an instance runs: pinned by version and fingerprint."""

    name: str
    version: int
    fingerprint: str


@_strict_record
@dataclass(slots=True, kw_only=True)
class Wait(Record):
    """What one token of the instance waits for, and until when."""

    token: int
    step: Annotated[str, Field(description="the step (or race) that waits; `undo:<step>` while compensating")]
    node: str
    frame: str
    kind: WaitKind
    expects: Annotated[list[str], Field(description="reply or event names that end this wait")]
    correlationId: str
    commandName: str | None = None
    attempt: int = 1
    since: str
    timeoutAt: str | None = None
    due: Annotated[float | None, Field(description="timeoutAt as seconds since the epoch")] = None


@_strict_record
@dataclass(slots=True, kw_only=True)
class Token(Record):
    """A thread of control: where it stands, in which frame, with its loop counters and joins."""

    id: int
    node: str
    frame: str
    loops: dict[str, int] = field(default_factory=dict)
    forks: list[str] = field(default_factory=list)


@_strict_record
@dataclass(slots=True, kw_only=True)
class Frame(Record):
    """The data of the main process or of a called one."""

    process: str
    input: dict[str, Any]
    data: Annotated[dict[str, Any], Field(description="payloads bound with `as`")] = field(default_factory=dict)
    correlationId: str
    parent: str | None = None
    call: str | None = None


@_strict_record
@dataclass(slots=True, kw_only=True)
class UndoCommand(Record):
    """The compensation of one completed step, computed when the step completed."""

    step: str
    frame: str
    process: str
    commandName: str
    correlationId: str
    data: dict[str, Any]
    round: Annotated[str, Field(description="`@2` when the step completed in the 2nd round of a `repeat`")] = ""


@_strict_record
@dataclass(slots=True, kw_only=True)
class Completion(Record):
    """One completed step, in completion order."""

    step: str
    frame: str
    outcome: str
    at: str
    undo: UndoCommand | None = None


@_strict_record
@dataclass(slots=True, kw_only=True)
class Abandoned(Record):
    """A command whose step gave up waiting: a late success must still be undone."""

    step: str
    frame: str
    process: str
    commandName: str
    correlationId: str
    successes: list[str]
    undo: UndoCommand | None = None
    at: str


@_strict_record
@dataclass(slots=True, kw_only=True)
class Failure(Record):
    """Why the instance failed."""

    cause: FailureCause
    reason: str
    step: str | None = None
    at: str


@_strict_record
@dataclass(slots=True, kw_only=True)
class Compensation(Record):
    """The undo work of a failed instance: what is left (next first) and what is done."""

    pending: list[UndoCommand] = field(default_factory=list)
    undone: list[UndoCommand] = field(default_factory=list)
    failed: Annotated[UndoCommand | None, Field(description="the undo that could not complete")] = None
    settledStatus: Annotated[str | None, Field(description="the status to return to when a late undo is done")] = None
    attempts: Annotated[dict[str, int], Field(description="`frame:step` -> the last attempt sent of its undo")] = field(default_factory=dict)
    roundStart: Annotated[int, Field(description="the attempt that began the current round of the undo in flight")] = 1


@_strict_record
@dataclass(slots=True, kw_only=True)
class LateReply(Record):
    """A reply that arrived after its step gave up, and what was done about it."""

    type: str
    step: str
    at: str
    action: LateAction


@_strict_record
@dataclass(slots=True, kw_only=True)
class HistoryEntry(Record):
    """One transition: when, what came in, what changed, what was sent."""

    seq: int
    at: str
    event: Annotated[str, Field(description="started, reply, event, timer, retry, late_reply, resumed, ...")]
    message: dict[str, Any] | None = None
    changes: dict[str, Any] = field(default_factory=dict)
    sent: list[str] = field(default_factory=list)
    note: str | None = None


@with_config(ConfigDict(extra="forbid", title="procflow instance state"))
@dataclass(slots=True, kw_only=True)
class InstanceState(Record):
    """The explicit state of one instance: the lesson's visible process record and more."""

    workflowId: str
    type: Annotated[str, Field(description="the process name")]
    status: Annotated[str, Field(description="the business situation, e.g. waiting_for_payment, compensating, completed")]
    completedSteps: Annotated[list[str], Field(description="milestones reached, in order (the reply that ended each step)")]
    nextAction: Annotated[str | None, Field(description="the step the instance waits on (or the undo it runs next)")]
    timeoutAt: Annotated[str | None, Field(description="when the instance acts by itself next (ISO-8601, UTC)")]
    schemaVersion: int = SCHEMA_VERSION
    definition: DefinitionRef
    correlationId: str
    startedAt: str
    updatedAt: str
    deadlineAt: str | None = None
    input: dict[str, Any]
    waits: list[Wait] = field(default_factory=list)
    tokens: list[Token] = field(default_factory=list)
    frames: dict[str, Frame] = field(default_factory=dict)
    joins: dict[str, int] = field(default_factory=dict)
    completed: list[Completion] = field(default_factory=list)
    compensation: Compensation | None = None
    failure: Failure | None = None
    abandoned: list[Abandoned] = field(default_factory=list)
    lateReplies: list[LateReply] = field(default_factory=list)
    seenMessageIds: list[str] = field(default_factory=list)
    seq: int = 0
    history: list[HistoryEntry] = field(default_factory=list)

    @property
    def is_terminal(self) -> bool:
        """True once the instance has nothing more to do by itself."""
        return self.status in TERMINAL

    def to_json(self) -> dict[str, Any]:
        """The state as a JSON object (what `run --json` prints and stores keep)."""
        return self.model_dump(mode="json")


_ISO_CACHE: dict[float, str] = {}


def iso(moment: datetime) -> str:
    """A moment as ISO-8601 in UTC with a `Z`, to the second (or millisecond when it has one)."""
    return iso_epoch(moment.timestamp())


def iso_epoch(key: float) -> str:
    """Seconds since the epoch as ISO-8601 (see `iso`).

    Texts are cached by instant (bounded), so instances that wait until the same moment share
    one string instead of each keeping its own."""
    text = _ISO_CACHE.get(key)
    if text is None:
        m = from_epoch(key)
        text = f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}"
        text += f".{m.microsecond // 1000:03d}Z" if m.microsecond else "Z"
        if len(_ISO_CACHE) > 4096:
            _ISO_CACHE.clear()
        _ISO_CACHE[key] = text
    return text


def parse_instant(text: str) -> datetime:
    """ISO-8601 text -> an aware datetime (a missing zone means UTC). ValueError when malformed."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def from_epoch(seconds: float) -> datetime:
    """Seconds since the epoch -> an aware UTC datetime."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
