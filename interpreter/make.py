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
    Abandoned,
    Completion,
    Failure,
    FailureCause,
    Frame,
    LateAction,
    LateReply,
    Stamp,
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
    since: Stamp,
    timeout_at: Stamp | None,
) -> Wait:
    """A `Wait` (its times as a record keeps them, see `state.keep_stamps`)."""
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
    made._since = since
    made._timeoutAt = timeout_at
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


def completion(step: str, frame: str, outcome: str, at: Stamp, undo: UndoCommand | None) -> Completion:
    """A `Completion` (`at` as a record keeps it, see `state.keep_stamps`)."""
    made: Completion = _new(Completion)
    made.step = step
    made.frame = frame
    made.outcome = outcome
    made._at = at
    made.undo = undo
    return made


def failure(cause: FailureCause, reason: str, step: str | None, at: Stamp) -> Failure:
    """A `Failure` (`at` as a record keeps it, see `state.keep_stamps`)."""
    made: Failure = _new(Failure)
    made.cause = cause
    made.reason = reason
    made.step = step
    made._at = at
    return made


def abandoned(
    step: str, frame: str, process: str, command_name: str, correlation_id: str, successes: tuple[str, ...], undo: UndoCommand | None, at: Stamp
) -> Abandoned:
    """An `Abandoned` (`at` as a record keeps it, see `state.keep_stamps`)."""
    made: Abandoned = _new(Abandoned)
    made.step = step
    made.frame = frame
    made.process = process
    made.commandName = command_name
    made.correlationId = correlation_id
    made.successes = successes
    made.undo = undo
    made._at = at
    return made


def late_reply(type: str, step: str, at: Stamp, action: LateAction) -> LateReply:
    """A `LateReply` (`at` as a record keeps it, see `state.keep_stamps`)."""
    made: LateReply = _new(LateReply)
    made.type = type
    made.step = step
    made._at = at
    made.action = action
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
