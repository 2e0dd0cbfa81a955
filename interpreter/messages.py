"""What crosses the wire: commands the orchestrator sends, replies and events it receives.

Field names are the lesson's contract (`commandName`, `workflowId`, `correlationId`,
`replyTo`, `data`). Each record publishes a JSON Schema (`procflow schema command|reply`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import ConfigDict, Field, with_config

from procflow.interpreter.records import Record


@with_config(ConfigDict(extra="forbid", title="procflow command"))
@dataclass(slots=True)  # (positional too: the engine builds one in order, a third of the cost of keywords)
class Command(Record):
    """A command sent to a participant; the participant answers on `replyTo`, quoting `correlationId`.
    A notification (`emit`) is sent the same way, with no `replyTo`: nobody answers it."""

    commandName: Annotated[str, Field(description="`participant.command`, e.g. `payment.authorize`")]
    workflowId: Annotated[str, Field(description="the instance that sent it")]
    correlationId: Annotated[str, Field(description="the process's business key (e.g. the order id); quote it in the reply")]
    replyTo: Annotated[str | None, Field(description="the channel the reply goes to; absent for a notification (`emit`), which nobody answers")] = None
    data: Annotated[dict[str, Any], Field(description="the command's payload")] = field(default_factory=dict)

    def wire(self) -> dict[str, Any]:
        """The command as its message body carries it: the lesson's five fields, or four for a
        notification, which leaves out the `replyTo` it does not have."""
        body = self.model_dump(mode="json")
        if self.replyTo is None:
            del body["replyTo"]
        return body


@with_config(ConfigDict(extra="forbid", title="procflow dispatch"))
@dataclass(slots=True)  # (positional too: the engine builds one in order, a third of the cost of keywords)
class Dispatch(Record):
    """A command with what a transport needs to deliver it at least once without harm."""

    command: Command
    step: Annotated[str, Field(description="the step (or `undo:<step>` for a compensation) that sent it")]
    attempt: Annotated[int, Field(description="1 for the first send, 2 for the first retry, ...")]
    dedupKey: Annotated[
        str,
        Field(description="stable per step attempt: `correlationId:commandName:step#attempt` (`step@2#1` in a `repeat`'s 2nd round)"),
    ]


@with_config(ConfigDict(extra="forbid", title="procflow reply or event"))
@dataclass(slots=True, kw_only=True)
class Reply(Record):
    """A reply to a command, or an event, addressed to an instance by `correlationId`."""

    type: Annotated[str, Field(description="the reply or event name, e.g. `payment_authorized`")]
    correlationId: Annotated[str, Field(description="the business key the command carried")]
    workflowId: Annotated[str | None, Field(description="the instance, when the sender knows it")] = None
    messageId: Annotated[str | None, Field(description="unique per message; a repeated id is a duplicate")] = None
    data: Annotated[dict[str, Any], Field(description="the payload")] = field(default_factory=dict)
