"""The operator's command line over a durable store.

::

    procflow start FILE --input JSON --workflow-id ID     start (the same id again: nothing new)
    procflow deliver --message JSON|@file                 a reply or an event
    procflow tick [--now ISO]                             fire the timers that are due
    procflow instances [--status S] [--process P] [--limit N] [--after CURSOR] [--counts] [--json]
                                                          what the store holds, a page at a time
    procflow store check [--json]                         read the whole store and check it
    procflow inspect ID [--json]                          one instance: state record and history
    procflow retry ID                                     resume a compensation_failed instance
    procflow worker [--once] [--participants demo]        send the outbox, fire timers, in a loop
    procflow worker --transport amqp://...                the same over RabbitMQ (`amqp_cli.py`)
    procflow participant demo --transport amqp://...      the sample participants as a service (`amqp_cli.py`)

Every command takes `--store PATH|URL` (else `$PROCFLOW_STORE`, else `procflow.sqlite` here):
a file path or `sqlite:///path` is the embedded SQLite store, `postgresql://user@host/db`
the PostgreSQL store (`procflow.interpreter.stores.open_store` chooses).
Commands that change instances write to the store and leave the commands they cause in its
outbox; `procflow worker` sends them. An instance always runs the definition it started
with: the store keeps that text, and `deliver`, `tick`, `retry` and `worker` run it from
there even when the file changed since.

Expected failures raise `ProcflowError` (printed as one line by `procflow.cli.main`, exit 1);
a malformed option value is a usage error (exit 2). What is printed for people has its
control characters escaped (`procflow.terminal`): an id or a name cannot forge a line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterable
from datetime import datetime
from types import FrameType
from typing import Any

from procflow.dsl import model as m
from procflow.dsl.compiler import compile_source
from procflow.dsl.validate import check_file
from procflow.errors import InputError, MessageRefused, ProcflowError, SourceError, StoreError
from procflow.files import read_json_argument
from procflow.interpreter import engine
from procflow.interpreter.memory_store import Stored, compile_pinned_definition, parse_cursor
from procflow.interpreter.messages import Dispatch, Reply
from procflow.interpreter.orchestrator import (
    Clock,
    InProcessTransport,
    Orchestrator,
    Transport,
    WorkerRound,
    first_replies,
    system_clock,
    worker,
)
from procflow.interpreter.state import TERMINAL, HistoryEntry, InstanceState
from procflow.interpreter.store_check import as_json, check_store, describe
from procflow.interpreter.stores import RECENT_STATES, DurableStore, open_store
from procflow.limits import INPUT_BYTES, MESSAGE_BYTES
from procflow.open_tasks import open_tasks
from procflow.operator_args import DEFAULT_STORE, STORE_ENV
from procflow.terminal import printable, printable_lines

# ---------------------------------------------------------------- shared pieces


def store_path(value: str | None) -> str:
    """Where the store is (a path or a URL): `--store`, else `$PROCFLOW_STORE`, else
    `procflow.sqlite` in the working folder."""
    return value or os.environ.get(STORE_ENV) or DEFAULT_STORE


def _say(text: str) -> None:
    """Print a line for people, its control characters escaped."""
    print(printable(text))


def _open(args: argparse.Namespace, create: bool = False) -> DurableStore:
    # The PostgreSQL pool logs each failed attempt to reconnect, several lines each; procflow's
    # own line (`say_trouble`, or the error it exits with) says it better.
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
    recent = getattr(args, "recent", None)  # (`procflow worker --recent N`)
    return open_store(store_path(args.store), create=create, recent=RECENT_STATES if recent is None else recent)


def _clock(args: argparse.Namespace) -> Clock:
    moment: datetime | None = getattr(args, "now", None)
    if moment is None:
        return system_clock
    return lambda: moment


def _orchestrator(
    store: DurableStore, clock: Clock, definitions: Iterable[m.ProcessDefinition] = (), transport: Transport | None = None,
    worker_id: str | None = None,
) -> Orchestrator:
    """Runs each instance on its pinned definition; leaves the outbox to `procflow worker`
    unless it is the worker (given a transport)."""
    return Orchestrator(
        list(definitions),
        store=store,
        transport=transport,
        clock=clock,
        compile_pinned=compile_source,
        auto_dispatch=transport is not None,
        worker_id=worker_id,
    )


def load_definition(path: str) -> m.ProcessDefinition:
    """A .proc file compiled, or SourceError with its diagnostics."""
    definition, diagnostics, text = check_file(path)
    errors = [d for d in diagnostics if d.is_error]
    if definition is None or errors:
        raise SourceError(errors or diagnostics, text)
    return definition


def _row(store: DurableStore, workflow_id: str) -> Stored:
    row = store.get(workflow_id)
    if row is None:
        raise ProcflowError(f"no instance {workflow_id} in the store {store.location}; `procflow instances` lists those it holds")
    return row


def _queued(store: DurableStore, workflow_id: str) -> list[str]:
    return [f"{e.dispatch.command.commandName}#{e.dispatch.attempt}" for e in store.outbox_of(workflow_id) if e.sent_at is None]


def _status_line(state: InstanceState) -> str:
    parts = [f"status {state.status}"]
    if state.nextAction:
        parts.append(f"next {state.nextAction}")
    if state.timeoutAt:
        parts.append(f"acts by itself at {state.timeoutAt}")
    return ", ".join(parts)


# ---------------------------------------------------------------- commands


def cmd_start(args: argparse.Namespace) -> int:
    """Start an instance in the store; starting an existing id changes nothing."""
    definition = load_definition(args.file)
    input_data = read_json_argument(args.input, "--input", INPUT_BYTES, InputError)
    if not isinstance(input_data, dict):
        raise InputError('--input must be a JSON object, e.g. \'{"orderId": "ord_441", "amount": 180.0}\'')
    with _open(args, create=True) as store:
        state, created = start_instance(store, definition, args.workflow_id, input_data, _clock(args))
        if not created:
            _say(f"instance {args.workflow_id} already exists ({_status_line(state)}); nothing new was sent")
            ref = state.definition
            if ref.fingerprint != definition.fingerprint:
                _say(
                    f"note: it runs `{ref.name}` version {ref.version} ({ref.fingerprint}), pinned in the store; "
                    f"{args.file} is now version {definition.version} ({definition.fingerprint})"
                )
            return 0
        _say(f"started {state.workflowId}: {state.type} version {definition.version} ({definition.fingerprint}), correlationId {state.correlationId}")
        _say(f"  {_status_line(state)}")
        queued = _queued(store, state.workflowId)
        if queued:
            _say(f"  queued: {', '.join(queued)} (`procflow worker` sends them)")
    return 0


def start_instance(
    store: DurableStore, definition: m.ProcessDefinition, workflow_id: str, input_data: dict[str, Any], clock: Clock = system_clock
) -> tuple[InstanceState, bool]:
    """Start an instance; (its state, True), or (the existing state, False) when the id is taken:
    starting an existing id changes nothing. Shared by the CLI's `start` and the console's API."""
    existing = store.get(workflow_id)
    if existing is not None:
        return existing.state, False
    return _orchestrator(store, clock, [definition]).start(workflow_id, input_data), True


def cmd_deliver(args: argparse.Namespace) -> int:
    """Apply a reply or an event to the instance it correlates with."""
    reply = engine.validate_reply(read_json_argument(args.message, "--message", MESSAGE_BYTES, MessageRefused))
    with _open(args) as store:
        was, transition = deliver_reply(store, reply, _clock(args))
        state = transition.state
        if transition.outcome == "duplicate":
            _say(f"duplicate: {transition.note}; {state.workflowId} is unchanged ({state.status})")
            return 0
        _say(f"{transition.outcome}: `{reply.type}` -> {state.workflowId}: {was} -> {state.status}")
        if transition.note:
            _say(f"  {transition.note}")
        queued = [f"{d.command.commandName}#{d.attempt}" for d in transition.dispatches]
        if queued:
            _say(f"  queued: {', '.join(queued)} (`procflow worker` sends them)")
    return 0


def deliver_reply(store: DurableStore, reply: Reply, clock: Clock = system_clock) -> tuple[str, engine.Transition]:
    """Apply a validated reply or event to the instance it correlates with: the status it had
    (`?` when unknown) and the transition. Shared by the CLI's `deliver` and the console's API."""
    orchestrator = _orchestrator(store, clock)
    before = store.get(orchestrator.route(reply))
    transition = orchestrator.receive(reply)
    return (before.state.status if before else "?"), transition


def warn_damaged(orchestrator: Orchestrator, warned: set[str]) -> None:
    """Say which instances were left alone for a damaged record, those not in `warned` yet (a
    worker meets one at every round its timer is due)."""
    for workflow_id, why in orchestrator.damaged.items():
        if workflow_id not in warned:
            print(printable(f"procflow: warning: {workflow_id} was left as it is: {why}"), file=sys.stderr, flush=True)
            warned.add(workflow_id)
    orchestrator.damaged.clear()


def cmd_tick(args: argparse.Namespace) -> int:
    """Fire the timers that are due now (or at --now)."""
    clock = _clock(args)
    with _open(args) as store:
        orchestrator = _orchestrator(store, clock)
        changed = orchestrator.tick(clock())
        warn_damaged(orchestrator, set())
        if not changed:
            print("no timer was due")
        for state in changed:
            note = state.history[-1].note if state.history else None
            _say(f"{state.workflowId}: {note or 'timer fired'} -> {state.status}")
    return 0


def cmd_instances(args: argparse.Namespace) -> int:
    """List the instances in the store, a page at a time, ordered by last change then id (or
    count them by status with `--counts`)."""
    after = parse_cursor(args.after) if args.after is not None else None
    with _open(args) as store:
        if args.counts:
            counts = store.status_counts(args.process)
        else:
            rows = store.instance_page(args.limit, after, args.status, args.process)
    if args.counts:
        if args.json:
            print(json.dumps(counts, indent=2))
        else:
            width = max((len(status) for status in counts), default=0)
            for status, count in counts.items():
                _say(f"{status.ljust(width)}  {count}")
            _say(f"{'in all'.ljust(width)}  {sum(counts.values())}")
        return 0
    more = len(rows) == args.limit  # a full page: there may be more after it
    if args.json:
        print(json.dumps([
            {"workflowId": r.workflow_id, "type": r.process, "status": r.status, "version": r.version,
             "nextAction": r.next_action, "timeoutAt": r.timeout_at, "updatedAt": r.updated_at, "cursor": r.cursor}
            for r in rows
        ], indent=2))
        return 0
    if not rows:
        which = [f"status {args.status}" if args.status else "", f"process {args.process}" if args.process else ""]
        _say("no instances" + (f" with {' and '.join(w for w in which if w)}" if any(which) else "")
             + (" after that cursor" if after else ""))
        return 0
    header = ("WORKFLOW", "PROCESS", "STATUS", "NEXT", "TIMEOUT AT", "UPDATED")
    table = [header] + [
        tuple(printable(cell) for cell in (r.workflow_id, r.process, r.status, r.next_action or "-", r.timeout_at or "-", r.updated_at))
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    if more:
        _say(f"next page: --after {rows[-1].cursor}")
    return 0


def cmd_store_check(args: argparse.Namespace) -> int:
    """Read the whole store and check it; exit 1 with what is wrong and what to do."""
    report = check_store(store_path(args.store))
    if args.json:
        print(as_json(report))
    else:
        print(printable_lines(describe(report)), end="")
    return 0 if report.sound else 1


def cmd_inspect(args: argparse.Namespace) -> int:
    """One instance: its state record, what it sent and its history."""
    with _open(args) as store:
        row = _row(store, args.workflow_id)
        outbox = store.outbox_of(args.workflow_id)
    state = row.state
    if args.json:
        print(json.dumps({
            "version": row.version,
            "state": state.to_json(),
            "outbox": [{"dispatch": e.dispatch.model_dump(mode="json"), "createdAt": e.created_at, "sentAt": e.sent_at, "emitted": e.emitted} for e in outbox],
        }, indent=2))
        return 0
    print(inspect_text(state, row.version, outbox), end="")
    return 0



def history_details(entry: HistoryEntry) -> list[str]:
    """What a history entry did besides a change of status, in words (the console's timeline
    and `procflow inspect` show the same)."""
    detail = []
    if entry.completedSteps:
        detail.append("completed " + ", ".join(entry.completedSteps))
    if entry.failure:
        detail.append(f"failure: {entry.failure}")
    if entry.sent:
        detail.append("sent " + ", ".join(entry.sent))
    if entry.note:
        detail.append(entry.note)
    return detail

def inspect_text(state: InstanceState, version: int, outbox: Iterable[Any] = ()) -> str:
    """An instance as an operator reads it: the lesson's record, then the details, then the
    history; each line with its control characters escaped (`procflow.terminal`)."""
    ref = state.definition
    lines = [
        f"workflowId      {state.workflowId}",
        f"type            {state.type}  (version {ref.version}, {ref.fingerprint})",
        f"status          {state.status}",
        f"completedSteps  {', '.join(state.completedSteps) or '-'}",
        f"nextAction      {state.nextAction or '-'}",
        f"timeoutAt       {state.timeoutAt or '-'}",
        f"correlationId   {state.correlationId}",
        f"startedAt       {state.startedAt}",
        f"updatedAt       {state.updatedAt}   (store version {version})",
    ]
    if state.deadlineAt:
        lines.append(f"deadlineAt      {state.deadlineAt}")
    if state.failure:
        lines.append(f"failure         {state.failure.reason} ({state.failure.cause}{', step ' + state.failure.step if state.failure.step else ''})")
    comp = state.compensation
    if comp is not None:
        lines.append(f"compensation    undone: {', '.join(u.commandName for u in comp.undone) or '-'}; "
                     f"pending: {', '.join(u.commandName for u in comp.pending) or '-'}"
                     + (f"; failed: {comp.failed.commandName}" if comp.failed else "")
                     + (f"; unconfirmed: {', '.join(u.commandName for u in comp.unconfirmed)}" if comp.unconfirmed else ""))
    sent = list(outbox)
    for wait in state.waits:
        expects = " or ".join(wait.expects) or "its timer"
        lines.append(f"waits           {wait.step}: {expects} (attempt {wait.attempt}, until {wait.timeoutAt or 'ever'})")
    for task in open_tasks(state, sent):  # a human task: who has it, until when
        lines.append(f"task            {task.text}")
    if state.status == "compensation_failed":
        lines.append(f"operator        `procflow retry {state.workflowId}` sends the failed undo again")
    if sent:
        lines.append("")
        lines.append("commands")
        for entry in sent:
            d = entry.dispatch
            mark = f"sent {entry.sent_at}" if entry.sent_at else "queued"
            again = f", asked {entry.emitted} times" if entry.emitted > 1 else ""
            lines.append(f"  {d.command.commandName:<22} {d.dedupKey}  [{mark}{again}]")
    lines.append("")
    lines.append("history")
    status = "running"  # what an instance is before its first entry
    for entry in state.history:
        what = entry.event
        if entry.message:
            what += f" {entry.message.get('type')}"
        detail = []
        if entry.status is not None:
            detail.append(f"{status} -> {entry.status}")
            status = entry.status
        detail.extend(history_details(entry))
        lines.append(f"  {entry.seq:>3}  {entry.at}  {what:<28} {'; '.join(detail)}".rstrip())
    return "\n".join(printable(line) for line in lines) + "\n"  # a line break inside a field is shown as `\n`


def retry_instance(store: DurableStore, workflow_id: str, clock: Clock = system_clock) -> tuple[InstanceState, InstanceState]:
    """Resume a compensation_failed instance (its failed undo is sent again): the state before
    and after. ProcflowError, with nothing changed, for an instance of any other status. The
    CLI's `retry` and the console's Retry both come here, so they refuse alike."""
    state = _row(store, workflow_id).state
    if state.status != "compensation_failed":
        if state.status in TERMINAL:
            why = f" ({state.failure.reason})" if state.failure else ""
            raise ProcflowError(
                f"instance {state.workflowId} is {state.status}{why}; it cannot be retried: only a "
                "compensation_failed instance has work an operator can resume. Start a new instance to try again."
            )
        raise ProcflowError(f"instance {state.workflowId} is still running ({state.status}); there is nothing to retry")
    return state, _orchestrator(store, clock).resume(state.workflowId)


def cmd_retry(args: argparse.Namespace) -> int:
    """Resume a compensation_failed instance: its failed undo is sent again."""
    with _open(args) as store:
        state, resumed = retry_instance(store, args.workflow_id, _clock(args))
        _say(f"resumed {resumed.workflowId}: {state.status} -> {resumed.status}")
        queued = _queued(store, resumed.workflowId)
        if queued:
            _say(f"  queued: {', '.join(queued)} (`procflow worker` sends them)")
    return 0


class PrintTransport:
    """Prints each command as one JSON line: the operator (or a script) answers with `procflow deliver`."""

    def send(self, dispatch: Dispatch) -> None:
        """Print the command with its dedup key."""
        print(json.dumps({"dedupKey": dispatch.dedupKey, **dispatch.command.model_dump(mode="json")}), flush=True)


class DemoTransport(InProcessTransport):
    """In-process participants that say yes to every command: the first success reply of the
    step (or of the undo) that sent it, with a message id taken from the dedup key."""

    def __init__(self, definitions: Iterable[m.ProcessDefinition]) -> None:
        super().__init__({})
        self.answers, _ = first_replies(definitions)

    def send(self, dispatch: Dispatch) -> None:
        """Answer yes at once (a command nobody knows gets no answer)."""
        self.sent.append(dispatch)
        command = dispatch.command
        answer = self.answers.get(command.commandName)
        if answer is not None:
            self.replies.append(Reply(
                type=answer, correlationId=command.correlationId, workflowId=command.workflowId,
                messageId=f"demo:{dispatch.dedupKey}",
            ))


def stop_on_sigterm() -> list[bool]:
    """A flag that SIGTERM sets (a service manager stopping the worker: systemd, Kubernetes): the
    loop ends once the batch in hand is done (`worker(stop=)`), and the command exits 0."""
    stopped = [False]

    def stop(signum: int, frame: FrameType | None) -> None:
        stopped[0] = True

    signal.signal(signal.SIGTERM, stop)
    return stopped


def say_trouble(who: str) -> Callable[[ProcflowError, float], None]:
    """What a worker or participant says on standard error when its store or broker cannot be
    reached for now, before it waits and tries again."""

    def say(error: ProcflowError, delay: float) -> None:
        told = str(error)
        said = f"{told} Trying again in {delay:g} s." if told.endswith(".") else f"{told}; trying again in {delay:g} s"
        print(printable(f"{who}: {said}"), file=sys.stderr, flush=True)

    return say


def cmd_worker(args: argparse.Namespace) -> int:
    """Send the outbox through a transport, apply in-process replies, fire due timers; loop."""
    clock = _clock(args)
    if args.transport is not None:
        if args.participants is not None:
            raise ProcflowError("give --transport or --participants, not both: with a broker, the participants are services of their own")
        from procflow.amqp_cli import amqp_worker_command  # pika is an extra, imported only here

        with _open(args) as store:
            return amqp_worker_command(args, store, _orchestrator(store, clock, worker_id=args.worker_id))
    with _open(args) as store:
        transport: Transport
        if args.participants == "demo":
            pinned = [compile_pinned_definition(p, compile_source) for p in store.pinned_definitions()]
            transport = DemoTransport(pinned)
        else:
            transport = PrintTransport()
        orchestrator = _orchestrator(store, clock, transport=transport, worker_id=args.worker_id)

        warned: set[str] = set()

        def report(done: WorkerRound) -> None:
            if done.handled or done.fired:
                fired = f", timers fired for {', '.join(done.fired)}" if done.fired else ""
                print(printable(f"worker {done.at.isoformat()}: {done.handled} command(s) and replies handled{fired}"), file=sys.stderr, flush=True)
            warn_damaged(orchestrator, warned)

        stopped = stop_on_sigterm()
        worker(orchestrator, once=args.once, interval=args.interval, report=report, stop=lambda: stopped[0], trouble=say_trouble("worker"))
        worker_ended(store, orchestrator, stopped[0], args.once)
    return 0


def worker_ended(store: DurableStore, orchestrator: Orchestrator, stopped: bool, once: bool) -> None:
    """What a worker (in-process or RabbitMQ) does and says when its loop ended: stopped by
    SIGTERM, it gives back what it still holds; after `--once`, it counts what is not finished."""
    if stopped:
        store.release_all(orchestrator.worker_id)  # what its own transitions queued, born claimed, and it did not send
        print("worker: stopped by SIGTERM once the batch in hand was done: nothing half done, no claim held", file=sys.stderr)
    elif once:
        waiting = sum(n for status, n in store.status_counts().items() if status not in TERMINAL)
        print(f"worker: one round done; {waiting} instance(s) not finished", file=sys.stderr)


# ---------------------------------------------------------------- render support


def instance_for_render(path: str, workflow_id: str, definition: m.ProcessDefinition) -> tuple[m.ProcessDefinition, dict[str, Any]]:
    """The state of an instance from a store, and the definition to draw it on: the given one,
    or (with a note on stderr) the pinned one when the file changed since the instance started."""
    with open_store(store_path(path), create=False) as store:
        state = _row(store, workflow_id).state
        ref = state.definition
        if ref.fingerprint == definition.fingerprint:
            return definition, state.to_json()
        pinned = store.pinned(ref.fingerprint)
        if pinned is None:
            raise StoreError(
                f"instance {workflow_id} runs `{ref.name}` version {ref.version} ({ref.fingerprint}), not the file given "
                f"(version {definition.version}, {definition.fingerprint}), and the store keeps no text for it"
            )
    print(
        printable(
            f"note: instance {workflow_id} runs `{ref.name}` version {ref.version} ({ref.fingerprint}); the file is "
            f"version {definition.version} ({definition.fingerprint}); drawing the version it runs"
        ),
        file=sys.stderr,
    )
    return compile_pinned_definition(pinned, compile_source), state.to_json()
