"""Property test: every sample process under random interleavings of replies, duplicates,
late replies, unknown messages and time jumps keeps the engine's promises (a human task's
too: its escalation rounds, dues and filled forms)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import procflow
from procflow.dsl import model as m
from procflow.interpreter.engine import Transition
from procflow.interpreter.messages import Command
from procflow.interpreter.simulate import first_undo_sends, scenario_input
from procflow.interpreter.state import TERMINAL, InstanceState

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted((ROOT / "processes").glob("*.proc"))
START = datetime(2026, 3, 23, 16, 0, tzinfo=UTC)
COMMAND_SCHEMA = Command.model_json_schema()
STATE_SCHEMA = InstanceState.model_json_schema()


def _definitions() -> list[m.ProcessDefinition]:
    found = []
    for path in SAMPLES:
        definition = procflow.load(path)
        if definition.scenarios:
            found.append(definition)
    return found


DEFINITIONS = _definitions()


def _input_for(definition: m.ProcessDefinition) -> dict[str, Any]:
    for scenario in definition.scenarios:
        data = scenario_input(scenario)
        if data:
            return data
    return {}


def _task_steps(definition: m.ProcessDefinition) -> dict[str, m.StepNode]:
    """The human tasks of a process (and of the processes it calls), by name."""
    return {node.name: node for process in definition.processes.values() for node in process.steps if node.task is not None}


def _form_data(form: dict[str, Any] | None, data: st.DataObject) -> dict[str, Any]:
    """A completed form a person could send: each declared field of a simple type, drawn
    (an optional field may be left out)."""
    values: dict[str, Any] = {}
    required = set((form or {}).get("required", []))
    draws = {"boolean": st.booleans(), "number": st.integers(0, 10_000), "integer": st.integers(0, 10_000),
             "string": st.text(max_size=5)}
    for name, schema in ((form or {}).get("properties") or {}).items():
        strategy = draws.get(schema.get("type")) if isinstance(schema, dict) else None
        if strategy is None or (name not in required and data.draw(st.booleans(), label=f"leave out {name}?")):
            continue
        values[name] = data.draw(strategy, label=name)
    return values


def _candidates(definition: m.ProcessDefinition, state: InstanceState, sent: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages worth trying now: what the waits expect (a human task's completion with a
    filled form too), late and duplicate replies, strangers."""
    options: list[dict[str, Any]] = []
    tasks = _task_steps(definition)
    for wait in state.waits:
        for expected in wait.expects:
            options.append({"type": expected, "correlationId": wait.correlationId})
            task = tasks.get(wait.step)
            if task is not None and task.task is not None and wait.commandName == f"task.{task.name}":
                options.append({"type": expected, "correlationId": wait.correlationId, "form": task.task.form})  # filled once chosen
    for abandoned in state.abandoned:
        for success in abandoned.successes:
            options.append({"type": success, "correlationId": abandoned.correlationId})
    options.extend(sent[-3:])  # duplicates, with their message ids
    options.append({"type": "nobody_waits_for_this", "correlationId": state.correlationId})
    options.append({"type": options[0]["type"] if options else "x", "correlationId": "unknown-correlation"})
    return options


def _apply(definition: m.ProcessDefinition, state: InstanceState, action: tuple[str, Any], now: datetime) -> Transition | None:
    kind, payload = action
    if kind == "advance":
        return procflow.advance(definition, state, now)
    try:
        return procflow.deliver(definition, state, procflow.Reply(**payload), now)
    except procflow.MessageRefused:
        return None


def _undo_key(dispatch: Any) -> tuple[str, str]:
    """(step, round) of an undo's dispatch: its dedup key ends `undo:<step><round>#<attempt>`."""
    undone = dispatch.dedupKey.rsplit("#", 1)[0].rsplit(":undo:", 1)[1]
    step = dispatch.step.removeprefix("undo:")
    return step, undone[len(step) :]


def _replay(definition: m.ProcessDefinition, workflow_id: str, input_data: dict[str, Any], log: list[tuple[tuple[str, Any], datetime]]) -> InstanceState:
    state = procflow.start(definition, workflow_id, input_data, START).state
    for action, now in log:
        transition = _apply(definition, state, action, now)
        if transition is not None:
            state = transition.state
    return state


@pytest.mark.parametrize("definition", DEFINITIONS, ids=lambda d: d.name)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_interleavings_keep_the_invariants(definition: m.ProcessDefinition, data: st.DataObject) -> None:
    input_data = _input_for(definition)
    first = procflow.start(definition, "wf_prop", input_data, START)
    state = first.state
    dispatches = list(first.dispatches)
    sent_at = {d.dedupKey: START for d in first.dispatches}
    sent: list[dict[str, Any]] = []
    log: list[tuple[tuple[str, Any], datetime]] = []
    now = START
    for number in range(data.draw(st.integers(min_value=1, max_value=25), label="length")):
        if data.draw(st.booleans(), label="time passes?"):
            jump = data.draw(st.sampled_from([1, 30, 300, 3600, 86_400, 7 * 86_400, 40 * 86_400]), label="seconds")
            now = now + timedelta(seconds=jump)
            action: tuple[str, Any] = ("advance", None)
        else:
            message = dict(data.draw(st.sampled_from(_candidates(definition, state, sent)), label="message"))
            if "form" in message:  # a person completes a human task: a filled form
                message["data"] = _form_data(message.pop("form"), data)
            if "messageId" not in message:
                message["messageId"] = f"m{number}"
            action = ("deliver", message)
        before = state.model_dump_json()
        transition = _apply(definition, state, action, now)
        assert state.model_dump_json() == before, "the engine changed the state it was given"
        log.append((action, now))
        if transition is None:
            continue
        if action[0] == "deliver" and transition.outcome != "duplicate":
            sent.append(action[1])
        state = transition.state
        dispatches.extend(transition.dispatches)
        sent_at.update((d.dedupKey, now) for d in transition.dispatches)
        # Every state survives a JSON round trip and matches the published schema.
        assert InstanceState.model_validate_json(state.model_dump_json()) == state
        # Terminal, or waiting with a time at which the instance acts by itself.
        assert state.status in TERMINAL or state.timeoutAt is not None, state.status
    jsonschema.validate(state.to_json(), STATE_SCHEMA)
    for dispatch in dispatches:
        jsonschema.validate(dispatch.command.model_dump(mode="json"), COMMAND_SCHEMA)
    # No command is sent twice for the same step attempt.
    keys = [d.dedupKey for d in dispatches]
    assert len(keys) == len(set(keys))
    # The losers of each `first of` block are undone in exact reverse order of what they
    # completed (each cancel's `undone`, then what it still has `pending`, as it worked them out).
    # (A loser's completion keeps its undo; the cancel's record says it took it over.)
    cancelled = {(u.step, u.round) for c in state.cancels for u in (*c.undone, *c.pending)}
    taken = {(u.frame, u.step, u.round) for c in state.cancels for u in (*c.undone, *c.pending)}
    firsts = first_undo_sends(dispatches)
    for cancel in state.cancels:
        order = [(u.step, u.round) for u in (*cancel.undone, *cancel.pending)]
        own = {(u.frame, u.step, u.round) for u in (*cancel.undone, *cancel.pending)}
        done = [c for c in state.completed if c.undo is not None and (c.undo.frame, c.undo.step, c.undo.round) in own]
        assert order == [(c.step, c.undo.round) for c in reversed(done) if c.undo is not None], (order, done)
        sent_order = [_undo_key(d) for d in firsts if _undo_key(d) in set(order)]
        assert sent_order == order[: len(sent_order)], (sent_order, order)
        assert not cancel.pending or cancel.handedOver or state.status not in TERMINAL
    # Compensation runs in exact reverse order of the completed compensable steps.
    late_steps = {r.step for r in state.lateReplies if r.action == "compensated"}
    undo_steps = [d.step.removeprefix("undo:") for d in firsts if _undo_key(d) not in cancelled]
    expected = [c.step for c in reversed(state.completed) if c.undo is not None and (c.undo.frame, c.undo.step, c.undo.round) not in taken]
    assert [s for s in undo_steps if s not in late_steps] == expected[: len([s for s in undo_steps if s not in late_steps])]
    if state.status == "compensated":
        assert [s for s in undo_steps if s not in late_steps] == [s for s in expected if s not in late_steps]
    _check_tasks(definition, dispatches, sent_at, state)
    # Replaying the recorded inputs on a fresh start gives the identical history.
    assert _replay(definition, "wf_prop", input_data, log) == state


def _check_tasks(definition: m.ProcessDefinition, dispatches: list[Any], sent_at: dict[str, datetime], state: InstanceState) -> None:
    """A human task's promises: round `n` is sent as attempt `n`, in order, to the round's
    people, with its escalation and a `due` its own time after the due before it passed; a
    completed task's data is a filled form."""
    tasks = _task_steps(definition)
    attempts: dict[str, list[int]] = {}
    dues: dict[str, list[str | None]] = {}
    for dispatch in dispatches:
        node = tasks.get(dispatch.step)
        if node is None or node.task is None or dispatch.command.commandName != f"task.{node.name}":
            continue
        task, payload = node.task, dispatch.command.data
        assert 1 <= dispatch.attempt <= len(task.rounds), dispatch.dedupKey
        sent_round = task.rounds[dispatch.attempt - 1]
        assert payload["task"] == node.name
        assert payload.get("escalation") == sent_round.escalation
        assert sent_round.assignee is not None
        who = "group" if sent_round.assignee.startswith("group ") else "assignee"
        assert isinstance(payload.get(who), str) and ("group" in payload) != ("assignee" in payload), payload
        if sent_round.due_seconds is None:
            assert "due" not in payload
        group = dispatch.dedupKey.rsplit("#", 1)[0]
        if dispatch.attempt == 1 and sent_round.due_seconds is not None:
            # Sent when the task was reached: at the latest at the moment of the transition.
            assert datetime.fromisoformat(payload["due"]) <= sent_at[dispatch.dedupKey] + timedelta(seconds=sent_round.due_seconds)
        elif sent_round.due_seconds is not None:
            # An escalation is sent when the due before it passed (a time jump fires each in turn).
            before = dues[group][-1]
            assert before is not None
            assert datetime.fromisoformat(payload["due"]) == datetime.fromisoformat(before) + timedelta(seconds=sent_round.due_seconds)
        attempts.setdefault(group, []).append(dispatch.attempt)
        dues.setdefault(group, []).append(payload.get("due"))
    for sent in attempts.values():
        assert sent == list(range(1, len(sent) + 1)), sent  # each escalation once, in order
    for completion in state.completed:
        node = tasks.get(completion.step)
        if node is not None and node.task is not None and completion.outcome == f"{node.name}_completed" and node.task.form:
            jsonschema.validate(state.data[node.name], node.task.form)
