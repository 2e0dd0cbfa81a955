"""The state record of one instance: the lesson's fields first, then what an operator needs.

Everything here is plain JSON-friendly data, versioned by `schemaVersion`, so a state can be
stored, shown, diffed and published as a JSON Schema (`procflow schema state`). The records
are slotted dataclasses validated, serialized and described by pydantic (a `TypeAdapter` per
class, see `records.py`), built by their own constructors; each field holds one type (a
timestamp is its ISO-8601 text, a sequence a tuple).

A state is a value: the engine never changes one it was given, it builds the next one and
shares with it whatever did not change (copy on write). Sequences are tuples, and the empty
mappings the engine writes are one shared read-only `EMPTY` dict, so a parked instance keeps
only what is its own. The three sequences that grow by one entry a step (history, completed
steps, milestones) become a `Log` once they are long, so that a step does not copy them.
`migrate_state` reads the JSON of older schema versions.

Why one module of about 500 lines: the records are one schema (`procflow schema state`), and
the migrations read them as a whole.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn, Protocol, overload

from pydantic import ConfigDict, Field, with_config

from procflow.dsl.model import TERMINAL_STATUSES
from procflow.instants import (
    parse_instant as parse_instant,  # (re-exported: it lived here)
)
from procflow.interpreter.log import LOG_FROM as LOG_FROM  # (re-exported: they lived here)
from procflow.interpreter.log import Log as Log
from procflow.interpreter.log import appended as appended
from procflow.interpreter.records import Record

SCHEMA_VERSION = 3
"""Bumped whenever the stored shape changes; older states are migrated when read (`migrate_state`)."""

TERMINAL = TERMINAL_STATUSES
"""Statuses after which the instance does nothing more by itself (see `model.TERMINAL_STATUSES`)."""

ROOT = "main"
"""The frame id of the process an instance runs (called processes run in frames of their own)."""

SEEN_WINDOW = 64
"""How many message ids a state keeps in `seenMessageIds`: the last ones applied, so that a
message delivered twice in a row is recognised by the engine alone, while what a transition
copies stays the same size however many messages the instance has seen. Telling apart a
duplicate of an older message is the store's inbox's job (`Store.seen`): it keeps every id."""

WaitKind = Literal["reply", "event", "timer", "race", "backoff", "compensation", "compensation_backoff", "cancel", "cancel_backoff"]
FailureCause = Literal["reply", "timeout", "fail", "deadline", "error"]
LateAction = Literal["compensated", "recorded"]

_strict_record = with_config(ConfigDict(extra="forbid"))


class _ReadOnlyDict(dict[str, Any]):
    """A dict that refuses every change: the one empty mapping all states share."""

    __slots__ = ()

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("a state's mappings are read-only; the engine builds a new state instead")

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = __ior__ = _refuse


EMPTY: dict[str, Any] = _ReadOnlyDict()
"""The shared empty mapping of states (read-only: writing to it raises TypeError)."""


def _empty() -> dict[str, Any]:
    return EMPTY


@_strict_record
@dataclass(slots=True, kw_only=True, frozen=True)
class DefinitionRef(Record):
    """Which process definition an instance runs: pinned by version and fingerprint."""

    name: str
    version: int
    fingerprint: str


# The first seven fields may be given in order, the rest are keyword-only: the engine parks
# a wait every transition, and a keyword costs about 460 instructions more than a place.
@_strict_record
@dataclass(slots=True)
class Wait(Record):
    """What one token of the instance waits for, and until when."""

    token: int
    step: Annotated[str, Field(description="the step (or race) that waits; `undo:<step>` while compensating")]
    node: str
    frame: str
    kind: WaitKind
    expects: Annotated[tuple[str, ...], Field(description="reply or event names that end this wait")]
    correlationId: str
    commandName: str | None = field(default=None, kw_only=True)
    attempt: int = field(default=1, kw_only=True)
    since: str = field(kw_only=True)
    timeoutAt: Annotated[str | None, Field(description="when the wait times out or its timer fires (ISO-8601, UTC)")] = field(
        default=None, kw_only=True
    )


    @property
    def due(self) -> float | None:
        """`timeoutAt` as seconds since the epoch."""
        return epoch_of(self.timeoutAt)


@_strict_record
@dataclass(slots=True)  # (positional too: the engine copies a token in order, see `RunCore._token`)
class Token(Record):
    """A thread of control: where it stands, in which frame, with its loop counters and joins."""

    id: int
    node: str
    frame: str
    loops: dict[str, int] = field(default_factory=_empty)
    forks: tuple[str, ...] = ()


@_strict_record
@dataclass(slots=True, kw_only=True)
class Frame(Record):
    """The data of a called process (the main process's are the instance's own `input` and `data`)."""

    process: str
    input: dict[str, Any]
    data: Annotated[dict[str, Any], Field(description="payloads bound with `as`")] = field(default_factory=_empty)
    correlationId: str
    parent: str | None = None
    call: str | None = None
    forEach: Annotated[str | None, Field(description="the for-each run (a key of the state's `each`) this item frame belongs to")] = None
    item: Annotated[int | None, Field(description="the index (from 0) of this frame's item in its for-each's list")] = None


@_strict_record
@dataclass(slots=True, kw_only=True, frozen=True)
class EachRun(Record):
    """One run of a for-each: its items, how many have started, run and failed, their results so
    far, and where the process goes on (the frame, and the token's loop counters and joins)."""

    node: str
    frame: str
    items: tuple[Any, ...]
    started: int = 0
    running: int = 0
    done: int = 0
    failed: int = 0
    results: Annotated[ResultList, Field(description="each item's result, by index (null until it ends)")] = ()
    loops: dict[str, int] = field(default_factory=_empty)
    forks: tuple[str, ...] = ()


class FrameView(Protocol):
    """What the engine reads and writes of the frame a token runs in: a called process's
    `Frame`, or, for the main process, the instance state itself (its `input`, `data` and
    `correlationId` are the main frame's, so a transition builds no frame for it)."""

    input: dict[str, Any]
    data: dict[str, Any]
    correlationId: str

    @property
    def process(self) -> str:
        """The name of the process that runs in the frame."""

    @property
    def parent(self) -> str | None:
        """The frame of the caller (None for the main process)."""

    @property
    def call(self) -> str | None:
        """The call node of the caller that started this frame (None for the main process)."""

    @property
    def forEach(self) -> str | None:
        """The for-each run an item frame belongs to (None for any other frame)."""

    @property
    def item(self) -> int | None:
        """The index of an item frame's item in its for-each's list (None for any other frame)."""


@_strict_record
@dataclass(slots=True)  # (positional too: the engine builds one in order, a third of the cost of keywords)
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
@dataclass(slots=True)  # (positional too: the engine builds one in order, a third of the cost of keywords)
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
    successes: tuple[str, ...]
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
    reply: Annotated[str | None, Field(description="the failure reply, when one caused it")] = None
    data: Annotated[dict[str, Any] | None, Field(description="the failure reply's payload (what an undo reads as `failure.data`)")] = None

    def as_value(self) -> dict[str, Any]:
        """What an undo's mapping reads as `failure`: `cause`, `reason`, `step`, `reply`, `data`."""
        return {"cause": self.cause, "reason": self.reason, "step": self.step, "reply": self.reply, "data": self.data}



@_strict_record
@dataclass(slots=True, kw_only=True)
class Compensation(Record):
    """The undo work of a failed instance: what is left (next first) and what is done.

    The undos in flight are the ones the instance waits for (its `compensation` waits): the
    first of `pending`, or, for a parallel block undone in parallel, the first undo of each of
    its branches, all sent at once."""

    pending: tuple[UndoCommand, ...] = ()
    undone: tuple[UndoCommand, ...] = ()
    failed: Annotated[UndoCommand | None, Field(description="the undo that could not complete")] = None
    settledStatus: Annotated[str | None, Field(description="the status to return to when a late undo is done")] = None
    attempts: Annotated[dict[str, int], Field(description="`frame:step` -> the last attempt sent of its undo")] = field(default_factory=_empty)
    roundStart: Annotated[int, Field(description="the attempt that began the current round of the undo in flight")] = 1
    roundStarts: Annotated[
        dict[str, int], Field(description="`frame:step` -> the attempt that began the current round of an undo sent beside others (`undo in parallel`)")
    ] = field(default_factory=_empty)
    unconfirmed: Annotated[
        tuple[UndoCommand, ...], Field(description="undos that could not be confirmed and were left, the others going on (`on undo failure continue`)")
    ] = ()


@_strict_record
@dataclass(slots=True, kw_only=True)
class Cancel(Record):
    """A `first of` block whose winner has arrived: the losing branches were cancelled, and
    what they completed is undone, most recent first, each undo awaited (with its retries)
    before the next; the winner's token waits at the join until the last one is confirmed.
    Kept once done (nothing `pending`), as the record of what the losers undid."""

    block: Annotated[str, Field(description="the `first of` block's name")]
    fork: Annotated[str, Field(description="the key of the block's run (the frame, the fork, a sequence number)")]
    token: Annotated[int, Field(description="the winner's token, waiting at the join")]
    winner: Annotated[str, Field(description="the branch that finished first")]
    pending: tuple[UndoCommand, ...] = ()
    undone: tuple[UndoCommand, ...] = ()
    attempts: Annotated[int, Field(description="the attempts sent of the undo in flight (pending[0])")] = 0
    handedOver: Annotated[bool, Field(description="the instance failed or ended first: its compensation does what is pending")] = False


@_strict_record
@dataclass(slots=True, kw_only=True)
class LateReply(Record):
    """A reply that arrived after its step gave up, and what was done about it."""

    type: str
    step: str
    at: str
    action: LateAction



@_strict_record
@dataclass(slots=True)  # (positional too: one is built per transition, see `derive.history_entry`)
class HistoryEntry(Record):
    """One transition: when, what came in, what changed, what was sent.

    Only what this transition changed is written: the status it moved to (the status it left
    is the one the entry before moved to, `running` before the first), the milestones it
    reached, the failure it caused, the undo commands it finished."""

    seq: int
    at: str
    event: Annotated[str, Field(description="started, reply, event, timer, retry, late_reply, resumed, ...")]
    message: dict[str, Any] | None = None
    status: Annotated[str | None, Field(description="the status this transition moved to; absent when it did not change")] = None
    completedSteps: Annotated[tuple[str, ...], Field(description="milestones reached in this transition")] = ()
    failure: Annotated[str | None, Field(description="the failure this transition caused, in words")] = None
    undone: Annotated[tuple[str, ...], Field(description="undo commands this transition saw confirmed (or sent, when unconfirmed)")] = ()
    sent: tuple[str, ...] = ()
    note: str | None = None



if TYPE_CHECKING:
    # What a state holds: a tuple, or a `Log` once long; both are sequences. Its waits and
    # tokens: a tuple, or indexed once many (`indexed.Waits`, `indexed.Tokens`).
    Milestones = Sequence[str]
    Completions = Sequence[Completion]
    Entries = Sequence[HistoryEntry]
    WaitList = Sequence[Wait]
    TokenList = Sequence[Token]
    FrameMap = Mapping[str, Frame]  # a dict, or a persistent map once many (`frames.WorkingFrames.written`)
    ResultList = Sequence[Any]  # a tuple, or indexed for a for-each over many (`indexed.Results`)
else:
    # What pydantic reads and writes: tuples (a state's logs are written as tuples, see
    # `InstanceState._serializable`), so its schema and its fast paths are a tuple's.
    Milestones = tuple[str, ...]
    Completions = tuple[Completion, ...]
    Entries = tuple[HistoryEntry, ...]
    WaitList = tuple[Wait, ...]
    TokenList = tuple[Token, ...]
    FrameMap = dict[str, Frame]
    ResultList = tuple[Any, ...]


# Its fields may be given in order (but `schemaVersion` and `deadlineAt`, keyword-only so
# that the fields after them can be): the engine's working copy (`shell`) does, since CPython
# turns the keywords of a class call into a dict, then back, at about 600 instructions a
# keyword against about 140 a place. (A comment, not the docstring: that is the schema's.)
@with_config(ConfigDict(extra="forbid", title="procflow instance state"))
@dataclass(slots=True)
class InstanceState(Record):
    """The explicit state of one instance: the lesson's visible process record and more."""

    workflowId: str
    type: Annotated[str, Field(description="the process name")]
    status: Annotated[str, Field(description="the business situation, e.g. waiting_for_payment, compensating, completed")]
    completedSteps: Annotated[Milestones, Field(description="milestones reached, in order (the reply that ended each step)")]
    nextAction: Annotated[str | None, Field(description="the step the instance waits on (or the undo it runs next)")]
    timeoutAt: Annotated[str | None, Field(description="when the instance acts by itself next (ISO-8601, UTC)")]
    schemaVersion: int = field(default=SCHEMA_VERSION, kw_only=True)
    definition: DefinitionRef
    correlationId: str
    startedAt: str
    updatedAt: str
    deadlineAt: str | None = field(default=None, kw_only=True)
    input: dict[str, Any]
    data: Annotated[dict[str, Any], Field(description="payloads the process bound with `as` (its frame `main`)")] = field(default_factory=_empty)
    waits: WaitList = ()
    tokens: TokenList = ()
    frames: Annotated[FrameMap, Field(description="the frames of called processes (and of for-each items), by frame id")] = field(default_factory=_empty)
    joins: dict[str, int] = field(default_factory=_empty)
    completed: Completions = ()
    compensation: Compensation | None = None
    failure: Failure | None = None
    outcome: Annotated[str | None, Field(description='how a completed instance ended, when it ended at a named `end "cancelled"`')] = None
    output: Annotated[dict[str, Any] | None, Field(description="what a completed instance returns: its process's `output { ... }`")] = None
    abandoned: tuple[Abandoned, ...] = ()
    lateReplies: tuple[LateReply, ...] = ()
    seenMessageIds: tuple[str, ...] = ()  # the last `SEEN_WINDOW` only
    seq: int = 0
    history: Entries = ()
    each: Annotated[dict[str, EachRun], Field(description="the for-each runs in progress, by run key")] = field(default_factory=_empty)
    cancels: Annotated[tuple[Cancel, ...], Field(description="the `first of` blocks won so far, and their losers' undo")] = ()

    @property
    def is_terminal(self) -> bool:
        """True once the instance has nothing more to do by itself."""
        return self.status in TERMINAL

    def to_json(self) -> dict[str, Any]:
        """The state as a JSON object (what `run --json` prints and stores keep)."""
        return self.model_dump(mode="json")

    def _serializable(self) -> InstanceState:
        """This state with its logs, waits and tokens as the tuples they stand for (what pydantic writes)."""
        history, completed, steps, waits, tokens = self.history, self.completed, self.completedSteps, self.waits, self.tokens
        frames, each = self.frames, self.each
        indexed_results = any(not isinstance(run.results, tuple) for run in each.values()) if each else False
        if all(isinstance(s, tuple) for s in (history, completed, steps, waits, tokens)) and isinstance(frames, dict) and not indexed_results:
            return self
        return dataclasses.replace(
            self, history=tuple(history), completed=tuple(completed), completedSteps=tuple(steps), waits=tuple(waits), tokens=tuple(tokens),
            frames=frames if isinstance(frames, dict) else dict(frames.items()),
            each={key: dataclasses.replace(run, results=tuple(run.results)) for key, run in each.items()} if indexed_results else each,
        )

    # The main process's frame is the instance itself (`FrameView`): these three complete it.
    @property
    def process(self) -> str:
        """The process the main frame runs: the instance's `type`."""
        return self.type

    @property
    def parent(self) -> None:
        """The main frame has no caller."""
        return None

    @property
    def call(self) -> None:
        """The main frame was started by no call node."""
        return None

    @property
    def forEach(self) -> None:
        """The main frame is no for-each item."""
        return None

    @property
    def item(self) -> None:
        """The main frame is no for-each item."""
        return None

    def frame(self, frame_id: str) -> Frame:
        """The frame `frame_id`: a called process's, or (`main`) a view of the instance's own."""
        if frame_id == ROOT:
            return Frame(process=self.type, input=self.input, data=self.data, correlationId=self.correlationId)
        return self.frames[frame_id]

    def frame_ids(self) -> list[str]:
        """`main`, then the frames of called processes."""
        return [ROOT, *self.frames]

    def correlation_ids(self) -> set[str]:
        """Every business key the instance answers to (its own and its called processes')."""
        ids = {self.correlationId}
        for frame in self.frames.values():
            ids.add(frame.correlationId)
        return ids


def shell(state: InstanceState) -> InstanceState:
    """A new state object sharing every value with `state`: the engine's working copy starts
    so (copy on write, see `transition.py`), once per transition. Every field is given, in the
    order of the class (a test checks that none is left out or misplaced): by keyword, the
    27 fields cost three times as much, about 14k instructions more a transition, a tenth
    of the happy path's; `dataclasses.replace` works the list of fields out again on every
    call, at several times the cost of this."""
    return InstanceState(
        state.workflowId, state.type, state.status, state.completedSteps, state.nextAction, state.timeoutAt,
        state.definition, state.correlationId, state.startedAt, state.updatedAt,
        state.input, state.data, state.waits, state.tokens, state.frames, state.joins, state.completed,
        state.compensation, state.failure, state.outcome, state.output, state.abandoned, state.lateReplies, state.seenMessageIds, state.seq, state.history,
        state.each, state.cancels, schemaVersion=state.schemaVersion, deadlineAt=state.deadlineAt,
    )


def remember_message(seen: tuple[str, ...], message_id: str) -> tuple[str, ...]:
    """`seenMessageIds` after applying the message `message_id`: its last `SEEN_WINDOW` ids."""
    return (*seen[len(seen) - SEEN_WINDOW + 1 :], message_id) if len(seen) >= SEEN_WINDOW else (*seen, message_id)


def migrate_state(data: dict[str, Any]) -> dict[str, Any]:
    """The JSON of a state of an older schema version, in the current shape (the input is not changed).

    1 -> 2: the main process's frame became the instance's own `data`; a history entry's
    `changes` became its `status`, `completedSteps`, `failure` and `undone`; a wait's `due`
    (a copy of its `timeoutAt` in seconds) is no longer kept.
    2 -> 3: for-each runs (`each`, and a frame's `each` and `item`) and `cancels` (the `first
    of` blocks undoing their losers) were added, and a state may hold `output` (and a failure
    its `reply` and `data`); a state of version 2 has none of them, so only its version changes."""
    version = data.get("schemaVersion", SCHEMA_VERSION)
    if not isinstance(version, int) or version >= SCHEMA_VERSION:
        return data
    if version >= 2:
        return {**data, "schemaVersion": SCHEMA_VERSION}
    out = dict(data)
    if version >= 2:
        out["schemaVersion"] = SCHEMA_VERSION
        return out
    frames = dict(out.get("frames") or {})
    main = frames.pop(ROOT, None)
    out["frames"] = frames
    out["data"] = dict(main.get("data") or {}) if isinstance(main, dict) else {}
    out["waits"] = [{k: v for k, v in w.items() if k != "due"} if isinstance(w, dict) else w for w in out.get("waits") or []]
    out["history"] = [_migrate_entry(e) if isinstance(e, dict) else e for e in out.get("history") or []]
    out["schemaVersion"] = SCHEMA_VERSION
    return out


def migrate_history_entry(data: dict[str, Any]) -> dict[str, Any]:
    """A history entry of schema version 1 (with `changes`) in the current shape; others as they are."""
    return _migrate_entry(data) if "changes" in data else data


def _migrate_entry(entry: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in entry.items() if k != "changes"}
    changes = entry.get("changes") or {}
    if not isinstance(changes, dict):
        return out
    status = changes.get("status")
    if isinstance(status, list) and status:
        out["status"] = status[-1]
    for key in ("completedSteps", "undone"):
        if changes.get(key):
            out[key] = changes[key]
    if changes.get("failure"):
        out["failure"] = changes["failure"]
    return out



@functools.lru_cache(maxsize=256)
def iso_epoch(seconds: float) -> str:
    """Seconds since the epoch as ISO-8601 in UTC with a `Z`, to the second (or the
    millisecond when it has a fraction of one: `.000Z` when under a millisecond).

    Cached by instant: the engine writes the same few instants many times in a row (its clock
    in a transition, the times of the waits it parks), and instances parked at one instant
    share one text."""
    m = from_epoch(seconds)
    text = f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}"
    return text + (f".{m.microsecond // 1000:03d}Z" if m.microsecond else "Z")


def iso(moment: datetime) -> str:
    """A moment as ISO-8601 (see `iso_epoch`)."""
    return iso_epoch(moment.timestamp())


@functools.lru_cache(maxsize=256)
def instant_epoch(text: str) -> float:
    """ISO-8601 text -> seconds since the epoch (cached by text). ValueError when malformed."""
    return parse_instant(text).timestamp()


@overload
def epoch_of(text: str) -> float: ...


@overload
def epoch_of(text: str | None) -> float | None: ...


def epoch_of(text: str | None) -> float | None:
    """A timestamp field's text as seconds since the epoch (None for None)."""
    return None if text is None else instant_epoch(text)


def from_epoch(seconds: float) -> datetime:
    """Seconds since the epoch -> an aware UTC datetime."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
