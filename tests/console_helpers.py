"""A store holding instances in the statuses the console's tests look at, made through the
operator's own functions (`procflow.operator_cli`) at fixed moments."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from procflow.interpreter import engine
from procflow.interpreter.stores import DurableStore, open_store
from procflow.operator_cli import _orchestrator, deliver_reply, load_definition, start_instance

ROOT = Path(__file__).resolve().parent.parent
PROCESSES = ROOT / "processes"
ORDER = PROCESSES / "order_fulfillment.proc"
SCRIPT_ID = "<script>alert(1)</script>"
STUCK = "wf_stuck"
"""The compensation_failed instance: payment.void never confirmed."""


def at(text: str) -> datetime:
    """A fixed moment."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _deliver(store: DurableStore, message: dict[str, str], moment: str) -> None:
    deliver_reply(store, engine.validate_reply(message), lambda: at(moment))


def fill(store_path: Path | str) -> None:
    """Instances: waiting (wf_wait), failed (wf_failed), compensation_failed (wf_stuck), one
    whose id is a script tag (waiting), and one completed (wf_done)."""
    definition = load_definition(str(ORDER))
    with open_store(str(store_path), create=True) as store:
        def start(workflow_id: str, order: str, moment: str) -> None:
            start_instance(store, definition, workflow_id, {"orderId": order, "amount": 10.0}, lambda: at(moment))

        start("wf_failed", "ord_failed", "2026-01-01T08:02:00Z")
        _deliver(store, {"type": "inventory_unavailable", "correlationId": "ord_failed"}, "2026-01-01T08:02:10Z")
        start("wf_done", "ord_done", "2026-01-01T08:03:00Z")
        for reply in ("inventory_reserved", "payment_authorized", "shipment_created"):
            _deliver(store, {"type": reply, "correlationId": "ord_done"}, "2026-01-01T08:03:10Z")
        start(STUCK, "ord_stuck", "2026-01-01T09:00:00Z")
        for reply in ("inventory_reserved", "payment_authorized", "shipment_rejected"):
            _deliver(store, {"type": reply, "correlationId": "ord_stuck"}, "2026-01-01T09:00:00Z")
        # payment.void is never confirmed: asked again each minute, then compensation_failed.
        for minute in range(1, 5):
            moment = at(f"2026-01-01T09:0{minute}:00Z")
            _orchestrator(store, lambda moment=moment: moment).tick(moment)
        row = store.get(STUCK)
        assert row is not None and row.state.status == "compensation_failed", row
        start("wf_wait", "ord_wait", "2026-01-01T09:10:00Z")
        start(SCRIPT_ID, "ord_script", "2026-01-01T09:11:00Z")


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_console(store: Path, token: str) -> Iterator[str]:
    """`procflow serve` in a process of its own over `store`, with `token`; its base URL.
    Stopped (by its own process id) when the block ends."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "procflow", "serve", "--store", str(store), "--port", str(port),
         "--processes", str(PROCESSES), "--token", token],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PROCFLOW_TOKEN": ""},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if server.poll() is not None:
                pytest.fail(f"procflow serve stopped: {server.stdout.read().decode() if server.stdout else ''}")
            try:
                with urllib.request.urlopen(f"{base}/api/openapi.json", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"procflow serve did not answer at {base} within 30s")
                time.sleep(0.2)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=10)
        if server.stdout is not None:
            server.stdout.close()
