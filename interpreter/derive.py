"""The visible record of a transition: the lesson's fields derived from the detailed state
(status, nextAction, timeoutAt) and the history entry that says what the transition did."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from procflow.dsl import model as m
from procflow.interpreter.indexed import Part, first_due, next_action_of, status_of
from procflow.interpreter.messages import Dispatch, Reply
from procflow.interpreter.plan import Plan, sent_texts
from procflow.interpreter.state import (
    ROOT,
    TERMINAL,
    HistoryEntry,
    InstanceState,
    Wait,
    epoch_of,
)


def status_part(plan: Plan, wait: Wait, process: str | None) -> str:
    """The status an instance shows while `wait` waits (`waiting_for_payment`, ...); `process`
    is the process of the wait's frame (None for the main one)."""
    if process is None:
        known = plan.root_status.get(wait.node)
        if known is not None:
            return known
        process = plan.definition.name
        root = True
    else:
        known = plan.frame_status.get((process, wait.node))  # (a for-each's items wait in frames of their own)
        if known is not None:
            return known
        root = False
    node = plan.process(process).nodes[wait.node]
    if isinstance(node, m.JoinNode):  # the winner of `first of` waits while the losers are undone
        return f"cancelling_{node.name}"
    if isinstance(node, m.StepNode):
        status = plan.step(node).status
    elif isinstance(node, m.RaceNode):
        status = plan.race_status(node)
    else:
        return f"waiting_for_{wait.step}"
    if root:
        plan.root_status[wait.node] = status
    else:
        plan.frame_status[(process, wait.node)] = status
    return status


def stored_status_part(plan: Plan, state: InstanceState) -> Part:
    """`status_part` of the waits of `state` (their frames are the state's)."""
    frames = state.frames
    return lambda wait: status_part(plan, wait, None if wait.frame == ROOT else frames[wait.frame].process)


def derive(plan: Plan, state: InstanceState) -> None:
    """Fill the lesson's fields (status, nextAction, timeoutAt) from the detailed record."""
    waits = state.waits
    if not waits and state.status in TERMINAL:
        comp = state.compensation
        state.nextAction = f"undo_{comp.failed.step}" if state.status == "compensation_failed" and comp and comp.failed else None
        state.timeoutAt = None
        return
    if state.status == "compensating":
        # (several at once when a parallel block is undone in parallel)
        undoing = dict.fromkeys(f"undo_{w.node}" for w in waits if w.kind.startswith("compensation"))
        state.nextAction = ", ".join(undoing) or None
        state.timeoutAt = earliest_time(waits, None)
        return
    if len(waits) == 1:  # the usual case, and what the general one below gives for it
        wait = waits[0]
        state.status = status_part(plan, wait, None if wait.frame == ROOT else state.frames[wait.frame].process)
        state.nextAction = wait.step
        if state.deadlineAt is None:
            state.timeoutAt = wait.timeoutAt
            return
    elif waits:
        state.status = status_of(waits, stored_status_part(plan, state))
        state.nextAction = next_action_of(waits)
    else:
        state.nextAction = None
    state.timeoutAt = earliest_time(waits, state.deadlineAt)


def earliest_time(waits: Sequence[Wait], deadline: str | None) -> str | None:
    """The earliest of the waits' times and the deadline, as the text that names it (a wait's
    before the deadline's when they name the same instant)."""
    wait = first_due(waits)
    due = wait.due if wait is not None else None
    if wait is None or due is None:
        return deadline
    if deadline is None or due <= epoch_of(deadline):
        return wait.timeoutAt
    return deadline


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
    # The fields in the order of `HistoryEntry` (a keyword costs about 460 instructions more
    # than a place: 4.6k a transition; the engine tests read the entries field by field).
    return HistoryEntry(
        len(state.history) + 1,  # seq
        at,
        event,
        message_summary(message) if message is not None else None,  # message
        status if status != before.status else None,  # status
        tuple(state.completedSteps[len(before.completedSteps) :]),  # completedSteps
        failure.reason if failure is not None and before.failure is None else None,  # failure
        undone,
        sent_texts(dispatches),  # sent
        note,
    )
