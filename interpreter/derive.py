"""The visible record of a transition: the lesson's fields derived from the detailed state
(status, nextAction, timeoutAt) and the history entry that says what the transition did."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from procflow.dsl import model as m
from procflow.interpreter.messages import Dispatch, Reply
from procflow.interpreter.plan import Plan, sent_texts
from procflow.interpreter.state import (
    ROOT,
    TERMINAL,
    HistoryEntry,
    InstanceState,
    Stamp,
    Wait,
    epoch_of,
    single,
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
    # The waits and times as the state keeps them (see `state.keep_single`, `state.keep_stamps`):
    # a single wait by itself, times copied as they are and compared as epochs.
    kept = state._waits
    deadline: Stamp | None = None
    if kept.__class__ is Wait and state.status != "compensating":
        # The usual case, without the lists of the general one below (same result).
        wait: Wait = kept
        state.status = status_part(plan, state, wait)
        state.nextAction = wait.step
        deadline = state._deadlineAt
        if deadline is None:
            state._timeoutAt = wait._timeoutAt
            return
        waits: Sequence[Wait] = (wait,)
    elif state.status in TERMINAL and not kept:
        comp = state.compensation
        state.nextAction = f"undo_{comp.failed.step}" if state.status == "compensation_failed" and comp and comp.failed else None
        state._timeoutAt = None
        return
    elif state.status == "compensating":
        waits = single(kept, Wait)
        current = next((w for w in waits if w.kind.startswith("compensation")), None)
        state.nextAction = f"undo_{current.node}" if current else None
    else:
        waits = single(kept, Wait)
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
        deadline = state._deadlineAt
    dues = [due for w in waits if (due := w.due) is not None]
    if deadline is not None:
        dues.append(epoch_of(deadline))
    if dues:
        earliest = min(dues)
        found = next((w._timeoutAt for w in waits if w.due == earliest), None)
        state._timeoutAt = found if found is not None else deadline
    else:
        state._timeoutAt = None


def message_summary(message: Reply) -> dict[str, Any]:
    """What a history entry keeps of the message that came in."""
    out: dict[str, Any] = {"type": message.type, "correlationId": message.correlationId}
    if message.messageId:
        out["messageId"] = message.messageId
    if message.data:
        out["data"] = message.data
    return out


def history_entry(
    state: InstanceState, before: InstanceState, at: Stamp, event: str, message: Reply | None, note: str | None, dispatches: list[Dispatch]
) -> HistoryEntry:
    """The entry of a transition from `before` to `state`: only what it changed (`at` as a
    record keeps it, see `state.keep_stamps`)."""
    status = state.status
    failure = state.failure
    comp = state.compensation
    undone: tuple[str, ...] = ()
    if comp is not None:
        done_before = len(before.compensation.undone) if before.compensation is not None else 0
        if len(comp.undone) > done_before:
            undone = tuple(u.commandName for u in comp.undone[done_before:])
    entry: HistoryEntry = _new(HistoryEntry)  # field by field, as in make.py (this is the hot path)
    history = state._history  # a single entry is kept as itself (see `state.keep_single`)
    entry.seq = 2 if history.__class__ is HistoryEntry else len(history) + 1  # type: ignore[arg-type]
    entry._at = at
    entry.event = event
    entry.message = message_summary(message) if message is not None else None
    entry.status = status if status != before.status else None
    entry.completedSteps = tuple(state.completedSteps[len(before.completedSteps) :])  # (a tuple already)
    entry.failure = failure.reason if failure is not None and before.failure is None else None
    entry.undone = undone
    entry.sent = sent_texts(dispatches)
    entry.note = note
    return entry
