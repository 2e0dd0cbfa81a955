"""Durable transitions per second: the SQLite store (synchronous FULL and NORMAL) beside the
in-memory store, on the order process's happy path, and where the time goes.

    python bench/store_bench.py              # 400 instances per store, median of 3 runs
    python bench/store_bench.py --quick      # 60 instances per store, one run: a smoke check
    python bench/store_bench.py --instances 2000 --folder /mnt/disk   # another disk

An `Orchestrator` with in-process participants that say yes runs each instance: one start and
three replies, i.e. four transitions, each one transaction (instance row, history, outbox,
timer, inbox, and the sent mark of the command whose reply it applies). The store methods are
timed in parts (engine decisions, JSON encode, JSON decode, COMMIT, the other SQL) with
`perf_counter` around the store's own small methods, so the split costs almost nothing.
The figures end with one JSON line per store. Then come issue 13's durable floors, on
SQLite and PostgreSQL (`durable_floors.py`; `--no-floors` leaves them out). `make bench-store`
runs `--quick`.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import procflow
from procflow.interpreter import engine
from procflow.interpreter.memory_store import InMemoryStore, Store
from procflow.interpreter.messages import Command
from procflow.interpreter.orchestrator import Orchestrator
from procflow.interpreter.sqlite_store import SqliteStore

ROOT = Path(__file__).resolve().parent.parent
ORDER = ROOT / "processes" / "order_fulfillment.proc"
NOW = datetime(2026, 3, 23, 16, 0, tzinfo=UTC)
TRANSITIONS_PER_INSTANCE = 4  # started, inventory_reserved, payment_authorized, shipment_created
YES = {"inventory.reserve": "inventory_reserved", "payment.authorize": "payment_authorized", "shipping.create": "shipment_created"}

Timings = dict[str, float]


def yes(command: Command) -> dict[str, Any]:
    return {"type": YES[command.commandName], "messageId": f"{command.workflowId}:{command.commandName}"}


@contextmanager
def timed(timings: Timings, part: str) -> Iterator[None]:
    began = time.perf_counter()
    try:
        yield
    finally:
        timings[part] += time.perf_counter() - began


def timed_store(path: Path, synchronous: str, timings: Timings) -> SqliteStore:
    """A SqliteStore whose JSON and COMMIT steps add their time to `timings`."""

    class TimedStore(SqliteStore):
        def _commit(self, connection: Any) -> None:
            with timed(timings, "commit"):
                super()._commit(connection)

        @staticmethod
        def _encode(state: Any) -> str:
            with timed(timings, "json encode"):
                return SqliteStore._encode(state)

        @staticmethod
        def _encode_history(state: Any, stored: tuple[int, int, int]) -> Any:
            with timed(timings, "json encode"):
                return SqliteStore._encode_history(state, stored)

        @staticmethod
        def _encode_dispatch(dispatch: Any) -> str:
            with timed(timings, "json encode"):
                return SqliteStore._encode_dispatch(dispatch)

        def _decode_dispatch(self, text: str) -> Any:
            with timed(timings, "json decode"):
                return super()._decode_dispatch(text)

        # (whatever the store passes on: the arguments grew with the store, and a fixed list broke this)
        def _decode(self, *args: Any, **kwargs: Any) -> Any:
            with timed(timings, "json decode"):
                return super()._decode(*args, **kwargs)

        def _decode_for_transition(self, *args: Any, **kwargs: Any) -> Any:
            with timed(timings, "json decode"):
                return super()._decode_for_transition(*args, **kwargs)

    return TimedStore(path, "FULL" if synchronous == "FULL" else "NORMAL", verify=False)


def wrap_store(store: Any, timings: Timings) -> None:
    """Time every call of the Store protocol (the whole of the store's share)."""
    for name in ("get", "load", "find", "save", "due", "outbox", "mark_sent", "seen", "pin", "pinned"):
        method = getattr(store, name)

        def call(*args: Any, _method: Callable[..., Any] = method, **kwargs: Any) -> Any:
            with timed(timings, "store"):
                return _method(*args, **kwargs)

        setattr(store, name, call)


@contextmanager
def timed_engine(timings: Timings) -> Iterator[None]:
    """Time the pure engine's decisions (the orchestrator calls it through the module)."""
    originals = {name: getattr(engine, name) for name in ("start", "deliver", "advance")}

    def wrapper(function: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            with timed(timings, "engine"):
                return function(*args, **kwargs)

        return call

    for name, function in originals.items():
        setattr(engine, name, wrapper(function))
    try:
        yield
    finally:
        for name, function in originals.items():
            setattr(engine, name, function)


def run(kind: str, instances: int, folder: Path, definition: procflow.ProcessDefinition) -> dict[str, Any]:
    """Drive `instances` happy-path instances through one store; the figures of that run."""
    timings: Timings = defaultdict(float)
    store: Store
    sqlite: SqliteStore | None = None
    if kind == "in-memory":
        store = InMemoryStore()
    else:
        path = folder / f"bench-{kind}.sqlite"
        for leftover in folder.glob(path.name + "*"):
            leftover.unlink()
        sqlite = timed_store(path, kind.removeprefix("sqlite "), timings)
        store = sqlite
    wrap_store(store, timings)
    orchestrator = Orchestrator(definition, store=store, participants={"inventory": yes, "payment": yes, "shipping": yes}, clock=lambda: NOW)
    orchestrator.start("wf_warm", {"orderId": "warm", "amount": 1.0})  # first-use costs (pinning, caches) out of the figure
    timings.clear()
    began = time.perf_counter()
    with timed_engine(timings):
        for i in range(instances):
            state = orchestrator.start(f"wf_{i}", {"orderId": f"ord_{i}", "amount": 180.0})
            assert state.status == "completed", state.status
    elapsed = time.perf_counter() - began
    if sqlite is not None:
        sqlite.close()
    transitions = instances * TRANSITIONS_PER_INSTANCE
    # One per transition: a command's "sent" mark rides along with its reply's transition.
    commits = instances * TRANSITIONS_PER_INSTANCE if sqlite is not None else 0
    store_time = timings["store"]
    json_time = timings["json encode"] + timings["json decode"]
    parts = {
        "engine": timings["engine"],
        "json encode": timings["json encode"],
        "json decode": timings["json decode"],
        "commit": timings["commit"],
        "other sql": max(0.0, store_time - json_time - timings["commit"]) if sqlite is not None else 0.0,
        "in-memory store": store_time if sqlite is None else 0.0,
    }
    parts["runtime and participants"] = max(0.0, elapsed - parts["engine"] - store_time)
    return {
        "store": kind,
        "instances": instances,
        "transitions": transitions,
        "seconds": elapsed,
        "transitions_per_second": transitions / elapsed,
        "commits": commits,
        "ms_per_transition": {name: 1000 * value / transitions for name, value in parts.items()},
    }


def fsync_latency(folder: Path, rounds: int = 300) -> tuple[float, float]:
    """Milliseconds (mean, median) one appended 4 KiB page + fdatasync takes on this disk: what a
    WAL commit with FULL pays at least once. The mean counts the disk's slow tail; commits pay it."""
    fd, name = tempfile.mkstemp(dir=folder)
    try:
        samples = []
        for _ in range(rounds):
            os.write(fd, b"x" * 4096)
            began = time.perf_counter()
            os.fdatasync(fd)
            samples.append(time.perf_counter() - began)
        return 1000 * statistics.fmean(samples), 1000 * statistics.median(samples)
    finally:
        os.close(fd)
        os.unlink(name)


KINDS = ("in-memory", "sqlite NORMAL", "sqlite FULL")


def median_result(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median rate (its split of the time comes with it)."""
    ordered = sorted(runs, key=lambda r: r["transitions_per_second"])
    return ordered[len(ordered) // 2]


def explain(results: dict[str, dict[str, Any]], fsync_ms: tuple[float, float]) -> str:
    """Where the time goes, in words, from the figures."""
    full, normal, memory = results["sqlite FULL"], results["sqlite NORMAL"], results["in-memory"]

    def per_commit(r: dict[str, Any]) -> float:
        return float(r["ms_per_transition"]["commit"]) * float(r["transitions"]) / max(1, int(r["commits"]))

    def shares(r: dict[str, Any]) -> str:
        parts = r["ms_per_transition"]
        total = sum(parts.values())
        ranked = sorted(((v, k) for k, v in parts.items() if v > 0), reverse=True)
        return ", ".join(f"{k} {100 * v / total:.0f}%" for v, k in ranked)

    return "\n".join([
        "NORMAL survives a crash of the process (at commit the WAL is in the operating system's hands); FULL also",
        "survives a power cut (the WAL is synced to the disk at every commit). In-memory keeps nothing.",
        f"Each transition is one transaction (a command's sent mark rides along with its reply's): {full['commits'] / full['transitions']:.2f} commits",
        f"per transition. A commit costs {per_commit(full):.3f} ms with FULL, {per_commit(normal):.3f} ms with NORMAL; one bare",
        f"page append + fdatasync on this disk takes {fsync_ms[0]:.3f} ms on average (median {fsync_ms[1]:.3f} ms): a FULL commit",
        "syncs the WAL (several pages), and each checkpoint (every 1000 WAL pages) syncs the database file too.",
        f"FULL:   {shares(full)}",
        f"NORMAL: {shares(normal)}",
        f"in-memory: {shares(memory)}",
        "So with FULL the disk's sync is the price of durability; with NORMAL the price is the JSON of the state",
        "(encoded on every save, decoded on every read) and the SQL statements, each a few tens of microseconds.",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--instances", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3, help="runs per store; the median is shown")
    parser.add_argument("--quick", action="store_true", help="60 instances per store, one run")
    parser.add_argument("--folder", help="where the SQLite files go (default: a temporary folder)")
    parser.add_argument("--no-floors", action="store_true", help="leave out issue 13's durable floors (they need PostgreSQL)")
    args = parser.parse_args()
    instances, repeats = (60, 1) if args.quick else (args.instances, max(1, args.repeats))
    definition = procflow.load(ORDER)
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.folder or scratch)
        for repeat in range(repeats):
            # The stores take turns, in a different order each repeat, to cancel drift of the machine.
            order = KINDS[repeat % len(KINDS):] + KINDS[: repeat % len(KINDS)]
            for kind in order:
                runs[kind].append(run(kind, instances, folder, definition))
        fsync_ms = fsync_latency(folder)
    results = {kind: median_result(runs[kind]) for kind in KINDS}
    print(f"order process, happy path: {instances} instances x {TRANSITIONS_PER_INSTANCE} transitions per store, "
          f"median of {repeats} (Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version})")
    print()
    print(f"{'store':<15} {'transitions/s':>14} {'ms/transition':>14} {'survives':>14}")
    for kind in KINDS:
        r = results[kind]
        survives = {"in-memory": "nothing", "sqlite NORMAL": "process crash", "sqlite FULL": "power cut"}[kind]
        print(f"{kind:<15} {r['transitions_per_second']:>14,.0f} {1000 * r['seconds'] / r['transitions']:>14.3f} {survives:>14}")
    print()
    names = list(results["in-memory"]["ms_per_transition"])
    print("where the time goes, ms per transition:")
    print(f"{'':<15} " + " ".join(f"{n:>12}" for n in names))
    for kind in KINDS:
        print(f"{kind:<15} " + " ".join(f"{results[kind]['ms_per_transition'][n]:>12.3f}" for n in names))
    print()
    print(explain(results, fsync_ms))
    for kind in KINDS:
        r = results[kind]
        print(json.dumps({"metric": "durable_transitions_per_second", "store": kind, "value": round(r["transitions_per_second"], 1),
                          "ms_per_transition": {k: round(v, 4) for k, v in r["ms_per_transition"].items()}}))
    if args.no_floors:
        return 0
    print()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import durable_floors  # type: ignore[import-not-found]  # (a script beside this one, not a package)

    return int(durable_floors.main(args.quick))


if __name__ == "__main__":
    sys.exit(main())
