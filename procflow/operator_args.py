"""The operator's commands as the `procflow` parser knows them (start, deliver, tick, instances,
inspect, retry, worker, participant, store check): their arguments only. What each does is in `operator_cli.py`
(`amqp_cli.py` for the broker's), imported when one of them runs, so that the other commands start without the interpreter, pydantic and
SQLite.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

STORE_ENV = "PROCFLOW_STORE"
DEFAULT_STORE = "procflow.sqlite"
AMQP_PREFIX_ENV = "PROCFLOW_AMQP_PREFIX"


def _operator(name: str) -> Callable[[argparse.Namespace], int]:
    """The handler `name` of operator_cli.py, imported when the command runs."""

    def run(args: argparse.Namespace) -> int:
        handler: Callable[[argparse.Namespace], int] = getattr(importlib.import_module("procflow.operator_cli"), name)
        return handler(args)

    run.__name__ = name
    return run


def _amqp(name: str) -> Callable[[argparse.Namespace], int]:
    """The handler `name` of amqp_cli.py, imported when the command runs."""

    def run(args: argparse.Namespace) -> int:
        handler: Callable[[argparse.Namespace], int] = getattr(importlib.import_module("procflow.amqp_cli"), name)
        return handler(args)

    run.__name__ = name
    return run


def amqp_prefix_option(p: argparse.ArgumentParser) -> None:
    """`--amqp-prefix`: the prefix of every exchange and queue name."""
    p.add_argument("--amqp-prefix", metavar="PREFIX", default=None,
                   help=f"the prefix of the exchange and queue names (default: ${AMQP_PREFIX_ENV}, else procflow)")


def _instant(text: str) -> datetime:
    from procflow.errors import InstantError
    from procflow.instants import instant_problem, parse_instant

    try:
        moment = parse_instant(text)
    except InstantError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 instant such as 2026-03-23T16:00:00Z: `{text}`") from None
    problem = instant_problem(moment)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return moment


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0:
        raise argparse.ArgumentTypeError(f"not a number of seconds: `{text}`")
    return value


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"not a count (0 or more): `{text}`")
    return int(text)


def _page_size(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        raise argparse.ArgumentTypeError(f"not a page size from 1 to {MAX_PAGE}: `{text}`")
    return int(text)


MAX_PAGE = 10_000
"""The largest page `procflow instances --limit` lists at once."""


def add_operator_commands(subparsers: Any) -> None:
    """Add start, deliver, tick, instances, inspect, retry, worker, participant and store to the `procflow` parser."""

    def store_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--store", metavar="PATH|URL",
            help=f"the store: a file path or sqlite:///path (SQLite), or postgresql://user@host:port/database "
                 f"(default: ${STORE_ENV}, else {DEFAULT_STORE})",
        )

    def now_option(p: argparse.ArgumentParser, what: str) -> None:
        p.add_argument("--now", type=_instant, metavar="ISO-8601", help=f"{what} (default: the system clock)")

    p = subparsers.add_parser("start", help="start an instance in the store (the same id again sends nothing new)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--input", required=True, metavar="JSON", help="the instance's input (JSON text, or @file.json)")
    p.add_argument("--workflow-id", required=True, metavar="ID")
    store_option(p)
    now_option(p, "the moment it starts")
    p.set_defaults(handler=_operator("cmd_start"))

    p = subparsers.add_parser("deliver", help="apply a reply or an event (JSON) to the instance it correlates with")
    p.add_argument("--message", required=True, metavar="JSON", help="the reply or event (JSON text, or @file.json)")
    store_option(p)
    now_option(p, "the moment it arrives")
    p.set_defaults(handler=_operator("cmd_deliver"))

    p = subparsers.add_parser("tick", help="fire the timers that are due (timeouts, retries, deadlines)")
    store_option(p)
    now_option(p, "the moment to fire timers at")
    p.set_defaults(handler=_operator("cmd_tick"))

    p = subparsers.add_parser("instances", help="list the instances in the store, a page at a time (by last change)")
    p.add_argument("--status", metavar="S", help="only those with this status (e.g. compensation_failed)")
    p.add_argument("--process", metavar="NAME", help="only instances of this process")
    p.add_argument("--limit", type=_page_size, default=50, metavar="N", help="how many to list (default 50)")
    p.add_argument("--after", metavar="CURSOR", help="start after this cursor (printed at the end of the previous page)")
    p.add_argument("--counts", action="store_true", help="how many instances have each status, instead of a list")
    p.add_argument("--json", action="store_true")
    store_option(p)
    p.set_defaults(handler=_operator("cmd_instances"))

    p = subparsers.add_parser("inspect", help="one instance: state record, commands and history")
    p.add_argument("workflow_id", metavar="ID")
    p.add_argument("--json", action="store_true")
    store_option(p)
    p.set_defaults(handler=_operator("cmd_inspect"))

    p = subparsers.add_parser("retry", help="resume a compensation_failed instance (its failed undo is sent again)")
    p.add_argument("workflow_id", metavar="ID")
    store_option(p)
    now_option(p, "the moment it resumes")
    p.set_defaults(handler=_operator("cmd_retry"))

    p = subparsers.add_parser(
        "worker", help="send the outbox and fire timers, in a loop",
        description="Send the outbox and fire timers, in a loop. SIGTERM stops it once the batch in hand is done "
                    "(20 commands or timers at most), with no claim held, exit 0; Ctrl-C stops it at once.",
    )
    p.add_argument("--once", action="store_true", help="one round, then stop")
    p.add_argument("--participants", choices=("demo", "print"),
                   help="demo: in-process participants that say yes to everything; print (the default without "
                        "--transport): print each command as JSON")
    p.add_argument("--transport", metavar="URL",
                   help="send commands to a broker and consume the replies there: amqp://user:password@host:5672/vhost")
    amqp_prefix_option(p)
    p.add_argument("--interval", type=_seconds, default=1.0, metavar="S", help="seconds to sleep when a round did nothing")
    p.add_argument("--worker-id", metavar="NAME",
                   help="this worker's name in the claims it takes (default: host, pid and a random tag); a worker "
                        "restarted under the same name takes back at once what it held; never run two under one name")
    p.add_argument("--recent", type=_count, metavar="N",
                   help="instances whose states it keeps in memory for their next transitions (default 64; "
                        "0: none); a state of a thousand waiting branches takes about 1 MB, and the states kept "
                        "hold 100,000 waits, tokens, frames and for-each items at most")
    store_option(p)
    now_option(p, "a fixed moment for every round (virtual time)")
    p.set_defaults(handler=_operator("cmd_worker"))

    p = subparsers.add_parser("store", help="look after the store itself (store check)")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = actions.add_parser(
        "check", help="read the whole store and check it (SQLite's integrity check and procflow's own); writes nothing"
    )
    q.add_argument("--json", action="store_true")
    store_option(q)
    q.set_defaults(handler=_operator("cmd_store_check"))

    p = subparsers.add_parser("participant", help="run participant services on a broker (the sample ones: demo)")
    p.add_argument("kind", choices=("demo",), help="demo: answer every command with its step's first success reply")
    p.add_argument("--transport", required=True, metavar="URL", help="the broker: amqp://user:password@host:5672/vhost")
    amqp_prefix_option(p)
    p.add_argument("--process", action="append", metavar="FILE",
                   help="the processes whose participants to run (default: every sample process)")
    p.add_argument("--refuse", action="append", metavar="COMMAND", default=[],
                   help="refuse this command (its step's first failure reply) for one order in --refuse-every, e.g. shipping.create")
    p.add_argument("--refuse-every", type=int, default=5, metavar="N", help="refuse one order in N (default 5), chosen by its correlation id")
    p.add_argument("--quiet", action="store_true", help="do not print a line per command")
    p.set_defaults(handler=_amqp("cmd_participant"))
