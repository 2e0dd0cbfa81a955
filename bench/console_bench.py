"""The console over a million instances (issue 18, must show 4): how long `procflow serve`
takes to answer the instances list's first page and an instance's page, over HTTP.

    python bench/console_bench.py                      # 1,000,000 instances, 20 requests per page
    python bench/console_bench.py --instances 50000    # a smaller store: a smoke check

The store is SQLite. Five instances are made by the engine (`tests/console_helpers.fill`:
waiting, failed, completed, compensation_failed, and one whose id is a script tag); the rest
are copies of a finished instance's row written by one SQL statement (ids `wf_1`...,
correlation keys `ord_1`..., statuses spread over four, change times one second apart),
because starting a million instances through the engine would take an hour and exercises
nothing the console reads differently. The copies have no history rows, so the instance page
is timed on the engine-made compensation_failed instance (8 history entries, 8 commands).

Each page is asked for 20 times after 3 warm-ups; the median and the slowest are printed,
with the issue's bounds (first page < 200 ms, instance page < 300 ms). Printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.console_helpers import STUCK, fill, running_console  # noqa: E402

BOUNDS = {"first page": 0.200, "instance page": 0.300}
STATUSES = ("completed", "waiting_for_payment", "failed", "compensated")


def copy_instances(path: Path, count: int) -> None:
    """`count` copies of wf_done's row, each with its own id, correlation key, status and time."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("BEGIN")
        connection.execute(
            """WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
               INSERT INTO instances (workflow_id, process, fingerprint, status, version, history_count, updated, state)
               SELECT 'wf_' || i, t.process, t.fingerprint,
                      CASE i % 4 WHEN 0 THEN ? WHEN 1 THEN ? WHEN 2 THEN ? ELSE ? END,
                      t.version, t.history_count, t.updated - 86400 - i,
                      replace(replace(t.state, '"wf_done"', '"wf_' || i || '"'), '"ord_done"', '"ord_' || i || '"')
               FROM n, (SELECT * FROM instances WHERE workflow_id = 'wf_done') AS t""",
            (count, *STATUSES),
        )
        connection.execute(
            """INSERT INTO correlations (process, correlation_id, workflow_id)
               SELECT process, 'ord_' || substr(workflow_id, 4), workflow_id FROM instances WHERE workflow_id GLOB 'wf_[0-9]*'"""
        )
        connection.execute("COMMIT")
        connection.execute("ANALYZE")
    finally:
        connection.close()


def timed(url: str, runs: int) -> tuple[float, float, int]:
    """(median, slowest) seconds of `runs` GETs after three warm-ups, and the size of the answer."""
    size = 0
    for _ in range(3):
        with urllib.request.urlopen(url, timeout=30) as answer:
            size = len(answer.read())
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        with urllib.request.urlopen(url, timeout=30) as answer:
            answer.read()
        times.append(time.perf_counter() - began)
    return statistics.median(times), max(times), size


def main() -> int:
    """Fill a store, serve it, time the pages, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="procflow-console-bench-") as folder:
        store = Path(folder) / "s.sqlite"
        began = time.perf_counter()
        fill(store)
        copy_instances(store, args.instances)
        print(f"store: {args.instances + 5:,} instances in {store.stat().st_size / 1e6:.0f} MB, made in {time.perf_counter() - began:.1f} s")
        pages = {
            "first page": "/",
            "first page, status compensated": "/?status=compensated",
            "first page, one correlation key": "/?q=ord_500",
            "page after a cursor (API)": None,
            "instance page": f"/instances/{STUCK}",
            "API list, first page": "/api/instances",
            "metrics": "/metrics",
        }
        figures = {}
        with running_console(store, "bench-token") as base:
            with urllib.request.urlopen(f"{base}/api/instances?limit=50", timeout=30) as answer:
                after = json.load(answer)["after"]
            pages["page after a cursor (API)"] = f"/api/instances?{urllib.parse.urlencode({'after': after})}"
            print(f"{'page':<36} {'median':>9} {'slowest':>9} {'bytes':>9}  bound")
            for name, path in pages.items():
                median, slowest, size = timed(f"{base}{path}", args.runs)
                bound = BOUNDS.get(name)
                verdict = f"< {bound * 1000:.0f} ms: {'holds' if median < bound else 'DOES NOT HOLD'}" if bound else ""
                print(f"{name:<36} {median * 1000:>7.1f}ms {slowest * 1000:>7.1f}ms {size:>9,}  {verdict}")
                figures[name] = {"median_ms": round(median * 1000, 1), "slowest_ms": round(slowest * 1000, 1)}
        print(json.dumps({"bench": "console", "instances": args.instances + 5, "pages": figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
