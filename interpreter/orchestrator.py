"""The orchestrator around the pure engine: a store, a transport and a clock, wired by `Orchestrator`.

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

import os
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from procflow.dsl.model import ProcessDefinition
from procflow.errors import (
    ConcurrencyError,
    DamagedRecord,
    DuplicateMessage,
    InputError,
    MessageRefused,
    ProcflowError,
    StoreUnavailable,
)
from procflow.ids import check_id, id_problem
from procflow.instants import check_instant
from procflow.interpreter import engine
from procflow.interpreter.log import NotLoaded
from procflow.interpreter.memory_store import (
    CLAIM_BATCH,
    HELD_LEASE_LEFT,
    CompileSource,
    InMemoryStore,
    Store,
    Stored,
    compile_pinned_definition,
    pinned_definition,
)
from procflow.interpreter.messages import Command, Dispatch, Reply
from procflow.interpreter.state import InstanceState
from procflow.strict_json import digest

Clock = Callable[[], datetime]
"""Returns the current moment (aware, UTC). The engine never calls it; the runtime does."""

MAX_CONFLICTS = 50
"""How often one transition is recomputed when other writers keep changing the instance."""

RENEW_AFTER = HELD_LEASE_LEFT / 2
"""How long a worker goes on sending a batch of commands it read (held or claimed) before it
reads the rest again: each then has at least this much of its lease left, and the read renews
those running short. A single send slower than this can still outlive its lease."""

def system_clock() -> datetime:
    """The machine's clock, in UTC."""
    return datetime.now(UTC)


class Transport(Protocol):
    """Hands commands to participants. Delivery is at least once; participants deduplicate by
    `correlationId` + `commandName` (the dispatch's `dedupKey` names the exact attempt)."""

    def send(self, dispatch: Dispatch) -> None:
        """Send one command."""


Participant = Callable[[Command], "Reply | Mapping[str, Any] | Iterable[Reply | Mapping[str, Any]] | None"]
"""An in-process participant: takes a command, returns its reply (or replies, or None for later)."""


def first_replies(definitions: Iterable[ProcessDefinition]) -> tuple[dict[str, str], dict[str, str]]:
    """What a participant that always agrees (or always refuses) answers, by command name: the
    first success reply of the step that sends it (an undo's first confirmation), and the first
    failure reply of that step. The demo participants, in process and over AMQP, answer so."""
    successes: dict[str, str] = {}
    failures: dict[str, str] = {}
    for definition in definitions:
        for process in definition.processes.values():
            for node in process.steps:
                if node.command is not None and node.replies:
                    successes.setdefault(node.command.name, node.replies[0])
                if node.command is not None and node.failure_replies:
                    failures.setdefault(node.command.name, node.failure_replies[0])
                if node.compensation is not None and node.compensation.replies:
                    successes.setdefault(node.compensation.command.name, node.compensation.replies[0])
    return successes, failures


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
        if answer is None or command.replyTo is None:  # a notification (`emit`) is never answered
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
        """Instances a tick or a pump left alone because their stored record could not be read:
        id (a reply's correlation id when it named no workflow) -> why."""
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._recovered = worker_id is None  # a new random name has held nothing before
        self._pumping = False

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
        if self.store.load(workflow_id) is not None:  # (the row alone: asking costs the same at any age)
            return self.state(workflow_id)
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
            self.store.save(transition.state, None, transition.dispatches, claim_for=self._sender())
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
        live = [w for w in matches if not self._is_terminal(w)]
        return (live or matches)[0]

    def _sender(self) -> str | None:
        """This worker's name when it sends the commands it queues next (auto_dispatch, or a
        transition made while it pumps): they are born claimed by it, so it sends them with no
        claim of their own (one commit per transition); else None (another worker sends them)."""
        return self.worker_id if self.auto_dispatch or self._pumping else None

    def _is_terminal(self, workflow_id: str) -> bool:
        row = self.store.load(workflow_id)
        return row is None or row.state.is_terminal

    def deliver(self, reply: Reply | Mapping[str, Any]) -> InstanceState:
        """Apply a reply or event to the instance it correlates with; then send what follows."""
        transition = self.receive(reply)
        return self.state(transition.state.workflowId)

    def receive(self, reply: Reply | Mapping[str, Any]) -> engine.Transition:
        """Like `deliver`, but returns the transition (`outcome`: applied, duplicate or late).
        On a durable store the transition's state carries only the history entries it appended
        (a `Tail`; `state(id)` reads the whole history).

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

    def _apply(self, message: Reply, sent: tuple[int, ...] = ()) -> engine.Transition:
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

        return self._transact(
            workflow_id, decide, message_id, message_digest, lambda: self._refuse_reused(message, message_digest), sent
        )

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
        sent: tuple[int, ...] = (),
    ) -> engine.Transition:
        """Read, decide, write; when another writer got there first, read again and decide again.
        `sent`: outbox ids whose "sent" mark rides along with the write (when there is one:
        outcome `applied` or `late`)."""
        whole = False
        for _ in range(MAX_CONFLICTS):
            # Without its history, completions and milestones: a transition appends to them and
            # seldom reads them (when it does, it meets `NotLoaded` and is made again from them).
            row = self.store.load(workflow_id, whole=whole)
            if row is None:
                raise MessageRefused(f"there is no instance {workflow_id} in this store", workflow_id)
            try:
                transition = decide(row)
            except NotLoaded:
                if whole:
                    raise
                whole = True
                continue
            if transition.outcome in ("duplicate", "idle"):
                return transition
            try:
                self.store.save(
                    transition.state, row.version, transition.dispatches, message_id, message_digest, sent, self._sender()
                )
            except DuplicateMessage as duplicate:
                if on_duplicate is not None:
                    on_duplicate()  # another writer applied the id first: the same message, or refused
                return engine.Transition(row.state, [], "duplicate", str(duplicate))
            except ConcurrencyError:
                continue
            return transition
        raise ConcurrencyError(f"instance {workflow_id} kept changing under {MAX_CONFLICTS} attempts; try again")

    def tick(self, now: datetime | None = None, stop: Callable[[], bool] = lambda: False) -> list[InstanceState]:
        """Fire every timer that is due; returns the instances that changed. An instance whose
        stored record is damaged is left as it is (its id and why are kept in `damaged`): the
        others still move. `stop` is asked before each batch of timers is claimed: when it says
        so, the rest are left for later (a worker asked to stop)."""
        moment = check_instant(now or self.clock(), "the time of a tick")
        changed = []
        self._recover()
        for workflow_id in self._claimed_timers(moment, stop):
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
            self.pump(stop=stop)
        return changed

    def _recover(self) -> None:
        """Before the first claim under a given name: take back what a previous run of it held."""
        if not self._recovered:
            self.store.release_all(self.worker_id)
            self._recovered = True

    def _claimed_timers(self, moment: datetime, stop: Callable[[], bool]) -> Iterable[str]:
        """Due instances, claimed a batch at a time (each batch is worked before the next is taken)."""
        fired: set[str] = set()
        while not stop():
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

    def pump(self, limit: int = 100_000, stop: Callable[[], bool] = lambda: False) -> int:
        """Send the outbox through the transport; apply in-process replies; repeat until quiet
        (or until `stop` says so, asked before each batch: a worker asked to stop).

        Each command is marked sent only after the transport took it and after the replies it
        produced in this process were applied: those replies live only in memory, so a crash
        before they are stored must leave the command unsent (it is sent again, the participant
        answers again, the inbox drops what was already applied) rather than lose them. The
        mark rides along with the transition of the last of those replies (one commit for
        both); the marks of commands that brought no reply here are written together, one
        transaction per batch.

        Commands are claimed in small batches in this orchestrator's name (`worker_id`): a
        command another worker holds is left to it. The commands its own transitions queue
        while it pumps (or always, with `auto_dispatch`) are born claimed by it, in the
        transition's commit: it sends them without a claim transaction."""
        replies = self.transport.replies if isinstance(self.transport, InProcessTransport) else None
        self._recover()
        self._pumping = True
        try:
            return self._pump(replies, limit, stop)
        finally:
            self._pumping = False

    def _pump(self, replies: deque[Reply] | None, limit: int, stop: Callable[[], bool]) -> int:
        handled = 0
        while handled < limit:
            if stop():  # a worker asked to stop: apply the replies in hand, claim nothing more
                handled += self._apply_replies(replies)[0]
                break
            # What its own transitions queued first (already its own), then what nobody holds:
            # either way each is this worker's for `HELD_LEASE_LEFT` at least from here.
            read_at = time.monotonic()
            batch = self.store.held_outbox(self.worker_id, CLAIM_BATCH) or self.store.claim_outbox(self.worker_id, CLAIM_BATCH)
            if not batch and not replies:
                break
            unmarked: list[int] = []
            for position, (outbox_id, dispatch) in enumerate(batch):
                if position and time.monotonic() - read_at > RENEW_AFTER:
                    # A slow transport: read the rest again before their lease runs short (the
                    # store renews the ones with less than `HELD_LEASE_LEFT` left), so that no
                    # other worker takes and sends a command this one is about to send.
                    break
                try:
                    self.transport.send(dispatch)
                    applied, carried = self._apply_replies(replies, outbox_id)
                except BaseException:
                    # Not sent (or its replies not kept): mark what was, give the rest back at once.
                    self.store.mark_sent(*unmarked)
                    self.store.release(self.worker_id, outbox_ids=[i for i, _ in batch[position:]])
                    raise
                handled += 1 + applied
                if not carried:
                    unmarked.append(outbox_id)
            self.store.mark_sent(*unmarked)
            handled += self._apply_replies(replies)[0]
        return handled

    def _apply_replies(self, replies: deque[Reply] | None, outbox_id: int | None = None) -> tuple[int, bool]:
        """Apply the queued replies; the last carries the "sent" mark of `outbox_id`. Returns
        how many were applied and whether the mark was written with one."""
        applied = 0
        carried = False
        while replies:
            message = replies.popleft()
            applied += 1
            sent = (outbox_id,) if outbox_id is not None and not replies else ()
            try:
                transition = self._apply(message, sent)
            except MessageRefused:
                continue
            except DamagedRecord as damaged:
                # One instance whose record cannot be read must not stop the others: its reply is
                # left (as a tick leaves it), its command counts as sent, and `damaged` says why.
                self.damaged[message.workflowId or message.correlationId] = str(damaged)
                continue
            carried = carried or (bool(sent) and transition.outcome in ("applied", "late"))
        return applied, carried


@dataclass(slots=True)
class Backoff:
    """Waits between attempts to reach a store or a broker again: doubling from `first` up to
    `most` seconds."""

    first: float = 0.5
    most: float = 5.0
    current: float = field(default=0.0)

    def next(self) -> float:
        """The next wait (and double the one after)."""
        self.current = self.first if self.current == 0 else min(self.most, self.current * 2)
        return self.current

    def reset(self) -> None:
        """The connection works again: start from `first` next time."""
        self.current = 0.0


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
    sleep: Callable[[float], None] | None = None,
    report: Callable[[WorkerRound], None] | None = None,
    stop: Callable[[], bool] = lambda: False,
    trouble: Callable[[StoreUnavailable, float], None] | None = None,
) -> int:
    """The loop that keeps instances moving: send the outbox through the transport (at least
    once), apply in-process replies, fire due timers; when a round did nothing, wait up to
    `interval` seconds for the store to tell of new work (`Store.wait_for_work`: PostgreSQL
    wakes the worker as soon as another process queues a command no worker holds yet or sets
    a timer that is already due; SQLite sleeps the whole interval), or call `sleep` when
    given. `once` runs one round. `stop` is asked after every round and every wait, and by the
    round itself before it claims each batch of commands or timers: when it says so, the round
    ends with the batch in hand done (sent and marked, or fired) and the loop ends, nothing
    half done. When the store cannot be reached for now (`StoreUnavailable`: a lost
    connection, a server restarting, a file locked by another process), the round is left
    where it stood (what it wrote is whole; what it sent and did not mark is sent again, at
    least once as always), `trouble(error, delay)` is called and the loop waits (doubling, at
    most 5 s) and goes on; with `once`, the error is raised. Time comes from the orchestrator's
    clock. Returns the number of rounds run."""
    wait = sleep if sleep is not None else orchestrator.store.wait_for_work
    pause = sleep if sleep is not None else time.sleep
    backoff = Backoff()
    done = 0
    while True:
        done += 1
        last = once or (rounds is not None and done >= rounds)
        try:
            idle = _round(orchestrator, stop, report)
            if idle and not last and not stop():
                wait(interval)
            backoff.reset()
        except StoreUnavailable as error:
            if once:
                raise
            delay = backoff.next()
            if trouble is not None:
                trouble(error, delay)
            if not last and not stop():
                pause(delay)
        if last or stop():
            return done


def _round(orchestrator: Orchestrator, stop: Callable[[], bool], report: Callable[[WorkerRound], None] | None) -> bool:
    """One round of `worker`: send, fire the due timers, send what they queued; report it (also
    when it only left a damaged instance alone: `Orchestrator.damaged`). True when it found
    nothing to do."""
    moment = orchestrator.clock()
    handled = orchestrator.pump(stop=stop)
    fired = [state.workflowId for state in orchestrator.tick(moment, stop)]
    if not orchestrator.auto_dispatch:  # (with it, `tick` pumped already: an idle round asks the store less)
        handled += orchestrator.pump(stop=stop)
    if report is not None and (handled or fired or orchestrator.damaged):
        report(WorkerRound(moment, handled, fired))
    return not handled and not fired
