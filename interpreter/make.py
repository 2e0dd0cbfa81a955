"""Record constructors for the engine's hot path.

A slotted dataclass built through its generated keyword-only `__init__` costs about three
times what storing its fields costs (matching the keywords, the default sentinels). The
records a transition builds every time are therefore made here, field by field (the hottest
sites, the command and dispatch of a step, its wait and the history entry, build theirs in
place the same way). They are the same objects (pydantic validates, dumps and describes them
as usual); a test checks that every function here sets every field of its record.
"""

from __future__ import annotations

from typing import Any

from procflow.interpreter.messages import Command, Dispatch
from procflow.interpreter.state import (
    Completion,
    Frame,
    Token,
    UndoCommand,
    Wait,
    WaitKind,
)

_new = object.__new__


def wait(
    token: int,
    step: str,
    node: str,
    frame: str,
    kind: WaitKind,
    expects: tuple[str, ...],
    correlation_id: str,
    command_name: str | None,
    attempt: int,
    since: str,
    timeout_at: str | None,
) -> Wait:
    """A `Wait`."""
    made: Wait = _new(Wait)
    made.token = token
    made.step = step
    made.node = node
    made.frame = frame
    made.kind = kind
    made.expects = expects
    made.correlationId = correlation_id
    made.commandName = command_name
    made.attempt = attempt
    made.since = since
    made.timeoutAt = timeout_at
    return made


def token(token_id: int, node: str, frame: str, loops: dict[str, int], forks: tuple[str, ...]) -> Token:
    """A `Token`."""
    made: Token = _new(Token)
    made.id = token_id
    made.node = node
    made.frame = frame
    made.loops = loops
    made.forks = forks
    return made


def frame(process: str, input: dict[str, Any], data: dict[str, Any], correlation_id: str, parent: str | None, call: str | None) -> Frame:
    """A `Frame`."""
    made: Frame = _new(Frame)
    made.process = process
    made.input = input
    made.data = data
    made.correlationId = correlation_id
    made.parent = parent
    made.call = call
    return made


def completion(step: str, frame: str, outcome: str, at: str, undo: UndoCommand | None) -> Completion:
    """A `Completion`."""
    made: Completion = _new(Completion)
    made.step = step
    made.frame = frame
    made.outcome = outcome
    made.at = at
    made.undo = undo
    return made


def undo_command(step: str, frame: str, process: str, command_name: str, correlation_id: str, data: dict[str, Any], round: str) -> UndoCommand:
    """An `UndoCommand`."""
    made: UndoCommand = _new(UndoCommand)
    made.step = step
    made.frame = frame
    made.process = process
    made.commandName = command_name
    made.correlationId = correlation_id
    made.data = data
    made.round = round
    return made


def command(command_name: str, workflow_id: str, correlation_id: str, reply_to: str, data: dict[str, Any]) -> Command:
    """A `Command`."""
    made: Command = _new(Command)
    made.commandName = command_name
    made.workflowId = workflow_id
    made.correlationId = correlation_id
    made.replyTo = reply_to
    made.data = data
    return made


def dispatch(command: Command, step: str, attempt: int, dedup_key: str) -> Dispatch:
    """A `Dispatch`."""
    made: Dispatch = _new(Dispatch)
    made.command = command
    made.step = step
    made.attempt = attempt
    made.dedupKey = dedup_key
    return made
