"""The engine: a pure, deterministic function of (definition, state, message, now).

`start`, `deliver`, `advance` and `resume` each take a state and return a `Transition`: the
new state and the commands to send. Nothing here reads a clock, draws a random number or
does I/O; the state passed in is never changed (the new state shares with it what did not
change). Same inputs, same history.

The work of a transition lives beside this module: `run.py` (the working copy, tokens, steps,
races, calls, replies), `compensation.py` (failing and undoing), `first_of.py` (the winner of
a `first of` block, its losers cancelled and undone), `timers.py` (timeouts,
retries, timers), `derive.py` (the lesson's fields and the history entry), `plan.py` (what is
worked out once per definition) and `contracts.py` (input and payload schemas).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from procflow.dsl import model as m
from procflow.errors import ExpressionError, InputError, MessageRefused
from procflow.ids import check_id, is_id
from procflow.instants import check_instant
from procflow.interpreter.contracts import schema_problem, schema_text_problem
from procflow.interpreter.derive import derive, history_entry
from procflow.interpreter.indexed import first_due, matching
from procflow.interpreter.messages import Reply
from procflow.interpreter.plan import Plan, plan_of, resting
from procflow.interpreter.state import (
    EMPTY,
    ROOT,
    TERMINAL,
    Abandoned,
    InstanceState,
    Token,
    Wait,
    appended,
    epoch_of,
    iso,
    iso_epoch,
    remember_message,
)
from procflow.interpreter.timers import Timed
from procflow.interpreter.transition import MAX_NODES_PER_TRANSITION, Transition, steps_of
from procflow.limits import INPUT_BYTES, MESSAGE_BYTES
from procflow.strict_json import check_value

__all__ = [
    "MAX_NODES_PER_TRANSITION", "Transition", "advance", "check_message", "deliver", "resume", "start", "steps_of",
    "validate_reply",
]


class _Run(Timed):
    """A transition: the working copy and all it can do, and the record it leaves."""

    __slots__ = ()

    def finish(self, event: str, message: Reply | None, note: str | None = None) -> Transition:
        """Write the frames back, derive the lesson's fields, append the history entry."""
        state = self.state
        frames = self.frames
        if frames.changed:  # (the main frame is the state itself: its data is already there)
            state.frames = frames.written()
        if self.owned:
            state.tokens = resting(state.tokens, self.owned)
        derive(self.plan, state)
        state.updatedAt = self.now_at
        state.history = appended(state.history, history_entry(state, self.before, self.now_at, event, message, note, self.dispatches))
        return Transition(state, self.dispatches, "applied", note)


# ---------------------------------------------------------------- the public functions


def start(definition: m.ProcessDefinition, workflow_id: str, input: dict[str, Any], now: datetime) -> Transition:
    """A new instance: check the id, the time and the input, send the first commands, wait."""
    check_id(workflow_id, "the workflow id", InputError)
    check_instant(now, f"the start of instance {workflow_id}")
    if not isinstance(input, dict):
        raise InputError(f"the input of `{definition.name}` must be a JSON object, not {type(input).__name__}")
    check_value(input, what=f"the input of `{definition.name}`", limit=INPUT_BYTES, refuse=InputError)
    if definition.input_schema_text is not None:
        problem = schema_text_problem(input, definition.input_schema_text)
        if problem:
            raise InputError(f"the input breaks the contract of `{definition.name}`: {problem}")
    plan = plan_of(definition)
    correlation = workflow_id
    if definition.correlate is not None:
        try:
            field = plan.correlation_field  # `input.orderId`: what evaluating it gives, read directly
            value = input.get(field) if field is not None else definition.correlate.evaluate({"input": input, "steps": {}})
        except ExpressionError as error:
            raise InputError(f"cannot compute the correlation key `{definition.correlate.text}`: {error}") from None
        if value is None:
            raise InputError(f"the correlation key `{definition.correlate.text}` is missing from the input")
        correlation = value if isinstance(value, str) else str(value)
        check_id(correlation, f"the correlation key `{definition.correlate.text}`", InputError)
    token = Token(1, definition.start, ROOT, EMPTY, ())  # (id, node, frame, loops, forks)
    now_epoch = now.timestamp()
    began = iso_epoch(now_epoch)
    # Every field in the order of the class, as `state.shell` does (a keyword costs about 600
    # instructions more than a place: a tenth of a start); the comments name them.
    state = InstanceState(
        workflow_id, definition.name, "running", (), None, None,  # workflowId, type, status, completedSteps, nextAction, timeoutAt
        plan.ref, correlation, began, began,  # definition, correlationId, startedAt, updatedAt
        input, EMPTY, (), (token,), EMPTY, EMPTY, (),  # input, data, waits, tokens, frames, joins, completed
        None, None, None, None, (), (), (), 1, (),  # compensation, failure, outcome, output, abandoned, lateReplies, seenMessageIds, seq, history
        EMPTY, (),  # each, cancels
        deadlineAt=iso(now + timedelta(seconds=definition.deadline_seconds)) if definition.deadline_seconds else None,
    )
    run = _Run(plan, plan.blank, now_epoch, new=state)
    run.owned.add(token.id)
    run.run(token)
    return run.finish("started", None)


def _check_pinned(plan: Plan, state: InstanceState) -> None:
    ref = state.definition
    if ref is plan.ref:
        return
    definition = plan.definition
    if ref.name != definition.name or ref.fingerprint != definition.fingerprint:
        raise MessageRefused(
            f"instance {state.workflowId} runs `{ref.name}` version {ref.version} ({ref.fingerprint}); "
            f"the definition given is `{definition.name}` version {definition.version} ({definition.fingerprint}). "
            "Run it with the definition it started with.",
            state.workflowId,
        )


def _expected_text(state: InstanceState) -> str:
    if not state.waits:
        return f"it is {state.status} and waits for nothing"
    parts = []
    for wait in state.waits:
        if wait.expects:
            parts.append(f"step `{wait.step}` waits for {' or '.join(f'`{e}`' for e in wait.expects)}")
        else:
            parts.append(f"step `{wait.step}` waits for its timer")
    return "; ".join(parts)


def deliver(definition: m.ProcessDefinition, state: InstanceState, reply: Reply, now: datetime) -> Transition:
    """A reply or event for this instance. Refused (MessageRefused, state untouched) when it is
    not a valid message or nobody waits for it.

    Time only runs forward: a message whose `now` is earlier than the instance's last update
    is applied at that last instant. And what was due comes first: the timeouts, retries,
    timers and deadline due by `now` fire before the message is applied, so a reply that
    arrives after its step's time is over is a late reply whether or not a worker ticked in
    between (the outcome does not depend on how often timers are fired)."""
    check_message(reply)
    now_epoch = _not_before(state, check_instant(now, f"the time of `{reply.type}`"))
    message_id = reply.messageId
    if message_id is not None and message_id in state.seenMessageIds:
        return Transition(state, [], "duplicate", f"message {message_id} was already handled")
    if not _overdue(state, now_epoch):  # the usual case: nothing is due, the message applies as it is
        return _apply(definition, state, reply, now_epoch)
    overdue = advance(definition, state, now)
    applied = _apply(definition, overdue.state, reply, now_epoch)
    if applied.outcome == "duplicate":  # nothing to apply: the timers fire at the next tick, as they would have
        return Transition(state, [], "duplicate", applied.note)
    note = f"first, what was due: {overdue.note}" + (f"; then {applied.note}" if applied.note else "")
    return Transition(applied.state, overdue.dispatches + applied.dispatches, applied.outcome, note)


def _overdue(state: InstanceState, now_epoch: float) -> bool:
    """True when a wait or the deadline of the instance is due by `now_epoch`: what `advance`
    acts on (and how a message finds out cheaply that nothing is)."""
    first = first_due(state.waits)
    if first is not None and (first.due or 0.0) <= now_epoch:
        return True
    deadline = state.deadlineAt
    return (
        deadline is not None
        and epoch_of(deadline) <= now_epoch
        and state.status not in TERMINAL
        and state.status != "compensating"
    )


def _not_before(state: InstanceState, now: datetime) -> float:
    """`now` as seconds since the epoch, or the instance's last instant when `now` is earlier
    (time never runs backwards)."""
    return max(now.timestamp(), epoch_of(state.updatedAt))


def check_message(reply: Reply) -> None:
    """MessageRefused unless the message's ids are ids (`procflow.ids`) and its data is strict
    JSON within the `nesting` limit (counted from the message: its `data` is level 2) and the
    `message_bytes` limit (`procflow.strict_json`)."""
    workflow_id, message_id = reply.workflowId, reply.messageId
    if not (
        is_id(reply.type) and is_id(reply.correlationId)
        and (workflow_id is None or is_id(workflow_id)) and (message_id is None or is_id(message_id))
    ):
        check_id(reply.type, "the message's `type`", MessageRefused)
        check_id(reply.correlationId, "the message's `correlationId`", MessageRefused)
        check_id(workflow_id if workflow_id is not None else "-", "the message's `workflowId`", MessageRefused)
        check_id(message_id if message_id is not None else "-", "the message's `messageId`", MessageRefused)
    if reply.data:
        check_value(
            reply.data, what=f"the data of `{reply.type}`", limit=MESSAGE_BYTES, refuse=MessageRefused, level=2
        )


def _apply(definition: m.ProcessDefinition, state: InstanceState, reply: Reply, now_epoch: float) -> Transition:
    """Apply a checked message at `now_epoch` (nothing is due): to the wait that expects it, as a
    late reply, as a duplicate; or MessageRefused."""
    plan = plan_of(definition)
    if state.definition is not plan.ref:
        _check_pinned(plan, state)
    if reply.workflowId is not None and reply.workflowId != state.workflowId:
        raise MessageRefused(
            f"`{reply.type}` is addressed to instance {reply.workflowId}, not {state.workflowId}", state.workflowId
        )
    message_id = reply.messageId
    if message_id is not None and message_id in state.seenMessageIds:  # (the last few only: the store's inbox has them all)
        return Transition(state, [], "duplicate", f"message {message_id} was already handled")
    reply_type = reply.type
    correlation = reply.correlationId
    wait = matching(state.waits, reply_type, correlation)
    if wait is None:
        # (A wait that matched has the correlation of one of the instance's frames.)
        correlations = state.correlation_ids()
        if reply.correlationId not in correlations:
            raise MessageRefused(
                f"instance {state.workflowId} ({state.type}) correlates by {', '.join(sorted(correlations))}, "
                f"not `{reply.correlationId}`; {_expected_text(state)}",
                state.workflowId,
            )
    else:
        schema = _payload_schema(plan, state, wait, reply_type) if plan.payload_schemas else None
        if schema is not None:
            problem = schema_problem(reply.data, schema)
            if problem:
                raise MessageRefused(
                    f"instance {state.workflowId}: the payload of `{reply.type}` for step `{wait.step}` "
                    f"breaks its declared schema: {problem}",
                    state.workflowId,
                    wait.step,
                )
        run = _Run(plan, state, now_epoch)
        if message_id is not None:
            run.state.seenMessageIds = remember_message(run.state.seenMessageIds, message_id)
        run.accept(wait, reply)
        return run.finish("event" if wait.kind in ("event", "race") else "reply", reply)
    abandoned = next(
        (a for a in state.abandoned if a.correlationId == reply.correlationId and reply.type in a.successes), None
    )
    if abandoned is None:
        abandoned = next(
            (a for a in state.abandoned if a.correlationId == reply.correlationId and _is_reply_of(plan, a, reply.type)),
            None,
        )
    if abandoned is not None:
        run = _Run(plan, state, now_epoch)
        if reply.messageId is not None:
            run.state.seenMessageIds = remember_message(run.state.seenMessageIds, reply.messageId)
        action = run.late(abandoned, reply)
        note = (
            f"late `{reply.type}` for `{abandoned.step}`: "
            + ("undone by its compensation" if action == "compensated" else "recorded")
        )
        transition = run.finish("late_reply", reply, note)
        transition.outcome = "late"
        return transition
    if any(c.outcome == reply.type for c in state.completed) or any(r.type == reply.type for r in state.lateReplies):
        return Transition(state, [], "duplicate", f"`{reply.type}` was already handled")
    raise MessageRefused(
        f"instance {state.workflowId} ({state.type}, {state.status}) does not expect `{reply.type}`: {_expected_text(state)}",
        state.workflowId,
        state.waits[0].step if state.waits else None,
    )


def _is_reply_of(plan: Plan, abandoned: Abandoned, reply_type: str) -> bool:
    node = plan.process(abandoned.process).nodes.get(abandoned.step)
    return isinstance(node, m.StepNode) and reply_type in node.failure_replies


def _payload_schema(plan: Plan, state: InstanceState, wait: Wait, reply_type: str) -> dict[str, Any] | None:
    frame = state.frames.get(wait.frame) if wait.frame != ROOT else None  # (an undo's may be gone: a for-each item's)
    process = plan.process(frame.process if frame is not None else state.type)
    if not process.declares_payload_schemas:
        return None
    if wait.commandName and wait.kind != "race":
        participant = process.participants.get(wait.commandName.split(".")[0])
        if participant is not None and participant.replies.get(reply_type) is not None:
            return participant.replies[reply_type]
    if reply_type in process.events:
        return process.events[reply_type]
    for participant in process.participants.values():
        if participant.replies.get(reply_type) is not None:
            return participant.replies[reply_type]
    return None


def advance(definition: m.ProcessDefinition, state: InstanceState, now: datetime) -> Transition:
    """Time has passed: fire every timer, timeout, retry and deadline that is due, in order,
    each at the moment it was due (so one late tick gives the same outcome as many on time).
    A `now` earlier than the instance's last update is taken as that last instant."""
    plan = plan_of(definition)
    _check_pinned(plan, state)
    now_epoch = _not_before(state, check_instant(now, f"the time of a tick of instance {state.workflowId}"))
    if not _overdue(state, now_epoch):
        return Transition(state, [], "idle", None)
    # The run's clock starts at the instance's last instant: each timer fires when it was due.
    run = _Run(plan, state, epoch_of(state.updatedAt))
    fired: list[str] = []
    for _ in range(MAX_NODES_PER_TRANSITION):
        first = first_due(run.state.waits)
        first_at = first.due if first is not None else None
        pending = first if first_at is not None and first_at <= now_epoch else None
        deadline = epoch_of(run.state.deadlineAt)
        deadline_now = (
            deadline is not None
            and deadline <= now_epoch
            and run.state.failure is None
            and run.state.status not in TERMINAL
            and run.state.status != "compensating"  # (as `_overdue`: undoing a late success of a completed instance)
        )
        if deadline is not None and deadline_now and (pending is None or (first_at or 0.0) >= deadline):
            fired.append("the deadline passed")
            deadline_at = run.state.deadlineAt
            assert deadline_at is not None
            run.set_now(epoch_of(deadline_at))
            run.deadline_passed(f"the deadline of `{definition.name}` passed")
            continue
        if pending is None:
            break
        wait = pending
        fired.append(_fired_text(wait))
        # Fire at the moment the timer was due, so a long jump gives the same history as small ticks.
        run.set_now(max(wait.due or now_epoch, run.now_epoch))
        run.fire(wait)
    run.set_now(now_epoch)
    event = "deadline" if "the deadline passed" in fired else "timer"
    return run.finish(event, None, "; ".join(fired))


def _fired_text(wait: Wait) -> str:
    if wait.kind == "timer":
        return f"timer of `{wait.step}` fired"
    if wait.kind == "race":
        return f"timer of race `{wait.step}` fired"
    if wait.kind in ("backoff", "compensation_backoff", "cancel_backoff"):
        return f"`{wait.step}` retries after backoff"
    return f"`{wait.step}` got no reply in time (attempt {wait.attempt})"


def resume(definition: m.ProcessDefinition, state: InstanceState, now: datetime) -> Transition:
    """An operator resumes a `compensation_failed` instance: the failed undo is sent again."""
    plan = plan_of(definition)
    _check_pinned(plan, state)
    now_epoch = _not_before(state, check_instant(now, f"the time instance {state.workflowId} resumes"))
    if state.status != "compensation_failed" or state.compensation is None or not state.compensation.pending:
        raise MessageRefused(
            f"instance {state.workflowId} is {state.status}; only a compensation_failed instance can be resumed",
            state.workflowId,
        )
    run = _Run(plan, state, now_epoch)
    comp = run._comp()
    comp.failed = None
    run._next_undo()
    return run.finish("resumed", None, f"operator resumed compensation at `{comp.pending[0].step if comp.pending else '-'}`")


def validate_reply(data: Any) -> Reply:
    """A reply from JSON data (strict JSON within the limits, see `check_message`), or
    MessageRefused saying what is wrong with it."""
    if isinstance(data, Mapping):
        check_value(data, what="the message", limit=MESSAGE_BYTES, refuse=MessageRefused)
    try:
        reply = Reply.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'message'}: {e['msg']}" for e in error.errors())
        raise MessageRefused(f"not a valid reply: {problems}") from None
    check_message(reply)
    return reply
