"""The runtime around the pure engine: a store, a transport and a clock, wired by `Orchestrator`.

The engine decides; the runtime keeps what it decided (store), sends the commands it asked
for (outbox -> transport), routes replies to instances by `correlationId`, and fires timers
when they are due. The store and the transport are interfaces (`Store`, `Transport`): the
in-memory store and the in-process transport here, the SQLite store beside them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from procflow.dsl.errors import MessageRefused, ProcflowError, StoreError
from procflow.dsl.model import ProcessDefinition
from procflow.interpreter import engine
from procflow.interpreter.messages import Command, Dispatch, Reply
from procflow.interpreter.state import InstanceState

Clock = Callable[[], datetime]
"""Returns the current moment (aware, UTC). The engine never calls it; the runtime does."""


def system_clock() -> datetime:
    """The machine's clock, in UTC."""
    return datetime.now(UTC)


class ConcurrencyError(StoreError):
    """Another writer changed the instance first; reload and try again."""


@dataclass(slots=True)
class Stored:
    """An instance as the store keeps it: its state and its version (for optimistic concurrency)."""

    state: InstanceState
    version: int


class Store(Protocol):
    """Where instances live. One call of `save` is one atomic transition."""

    def get(self, workflow_id: str) -> Stored | None:
        """The instance, or None."""

    def find(self, process: str, correlation_id: str) -> list[str]:
        """Workflow ids of the instances of `process` that correlate by `correlation_id`."""

    def save(self, state: InstanceState, expected_version: int | None, dispatches: list[Dispatch], message_id: str | None = None) -> int:
        """Write a transition: state, outbox, inbox entry; `expected_version` None means a new instance.
        Returns the new version; raises ConcurrencyError when the version moved."""

    def due(self, now: datetime) -> list[str]:
        """Workflow ids with a timer due at or before `now`."""

    def outbox(self, limit: int = 100) -> list[tuple[int, Dispatch]]:
        """Commands not yet marked sent, oldest first."""

    def mark_sent(self, outbox_id: int) -> None:
        """A command was handed to the transport."""

    def seen(self, message_id: str) -> bool:
        """True when a message with this id was already applied."""

    def instances(self, status: str | None = None) -> list[InstanceState]:
        """All instances (or those with one status)."""


class InMemoryStore:
    """A store in a Python dict: for tests, simulations and services that keep nothing."""

    def __init__(self) -> None:
        self._rows: dict[str, Stored] = {}
        self._outbox: dict[int, Dispatch] = {}
        self._next_outbox = 1
        self._inbox: set[str] = set()

    def get(self, workflow_id: str) -> Stored | None:
        """The instance, or None."""
        return self._rows.get(workflow_id)

    def find(self, process: str, correlation_id: str) -> list[str]:
        """Instances of `process` that correlate by `correlation_id` (also in called processes)."""
        return [
            wid
            for wid, row in self._rows.items()
            if row.state.type == process and any(f.correlationId == correlation_id for f in row.state.frames.values())
        ]

    def save(self, state: InstanceState, expected_version: int | None, dispatches: list[Dispatch], message_id: str | None = None) -> int:
        """Write one transition atomically (a dict update cannot be half done)."""
        current = self._rows.get(state.workflowId)
        if expected_version is None and current is not None:
            raise ConcurrencyError(f"instance {state.workflowId} already exists")
        if expected_version is not None and (current is None or current.version != expected_version):
            raise ConcurrencyError(f"instance {state.workflowId} changed since version {expected_version}")
        version = (current.version if current else 0) + 1
        self._rows[state.workflowId] = Stored(state, version)
        for dispatch in dispatches:
            self._outbox[self._next_outbox] = dispatch
            self._next_outbox += 1
        if message_id:
            self._inbox.add(message_id)
        return version

    def due(self, now: datetime) -> list[str]:
        """Instances whose next timer is due."""
        epoch = now.timestamp()
        found = []
        for wid, row in self._rows.items():
            dues = [w.due for w in row.state.waits if w.due is not None]
            deadline = row.state.deadlineAt
            if (dues and min(dues) <= epoch) or (
                deadline and not row.state.is_terminal and datetime.fromisoformat(deadline.replace("Z", "+00:00")).timestamp() <= epoch
            ):
                found.append(wid)
        return found

    def outbox(self, limit: int = 100) -> list[tuple[int, Dispatch]]:
        """Commands not yet sent, oldest first."""
        return sorted(self._outbox.items())[:limit]

    def mark_sent(self, outbox_id: int) -> None:
        """Forget a sent command."""
        self._outbox.pop(outbox_id, None)

    def seen(self, message_id: str) -> bool:
        """True when the message was applied before."""
        return message_id in self._inbox

    def instances(self, status: str | None = None) -> list[InstanceState]:
        """Every instance, or those with `status`."""
        return [r.state for r in self._rows.values() if status is None or r.state.status == status]


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


class Orchestrator:
    """The engine wired to a store, a transport and a clock: what a service embeds.

    >>> orchestrator = Orchestrator(definition, participants={"payment": handle_payment})
    >>> orchestrator.start("wf_401", {"orderId": "ord_441", "amount": 180.0})
    """

    def __init__(
        self,
        definitions: ProcessDefinition | Iterable[ProcessDefinition],
        *,
        store: Store | None = None,
        transport: Transport | None = None,
        participants: Mapping[str, Participant] | None = None,
        clock: Clock = system_clock,
    ) -> None:
        defs = [definitions] if isinstance(definitions, ProcessDefinition) else list(definitions)
        self.definitions: dict[str, ProcessDefinition] = {d.name: d for d in defs}
        self.store: Store = store if store is not None else InMemoryStore()
        if transport is not None and participants is not None:
            raise ValueError("give a transport or participants, not both")
        self.transport: Transport = transport if transport is not None else InProcessTransport(participants or {})
        self.clock = clock

    # ---- reading
    def state(self, workflow_id: str) -> InstanceState:
        """The current state of an instance (MessageRefused when there is none)."""
        row = self.store.get(workflow_id)
        if row is None:
            raise MessageRefused(f"no instance {workflow_id} in this store", workflow_id)
        return row.state

    def _definition(self, state: InstanceState) -> ProcessDefinition:
        definition = self.definitions.get(state.type)
        if definition is None:
            raise ProcflowError(f"instance {state.workflowId} runs `{state.type}`, which this orchestrator does not know")
        return definition

    # ---- acting
    def start(self, workflow_id: str, input: dict[str, Any], process: str | None = None) -> InstanceState:
        """Start an instance (starting the same id again returns it and sends nothing)."""
        existing = self.store.get(workflow_id)
        if existing is not None:
            return existing.state
        if process is None:
            if len(self.definitions) != 1:
                raise ProcflowError("name the process to start: this orchestrator knows " + ", ".join(sorted(self.definitions)))
            process = next(iter(self.definitions))
        definition = self.definitions.get(process)
        if definition is None:
            raise ProcflowError(f"unknown process `{process}`; known: {', '.join(sorted(self.definitions))}")
        transition = engine.start(definition, workflow_id, input, self.clock())
        self.store.save(transition.state, None, transition.dispatches)
        self.pump()
        return self.state(workflow_id)

    def route(self, reply: Reply) -> str:
        """The workflow id a reply is for, or MessageRefused saying why there is none."""
        if reply.workflowId is not None:
            if self.store.get(reply.workflowId) is None:
                raise MessageRefused(f"`{reply.type}` is for instance {reply.workflowId}, which does not exist")
            return reply.workflowId
        matches = [wid for name in sorted(self.definitions) for wid in self.store.find(name, reply.correlationId)]
        if not matches:
            raise MessageRefused(f"no instance correlates by `{reply.correlationId}` (reply `{reply.type}`)")
        live = [w for w in matches if not self.state(w).is_terminal]
        return (live or matches)[0]

    def deliver(self, reply: Reply | Mapping[str, Any]) -> InstanceState:
        """Apply a reply or event to the instance it correlates with; then send what follows."""
        message = reply if isinstance(reply, Reply) else engine.validate_reply(dict(reply))
        self._apply(message)
        self.pump()
        return self.state(self.route(message))

    def _apply(self, message: Reply) -> engine.Transition:
        workflow_id = self.route(message)
        if message.messageId is not None and self.store.seen(message.messageId):
            row = self.store.get(workflow_id)
            assert row is not None
            return engine.Transition(row.state, [], "duplicate", f"message {message.messageId} was already handled")
        row = self.store.get(workflow_id)
        assert row is not None
        transition = engine.deliver(self._definition(row.state), row.state, message, self.clock())
        if transition.outcome != "duplicate":
            self.store.save(transition.state, row.version, transition.dispatches, message.messageId)
        return transition

    def tick(self, now: datetime | None = None) -> list[InstanceState]:
        """Fire every timer that is due; returns the instances that changed."""
        moment = now or self.clock()
        changed = []
        for workflow_id in self.store.due(moment):
            row = self.store.get(workflow_id)
            assert row is not None
            transition = engine.advance(self._definition(row.state), row.state, moment)
            if transition.outcome == "idle":
                continue
            self.store.save(transition.state, row.version, transition.dispatches)
            changed.append(transition.state)
        self.pump()
        return changed

    def resume(self, workflow_id: str) -> InstanceState:
        """An operator resumes a compensation_failed instance."""
        row = self.store.get(workflow_id)
        if row is None:
            raise MessageRefused(f"no instance {workflow_id} in this store", workflow_id)
        transition = engine.resume(self._definition(row.state), row.state, self.clock())
        self.store.save(transition.state, row.version, transition.dispatches)
        self.pump()
        return self.state(workflow_id)

    def pump(self, limit: int = 100_000) -> int:
        """Send the outbox through the transport; apply in-process replies; repeat until quiet."""
        handled = 0
        while handled < limit:
            batch = self.store.outbox()
            replies = self.transport.replies if isinstance(self.transport, InProcessTransport) else None
            if not batch and not replies:
                break
            for outbox_id, dispatch in batch:
                self.transport.send(dispatch)
                self.store.mark_sent(outbox_id)
                handled += 1
            while replies:
                message = replies.popleft()
                handled += 1
                try:
                    self._apply(message)
                except MessageRefused:
                    continue
        return handled
