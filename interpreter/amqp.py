"""Commands and replies over RabbitMQ (AMQP 0-9-1, through pika's blocking connection).

The topology, every name under one prefix (default `procflow`), declared idempotently by
whoever needs it first (a worker declares all of it; a participant its own queue)::

    exchange  <prefix>.commands                 topic, durable: every command, routing key `participant.command`
    queue     <prefix>.commands.<participant>   durable, bound with `<participant>.*`: one participant's commands
    queue     <prefix>.replies.<replyTo>        durable: a process's `reply to` channel (the AMQP `reply_to`)
    queue     <prefix>.dead-letters             durable: replies (and commands) that can never apply,
                                                 each with the reason in the header `x-procflow-reason`

A command is published persistent (delivery mode 2), `mandatory`, on a channel in confirm
mode: `send` returns only when the broker confirmed it, so the orchestrator marks the outbox
row sent only then. Its body is the command's five fields as JSON; its properties carry
`message_id` (the dedup key), `correlation_id`, `reply_to` (the reply queue), `content_type`
and `type` (the commandName). A notification (`emit`) is published the same way, without
`replyTo` in its body or `reply_to` in its properties: nobody answers it. A reply is consumed with manual acknowledgement and acked only
after its transition (or the duplicate no-op) was committed; one that can never apply goes to
the dead-letter queue with its reason, and is acked there only after that publish was
confirmed. A reply that names no `messageId` in its body takes its AMQP `message_id`.

A broken connection is a `TransportError`: the worker drops it, waits (`Backoff`), connects
again and goes on; the outbox keeps what was not confirmed and the reply queues keep what was
not acked, so nothing is lost, and the inbox makes a reply delivered again a no-op.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from procflow.errors import (
    ConcurrencyError,
    DamagedRecord,
    MessageRefused,
    ProcflowError,
    StoreError,
    StoreUnavailable,
    TransportError,
)
from procflow.interpreter import engine
from procflow.interpreter.amqp_topology import QUEUE_HEADER, REASON_HEADER, Topology
from procflow.interpreter.messages import Dispatch, Reply
from procflow.interpreter.orchestrator import Backoff, Orchestrator, WorkerRound
from procflow.interpreter.stores import redact
from procflow.limits import MESSAGE_BYTES
from procflow.strict_json import loads

PREFETCH = 200
"""Replies a worker holds unacknowledged at once (it works them, then acks each)."""

_BROKER_TROUBLE = (pika.exceptions.AMQPError, OSError)


@dataclass(slots=True)
class Delivery:
    """One message taken from a queue, not yet acknowledged."""

    queue: str
    tag: int
    properties: pika.BasicProperties
    body: bytes


@contextmanager
def broker_trouble(what: str) -> Iterator[None]:
    """Turn pika's and the socket's exceptions into a TransportError that says what failed."""
    try:
        yield
    except pika.exceptions.UnroutableError:
        raise TransportError(f"{what}: the broker could route it to no queue") from None
    except pika.exceptions.NackError:
        raise TransportError(f"{what}: the broker refused it (nack)") from None
    except pika.exceptions.ProbableAuthenticationError:
        raise TransportError(f"{what}: the broker refused the user name or password") from None
    except pika.exceptions.ProbableAccessDeniedError:
        raise TransportError(f"{what}: the user may not use this virtual host (rabbitmqctl set_permissions)") from None
    except pika.exceptions.AMQPConnectionError as error:
        detail = f" ({error})" if str(error) else ""
        raise TransportError(
            f"{what}: no answer{detail}; is RabbitMQ running there? (`rabbitmqctl status` says; `rabbitmq-server -detached` starts it)"
        ) from None
    except pika.exceptions.ChannelClosedByBroker as closed:
        raise TransportError(f"{what}: the broker closed the channel ({closed.reply_code} {closed.reply_text})") from None
    except _BROKER_TROUBLE as error:
        raise TransportError(f"{what}: {type(error).__name__} {error}".rstrip()) from None


class BrokerLink:
    """One connection to the broker with two channels: one publishes in confirm mode, one
    consumes. Connects on first use and after `drop`; what it declared is declared again on
    the next connection (declaring is idempotent)."""

    def __init__(self, url: str, topology: Topology | None = None, *, consume_replies: bool = False) -> None:
        if not url.startswith(("amqp://", "amqps://")):
            raise TransportError(f"not an AMQP URL: `{redact(url)}`; give amqp://user:password@host:5672/vhost")
        try:
            self.parameters = pika.URLParameters(url)
        except (ValueError, TypeError) as error:
            raise TransportError(f"the AMQP URL `{redact(url)}` cannot be read: {error}") from None
        self.parameters.connection_attempts = 1
        self.parameters.socket_timeout = 5
        self.parameters.blocked_connection_timeout = 30
        self.location = redact(url)
        self.topology = topology or Topology()
        self.consume_replies = consume_replies
        self.reply_queues: set[str] = set()
        """Reply queues this link consumes (kept across connections)."""
        self.pending: deque[Delivery] = deque()
        """Replies received and not yet handled (delivery tags of the current connection)."""
        self._connection: pika.BlockingConnection | None = None
        self._publisher: BlockingChannel | None = None
        self._consumer: BlockingChannel | None = None
        self._declared: set[str] = set()

    # ---- the connection
    @property
    def connected(self) -> bool:
        """True while the connection is open."""
        return self._connection is not None and self._connection.is_open

    def connect(self) -> None:
        """Open the connection and declare the base topology (no-op when open)."""
        if self.connected:
            return
        self.drop()
        try:
            with broker_trouble(f"cannot connect to the broker at {self.location}"):
                connection = pika.BlockingConnection(self.parameters)
                self._connection = connection
                self._publisher = connection.channel()
                self._publisher.confirm_delivery()
                self._publisher.exchange_declare(self.topology.commands_exchange, exchange_type="topic", durable=True)
                self._publisher.queue_declare(self.topology.dead_letters, durable=True)
                if self.consume_replies:
                    self._consumer = connection.channel()
                    self._consumer.basic_qos(prefetch_count=PREFETCH)
            for reply_to in sorted(self.reply_queues):
                self._declare_replies(reply_to)
        except TransportError:
            self.drop()  # half set up (a declaration refused): connect from scratch next time
            raise

    def drop(self) -> None:
        """Forget the connection (closing it if it still answers); unacked messages go back to
        their queues on the broker, so the ones held here are forgotten too."""
        connection, self._connection = self._connection, None
        self._publisher = self._consumer = None
        self._declared.clear()
        self.pending.clear()
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except _BROKER_TROUBLE:
                pass  # it broke while closing: it is gone either way

    def close(self) -> None:
        """Close the connection."""
        self.drop()

    def consume_channel(self) -> BlockingChannel:
        """The channel that consumes (made on first use, with a prefetch of `PREFETCH`)."""
        self.connect()
        if self._consumer is None:
            assert self._connection is not None
            with broker_trouble("cannot open a channel"):
                self._consumer = self._connection.channel()
                self._consumer.basic_qos(prefetch_count=PREFETCH)
        return self._consumer

    def _channel(self) -> BlockingChannel:
        self.connect()
        assert self._publisher is not None
        return self._publisher

    # ---- the topology
    def declare_participant(self, participant: str) -> str:
        """Declare a participant's command queue, bound to the exchange; returns its name."""
        queue = self.topology.participant_queue(participant)
        if queue not in self._declared:
            channel = self._channel()
            with broker_trouble(f"cannot declare the queue {queue}"):
                channel.queue_declare(queue, durable=True)
                channel.queue_bind(queue, self.topology.commands_exchange, routing_key=f"{participant}.*")
            self._declared.add(queue)
        return queue

    def declare_replies(self, reply_to: str) -> str:
        """Declare a process's reply queue (and consume it when this link consumes replies)."""
        self.reply_queues.add(reply_to)
        return self._declare_replies(reply_to)

    def _declare_replies(self, reply_to: str) -> str:
        queue = self.topology.reply_queue(reply_to)
        if queue not in self._declared:
            channel = self._channel()
            with broker_trouble(f"cannot declare the queue {queue}"):
                channel.queue_declare(queue, durable=True)
                if self._consumer is not None:
                    self._consumer.basic_consume(queue, self._on_reply, auto_ack=False)
            self._declared.add(queue)
        return queue

    def _on_reply(self, channel: BlockingChannel, method: Any, properties: pika.BasicProperties, body: bytes) -> None:
        self.pending.append(Delivery(method.routing_key, method.delivery_tag, properties, body))

    # ---- moving messages
    def publish(self, exchange: str, routing_key: str, body: bytes, properties: pika.BasicProperties, what: str) -> None:
        """Publish persistent and mandatory; returns when the broker confirmed (else TransportError)."""
        channel = self._channel()
        with broker_trouble(what):
            channel.basic_publish(exchange, routing_key, body, properties, mandatory=True)

    def wait(self, seconds: float) -> None:
        """Let the connection work (heartbeats, deliveries) for up to `seconds`; returns early
        when a delivery arrived."""
        self.connect()
        assert self._connection is not None
        with broker_trouble("the connection to the broker broke"):
            self._connection.process_data_events(time_limit=seconds)

    def ack(self, delivery: Delivery) -> None:
        """Acknowledge a reply: the broker forgets it."""
        assert self._consumer is not None
        with broker_trouble("cannot acknowledge a reply"):
            self._consumer.basic_ack(delivery.tag)

    def requeue(self, delivery: Delivery) -> None:
        """Give a reply back to its queue (it could not be worked now; it will be later)."""
        assert self._consumer is not None
        with broker_trouble("cannot give a reply back"):
            self._consumer.basic_nack(delivery.tag, requeue=True)

    def dead_letter(self, body: bytes, properties: pika.BasicProperties, queue: str, reason: str) -> None:
        """Publish a message to the dead-letter queue with the reason it can never apply."""
        headers = dict(properties.headers or {})
        headers[REASON_HEADER] = reason
        headers[QUEUE_HEADER] = queue
        copy = pika.BasicProperties(
            content_type=properties.content_type, correlation_id=properties.correlation_id,
            message_id=properties.message_id, reply_to=properties.reply_to, type=properties.type,
            delivery_mode=pika.DeliveryMode.Persistent, headers=headers,
        )
        self.publish("", self.topology.dead_letters, body, copy, f"cannot dead-letter a message from {queue}")


class AmqpTransport:
    """The orchestrator's transport over the broker: each command published with a confirm."""

    def __init__(self, link: BrokerLink) -> None:
        self.link = link

    def send(self, dispatch: Dispatch) -> None:
        """Publish one command; returns once the broker confirmed it (TransportError otherwise)."""
        command = dispatch.command
        participant = command.commandName.split(".", 1)[0]
        self.link.declare_participant(participant)
        # A notification (`emit`) has no `replyTo`: its body leaves the field out, and no reply queue is named.
        reply_queue = self.link.declare_replies(command.replyTo) if command.replyTo is not None else None
        body = json.dumps(command.wire(), separators=(",", ":")).encode()
        properties = pika.BasicProperties(
            content_type="application/json", delivery_mode=pika.DeliveryMode.Persistent,
            message_id=dispatch.dedupKey, correlation_id=command.correlationId, reply_to=reply_queue,
            type=command.commandName,
        )
        self.link.publish(
            self.link.topology.commands_exchange, command.commandName, body, properties,
            f"cannot publish {command.commandName} ({dispatch.dedupKey})",
        )


def reply_of(delivery: Delivery) -> Reply:
    """The reply a delivery holds (MessageRefused saying what is wrong with it). A body
    without `messageId` (or `correlationId`) takes the AMQP `message_id` (`correlation_id`)."""
    body = loads(delivery.body, what="the reply", limit=MESSAGE_BYTES, refuse=MessageRefused)
    if not isinstance(body, dict):
        raise MessageRefused(f"a reply is a JSON object, not {type(body).__name__}")
    if body.get("messageId") is None and delivery.properties.message_id:
        body["messageId"] = delivery.properties.message_id
    if body.get("correlationId") is None and delivery.properties.correlation_id:
        body["correlationId"] = delivery.properties.correlation_id
    return engine.validate_reply(body)


@dataclass(slots=True)
class ReplyCounts:
    """What a worker did with the replies it consumed."""

    applied: int = 0
    duplicates: int = 0
    dead: int = 0


def handle_reply(orchestrator: Orchestrator, link: BrokerLink, delivery: Delivery, counts: ReplyCounts) -> None:
    """Apply one reply, then ack it. A reply that can never apply (malformed, unknown
    instance, against its contract, its instance's record damaged) is dead-lettered with the
    reason, then acked. A store that is busy or down gets it back in its queue."""
    try:
        transition = orchestrator.receive(reply_of(delivery))
    except (ConcurrencyError, StoreError) as busy:
        if not isinstance(busy, DamagedRecord):
            link.requeue(delivery)
            if isinstance(busy, ConcurrencyError):
                return
            raise
        link.dead_letter(delivery.body, delivery.properties, delivery.queue, str(busy))
        counts.dead += 1
    except ProcflowError as refused:  # MessageRefused, or a definition nobody can run
        link.dead_letter(delivery.body, delivery.properties, delivery.queue, str(refused))
        counts.dead += 1
    else:
        if transition.outcome == "duplicate":
            counts.duplicates += 1
        else:
            counts.applied += 1
    link.ack(delivery)


def receive_replies(orchestrator: Orchestrator, link: BrokerLink, counts: ReplyCounts, wait: float = 0.0) -> int:
    """Work the replies that arrived (waiting up to `wait` seconds for the first); returns how many."""
    link.wait(wait)
    handled = 0
    while link.pending:
        handle_reply(orchestrator, link, link.pending.popleft(), counts)
        handled += 1
    return handled


def amqp_worker(
    orchestrator: Orchestrator,
    link: BrokerLink,
    *,
    once: bool = False,
    interval: float = 1.0,
    report: Callable[[WorkerRound], None] | None = None,
    trouble: Callable[[ProcflowError, float], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    stop: Callable[[], bool] = lambda: False,
    counts: ReplyCounts | None = None,
) -> int:
    """`procflow worker --transport amqp://...`: send the outbox (each command confirmed before
    it is marked sent), work the replies, fire due timers; wait up to `interval` seconds for a
    reply when a round did nothing. When the broker goes away: drop the connection, call
    `trouble(error, delay)`, wait (doubling, at most 5 s), connect again and go on. The
    orchestrator should not dispatch by itself (`auto_dispatch=False`): the loop does. `stop`
    is asked after every round, and by the round before it claims each batch of commands or
    timers (`Orchestrator.pump`, `tick`). Returns the number of rounds."""
    counts = counts if counts is not None else ReplyCounts()
    backoff = Backoff()
    rounds = 0
    while True:
        try:
            link.connect()
            moment: datetime = orchestrator.clock()
            handled = orchestrator.pump(stop=stop)
            handled += receive_replies(orchestrator, link, counts)
            fired = [state.workflowId for state in orchestrator.tick(moment, stop)]
            handled += orchestrator.pump(stop=stop)
            if not handled and not fired and not once:
                handled += receive_replies(orchestrator, link, counts, wait=interval)
        except (TransportError, StoreUnavailable) as error:
            if isinstance(error, TransportError):
                link.drop()
            if once:
                raise
            if stop():
                return rounds
            delay = backoff.next()
            if trouble is not None:
                trouble(error, delay)
            sleep(delay)
            continue
        backoff.reset()
        rounds += 1
        if report is not None and (handled or fired):
            report(WorkerRound(moment, handled, fired))
        if once or stop():
            return rounds
