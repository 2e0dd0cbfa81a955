"""Property test: every sample process under random interleavings of replies, duplicates,
late replies, unknown messages and time jumps keeps the engine's promises."""

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


def _candidates(definition: m.ProcessDefinition, state: InstanceState, sent: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages worth trying now: what the waits expect, late and duplicate replies, strangers."""
    options: list[dict[str, Any]] = []
    for wait in state.waits:
        for expected in wait.expects:
            options.append({"type": expected, "correlationId": wait.correlationId})
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
    # Replaying the recorded inputs on a fresh start gives the identical history.
    assert _replay(definition, "wf_prop", input_data, log) == state
