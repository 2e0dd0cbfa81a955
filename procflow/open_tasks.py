"""The human tasks an instance waits on, as an operator reads them (`procflow inspect`, the
console's instance page): which task, who has it and until when.

A task reaches people as a command to the participant `task` (see dsl/tasks.py); the command
the instance last sent for a waiting task (its outbox entry) says who it went to (`assignee`
or `group`, as evaluated when it was sent) and its `due`; the wait says until when it waits.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from procflow.interpreter.state import InstanceState
from procflow.interpreter.stores import OutboxEntry

TASK_COMMAND_PREFIX = "task."


@dataclass(frozen=True, slots=True)
class OpenTask:
    """One task waiting for a person."""

    task: str  # the task's name (its step)
    who: str  # `group credit-officers`, `ana`, or `unknown` when the command is no longer in the outbox
    due: str  # ISO-8601, or `-` when it has none
    round: int  # 1 for the assignment, 2 after the first escalation, ...
    escalation: str | None  # `remind` or `reassign` once escalated

    @property
    def text(self) -> str:
        """`review: group credit-officers, due 2026-01-03T09:00:00Z (round 2, remind)`."""
        after = f" (round {self.round}" + (f", {self.escalation})" if self.escalation else ")") if self.round > 1 else ""
        return f"{self.task}: {self.who}, due {self.due}{after}"


def open_tasks(state: InstanceState, outbox: Iterable[OutboxEntry]) -> list[OpenTask]:
    """The tasks the instance waits on, each with whom its last sending went to and its due."""
    sent = {(e.dispatch.step, e.dispatch.attempt, e.dispatch.command.commandName): e.dispatch.command.data for e in outbox}
    found = []
    for wait in state.waits:
        if wait.kind != "reply" or not (wait.commandName or "").startswith(TASK_COMMAND_PREFIX):
            continue
        data = sent.get((wait.step, wait.attempt, wait.commandName or ""), {})
        who = "unknown"
        if isinstance(data.get("group"), str):
            who = f"group {data['group']}"
        elif isinstance(data.get("assignee"), str):
            who = data["assignee"]
        escalation = data.get("escalation")
        found.append(OpenTask(wait.step, who, wait.timeoutAt or "-", wait.attempt, escalation if isinstance(escalation, str) else None))
    return found
