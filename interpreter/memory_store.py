"""The store interface (`Store`), what it keeps (`Stored`, `PinnedDefinition`), and the store
that keeps it in a Python dict (`InMemoryStore`): for tests, simulations and services that
keep nothing. The durable stores (`sqlite_store`, `postgres_store`) implement the same
interface; `stores.open_store` chooses one by URL.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol, TypeVar

from procflow.dsl.model import ProcessDefinition
from procflow.errors import (
    ConcurrencyError,
    DuplicateMessage,
    InputError,
    StoreError,
)
from procflow.interpreter.indexed import Frames, earliest_due
from procflow.interpreter.messages import Dispatch
from procflow.interpreter.state import InstanceState, instant_epoch

CompileSource = Callable[[str, str, Callable[[str], bytes]], ProcessDefinition]
"""`compile_source(text, path, loader)`: how a pinned text becomes a definition again
(`procflow.load_text`; the interpreter never imports the parser itself)."""
LEASE_SECONDS = 60.0
"""How long a worker holds the commands and timers it claimed: long enough to send a batch and
apply its in-process replies; when it runs out (the worker died), another worker takes them."""

HELD_LEASE_LEFT = LEASE_SECONDS / 2
"""`held_outbox` hands a worker back a command it holds only while this much of the lease is
left; with less, the worker's own `claim_outbox` takes it again, renewing the lease. So a
command read from either is the worker's for at least this long (`Orchestrator.pump`)."""

CLAIM_BATCH = 20
"""How many commands or timers a worker claims at once: small, so that other workers find work."""

PAGE_LIMIT = 50
"""How many instances `procflow instances` lists at once unless told (`--limit`)."""


@dataclass(frozen=True, slots=True)
class InstanceSummary:
    """One line of `procflow instances`: read without building the whole state. `changed` is
    the last change (seconds since the epoch), the first half of the page order."""

    workflow_id: str
    process: str
    status: str
    version: int
    next_action: str | None
    timeout_at: str | None
    updated_at: str
    changed: float = 0.0

    @property
    def cursor(self) -> str:
        """Where the page after this line starts: `procflow instances --after CURSOR`."""
        return f"{self.changed!r}:{self.workflow_id}"


PageCursor = tuple[float, str]
"""(last change, workflow id): a page starts after it. Keyset paging: the order is by last
change then id, so a page costs the same at the millionth instance as at the first, and a
walk through the pages meets every instance (one that changes meanwhile moves to the end)."""


def parse_cursor(text: str) -> PageCursor:
    """`--after` text back as a cursor; InputError when it is not one `procflow instances` printed."""
    moment, colon, workflow_id = text.partition(":")
    try:
        changed = float(moment)
    except ValueError:
        changed = math.nan
    if not colon or not workflow_id or not math.isfinite(changed):
        raise InputError(
            f"--after `{text}` is not a cursor `procflow instances` printed (last change, `:`, workflow id, e.g. "
            "`1767258000.0:wf_401`); copy it from the `next page` line"
        )
    return changed, workflow_id


@dataclass(slots=True)
class Stored:
    """An instance as the store keeps it: its state and its version (for optimistic concurrency)."""

    state: InstanceState
    version: int


@dataclass(frozen=True, slots=True)
class PinnedDefinition:
    """The text a definition was compiled from: its own file and every file it read (called
    processes, input contracts), keyed by the path the compiler asked for."""

    name: str
    version: int
    fingerprint: str
    path: str
    sources: Mapping[str, str] = field(default_factory=dict)


def pinned_definition(definition: ProcessDefinition) -> PinnedDefinition:
    """What to keep of a definition so the same definition can be built again later."""
    sources: dict[str, str] = {}

    def add(current: ProcessDefinition) -> None:
        if current.path in sources:
            return
        sources[current.path] = current.source
        # An input contract read from a JSON file is part of what the text means.
        input_file = getattr(getattr(current.syntax, "process", None), "input_file", None)
        if isinstance(input_file, tuple) and input_file and current.input_schema is not None:
            name = str(input_file[0])
            target = name if current.path.startswith("<") else str(Path(current.path).parent / name)
            sources.setdefault(target, json.dumps(current.input_schema, indent=2))
        for child in current.called.values():
            add(child)

    add(definition)
    return PinnedDefinition(definition.name, definition.version, definition.fingerprint, definition.path, sources)


def compile_pinned_definition(pinned: PinnedDefinition, compile_source: CompileSource) -> ProcessDefinition:
    """Build a pinned definition from the kept text alone (no file on disk is read)."""

    def loader(path: str) -> bytes:
        text = pinned.sources.get(path)
        if text is None:
            raise FileNotFoundError(path)
        return text.encode("utf-8")

    text = pinned.sources.get(pinned.path)
    if not text:
        raise StoreError(f"the store keeps no text for `{pinned.name}` version {pinned.version} ({pinned.fingerprint})")
    definition = compile_source(text, pinned.path, loader)
    if definition.fingerprint != pinned.fingerprint:
        raise StoreError(
            f"the pinned text of `{pinned.name}` version {pinned.version} now compiles to {definition.fingerprint}, "
            f"not {pinned.fingerprint}; this procflow reads it differently. Run the instance with the procflow that started it."
        )
    return definition


def new_correlations(state: InstanceState, before: InstanceState | None) -> list[str]:
    """The business keys `state` answers to that the row may not hold yet: every one without
    `before` (the state the row held, `RecentStates`) or with a few frames; with many, those of
    the frames the transition added (a frame's key never changes): a for-each over a thousand
    items added a thousand keys again at every transition."""
    frames = state.frames
    if before is not None and frames is before.frames:
        return []
    if before is not None and isinstance(frames, Frames) and isinstance(before.frames, Frames):
        _, changed = frames.changes_since(before.frames)
        return [frame.correlationId for key, frame in changed if key not in before.frames]
    if before is not None and isinstance(frames, Frames):  # (many now, a dict before: read from a store)
        return [frame.correlationId for key, frame in frames.items() if key not in before.frames]
    return sorted(state.correlation_ids())


class Store(Protocol):
    """Where instances live. One call of `save` is one atomic transition."""

    def get(self, workflow_id: str) -> Stored | None:
        """The instance, or None."""

    def load(self, workflow_id: str, *, whole: bool = False) -> Stored | None:
        """The instance as its next transition needs it, or None: a durable store leaves the
        history entries, completions and milestones it holds unread (the state's `history`,
        `completed` and `completedSteps` are `Tail`s of them), so a transition costs the same
        at the 1,000th step as at the first. `whole` reads the completions and milestones too,
        for a transition that reads them (one that met `NotLoaded`)."""

    def find(self, process: str | None, correlation_id: str) -> list[str]:
        """Workflow ids of the instances (of `process`, or of any) that correlate by `correlation_id`."""

    def save(
        self,
        state: InstanceState,
        expected_version: int | None,
        dispatches: list[Dispatch],
        message_id: str | None = None,
        message_digest: str | None = None,
        sent: Sequence[int] = (),
        claim_for: str | None = None,
    ) -> int:
        """Write a transition: state, outbox, inbox entry (the message id with the digest of
        the message), and `sent`, the outbox ids of commands the transport took (their "sent"
        mark rides along: one commit for both); `claim_for` names the worker that will send
        the commands queued now (they are born claimed by it for a lease, so it sends them
        without a claim of its own: `held_outbox`); `expected_version` None means a new instance.
        Returns the new version; raises ConcurrencyError when the version moved and
        DuplicateMessage when the inbox already holds `message_id`."""

    def due(self, now: datetime) -> list[str]:
        """Workflow ids with a timer due at or before `now`."""

    def claim_due(self, now: datetime, worker: str, limit: int = 100, lease: float = LEASE_SECONDS) -> list[str]:
        """Like `due`, but only timers no other worker holds, now held by `worker` for `lease`
        seconds (or until the instance's next save sets its timer anew)."""

    def outbox(self, limit: int = 100) -> list[tuple[int, Dispatch]]:
        """Commands not yet marked sent, oldest first."""

    def claim_outbox(self, worker: str, limit: int = 100, lease: float = LEASE_SECONDS) -> list[tuple[int, Dispatch]]:
        """Commands not yet sent that no other worker holds (its own included, their lease
        renewed), oldest first, now held by `worker` for `lease` seconds (or until marked sent)."""

    def held_outbox(self, worker: str, limit: int = 100) -> list[tuple[int, Dispatch]]:
        """Commands not yet sent that `worker` holds with at least `HELD_LEASE_LEFT` of their
        lease left, oldest first: those its own transitions queued for it
        (`save(claim_for=...)`). A read, no write."""

    def mark_sent(self, *outbox_ids: int) -> None:
        """Commands were handed to the transport (their claims end): one transaction for all."""

    def wait_for_work(self, timeout: float) -> None:
        """Wait `timeout` seconds, or less when the store learns of new work (a command queued
        that no worker holds yet, or a timer set that is already due, by another process:
        PostgreSQL's LISTEN/NOTIFY)."""

    def release(self, worker: str, outbox_ids: Iterable[int] = (), workflow_ids: Iterable[str] = ()) -> None:
        """Give up `worker`'s claims on these commands and timers (it could not finish them)."""

    def release_all(self, worker: str) -> None:
        """Give up every claim held in `worker`'s name (what a worker restarted under the same
        name does first: its previous run died holding them)."""

    def seen(self, message_id: str) -> bool:
        """True when a message with this id was already applied."""

    def digest_of(self, message_id: str) -> str | None:
        """The digest of the message applied under this id (None when none was, or when it was
        applied before the store kept digests)."""

    def instances(self, status: str | None = None) -> list[InstanceState]:
        """All instances (or those with one status)."""

    def instance_page(
        self, limit: int = PAGE_LIMIT, after: PageCursor | None = None, status: str | None = None, process: str | None = None,
        *, text: str | None = None, newest_first: bool = False,
    ) -> list[InstanceSummary]:
        """Up to `limit` instances (of `status`, of `process`, whose id or correlation key is
        `text`) ordered by last change then id (`newest_first`: the other way), starting after
        `after`: one indexed range read on a durable store, at any size."""

    def status_counts(self, process: str | None = None) -> dict[str, int]:
        """How many instances (of `process`) have each status, in one query."""

    def pin(self, pinned: PinnedDefinition) -> None:
        """Keep the text of a definition (once per fingerprint)."""

    def pinned(self, fingerprint: str) -> PinnedDefinition | None:
        """The kept text of a definition, or None."""


_K = TypeVar("_K")
_V = TypeVar("_V")


class InMemoryStore:
    """A store in a Python dict: for tests, simulations and services that keep nothing."""

    def __init__(self) -> None:
        self._rows: dict[str, Stored] = {}
        # Every business key an instance was given (its own, its called processes', its for-each
        # items'), as a durable store keeps them: an item's undo is answered under the item's key
        # after its frame is gone.
        self._keys: dict[str, dict[str, None]] = {}
        self._started: dict[str, int] = {}  # workflow id -> in which order it started (how `find` orders)
        self._next_due: dict[str, float] = {}  # workflow id -> when it acts by itself next (if ever)
        self._outbox: dict[int, Dispatch] = {}
        # What a worker holds: (kind, key) -> (worker, until, on the monotonic clock).
        self._claims: dict[tuple[str, object], tuple[str, float]] = {}
        self._next_outbox = 1
        self._inbox: dict[str, str | None] = {}  # message id -> digest of the message
        self._pinned: dict[str, PinnedDefinition] = {}

    def get(self, workflow_id: str) -> Stored | None:
        """The instance, or None."""
        return self._rows.get(workflow_id)

    def load(self, workflow_id: str, *, whole: bool = False) -> Stored | None:
        """The instance, or None (in memory the whole record costs nothing to hand over)."""
        return self._rows.get(workflow_id)

    def find(self, process: str | None, correlation_id: str) -> list[str]:
        """Instances (of `process`) given the business key `correlation_id` (their own, a called
        process's, a for-each item's, even after its frame ended), in the order they started."""
        rows = self._rows
        found = [wid for wid in self._keys.get(correlation_id, ()) if process is None or rows[wid].state.type == process]
        return sorted(found, key=self._started.__getitem__) if len(found) > 1 else found

    def save(
        self,
        state: InstanceState,
        expected_version: int | None,
        dispatches: list[Dispatch],
        message_id: str | None = None,
        message_digest: str | None = None,
        sent: Sequence[int] = (),
        claim_for: str | None = None,
    ) -> int:
        """Write one transition atomically (a dict update cannot be half done)."""
        if message_id is not None and message_id in self._inbox:
            raise DuplicateMessage(f"message {message_id} was already applied")
        current = self._rows.get(state.workflowId)
        if expected_version is None and current is not None:
            raise ConcurrencyError(f"instance {state.workflowId} already exists")
        if expected_version is not None and (current is None or current.version != expected_version):
            raise ConcurrencyError(f"instance {state.workflowId} changed since version {expected_version}")
        version = (current.version if current else 0) + 1
        for key in new_correlations(state, current.state if current is not None else None):
            self._keys.setdefault(key, {})[state.workflowId] = None
        self._rows[state.workflowId] = Stored(state, version)
        self._started.setdefault(state.workflowId, len(self._started))
        first = earliest_due(state.waits)
        moments = [first] if first is not None else []
        if state.deadlineAt and not state.is_terminal:
            moments.append(instant_epoch(state.deadlineAt))
        if moments:
            self._next_due[state.workflowId] = min(moments)
        else:
            self._next_due.pop(state.workflowId, None)
        self._claims.pop(("timer", state.workflowId), None)  # a new timer: nobody holds it yet
        for dispatch in dispatches:
            self._outbox[self._next_outbox] = dispatch
            if claim_for is not None:
                self._claims[("outbox", self._next_outbox)] = (claim_for, time.monotonic() + LEASE_SECONDS)
            self._next_outbox += 1
        if message_id is not None:
            self._inbox[message_id] = message_digest
        self.mark_sent(*sent)
        return version

    def due(self, now: datetime) -> list[str]:
        """Instances whose next timer (or deadline) is due (worked out when each was saved)."""
        epoch = now.timestamp()
        next_due = self._next_due
        return [wid for wid in self._rows if next_due.get(wid, epoch + 1) <= epoch]

    def claim_due(self, now: datetime, worker: str, limit: int = 100, lease: float = LEASE_SECONDS) -> list[str]:
        """Due instances no other worker holds, now held by `worker`."""
        epoch = now.timestamp()
        due = sorted((at, wid) for wid, at in self._next_due.items() if at <= epoch)
        return [wid for _, wid in self._claim("timer", [(wid, wid) for _, wid in due], worker, limit, lease)]

    def next_due(self) -> float | None:
        """The earliest timer (seconds since the epoch), or None."""
        return min(self._next_due.values(), default=None)

    # (The outbox is a dict filled in the order of its ids: its order is oldest first, and a
    # read stops at `limit` instead of sorting every command queued.)
    def outbox(self, limit: int = 100) -> list[tuple[int, Dispatch]]:
        """Commands not yet sent, oldest first."""
        return list(itertools.islice(self._outbox.items(), limit))

    def claim_outbox(self, worker: str, limit: int = 100, lease: float = LEASE_SECONDS) -> list[tuple[int, Dispatch]]:
        """Commands not yet sent that no other worker holds (its own too), now held by `worker`."""
        return self._claim("outbox", self._outbox.items(), worker, limit, lease, own=True)

    def held_outbox(self, worker: str, limit: int = 100) -> list[tuple[int, Dispatch]]:
        """Commands not yet sent that `worker` holds with `HELD_LEASE_LEFT` left, oldest first."""
        enough = time.monotonic() + HELD_LEASE_LEFT
        claims = self._claims
        held = ((i, d) for i, d in self._outbox.items() if (w := claims.get(("outbox", i))) and w[0] == worker and w[1] >= enough)
        return list(itertools.islice(held, limit))

    def _claim(
        self, kind: str, candidates: Iterable[tuple[_K, _V]], worker: str, limit: int, lease: float, own: bool = False
    ) -> list[tuple[_K, _V]]:
        now = time.monotonic()
        claimed: list[tuple[_K, _V]] = []
        for key, value in candidates:
            if len(claimed) >= limit:
                break
            held = self._claims.get((kind, key))
            if held is None or held[1] <= now or (own and held[0] == worker):
                self._claims[(kind, key)] = (worker, now + lease)
                claimed.append((key, value))
        return claimed

    def wait_for_work(self, timeout: float) -> None:
        """Sleep `timeout` seconds (nobody else writes to a store in this process's memory)."""
        time.sleep(timeout)

    def mark_sent(self, *outbox_ids: int) -> None:
        """Forget sent commands."""
        for outbox_id in outbox_ids:
            self._outbox.pop(outbox_id, None)
            self._claims.pop(("outbox", outbox_id), None)

    def release(self, worker: str, outbox_ids: Iterable[int] = (), workflow_ids: Iterable[str] = ()) -> None:
        """Give up `worker`'s claims on these commands and timers."""
        keys = [("outbox", i) for i in outbox_ids] + [("timer", w) for w in workflow_ids]
        for key in keys:
            if self._claims.get(key, ("",))[0] == worker:
                del self._claims[key]

    def release_all(self, worker: str) -> None:
        """Give up every claim held in `worker`'s name."""
        for key in [k for k, (who, _) in self._claims.items() if who == worker]:
            del self._claims[key]

    def seen(self, message_id: str) -> bool:
        """True when the message was applied before."""
        return message_id in self._inbox

    def digest_of(self, message_id: str) -> str | None:
        """The digest of the message applied under this id, or None."""
        return self._inbox.get(message_id)

    def instances(self, status: str | None = None) -> list[InstanceState]:
        """Every instance, or those with `status`."""
        return [r.state for r in self._rows.values() if status is None or r.state.status == status]

    def instance_page(
        self, limit: int = PAGE_LIMIT, after: PageCursor | None = None, status: str | None = None, process: str | None = None,
        *, text: str | None = None, newest_first: bool = False,
    ) -> list[InstanceSummary]:
        """Up to `limit` instances ordered by last change then id, after `after` (a sort of the dict:
        the in-memory store holds what fits in memory)."""
        lines = sorted(
            (
                InstanceSummary(
                    state.workflowId, state.type, state.status, row.version, state.nextAction, state.timeoutAt,
                    state.updatedAt, instant_epoch(state.updatedAt),
                )
                for row in self._rows.values()
                for state in (row.state,)
                if (status is None or state.status == status) and (process is None or state.type == process)
                and (text is None or text in (state.workflowId, state.correlationId))
            ),
            key=lambda line: (line.changed, line.workflow_id),
            reverse=newest_first,
        )
        if after is not None:
            lines = [line for line in lines if ((line.changed, line.workflow_id) < after if newest_first else (line.changed, line.workflow_id) > after)]
        return lines[:limit]

    def status_counts(self, process: str | None = None) -> dict[str, int]:
        """How many instances (of `process`) have each status."""
        counts: dict[str, int] = {}
        for row in self._rows.values():
            if process is None or row.state.type == process:
                counts[row.state.status] = counts.get(row.state.status, 0) + 1
        return dict(sorted(counts.items()))

    def pin(self, pinned: PinnedDefinition) -> None:
        """Keep the text of a definition."""
        self._pinned.setdefault(pinned.fingerprint, pinned)

    def pinned(self, fingerprint: str) -> PinnedDefinition | None:
        """The kept text of a definition, or None."""
        return self._pinned.get(fingerprint)

