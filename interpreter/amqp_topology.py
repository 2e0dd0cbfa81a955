"""The names of the AMQP topology (see `procflow.interpreter.amqp`), kept apart from pika:
the AsyncAPI document names them too, and writing it needs no broker client.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from procflow.errors import TransportError

DEFAULT_PREFIX = "procflow"
REASON_HEADER = "x-procflow-reason"
QUEUE_HEADER = "x-procflow-queue"
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,100}")


def check_prefix(prefix: str) -> str:
    """The prefix, or TransportError saying what a prefix may hold."""
    if not _NAME.fullmatch(prefix):
        raise TransportError(
            f"the AMQP prefix `{prefix}` is not a name: use 1 to 100 letters, digits and `_ . : -` (e.g. `procflow` or `orders-test`)"
        )
    return prefix


@dataclass(frozen=True, slots=True)
class Topology:
    """The names of the exchange and queues, all under one prefix (tests use their own)."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        check_prefix(self.prefix)

    @property
    def commands_exchange(self) -> str:
        """The topic exchange every command is published to."""
        return f"{self.prefix}.commands"

    @property
    def dead_letters(self) -> str:
        """The queue of messages that can never apply."""
        return f"{self.prefix}.dead-letters"

    def participant_queue(self, participant: str) -> str:
        """The queue a participant's commands wait in."""
        return f"{self.prefix}.commands.{participant}"

    def reply_queue(self, reply_to: str) -> str:
        """The queue behind a process's `reply to` channel."""
        return f"{self.prefix}.replies.{reply_to}"


