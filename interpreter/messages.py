"""What crosses the wire: commands the orchestrator sends, replies and events it receives.

Field names are the lesson's contract (`commandName`, `workflowId`, `correlationId`,
`replyTo`, `data`). Each model publishes a JSON Schema (`procflow schema command|reply`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Command(BaseModel):
    """A command sent to a participant; the participant answers on `replyTo`, quoting `correlationId`."""

    model_config = ConfigDict(extra="forbid", title="procflow command")

    commandName: str = Field(description="`participant.command`, e.g. `payment.authorize`")
    workflowId: str = Field(description="the instance that sent it")
    correlationId: str = Field(description="the process's business key (e.g. the order id); quote it in the reply")
    replyTo: str = Field(description="the channel the reply goes to")
    data: dict[str, Any] = Field(default_factory=dict, description="the command's payload")


class Dispatch(BaseModel):
    """A command with what a transport needs to deliver it at least once without harm."""

    model_config = ConfigDict(extra="forbid")

    command: Command
    step: str = Field(description="the step (or `undo:<step>` for a compensation) that sent it")
    attempt: int = Field(description="1 for the first send, 2 for the first retry, ...")
    dedupKey: str = Field(description="stable per step attempt: `correlationId:commandName:step#attempt`")


class Reply(BaseModel):
    """A reply to a command, or an event, addressed to an instance by `correlationId`."""

    model_config = ConfigDict(extra="forbid", title="procflow reply or event")

    type: str = Field(description="the reply or event name, e.g. `payment_authorized`")
    correlationId: str = Field(description="the business key the command carried")
    workflowId: str | None = Field(default=None, description="the instance, when the sender knows it")
    messageId: str | None = Field(default=None, description="unique per message; a repeated id is a duplicate")
    data: dict[str, Any] = Field(default_factory=dict, description="the payload")
