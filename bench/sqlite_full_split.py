"""Where a SQLite FULL transition's time goes, beside the raw INSERT + COMMIT loop it is held to.

    python bench/sqlite_full_split.py             # 5 rounds of 50 order instances
    python bench/sqlite_full_split.py --rounds 9 --instances 100

Issue 13's floor (`durable_floors.py`): the order process's transitions per second on a
`SqliteStore(path, "FULL")` at least 70% of a raw one-row `INSERT` + `COMMIT` loop (WAL,
synchronous FULL) on the same disk. Each round measures, one after the other on new files:

- raw           the raw loop of the floor (`durable_floors.raw_inserts_per_second`);
- FULL          the floor's own figure (`durable_floors.order_transitions_per_second`);
- OFF           the same run with `synchronous=OFF`: no fsync, so what the CPU alone allows;
- SQL alone     every statement the FULL run sent (reads too), replayed on a new store with
                synchronous FULL and nothing else: no engine, no JSON, no orchestrator. What
                the store's writes allow a transition when Python costs nothing;
- in memory     the same run on the in-memory store (the engine and the orchestrator alone).

then prints each figure per round, the median, and the median of each against raw; and the
WAL pages a transition writes (wal_autocheckpoint off), by table or index. The disk of a
shared machine swings (raw from 300/s to 11,000/s within minutes here): compare the figures
of one round, and run it when the machine is quiet.
"""

from __future__ import annotations

import argparse
import collections
import os
import sqlite3
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import procflow
from procflow.interpreter.memory_store import InMemoryStore, Store
from procflow.interpreter.orchestrator import Orchestrator
from procflow.interpreter.sqlite_store import SqliteStore
from procflow.operator_cli import DemoTransport

sys.path.insert(0, str(Path(__file__).resolve().parent))
from durable_floors import NOW, ORDER, raw_inserts_per_second  # noqa: E402

Statement = tuple[bool, str, Any]
"""(many, sql, arguments) as the store sent it."""


class Recording:
    """Stands in for a store's connection and keeps every statement sent through it."""

    def __init__(self, connection: sqlite3.Connection, into: list[Statement]) -> None:
        self.connection = connection
        self.into = into

    def __getattr__(self, name: str) -> Any:
        return getattr(self.connection, name)

    def execute(self, sql: str, args: Any = ()) -> sqlite3.Cursor:
        self.into.append((False, sql, args))
        return self.connection.execute(sql, args)

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        rows = list(rows)
        self.into.append((True, sql, rows))
        return self.connection.executemany(sql, rows)


def sqlite_store(path: Path, synchronous: str) -> SqliteStore:
    """A new store file; `synchronous` may also be OFF (set on the store's connection)."""
    store = SqliteStore(path, "FULL")
    store._connection.execute(f"PRAGMA synchronous = {synchronous}")  # type: ignore[union-attr]
    return store


def order_run(store: Store, instances: int, record: list[Statement] | None = None) -> float:
    """Transitions per second of the order process's happy path, as `durable_floors` runs it."""
    order = procflow.load(ORDER)
    orchestrator = Orchestrator(order, store=store, transport=DemoTransport([order]), clock=lambda: NOW)
    orchestrator.start("wf_warm", {"orderId": "warm", "amount": 1.0})
    if record is not None and isinstance(store, SqliteStore):
        store._connection = Recording(store._connection, record)  # type: ignore[arg-type,assignment]
    began = time.perf_counter()
    for i in range(instances):
        orchestrator.start(f"wf_{i}", {"orderId": f"ord_{i}", "amount": 10.0})
    return 4 * instances / (time.perf_counter() - began)


def replay(store: SqliteStore, statements: list[Statement], transitions: int) -> float:
    """Transitions per second of `statements` sent again, bare, to a store made like the recorded one."""
    connection = store._connection
    assert connection is not None
    began = time.perf_counter()
    for many, sql, args in statements:
        if many:
            connection.executemany(sql, args)
        else:
            connection.execute(sql, args).fetchall()
    return transitions / (time.perf_counter() - began)


def warmed(path: Path, synchronous: str) -> SqliteStore:
    """A store that holds what `order_run` puts in before it records (the pinned definition, `wf_warm`)."""
    store = sqlite_store(path, synchronous)
    order = procflow.load(ORDER)
    Orchestrator(order, store=store, transport=DemoTransport([order]), clock=lambda: NOW).start(
        "wf_warm", {"orderId": "warm", "amount": 1.0}
    )
    return store


def wal_pages(folder: Path, instances: int) -> tuple[float, collections.Counter[str]]:
    """WAL pages per transition of the order process, and how many of them each table or index wrote."""
    path = folder / "pages.sqlite"
    store = warmed(path, "FULL")
    connection = store._connection
    assert connection is not None
    connection.execute("PRAGMA wal_autocheckpoint = 0")
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    order = procflow.load(ORDER)
    orchestrator = Orchestrator(order, store=store, transport=DemoTransport([order]), clock=lambda: NOW)
    for i in range(instances):
        orchestrator.start(f"wf_{i}", {"orderId": f"ord_{i}", "amount": 10.0})
    page_size = int(connection.execute("PRAGMA page_size").fetchone()[0])
    names = dict((int(page), str(name)) for name, page in connection.execute("SELECT name, pageno FROM dbstat"))
    data = Path(f"{path}-wal").read_bytes()
    written: collections.Counter[str] = collections.Counter()
    offset = 32  # the WAL header; then frames of a 24-byte header and a page
    while offset + 24 <= len(data):
        page = struct.unpack(">I", data[offset : offset + 4])[0]
        written[names.get(page, "(freed)")] += 1
        offset += 24 + page_size
    store.close()
    transitions = 4 * instances
    return sum(written.values()) / transitions, written


def main(rounds: int, instances: int) -> int:
    figures: dict[str, list[float]] = collections.defaultdict(list)
    transitions = 4 * instances
    with tempfile.TemporaryDirectory(prefix="sqlite-full-split-") as scratch:
        folder = Path(scratch)
        print(f"transitions/s of the order process ({instances} instances a run) beside raw INSERT+COMMIT/s")
        print(f"{'round':>5} {'raw':>8} {'FULL':>8} {'OFF':>8} {'SQL alone':>10} {'in memory':>10}   load")
        for number in range(rounds):
            here = Path(tempfile.mkdtemp(dir=folder))
            figures["raw"].append(raw_inserts_per_second(here, 300))
            statements: list[Statement] = []
            with sqlite_store(here / "full.sqlite", "FULL") as store:
                figures["FULL"].append(order_run(store, instances, statements))
            with sqlite_store(here / "off.sqlite", "OFF") as store:
                figures["OFF"].append(order_run(store, instances))
            with warmed(here / "replay.sqlite", "FULL") as store:
                figures["SQL alone"].append(replay(store, statements, transitions))
            figures["in memory"].append(order_run(InMemoryStore(), instances))
            row = " ".join(f"{figures[k][-1]:{w}.0f}" for k, w in (("raw", 8), ("FULL", 8), ("OFF", 8), ("SQL alone", 10), ("in memory", 10)))
            print(f"{number + 1:>5} {row}   {os.getloadavg()[0]:.2f}")
        raw = statistics.median(figures["raw"])
        print("\nmedian, and against the median raw loop (the floor asks FULL for at least 70%):")
        for name, values in figures.items():
            spread = f"{min(values):.0f} to {max(values):.0f}"
            print(f"  {name:<10} {statistics.median(values):8.0f}/s  {100 * statistics.median(values) / raw:6.1f}%   ({spread})")
        print("  FULL against raw, round by round: " + ", ".join(f"{100 * f / r:.0f}%" for f, r in zip(figures["FULL"], figures["raw"], strict=True)))
        pages, written = wal_pages(folder, instances)
        print(f"\nWAL pages per transition: {pages:.1f} (the raw loop writes about 1.5)")
        for name, count in written.most_common():
            print(f"  {count / transitions:5.2f}  {name}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--instances", type=int, default=50)
    args = parser.parse_args()
    sys.exit(main(args.rounds, args.instances))
