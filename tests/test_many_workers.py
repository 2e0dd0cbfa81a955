"""Many workers on one store send each command once (issue 13).

Two and four worker processes drive 100 instances of the sample order process on one SQLite
file and on one PostgreSQL store; their in-process participants write down every command
they receive. No command may arrive twice, and every instance must end exactly as it ends
when one orchestrator runs them all alone (state and history, compared as JSON).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

import procflow
from procflow.dsl.model import ProcessDefinition
from procflow.interpreter.memory_store import InMemoryStore, Store
from procflow.interpreter.messages import Dispatch
from procflow.interpreter.orchestrator import Orchestrator
from procflow.interpreter.stores import open_store
from procflow.operator_cli import DemoTransport

ROOT = Path(__file__).resolve().parent.parent
ORDER = ROOT / "processes" / "order_fulfillment.proc"
CLAIM_WORKER = ROOT / "tests" / "workers" / "claim_worker.py"
T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)
INSTANCES = 100


@pytest.fixture(scope="module")
def order() -> ProcessDefinition:
    return procflow.load(ORDER)


def _start_all(orchestrator: Orchestrator) -> None:
    for i in range(INSTANCES):
        orchestrator.start(f"wf_{i:03d}", {"orderId": f"ord_{i:03d}", "amount": float(i)})


def _alone(order: ProcessDefinition) -> tuple[list[str], dict[str, object]]:
    """What one orchestrator does with the same instances: the commands it sends, the states it ends with."""
    transport = DemoTransport([order])
    orchestrator = Orchestrator(order, store=InMemoryStore(), transport=transport, clock=lambda: T0, auto_dispatch=False)
    _start_all(orchestrator)
    orchestrator.pump()
    states = {s.workflowId: s.to_json() for s in orchestrator.store.instances()}
    return [d.dedupKey for d in transport.sent], states


@pytest.mark.slow
@pytest.mark.parametrize("workers", [2, 4])
@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_many_workers_send_each_command_once(
    kind: str, workers: int, tmp_path: Path, request: pytest.FixtureRequest, order: ProcessDefinition
) -> None:
    url = str(tmp_path / "store.sqlite") if kind == "sqlite" else request.getfixturevalue("postgres_url")
    with open_store(url) as store:
        _start_all(Orchestrator(order, store=store, clock=lambda: T0, auto_dispatch=False))
    log = tmp_path / "received.log"
    processes = [
        subprocess.Popen(
            [sys.executable, str(CLAIM_WORKER), url, str(log), T0.isoformat()],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(workers)
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready", process.communicate()[1]
        began = time.perf_counter()
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        for process in processes:
            _, errors = process.communicate(timeout=300)
            assert process.returncode == 0, errors
        took = time.perf_counter() - began
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()

    received = [line.split() for line in log.read_text(encoding="utf-8").splitlines()]
    keys = Counter(key for key, _ in received)
    twice = {key: n for key, n in keys.items() if n > 1}
    by_worker = sorted(Counter(pid for _, pid in received).values())
    print(f"\n{kind}, {workers} workers: {len(received)} commands in {took:.1f}s, per worker {by_worker}, sent twice {len(twice)}")
    assert twice == {}, f"{len(twice)} commands were sent more than once: {sorted(twice)[:5]}"

    sent_alone, states_alone = _alone(order)
    assert sorted(keys) == sorted(sent_alone) and len(received) == 3 * INSTANCES
    with open_store(url, create=False) as store:
        states = {s.workflowId: s.to_json() for s in store.instances()}
        assert store.outbox() == []
    assert states.keys() == states_alone.keys()
    for workflow_id, state in states.items():
        assert state == states_alone[workflow_id], workflow_id
    assert {s["status"] for s in states.values()} == {"completed"}  # type: ignore[index]


class SlowSender:
    """A transport that takes ten seconds of a virtual clock to send each command, while another
    worker, at work beside it, claims what it can and sends that at once."""

    def __init__(self, now: list[float], store: Store) -> None:
        self.now, self.store = now, store
        self.sent: list[str] = []

    def send(self, dispatch: Dispatch) -> None:
        self.sent.append(dispatch.dedupKey)
        self.now[0] += 10.0
        for outbox_id, other in self.store.claim_outbox("fast"):
            self.sent.append(other.dedupKey)
            self.store.mark_sent(outbox_id)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_worker_with_a_slow_transport_keeps_its_commands_to_itself(
    kind: str, order: ProcessDefinition, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A batch of 20 commands at ten seconds each outlasts its minute's lease. The worker reads
    # the rest of its batch again every quarter lease, which renews the leases running short,
    # so the other worker never finds one of them free: each command is sent once. (Before,
    # the last commands of the batch went to both.) Leases are kept by `time.monotonic` in
    # memory and `time.time` in SQLite: both follow the virtual clock here.
    now = [1_000_000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    monkeypatch.setattr(time, "time", lambda: now[0])
    store: Store = InMemoryStore() if kind == "memory" else open_store(tmp_path / "slow.sqlite")
    try:
        starter = Orchestrator(order, store=store, clock=lambda: T0, auto_dispatch=False)
        for i in range(30):
            starter.start(f"wf_{i:03d}", {"orderId": f"ord_{i:03d}", "amount": 1.0})
        transport = SlowSender(now, store)
        slow = Orchestrator(order, store=store, transport=transport, clock=lambda: T0, auto_dispatch=False, worker_id="slow")
        slow.pump()
        assert [key for key, times in Counter(transport.sent).items() if times > 1] == []
        assert len(transport.sent) == 30 and store.outbox() == []
        assert now[0] - 1_000_000.0 == 200.0  # the slow worker sent its 20 (the other took 10)
    finally:
        if kind == "sqlite":
            store.close()  # type: ignore[attr-defined]
