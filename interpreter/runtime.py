"""The runtime around the pure engine: a store, a transport and a clock, wired by `Orchestrator`.

The engine decides; the runtime keeps what it decided (store), sends the commands it asked
for (outbox -> transport), routes replies to instances by `correlationId`, and fires timers
when they are due. The store and the transport are interfaces (`Store`, `Transport`): the
in-memory store and the in-process transport here, the SQLite store
(`procflow.interpreter.sqlite_store`) beside them.

Delivery is at least once, effect exactly once: a command is marked sent only after the
transport took it (a crash in between sends it again, under the same `dedupKey`), and a
reply whose `messageId` the store's inbox already holds changes nothing.

Many workers on one store: each takes unsent commands and due timers by a claim
(`claim_outbox`, `claim_due`) that holds them for a lease (`LEASE_SECONDS`) in its name, so
no two workers send one command; a worker that dies loses its claims when the lease runs
out. A transition on an instance another worker changed first is computed again.

Definition pinning: an instance runs the definition it started with (its `definition`
fingerprint). The orchestrator pins the text of every definition it starts in the store;
given `compile_pinned` (e.g. `procflow.load_text`) it rebuilds that text when the instance's
definition is not among those it was given, and without it, it refuses with a message that
names both fingerprints. It never runs an instance under a changed definition.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from procflow.dsl.model import ProcessDefinition
from procflow.errors import (
    ConcurrencyError,
    DamagedRecord,
    DuplicateMessage,
    InputError,
    MessageRefused,
    ProcflowError,
    StoreError,
)
from procflow.ids import check_id, id_problem
from procflow.interpreter import engine
from procflow.interpreter.instants import check_instant
from procflow.interpreter.messages import Command, Dispatch, Reply
from procflow.interpreter.state import InstanceState, instant_epoch
from procflow.strict_json import digest

Clock = Callable[[], datetime]
"""Returns the current moment (aware, UTC). The engine never calls it; the runtime does."""

CompileSource = Callable[[str, str, Callable[[str], bytes]], ProcessDefinition]
"""`compile_source(text, path, loader)`: how a pinned text becomes a definition again
(`procflow.load_text`; the interpreter never imports the parser itself)."""

MAX_CONFLICTS = 50
"""How often one transition is recomputed when other writers keep changing the instance."""

LEASE_SECONDS = 60.0
"""How long a worker holds the commands and timers it claimed: long enough to send a batch and
apply its in-process replies; when it runs out (the worker died), another worker takes them."""

CLAIM_BATCH = 20
"""How many commands or timers a worker claims at once: small, so that other workers find work."""


def system_clock() -> datetime:
    """The machine's clock, in UTC."""
    return datetime.now(UTC)


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


class Store(Protocol):
    """Where instances live. One call of `save` is one atomic transition."""

    def get(self, workflow_id: str) -> Stored | None:
        """The instance, or None."""

    def find(self, process: str | None, correlation_id: str) -> list[str]:
        """Workflow ids of the instances (of `process`, or of any) that correlate by `correlation_id`."""

    def save(
        self,
        state: InstanceState,
        expected_version: int | None,
        dispatches: list[Dispatch],
        message_id: str | None = None,
        message_digest: str | None = None,
    ) -> int:
        """Write a transition: state, outbox, inbox entry (the message id with the digest of
        the message); `expected_version` None means a new instance. Returns the new version;
        raises ConcurrencyError when the version moved and DuplicateMessage when the inbox
        already holds `message_id`."""

    def due(self, now: datetime) -> list[str]:
        """Workflow ids with a timer due at or before `now`."""

    def claim_due(self, now: datetime, worker: str, limit: int = 100, lease: float = LEASE_SECONDS) -> list[str]:
        """Like `due`, but only timers no other worker holds, now held by `worker` for `lease`
        seconds (or until the instance's next save sets its timer anew)."""

    def outbox(self, limit: int = 100) -> list[tuple[int, Dispatch]]:
        """Commands not yet marked sent, oldest first."""

    def claim_outbox(self, worker: str, limit: int = 100, lease: float = LEASE_SECONDS) -> list[tuple[int, Dispatch]]:
        """Commands not yet sent that no other worker holds, oldest first, now held by `worker`
        for `lease` seconds (or until marked sent)."""

    def mark_sent(self, outbox_id: int) -> None:
        """A command was handed to the transport (its claim ends)."""

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

    def find(self, process: str | None, correlation_id: str) -> list[str]:
        """Instances (of `process`) that correlate by `correlation_id` (also in called processes)."""
        return [
            wid
            for wid, row in self._rows.items()
            if (process is None or row.state.type == process)
            and correlation_id in row.state.correlation_ids()
        ]

    def save(
        self,
        state: InstanceState,
        expected_version: int | None,
        dispatches: list[Dispatch],
        message_id: str | None = None,
        message_digest: str | None = None,
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
        self._rows[state.workflowId] = Stored(state, version)
        moments = [w.due for w in state.waits if w.due is not None]
        if state.deadlineAt and not state.is_terminal:
            moments.append(instant_epoch(state.deadlineAt))
        if moments:
            self._next_due[state.workflowId] = min(moments)
        else:
            self._next_due.pop(state.workflowId, None)
        self._claims.pop(("timer", state.workflowId), None)  # a new timer: nobody holds it yet
        for dispatch in dispatches:
            self._outbox[self._next_outbox] = dispatch
            self._next_outbox += 1
        if message_id is not None:
            self._inbox[message_id] = message_digest
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

    def outbox(self, limit: int = 100) -> list[tuple[int, Dispatch]]:
        """Commands not yet sent, oldest first."""
        return sorted(self._outbox.items())[:limit]

    def claim_outbox(self, worker: str, limit: int = 100, lease: float = LEASE_SECONDS) -> list[tuple[int, Dispatch]]:
        """Commands not yet sent that no other worker holds, now held by `worker`."""
        return self._claim("outbox", sorted(self._outbox.items()), worker, limit, lease)

    def _claim(self, kind: str, candidates: list[tuple[_K, _V]], worker: str, limit: int, lease: float) -> list[tuple[_K, _V]]:
        now = time.monotonic()
        claimed: list[tuple[_K, _V]] = []
        for key, value in candidates:
            if len(claimed) >= limit:
                break
            held = self._claims.get((kind, key))
            if held is None or held[1] <= now:
                self._claims[(kind, key)] = (worker, now + lease)
                claimed.append((key, value))
        return claimed

    def mark_sent(self, outbox_id: int) -> None:
        """Forget a sent command."""
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

    def pin(self, pinned: PinnedDefinition) -> None:
        """Keep the text of a definition."""
        self._pinned.setdefault(pinned.fingerprint, pinned)

    def pinned(self, fingerprint: str) -> PinnedDefinition | None:
        """The kept text of a definition, or None."""
        return self._pinned.get(fingerprint)


class Transport(Protocol):
    """Hands commands to participants. Delivery is at least once; participants deduplicate by
    `correlationId` + `commandName` (the dispatch's `dedupKey` names the exact attempt)."""

    def send(self, dispatch: Dispatch) -> None:
        """Send one command."""


Participant = Callable[[Command], "Reply | Mapping[str, Any] | Iterable[Reply | Mapping[str, Any]] | None"]
"""An in-process participant: takes a command, returns its reply (or replies, or None for later)."""


class InProcessTransport:
    """Calls a Python function per participant; replies are queued for the orchestrator."""

    def __init__(self, participants: Mapping[str, Participant]) -> None:
        self.participants = dict(participants)
        self.replies: deque[Reply] = deque()
        self.sent: list[Dispatch] = []

    def send(self, dispatch: Dispatch) -> None:
        """Call the participant named before the dot of the command name."""
        self.sent.append(dispatch)
        command = dispatch.command
        handler = self.participants.get(command.commandName.split(".", 1)[0])
        if handler is None:
            return
        answer = handler(command)
        if answer is None:
            return
        answers = [answer] if isinstance(answer, Reply | Mapping) else list(answer)
        for item in answers:
            reply = item if isinstance(item, Reply) else _reply_from(command, item)
            self.replies.append(reply)


def _reply_from(command: Command, data: Mapping[str, Any]) -> Reply:
    body = dict(data)
    body.setdefault("correlationId", command.correlationId)
    body.setdefault("workflowId", command.workflowId)
    return engine.validate_reply(body)


Decide = Callable[[Stored], engine.Transition]


class Orchestrator:
    """The engine wired to a store, a transport and a clock: what a service embeds.

    >>> orchestrator = Orchestrator(definition, participants={"payment": handle_payment})
    >>> orchestrator.start("wf_401", {"orderId": "ord_441", "amount": 180.0})

    `compile_pinned` (e.g. `procflow.load_text`) lets it run instances whose definition it
    was not given, from the text the store pinned; `auto_dispatch=False` leaves the outbox
    to a `worker` (what the operator's command line does). `worker_id` names it in the
    claims it takes on commands and timers (default: host, process id and a random tag). A
    worker restarted under the same name takes back at once what its previous run held
    (before its first claim); two running workers must never share a name.
    """

    def __init__(
        self,
        definitions: ProcessDefinition | Iterable[ProcessDefinition] = (),
        *,
        store: Store | None = None,
        transport: Transport | None = None,
        participants: Mapping[str, Participant] | None = None,
        clock: Clock = system_clock,
        compile_pinned: CompileSource | None = None,
        auto_dispatch: bool = True,
        worker_id: str | None = None,
    ) -> None:
        defs = [definitions] if isinstance(definitions, ProcessDefinition) else list(definitions)
        self.definitions: dict[str, ProcessDefinition] = {d.name: d for d in defs}
        self._by_fingerprint: dict[str, ProcessDefinition] = {d.fingerprint: d for d in defs}
        self._pinned: set[str] = set()
        self.store: Store = store if store is not None else InMemoryStore()
        if transport is not None and participants is not None:
            raise ValueError("give a transport or participants, not both")
        self.transport: Transport = transport if transport is not None else InProcessTransport(participants or {})
        self.clock = clock
        self.compile_pinned = compile_pinned
        self.auto_dispatch = auto_dispatch
        self.damaged: dict[str, str] = {}
        """Instances a tick left alone because their stored record could not be read: id -> why."""
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._recovered = worker_id is None  # a new random name has held nothing before

    # ---- reading
    def state(self, workflow_id: str) -> InstanceState:
        """The current state of an instance (MessageRefused when there is none)."""
        problem = id_problem(workflow_id)
        if problem:  # no instance can have it: ids are checked when instances start
            raise MessageRefused(f"there is no such instance: the workflow id {problem}")
        row = self.store.get(workflow_id)
        if row is None:
            raise MessageRefused(f"no instance {workflow_id} in this store", workflow_id)
        return row.state

    def definition_of(self, state: InstanceState) -> ProcessDefinition:
        """The definition an instance runs: the one it started with, never a changed one."""
        ref = state.definition
        known = self._by_fingerprint.get(ref.fingerprint)
        if known is not None:
            return known
        pinned = self.store.pinned(ref.fingerprint) if self.compile_pinned is not None else None
        if pinned is not None and self.compile_pinned is not None:
            definition = compile_pinned_definition(pinned, self.compile_pinned)
            self._by_fingerprint[ref.fingerprint] = definition
            return definition
        started = f"instance {state.workflowId} started with `{ref.name}` version {ref.version} ({ref.fingerprint})"
        given = self.definitions.get(ref.name)
        if given is not None:
            raise ProcflowError(
                f"{started}, but the definition given is version {given.version} ({given.fingerprint}): the process "
                "changed since, and running the instance under a changed meaning is refused. Give the definition it "
                "started with" + ("." if self.compile_pinned else ", or pass compile_pinned=procflow.load_text to run the text the store pinned.")
            )
        raise ProcflowError(
            f"{started}, which this orchestrator does not know"
            + (" and the store keeps no text for." if self.compile_pinned else "; give it that definition.")
        )

    # ---- acting
    def start(self, workflow_id: str, input: dict[str, Any], process: str | None = None) -> InstanceState:
        """Start an instance (starting the same id again returns it and sends nothing)."""
        check_id(workflow_id, "the workflow id", InputError)
        existing = self.store.get(workflow_id)
        if existing is not None:
            return existing.state
        if process is None:
            if len(self.definitions) != 1:
                raise ProcflowError("name the process to start: this orchestrator knows " + (", ".join(sorted(self.definitions)) or "none"))
            process = next(iter(self.definitions))
        definition = self.definitions.get(process)
        if definition is None:
            raise ProcflowError(f"unknown process `{process}`; known: {', '.join(sorted(self.definitions)) or 'none'}")
        transition = engine.start(definition, workflow_id, input, self.clock())
        self._pin(definition)
        try:
            self.store.save(transition.state, None, transition.dispatches)
        except ConcurrencyError:
            raced = self.store.get(workflow_id)
            if raced is None:
                raise
            return raced.state
        if self.auto_dispatch:
            self.pump()
        return self.state(workflow_id)

    def _pin(self, definition: ProcessDefinition) -> None:
        if definition.fingerprint in self._pinned:
            return
        if self.store.pinned(definition.fingerprint) is None:
            pinned = pinned_definition(definition)
            if self.compile_pinned is not None:
                compile_pinned_definition(pinned, self.compile_pinned)  # the kept text alone must rebuild it
            self.store.pin(pinned)
        self._pinned.add(definition.fingerprint)

    def route(self, reply: Reply) -> str:
        """The workflow id a reply is for, or MessageRefused saying why there is none."""
        if reply.workflowId is not None:
            return reply.workflowId  # `_transact` refuses it when there is no such instance
        matches = self.store.find(None, reply.correlationId)
        if not matches:
            raise MessageRefused(f"no instance correlates by `{reply.correlationId}` (reply `{reply.type}`)")
        live = [w for w in matches if not self.state(w).is_terminal]
        return (live or matches)[0]

    def deliver(self, reply: Reply | Mapping[str, Any]) -> InstanceState:
        """Apply a reply or event to the instance it correlates with; then send what follows."""
        transition = self.receive(reply)
        return self.state(transition.state.workflowId)

    def receive(self, reply: Reply | Mapping[str, Any]) -> engine.Transition:
        """Like `deliver`, but returns the transition (`outcome`: applied, duplicate or late).

        The message is checked before it is routed (`engine.check_message`: ids, strict JSON,
        limits). A `messageId` seen before is a duplicate when the message is the same, and
        refused (MessageRefused) when it is another message under a reused id."""
        if isinstance(reply, Reply):
            engine.check_message(reply)
            message = reply
        elif isinstance(reply, Mapping):
            message = engine.validate_reply(dict(reply))
        else:
            raise MessageRefused(f"a message is a Reply or a mapping (JSON object), not {type(reply).__name__}")
        transition = self._apply(message)
        if self.auto_dispatch:
            self.pump()
        return transition

    def _apply(self, message: Reply) -> engine.Transition:
        workflow_id = self.route(message)
        message_id = message.messageId
        # What the message says (not how it is addressed): a sender that learned the workflow id
        # and sends the same reply again with it is sending the same message.
        message_digest = (
            digest({"type": message.type, "correlationId": message.correlationId, "data": message.data})
            if message_id is not None
            else None
        )

        def decide(row: Stored) -> engine.Transition:
            if message_id is not None and self.store.seen(message_id):
                self._refuse_reused(message, message_digest)
                return engine.Transition(row.state, [], "duplicate", f"message {message_id} was already handled")
            return engine.deliver(self.definition_of(row.state), row.state, message, self.clock())

        return self._transact(workflow_id, decide, message_id, message_digest, lambda: self._refuse_reused(message, message_digest))

    def _refuse_reused(self, message: Reply, message_digest: str | None) -> None:
        """MessageRefused when the inbox holds the message's id for another message (a store
        that kept no digest for it cannot tell: the message is taken as the same one)."""
        assert message.messageId is not None
        kept = self.store.digest_of(message.messageId)
        if kept is not None and kept != message_digest:
            raise MessageRefused(
                f"the messageId `{message.messageId}` was already used for another message; `{message.type}` under "
                "the same id is refused (a message id names one message: give a new message a new id)",
            )

    def _transact(
        self,
        workflow_id: str,
        decide: Decide,
        message_id: str | None = None,
        message_digest: str | None = None,
        on_duplicate: Callable[[], None] | None = None,
    ) -> engine.Transition:
        """Read, decide, write; when another writer got there first, read again and decide again."""
        for _ in range(MAX_CONFLICTS):
            row = self.store.get(workflow_id)
            if row is None:
                raise MessageRefused(f"there is no instance {workflow_id} in this store", workflow_id)
            transition = decide(row)
            if transition.outcome in ("duplicate", "idle"):
                return transition
            try:
                self.store.save(transition.state, row.version, transition.dispatches, message_id, message_digest)
            except DuplicateMessage as duplicate:
                if on_duplicate is not None:
                    on_duplicate()  # another writer applied the id first: the same message, or refused
                return engine.Transition(row.state, [], "duplicate", str(duplicate))
            except ConcurrencyError:
                continue
            return transition
        raise ConcurrencyError(f"instance {workflow_id} kept changing under {MAX_CONFLICTS} attempts; try again")

    def tick(self, now: datetime | None = None) -> list[InstanceState]:
        """Fire every timer that is due; returns the instances that changed. An instance whose
        stored record is damaged is left as it is (its id and why are kept in `damaged`): the
        others still move."""
        moment = check_instant(now or self.clock(), "the time of a tick")
        changed = []
        self._recover()
        for workflow_id in self._claimed_timers(moment):
            try:
                transition = self._transact(
                    workflow_id, lambda row: engine.advance(self.definition_of(row.state), row.state, moment)
                )
            except MessageRefused:
                continue  # removed meanwhile
            except DamagedRecord as damaged:
                self.damaged[workflow_id] = str(damaged)
                self.store.release(self.worker_id, workflow_ids=[workflow_id])
                continue
            except BaseException:
                # Let another tick (or worker) try it at once rather than after the lease.
                self.store.release(self.worker_id, workflow_ids=[workflow_id])
                raise
            if transition.outcome != "idle":
                changed.append(transition.state)
        if self.auto_dispatch:
            self.pump()
        return changed

    def _recover(self) -> None:
        """Before the first claim under a given name: take back what a previous run of it held."""
        if not self._recovered:
            self.store.release_all(self.worker_id)
            self._recovered = True

    def _claimed_timers(self, moment: datetime) -> Iterable[str]:
        """Due instances, claimed a batch at a time (each batch is worked before the next is taken)."""
        fired: set[str] = set()
        while True:
            batch = self.store.claim_due(moment, self.worker_id, CLAIM_BATCH)
            fresh = [w for w in batch if w not in fired]  # a timer is fired once a tick, whatever the store says
            fired.update(fresh)
            yield from fresh
            if len(batch) < CLAIM_BATCH or not fresh:
                return

    def resume(self, workflow_id: str) -> InstanceState:
        """An operator resumes a compensation_failed instance."""
        self.state(workflow_id)  # MessageRefused when there is no such instance
        self._transact(workflow_id, lambda row: engine.resume(self.definition_of(row.state), row.state, self.clock()))
        if self.auto_dispatch:
            self.pump()
        return self.state(workflow_id)

    def pump(self, limit: int = 100_000) -> int:
        """Send the outbox through the transport; apply in-process replies; repeat until quiet.

        Each command is marked sent only after the transport took it and after the replies it
        produced in this process were applied: those replies live only in memory, so a crash
        before they are stored must leave the command unsent (it is sent again, the participant
        answers again, the inbox drops what was already applied) rather than lose them.

        Commands are claimed in small batches in this orchestrator's name (`worker_id`): a
        command another worker holds is left to it."""
        handled = 0
        replies = self.transport.replies if isinstance(self.transport, InProcessTransport) else None
        self._recover()
        while handled < limit:
            batch = self.store.claim_outbox(self.worker_id, CLAIM_BATCH)
            if not batch and not replies:
                break
            for position, (outbox_id, dispatch) in enumerate(batch):
                try:
                    self.transport.send(dispatch)
                    handled += 1 + self._apply_replies(replies)
                except BaseException:
                    # Not sent (or its replies not kept): give the rest of the batch back at once.
                    self.store.release(self.worker_id, outbox_ids=[i for i, _ in batch[position:]])
                    raise
                self.store.mark_sent(outbox_id)
            handled += self._apply_replies(replies)
        return handled

    def _apply_replies(self, replies: deque[Reply] | None) -> int:
        applied = 0
        while replies:
            message = replies.popleft()
            applied += 1
            try:
                self._apply(message)
            except MessageRefused:
                continue
        return applied


@dataclass(slots=True)
class WorkerRound:
    """What one round of a worker did."""

    at: datetime
    handled: int
    fired: list[str]


def worker(
    orchestrator: Orchestrator,
    *,
    once: bool = False,
    interval: float = 1.0,
    rounds: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
    report: Callable[[WorkerRound], None] | None = None,
) -> int:
    """The loop that keeps instances moving: send the outbox through the transport (at least
    once), apply in-process replies, fire due timers; sleep `interval` seconds when a round
    did nothing. `once` runs one round. Time comes from the orchestrator's clock. Returns the
    number of rounds run."""
    done = 0
    while True:
        moment = orchestrator.clock()
        handled = orchestrator.pump()
        fired = [state.workflowId for state in orchestrator.tick(moment)]
        handled += orchestrator.pump()
        done += 1
        if report is not None and (handled or fired):
            report(WorkerRound(moment, handled, fired))
        if once or (rounds is not None and done >= rounds):
            return done
        if not handled and not fired:
            sleep(interval)
