"""Scenario simulation: participants that reply as a scenario says, on a virtual clock.

By default every command gets its step's first success reply at once, every awaited event
arrives at once, and compensation commands are confirmed at once. A scenario changes that
per command (`when payment.authorize reply payment_declined`, `no reply`, `after 2h`,
`twice`), per attempt of a command sent again (`attempt 2`) and per round of the loop around
its step (`round 2`), delivers events at chosen times, silences events, and states the
expected outcome.
"""

from __future__ import annotations

import heapq
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from procflow.dsl import model as m
from procflow.dsl.expressions import ObjectExpr, compile_expr
from procflow.errors import ExpressionError, InputError, InstantError, MessageRefused, ScenarioError
from procflow.instants import instant_problem
from procflow.interpreter import engine
from procflow.interpreter.messages import Dispatch, Reply
from procflow.interpreter.state import InstanceState, from_epoch, iso, parse_instant

DEFAULT_START = "2026-01-01T09:00:00Z"
"""Where a scenario's virtual clock starts unless it says `start at "..."`."""
MAX_EVENTS = 100_000


@dataclass(slots=True)
class TraceLine:
    """One line of a readable trace."""

    at: str
    kind: str  # start, send, emit, reply, event, timer, late, duplicate, refused, stop, end
    text: str


@dataclass(slots=True)
class SimulationResult:
    """What a simulated run did."""

    state: InstanceState
    dispatches: list[Dispatch] = field(default_factory=list)
    trace: list[TraceLine] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    stopped_at: str | None = None

    @property
    def command_names(self) -> list[str]:
        """Every command sent, in order (retries included); not the notifications (`emitted`)."""
        return [d.command.commandName for d in self.dispatches if d.command.replyTo is not None]

    @property
    def emitted(self) -> list[str]:
        """Every notification published with `emit`, in order."""
        return [d.command.commandName for d in self.dispatches if d.command.replyTo is None]

    @property
    def compensation_order(self) -> list[str]:
        """The undo commands, in the order they were first sent."""
        return [d.command.commandName for d in first_undo_sends(self.dispatches)]

    def to_json(self) -> dict[str, Any]:
        """The `run --json` document: state, commands, dispatches, history, trace."""
        state = self.state.to_json()
        return {
            "state": state,
            "commands": [d.command.wire() for d in self.dispatches],
            "dispatches": [d.model_dump(mode="json") for d in self.dispatches],
            "history": state["history"],
            "refused": list(self.refused),
            "stoppedAt": self.stopped_at,
        }

    def trace_text(self) -> str:
        """The trace as aligned text, ending with the outcome."""
        lines = [f"{t.at}  {t.kind:<9} {t.text}" for t in self.trace]
        s = self.state
        lines.append("")
        lines.append(f"status          {s.status}")
        lines.append(f"completedSteps  {', '.join(s.completedSteps) or '-'}")
        if s.outcome is not None:
            lines.append(f"outcome         {s.outcome}")
        if s.output is not None:
            lines.append(f"output          {json.dumps(s.output, sort_keys=True)}")
        lines.append(f"nextAction      {s.nextAction or '-'}")
        lines.append(f"timeoutAt       {s.timeoutAt or '-'}")
        if s.failure:
            lines.append(f"failure         {s.failure.reason} ({s.failure.cause})")
        if self.compensation_order:
            lines.append(f"compensation    {' -> '.join(self.compensation_order)}")
        if s.compensation is not None and s.compensation.unconfirmed:
            lines.append(f"unconfirmed     {', '.join(u.commandName for u in s.compensation.unconfirmed)}")
        return "\n".join(lines) + "\n"


def first_undo_sends(dispatches: list[Dispatch]) -> list[Dispatch]:
    """The first send of each undo (retries and resumes of the same undo left out), in order."""
    seen: set[str] = set()
    firsts = []
    for dispatch in dispatches:
        if not dispatch.step.startswith("undo:"):
            continue
        undo = dispatch.dedupKey.rsplit("#", 1)[0]
        if undo not in seen:
            seen.add(undo)
            firsts.append(dispatch)
    return firsts


def round_of(dispatch: Dispatch) -> int | None:
    """The round of the innermost loop around the step that sent `dispatch` (its dedup key
    ends `<step>@<rounds>#<attempt>`, the rounds of nested loops outermost first), or None
    when the step runs in no loop."""
    command = dispatch.command
    head = f"{command.correlationId}:{command.commandName}:{dispatch.step}"
    rounds = dispatch.dedupKey[len(head) :].rpartition("#")[0] if dispatch.dedupKey.startswith(head) else ""
    if not rounds.startswith("@"):
        return None
    innermost = rounds[1:].rpartition(".")[2]
    return int(innermost) if innermost.isdigit() else None


@dataclass(slots=True)
class _Reaction:
    reply: str | None
    data: dict[str, Any]
    after: float
    twice: bool


def _constant(expr: ObjectExpr | None, what: str) -> dict[str, Any]:
    if expr is None:
        return {}
    try:
        value = compile_expr(expr)({})
    except ExpressionError as error:
        raise ScenarioError(f"{what} must be constant JSON: {error}") from None
    assert isinstance(value, dict)
    return value


def scenario_input(scenario: m.Scenario) -> dict[str, Any]:
    """The input a scenario declares (empty when it declares none)."""
    return _constant(scenario.syntax.input, f"the input of scenario `{scenario.name}`")


def scenario_start(scenario: m.Scenario | None) -> datetime:
    """The moment a scenario's clock starts."""
    text = scenario.syntax.start_at[0] if scenario and scenario.syntax.start_at else DEFAULT_START
    try:
        moment = parse_instant(text)
    except InstantError as error:
        raise ScenarioError(f"`start at \"{text}\"`: {error}") from None
    except ValueError:
        raise ScenarioError(f"`start at \"{text}\"` is not an ISO-8601 instant") from None
    problem = instant_problem(moment)
    if problem:
        raise ScenarioError(f"`start at \"{text}\"`: {problem}")
    return moment


class _Simulation:
    def __init__(self, definition: m.ProcessDefinition, scenario: m.Scenario | None) -> None:
        self.definition = definition
        self.scenario = scenario
        self.rules: dict[tuple[str, int | None, int | None, int | None], _Reaction] = {}  # (command, round, attempt, item)
        self.silenced: set[str] = set()
        self.explicit_events: set[str] = set()
        syntax = scenario.syntax if scenario else None
        if syntax is not None:
            for rule in syntax.rules:
                key = (f"{rule.participant.text}.{rule.command.text}", rule.round, rule.attempt, rule.item)
                self.rules[key] = _Reaction(
                    rule.reply.text if rule.reply else None,
                    _constant(rule.data, f"the reply data of `{key[0]}`"),
                    rule.after.seconds if rule.after else 0.0,
                    rule.twice,
                )
            self.silenced = {n.text for n in syntax.silenced}
            self.explicit_events = {d.event.text for d in syntax.deliveries}
        self.queue: list[tuple[float, int, Reply]] = []
        self.counter = 0
        self.seen_waits: set[tuple[int, str, str]] = set()
        self.delivered: set[str] = set()  # messageIds of the scenario's `deliver` events
        self.result: SimulationResult | None = None

    def _schedule(self, at: float, reply: Reply) -> None:
        self.counter += 1
        heapq.heappush(self.queue, (at, self.counter, reply))

    def _react(self, dispatch: Dispatch, now: float) -> None:
        command = dispatch.command
        name, attempt, rules = command.commandName, dispatch.attempt, self.rules
        reaction = None
        if rules:
            # The most precise line wins: for the item, then for the round, then for the attempt.
            item = self._item_of(dispatch) if any(key[3] is not None for key in rules) else None
            round_ = round_of(dispatch)
            items = (item, None) if item is not None else (None,)
            rounds = (round_, None) if round_ is not None else (None,)
            reaction = next(
                (rules[key] for key in ((name, r, a, i) for i in items for r in rounds for a in (attempt, None)) if key in rules), None
            )
        if reaction is None:
            reply_type = self._default_reply(dispatch)
            if reply_type is None:
                return
            reaction = _Reaction(reply_type, {}, 0.0, False)
        if reaction.reply is None:
            return
        reply = Reply(
            type=reaction.reply,
            correlationId=command.correlationId,
            workflowId=command.workflowId,
            messageId=f"{dispatch.dedupKey}:{reaction.reply}",
            data=reaction.data,
        )
        self._schedule(now + reaction.after, reply)
        if reaction.twice:
            self._schedule(now + reaction.after, reply)

    def _item_of(self, dispatch: Dispatch) -> int | None:
        """The number (from 1) of the for-each item a command was sent for, else None."""
        return item_number(self._state(), dispatch.command.correlationId)

    def _default_reply(self, dispatch: Dispatch) -> str | None:
        state = self._state()
        if dispatch.step.startswith("undo:"):
            step = dispatch.step.removeprefix("undo:")
            for frame_id in state.frame_ids():
                node = self.definition.definition_of(state.frame(frame_id).process).nodes.get(step)
                if isinstance(node, m.StepNode) and node.compensation and node.compensation.replies:
                    return node.compensation.replies[0]
            return None
        for wait in state.waits:
            if wait.step == dispatch.step and wait.commandName == dispatch.command.commandName:
                node = self.definition.definition_of(state.frame(wait.frame).process).nodes[wait.node]
                if isinstance(node, m.StepNode) and node.task is not None:
                    return None  # a person does a task only when the scenario says (`when task review complete {...}`)
                if isinstance(node, m.StepNode) and node.replies:
                    return node.replies[0]
        return None

    def _state(self) -> InstanceState:
        assert self.result is not None
        return self.result.state

    def _default_events(self, now: float) -> None:
        state = self._state()
        for wait in state.waits:
            key = (wait.token, wait.step, wait.since)
            if wait.kind not in ("event", "race") or key in self.seen_waits:
                continue
            self.seen_waits.add(key)
            if not wait.expects:
                continue
            first = wait.expects[0]
            if first in self.silenced or first in self.explicit_events:
                continue
            if wait.kind == "race" and any(e in self.silenced or e in self.explicit_events for e in wait.expects):
                continue  # the scenario decides this race: one of its arms is silenced or delivered
            self._schedule(
                now, Reply(type=first, correlationId=wait.correlationId, workflowId=state.workflowId, messageId=f"{state.workflowId}:{wait.step}:{wait.since}:{first}")
            )

    def _apply(self, transition: engine.Transition, now: float, what: str, text: str) -> None:
        assert self.result is not None
        result = self.result
        result.state = transition.state
        at = iso(from_epoch(now))
        if transition.outcome == "duplicate":
            result.trace.append(TraceLine(at, "duplicate", f"{text} (ignored: {transition.note})"))
            return
        if transition.outcome == "idle":
            return
        kind = "late" if transition.outcome == "late" else what
        suffix = f"  ({transition.note})" if transition.note and kind == "late" else ""
        result.trace.append(TraceLine(at, kind, text + suffix))
        for dispatch in transition.dispatches:
            result.dispatches.append(dispatch)
            data = json.dumps(dispatch.command.data, sort_keys=True)
            retry = f" (attempt {dispatch.attempt})" if dispatch.attempt > 1 else ""
            item = self._item_of(dispatch) if transition.state.each else None
            where = f"{dispatch.step}, item {item}" if item is not None else dispatch.step
            sent = "send" if dispatch.command.replyTo is not None else "emit"  # a notification: nobody answers
            result.trace.append(TraceLine(at, sent, f"-> {dispatch.command.commandName} {data}  [{where}]{retry}"))
            self._react(dispatch, now)
        self._default_events(now)

    def run(self, workflow_id: str, input: dict[str, Any], start: datetime, stop_at: str | None) -> SimulationResult:
        begin = start.timestamp()
        first = engine.start(self.definition, workflow_id, input, start)
        self.result = SimulationResult(first.state)
        if self.scenario is not None:
            for delivery in self.scenario.syntax.deliveries:
                state = first.state
                reply = Reply(
                    type=delivery.event.text,
                    correlationId=state.correlationId,
                    workflowId=state.workflowId,
                    messageId=f"{state.workflowId}:deliver:{delivery.event.text}:{delivery.after.text}",
                    data=_constant(delivery.data, f"the data of event `{delivery.event.text}`"),
                )
                self._schedule(begin + delivery.after.seconds, reply)
                self.delivered.add(reply.messageId or "")
        self._apply(first, begin, "start", f"{self.definition.name} {workflow_id} (correlationId {first.state.correlationId})")
        now = begin
        result = self.result
        for _ in range(MAX_EVENTS):
            state = result.state
            if stop_at is not None and any(w.step == stop_at for w in state.waits):
                result.stopped_at = stop_at
                result.trace.append(TraceLine(iso(from_epoch(now)), "stop", f"waiting in {stop_at}"))
                break
            next_message = self.queue[0][0] if self.queue else None
            dues = [w.due for w in state.waits if w.due is not None]
            if state.deadlineAt and not state.is_terminal and state.status != "compensating":
                dues.append(parse_instant(state.deadlineAt).timestamp())
            next_timer = min(dues) if dues else None
            if next_message is None and next_timer is None:
                break
            if next_timer is not None and (next_message is None or next_timer < next_message):
                now = max(now, next_timer)
                transition = engine.advance(self.definition, state, from_epoch(now))
                self._apply(transition, now, "timer", transition.note or "time passes")
                continue
            at, _, reply = heapq.heappop(self.queue)
            now = max(now, at)
            if reply.messageId in self.delivered:
                reply = _addressed(state, reply)
            try:
                transition = engine.deliver(self.definition, state, reply, from_epoch(now))
            except MessageRefused as refused:
                result.refused.append(refused.reason)
                result.trace.append(TraceLine(iso(from_epoch(now)), "refused", f"<- {reply.type}: {refused.reason}"))
                continue
            item = item_number(state, reply.correlationId)
            text = f"<- {reply.type}" + (f"  [item {item}]" if item is not None else "")
            self._apply(transition, now, "event" if transition.outcome == "applied" and _is_event(state, reply) else "reply", text)
        else:
            raise ScenarioError(f"the simulation did not settle after {MAX_EVENTS} messages and timers")
        return result


def item_number(state: InstanceState, correlation: str) -> int | None:
    """The number (from 1) of the running for-each item whose correlation id this is, else None."""
    if not state.each:
        return None
    for frame in state.frames.values():
        if frame.correlationId == correlation and frame.item is not None:
            return frame.item + 1
    return None


def _addressed(state: InstanceState, reply: Reply) -> Reply:
    """A scenario's `deliver` goes to the frame that waits for the event when it arrives: a
    called process that correlates by its own key waits under that key, not the caller's."""
    wait = next((w for w in state.waits if w.kind in ("event", "race") and reply.type in w.expects), None)
    if wait is None or wait.correlationId == reply.correlationId:
        return reply
    return reply.model_copy(update={"correlationId": wait.correlationId})


def _is_event(state: InstanceState, reply: Reply) -> bool:
    return any(w.kind in ("event", "race") and reply.type in w.expects for w in state.waits)


def simulate(
    definition: m.ProcessDefinition,
    *,
    workflow_id: str,
    input: dict[str, Any] | None = None,
    start: datetime | None = None,
    scenario: str | m.Scenario | None = None,
    stop_at: str | None = None,
) -> SimulationResult:
    """Run an instance against simulated participants until it settles (or waits in `stop_at`)."""
    chosen = find_scenario(definition, scenario) if isinstance(scenario, str) else scenario
    if input is None:
        input = scenario_input(chosen) if chosen else {}
    begin = start or scenario_start(chosen)
    return _Simulation(definition, chosen).run(workflow_id, input, begin, stop_at)


def find_scenario(definition: m.ProcessDefinition, name: str) -> m.Scenario:
    """The scenario called `name`, or ScenarioError listing the ones there are."""
    for scenario in definition.scenarios:
        if scenario.name == name:
            return scenario
    known = ", ".join(s.name for s in definition.scenarios) or "none"
    raise ScenarioError(f"`{definition.name}` has no scenario `{name}` (scenarios: {known})")


@dataclass(slots=True)
class ScenarioOutcome:
    """The result of checking one scenario's expectations."""

    scenario: str
    passed: bool
    differences: list[str]
    result: SimulationResult | None


def check_scenario(definition: m.ProcessDefinition, scenario: m.Scenario) -> ScenarioOutcome:
    """Run a scenario and compare what happened with what it expects."""
    try:
        result = simulate(definition, workflow_id=f"wf_{scenario.name}", scenario=scenario)
    except (ScenarioError, InputError) as error:
        return ScenarioOutcome(scenario.name, False, [str(error)], None)
    differences: list[str] = []
    try:
        return _compare(scenario, result, differences)
    except ScenarioError as error:  # an `expect output` that is not constant JSON
        return ScenarioOutcome(scenario.name, False, [str(error)], result)


def _compare(scenario: m.Scenario, result: SimulationResult, differences: list[str]) -> ScenarioOutcome:
    state = result.state
    for expectation in scenario.syntax.expectations:
        kind, want = expectation.kind, expectation.value
        got: Any
        if kind == "status":
            got = state.status
        elif kind == "completed":
            got = list(state.completedSteps)
        elif kind == "commands":
            got = result.command_names
        elif kind == "compensation":
            got = result.compensation_order
        elif kind == "unconfirmed":
            got = [u.commandName for u in state.compensation.unconfirmed] if state.compensation else []
        elif kind == "outcome":
            got = state.outcome
        elif kind == "output":
            want = _constant(want, f"`expect output` of scenario `{scenario.name}`")
            got = None if state.output is None else {key: state.output.get(key) for key in want}
        elif kind == "emitted":
            if want not in result.emitted:
                differences.append(f"line {expectation.span.line}: expect emitted: `{want}` was not emitted"
                                   f" (emitted: {', '.join(result.emitted) or 'nothing'})")
            continue
        else:
            got = state.failure.reason if state.failure else None
        if got != want:
            differences.append(_difference(kind, want, got, expectation.span.line))
    if not scenario.syntax.expectations:
        differences.append(f"scenario `{scenario.name}` expects nothing; add `expect status ...`")
    return ScenarioOutcome(scenario.name, not differences, differences, result)


def _difference(kind: str, want: Any, got: Any, line: int) -> str:
    if isinstance(want, list) and isinstance(got, list):
        lines = [f"line {line}: expect {kind}"]
        width = max(len(want), len(got))
        for i in range(width):
            w = want[i] if i < len(want) else "(nothing)"
            g = got[i] if i < len(got) else "(nothing)"
            mark = "  " if w == g else "≠ "
            lines.append(f"    {mark}{i + 1:>2}. expected {w:<32} got {g}")
        return "\n".join(lines)
    return f"line {line}: expect {kind}: expected {want!r}, got {got!r}"


__all__ = ["ScenarioOutcome", "SimulationResult", "check_scenario", "find_scenario", "simulate"]
