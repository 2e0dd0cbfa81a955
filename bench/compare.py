"""procflow beside SpiffWorkflow on the same order process, in one run on one machine.

    python bench/compare.py           # the full comparison (several minutes: SpiffWorkflow is slow at 1,000 steps)
    python bench/compare.py --quick   # under a minute (smaller counts, no 1,000-step SpiffWorkflow run): `make bench`

After the table come the speed floors procflow keeps (issue 12), each with its measured
figure and whether it holds: the happy path, in memory and with the state's JSON round trip
after every step, at least 30 times SpiffWorkflow's throughput in the same run; a parked
instance at most a sixth of SpiffWorkflow's memory; loading (parse, compile, validate) the
order process in at most 30 ms warm, and a generated 500-step process in at most 1.5 s. They
are printed, not asserted: the figures of a shared machine drift, and a reader judges them.

Each figure is the median of several repeats; procflow and SpiffWorkflow alternate within
every repeat to cancel drift. The table comes first, then one JSON line per figure:
{"metric": ..., "procflow": ..., "spiffworkflow": ..., "ratio": ...} where ratio is how many
times better procflow is (higher is better for rates, lower for times and bytes).
SpiffWorkflow is optional (`pip install -e '.[bench]'`); without it only procflow's figures print.

Memory is what tracemalloc sees allocated and still alive after parking N instances at their
first wait, divided by N: on both sides the live objects a service keeps (procflow's
`InstanceState` records, SpiffWorkflow's `BpmnWorkflow` objects), the input and ids included,
the parsed definition (shared by all instances) not. procflow's instances are parked once all
at one instant (the fixed clock of every other figure here: instances at the same instant
share the values of their timestamps), once each at its own instant (each keeps its own two,
as floats: its start and its timeout); SpiffWorkflow reads the wall clock, so its figure is
the same for both rows.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import procflow
from procflow.dsl.validate import check_source
from procflow.interpreter.messages import Reply
from procflow.interpreter.state import InstanceState

ROOT = Path(__file__).resolve().parent.parent
ORDER_PATH = ROOT / "processes" / "order_fulfillment.proc"
ORDER_TEXT = ORDER_PATH.read_text(encoding="utf-8")
NOW = datetime(2026, 3, 23, 16, 0, tzinfo=UTC)

sys.path.insert(0, str(Path(__file__).resolve().parent))
try:
    import spiff_side  # type: ignore[import-not-found]
except ImportError as missing:  # SpiffWorkflow is an optional extra
    spiff_side = None
    SPIFF_MISSING = str(missing)
else:
    SPIFF_MISSING = ""


# ---------------------------------------------------------------- procflow side

HAPPY = ("inventory_reserved", "payment_authorized", "shipment_created")
FAILURE = ("inventory_reserved", "payment_authorized", "shipment_rejected", "payment_voided", "inventory_released")


def procflow_parse() -> procflow.ProcessDefinition:
    """Parse and compile the order process from its text (no caching of the result)."""
    return procflow.load_text(ORDER_TEXT, str(ORDER_PATH))


def procflow_drive(definition: procflow.ProcessDefinition, replies: tuple[str, ...], durable: bool, number: int = 0) -> InstanceState:
    """One instance through the pure engine, replies delivered as a service would."""
    correlation = f"ord_{number}"
    state = procflow.start(definition, f"wf_{number}", {"orderId": correlation, "amount": 180.0}, NOW).state
    if durable:
        state = InstanceState.model_validate_json(state.model_dump_json())
    for reply in replies:
        state = procflow.deliver(definition, state, Reply(type=reply, correlationId=correlation), NOW).state
        if durable:
            state = InstanceState.model_validate_json(state.model_dump_json())
    return state


def linear_text(steps: int) -> str:
    """A process of `steps` sequential waiting steps (send, then await its reply)."""
    lines = ["process linear {", "  participant worker", ""]
    for i in range(steps):
        lines.append(f"  step step_{i} {{ send worker.do_{i} await done_{i} within 1d }}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def procflow_load(text: str, path: str) -> procflow.ProcessDefinition:
    """Load a process as `procflow validate` does: parse, compile and validate it."""
    definition, diagnostics = check_source(text, path)
    errors = [d for d in diagnostics if d.severity == "error"]
    assert definition is not None and not errors, errors
    return definition


def procflow_linear(definition: procflow.ProcessDefinition, steps: int) -> int:
    """Drive a linear instance to its end; returns the replies delivered."""
    state = procflow.start(definition, "wf_linear", {}, NOW).state
    for i in range(steps):
        state = procflow.deliver(definition, state, Reply(type=f"done_{i}", correlationId="wf_linear"), NOW).state
    assert state.status == "completed", state.status
    return steps


def procflow_park(definition: procflow.ProcessDefinition, count: int, own_instants: bool = False) -> list[InstanceState]:
    """`count` instances parked at their first wait: all at the same instant (as every other
    figure here runs on a fixed clock), or each at its own millisecond (`own_instants`), so
    no two share their timestamps (SpiffWorkflow reads the wall clock: its instances never
    share theirs)."""
    return [
        procflow.start(
            definition, f"wf_{i}", {"orderId": f"ord_{i}", "amount": 180.0}, NOW + timedelta(milliseconds=i) if own_instants else NOW
        ).state
        for i in range(count)
    ]


# ---------------------------------------------------------------- measuring


def timed(fn: Callable[[], Any]) -> float:
    gc.collect()
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def bytes_per_instance(make: Callable[[int], list[Any]], count: int) -> float:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = make(count)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del kept
    return (after - before) / count


class Figures:
    """Collects medians and prints the table and JSON lines."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.floors: list[dict[str, Any]] = []

    def add(self, metric: str, unit: str, ours: list[float], theirs: list[float] | None, higher_is_better: bool, note: str = "") -> None:
        p = statistics.median(ours)
        s = statistics.median(theirs) if theirs else None
        ratio = None
        if s:
            ratio = p / s if higher_is_better else s / p
        self.rows.append({"metric": metric, "unit": unit, "procflow": p, "spiffworkflow": s, "ratio": ratio, "note": note})

    def row(self, metric: str) -> dict[str, Any]:
        return next(row for row in self.rows if row["metric"] == metric)

    def floor(self, name: str, measured: float | None, limit: float, at_least: bool, shown: str, says: str) -> None:
        """A floor: `measured` must be at least (or at most) `limit`; None when it could not be
        measured. `shown` formats the figure for the table (`{}` for the number), `says` is the floor in words."""
        holds = None if measured is None else (measured >= limit if at_least else measured <= limit)
        self.floors.append(
            {"floor": name, "measured": measured, "limit": limit, "at_least": at_least, "holds": holds, "shown": shown, "says": says}
        )

    def print(self) -> None:
        print(f"{'metric':<44} {'unit':<16} {'procflow':>14} {'SpiffWorkflow':>14} {'ratio':>8}")
        for row in self.rows:
            s = f"{row['spiffworkflow']:>14.2f}" if row["spiffworkflow"] is not None else f"{'-':>14}"
            r = f"{row['ratio']:>7.1f}x" if row["ratio"] is not None else f"{'-':>8}"
            print(f"{row['metric']:<44} {row['unit']:<16} {row['procflow']:>14.2f} {s} {r}" + (f"  {row['note']}" if row["note"] else ""))
        print()
        print(f"{'speed floor (issue 12)':<44} {'measured':>28}   {'floor':<36} holds")
        for floor in self.floors:
            measured = floor["shown"].format(f"{floor['measured']:.3g}") if floor["measured"] is not None else "not measured"
            verdict = {True: "yes", False: "NO", None: "-"}[floor["holds"]]
            print(f"{floor['floor']:<44} {measured:>28}   {floor['says']:<36} {verdict}")
        print()
        for row in self.rows:
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items() if k in ("metric", "procflow", "spiffworkflow", "ratio")}))
        for floor in self.floors:
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in floor.items() if k != "shown"}))


def measure(quick: bool) -> Figures:
    # Rounds of at least some tens of milliseconds on both sides, and seven of them: on a
    # shared machine a busy spell of another process lands in one round, not in the median.
    repeats = 7
    instances = 500
    spiff_instances = 20 if quick else 60
    figures = Figures()
    spiff = spiff_side
    definition = procflow_parse()
    spec = spiff.load_spec() if spiff else None

    # Sanity: both sides really do the work.
    assert procflow_drive(definition, HAPPY, False).status == "completed"
    failed = procflow_drive(definition, FAILURE, False)
    assert failed.status == "compensated" and failed.compensation is not None
    assert [u.commandName for u in failed.compensation.undone] == ["payment.void", "inventory.release"]
    if spiff:
        assert spiff.run_happy(spec).status == "completed"
        assert spiff.run_failure(spec).undo == ["payment.void", "inventory.release"]

    def alternate(ours: Callable[[], float], theirs: Callable[[], float] | None) -> tuple[list[float], list[float] | None]:
        a: list[float] = []
        b: list[float] | None = [] if theirs and spiff else None
        for _ in range(repeats):
            a.append(ours())
            if b is not None and theirs is not None:
                b.append(theirs())
        return a, b

    # Parse/load time (ms).
    ours, theirs = alternate(
        lambda: timed(lambda: [procflow_parse() for _ in range(20)]) / 20 * 1000,
        (lambda: timed(lambda: [spiff.parse_once() for _ in range(5)]) / 5 * 1000) if spiff else None,
    )
    figures.add("parse+compile the order process", "ms", ours, theirs, higher_is_better=False)

    for label, replies, spiff_fn, durable in (
        ("happy path, in memory", HAPPY, "run_happy", False),
        ("failure path with compensation, in memory", FAILURE, "run_failure", False),
        ("happy path, state JSON round trip per step", HAPPY, "run_happy_serialized", True),
        ("failure path, state JSON round trip per step", FAILURE, "run_failure_serialized", True),
    ):
        theirs_fn = getattr(spiff, spiff_fn) if spiff else None
        ours, theirs = alternate(
            lambda replies=replies, durable=durable: instances / timed(
                lambda: [procflow_drive(definition, replies, durable, i) for i in range(instances)]
            ),
            (lambda fn=theirs_fn: spiff_instances / timed(lambda: [fn(spec) for _ in range(spiff_instances)])) if theirs_fn else None,
        )
        figures.add(label, "instances/s", ours, theirs, higher_is_better=True)

    sizes = (10, 100) if quick else (10, 100, 1000)
    per_step: dict[int, float] = {}
    for steps in sizes:
        linear = procflow.load_text(linear_text(steps))
        spiff_linear = spiff.linear_spec(steps) if spiff and (steps <= 100 or not quick) else None
        spiff_repeats = 1 if steps >= 1000 else repeats
        ours_list = [timed(lambda linear=linear, steps=steps: procflow_linear(linear, steps)) / steps * 1e6 for _ in range(repeats)]
        theirs_list = None
        if spiff_linear is not None:
            theirs_list = [
                timed(lambda s=spiff_linear, steps=steps: spiff.run_linear(s, steps)) / steps * 1e6 for _ in range(spiff_repeats)
            ]
        figures.add(f"per step, linear process of {steps} steps", "us/step", ours_list, theirs_list, higher_is_better=False)
        per_step[steps] = statistics.median(ours_list)
    big = max(sizes)
    figures.add(f"per-step cost growth {sizes[0]} -> {big} steps", "x (lower better)", [per_step[big] / per_step[sizes[0]]], None, True,
                note="must stay within 1.2x")
    if not quick:
        # Run once to its end at the default recursion limit (SpiffWorkflow needs its raised
        # past ~160 steps and cannot run this in any reasonable time: see its limitations).
        steps = 50_000
        long_linear = procflow.load_text(linear_text(steps))
        limit = sys.getrecursionlimit()
        ran = timed(lambda: procflow_linear(long_linear, steps))
        assert sys.getrecursionlimit() == limit
        figures.add(f"linear process of {steps:,} steps run to its end", "s", [ran], None, higher_is_better=False,
                    note=f"recursion limit left at {limit}")

    parked = 1_000 if quick else 10_000
    ours = [bytes_per_instance(lambda n: procflow_park(definition, n), parked)]
    theirs = [bytes_per_instance(lambda n: spiff.park_instances(spec, n), parked)] if spiff else None
    figures.add(f"memory per instance parked at first wait ({parked:,})", "bytes", ours, theirs, higher_is_better=False,
                note="procflow's all parked at one instant")
    ours = [bytes_per_instance(lambda n: procflow_park(definition, n, own_instants=True), parked)]
    figures.add(f"the same, each parked at its own instant ({parked:,})", "bytes", ours, theirs, higher_is_better=False,
                note="no timestamp shared")

    durable = durable_figures(quick)
    for name, value in durable:
        figures.add(name, "transitions/s", [value], None, higher_is_better=True)

    order_ms, big_s = loading_figures()
    figures.add("load (parse, compile, validate) the order process, warm", "ms", [order_ms], None, higher_is_better=False)
    figures.add("load a generated process of 500 steps", "s", [big_s], None, higher_is_better=False)
    floors(figures, order_ms, big_s, parked)
    return figures


def loading_figures() -> tuple[float, float]:
    """Milliseconds to load the order process once the parser is built (median of 21), and
    seconds to load a generated 500-step process (median of 5), each as `procflow validate` does."""
    from dsl_scale import generate  # type: ignore[import-not-found]  # bench/ is on sys.path above

    big = generate(500)
    procflow_load(ORDER_TEXT, str(ORDER_PATH))  # warm: the grammar and the imports
    order = [timed(lambda: procflow_load(ORDER_TEXT, str(ORDER_PATH))) * 1000 for _ in range(21)]
    steps = [timed(lambda: procflow_load(big, "<generated>")) for _ in range(5)]
    return statistics.median(order), statistics.median(steps)


def floors(figures: Figures, order_ms: float, big_s: float, parked: int) -> None:
    """The speed floors of issue 12 (Must-show 4), from the figures of this run."""
    for metric, name in (("happy path, in memory", "happy path, in memory"), ("happy path, state JSON round trip per step", "happy path, JSON round trip per step")):
        figures.floor(name, figures.row(metric)["ratio"], 30, True, "{}x SpiffWorkflow's rate", "at least 30x SpiffWorkflow's rate")
    for metric, name in (
        (f"memory per instance parked at first wait ({parked:,})", "memory of a parked instance, one instant"),
        (f"the same, each parked at its own instant ({parked:,})", "memory of a parked instance, own instants"),
    ):
        # "At most a sixth of SpiffWorkflow's": SpiffWorkflow's bytes are at least 6 times procflow's.
        figures.floor(name, figures.row(metric)["ratio"], 6, True, "1/{} of SpiffWorkflow's", "at most 1/6 of SpiffWorkflow's")
    figures.floor("load the order process (warm)", order_ms, 30, False, "{} ms", "at most 30 ms")
    figures.floor("load a generated 500-step process", big_s, 1.5, False, "{} s", "at most 1.5 s")


def durable_figures(quick: bool) -> list[tuple[str, float]]:
    """Durable transitions per second on the SQLite store (procflow alone), beside the in-memory store."""
    import tempfile

    import store_bench  # type: ignore[import-not-found]  # bench/ is on sys.path above

    instances = 20 if quick else 200
    out = []
    with tempfile.TemporaryDirectory() as folder:
        definition = procflow_parse()
        for kind in ("in-memory", "sqlite FULL", "sqlite NORMAL"):
            result = store_bench.run(kind, instances, Path(folder), definition)
            out.append((f"Orchestrator transitions, {kind} store", result["transitions_per_second"]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a smoke check under a minute")
    args = parser.parse_args(argv)
    if spiff_side is None:
        print(f"SpiffWorkflow is not installed ({SPIFF_MISSING}); `pip install -e '.[bench]'` for the comparison.\n")
    began = time.perf_counter()
    figures = measure(args.quick)
    figures.print()
    if spiff_side is not None:
        print()
        print(spiff_side.SPIFF_LIMITATIONS)
    print(f"\n(took {time.perf_counter() - began:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
