"""A worker process for the crash test (`tests/test_crash.py`), which kills it with SIGKILL at
random moments and starts it again; it must end where a run that was never killed ends.
Several of them may work on one store at once (each under its own `--name`).

It drives a plan of instances (process file, scenario, input) through participants that
answer as each instance's scenario says, on virtual time:

- the store is any durable store (`--store`, a path or a URL); the worker is `Orchestrator` +
  in-process transport;
- replies due at once are applied before their command is marked sent (runtime `pump`);
  replies due later (`after 2h`), explicit and default events wait in a mailbox (a second
  SQLite file, written before the command is marked sent, so nothing is lost in a crash);
- the virtual clock is kept in the mailbox, shared by every worker, and only moves when
  nothing is left to do at the current moment anywhere (no due mail, no due timer, no unsent
  command, no event to post): to the earliest timer of the store or the earliest mail, and
  only if no worker did any work since it looked (a count of work kept with the clock: a
  worker that the machine slowed down between looking and moving would otherwise jump the
  clock past work that began meanwhile). So every transition happens at the same virtual
  moment in every run, killed or not, with one worker or three. Nothing here reads the wall
  clock.
- what one instance does at one moment happens in the same order whoever does it: a mail is
  delivered only while no command is unsent, only the earliest due mail of an instance, and
  timers fire only while no mail is due and no command is unsent (what one worker alone does).

Every command handed to the transport is logged (`send RUN KEY`), and every command marked
sent after that (`mark RUN KEY`), so the test can prove a command was sent twice only when a
crash came between the send and its record.

    python tests/workers/crash_worker.py --store S --mailbox M --plan plan.json --log sent.log --run 3 [--name w1]
    python tests/workers/crash_worker.py ... --serve      (runs forked on request; see `serve`)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from procflow.dsl import model as m
from procflow.dsl.compiler import compile_source, load
from procflow.dsl.expressions import compile_expr
from procflow.errors import MessageRefused
from procflow.interpreter.memory_store import LEASE_SECONDS
from procflow.interpreter.messages import Dispatch, Reply
from procflow.interpreter.orchestrator import InProcessTransport, Orchestrator
from procflow.interpreter.sqlite_store import SqliteStore, Synchronous
from procflow.interpreter.state import TERMINAL, from_epoch, parse_instant
from procflow.interpreter.stores import DurableStore, open_store


@dataclass(frozen=True, slots=True)
class Reaction:
    """What a participant does with one command."""

    reply: str | None
    data: dict[str, Any]
    after: float
    twice: bool


class Log:
    """An append-only text file; each line is one `write` (a kill cannot split it)."""

    def __init__(self, path: str, run: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.run = run

    def line(self, kind: str, key: str) -> None:
        os.write(self.fd, f"{kind} {self.run} {key}\n".encode())


class Mailbox:
    """Replies and events due later, and the virtual clock, kept in their own SQLite file
    (shared by every worker)."""

    def __init__(self, path: str, start: datetime) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, timeout=60)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS mail (key TEXT PRIMARY KEY, workflow_id TEXT NOT NULL, at REAL NOT NULL, "
            "body TEXT NOT NULL, delivered INTEGER NOT NULL DEFAULT 0)"
        )
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS clock (id INTEGER PRIMARY KEY CHECK (id = 1), at REAL NOT NULL, work INTEGER NOT NULL DEFAULT 0)"
        )
        self.db.execute("INSERT INTO clock (id, at) VALUES (1, ?) ON CONFLICT (id) DO NOTHING", (start.timestamp(),))

    def post(self, key: str, at: float, reply: Reply) -> bool:
        cursor = self.db.execute(
            "INSERT INTO mail (key, workflow_id, at, body) VALUES (?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
            (key, reply.workflowId, at, reply.model_dump_json()),
        )
        return cursor.rowcount == 1

    def due(self, now: float) -> list[tuple[str, Reply]]:
        """The earliest due mail of each instance (the next one only once it is delivered)."""
        rows = self.db.execute("SELECT key, workflow_id, body FROM mail WHERE delivered = 0 AND at <= ? ORDER BY at, key", (now,)).fetchall()
        first: dict[str, tuple[str, Reply]] = {}
        for key, workflow_id, body in rows:
            first.setdefault(workflow_id, (key, Reply.model_validate_json(body)))
        return list(first.values())

    def delivered(self, key: str) -> None:
        self.db.execute("UPDATE mail SET delivered = 1 WHERE key = ?", (key,))

    def next_at(self) -> float | None:
        row = self.db.execute("SELECT min(at) FROM mail WHERE delivered = 0").fetchone()
        return None if row[0] is None else float(row[0])

    def now(self) -> float:
        return float(self.db.execute("SELECT at FROM clock WHERE id = 1").fetchone()[0])

    def work(self) -> int:
        """How many pieces of work the workers have done so far (`worked`)."""
        return int(self.db.execute("SELECT work FROM clock WHERE id = 1").fetchone()[0])

    def worked(self) -> None:
        """A worker did something (delivered mail, fired a timer, sent a command, posted an event):
        a worker that looked before it must look again before it moves the clock."""
        self.db.execute("UPDATE clock SET work = work + 1 WHERE id = 1")

    def move_clock(self, before: float, after: float, work: int) -> None:
        """From `before` to `after`, unless another worker moved it first, or did any work since
        this one read `work` (what it saw then may be gone: it looks again)."""
        self.db.execute("UPDATE clock SET at = ? WHERE id = 1 AND at = ? AND work = ?", (after, before, work))


class Clock:
    """The virtual clock the orchestrator reads: the mailbox's, read at every call."""

    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox

    def __call__(self) -> datetime:
        return from_epoch(self.mailbox.now())


def log_marks(store: DurableStore, log: Log) -> None:
    """Log each command marked sent, after the mark is committed: on its own, or riding along
    with the transition of the last reply it brought."""
    keys: dict[int, str] = {}
    claim, mark, save = store.claim_outbox, store.mark_sent, store.save

    def claim_outbox(worker: str, limit: int = 100, lease: float = LEASE_SECONDS) -> list[tuple[int, Dispatch]]:
        rows = claim(worker, limit, lease)
        keys.update({outbox_id: d.dedupKey for outbox_id, d in rows})
        return rows

    def mark_sent(*outbox_ids: int) -> None:
        mark(*outbox_ids)
        for outbox_id in outbox_ids:
            log.line("mark", keys.pop(outbox_id, "?"))

    def save_logged(*args: Any, **kwargs: Any) -> int:
        version = save(*args, **kwargs)
        sent = kwargs.get("sent", args[5] if len(args) > 5 else ())
        for outbox_id in sent:
            log.line("mark", keys.pop(outbox_id, "?"))
        return version

    store.claim_outbox = claim_outbox  # type: ignore[method-assign]
    store.mark_sent = mark_sent  # type: ignore[method-assign]
    store.save = save_logged  # type: ignore[method-assign]


class ScenarioTransport(InProcessTransport):
    """Participants that answer as each instance's scenario says (by default: the step's first reply).

    With `mail_all`, a reply due at once goes to the mailbox too instead of being applied in
    the process that sent the command: several workers then apply the replies to one
    instance's commands in the mailbox's order, not in the order their sends happened to finish."""

    def __init__(
        self, plan: dict[str, dict[str, Any]], definitions: dict[str, m.ProcessDefinition], mailbox: Mailbox, clock: Clock,
        log: Log, mail_all: bool = False,
    ) -> None:
        super().__init__({})
        self.mail_all = mail_all
        self.plan = plan
        self.definitions = definitions
        self.mailbox = mailbox
        self.clock = clock
        self.log = log
        self.sent = 0  # commands this process sent: a worker that sent one did some work (`Mailbox.worked`)
        self.rules: dict[str, dict[tuple[str, int | None], Reaction]] = {}
        for definition in definitions.values():
            for scenario in definition.scenarios:
                table: dict[tuple[str, int | None], Reaction] = {}
                for rule in scenario.syntax.rules:
                    data = compile_expr(rule.data)({}) if rule.data is not None else {}
                    table[(f"{rule.participant.text}.{rule.command.text}", rule.attempt)] = Reaction(
                        rule.reply.text if rule.reply else None, data, rule.after.seconds if rule.after else 0.0, rule.twice
                    )
                self.rules[f"{definition.name}/{scenario.name}"] = table

    def send(self, dispatch: Dispatch) -> None:
        self.sent += 1
        self.log.line("send", dispatch.dedupKey)
        command = dispatch.command
        instance = self.plan[command.workflowId]
        definition = self.definitions[instance["file"]]
        table = self.rules[f"{definition.name}/{instance['scenario']}"]
        reaction = table.get((command.commandName, dispatch.attempt)) or table.get((command.commandName, None))
        if reaction is None:
            default = default_reply(definition, dispatch.step)
            reaction = Reaction(default, {}, 0.0, False) if default else None
        if reaction is None or reaction.reply is None:
            return
        reply = Reply(
            type=reaction.reply, correlationId=command.correlationId, workflowId=command.workflowId,
            messageId=f"{dispatch.dedupKey}:{reaction.reply}", data=reaction.data,
        )
        copies = 2 if reaction.twice else 1
        if reaction.after == 0 and not self.mail_all:
            self.replies.extend([reply] * copies)
            return
        at = self.clock().timestamp() + reaction.after
        for copy in range(copies):
            self.mailbox.post(f"{reply.messageId}/{copy}", at, reply)


def default_reply(definition: m.ProcessDefinition, step: str) -> str | None:
    """The first reply of the step (or of its compensation) that sent a command."""
    undo = step.startswith("undo:")
    name = step.removeprefix("undo:")
    for process in _with_called(definition):
        for node in process.nodes.values():
            if isinstance(node, m.StepNode) and node.name == name:
                if undo:
                    return node.compensation.replies[0] if node.compensation and node.compensation.replies else None
                return node.replies[0] if node.replies else None
    return None


def _with_called(definition: m.ProcessDefinition) -> list[m.ProcessDefinition]:
    found = [definition]
    for child in definition.called.values():
        found.extend(_with_called(child))
    return found


def scenario_of(definitions: dict[str, m.ProcessDefinition], instance: dict[str, Any]) -> m.Scenario:
    definition = definitions[instance["file"]]
    return next(s for s in definition.scenarios if s.name == instance["scenario"])


_HAS_EVENTS: dict[str, bool] = {}


def has_events(definition: m.ProcessDefinition) -> bool:
    """True when the process (or one it calls) waits for an event that is not a reply."""
    known = _HAS_EVENTS.get(definition.fingerprint)
    if known is None:
        known = _HAS_EVENTS[definition.fingerprint] = _has_events(definition)
    return known


def _has_events(definition: m.ProcessDefinition) -> bool:
    return any(
        isinstance(node, m.RaceNode) or (isinstance(node, m.StepNode) and node.command is None and not node.is_timer)
        for process in _with_called(definition)
        for node in process.nodes.values()
    )


def post_events(store: DurableStore, mailbox: Mailbox, definitions: dict[str, m.ProcessDefinition], plan: dict[str, dict[str, Any]], now: float) -> bool:
    """Events nobody sends as a reply: the first event an event or race wait expects, at once,
    unless the scenario silences it or delivers it itself (what the simulator does)."""
    posted = False
    for summary in store.summaries():
        instance = plan[summary.workflow_id]
        if summary.status in TERMINAL or not has_events(definitions[instance["file"]]):
            continue
        row = store.load(summary.workflow_id)
        assert row is not None
        state = row.state
        syntax = scenario_of(definitions, instance).syntax
        silenced = {n.text for n in syntax.silenced}
        explicit = {d.event.text for d in syntax.deliveries}
        for wait in state.waits:
            if wait.kind not in ("event", "race") or not wait.expects:
                continue
            first = wait.expects[0]
            if first in silenced or first in explicit or (wait.kind == "race" and silenced & set(wait.expects)):
                continue
            message_id = f"{state.workflowId}:{wait.step}:{wait.since}:{first}"
            reply = Reply(type=first, correlationId=wait.correlationId, workflowId=state.workflowId, messageId=message_id)
            posted = mailbox.post(message_id, now, reply) or posted
    return posted


@dataclass(frozen=True, slots=True)
class Job:
    """What every run of the worker works on."""

    store: str
    mailbox: str
    log: str
    name: str
    mail_all: bool
    synchronous: Synchronous
    start: datetime
    plan: dict[str, dict[str, Any]]
    definitions: dict[str, m.ProcessDefinition]


def load_job(args: argparse.Namespace) -> Job:
    """Read the plan and compile the process files (once: runs forked from a server reuse them)."""
    document = json.loads(Path(args.plan).read_text(encoding="utf-8"))
    plan: dict[str, dict[str, Any]] = {i["workflowId"]: i for i in document["instances"]}
    definitions = {file: load(file) for file in sorted({i["file"] for i in plan.values()})}
    synchronous: Synchronous = "NORMAL" if args.synchronous == "NORMAL" else "FULL"
    return Job(args.store, args.mailbox, args.log, args.name, args.mail_all, synchronous, parse_instant(document["start"]), plan, definitions)


def open_job_store(job: Job) -> DurableStore:
    """The store: SQLite without the full check at open (twenty restarts would each read the file)."""
    if "://" not in job.store:
        return SqliteStore(job.store, job.synchronous, verify=False)
    return open_store(job.store)


def drive(job: Job, run: int) -> None:
    """One run of the worker: open the store, start what is not started, work until nothing is left."""
    plan, definitions, start = job.plan, job.definitions, job.start
    log = Log(job.log, f"{job.name}.{run}")
    store = open_job_store(job)
    log_marks(store, log)
    mailbox = Mailbox(job.mailbox, start)
    clock = Clock(mailbox)
    transport = ScenarioTransport(plan, definitions, mailbox, clock, log, job.mail_all)
    # Every run is the same worker restarted (the same name): it takes back what a killed run held.
    orchestrator = Orchestrator(
        list(definitions.values()), store=store, transport=transport, clock=clock, compile_pinned=compile_source,
        worker_id=f"crash-worker-{job.name}",
    )

    # Start every instance at the start moment; an instance started before returns as it is.
    if mailbox.now() == start.timestamp():
        for workflow_id, instance in plan.items():
            definition = definitions[instance["file"]]
            orchestrator.start(workflow_id, instance["input"], process=definition.name)
            for delivery in scenario_of(definitions, instance).syntax.deliveries:
                data = compile_expr(delivery.data)({}) if delivery.data is not None else {}
                message_id = f"{workflow_id}:deliver:{delivery.event.text}:{delivery.after.text}"
                state = orchestrator.state(workflow_id)
                reply = Reply(type=delivery.event.text, correlationId=state.correlationId, workflowId=workflow_id, messageId=message_id, data=data)
                mailbox.post(message_id, start.timestamp() + delivery.after.seconds, reply)

    stuck = 0
    while True:
        sent = transport.sent
        orchestrator.pump()
        if transport.sent != sent:
            mailbox.worked()
        if store.outbox(1):
            time.sleep(0.002)  # another worker is sending (or a killed one held it): wait for it
            continue
        now = mailbox.now()
        moment = from_epoch(now)
        mail = mailbox.due(now)
        for key, reply in mail:
            try:
                orchestrator.receive(reply)
            except MessageRefused:
                pass
            mailbox.delivered(key)
            mailbox.worked()
        if mail:
            continue
        sent = transport.sent
        fired = orchestrator.tick(moment)
        if fired or transport.sent != sent:  # (a tick sends what it can, whoever queued it)
            mailbox.worked()
        if fired:
            continue
        # Nothing left here at this moment? Mail, timers, commands and events are read one after
        # another, and work can change form between two reads (a command sent: its reply
        # mailed; the reply applied: a new command) and slip past every one; or begin after the
        # last while this worker is slowed down before it moves the clock. So the clock moves
        # only if no worker did any work since just before the first read (`move_clock`).
        work = mailbox.work()
        if mailbox.due(now) or store.due(moment) or store.outbox(1):
            time.sleep(0.002)
            continue
        if post_events(store, mailbox, definitions, plan, now):
            mailbox.worked()
            continue
        if mailbox.due(now):
            continue
        upcoming = [t for t in (store.next_due(), mailbox.next_at()) if t is not None]
        if not upcoming:
            break
        if min(upcoming) <= now:
            # Another worker made it due after this one looked (or nobody will act on it).
            stuck += 1
            if stuck > 2000:
                raise SystemExit(f"stuck at {moment}: a timer or mail is due but nothing happened")
            time.sleep(0.002)
            continue
        stuck = 0
        mailbox.move_clock(now, min(upcoming), work)
    store.close()
    mailbox.db.close()
    os.close(log.fd)


def serve(job: Job) -> int:
    """Start runs on request, each a new process forked from this one (so a restart costs a
    fork, not the imports and the parser build): `run N` forks and answers `started PID`;
    `kill` sends the run SIGKILL, `wait` lets it finish; both answer `exit CODE` (-9: killed).
    The run is reaped only then, so its pid cannot be reused before the kill."""
    child: int | None = None
    for line in sys.stdin:
        command = line.split()
        if command[:1] == ["run"] and child is None:
            sys.stdout.flush()
            sys.stderr.flush()
            child = os.fork()
            if child == 0:
                code = 0
                try:
                    drive(job, int(command[1]))
                except BaseException:
                    traceback.print_exc()
                    code = 1
                finally:
                    sys.stderr.flush()
                    os._exit(code)
            print(f"started {child}", flush=True)
        elif command[:1] in (["kill"], ["wait"]) and child is not None:
            if command[0] == "kill":
                os.kill(child, signal.SIGKILL)
            _, status = os.waitpid(child, 0)
            child = None
            print(f"exit {os.waitstatus_to_exitcode(status)}", flush=True)
        elif command[:1] == ["quit"]:
            break
        else:
            print(f"error: cannot `{line.strip()}` now", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", required=True)
    parser.add_argument("--mailbox", required=True)
    parser.add_argument("--plan", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--run", type=int, default=0, help="the run number written in the log (one run, then exit)")
    parser.add_argument("--serve", action="store_true", help="wait for `run N` / `kill` / `wait` / `quit` on stdin")
    parser.add_argument("--synchronous", default="FULL")
    parser.add_argument("--name", default="w0", help="the worker's name (its claims are taken in it)")
    parser.add_argument("--mail-all", action="store_true", help="replies due at once go to the mailbox too (many workers)")
    args = parser.parse_args()
    job = load_job(args)
    print("ready", flush=True)
    if args.serve:
        return serve(job)
    drive(job, args.run)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
