"""Issue 14, must-show 1 and 2: 200 orders through two `procflow worker` processes on one
PostgreSQL store and a `procflow participant demo` process, over a real RabbitMQ that is
stopped for more than 10 seconds in the middle of the run.

Every instance must end exactly (state and history, as JSON) as the same answers give when
one orchestrator runs them in memory; every command the store sent must have reached the
participant at least once; and no instance may have applied a reply twice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

import procflow
from procflow.dsl.model import ProcessDefinition
from procflow.interpreter.amqp_participant import DemoParticipants
from procflow.interpreter.amqp_topology import Topology
from procflow.interpreter.memory_store import InMemoryStore
from procflow.interpreter.messages import Dispatch
from procflow.interpreter.orchestrator import InProcessTransport, Orchestrator
from procflow.interpreter.state import TERMINAL
from procflow.interpreter.stores import open_store

sys.path.insert(0, str(Path(__file__).resolve().parent))
from amqp_helpers import AMQP, ensure_broker_running, fresh_topology  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ORDER = ROOT / "processes" / "order_fulfillment.proc"
PROCFLOW = str(Path(sys.executable).parent / "procflow")
T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)
ORDERS = 200
REFUSE_EVERY = 5
OUTAGE_SECONDS = 11


@pytest.fixture
def topology() -> Iterator[Topology]:
    yield from fresh_topology()


class DemoInMemory(InProcessTransport):
    """The same answers as `procflow participant demo`, given in this process."""

    def __init__(self, demo: DemoParticipants) -> None:
        super().__init__({})
        self.demo = demo

    def send(self, dispatch: Dispatch) -> None:
        self.sent.append(dispatch)
        reply = self.demo.answer(dispatch.command, dispatch.dedupKey)
        if reply is not None:
            self.replies.append(reply)


def _start_all(orchestrator: Orchestrator) -> None:
    for i in range(ORDERS):
        orchestrator.start(f"wf_{i:03d}", {"orderId": f"ord_{i:03d}", "amount": float(i)})


def _in_memory(order: ProcessDefinition, demo: DemoParticipants) -> dict[str, object]:
    orchestrator = Orchestrator(order, store=InMemoryStore(), transport=DemoInMemory(demo), clock=lambda: T0, auto_dispatch=False)
    _start_all(orchestrator)
    orchestrator.pump()
    return {s.workflowId: s.to_json() for s in orchestrator.store.instances()}


@pytest.mark.slow
def test_two_workers_and_a_participant_over_rabbitmq_survive_a_broker_outage(
    postgres_url: str, topology: Topology, tmp_path: Path
) -> None:
    order = procflow.load(ORDER)
    demo = DemoParticipants([order], refuse=["shipping.create"], every=REFUSE_EVERY)
    expected = _in_memory(order, demo)
    assert Counter(s["status"] for s in expected.values())["compensated"] > 20  # some are refused by shipping

    with open_store(postgres_url) as store:
        _start_all(Orchestrator(order, store=store, clock=lambda: T0, auto_dispatch=False))
    env = {**os.environ, "PROCFLOW_AMQP_PREFIX": topology.prefix}
    logs = {name: tmp_path / f"{name}.log" for name in ("participant", "participant-err", "worker-1", "worker-2")}
    with logs["participant"].open("w") as out, logs["participant-err"].open("w") as err:
        participant = subprocess.Popen(
            [PROCFLOW, "participant", "demo", "--transport", AMQP, "--process", str(ORDER),
             "--refuse", "shipping.create", "--refuse-every", str(REFUSE_EVERY)],
            stdout=out, stderr=err, env=env,
        )
    workers = []
    for n in (1, 2):
        with logs[f"worker-{n}"].open("w") as err:
            workers.append(subprocess.Popen(
                [PROCFLOW, "worker", "--store", postgres_url, "--transport", AMQP, "--now", T0.isoformat(),
                 "--interval", "0.2", "--worker-id", f"amqp-test-{n}"],
                stdout=subprocess.DEVNULL, stderr=err, env=env,
            ))
    outage = 0.0
    try:
        with open_store(postgres_url) as store:
            began = time.monotonic()
            while time.monotonic() - began < 60:  # until the run is well under way
                moved = sum(1 for s in store.summaries() if s.status != "waiting_for_inventory")
                if moved >= ORDERS // 4:
                    break
                time.sleep(0.2)
            assert moved >= ORDERS // 4, "the run did not get going"
            stopped_at = time.monotonic()
            subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True, timeout=120)
            try:
                time.sleep(OUTAGE_SECONDS)
                unfinished_in_outage = sum(1 for s in store.summaries() if s.status not in TERMINAL)
            finally:
                ensure_broker_running()
            outage = time.monotonic() - stopped_at
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if all(s.status in TERMINAL for s in store.summaries()):
                    break
                time.sleep(0.3)
            states = {s.workflowId: s.to_json() for s in store.instances()}
            outboxes = {w: store.outbox_of(w) for w in states}
    finally:
        for process in [*workers, participant]:
            process.terminate()
        for process in [*workers, participant]:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
    worker_logs = [logs[f"worker-{n}"].read_text() for n in (1, 2)]
    # Stopped with SIGTERM (`terminate`), as a service manager stops them: each ends its round and says so.
    assert [w.returncode for w in workers] == [0, 0], [log[-2000:] for log in worker_logs]
    assert [log.splitlines()[-1] for log in worker_logs] == ["worker: stopped by SIGTERM once the batch in hand was done: nothing half done, no claim held"] * 2
    assert outage >= 10
    assert unfinished_in_outage > 0, "the outage came after the run had ended"
    assert any("trying again" in log for log in worker_logs), "the workers never saw the broker go"

    unfinished = sorted(w for w, s in states.items() if s["status"] not in TERMINAL)
    assert unfinished == [], f"{len(unfinished)} instance(s) never finished: {unfinished[:5]} ...\n" + worker_logs[0][-2000:]
    # Every instance ends as the same answers give in memory (state and history).
    for workflow_id, state in expected.items():
        assert states[workflow_id] == state, workflow_id
    # Every command was sent (the broker confirmed it) and reached the participant at least once.
    reached = {json.loads(line)["dedupKey"] for line in logs["participant"].read_text().splitlines()}
    sent = {e.dispatch.dedupKey for entries in outboxes.values() for e in entries}
    assert all(e.sent_at for entries in outboxes.values() for e in entries)
    assert sent <= reached, sorted(sent - reached)[:5]
    # No instance applied a reply twice.
    for workflow_id, state in states.items():
        applied = [e["message"]["messageId"] for e in state["history"] if e.get("message") and e["message"].get("messageId")]
        assert len(applied) == len(set(applied)), workflow_id
