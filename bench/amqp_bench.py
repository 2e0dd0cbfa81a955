"""End-to-end orders per second over RabbitMQ and PostgreSQL, beside in-process participants.

Three ways to run the same orders of the sample order process (shipping refuses one in five,
so those compensate), each timed from the first order started to the last one ended:

- `amqp+postgresql`: two `procflow worker` processes on one PostgreSQL store, the demo
  participants as their own process on RabbitMQ (what `make demo-distributed` runs);
- `in-process+postgresql`: one orchestrator on a PostgreSQL store calling the same
  participants as Python functions (no broker);
- `in-process+memory`: the same on the in-memory store.

    python bench/amqp_bench.py [--orders 200]

Printed, never asserted (a shared machine's figures drift); one JSON line per figure at the end.
Needs PostgreSQL on 127.0.0.1:5432 (database `test`) and RabbitMQ on 127.0.0.1:5672.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import psycopg

import procflow
from procflow.interpreter.amqp_participant import DemoParticipants
from procflow.interpreter.memory_store import InMemoryStore, Store
from procflow.interpreter.messages import Dispatch
from procflow.interpreter.orchestrator import InProcessTransport, Orchestrator
from procflow.interpreter.stores import open_store

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from demo_distributed import ORDER, run_distributed  # noqa: E402

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
AMQP = "amqp://guest:guest@127.0.0.1:5672/"
SCHEMA = "procflow_bench"


class DemoInProcess(InProcessTransport):
    """The demo participants' answers, given in this process."""

    def __init__(self, demo: DemoParticipants) -> None:
        super().__init__({})
        self.demo = demo

    def send(self, dispatch: Dispatch) -> None:
        reply = self.demo.answer(dispatch.command, dispatch.dedupKey)
        if reply is not None:
            self.replies.append(reply)


def in_process(orders: int, store: Store) -> float:
    """Seconds to run `orders` orders through one orchestrator with in-process participants."""
    order = procflow.load(ORDER)
    orchestrator = Orchestrator(order, store=store, transport=DemoInProcess(DemoParticipants([order], ["shipping.create"], 5)))
    began = time.perf_counter()
    for i in range(orders):
        orchestrator.start(f"wf_bench_{i:04d}", {"orderId": f"ord_bench_{i:04d}", "amount": float(10 + i)})
    orchestrator.pump()
    seconds = time.perf_counter() - began
    assert all(s.is_terminal for s in store.instances()), "an order did not end"
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description="end-to-end orders/s over RabbitMQ and PostgreSQL")
    parser.add_argument("--orders", type=int, default=200)
    args = parser.parse_args()
    orders = args.orders

    with psycopg.connect(POSTGRES, autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')
        connection.execute(f'CREATE SCHEMA "{SCHEMA}"')
    try:
        with open_store(f"{POSTGRES}?options=-csearch_path%3D{SCHEMA}") as store:
            postgres_seconds = in_process(orders, store)
    finally:
        with psycopg.connect(POSTGRES, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')
    memory_seconds = in_process(orders, InMemoryStore())
    outcome = run_distributed(orders, 2, POSTGRES, AMQP, quiet=True)
    ended = sum(outcome.statuses.values())

    figures = {
        "amqp+postgresql (2 workers, participant process)": orders / outcome.seconds,
        "in-process+postgresql (1 orchestrator)": orders / postgres_seconds,
        "in-process+memory (1 orchestrator)": orders / memory_seconds,
    }
    print(f"order process, {orders} orders end to end (shipping refuses one in five: those compensate)")
    print(f"{'how':<50} {'orders/s':>10}")
    for name, value in figures.items():
        print(f"{name:<50} {value:>10,.1f}")
    print(f"(over RabbitMQ: {dict(outcome.statuses)}, {ended} of {orders} ended)")
    for name, value in figures.items():
        print(json.dumps({"figure": "orders_per_second", "how": name, "value": round(value, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
