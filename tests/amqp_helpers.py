"""What the RabbitMQ tests share: the broker's URL, a prefix of their own, reading a queue.

RabbitMQ must answer at `$PROCFLOW_TEST_AMQP` (default amqp://guest:guest@127.0.0.1:5672/,
which `.ci/run` starts when it is down). When it does not, the tests that need it fail with
that reason: they are never skipped. Each test names its exchange and queues under a prefix
of its own and deletes them afterwards, so tests never see each other's messages.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pika.exceptions
import pytest

from procflow.interpreter.amqp_topology import Topology

AMQP = os.environ.get("PROCFLOW_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")


def connect() -> pika.BlockingConnection:
    """A connection to the test broker (the test fails, saying why, without one)."""
    try:
        return pika.BlockingConnection(pika.URLParameters(AMQP))
    except pika.exceptions.AMQPError as error:
        pytest.fail(f"RabbitMQ does not answer at {AMQP} ({error!r}); start it (`rabbitmq-server -detached`, `.ci/run` does) and run again")


PARTICIPANTS = ("inventory", "payment", "shipping")
REPLY_CHANNELS = ("workflow-replies", "poison-replies")


def fresh_topology() -> Iterator[Topology]:
    """A prefix no other test uses; its queues (those of the order process and of the poison
    test's process: deleting a queue that is not there is no error) and its exchange are
    deleted afterwards."""
    topology = Topology(f"pf-test-{uuid.uuid4().hex[:10]}")
    connect().close()
    yield topology
    connection = connect()
    channel = connection.channel()
    names = [topology.dead_letters, *map(topology.participant_queue, PARTICIPANTS), *map(topology.reply_queue, REPLY_CHANNELS)]
    for name in names:
        channel.queue_delete(name)
    channel.exchange_delete(topology.commands_exchange)
    connection.close()


def ensure_broker_running() -> None:
    """Start the broker's application when a test stopped it (idempotent)."""
    subprocess.run(["rabbitmqctl", "start_app"], capture_output=True, check=False, timeout=120)


def publish(queue: str, body: bytes, **properties: Any) -> None:
    """Put one message on a queue, as a participant would (default exchange)."""
    connection = connect()
    channel = connection.channel()
    channel.confirm_delivery()
    channel.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2, **properties), mandatory=True)
    connection.close()


def drain(queue: str) -> list[tuple[pika.BasicProperties, bytes]]:
    """Take every message waiting on a queue (acked: they are gone afterwards)."""
    connection = connect()
    channel = connection.channel()
    found = []
    while True:
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            break
        found.append((properties, body))
    connection.close()
    return found
