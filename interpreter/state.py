"""The state record of one instance: the lesson's fields first, then what an operator needs.

Everything here is plain JSON-friendly data, versioned by `schemaVersion`, so a state can be
stored, shown, diffed and published as a JSON Schema (`procflow schema state`). The records
are slotted dataclasses validated, serialized and described by pydantic (a `TypeAdapter` per
class): the engine builds them at the cost of a plain object, a parked instance stays small,
and `model_validate_json` / `model_dump_json` / `model_json_schema` work as on pydantic models.

A state is a value: the engine never changes one it was given, it builds the next one and
shares with it whatever did not change (copy on write). Sequences are tuples, and the empty
mappings the engine writes are one shared read-only `EMPTY` dict, so a parked instance keeps
only what is its own. The three sequences that grow by one entry a step (history, completed
steps, milestones) become a `Log` once they are long, so that a step does not copy them.
What is its own is kept small: the timestamps the engine writes are kept as floats (one per
instant, shared by the fields that name it) and read as their ISO-8601 texts (`keep_stamps`),
and a state's single wait or single history entry is kept without a tuple around it and read
as a tuple of one (`keep_single`); the JSON, the schema and what the fields read are as ever.
`migrate_state` reads the JSON of older schema versions.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Generic, Literal, NoReturn, TypeVar, overload

from pydantic import ConfigDict, Field, with_config

from procflow.interpreter.instants import (
    parse_instant as parse_instant,  # (re-exported: it lived here)
)
from procflow.interpreter.records import Record

SCHEMA_VERSION = 2
"""Bumped whenever the stored shape changes; older states are migrated when read (`migrate_state`)."""

TERMINAL = frozenset({"completed", "failed", "timed_out", "compensated", "compensation_failed"})
"""Statuses after which the instance does nothing more by itself (an operator may resume
`compensation_failed`; a late success may still reopen compensation)."""

ROOT = "main"
"""The frame id of the process an instance runs (called processes run in frames of their own)."""

WaitKind = Literal["reply", "event", "timer", "race", "backoff", "compensation", "compensation_backoff"]
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


T = TypeVar("T")

Stamp = float | str
"""How a record keeps a timestamp (see `keep_stamps`): as seconds since the epoch when the
engine wrote it (an instant `iso_epoch` writes as the text the field reads as), else as the
text it was given (read from JSON, or set by a caller)."""

if TYPE_CHECKING:

    class Stored(Generic[T]):
        """(For the type checker.) A field as its record keeps it, under the field's name with a
        leading underscore: the engine reads and writes it so, without the conversion."""

        @overload
        def __get__(self, record: None, owner: type[Any]) -> Stored[T]: ...

        @overload
        def __get__(self, record: object, owner: type[Any]) -> T: ...

        def __get__(self, record: object, owner: type[Any]) -> T | Stored[T]: ...

        def __set__(self, record: object, value: T) -> None: ...

LOG_FROM = 16
"""A growing sequence of this many entries or more is a `Log`; a shorter one is a tuple."""


class Log(Sequence[T]):
    """An append-only sequence that the successive states of an instance share.

    A state's log is its first `len` entries of a list the states share: the next state's log
    appends to that list and is one entry longer, so a step costs the same at the 50,000th
    step as at the first (a tuple would be copied whole at every step). The entries a state
    sees never change. When the list already holds more than this log (another transition
    from the same state appended first), the next log starts a list of its own. Reads like
    a tuple, compares equal to a tuple with the same entries, serializes as a JSON array."""

    __slots__ = ("_items", "_length")

    def __init__(self, items: list[T], length: int) -> None:
        self._items = items
        self._length = length

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[T, ...]: ...

    def __getitem__(self, index: int | slice) -> T | tuple[T, ...]:
        if isinstance(index, slice):
            start, stop, step = index.indices(self._length)
            return tuple(self._items[start:stop:step])
        position = index + self._length if index < 0 else index
        if not 0 <= position < self._length:
            raise IndexError("log index out of range")
        return self._items[position]

    def __iter__(self) -> Iterator[T]:
        return itertools.islice(self._items, self._length)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Log | tuple):
            return len(other) == self._length and all(a is b or a == b for a, b in zip(self, other, strict=False))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(tuple(self))

    def appended(self, item: T) -> Log[T]:
        """This log with `item` after its entries."""
        items, length = self._items, self._length
        if len(items) == length:
            items.append(item)
            if items[length] is item:  # nobody appended to the list meanwhile
                return Log(items, length + 1)
        own = items[:length]
        own.append(item)
        return Log(own, length + 1)


def appended(entries: Sequence[T], item: T) -> Sequence[T]:
    """`entries` with `item` after them: a tuple while short, then a `Log`."""
    if isinstance(entries, Log):
        return entries.appended(item)
    if len(entries) + 1 < LOG_FROM:
        return entries + (item,) if isinstance(entries, tuple) else (*entries, item)
    items = list(entries)
    items.append(item)
    return Log(items, len(items))


@_strict_record
@dataclass(slots=True, kw_only=True, frozen=True)
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
    expects: Annotated[tuple[str, ...], Field(description="reply or event names that end this wait")]
    correlationId: str
    commandName: str | None = None
    attempt: int = 1
    since: str
    timeoutAt: Annotated[str | None, Field(description="when the wait times out or its timer fires (ISO-8601, UTC)")] = None

    if TYPE_CHECKING:
        _since = Stored[Stamp]()
        _timeoutAt = Stored[Stamp | None]()

    @property
    def due(self) -> float | None:
        """`timeoutAt` as seconds since the epoch."""
        return epoch_of(self._timeoutAt)


@_strict_record
@dataclass(slots=True, kw_only=True)
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

    if TYPE_CHECKING:
        _at = Stored[Stamp]()


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

    if TYPE_CHECKING:
        _at = Stored[Stamp]()


@_strict_record
@dataclass(slots=True, kw_only=True)
class Failure(Record):
    """Why the instance failed."""

    cause: FailureCause
    reason: str
    step: str | None = None
    at: str

    if TYPE_CHECKING:
        _at = Stored[Stamp]()


@_strict_record
@dataclass(slots=True, kw_only=True)
class Compensation(Record):
    """The undo work of a failed instance: what is left (next first) and what is done."""

    pending: tuple[UndoCommand, ...] = ()
    undone: tuple[UndoCommand, ...] = ()
    failed: Annotated[UndoCommand | None, Field(description="the undo that could not complete")] = None
    settledStatus: Annotated[str | None, Field(description="the status to return to when a late undo is done")] = None
    attempts: Annotated[dict[str, int], Field(description="`frame:step` -> the last attempt sent of its undo")] = field(default_factory=_empty)
    roundStart: Annotated[int, Field(description="the attempt that began the current round of the undo in flight")] = 1


@_strict_record
@dataclass(slots=True, kw_only=True)
class LateReply(Record):
    """A reply that arrived after its step gave up, and what was done about it."""

    type: str
    step: str
    at: str
    action: LateAction

    if TYPE_CHECKING:
        _at = Stored[Stamp]()


@_strict_record
@dataclass(slots=True, kw_only=True)
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
        _at = Stored[Stamp]()


if TYPE_CHECKING:
    # What a state holds: a tuple, or a `Log` once long; both are sequences.
    Milestones = Sequence[str]
    Completions = Sequence[Completion]
    Entries = Sequence[HistoryEntry]
else:
    # What pydantic reads and writes: tuples (a state's logs are written as tuples, see
    # `InstanceState._serializable`), so its schema and its fast paths are a tuple's.
    Milestones = tuple[str, ...]
    Completions = tuple[Completion, ...]
    Entries = tuple[HistoryEntry, ...]


@with_config(ConfigDict(extra="forbid", title="procflow instance state"))
@dataclass(slots=True, kw_only=True)
class InstanceState(Record):
    """The explicit state of one instance: the lesson's visible process record and more."""

    workflowId: str
    type: Annotated[str, Field(description="the process name")]
    status: Annotated[str, Field(description="the business situation, e.g. waiting_for_payment, compensating, completed")]
    completedSteps: Annotated[Milestones, Field(description="milestones reached, in order (the reply that ended each step)")]
    nextAction: Annotated[str | None, Field(description="the step the instance waits on (or the undo it runs next)")]
    timeoutAt: Annotated[str | None, Field(description="when the instance acts by itself next (ISO-8601, UTC)")]
    schemaVersion: int = SCHEMA_VERSION
    definition: DefinitionRef
    correlationId: str
    startedAt: str
    updatedAt: str
    deadlineAt: str | None = None
    input: dict[str, Any]
    data: Annotated[dict[str, Any], Field(description="payloads the process bound with `as` (its frame `main`)")] = field(default_factory=_empty)
    waits: tuple[Wait, ...] = ()
    tokens: tuple[Token, ...] = ()
    frames: Annotated[dict[str, Frame], Field(description="the frames of called processes, by frame id")] = field(default_factory=_empty)
    joins: dict[str, int] = field(default_factory=_empty)
    completed: Completions = ()
    compensation: Compensation | None = None
    failure: Failure | None = None
    abandoned: tuple[Abandoned, ...] = ()
    lateReplies: tuple[LateReply, ...] = ()
    seenMessageIds: tuple[str, ...] = ()
    seq: int = 0
    history: Entries = ()

    if TYPE_CHECKING:
        # As kept (see `keep_stamps`, `keep_single`): what the engine reads and writes.
        _timeoutAt = Stored[Stamp | None]()
        _startedAt = Stored[Stamp]()
        _updatedAt = Stored[Stamp]()
        _deadlineAt = Stored[Stamp | None]()
        _waits = Stored["Wait | tuple[Wait, ...]"]()
        _history = Stored["HistoryEntry | Entries"]()

    @property
    def is_terminal(self) -> bool:
        """True once the instance has nothing more to do by itself."""
        return self.status in TERMINAL

    def to_json(self) -> dict[str, Any]:
        """The state as a JSON object (what `run --json` prints and stores keep)."""
        return self.model_dump(mode="json")

    def _serializable(self) -> InstanceState:
        """This state with its logs as the tuples they stand for (what pydantic writes)."""
        history, completed, steps = self._history, self.completed, self.completedSteps
        if not (isinstance(history, Log) or isinstance(completed, Log) or isinstance(steps, Log)):
            return self
        plain = shell(self)
        plain._history, plain.completed, plain.completedSteps = tuple(self.history), tuple(completed), tuple(steps)
        return plain

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
    """A new state object sharing every value with `state` (the engine's working copy starts
    so; the SQLite store writes one without its history). Written out field by field, as the
    fields are kept: the dataclass constructor or `copy.copy` cost several times as much (a
    test checks that no field is left out)."""
    new: InstanceState = object.__new__(InstanceState)
    new.workflowId = state.workflowId
    new.type = state.type
    new.status = state.status
    new.completedSteps = state.completedSteps
    new.nextAction = state.nextAction
    new._timeoutAt = state._timeoutAt
    new.schemaVersion = state.schemaVersion
    new.definition = state.definition
    new.correlationId = state.correlationId
    new._startedAt = state._startedAt
    new._updatedAt = state._updatedAt
    new._deadlineAt = state._deadlineAt
    new.input = state.input
    new.data = state.data
    new._waits = state._waits
    new.tokens = state.tokens
    new.frames = state.frames
    new.joins = state.joins
    new.completed = state.completed
    new.compensation = state.compensation
    new.failure = state.failure
    new.abandoned = state.abandoned
    new.lateReplies = state.lateReplies
    new.seenMessageIds = state.seenMessageIds
    new.seq = state.seq
    new._history = state._history
    return new


def migrate_state(data: dict[str, Any]) -> dict[str, Any]:
    """The JSON of a state of an older schema version, in the current shape (the input is not changed).

    1 -> 2: the main process's frame became the instance's own `data`; a history entry's
    `changes` became its `status`, `completedSteps`, `failure` and `undone`; a wait's `due`
    (a copy of its `timeoutAt` in seconds) is no longer kept."""
    version = data.get("schemaVersion", SCHEMA_VERSION)
    if not isinstance(version, int) or version >= SCHEMA_VERSION:
        return data
    out = dict(data)
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


_ISO_CACHE: dict[float, str] = {}
_EPOCH_CACHE: dict[str, float] = {}


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
        if len(_ISO_CACHE) > 256:
            _ISO_CACHE.clear()
        _ISO_CACHE[key] = text
        if text not in _EPOCH_CACHE:
            # What parsing the text gives (to the millisecond), without parsing it.
            if len(_EPOCH_CACHE) > 256:
                _EPOCH_CACHE.clear()
            _EPOCH_CACHE[text] = m.replace(microsecond=m.microsecond // 1000 * 1000).timestamp()
    return text


def instant_epoch(text: str) -> float:
    """ISO-8601 text -> seconds since the epoch (cached, bounded). ValueError when malformed."""
    epoch = _EPOCH_CACHE.get(text)
    if epoch is None:
        epoch = parse_instant(text).timestamp()
        if len(_EPOCH_CACHE) > 256:
            _EPOCH_CACHE.clear()
        _EPOCH_CACHE[text] = epoch
    return epoch


def from_epoch(seconds: float) -> datetime:
    """Seconds since the epoch -> an aware UTC datetime."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)


def instant_of(epoch: float) -> Stamp:
    """What the engine keeps for the instant `epoch` (seconds since the epoch), a record's field
    reading as `iso_epoch(epoch)`: the instant that text names, to the millisecond (what reading
    the text back gives, so the engine sees the same instants before and after a round trip
    through JSON). The text itself in the one case where that instant is written otherwise: an
    instant less than a millisecond past a whole second is written `.000Z`, the whole second
    `Z`. Taken from the caches of `iso_epoch` and `instant_epoch`: instances at the same
    instant share one float."""
    text = _ISO_CACHE.get(epoch)
    if text is not None:  # the usual case, at the cost of two lookups
        instant = _EPOCH_CACHE.get(text)
        if instant == epoch:
            return instant
    text = iso_epoch(epoch)
    instant = _EPOCH_CACHE.get(text)
    if instant is None:
        instant = instant_epoch(text)
    if instant == epoch or iso_epoch(instant) == text:
        return instant
    return text


@overload
def epoch_of(kept: Stamp) -> float: ...


@overload
def epoch_of(kept: Stamp | None) -> float | None: ...


def epoch_of(kept: Stamp | None) -> float | None:
    """A kept timestamp (see `Stamp`) as seconds since the epoch. ValueError when it is a text
    that is not a time."""
    return instant_epoch(kept) if isinstance(kept, str) else kept


# The properties' getters are compiled from text, as `dataclasses` compiles `__init__`: one
# that reads its slot by name costs about half what one calling the slot's descriptor costs,
# and pydantic reads every timestamp of a state it writes through them. Their setters are the
# slots' own (C) setters: a value written through the field's name is kept as it is given,
# which keeps pydantic's reading of a state as fast as it was.
_STAMP_GETTER = """
def read(record):
    kept = record._{name}
    if kept.__class__ is float:
        return texts.get(kept) or iso_epoch(kept)
    return kept
"""

_SINGLE_GETTER = """
def read(owner):
    kept = owner._{name}
    return (kept,) if kept.__class__ is record else kept
"""


def _compile(cls: type[Any], name: str, template: str, doc: str, **names: Any) -> None:
    slot = cls.__dict__[name]
    setattr(cls, f"_{name}", slot)  # the slot, under a name the property does not hide
    scope = dict(names)
    exec(template.format(name=name), scope)  # a fixed template, formatted with a field name
    setattr(cls, name, property(scope["read"], slot.__set__, doc=doc))


def keep_stamps(cls: type[Any], *names: str) -> None:
    """Let the timestamp fields `names` of the slotted record class `cls` hold a `Stamp`: the
    engine writes the instants it computes as floats (24 bytes, where a text of about 24
    characters costs 72), through the slot, which stays reachable as `_<name>`. The field
    still reads as its ISO-8601 text (a property that formats a float through the bounded
    cache of `iso_epoch`), and a value written through the field's name (by pydantic, which
    reads and writes a slotted record's fields by name, `dataclasses.replace` or a caller) is
    kept as given, so the JSON, equality and copies see the texts as before."""
    for name in names:
        doc = f"`{name}` as ISO-8601 text (kept as `_{name}`, see `keep_stamps`)"
        _compile(cls, name, _STAMP_GETTER, doc, texts=_ISO_CACHE, iso_epoch=iso_epoch)


def keep_single(cls: type[Any], name: str, record: type[Any]) -> None:
    """Let the tuple field `name` of the slotted class `cls` hold one `record` by itself (a
    tuple of one costs 48 bytes): the engine keeps a single one so (`as_kept`), through the
    slot, reachable as `_<name>`; the field reads as a tuple of it. A value written through
    the field's name is kept as given."""
    _compile(cls, name, _SINGLE_GETTER, f"`{name}` as a tuple (kept as `_{name}`, see `keep_single`)", record=record)


def single(kept: T | Sequence[T], record: type[T]) -> Sequence[T]:
    """A field kept by `keep_single` as the sequence it reads as (a tuple, or a history's `Log`)."""
    return (kept,) if kept.__class__ is record else kept  # type: ignore[return-value]


def as_kept(records: tuple[T, ...]) -> T | tuple[T, ...]:
    """`records` as a field kept by `keep_single` keeps them: a single one by itself."""
    return records[0] if len(records) == 1 else records


keep_stamps(Wait, "since", "timeoutAt")
keep_stamps(Completion, "at")
keep_stamps(Abandoned, "at")
keep_stamps(Failure, "at")
keep_stamps(LateReply, "at")
keep_stamps(HistoryEntry, "at")
keep_stamps(InstanceState, "timeoutAt", "startedAt", "updatedAt", "deadlineAt")
keep_single(InstanceState, "waits", Wait)
keep_single(InstanceState, "history", HistoryEntry)
