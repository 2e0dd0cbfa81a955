"""An operator's store at a million instances (issue 13, must-show 4): how long opening the
store, a `tick` with nothing due and the first page of `procflow instances` take when the
store holds 1,000,000 parked instances.

    python bench/million.py                          # SQLite, 1,000,000 instances
    python bench/million.py --postgres URL           # PostgreSQL too (a schema of its own is made and dropped)
    python bench/million.py --instances 100000       # a smaller store
    python bench/million.py --keep /var/tmp/m.sqlite # keep (or reuse) the SQLite file

The store is built fast but honestly: the order process is started for real (engine and
orchestrator) once per second of start time, its rows are encoded by the stores' own
encoders (`procflow.interpreter.stores`), and those rows are copied in bulk with each
instance's own ids (`executemany` on SQLite, `COPY` on PostgreSQL). Every instance waits for
inventory with its timeout 30 s after it started, so the timers table holds a million rows and
a tick at the moment the first one started finds none due. `procflow store check` passes on a
store built this way (try it with `--instances 1000 --keep`).

Each figure is the median of `--repeat` runs after one warm-up run, printed beside its floor
(the issue's: open < 50 ms, tick with nothing due < 10 ms, first page < 50 ms). Printed, not
asserted: a shared machine's figures drift.
"""

from __future__ import annotations

import argparse
import io
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import procflow
from procflow.cli import main as procflow_main
from procflow.interpreter.memory_store import InMemoryStore, pinned_definition
from procflow.interpreter.orchestrator import Orchestrator
from procflow.interpreter.state import parse_instant
from procflow.interpreter.stores import (
    encode_dispatch,
    encode_entries,
    encode_state,
    open_store,
    timer_of,
)

ROOT = Path(__file__).resolve().parent.parent
ORDER = ROOT / "processes" / "order_fulfillment.proc"
T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)
PER_SECOND = 1000
"""Instances started in each second of the store's history (one template per second)."""

FLOORS = {"open": 50.0, "tick, nothing due": 10.0, "first page of instances": 50.0}
"""The issue's floors, in milliseconds."""

WF, CID = "@@workflow@@", "@@correlation@@"


# ---------------------------------------------------------------- the rows


class Template:
    """The rows of one instance started at `moment`, with placeholders where its ids go."""

    def __init__(self, moment: datetime, definition: procflow.ProcessDefinition) -> None:
        store = InMemoryStore()
        orchestrator = Orchestrator(definition, store=store, clock=lambda: moment, auto_dispatch=False)
        orchestrator.start(WF, {"orderId": CID, "amount": 180.0})
        row = store.get(WF)
        assert row is not None
        state = row.state
        [(_, dispatch)] = store.outbox()
        timer = timer_of(state)
        assert timer is not None
        self.process, self.status, self.fingerprint = state.type, state.status, state.definition.fingerprint
        self.history_count = len(state.history)
        self.updated = parse_instant(state.updatedAt).timestamp()
        self.updated_at, self.next_action, self.timeout_at = state.updatedAt, state.nextAction, state.timeoutAt
        self.state = encode_state(state)
        self.entries = encode_entries(state.history)
        self.dispatch = encode_dispatch(dispatch)
        self.dedup_key = dispatch.dedupKey
        self.timer = timer

    def rows(self, workflow_id: str, correlation_id: str) -> dict[str, tuple[Any, ...] | list[tuple[Any, ...]]]:
        """This instance's rows, table by table, with its own ids (ids are plain ASCII, so the
        JSON text needs no escaping for them)."""

        def own(text: str) -> str:
            return text.replace(WF, workflow_id).replace(CID, correlation_id)

        return {
            "instances": (workflow_id, self.process, self.fingerprint, self.status, 1, self.history_count, self.updated,
                          own(self.state)),
            "history": [(workflow_id, seq, own(text)) for seq, text in self.entries],
            "outbox": (workflow_id, own(self.dedup_key), own(self.dispatch), self.updated_at, self.updated_at, 1),
            "timers": (workflow_id, *self.timer),
            "correlations": (self.process, correlation_id, workflow_id),
            "view": (self.next_action, self.timeout_at, self.updated_at),  # PostgreSQL's instance row has these too
        }


def instances(count: int, definition: procflow.ProcessDefinition) -> Iterator[dict[str, Any]]:
    template: Template | None = None
    for i in range(count):
        if i % PER_SECOND == 0:
            template = Template(T0 + timedelta(seconds=i // PER_SECOND), definition)
        assert template is not None
        yield template.rows(f"wf_{i:07d}", f"ord_{i:07d}")


def last_start(count: int) -> datetime:
    return T0 + timedelta(seconds=(count - 1) // PER_SECOND)


NOTHING_DUE = T0
"""When the benchmark ticks: the first instance started then, and every timeout is 30 s later."""


# ---------------------------------------------------------------- building the stores


def build_sqlite(path: Path, count: int, definition: procflow.ProcessDefinition) -> None:
    with open_store(path) as store:
        store.pin(pinned_definition(definition))
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA synchronous = OFF")  # a benchmark's scratch file: a crash means building it again
    connection.execute("BEGIN")
    batch: dict[str, list[tuple[Any, ...]]] = {}
    sql = {
        "instances": "INSERT INTO instances (workflow_id, process, fingerprint, status, version, history_count, updated, state) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        "history": "INSERT INTO history (workflow_id, seq, entry) VALUES (?, ?, ?)",
        "outbox": "INSERT INTO outbox (workflow_id, dedup_key, dispatch, created_at, sent_at, emitted) VALUES (?, ?, ?, ?, ?, ?)",
        "timers": "INSERT INTO timers (workflow_id, next_due, wait_due, deadline) VALUES (?, ?, ?, ?)",
        "correlations": "INSERT INTO correlations (process, correlation_id, workflow_id) VALUES (?, ?, ?)",
    }

    def flush() -> None:
        for table, rows in batch.items():
            connection.executemany(sql[table], rows)
        batch.clear()

    for number, rows in enumerate(instances(count, definition), 1):
        for table, row in rows.items():
            if table == "view":
                continue
            batch.setdefault(table, []).extend(row if isinstance(row, list) else [row])
        if number % 20_000 == 0:
            flush()
            progress(number, count)
    flush()
    connection.execute("COMMIT")
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    # What a long-lived store has: statistics for the planner (sampled, as `PRAGMA optimize` does).
    connection.execute("PRAGMA analysis_limit = 1000")
    connection.execute("ANALYZE")
    connection.close()


def build_postgres(url: str, count: int, definition: procflow.ProcessDefinition) -> None:
    import psycopg

    with open_store(url) as store:
        store.pin(pinned_definition(definition))
    columns = {
        "instances": "(workflow_id, process, fingerprint, status, version, history_count, updated, state, next_action, "
                     "timeout_at, updated_at)",
        "history": "(workflow_id, seq, entry)",
        "outbox": "(workflow_id, dedup_key, dispatch, created_at, sent_at, emitted)",
        "timers": "(workflow_id, next_due, wait_due, deadline)",
        "correlations": "(process, correlation_id, workflow_id)",
    }
    with psycopg.connect(url) as connection:
        connection.execute("SET synchronous_commit = off")
        for table, names in columns.items():
            with connection.cursor() as cursor, cursor.copy(f"COPY procflow_{table} {names} FROM STDIN".encode()) as copy:
                for number, rows in enumerate(instances(count, definition), 1):
                    row = rows[table]
                    if table == "instances":
                        row = (*row, *rows["view"])
                    for one in row if isinstance(row, list) else [row]:
                        copy.write_row(one)
                    if number % 200_000 == 0:
                        progress(number, count, table)
        connection.commit()
        connection.execute("ANALYZE")


def progress(done: int, count: int, what: str = "") -> None:
    print(f"  built {done:,} of {count:,} {what}".rstrip(), file=sys.stderr, flush=True)


# ---------------------------------------------------------------- measuring


def median_ms(action: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(median, worst) of `repeat` timed runs after one untimed warm-up run, in milliseconds."""
    action()
    runs = []
    for _ in range(repeat):
        began = time.perf_counter()
        action()
        runs.append((time.perf_counter() - began) * 1000)
    return statistics.median(runs), max(runs)


def measure(target: str, count: int, definition: procflow.ProcessDefinition, repeat: int) -> dict[str, tuple[float, float]]:
    def opening() -> None:
        open_store(target, create=False).close()

    figures = {"open": median_ms(opening, repeat)}
    now = NOTHING_DUE
    with open_store(target, create=False) as store:
        orchestrator = Orchestrator(definition, store=store, clock=lambda: now, auto_dispatch=False, worker_id="bench")
        first_due = store.next_due()
        assert first_due is not None and first_due > now.timestamp(), "a timer is due: not the store this benchmark builds"
        assert orchestrator.tick(now) == []
        figures["tick, nothing due"] = median_ms(lambda: orchestrator.tick(now), repeat)
        page = store.instance_page(50)
        assert len(page) == 50 and page[0].workflow_id == "wf_0000000", page[:1]
        figures["first page of instances"] = median_ms(lambda: store.instance_page(50), repeat)
        near_end = (last_start(count).timestamp(), f"wf_{count - 60:07d}")  # the last second's instances, less 60
        assert store.instance_page(1, near_end)[0].workflow_id == f"wf_{count - 59:07d}" or count % PER_SECOND < 60
        figures["a page near the end"] = median_ms(lambda: store.instance_page(50, near_end), repeat)
        figures["a page of one status"] = median_ms(lambda: store.instance_page(50, None, "waiting_for_inventory"), repeat)
        figures["counts by status"] = median_ms(store.status_counts, max(1, repeat // 5))

    def command() -> None:
        saved, sys.stdout = sys.stdout, io.StringIO()
        try:
            assert procflow_main(["instances", "--store", target]) == 0
        finally:
            sys.stdout = saved

    figures["`procflow instances`, in process (open, page, print)"] = median_ms(command, repeat)
    return figures


def report(kind: str, count: int, built: float, figures: dict[str, tuple[float, float]]) -> list[bool]:
    print(f"\n{kind}: {count:,} parked instances (built in {built:.0f} s)")
    held = []
    for what, (median, worst) in figures.items():
        floor = FLOORS.get(what)
        verdict = ""
        if floor is not None:
            ok = median < floor
            held.append(ok)
            verdict = f"  floor < {floor:.0f} ms: {'holds' if ok else 'MISSED'}"
        print(f"  {what:<54} {median:9.2f} ms  (worst {worst:.2f}){verdict}")
    return held


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=25)
    parser.add_argument("--keep", type=Path, help="build the SQLite store here (or reuse it when it exists) and keep it")
    parser.add_argument("--postgres", metavar="URL", help="also measure PostgreSQL, in a schema of its own at this URL")
    args = parser.parse_args(argv)
    definition = procflow.load(ORDER)
    held: list[bool] = []
    with tempfile.TemporaryDirectory(prefix="procflow-million-") as scratch:
        path = args.keep or Path(scratch) / "million.sqlite"
        began = time.perf_counter()
        if not path.exists():
            build_sqlite(path, args.instances, definition)
        built = time.perf_counter() - began
        size = path.stat().st_size / 2**20
        held += report(f"SQLite ({path}, {size:,.0f} MiB)", args.instances, built, measure(str(path), args.instances, definition, args.repeat))
    if args.postgres:
        held += bench_postgres(args.postgres, args.instances, definition, args.repeat)
    print(f"\nfloors held: {sum(held)} of {len(held)}")
    return 0


def bench_postgres(url: str, count: int, definition: procflow.ProcessDefinition, repeat: int) -> list[bool]:
    import psycopg

    schema = f"procflow_million_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}".encode())
    target = f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    try:
        began = time.perf_counter()
        build_postgres(target, count, definition)
        built = time.perf_counter() - began
        return report(f"PostgreSQL (schema {schema})", count, built, measure(target, count, definition, repeat))
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE".encode())


if __name__ == "__main__":
    sys.exit(main())
