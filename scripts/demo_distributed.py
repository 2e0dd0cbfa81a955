"""`make demo-distributed`: the order process run as separate services.

Two `procflow worker` processes share one PostgreSQL store; the sample participants run as
their own process, `procflow participant demo`, and the three talk over RabbitMQ. Shipping
refuses one order in five, so those orders compensate (payment voided, stock released).
The script starts the services, waits until they listen, starts the orders, waits until
every order has ended, prints the outcome counts and the time, and stops the services.

    python scripts/demo_distributed.py [--orders 100] [--workers 2]
        [--store postgresql://postgres@127.0.0.1:5432/test] [--transport amqp://guest:guest@127.0.0.1:5672/]

The store is a schema of its own (`procflow_demo`, made anew each run) and every exchange and
queue is named under the prefix `procflow-demo` (deleted at the start of each run), so the
demo never touches other data. `bench/amqp_bench.py` runs the same thing to measure it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pika
import psycopg

import procflow
from procflow.interpreter.amqp_topology import Topology
from procflow.interpreter.memory_store import pinned_definition
from procflow.interpreter.orchestrator import Orchestrator
from procflow.interpreter.state import TERMINAL
from procflow.interpreter.stores import open_store

ROOT = Path(__file__).resolve().parent.parent
ORDER = ROOT / "processes" / "order_fulfillment.proc"
PROCFLOW = str(Path(sys.executable).parent / "procflow")
SCHEMA = "procflow_demo"
PREFIX = "procflow-demo"


@dataclass
class Outcome:
    """What a distributed run ended with."""

    statuses: Counter[str]
    seconds: float
    """From the first order started to the last one ended."""


def _fresh_schema(server: str, schema: str) -> str:
    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        connection.execute(f'CREATE SCHEMA "{schema}"')
    return f"{server}{'&' if '?' in server else '?'}options=-csearch_path%3D{schema}"


def _fresh_topology(amqp: str, topology: Topology, participants: list[str], reply_to: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp))
    channel = connection.channel()
    for queue in [topology.reply_queue(reply_to), topology.dead_letters, *map(topology.participant_queue, participants)]:
        channel.queue_delete(queue)
    connection.close()


def _listening(amqp: str, queues: dict[str, int], give_up: float) -> None:
    """Wait until each queue has its number of consumers (the services are up)."""
    while time.monotonic() < give_up:
        connection = pika.BlockingConnection(pika.URLParameters(amqp))
        try:
            channel = connection.channel()
            if all(channel.queue_declare(q, passive=True).method.consumer_count >= n for q, n in queues.items()):
                return
        except pika.exceptions.ChannelClosedByBroker:
            pass  # not declared yet
        finally:
            if connection.is_open:
                connection.close()
        time.sleep(0.3)
    raise SystemExit("the workers and the participant did not start listening within 120 s; see their messages above")


def run_distributed(orders: int, workers: int, server: str, amqp: str, refuse_every: int = 5, quiet: bool = False) -> Outcome:
    """Start the services, run `orders` orders through them, stop them; what they ended with."""
    order = procflow.load(ORDER)
    store_url = _fresh_schema(server, SCHEMA)
    topology = Topology(PREFIX)
    _fresh_topology(amqp, topology, sorted(order.participants), order.reply_to)
    with open_store(store_url) as store:
        store.pin(pinned_definition(order))  # the workers consume the reply queues of the processes the store runs
    env_prefix = ["--amqp-prefix", PREFIX]
    services = [subprocess.Popen(
        [PROCFLOW, "participant", "demo", "--transport", amqp, *env_prefix, "--process", str(ORDER),
         "--refuse", "shipping.create", "--refuse-every", str(refuse_every), "--quiet"],
    )]
    services += [
        subprocess.Popen(
            [PROCFLOW, "worker", "--store", store_url, "--transport", amqp, *env_prefix, "--interval", "0.2",
             "--worker-id", f"demo-worker-{n}"],
            stderr=subprocess.DEVNULL if quiet else None,
        )
        for n in range(1, workers + 1)
    ]
    try:
        queues = {topology.participant_queue(p): 1 for p in order.participants}
        queues[topology.reply_queue(order.reply_to)] = workers
        _listening(amqp, queues, time.monotonic() + 120)
        with open_store(store_url) as store:
            starter = Orchestrator(order, store=store, auto_dispatch=False)
            began = time.perf_counter()
            for i in range(orders):
                starter.start(f"wf_demo_{i:04d}", {"orderId": f"ord_demo_{i:04d}", "amount": float(10 + i)})
            give_up = time.monotonic() + 300
            while time.monotonic() < give_up:
                summaries = store.summaries()
                if all(s.status in TERMINAL for s in summaries):
                    break
                time.sleep(0.1)
            seconds = time.perf_counter() - began
            statuses = Counter(s.status for s in store.summaries())
    finally:
        for service in services:
            service.terminate()
        for service in services:
            try:
                service.wait(timeout=30)
            except subprocess.TimeoutExpired:
                service.kill()
    return Outcome(statuses, seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--store", default="postgresql://postgres@127.0.0.1:5432/test", help="a PostgreSQL database")
    parser.add_argument("--transport", default="amqp://guest:guest@127.0.0.1:5672/", help="the RabbitMQ broker")
    args = parser.parse_args()
    outcome = run_distributed(args.orders, args.workers, args.store, args.transport, quiet=True)
    print(f"{args.orders} orders through {args.workers} workers on PostgreSQL (schema {SCHEMA}) and the demo "
          f"participants on RabbitMQ (prefix {PREFIX}); shipping refuses one order in five")
    for status, count in sorted(outcome.statuses.items()):
        print(f"  {status:<14} {count}")
    print(f"in {outcome.seconds:.1f} s ({args.orders / outcome.seconds:.0f} orders/s)")
    unfinished = sum(n for s, n in outcome.statuses.items() if s not in TERMINAL)
    return 1 if unfinished else 0


if __name__ == "__main__":
    sys.exit(main())
