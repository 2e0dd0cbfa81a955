"""Issue 13's durable floors, in one run on both stores (SQLite and PostgreSQL), printed.

    python bench/durable_floors.py            # the floors (about a minute)
    python bench/durable_floors.py --quick    # smaller counts
    python bench/store_bench.py               # runs these after its own table

What is measured, each time with an `Orchestrator` whose in-process participants say yes:

- the cost of a transition in a 1,000-step instance (a linear process: send, await, a thousand
  times, run to its end) against a 10-step one: the mean over every transition of the
  instance's life, on SQLite (synchronous NORMAL, where the store's own work shows most, and
  FULL) and on PostgreSQL. Floor: at most 1.5 times.
- the cost of a transition inside a 1,000-branch parallel block against a 10-branch one (each
  branch one step; the start sends every command, each reply is a transition), in memory and
  on both stores. Floor: at most 2 times.
- the same block answered by two workers taking turns, on both stores: each transition
  follows the other's write, so the state a worker holds is a version behind the row's and
  is brought up to it from the log of what changed (`item_log.caught_up`). Floor: at most 2
  times, as for one worker (issue 13 asks for many workers and a flat cost).
- printed beside them, not an issue 13 floor: a for-each over 1,000 lines in parallel against
  10 (each line reserved, then a charge answered), in memory and on both stores (issue 16
  asked for 2x in memory; its durable figure is for the team to watch).
- SQLite with `synchronous=FULL`: transitions per second of the order process's happy path
  against a raw loop of one-row `INSERT` + `COMMIT` (WAL, FULL) on the same disk, in the same
  run. Floor: at least 70%.
- PostgreSQL: transitions per second with 1, 2 and 4 `procflow worker` processes on one store
  (1,000 order instances started, 200 with `--quick`, then the workers send their commands
  and apply the replies), with the cores the machine kept busy meanwhile (workers and server)
  and the ceiling that sets: n workers cannot pass cores / (cores one worker keeps busy).
  The aim: 4 workers at least twice 1.

PostgreSQL is `$PROCFLOW_BENCH_POSTGRES` (default: the `test` database on 127.0.0.1:5432), in a
schema of its own that is dropped afterwards. The figures are printed, not asserted: a shared
machine's drift is for a reader to judge.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

import procflow
from procflow.dsl.compiler import compile_source
from procflow.interpreter.memory_store import InMemoryStore, Store, compile_pinned_definition
from procflow.interpreter.messages import Command
from procflow.interpreter.orchestrator import Orchestrator, worker
from procflow.interpreter.postgres_store import PostgresStore
from procflow.interpreter.sqlite_store import SqliteStore
from procflow.interpreter.state import TERMINAL
from procflow.operator_cli import DemoTransport

sys.path.insert(0, str(Path(__file__).resolve().parent))
from foreach_bench import FOR_EACH  # noqa: E402  (the same process as the in-memory benchmark's)

ROOT = Path(__file__).resolve().parent.parent
ORDER = ROOT / "processes" / "order_fulfillment.proc"
NOW = datetime(2026, 3, 23, 16, 0, tzinfo=UTC)
POSTGRES = os.environ.get("PROCFLOW_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def linear_text(steps: int) -> str:
    """A process of `steps` sequential steps (send, then await its reply)."""
    lines = ["process linear {", "  participant worker", ""]
    lines += [f"  step step_{i} {{ send worker.do_{i} await done_{i} within 1d }}" for i in range(steps)]
    return "\n".join([*lines, "}"]) + "\n"


def parallel_text(branches: int) -> str:
    """A process of one parallel block of `branches` branches, each one step."""
    lines = ["process wide {", "  participant worker", "", "  parallel fan {"]
    lines += [f"    branch b_{i} {{ step step_{i} {{ send worker.do_{i} await done_{i} within 1d }} }}" for i in range(branches)]
    return "\n".join([*lines, "  }", "}"]) + "\n"


def done(command: Command) -> dict[str, Any]:
    """The worker of the generated processes: `worker.do_7` is answered `done_7`."""
    return {"type": "done_" + command.commandName.rsplit("_", 1)[1]}


@contextmanager
def postgres_schema() -> Iterator[Callable[[], str]]:
    """Makes stores in schemas of their own; drops them all at the end."""
    made: list[str] = []

    def make() -> str:
        schema = f"pf_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(POSTGRES, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        made.append(schema)
        return f"{POSTGRES}{'&' if '?' in POSTGRES else '?'}options=-csearch_path%3D{schema}"

    try:
        yield make
    finally:
        with psycopg.connect(POSTGRES, autocommit=True) as admin:
            for schema in made:
                admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


class Stores:
    """Opens a new, empty store of a kind: `in-memory`, `sqlite NORMAL`, `sqlite FULL`, `postgresql`."""

    def __init__(self, folder: Path, new_postgres: Callable[[], str]) -> None:
        self.folder = folder
        self.new_postgres = new_postgres
        self.count = 0

    def open(self, kind: str) -> Store:
        self.count += 1
        if kind == "in-memory":
            return InMemoryStore()
        if kind.startswith("sqlite"):
            return SqliteStore(self.folder / f"bench-{self.count}.sqlite", "FULL" if kind.endswith("FULL") else "NORMAL")
        return PostgresStore(self.new_postgres())


def close(store: Store) -> None:
    if isinstance(store, SqliteStore | PostgresStore):
        store.close()


def taking_turns(stores: Stores, kind: str, definition: procflow.ProcessDefinition, branches: int) -> float:
    """Milliseconds per reply of one instance of the parallel block answered by two store
    objects on one store taking turns (two workers): every transition follows the other's
    write, so each holds the state a version behind the row's (its own last write) and brings
    it up to the row from the log of what changed."""
    first = stores.open(kind)
    assert isinstance(first, SqliteStore | PostgresStore)
    second: Store = SqliteStore(first.path, "NORMAL") if isinstance(first, SqliteStore) else PostgresStore(first.url)
    try:
        one, two = (
            Orchestrator(definition, store=store, clock=lambda: NOW, auto_dispatch=False, worker_id=f"turns-{i}")
            for i, store in enumerate((first, second))
        )
        one.start("wf_turns", {})
        began = time.perf_counter()
        for i in range(branches):
            (one if i % 2 else two).receive({"type": f"done_{i}", "correlationId": "wf_turns"})
        return 1000 * (time.perf_counter() - began) / branches
    finally:
        close(first)
        close(second)


def per_transition(stores: Stores, kind: str, definition: procflow.ProcessDefinition, instances: int, transitions: int) -> float:
    """Milliseconds per transition of `instances` instances of `definition`, each run to its
    end by yes-saying participants (`transitions` each, its start included)."""
    store = stores.open(kind)
    try:
        orchestrator = Orchestrator(definition, store=store, participants={"worker": done}, clock=lambda: NOW)
        # One instance first, untimed: what is worked out once per definition (its plan, the
        # status of each step) is not a transition's cost, and a 1,000-step or 1,000-branch
        # definition has a hundred times more of it than a 10-step one.
        assert orchestrator.start("wf_warm", {}).status == "completed"
        began = time.perf_counter()
        for i in range(instances):
            state = orchestrator.start(f"wf_{i}", {})
            assert state.status == "completed", state.status
        return 1000 * (time.perf_counter() - began) / (instances * transitions)
    finally:
        close(store)




def yes(command: Command) -> dict[str, Any]:
    """The participants of the for-each process."""
    return {"type": {"inventory.reserve": "reserved", "payment.charge": "charged"}[command.commandName]}


def for_each_per_transition(stores: Stores, kind: str, definition: procflow.ProcessDefinition, lines: int, instances: int) -> float:
    """Milliseconds per transition of `instances` instances of the for-each over `lines` lines,
    each run to its end (its start, a reply per line, the charge's reply)."""
    store = stores.open(kind)
    try:
        orchestrator = Orchestrator(definition, store=store, participants={"inventory": yes, "payment": yes}, clock=lambda: NOW)
        assert orchestrator.start("wf_warm", {"orderId": "warm", "lines": [{"sku": "a"}]}).status == "completed"
        began = time.perf_counter()
        for i in range(instances):
            state = orchestrator.start(f"wf_{i}", {"orderId": f"o{i}", "lines": [{"sku": f"s{j}"} for j in range(lines)]})
            assert state.status == "completed", state.status
        return 1000 * (time.perf_counter() - began) / (instances * (lines + 2))
    finally:
        close(store)


def raw_inserts_per_second(folder: Path, rounds: int) -> float:
    """One-row INSERT + COMMIT, WAL, synchronous FULL: what the disk allows a transaction."""
    path = folder / "raw.sqlite"
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = FULL")
        connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        body = "x" * 1000  # about a state row
        began = time.perf_counter()
        for _ in range(rounds):
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("INSERT INTO t (body) VALUES (?)", (body,))
            connection.execute("COMMIT")
        return rounds / (time.perf_counter() - began)
    finally:
        connection.close()


def order_transitions_per_second(stores: Stores, kind: str, instances: int) -> float:
    """The order process's happy path (a start and three replies per instance)."""
    order = procflow.load(ORDER)
    store = stores.open(kind)
    try:
        orchestrator = Orchestrator(order, store=store, transport=DemoTransport([order]), clock=lambda: NOW)
        orchestrator.start("wf_warm", {"orderId": "warm", "amount": 1.0})
        began = time.perf_counter()
        for i in range(instances):
            orchestrator.start(f"wf_{i}", {"orderId": f"ord_{i}", "amount": 10.0})
        return 4 * instances / (time.perf_counter() - began)
    finally:
        close(store)


def busy_cores() -> Callable[[], float | None]:
    """Starts counting; the returned function gives how many of the machine's cores were busy
    on average since (all processes: the workers and the PostgreSQL server), or None where
    /proc/stat is not there to say."""

    def read() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as stat:
                ticks = [int(x) for x in stat.readline().split()[1:]]
        except OSError:
            return None
        return sum(ticks), ticks[3] + ticks[4]  # (all, idle and waiting for the disk)

    before = read()

    def since() -> float | None:
        after = read()
        if before is None or after is None or after[0] == before[0]:
            return None
        return (os.cpu_count() or 1) * (1 - (after[1] - before[1]) / (after[0] - before[0]))

    return since


def postgres_workers(url: str, workers: int, instances: int) -> tuple[float, float | None]:
    """Transitions per second of `workers` worker processes applying the replies of
    `instances` started order instances (three replies each), and how many cores were busy
    meanwhile (None where it cannot be told)."""
    order = procflow.load(ORDER)
    with PostgresStore(url) as store:
        starter = Orchestrator(order, store=store, clock=lambda: NOW, auto_dispatch=False)
        for i in range(instances):
            starter.start(f"wf_{i}", {"orderId": f"ord_{i}", "amount": 10.0})
    processes = [
        subprocess.Popen([sys.executable, __file__, "--worker", url], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(workers)
    ]
    for process in processes:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    cores = busy_cores()
    began = time.perf_counter()
    for process in processes:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    for process in processes:  # (the time stops at the last one's "done", not at its exit)
        assert process.stdout is not None and process.stdout.readline().strip() == "done"
    elapsed, busy = time.perf_counter() - began, cores()
    for process in processes:
        process.communicate(timeout=600)
        assert process.returncode == 0
    return 3 * instances / elapsed, busy


def worker_process(url: str) -> int:
    """One worker process of `postgres_workers`: work until every instance is finished, as
    `procflow worker` does (a round; when it found nothing, wait for the store to tell of
    new work), looking whether all are finished only when a round found nothing."""
    with PostgresStore(url) as store:
        compiled = [compile_pinned_definition(p, compile_source) for p in store.pinned_definitions()]
        orchestrator = Orchestrator(compiled, store=store, transport=DemoTransport(compiled), clock=lambda: NOW)
        print("ready", flush=True)
        sys.stdin.readline()
        while True:
            rounds: list[object] = []
            worker(orchestrator, once=True, report=rounds.append)
            if not rounds:
                if all(s.status in TERMINAL for s in store.summaries()):
                    print("done", flush=True)
                    return 0
                store.wait_for_work(0.05)  # others hold the rest: let them finish it


class Floors:
    """The floors: each measured figure, its limit, and whether it holds."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, name: str, measured: float, limit: float, at_least: bool, shown: str, says: str) -> None:
        holds = measured >= limit if at_least else measured <= limit
        self.rows.append({"floor": name, "measured": measured, "limit": limit, "at_least": at_least, "holds": holds, "shown": shown, "says": says})

    def print(self) -> None:
        print(f"{'durable floor (issue 13)':<66} {'measured':>16}   {'floor':<22} holds")
        for row in self.rows:
            measured = row["shown"].format(f"{row['measured']:.3g}")
            print(f"{row['floor']:<66} {measured:>16}   {row['says']:<22} {'yes' if row['holds'] else 'NO'}")
        for row in self.rows:
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items() if k != "shown"}))


def main(quick: bool = False) -> int:
    """Measure and print every floor."""
    floors = Floors()
    small, big = 10, 1000
    with tempfile.TemporaryDirectory() as scratch, postgres_schema() as new_postgres:
        stores = Stores(Path(scratch), new_postgres)
        print(f"ms per transition, {big:,}-step instance against {small}-step ones (mean over each instance's life):")
        short, long = procflow.load_text(linear_text(small)), procflow.load_text(linear_text(big))
        for kind in ("sqlite NORMAL", "sqlite FULL", "postgresql"):
            a = per_transition(stores, kind, short, 5 if quick else 20, small + 1)
            b = per_transition(stores, kind, long, 1, big + 1)
            print(f"  {kind:<15} {small:>5} steps {a:8.3f}   {big:>5} steps {b:8.3f}   ratio {b / a:5.2f}")
            floors.add(f"{kind}: a {big}-step instance's transition vs {small}-step", b / a, 1.5, False, "{}x", "at most 1.5x")
        print(f"\nms per transition inside a {big:,}-branch parallel block against a {small}-branch one:")
        narrow, wide = procflow.load_text(parallel_text(small)), procflow.load_text(parallel_text(big))
        for kind in ("in-memory", "sqlite NORMAL", "postgresql"):
            # The best of a few rounds: one 1,000-branch instance in memory takes some 50 ms, and
            # another process taking a core for part of it (PostgreSQL checkpointing after the
            # runs above) tripled the figure in one run of three.
            rounds = (5 if kind == "in-memory" else 3) if not quick else 2
            a = min(per_transition(stores, kind, narrow, 5 if quick else 20, small + 1) for _ in range(rounds))
            b = min(per_transition(stores, kind, wide, 1, big + 1) for _ in range(rounds))
            print(f"  {kind:<15} {small:>5} branches {a:8.3f}   {big:>5} branches {b:8.3f}   ratio {b / a:5.2f}")
            floors.add(f"{kind}: in a {big}-branch block vs {small}-branch", b / a, 2.0, False, "{}x", "at most 2x")
        print(f"\nms per reply of a {big:,}-branch block against a {small}-branch one, two workers taking turns:")
        for kind in ("sqlite NORMAL", "postgresql"):
            rounds = 3 if not quick else 2
            a = min(taking_turns(stores, kind, narrow, small) for _ in range(rounds))
            b = min(taking_turns(stores, kind, wide, big) for _ in range(rounds))
            print(f"  {kind:<15} {small:>5} branches {a:8.3f}   {big:>5} branches {b:8.3f}   ratio {b / a:5.2f}")
            floors.add(f"{kind}: two workers taking turns, {big}-branch block vs {small}", b / a, 2.0, False, "{}x", "at most 2x")
        print(f"\nms per transition of a for-each over {big:,} lines against {small} (printed, not an issue 13 floor):")
        for_each = procflow.load_text(FOR_EACH)
        for kind in ("in-memory", "sqlite NORMAL", "postgresql"):
            rounds = 1 if quick else 3
            a = min(for_each_per_transition(stores, kind, for_each, small, 5 if quick else 20) for _ in range(rounds))
            b = min(for_each_per_transition(stores, kind, for_each, big, 1) for _ in range(rounds))
            print(f"  {kind:<15} {small:>5} lines {a:8.3f}   {big:>5} lines {b:8.3f}   ratio {b / a:5.2f}")
        print("\nSQLite synchronous=FULL against a raw one-row INSERT + COMMIT loop on the same disk:")
        raw = raw_inserts_per_second(Path(scratch), 300 if quick else 1000)
        full = order_transitions_per_second(stores, "sqlite FULL", 50 if quick else 200)
        print(f"  raw INSERT+COMMIT {raw:8.0f}/s   order process transitions {full:8.0f}/s   {100 * full / raw:.0f}%")
        print("  (where the time goes: fsync, CPU, the store's SQL alone: python bench/sqlite_full_split.py)")
        floors.add("sqlite FULL transitions/s vs raw INSERT+COMMIT/s", 100 * full / raw, 70, True, "{}%", "at least 70%")
        print("\nPostgreSQL, transitions per second with 1, 2 and 4 worker processes on one store:")
        rates, busy = {}, {}
        for count in (1, 2, 4):
            rates[count], busy[count] = postgres_workers(new_postgres(), count, 200 if quick else 1000)
            cost = "" if busy[count] is None else f"   {busy[count]:.2f} cores busy, {1000 * busy[count] / rates[count]:.2f} ms of CPU a transition"
            print(f"  {count} worker(s) {rates[count]:8.0f}/s   {rates[count] / rates[1]:4.2f}x one{cost}")
        if busy[1]:
            # One worker keeps its own process and its server's busy in turn; n workers cannot go
            # past the machine's cores, so their rate is at most cores / (cores one keeps busy).
            print(
                f"  this machine's ceiling: {os.cpu_count()} cores, one worker with its server keeps {busy[1]:.2f} busy, "
                f"so no number of workers can pass {(os.cpu_count() or 1) / busy[1]:.2f}x one"
            )
        floors.add("postgresql: 4 workers' transitions/s vs 1 worker's (aim)", rates[4] / rates[1], 2.0, True, "{}x", "at least 2x")
    print()
    floors.print()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    parser.add_argument("--worker", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.exit(worker_process(args.worker) if args.worker else main(args.quick))
