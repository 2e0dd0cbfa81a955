"""The participant side of the AMQP transport: services that take commands and answer them.

`serve` runs participants as their own process: it consumes each participant's command queue
(`<prefix>.commands.<participant>`, declared and bound here too), calls the participant's
function with the `Command`, publishes its answer on the command's `reply_to` (persistent,
confirmed) and only then acks the command. The dedup key (the command's AMQP `message_id`)
is honoured: a command delivered again gets the answer it got the first time, and the
function is not called again (the answers are kept in memory, for as long as the process
runs; a real service keeps them with its own data).

`DemoParticipants` are the sample participants of `procflow participant demo`: they answer
every command with its step's first success reply, except that `refuse` names commands that
are refused (the step's first failure reply) for one order in N, chosen by its correlation
id, so a run is the same every time.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel

from procflow.dsl import model as m
from procflow.errors import MessageRefused, TransportError
from procflow.interpreter import engine
from procflow.interpreter.amqp import BrokerLink, broker_trouble
from procflow.interpreter.messages import Command, Reply
from procflow.interpreter.orchestrator import Backoff, Participant, first_replies
from procflow.limits import MESSAGE_BYTES
from procflow.strict_json import loads

REMEMBERED = 100_000
"""Answers a serving process keeps by dedup key (the oldest are forgotten first)."""


@dataclass(frozen=True, slots=True)
class Received:
    """One command as a participant process took it: what `serve` reports for each."""

    dedup_key: str
    command: Command
    again: bool
    """True when the dedup key was seen before: the first answer was sent again."""


def command_of(body: bytes) -> Command:
    """The command a message holds (MessageRefused saying what is wrong with it)."""
    data = loads(body, what="the command", limit=MESSAGE_BYTES, refuse=MessageRefused)
    try:
        return Command.model_validate(data)
    except ValueError as error:
        raise MessageRefused(f"not a valid command: {error}".splitlines()[0]) from None


def answer_of(command: Command, answer: Reply | Mapping[str, Any], message_id: str) -> Reply:
    """The reply a participant's answer means: its correlation id, workflow id and a message
    id (`message_id` unless the answer names one) filled in from the command."""
    body = answer.model_dump(mode="json") if isinstance(answer, Reply) else dict(answer)
    body.setdefault("correlationId", command.correlationId)
    body.setdefault("workflowId", command.workflowId)
    if body.get("messageId") is None:
        body["messageId"] = message_id
    return engine.validate_reply(body)


@dataclass(slots=True)
class ParticipantServer:
    """Serves participant functions on one broker link (see the module doc)."""

    link: BrokerLink
    participants: Mapping[str, Participant]
    on_command: Callable[[Received], None] | None = None
    answers: OrderedDict[str, bytes | None] = field(default_factory=OrderedDict)

    def start(self) -> None:
        """Connect, declare each participant's queue and consume it."""
        self.link.connect()
        channel = self.link.consume_channel()
        for name in sorted(self.participants):
            queue = self.link.declare_participant(name)
            with broker_trouble(f"cannot consume {queue}"):
                channel.basic_consume(queue, self._on_command, auto_ack=False)

    def _on_command(self, channel: BlockingChannel, method: Any, properties: pika.BasicProperties, body: bytes) -> None:
        queue = method.routing_key
        try:
            command = command_of(body)
            dedup_key = properties.message_id or f"{command.correlationId}:{command.commandName}"
            again = dedup_key in self.answers
            if not again:
                self.answers[dedup_key] = self._answer(command, dedup_key)
                while len(self.answers) > REMEMBERED:
                    self.answers.popitem(last=False)
            if self.on_command is not None:
                self.on_command(Received(dedup_key, command, again))
            reply = self.answers[dedup_key]
            if reply is not None and command.replyTo is not None:  # a notification (`emit`) is never answered
                if not properties.reply_to:
                    raise MessageRefused("the command names no reply_to to answer on")
                reply_properties = pika.BasicProperties(
                    content_type="application/json", delivery_mode=pika.DeliveryMode.Persistent,
                    correlation_id=properties.correlation_id or command.correlationId,
                    message_id=json.loads(reply)["messageId"],
                )
                self.link.publish("", properties.reply_to, reply, reply_properties, f"cannot answer {command.commandName}")
        except MessageRefused as refused:
            self.link.dead_letter(body, properties, queue, str(refused))
        with broker_trouble("cannot acknowledge a command"):
            channel.basic_ack(method.delivery_tag)

    def _answer(self, command: Command, dedup_key: str) -> bytes | None:
        handler = self.participants[command.commandName.split(".", 1)[0]]
        answer = handler(command)
        if answer is None:
            return None
        if not isinstance(answer, Reply | Mapping):
            raise MessageRefused("a participant over AMQP answers with one reply (or None), not several")
        participant = command.commandName.split(".", 1)[0]
        reply = answer_of(command, answer, f"{participant}:{dedup_key}")
        return json.dumps(reply.model_dump(mode="json"), separators=(",", ":")).encode()


def serve(
    link: BrokerLink,
    participants: Mapping[str, Participant],
    *,
    on_command: Callable[[Received], None] | None = None,
    trouble: Callable[[TransportError, float], None] | None = None,
    stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Serve the participants until `stop()` says so (asked about once a second). When the
    broker goes away: drop the connection, call `trouble(error, delay)`, wait (doubling, at
    most 5 s), connect again and go on; commands not acked come back from the broker."""
    server = ParticipantServer(link, participants, on_command)
    backoff = Backoff()
    while not stop():
        try:
            if not link.connected:
                server.start()
                backoff.reset()
            link.wait(1.0)
        except TransportError as error:
            link.drop()
            delay = backoff.next()
            if trouble is not None:
                trouble(error, delay)
            sleep(delay)


def _picks(correlation_id: str, every: int) -> bool:
    """One correlation id in `every`, the same each run (not Python's salted hash)."""
    return int.from_bytes(hashlib.sha256(correlation_id.encode()).digest()[:8], "big") % every == 0


class DemoParticipants:
    """The sample participants: each command gets its step's first success reply (an undo its
    first confirmation); a command in `refuse` gets its step's first failure reply for one
    order in `every` (chosen by correlation id). Message ids are `<participant>:<dedup key>`,
as `serve` makes them."""

    def __init__(self, definitions: Iterable[m.ProcessDefinition], refuse: Iterable[str] = (), every: int = 5) -> None:
        self.successes, self.failures = first_replies(definitions)
        self.refuse = set(refuse)
        unknown = sorted(name for name in self.refuse if name not in self.failures)
        if unknown:
            raise MessageRefused(
                f"cannot refuse {', '.join(unknown)}: no step of these processes has a failure reply for it; "
                f"those that do: {', '.join(sorted(self.failures)) or 'none'}"
            )
        if every < 1:
            raise MessageRefused(f"refuse one order in N needs N >= 1, not {every}")
        self.every = every

    @property
    def names(self) -> list[str]:
        """The participants these answers speak for."""
        return sorted({name.split(".", 1)[0] for name in self.successes})

    def reply_type(self, command: Command) -> str | None:
        """The type of the reply to a command (None: no answer)."""
        name = command.commandName
        if name in self.refuse and _picks(command.correlationId, self.every):
            return self.failures[name]
        return self.successes.get(name)

    def answer(self, command: Command, dedup_key: str) -> Reply | None:
        """The reply a command gets, with the message id `serve` gives it."""
        kind = self.reply_type(command)
        if kind is None:
            return None
        participant = command.commandName.split(".", 1)[0]
        return Reply(
            type=kind, correlationId=command.correlationId, workflowId=command.workflowId,
            messageId=f"{participant}:{dedup_key}",
        )

    def participants(self) -> dict[str, Participant]:
        """Participant functions for `serve` (its dedup key makes the message id)."""

        def participant(command: Command) -> Reply | None:
            kind = self.reply_type(command)
            if kind is None:
                return None
            return Reply(type=kind, correlationId=command.correlationId, workflowId=command.workflowId)

        return dict.fromkeys(self.names, participant)
