"""Choosing a durable store by URL, and what every durable store shares.

::

    open_store("procflow.sqlite")                     SqliteStore (a plain path: the embedded default)
    open_store("sqlite:///orders.sqlite")             SqliteStore, relative path (sqlite:////abs/path: absolute)
    open_store("postgresql://user@host:5432/db")      PostgresStore (also postgres://)

`DurableStore` is what the operator's commands use of a store beyond the runtime's `Store`
protocol (listing, inspecting, closing); both durable stores implement it, and both run the
same contract suite (`tests/test_store_contract.py`). The rows they read back are
`InstanceSummary` and `OutboxEntry`; the JSON text they keep is made and read by the
functions below, so the two stores keep the same text for the same state.

The PostgreSQL store needs the `postgres` extra (`pip install 'procflow[postgres]'`); it is
imported only when a `postgresql://` URL is opened, so the embedded default pays nothing.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError

from procflow.errors import DamagedRecord, StoreError
from procflow.interpreter.indexed import (
    Frames,
    Results,
    StoredFrames,
    StoredTokens,
    StoredWaits,
    Tokens,
    Waits,
    earliest_due,
)
from procflow.interpreter.log import Tail
from procflow.interpreter.memory_store import (
    PAGE_LIMIT,
    InstanceSummary,
    PageCursor,
    PinnedDefinition,
    Store,
)
from procflow.interpreter.messages import Dispatch
from procflow.interpreter.records import Record
from procflow.interpreter.state import (
    EMPTY,
    ROOT,
    TERMINAL,
    EachRun,
    Frame,
    HistoryEntry,
    InstanceState,
    migrate_history_entry,
    migrate_state,
    parse_instant,
    shell,
)
from procflow.interpreter.state import SCHEMA_VERSION as STATE_SCHEMA_VERSION
from procflow.limits import NESTING
from procflow.strict_json import loads as strict_loads

R = TypeVar("R", bound=Record)

__all__ = [
    "DurableStore",
    "InstanceSummary",
    "OutboxEntry",
    "PageCursor",
    "StoreGauges",
    "open_store",
    "page_query",
    "redact",
    "store_kind",
]

POSTGRES_SCHEMES = ("postgresql", "postgres")
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


@dataclass(frozen=True, slots=True)
class StoreGauges:
    """What `/metrics` reports of a store, read in a few aggregate queries."""

    instances: dict[tuple[str, str], int]
    """How many instances per (process, status)."""
    transitions: dict[str, int]
    """History entries written per process: every transition the store kept."""
    outbox_unsent: int
    oldest_unsent_at: str | None
    """When the oldest command not yet sent was queued (ISO 8601), or None."""
    timers_due: int

    @classmethod
    def from_rows(cls, grouped: Iterable[tuple[Any, Any, Any, Any]], unsent: Any, oldest: Any, due: Any) -> StoreGauges:
        """The gauges from a durable store's aggregate rows: (process, status, count, history
        entries) per group, the unsent commands and when the oldest was queued, the due timers."""
        rows = list(grouped)
        transitions: dict[str, int] = {}
        for process, _status, _count, entries in rows:
            transitions[str(process)] = transitions.get(str(process), 0) + int(entries)
        return cls(
            {(str(p), str(s)): int(c) for p, s, c, _ in rows}, transitions, int(unsent),
            str(oldest) if oldest is not None else None, int(due),
        )


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A command in the outbox, sent or not."""

    id: int
    dispatch: Dispatch
    created_at: str
    sent_at: str | None
    emitted: int


class DurableStore(Store, Protocol):
    """A store the operator's commands can open, list, inspect and close (SQLite or PostgreSQL)."""

    @property
    def location(self) -> str:
        """Where the store is, as an operator would name it (a path, or a URL without its password)."""

    def summaries(self, status: str | None = None) -> list[InstanceSummary]:
        """One line per instance (or per instance with `status`), in the order they started
        (every row: `instance_page` is what reads a large store a page at a time)."""

    def instance_page(
        self, limit: int = PAGE_LIMIT, after: PageCursor | None = None, status: str | None = None, process: str | None = None,
        *, text: str | None = None, newest_first: bool = False,
    ) -> list[InstanceSummary]:
        """Up to `limit` instances ordered by last change then id (`newest_first`: the other
        way), after `after`; `text` keeps the instance with that id or correlation key."""

    def status_counts(self, process: str | None = None) -> dict[str, int]:
        """How many instances (of `process`) have each status, in one GROUP BY."""

    def gauges(self, now: float) -> StoreGauges:
        """Counts for `/metrics`; `now` (seconds since the epoch) decides which timers are due."""

    def counts_by_definition(self) -> dict[str, int]:
        """How many instances run each pinned definition (by fingerprint)."""

    def outbox_of(self, workflow_id: str) -> list[OutboxEntry]:
        """The commands an instance asked for, sent or not, in order."""

    def version_of(self, workflow_id: str) -> int | None:
        """The stored version of an instance, or None."""

    def pinned_definitions(self) -> list[PinnedDefinition]:
        """Every definition the store keeps."""

    def next_due(self) -> float | None:
        """The earliest timer of the store (seconds since the epoch), or None."""

    def close(self) -> None:
        """Let go of the file or the connections."""

    def __enter__(self) -> DurableStore: ...

    def __exit__(self, *exc: object) -> None: ...


def page_query(
    table: str, limit: int, after: PageCursor | None, status: str | None, process: str | None, mark: str,
    text: str | None = None, newest_first: bool = False, correlations: str = "correlations",
) -> tuple[str, list[Any]]:
    """The WHERE ... ORDER BY ... LIMIT of a page of instances, the same on both stores (`mark`:
    the driver's placeholder). A row value `(updated, workflow_id) > (?, ?)` is one range of the
    indexes on (status or process, updated, workflow_id): the database reads `limit` rows."""
    conditions: list[str] = []
    args: list[Any] = []
    if status is not None:
        conditions.append(f"status = {mark}")
        args.append(status)
    if process is not None:
        conditions.append(f"process = {mark}")
        args.append(process)
    if text is not None:
        # An id or a correlation key, exactly: both are indexed (a substring would be a scan).
        conditions.append(f"(workflow_id = {mark} OR workflow_id IN (SELECT workflow_id FROM {correlations} WHERE correlation_id = {mark}))")
        args.extend((text, text))
    if after is not None:
        conditions.append(f"(updated, workflow_id) {'<' if newest_first else '>'} ({mark}, {mark})")
        args.extend(after)
    where = f"WHERE {' AND '.join(conditions)} " if conditions else ""
    args.append(max(0, limit))
    order = "updated DESC, workflow_id DESC" if newest_first else "updated, workflow_id"
    return f"FROM {table} {where}ORDER BY {order} LIMIT {mark}", args


# ---------------------------------------------------------------- choosing


def store_kind(target: str | Path) -> str:
    """`sqlite` or `postgresql`: which store `target` (a path or a URL) names; StoreError for
    a URL of any other kind."""
    match = _URL.match(str(target))
    if match is None:
        return "sqlite"
    scheme = match.group(1).lower()
    if scheme == "sqlite":
        return "sqlite"
    if scheme in POSTGRES_SCHEMES:
        return "postgresql"
    raise StoreError(
        f"--store {redact(str(target))}: procflow keeps instances in SQLite (a file path, or sqlite:///path) or in "
        f"PostgreSQL (postgresql://user@host:port/database), not in `{scheme}://`"
    )


def sqlite_path(target: str | Path) -> Path:
    """The file a path or a `sqlite:///` URL names (`sqlite:///x` is relative, `sqlite:////x` absolute)."""
    text = str(target)
    if not _URL.match(text):
        return Path(text)
    rest = text.split("://", 1)[1]
    if not rest.startswith("/") or rest == "/":
        raise StoreError(
            f"--store {text}: an SQLite URL names a file after three slashes: sqlite:///relative/path.sqlite or "
            "sqlite:////absolute/path.sqlite"
        )
    return Path(rest[1:])


RECENT_STATES = 64
"""How many instances' last written or read states a durable store keeps in memory by default
(`RecentStates`): a state of a thousand waiting branches takes about 1 MB."""

RECENT_WEIGHT = 100_000
"""How much the states a durable store keeps may weigh in all (`state_weight`: one for the
state, one for each wait, token, frame and for-each item; about 500 bytes to 1 KB each, so
some 50 to 100 MB): 64 thousand-branch states would take some 70 MB, 64 of ten thousand
branches 700 MB. The state of the latest transition is kept whatever it weighs."""


def state_weight(state: InstanceState) -> int:
    """About how much memory a kept state holds, in waits, tokens, frames and for-each items
    (each some 500 bytes to 1 KB), plus one for the rest of it (`RecentStates`)."""
    return 1 + len(state.waits) + len(state.tokens) + len(state.frames) + sum(len(run.items) for run in state.each.values())


def open_store(target: str | Path, *, create: bool = True, recent: int = RECENT_STATES) -> DurableStore:
    """Open the store `target` names: a path or `sqlite:///...` (SQLite), or `postgresql://...`.

    `create=False` refuses to make a new store (for commands that only read); `recent`: how
    many instances' states it keeps in memory for their next transitions (`RecentStates`).
    Every refusal is a `StoreError` that says what is wrong, where, and what to do."""
    if store_kind(target) == "postgresql":
        try:
            module = importlib.import_module("procflow.interpreter.postgres_store")
        except ImportError as missing:
            raise StoreError(
                f"--store {redact(str(target))} needs the PostgreSQL driver, which is not installed ({missing}); "
                "install it with `pip install 'procflow[postgres]'`"
            ) from None
        store: DurableStore = module.PostgresStore(str(target), create=create, recent=recent)
        return store
    from procflow.interpreter.sqlite_store import SqliteStore

    return SqliteStore(sqlite_path(target), create=create, recent=recent)


def redact(url: str) -> str:
    """A URL fit to print: its password replaced by `***`."""
    if not _URL.match(url):
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


# ---------------------------------------------------------------- what both stores keep


def encode_state(state: InstanceState) -> str:
    """The state as JSON without what grows by an entry a step: its history entries are rows of
    their own, and each row also holds what its transition appended to the state's completions
    and milestones (`history_rows`). A transition writes its new entries, not the whole record
    again, and the instance row stays the same size however old the instance is. Its waits,
    tokens and frames, when they are many (indexed), are rows of their own too (`item_rows`),
    a for-each item's frame is kept without its input (`stored_frame`), and the instance's
    input is a column of its own, written with the row (`encode_input`)."""
    waits, tokens, frames, each = state.waits, state.tokens, state.frames, state.each
    if in_rows(frames):
        frames = EMPTY
    elif frames and any(frame.forEach is not None for frame in frames.values()):
        frames = {key: stored_frame(frame) for key, frame in frames.items()}
    if each and any(run_in_rows(run) for run in each.values()):
        each = {key: dataclasses.replace(run, items=(), results=()) if run_in_rows(run) else run for key, run in each.items()}
    return dataclasses.replace(
        state, history=(), completed=(), completedSteps=(), input=EMPTY,
        waits=() if in_rows(waits) else waits, tokens=() if in_rows(tokens) else tokens, frames=frames, each=each,
    ).model_dump_json()


def encode_input(state: InstanceState) -> str:
    """The instance's input as JSON: kept in a column of its own, written once (it never changes)."""
    return _json(state.input)


def run_in_rows(run: EachRun) -> bool:
    """Whether a for-each run's items and results are kept in rows of their own: when its
    results are many (indexed)."""
    return not isinstance(run.results, tuple) and isinstance(run.results, Results)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def stored_frame(frame: Frame) -> Frame:
    """A frame as a store keeps it: a for-each item's frame without its input, which is its
    parent frame's (`item_inputs` gives it back when the state is read). A thousand items
    each kept a copy of the instance's input, a thousand lines: a state of 12 MB."""
    return dataclasses.replace(frame, input=EMPTY) if frame.forEach is not None and frame.input else frame


def item_inputs(state: InstanceState, only: Iterable[Frame] | None = None) -> InstanceState:
    """The state read back with each for-each item's frame (of those `only`, when given) holding
    its parent frame's input again (the very object: shared, as the engine shares it)."""
    frames = state.frames
    if not frames:
        return state

    def input_of(frame_id: str | None, depth: int = 0) -> dict[str, Any]:
        if frame_id is None or frame_id == ROOT or depth > len(frames):
            return state.input
        frame = frames[frame_id]
        if frame.forEach is not None and not frame.input:
            frame.input = input_of(frame.parent, depth + 1)
        return frame.input

    for frame in frames.values() if only is None else only:
        if frame.forEach is not None and not frame.input:
            frame.input = input_of(frame.parent)
    return state


ITEM_KINDS = ("frames", "tokens", "waits")
"""The collections of a state that a durable store keeps one row per entry once they are many:
a wait under its serial (`Waits.space`), a token under its id, a frame under its id (keys
are text; the numbers are ordered as numbers when read)."""

EACH_KINDS = ("each-items", "each-results")
"""And of a for-each over many items: its list of items (one row, under the run's key, written
once) and each item's result (under `<run key>/<index>`, written when the item ends)."""

Item = tuple[str, str, str, str | None]
"""A row of `state_items`: (kind, key, the entry's JSON, what a wait shows in the status (None
for the others, and for waits written from a state read without it))."""


@dataclass(frozen=True, slots=True)
class ItemRows:
    """What a transition writes of its state's waits, tokens and frames kept in rows of their
    own: the kinds whose rows all go first, then the rows gone, then the rows new or changed."""

    cleared: tuple[str, ...]
    deleted: list[tuple[str, str]]
    written: list[Item]

    @property
    def empty(self) -> bool:
        return not (self.cleared or self.deleted or self.written)


def in_rows(entries: object) -> bool:
    """Whether a state's waits, tokens or frames are kept in rows of their own: when they are
    indexed, or as they were read from those rows."""
    if isinstance(entries, tuple | dict):
        return isinstance(entries, StoredWaits | StoredTokens | StoredFrames)
    return isinstance(entries, Waits | Tokens | Frames)


def item_count(state: InstanceState) -> int:
    """How many rows of `state_items` the state has (the instance row's `items`)."""
    count = sum(len(entries) for entries in (state.waits, state.tokens, state.frames) if in_rows(entries))
    if state.each:
        count += sum(1 + run.results.set_count() for run in state.each.values() if isinstance(run.results, Results))
    return count


def _all_items(kind: str, entries: object) -> list[Item]:
    if isinstance(entries, Waits):
        return [(kind, str(s), entries.by_serial(s).model_dump_json(), entries.shown(s)) for s in sorted(entries.serials())]
    if isinstance(entries, StoredWaits):
        return [(kind, str(serial), wait.model_dump_json(), None) for serial, wait in zip(entries.serials, entries, strict=True)]
    if isinstance(entries, Tokens | StoredTokens):
        return [(kind, str(token.id), token.model_dump_json(), None) for token in entries]
    assert isinstance(entries, Frames | StoredFrames)
    return [(kind, key, stored_frame(frame).model_dump_json(), None) for key, frame in entries.items()]


def item_rows(state: InstanceState, before: InstanceState | None, had_items: bool) -> ItemRows:
    """The rows of `state_items` a transition writes: against `before`, the state the row
    held (`RecentStates`: one this store wrote, or read from the row), the waits, tokens,
    frames and for-each results it changed; without it, every one (after clearing whatever the
    row had, `had_items`). Waits, tokens and frames read from rows and left as they were stay
    in their rows; waits read from rows keep their serials in the index a transition builds
    from them (`StoredWaits`), so only those it parked or removed are written, whichever worker
    wrote them before."""
    cleared: list[str] = []
    deleted: list[tuple[str, str]] = []
    written: list[Item] = []
    for kind in ITEM_KINDS:
        new = getattr(state, kind)
        old = getattr(before, kind) if before is not None else None
        old_rows = in_rows(old)
        if new is old and old_rows:
            continue
        if old_rows and isinstance(old, tuple) and isinstance(new, Tokens):
            old_tokens = {token.id: token for token in old}
            deleted += [(kind, str(token_id)) for token_id in old_tokens if new.get(token_id) is None]
            written += [(kind, str(token.id), token.model_dump_json(), None) for token in new if old_tokens.get(token.id) is not token]
        elif old_rows and isinstance(old, dict) and isinstance(new, Frames):
            deleted += [(kind, key) for key in old if key not in new]
            written += [(kind, key, stored_frame(frame).model_dump_json(), None) for key, frame in new.items() if old.get(key) is not frame]
        elif isinstance(new, Waits) and isinstance(old, Waits | StoredWaits) and new.space is old.space:
            now, then = new.serials(), old.serials() if isinstance(old, Waits) else frozenset(old.serials)
            deleted += [(kind, str(serial)) for serial in then - now]
            written += [(kind, str(serial), new.by_serial(serial).model_dump_json(), new.shown(serial)) for serial in sorted(now - then)]
        elif isinstance(new, Tokens) and isinstance(old, Tokens):
            gone, changed = new.changes_since(old)
            deleted += [(kind, str(token_id)) for token_id in gone]
            written += [(kind, str(token.id), token.model_dump_json(), None) for token in changed]
        elif isinstance(new, Frames) and isinstance(old, Frames):
            gone_frames, changed_frames = new.changes_since(old)
            deleted += [(kind, key) for key in gone_frames]
            written += [(kind, key, stored_frame(frame).model_dump_json(), None) for key, frame in changed_frames]
        else:
            if old_rows or (before is None and had_items):
                cleared.append(kind)
            if in_rows(new):
                written += _all_items(kind, new)
    if before is None:
        if had_items:
            cleared += EACH_KINDS
        for key, run in state.each.items():
            if run_in_rows(run):
                written += _all_each_items(key, run)
    elif state.each or before.each:
        _each_rows(state.each, before.each, deleted, written)
    return ItemRows(tuple(cleared), deleted, written)


def _all_each_items(key: str, run: EachRun) -> list[Item]:
    assert isinstance(run.results, Results)
    return [
        ("each-items", key, _json(list(run.items)), None),
        *(("each-results", f"{key}/{i}", _json(v), None) for i, v in run.results.set_results()),
    ]


def _each_rows(runs: Mapping[str, EachRun], before: Mapping[str, EachRun], deleted: list[tuple[str, str]], written: list[Item]) -> None:
    """The rows of the for-each runs a transition changed, against the runs the row held."""
    for key, run in runs.items():
        old = before.get(key)
        if old is run:
            continue
        old_rows = old is not None and run_in_rows(old)
        if not run_in_rows(run):
            if old is not None and old_rows:
                deleted += _each_keys(key, old)
            continue
        if not old_rows:
            written += _all_each_items(key, run)
            continue
        assert old is not None and isinstance(run.results, Results) and isinstance(old.results, Results)
        if old.items is not run.items:
            written.append(("each-items", key, _json(list(run.items)), None))
        written += [("each-results", f"{key}/{i}", _json(v), None) for i, v in run.results.changes_since(old.results)]
    for key, old in before.items():
        if key not in runs and run_in_rows(old):
            deleted += _each_keys(key, old)


def _each_keys(key: str, run: EachRun) -> list[tuple[str, str]]:
    assert isinstance(run.results, Results)
    return [("each-items", key), *(("each-results", f"{key}/{i}") for i, _ in run.results.set_results())]


def encode_entries(entries: Sequence[HistoryEntry]) -> list[tuple[int, str]]:
    """History entries as (seq, JSON text)."""
    return [(entry.seq, entry.model_dump_json()) for entry in entries]


LOGS = ("completed", "completedSteps")
"""The state's sequences that grow by an entry a step, besides its history: kept with the
history rows of the transitions that appended to them."""

HistoryRow = tuple[int, str, str | None, str | None]
"""A history row as a store writes it: (seq, the entry's JSON, the JSON arrays of the
completions and of the milestones its transition appended, each None when none)."""

LogTexts = tuple[object, object]
"""What a stored history row holds of the state's logs: the JSON arrays of the completions and
of the milestones its transition appended (each None when none), in the order of `LOGS`."""


def history_rows(state: InstanceState, stored: tuple[int, int, int]) -> list[HistoryRow]:
    """The history rows of a transition: its entries after the first `stored[0]` (those the
    store holds), the last of them also holding the completions after the first `stored[1]`
    and the milestones after the first `stored[2]`. StoreError when there are new completions
    or milestones but no new entry to keep them with (the engine appends an entry every
    transition)."""
    entries = state.history[stored[0] :]
    completed = state.completed[stored[1] :]
    steps = state.completedSteps[stored[2] :]
    rows: list[HistoryRow] = [(seq, text, None, None) for seq, text in encode_entries(entries)]
    if completed or steps:
        if not rows:
            raise StoreError(
                f"instance {state.workflowId}: a state with new completed steps but no new history entry cannot be kept; "
                "nothing was written (a transition of the engine always appends one)"
            )
        seq, entry, _, _ = rows[-1]
        rows[-1] = (
            seq, entry,
            "[" + ",".join(c.model_dump_json() for c in completed) + "]" if completed else None,
            json.dumps(list(steps), separators=(",", ":"), ensure_ascii=False) if steps else None,
        )
    return rows


def encode_dispatch(dispatch: Dispatch) -> str:
    """An outbox row's command (with its dedup key) as JSON text."""
    return dispatch.model_dump_json()


def decode_dispatch(text: object, where: str) -> Dispatch:
    """A stored command back, read strictly; DamagedRecord (worded) when it cannot be."""
    what = f"a command in the outbox of {where}"
    data = read_stored_json(text, what)
    try:
        return Dispatch.model_validate(data)
    except ValidationError as error:
        raise DamagedRecord(f"{what} is damaged ({error.errors()[0]['msg']}). {DAMAGED_HINT}") from None


def decode_state(
    workflow_id: str, text: object, entries: Sequence[object], where: str, logs: Iterable[LogTexts] = (),
    items: Iterable[tuple[object, object, object]] = (), input_text: object = None, given_input: dict[str, Any] | None = None,
) -> InstanceState:
    """A stored state, its history entries and what its history rows hold of its logs
    (`LogTexts`, in the order of the rows) back as one state, migrated from older state
    schemas; StoreError for a state written by a newer procflow, DamagedRecord (worded, naming
    the instance) when they cannot be read back as the record procflow wrote. A state written
    before its history rows held its logs holds them in its JSON: the rows' come first, then
    what the JSON holds. `items`: its rows of `state_items` (kind, key, JSON): its waits, tokens,
    frames and for-each runs when they are many. `input_text`: the row's input column (None in
    a row written before it had one: the JSON holds the input); `given_input`: the input itself,
    already read (a state brought up to its row: `item_log.caught_up`)."""
    data = read_stored_json(text, f"the state of instance {workflow_id} in {where}")
    if not isinstance(data, dict):
        raise DamagedRecord(f"the state of instance {workflow_id} in {where} is damaged: not a JSON object. {DAMAGED_HINT}")
    stored = data.get("schemaVersion", STATE_SCHEMA_VERSION)
    if isinstance(stored, int) and stored > STATE_SCHEMA_VERSION:
        raise StoreError(
            f"instance {workflow_id} in {where} has state schema {stored}, newer than this procflow reads "
            f"({STATE_SCHEMA_VERSION}); upgrade procflow to run it. Nothing was changed."
        )
    history = [read_stored_json(entry, f"a history entry of instance {workflow_id} in {where}") for entry in entries]
    kept: dict[str, list[Any]] = {log: [] for log in LOGS}
    for texts in logs:
        for log, logged in zip(LOGS, texts, strict=True):
            if logged is not None:
                value = read_stored_json(logged, f"the `{log}` entries kept with the history of instance {workflow_id} in {where}")
                if not isinstance(value, list):
                    raise DamagedRecord(
                        f"the `{log}` entries kept with the history of instance {workflow_id} in {where} are damaged: "
                        f"not a JSON array. {DAMAGED_HINT}"
                    )
                kept[log].extend(value)
    listed, serials = _listed_items(workflow_id, items, where)
    each_items, each_results = listed.pop("each-items", {}), listed.pop("each-results", {})
    for kind in listed:
        if data.get(kind):
            raise DamagedRecord(
                f"the state of instance {workflow_id} in {where} is damaged: its {kind} are both in its JSON and in rows "
                f"of their own. {DAMAGED_HINT}"
            )
    try:
        data = migrate_state(data)
        data.update(listed)
        if input_text is not None:
            data["input"] = read_stored_json(input_text, f"the input of instance {workflow_id} in {where}")
        if each_items or each_results:
            _each_from_rows(data, each_items, each_results)
        data["history"] = [migrate_history_entry(entry) for entry in history]
        for log, rows in kept.items():
            if rows:
                data[log] = [*rows, *data.get(log, ())]
        state = InstanceState.model_validate(data)
        for key in each_items:  # (kept in rows: indexed, as the engine keeps them, `run_in_rows`)
            run = state.each[key]
            state.each[key] = dataclasses.replace(run, results=Results.of(run.results))
    except (ValidationError, ValueError, TypeError, KeyError, AttributeError) as error:
        first = error.errors()[0] if isinstance(error, ValidationError) else None
        why = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}" if first else f"{type(error).__name__}: {error}"
        raise DamagedRecord(f"the state of instance {workflow_id} in {where} is damaged ({why}). {DAMAGED_HINT}") from None
    # What was read from rows is marked so (`StoredWaits`): left as it is, it stays in its rows.
    if "waits" in listed:
        state.waits = StoredWaits(state.waits, serials)
    if "tokens" in listed:
        state.tokens = StoredTokens(state.tokens)
    if "frames" in listed:
        state.frames = StoredFrames(state.frames)
    if given_input is not None:
        state.input = given_input
    return item_inputs(state)


def _listed_items(workflow_id: str, items: Iterable[tuple[object, object, object]], where: str) -> tuple[dict[str, Any], list[int]]:
    """An instance's rows of `state_items` as its state's JSON holds them: its waits and tokens
    as lists in the order of their keys (numbers), its frames as an object by id; and the
    waits' keys, in that order (their serials: `StoredWaits`)."""
    by_kind: dict[str, list[tuple[str, Any]]] = {}
    for kind, key, item in items:
        if kind not in ITEM_KINDS and kind not in EACH_KINDS:
            raise DamagedRecord(
                f"the waits, tokens and frames of instance {workflow_id} in {where} are damaged: a row of kind {kind!r}. {DAMAGED_HINT}"
            )
        value = read_stored_json(item, f"one of the {kind} of instance {workflow_id} in {where}")
        by_kind.setdefault(str(kind), []).append((str(key), value))
    listed: dict[str, Any] = {}
    serials: list[int] = []
    for kind, rows in by_kind.items():
        if kind in ("frames", *EACH_KINDS):
            listed[kind] = dict(rows)
            continue
        try:
            numbered = sorted(((int(key), value) for key, value in rows), key=lambda row: row[0])
        except ValueError:
            numbered = []
        if not numbered or len({key for key, _ in numbered}) != len(numbered):
            raise DamagedRecord(
                f"the {kind} of instance {workflow_id} in {where} are damaged: a row's key is not a number, or two are "
                f"the same number. {DAMAGED_HINT}"
            ) from None
        listed[kind] = [value for _, value in numbered]
        if kind == "waits":
            serials = [key for key, _ in numbered]
    return listed, serials


def _each_from_rows(data: dict[str, Any], items: dict[str, Any], results: dict[str, Any]) -> None:
    """Put the for-each runs' items and results kept in rows back into a state's JSON (a row
    of no run, or of an item past the end, makes it damaged: `ValueError`)."""
    runs = data.get("each")
    if not isinstance(runs, dict):
        raise ValueError("rows of for-each runs, but the state has none")
    for key, listed in items.items():
        run = runs.get(key)
        if not isinstance(run, dict) or not isinstance(listed, list) or run.get("items") or run.get("results"):
            raise ValueError(f"the for-each run {key} is kept both in rows and in the state, or not at all")
        run["items"], run["results"] = listed, [None] * len(listed)
    for place, value in results.items():
        key, _, index = place.rpartition("/")
        run = runs.get(key)
        if key not in items or not isinstance(run, dict) or not index.isdigit() or int(index) >= len(run["results"]):
            raise ValueError(f"a result of the for-each run {key} at {index!r}, which it does not have")
        run["results"][int(index)] = value


def decode_for_transition(
    workflow_id: str, text: object, counts: tuple[int, int, int], where: str, logs: Iterable[LogTexts] | None = None,
    items: Iterable[tuple[object, object, object]] = (), input_text: object = None, given_input: dict[str, Any] | None = None,
) -> InstanceState:
    """A stored state as its next transition needs it: its history entries, completions and
    milestones stay in the store (`Tail`s that know how many there are; `counts` is the row's
    (history, completed, completedSteps) counts), so reading it costs the same however old the
    instance is. Given `logs` (what its history rows hold of them), the completions and
    milestones are read whole (for a transition that reads them: `NotLoaded`)."""
    history_count, completed_count, milestone_count = counts
    if logs is not None:
        state = decode_state(workflow_id, text, (), where, logs, items, input_text, given_input)
    else:
        state = decode_state(workflow_id, text, (), where, items=items, input_text=input_text, given_input=given_input)
        # What the JSON holds (a row written before the logs had rows of their own) follows the
        # stored entries; with none stored, the state holds its whole logs already.
        if completed_count:
            state.completed = Tail(completed_count, tuple(state.completed))
        if milestone_count:
            state.completedSteps = Tail(milestone_count, tuple(state.completedSteps))
    state.history = Tail(history_count)
    return state


class RecentStates:
    """The states this store object last wrote or read, by instance, each with its version.

    A worker mostly works on the instances it worked on last: a reply answers the command its
    own transition sent. When the row's version is still the one written here, the next
    `load` hands the engine that state again instead of decoding the row's JSON (the same
    state: the engine never changes a state it is given, and the store wrote exactly it). For
    a state of a thousand waits that decoding cost four times everything else of a transition,
    and a state handed over keeps the indexes the engine built on it (`interpreter/indexed.py`).
    The row's version decides, read in the same statement as the row: when another writer
    (another worker, another process) moved it, the row is decoded as before. Bounded twice:
    at most `size` instances, and at most `weight` in all (`state_weight`), so a worker with
    many wide instances in flight does not hold them all; the least recently used instance is
    let go first, and the one just kept never. A lock keeps it whole when threads share the
    store (the console's). The counterpart of a workflow worker's "sticky" cache in Temporal,
    with the row's version in place of the history's length.
    """

    def __init__(self, size: int = RECENT_STATES, weight: int = RECENT_WEIGHT) -> None:
        self.size = size
        self.weight = weight
        # workflow id -> (version, state, whether it was read from the row (in the shape `load`
        # gives) rather than written here, its `state_weight`)
        self._states: OrderedDict[str, tuple[int, InstanceState, bool, int]] = OrderedDict()
        self._held = 0  # the weight of the states kept
        self._lock = threading.Lock()

    @property
    def held_weight(self) -> int:
        """The weight of the states kept (`state_weight`, summed)."""
        return self._held

    def version(self, workflow_id: str) -> int | None:
        """The version of the state kept for `workflow_id`, or None (ask the row for its JSON)."""
        kept = self._states.get(workflow_id)
        return kept[0] if kept is not None else None

    def state(self, workflow_id: str, version: int, counts: tuple[int, int, int]) -> InstanceState | None:
        """The kept state of `workflow_id` as `load` hands it to a transition (its history,
        completions and milestones `Tail`s of `counts`, as if read from the row), when it is
        the state of `version`; else None."""
        with self._lock:
            kept = self._states.get(workflow_id)
            if kept is None or kept[0] != version:
                return None
            self._states.move_to_end(workflow_id)
        state = shell(kept[1])
        if not kept[2]:  # (one read from the row is in the shape `load` gives already)
            history_count, completed_count, milestone_count = counts
            state.history = Tail(history_count)
            state.completed = Tail(completed_count) if completed_count else ()
            state.completedSteps = Tail(milestone_count) if milestone_count else ()
        return state

    def held(self, workflow_id: str) -> tuple[int, InstanceState] | None:
        """The version and the state kept for `workflow_id`, whichever version (`caught_up`
        brings it up to the row's); None when none is kept."""
        kept = self._states.get(workflow_id)
        return (kept[0], kept[1]) if kept is not None else None

    def written(self, workflow_id: str, version: int) -> InstanceState | None:
        """The state kept for `workflow_id` when it is `version`'s (what the row holds); else None."""
        kept = self._states.get(workflow_id)
        return kept[1] if kept is not None and kept[0] == version else None

    def keep(self, state: InstanceState, version: int, read: bool = False) -> None:
        """`state` is `version` of its instance: just committed by this store, or just `read`
        from the row (or brought up to it: `caught_up`)."""
        if self.size <= 0:
            return
        weight = state_weight(state)
        with self._lock:
            replaced = self._states.pop(state.workflowId, None)
            if replaced is not None:
                self._held -= replaced[3]
            self._states[state.workflowId] = (version, state, read, weight)
            self._held += weight
            while len(self._states) > self.size or (self._held > self.weight and len(self._states) > 1):
                self._held -= self._states.popitem(last=False)[1][3]

    def forget(self, workflow_id: str | None = None) -> None:
        """Let go of the state kept for `workflow_id` (of every one: None)."""
        with self._lock:
            if workflow_id is None:
                self._states.clear()
                self._held = 0
            else:
                let_go = self._states.pop(workflow_id, None)
                if let_go is not None:
                    self._held -= let_go[3]


RECORD_NESTING = 2 * NESTING.value
"""How deep a stored record may nest: a state holds inputs and payloads (each at most
`nesting` deep) a few levels down."""

DAMAGED_HINT = (
    "Nothing was changed; the other instances are unaffected. Restore the store from a backup, "
    "or remove the instance's row if it is lost."
)


def read_stored_json(text: object, what: str) -> Any:
    """A stored JSON text read back strictly (`procflow.strict_json`); DamagedRecord when it is not.
    No size limit: a store reads back what it wrote, at any size."""
    if not isinstance(text, str | bytes):
        raise DamagedRecord(f"{what} is damaged: it is not text. {DAMAGED_HINT}")
    return strict_loads(text, what=what, limit=None, refuse=DamagedRecord, depth=RECORD_NESTING)


def timer_of(state: InstanceState) -> tuple[float, float | None, float | None] | None:
    """(next due, wait due, deadline) in seconds since the epoch, or None when the instance
    will not act by itself."""
    wait_due = earliest_due(state.waits)
    deadline = None
    # The same condition under which the engine's `advance` acts on a deadline.
    if state.deadlineAt is not None and state.status not in TERMINAL and state.status != "compensating":
        deadline = parse_instant(state.deadlineAt).timestamp()
    moments = [m for m in (wait_due, deadline) if m is not None]
    if not moments:
        return None
    return min(moments), wait_due, deadline
