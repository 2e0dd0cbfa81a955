"""The AMQP transport on a real RabbitMQ (issue 14): what goes on the wire, replies applied
once, poison replies dead-lettered with their reason, a participant that honours the dedup key.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest

import procflow
from procflow.errors import StoreError
from procflow.interpreter.amqp import (
    AmqpTransport,
    BrokerLink,
    ReplyCounts,
    amqp_worker,
    receive_replies,
)
from procflow.interpreter.amqp_participant import DemoParticipants, ParticipantServer
from procflow.interpreter.amqp_topology import REASON_HEADER, Topology
from procflow.interpreter.memory_store import InMemoryStore
from procflow.interpreter.orchestrator import Orchestrator
from procflow.interpreter.sqlite_store import SqliteStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from amqp_helpers import AMQP, connect, drain, fresh_topology, publish  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ORDER = ROOT / "processes" / "order_fulfillment.proc"
T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)

CONTRACTED = textwrap.dedent("""
    process poison-check {
      correlate by input.orderId
      reply to "poison-replies"
      input { orderId: string }
      participant payment "Payment" { reply payment_authorized { authorizationId: string } }
      step authorize {
        send payment.authorize { orderId: input.orderId }
        await payment_authorized within 1h
        nothing to undo "the test ends here"
      }
    }
""")


@pytest.fixture
def topology() -> Iterator[Topology]:
    yield from fresh_topology()


def _wait_for(link: BrokerLink, orchestrator: Orchestrator, counts: ReplyCounts, total: int) -> None:
    for _ in range(100):
        receive_replies(orchestrator, link, counts, wait=0.1)
        if counts.applied + counts.duplicates + counts.dead >= total:
            return
    raise AssertionError(f"only {counts} of {total} replies arrived")


def test_a_command_on_the_wire_is_the_lesson_s_five_fields_with_amqp_properties(topology: Topology) -> None:
    order = procflow.load(ORDER)
    link = BrokerLink(AMQP, topology)
    orchestrator = Orchestrator(order, store=InMemoryStore(), transport=AmqpTransport(link), clock=lambda: T0, auto_dispatch=False)
    orchestrator.start("wf_wire", {"orderId": "ord_wire", "amount": 180.0})
    orchestrator.pump()
    link.close()
    [(properties, body)] = drain(topology.participant_queue("inventory"))
    assert json.loads(body) == {
        "commandName": "inventory.reserve", "workflowId": "wf_wire", "correlationId": "ord_wire",
        "replyTo": "workflow-replies", "data": {"orderId": "ord_wire"},
    }
    assert properties.message_id == "ord_wire:inventory.reserve:reserve_inventory#1"  # the dedup key
    assert properties.correlation_id == "ord_wire"
    assert properties.reply_to == topology.reply_queue("workflow-replies")
    assert properties.content_type == "application/json"
    assert properties.delivery_mode == 2  # persistent
    assert orchestrator.store.outbox() == []  # marked sent: the broker confirmed it


def test_a_command_that_cannot_be_published_stays_in_the_outbox(tmp_path: Path, topology: Topology) -> None:
    order = procflow.load(ORDER)
    with SqliteStore(tmp_path / "s.sqlite") as store:
        link = BrokerLink("amqp://guest:guest@127.0.0.1:1/", topology)  # nothing listens there
        orchestrator = Orchestrator(order, store=store, transport=AmqpTransport(link), clock=lambda: T0, auto_dispatch=False)
        orchestrator.start("wf_down", {"orderId": "ord_down", "amount": 1.0})
        with pytest.raises(procflow.ProcflowError, match="cannot connect to the broker"):
            orchestrator.pump()
        assert [d.dedupKey for _, d in store.outbox()] == ["ord_down:inventory.reserve:reserve_inventory#1"]


def test_a_poison_reply_lands_in_the_dead_letter_queue_with_its_reason_and_changes_nothing(tmp_path: Path, topology: Topology) -> None:
    definition = procflow.load_text(CONTRACTED, "poison.proc")
    with SqliteStore(tmp_path / "s.sqlite") as store:
        link = BrokerLink(AMQP, topology, consume_replies=True)
        orchestrator = Orchestrator(definition, store=store, transport=AmqpTransport(link), clock=lambda: T0, auto_dispatch=False)
        orchestrator.start("wf_p", {"orderId": "ord_p"})
        orchestrator.pump()  # declares the reply queue and consumes it
        before = store.get("wf_p")
        assert before is not None and before.state.status == "waiting_for_payment"
        queue = topology.reply_queue("poison-replies")
        poison = [
            (b'{"type": "payment_authorized", "correlationId": ', "not valid JSON"),
            (json.dumps({"type": "payment_authorized", "correlationId": "ord_nobody", "data": {"authorizationId": "a"}}).encode(),
             "no instance correlates by `ord_nobody`"),
            (json.dumps({"type": "payment_authorized", "correlationId": "ord_p", "messageId": "m-bad", "data": {"authorizationId": 5}}).encode(),
             "breaks its declared schema"),
        ]
        for body, _ in poison:
            publish(queue, body, content_type="application/json")
        counts = ReplyCounts()
        _wait_for(link, orchestrator, counts, len(poison))
        assert counts == ReplyCounts(applied=0, duplicates=0, dead=3)
        after = store.get("wf_p")
        assert after is not None and after.version == before.version
        assert after.state.to_json() == before.state.to_json()
        assert not store.seen("m-bad")

        dead = drain(topology.dead_letters)
        assert [body for _, body in dead] == [body for body, _ in poison]
        for (properties, _), (_, reason) in zip(dead, poison, strict=True):
            assert reason in properties.headers[REASON_HEADER], properties.headers[REASON_HEADER]

        # The worker goes on: a good reply after them applies.
        good = {"type": "payment_authorized", "correlationId": "ord_p", "messageId": "m-good", "data": {"authorizationId": "a-1"}}
        publish(queue, json.dumps(good).encode())
        publish(queue, json.dumps(good).encode())  # delivered twice: the second is a no-op
        counts = ReplyCounts()
        _wait_for(link, orchestrator, counts, 2)
        assert counts == ReplyCounts(applied=1, duplicates=1, dead=0)
        assert orchestrator.state("wf_p").status == "completed"
        assert drain(queue) == []  # both acked
        link.close()


def test_the_participant_side_answers_once_per_dedup_key(topology: Topology) -> None:
    order = procflow.load(ORDER)
    demo = DemoParticipants([order])
    received = []
    server = ParticipantServer(BrokerLink(AMQP, topology), demo.participants(), received.append)
    server.start()
    link = BrokerLink(AMQP, topology, consume_replies=True)
    orchestrator = Orchestrator(order, store=InMemoryStore(), transport=AmqpTransport(link), clock=lambda: T0, auto_dispatch=False)
    orchestrator.start("wf_twice", {"orderId": "ord_twice", "amount": 1.0})
    [(_, dispatch)] = orchestrator.store.outbox()
    orchestrator.pump()
    orchestrator.transport.send(dispatch)  # the same command again (a resend after a lost confirm)
    for _ in range(50):
        server.link.wait(0.05)
        if len(received) == 2:
            break
    assert [(r.dedup_key, r.again) for r in received] == [(dispatch.dedupKey, False), (dispatch.dedupKey, True)]
    counts = ReplyCounts()
    _wait_for(link, orchestrator, counts, 2)
    assert counts.applied == 1 and counts.duplicates == 1  # the same answer, under the same message id
    assert orchestrator.state("wf_twice").status == "waiting_for_payment"
    server.link.close()
    link.close()


def test_the_readme_participant_answers_commands_and_honours_the_dedup_key(topology: Topology, tmp_path: Path) -> None:
    [example] = re.findall(r"```py\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.S)
    script = tmp_path / "inventory_service.py"
    script.write_text(example, encoding="utf-8")
    service = subprocess.Popen(
        [sys.executable, str(script)], env={**os.environ, "PROCFLOW_AMQP_PREFIX": topology.prefix},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        connection = connect()
        channel = connection.channel()
        for _ in range(300):  # until the service consumes its queue
            try:
                if channel.queue_declare(topology.participant_queue("inventory"), passive=True).method.consumer_count:
                    break
            except pika.exceptions.ChannelClosedByBroker:
                channel = connection.channel()  # not declared yet
            assert service.poll() is None, service.communicate()[1]
            time.sleep(0.1)
        connection.close()
        order = procflow.load(ORDER)
        link = BrokerLink(AMQP, topology, consume_replies=True)
        orchestrator = Orchestrator(order, store=InMemoryStore(), transport=AmqpTransport(link), clock=lambda: T0, auto_dispatch=False)
        orchestrator.start("wf_readme", {"orderId": "ord_readme", "amount": 1.0})
        [(_, dispatch)] = orchestrator.store.outbox()
        orchestrator.pump()
        orchestrator.transport.send(dispatch)  # the same command again
        counts = ReplyCounts()
        _wait_for(link, orchestrator, counts, 2)
        assert counts == ReplyCounts(applied=1, duplicates=1, dead=0)
        assert orchestrator.state("wf_readme").status == "waiting_for_payment"
        link.close()
    finally:
        service.terminate()
        service.communicate(timeout=30)


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["worker", "--transport", AMQP, "--participants", "demo"], "give --transport or --participants, not both"),
        (["worker", "--transport", "http://127.0.0.1:5672/"], "not an AMQP URL"),
        (["worker", "--transport", AMQP, "--amqp-prefix", "two words"], "is not a name"),
        (["worker", "--once", "--transport", "amqp://guest:secret@127.0.0.1:1/"], "cannot connect to the broker at amqp://guest:***@127.0.0.1:1/"),
        (["participant", "demo", "--transport", AMQP, "--refuse", "shipping.nothing"], "cannot refuse shipping.nothing"),
    ],
)
def test_the_broker_commands_refuse_bad_input_in_one_line(
    argv: list[str], said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from procflow.cli import main

    SqliteStore(tmp_path / "s.sqlite").close()
    store = ["--store", str(tmp_path / "s.sqlite")] if argv[0] == "worker" else []
    assert main([*argv, *store]) == 1
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err and "secret" not in err, err


def test_a_worker_waits_for_a_broker_that_is_down_with_backoff_and_keeps_its_outbox(tmp_path: Path, topology: Topology) -> None:
    order = procflow.load(ORDER)
    with SqliteStore(tmp_path / "s.sqlite") as store:
        link = BrokerLink("amqp://guest:guest@127.0.0.1:1/", topology, consume_replies=True)  # nothing listens there
        orchestrator = Orchestrator(order, store=store, transport=AmqpTransport(link), clock=lambda: T0, auto_dispatch=False)
        orchestrator.start("wf_wait", {"orderId": "ord_wait", "amount": 1.0})
        delays: list[float] = []
        amqp_worker(
            orchestrator, link, trouble=lambda error, delay: delays.append(delay), sleep=lambda seconds: None,
            stop=lambda: len(delays) >= 6,
        )
        assert delays == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
        assert [d.dedupKey for _, d in store.outbox()] == ["ord_wait:inventory.reserve:reserve_inventory#1"]
        # The broker is back (the real one): the next run sends it, confirmed.
        link.parameters = BrokerLink(AMQP, topology).parameters
        amqp_worker(orchestrator, link, once=True)
        assert store.outbox() == []
        [(properties, _)] = drain(topology.participant_queue("inventory"))
        assert properties.message_id == "ord_wait:inventory.reserve:reserve_inventory#1"
        link.close()


class FailingSaves(InMemoryStore):
    """An in-memory store whose next `failures` saves fail as a store that went away does."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 0

    def save(self, *args: Any, **kwargs: Any) -> int:
        if self.failures:
            self.failures -= 1
            raise StoreError("the store is down (a test)")
        return super().save(*args, **kwargs)


def test_a_reply_is_acked_only_after_its_transition_is_committed(topology: Topology) -> None:
    order = procflow.load(ORDER)
    store = FailingSaves()
    link = BrokerLink(AMQP, topology, consume_replies=True)
    orchestrator = Orchestrator(order, store=store, transport=AmqpTransport(link), clock=lambda: T0, auto_dispatch=False)
    orchestrator.start("wf_ack", {"orderId": "ord_ack", "amount": 1.0})
    orchestrator.pump()
    reply = {"type": "inventory_reserved", "correlationId": "ord_ack", "messageId": "m-ack"}
    publish(topology.reply_queue("workflow-replies"), json.dumps(reply).encode())
    store.failures = 1
    with pytest.raises(StoreError):
        for _ in range(100):
            receive_replies(orchestrator, link, ReplyCounts(), wait=0.1)
    assert orchestrator.state("wf_ack").status == "waiting_for_inventory"
    link.drop()  # as the worker would, after the store's trouble
    # Not acked, so not lost: the broker gives it again, and now it applies.
    counts = ReplyCounts()
    _wait_for(link, orchestrator, counts, 1)
    assert counts == ReplyCounts(applied=1, duplicates=0, dead=0)
    assert orchestrator.state("wf_ack").status == "waiting_for_payment"
    link.close()


def test_a_topology_that_clashes_with_the_broker_s_is_refused_with_the_broker_s_reason(topology: Topology) -> None:
    connection = connect()
    connection.channel().exchange_declare(topology.commands_exchange, exchange_type="direct", durable=True)
    connection.close()
    link = BrokerLink(AMQP, topology)
    with pytest.raises(procflow.ProcflowError, match="inequivalent arg 'type' for exchange") as refused:
        link.connect()
    assert "PRECONDITION_FAILED" in str(refused.value)
    assert not link.connected  # not left half set up: the next attempt starts from scratch


NOTIFYING = textwrap.dedent("""
    process notify-check {
      correlate by input.orderId
      reply to "notify-replies"
      input { orderId: string }
      participant notify "Notifications"
      participant payment "Payment"
      emit notify.order_received { orderId: input.orderId }
      step authorize {
        send payment.authorize { orderId: input.orderId }
        await payment_authorized within 1h
        nothing to undo "the test ends here"
      }
    }
""")


def test_a_notification_on_the_wire_has_no_reply_to_and_is_not_answered(topology: Topology) -> None:
    definition = procflow.load_text(NOTIFYING, "notify.proc")
    link = BrokerLink(AMQP, topology)
    orchestrator = Orchestrator(definition, store=InMemoryStore(), transport=AmqpTransport(link), clock=lambda: T0, auto_dispatch=False)
    orchestrator.start("wf_n", {"orderId": "ord_n"})
    orchestrator.pump()
    link.close()
    [(properties, body)] = drain(topology.participant_queue("notify"))
    assert json.loads(body) == {
        "commandName": "notify.order_received", "workflowId": "wf_n", "correlationId": "ord_n", "data": {"orderId": "ord_n"},
    }
    assert properties.reply_to is None and properties.correlation_id == "ord_n"
    assert properties.message_id == "ord_n:notify.order_received:emit:emit_1#1"
    assert properties.type == "notify.order_received"
    assert len(drain(topology.participant_queue("payment"))) == 1  # and the process went on to its step
    assert orchestrator.store.outbox() == []


def test_a_participant_server_takes_a_notification_and_answers_nothing(topology: Topology) -> None:
    definition = procflow.load_text(NOTIFYING, "notify.proc")
    received: list[Any] = []

    def answer_everything(command: procflow.Command) -> dict[str, Any]:
        return {"type": "payment_authorized"}

    server = ParticipantServer(BrokerLink(AMQP, topology), {"notify": answer_everything, "payment": answer_everything}, received.append)
    server.start()
    link = BrokerLink(AMQP, topology)
    orchestrator = Orchestrator(definition, store=InMemoryStore(), transport=AmqpTransport(link), clock=lambda: T0, auto_dispatch=False)
    orchestrator.start("wf_told", {"orderId": "ord_told"})
    orchestrator.pump()
    for _ in range(50):
        server.link.wait(0.05)
        if len(received) == 2:
            break
    assert sorted(r.command.commandName for r in received) == ["notify.order_received", "payment.authorize"]
    server.link.close()
    link.close()
    # One answer, the payment's: the notification was taken (acked) and neither answered nor dead-lettered.
    assert [json.loads(body)["type"] for _, body in drain(topology.reply_queue("notify-replies"))] == ["payment_authorized"]
    assert drain(topology.dead_letters) == [] and drain(topology.participant_queue("notify")) == []
