"""Property test: every sample process, and processes generated from the failure constructs
(recovery paths, retries on error replies, undo even on failure, deadline handlers, loop else,
loops without a bound under a deadline, named ends, the undo policy), under random interleavings
of replies (failure replies among them), duplicates, late replies, unknown messages and time
jumps (timeouts, retries, deadlines), keeps the engine's promises (a human task's too: its
escalation rounds, dues and filled forms)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import procflow
from procflow.dsl import expression_reads
from procflow.dsl import model as m
from procflow.dsl.validate import check_source
from procflow.interpreter.engine import Transition
from procflow.interpreter.messages import Command
from procflow.interpreter.simulate import first_undo_sends, scenario_input
from procflow.interpreter.state import TERMINAL, Completion, InstanceState

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


# ---------------------------------------------------------------- generated processes


@st.composite
def failure_processes(draw: st.DrawFn) -> str:
    """A valid process built from the failure constructs at random: each step sends its own
    command, awaits its own reply within a minute and may fail with its own error reply; its
    undo awaits its own confirmation (so undos in parallel are told apart)."""
    counter = iter(range(1, 1000))
    lines: list[str] = []

    def step(indent: str, in_loop: bool = False) -> list[str]:
        n = next(counter)
        out = [f"{indent}step s{n} {{", f"{indent}  send p.do{n} {{ id: input.id }}",
               f"{indent}  await ok{n} within 1m" + (f" retry {draw(st.integers(0, 2), label='timeout retries')}")]
        handling = draw(st.sampled_from(["fail", "retry", "recover", "end", "none"]), label="error reply")
        if handling == "fail":
            out.append(f'{indent}  on err{n} fail "s{n} failed"')
        elif handling == "retry":
            out.append(f'{indent}  on err{n} retry {draw(st.integers(1, 2))} backoff 10s x2 then fail "s{n} stayed busy"')
        elif handling == "recover":
            out.append(f"{indent}  on err{n} as why{n} {{")
            out.extend(step(indent + "    "))
            out.append(f"{indent}  }}")
        elif handling == "end":
            out.append(f'{indent}  on err{n} {{ end "gave_up_{n}" }}')
        if draw(st.booleans(), label="on timeout block?"):
            out.append(f'{indent}  on timeout fail "s{n} never answered"')
        if draw(st.integers(0, 3), label="undo?") > 0:
            even = draw(st.sampled_from(["", " even on timeout", " even on failure"]), label="even on")
            unless = f" unless refused{n}" if draw(st.booleans(), label="undo may be refused?") else ""
            out.append(f"{indent}  compensate p.undo{n} {{ id: input.id }} awaiting undone{n} within 1m"
                       f" retry {draw(st.integers(0, 2), label='undo retries')}{unless}{even}")
        else:
            out.append(f'{indent}  nothing to undo "s{n}"')
        return [*out, f"{indent}}}"]

    deadline = draw(st.sampled_from(["", "deadline 1h", "deadline 1d handler"]), label="deadline")

    def statement(indent: str, depth: int) -> list[str]:
        kinds = ["step", "step", "parallel", "repeat", "if_end"] + (["until_deadline"] if deadline else [])
        kind = draw(st.sampled_from(kinds if depth < 2 else ["step"]), label="statement")
        if kind == "until_deadline":  # no bound: every round waits, and the deadline ends it
            n = next(counter)
            body = step(indent + "  ")
            return [f"{indent}repeat loop{n} {{", *body, f'{indent}}} until steps.{body[0].split()[1]}.reply == "never"']
        if kind == "parallel":
            n = next(counter)
            order = draw(st.sampled_from(["", "undo in parallel", "undo in reverse"]), label="undo order")
            out = [f"{indent}parallel block{n} {{"] + ([f"{indent}  {order}"] if order else [])
            for b in range(draw(st.integers(2, 3), label="branches")):
                out.append(f"{indent}  branch b{n}_{b} {{")
                for _ in range(draw(st.integers(1, 2), label="branch length")):
                    out.extend(step(indent + "    "))
                out.append(f"{indent}  }}")
            return [*out, f"{indent}}}"]
        if kind == "repeat":
            n = next(counter)
            body = step(indent + "  ")
            name = body[0].split()[1]
            otherwise = draw(st.sampled_from(["fail", "end", "go on"]), label="loop else")
            tail = {"fail": f'else {{ fail "loop{n} ran out" }}', "end": f'else {{ end "loop{n}_done" }}', "go on": "else {}"}[otherwise]
            return [f"{indent}repeat loop{n} max {draw(st.integers(1, 3), label='rounds')} {{", *body,
                    f'{indent}}} until steps.{name}.reply == "never" {tail}']
        if kind == "if_end":
            return [f'{indent}if input.id == "stop" {{', f'{indent}  end "stopped"', f"{indent}}}"]
        return step(indent)

    body: list[str] = []
    for _ in range(draw(st.integers(1, 3), label="statements")):
        body.extend(statement("  ", 0))
    header = ["process generated {", "  correlate by input.id", "  input { id: string }", "  participant p"]
    policy = draw(st.sampled_from(["", "continue", "stop"]), label="undo failure")
    if policy and any("awaiting undone" in line for line in body):
        header.append(f"  on undo failure {policy}")
    if deadline == "deadline 1h":
        header.append("  deadline 1h")
    elif deadline:
        handler = step("    ")
        ending = draw(st.sampled_from(["", '    end "expired"', '    fail "expired"']), label="deadline handler end")
        header += ["  deadline 1d {", *handler, *([ending] if ending else []), "  }"]
    lines = [*header, *body, "}", ""]
    return "\n".join(lines)


# By name, not by definition: when a run fails, Hypothesis prints the test's arguments, and
# a definition's repr is some 58 kB; Hypothesis warns of so large a repr, the warning is an
# error here (`filterwarnings`), and every failure read as FlakyStrategyDefinition instead
# of the assertion that failed.
@pytest.mark.parametrize("name", [d.name for d in DEFINITIONS])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_interleavings_keep_the_invariants(name: str, data: st.DataObject) -> None:
    definition = next(d for d in DEFINITIONS if d.name == name)
    _check_random_run(definition, _input_for(definition), data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=failure_processes(), data=st.data())
def test_generated_failure_constructs_keep_the_invariants(text: str, data: st.DataObject) -> None:
    definition, diagnostics = check_source(text, "generated.proc")
    assert definition is not None and not [d for d in diagnostics if d.severity == "error"], (text, diagnostics)
    _check_random_run(definition, {"id": "g1"}, data)


def _check_random_run(definition: m.ProcessDefinition, input_data: dict[str, Any], data: st.DataObject) -> None:
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
        _check_compensation_record(definition, state)
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
    # The failure's compensation runs in reverse order of the completed compensable steps
    # (but those the `first of` blocks took over): a step's undo goes out before the undo of
    # any step completed before it, except that branches of a block undone in parallel go out
    # side by side. Each undo is told apart by its step and round (`s2@3`: the undo of `s2`
    # completed in a loop's 3rd round) and its correlation id (the items of a for-each
    # complete the same step).
    late_steps = {r.step for r in state.lateReplies if r.action == "compensated"}
    sends = [d for d in firsts if d.step.removeprefix("undo:") not in late_steps and _undo_key(d) not in cancelled]
    in_order = [(d.dedupKey.rsplit("#", 1)[0].split(":", 2)[2].removeprefix("undo:"), d.command.correlationId) for d in sends]
    expected = [c for c in reversed(state.completed) if c.undo is not None and (c.undo.frame, c.undo.step, c.undo.round) not in taken]
    rank = {(f"{c.step}{c.undo.round}", c.undo.correlationId): index for index, c in enumerate(expected) if c.undo is not None}
    assert set(in_order) <= set(rank), (in_order, rank)
    for earlier, later in zip(in_order, in_order[1:], strict=False):
        assert rank[earlier] < rank[later] or _beside(definition, expected[rank[earlier]], expected[rank[later]]), in_order
    for missing in [key for key in rank if key not in in_order]:  # an undo not yet sent comes after those sent
        assert all(rank[sent_key] < rank[missing] or _beside(definition, expected[rank[sent_key]], expected[rank[missing]])
                   for sent_key in in_order), (in_order, missing)
    if state.status == "compensated":
        assert set(in_order) == {key for key, c in zip(rank, expected, strict=True) if c.step not in late_steps}
    # A named end is never a failure (it may still undo a late success, then stay completed).
    assert state.outcome is None or (state.failure is None and state.status in ("completed", "compensating", "compensation_failed"))
    _check_tasks(definition, dispatches, sent_at, state)
    _data_invariants(definition, state, dispatches)
    # Replaying the recorded inputs on a fresh start gives the identical history.
    assert _replay(definition, "wf_prop", input_data, log) == state


def _beside(definition: m.ProcessDefinition, a: Completion, b: Completion) -> bool:
    """True when two completed steps' undos may go out side by side: steps of two branches of
    a parallel block undone in parallel (within a branch, undos keep their reverse order)."""
    lane_a, lane_b = (definition.definition_of(c.undo.process if c.undo else definition.name).undo_lanes.get(c.step) for c in (a, b))
    return lane_a is not None and lane_b is not None and a.frame == b.frame and lane_a.fork == lane_b.fork and lane_a.branch != lane_b.branch


def _check_compensation_record(definition: m.ProcessDefinition, state: InstanceState) -> None:
    """What the compensation record promises at every moment."""
    comp = state.compensation
    undoing = [(w.frame, w.node) for w in state.waits if w.kind in ("compensation", "compensation_backoff")]
    assert len(undoing) == len(set(undoing)), "one undo awaited twice"
    if comp is None:
        assert not undoing
        return
    pending = {(u.frame, u.step) for u in comp.pending}
    assert set(undoing) <= pending, "an undo awaited that is not pending"
    if len(undoing) > 1:  # several at once only for branches of a block undone in parallel, one undo a branch
        lanes = [definition.definition_of(state.frame(frame).process).undo_lanes.get(step) for frame, step in undoing]
        assert all(lanes) and len({(lane.fork, lane.branch) for lane in lanes if lane}) == len(lanes), undoing
    if state.status == "compensation_failed":
        assert comp.failed is not None and comp.failed in comp.pending and not undoing
    if state.status in ("compensated", "failed", "timed_out") and not state.waits:
        assert comp.pending == () and comp.failed is None
    if comp.unconfirmed:
        assert definition.undo_failure == "continue"
        assert not {(u.frame, u.step, u.round) for u in comp.unconfirmed} & {(u.frame, u.step, u.round) for u in comp.undone}


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


def _data_invariants(definition: m.ProcessDefinition, state: InstanceState, dispatches: list[Any]) -> None:
    """`set`, `emit` and `output` keep their promises whatever the interleaving."""
    processes = definition.processes.values()
    emits = {node.message.name for p in processes for node in p.in_order if isinstance(node, m.EmitNode)}
    bindable = {name for p in processes for node in p.in_order for name in expression_reads.model_bindings(node)}
    # A notification is only what an `emit` publishes: no `replyTo`, sent by its emit, never awaited.
    for dispatch in dispatches:
        if dispatch.command.replyTo is None:
            assert dispatch.command.commandName in emits and dispatch.step.startswith("emit:"), dispatch
        else:
            assert not dispatch.step.startswith("emit:"), dispatch
    assert not any(wait.commandName in emits for wait in state.waits)  # (no sample sends what it emits)
    # The instance's data holds only names the process binds, with `as` or `set`.
    assert set(state.data) <= bindable, set(state.data) - bindable
    # A completed instance returns exactly its output's fields; a failed one returns none.
    if definition.output is not None and state.status == "completed":
        assert state.output is not None and list(state.output) == [key for key, _ in definition.output.expr.pairs]
    if state.failure is not None:
        assert state.output is None
