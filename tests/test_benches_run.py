"""The benchmark scripts still run: each once, at its smallest, in a process of its own.

CI does not run the benchmarks for their figures (`make bench` does, on a quiet machine), and
a script that reaches into the stores' internals can break unseen when they change:
`bench/store_bench.py` stopped with a TypeError for a whole session once. This runs every
script once at its smallest (a few seconds each; `compare.py` and `durable_floors.py` some
15 and 30 s) and checks only that it finishes and prints what it measures; the figures are
not judged here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "args", "prints"),
    [
        ("store_bench.py", ["--quick", "--no-floors", "--instances", "20"], "durable_transitions_per_second"),
        ("foreach_bench.py", ["--quick"], "ratio"),
        ("million.py", ["--instances", "2000"], "floors held"),
        ("sqlite_full_split.py", ["--rounds", "1", "--instances", "10"], "raw"),
        ("console_bench.py", ["--instances", "50", "--runs", "1"], '"bench": "console"'),
        ("diagram_bench.py", ["--steps", "20", "--out", "{tmp}"], "total"),
        ("dsl_scale.py", ["--rounds", "1", "20"], "µs/step"),
        ("compare.py", ["--quick"], "speed floor (issue 12)"),  # (SpiffWorkflow's side too: some 15 s)
        ("durable_floors.py", ["--quick"], "durable floor (issue 13)"),  # (SQLite and PostgreSQL: some 30 s)
        # RabbitMQ and PostgreSQL: with the broker's tests, one after another (one stops the broker).
        pytest.param("amqp_bench.py", ["--orders", "20"], '"figure": "orders_per_second"', marks=pytest.mark.xdist_group("rabbitmq")),
    ],
)
def test_a_benchmark_script_runs(script: str, args: list[str], prints: str, tmp_path: Path) -> None:
    command = [sys.executable, str(ROOT / "bench" / script), *(a.replace("{tmp}", str(tmp_path)) for a in args)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert prints in result.stdout, result.stdout[-2000:]
