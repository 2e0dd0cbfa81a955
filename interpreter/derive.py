"""The visible record of a transition: the lesson's fields derived from the detailed state
(status, nextAction, timeoutAt) and the history entry that says what the transition did."""

from __future__ import annotations

from typing import Any

from procflow.dsl import model as m
from procflow.interpreter.messages import Dispatch, Reply
from procflow.interpreter.plan import Plan, sent_texts
from procflow.interpreter.state import (
    ROOT,
    TERMINAL,
    HistoryEntry,
    InstanceState,
    Wait,
    instant_epoch,
)

_new = object.__new__


def status_part(plan: Plan, state: InstanceState, wait: Wait) -> str:
    """The status an instance shows while `wait` waits (`waiting_for_payment`, ...)."""
    root = wait.frame == ROOT
    if root:
        known = plan.root_status.get(wait.node)
        if known is not None:
            return known
        nodes = plan.definition.nodes
    else:
        nodes = plan.process(state.frames[wait.frame].process).nodes
    node = nodes[wait.node]
    if isinstance(node, m.StepNode):
        status = plan.step(node).status
    elif isinstance(node, m.RaceNode):
        status = plan.race_status(node)
    else:
        return f"waiting_for_{wait.step}"
    if root:
        plan.root_status[wait.node] = status
    return status


def derive(plan: Plan, state: InstanceState) -> None:
    """Fill the lesson's fields (status, nextAction, timeoutAt) from the detailed record."""
    waits = state.waits
    if state.status in TERMINAL and not waits:
        comp = state.compensation
        state.nextAction = f"undo_{comp.failed.step}" if state.status == "compensation_failed" and comp and comp.failed else None
        state.timeoutAt = None
        return
    deadline: str | None = None
    if state.status == "compensating":
        current = next((w for w in waits if w.kind.startswith("compensation")), None)
        state.nextAction = f"undo_{current.node}" if current else None
    elif len(waits) == 1:
        # The usual case, without the lists of the general one below (same result).
        wait = waits[0]
        state.status = status_part(plan, state, wait)
        state.nextAction = wait.step
        if state.deadlineAt is None:
            state.timeoutAt = wait.timeoutAt
            return
        deadline = state.deadlineAt
    else:
        parts: list[str] = []
        for wait in waits:
            part = status_part(plan, state, wait)
            if part not in parts:
                parts.append(part)
        if len(parts) == 1:
            state.status = parts[0]
        elif parts:
            state.status = "waiting_for_" + "_and_".join(p.removeprefix("waiting_for_") for p in parts)
        steps = list(dict.fromkeys(w.step for w in waits))
        state.nextAction = ", ".join(steps) if steps else None
        deadline = state.deadlineAt
    dues = [instant_epoch(w.timeoutAt) for w in waits if w.timeoutAt is not None]
    if deadline is not None:
        dues.append(instant_epoch(deadline))
    if dues:
        earliest = min(dues)
        state.timeoutAt = next((w.timeoutAt for w in waits if w.timeoutAt is not None and instant_epoch(w.timeoutAt) == earliest), None) or state.deadlineAt
    else:
        state.timeoutAt = None


def message_summary(message: Reply) -> dict[str, Any]:
    """What a history entry keeps of the message that came in."""
    out: dict[str, Any] = {"type": message.type, "correlationId": message.correlationId}
    if message.messageId:
        out["messageId"] = message.messageId
    if message.data:
        out["data"] = message.data
    return out


def history_entry(
    state: InstanceState, before: InstanceState, at: str, event: str, message: Reply | None, note: str | None, dispatches: list[Dispatch]
) -> HistoryEntry:
    """The entry of a transition from `before` to `state`: only what it changed."""
    status = state.status
    failure = state.failure
    comp = state.compensation
    undone: tuple[str, ...] = ()
    if comp is not None:
        done_before = len(before.compensation.undone) if before.compensation is not None else 0
        if len(comp.undone) > done_before:
            undone = tuple(u.commandName for u in comp.undone[done_before:])
    entry: HistoryEntry = _new(HistoryEntry)  # field by field, as in make.py (this is the hot path)
    entry.seq = len(state.history) + 1
    entry.at = at
    entry.event = event
    entry.message = message_summary(message) if message is not None else None
    entry.status = status if status != before.status else None
    entry.completedSteps = tuple(state.completedSteps[len(before.completedSteps) :])  # (a tuple already)
    entry.failure = failure.reason if failure is not None and before.failure is None else None
    entry.undone = undone
    entry.sent = sent_texts(dispatches)
    entry.note = note
    return entry
