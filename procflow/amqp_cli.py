"""The broker's commands: `procflow worker --transport amqp://...` and `procflow participant demo`.

pika is an extra (`procflow[amqp]`): it is imported here, when one of these runs, and a
machine without it is told how to install it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from importlib import resources
from typing import TYPE_CHECKING

from procflow.dsl import model as m
from procflow.dsl.compiler import compile_source
from procflow.dsl.validate import check_file
from procflow.errors import ProcflowError, SourceError
from procflow.interpreter.amqp_topology import DEFAULT_PREFIX, Topology
from procflow.interpreter.memory_store import compile_pinned_definition
from procflow.interpreter.orchestrator import Orchestrator, WorkerRound
from procflow.interpreter.stores import DurableStore
from procflow.operator_args import AMQP_PREFIX_ENV
from procflow.operator_cli import say_trouble, stop_on_sigterm, warn_damaged, worker_ended
from procflow.terminal import printable

if TYPE_CHECKING:
    from procflow.interpreter.amqp import BrokerLink
    from procflow.interpreter.amqp_participant import Received


def _link(args: argparse.Namespace, consume_replies: bool) -> BrokerLink:
    try:
        from procflow.interpreter.amqp import BrokerLink
    except ImportError:
        raise ProcflowError(
            "the AMQP transport needs pika, which is not installed: pip install 'procflow[amqp]' (make setup installs it)"
        ) from None
    # pika logs every failed connection attempt; our own line per attempt says it better.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    prefix = args.amqp_prefix or os.environ.get(AMQP_PREFIX_ENV) or DEFAULT_PREFIX
    return BrokerLink(args.transport, Topology(prefix), consume_replies=consume_replies)


def amqp_worker_command(args: argparse.Namespace, store: DurableStore, orchestrator: Orchestrator) -> int:
    """`procflow worker --transport amqp://...` on an open store."""
    from procflow.interpreter.amqp import AmqpTransport, ReplyCounts, amqp_worker

    link = _link(args, consume_replies=True)
    orchestrator.transport = AmqpTransport(link)
    orchestrator.auto_dispatch = False  # the loop sends, in its own order
    for pinned in store.pinned_definitions():  # consume the reply queues of the processes the store runs
        for process in compile_pinned_definition(pinned, compile_source).processes.values():
            link.reply_queues.add(process.reply_to)  # declared and consumed when the link connects
    stopped = stop_on_sigterm()
    counts = ReplyCounts()
    warned: set[str] = set()

    def report(done: WorkerRound) -> None:
        fired = f", timers fired for {', '.join(done.fired)}" if done.fired else ""
        print(printable(
            f"worker {done.at.isoformat()}: {done.handled} command(s) and replies handled "
            f"(replies: {counts.applied} applied, {counts.duplicates} duplicate, {counts.dead} dead-lettered){fired}"
        ), file=sys.stderr, flush=True)
        warn_damaged(orchestrator, warned)

    try:
        amqp_worker(
            orchestrator, link, once=args.once, interval=args.interval, report=report,
            trouble=say_trouble("worker"),
            stop=lambda: stopped[0],
            counts=counts,
        )
    finally:
        link.close()
    worker_ended(store, orchestrator, stopped[0], args.once)
    return 0


def _definitions(paths: list[str] | None) -> list[m.ProcessDefinition]:
    if not paths:
        with resources.as_file(resources.files("procflow.processes")) as folder:
            return _definitions(sorted(str(p) for p in folder.glob("*.proc")))
    found = []
    for path in paths:
        definition, diagnostics, text = check_file(path)
        errors = [d for d in diagnostics if d.is_error]
        if definition is None or errors:
            raise SourceError(errors or diagnostics, text)
        found.append(definition)
    return found


def cmd_participant(args: argparse.Namespace) -> int:
    """`procflow participant demo --transport amqp://...`: the sample participants as a service."""
    from procflow.interpreter.amqp_participant import DemoParticipants, serve

    demo = DemoParticipants(_definitions(args.process), args.refuse, args.refuse_every)
    link = _link(args, consume_replies=False)
    stopped = stop_on_sigterm()

    def echo(received: Received) -> None:
        if not args.quiet:
            command = received.command
            print(json.dumps({
                "dedupKey": received.dedup_key, "commandName": command.commandName,
                "correlationId": command.correlationId, "again": received.again,
            }), flush=True)

    print(printable(
        f"participant: serving {', '.join(demo.names)} on {link.location} (queues {link.topology.participant_queue('*')})"
    ), file=sys.stderr, flush=True)
    try:
        serve(link, demo.participants(), on_command=echo, trouble=say_trouble("participant"),
              stop=lambda: stopped[0])
    finally:
        link.close()
    return 0
