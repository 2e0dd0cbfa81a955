"""The engine: a pure, deterministic function of (definition, state, message, now).

`start`, `deliver`, `advance` and `resume` each take a state and return a `Transition`: the
new state and the commands to send. Nothing here reads a clock, draws a random number or
does I/O; the state passed in is never changed. Same inputs, same history.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import jsonschema
from pydantic import ValidationError

from procflow.dsl import model as m
from procflow.dsl.errors import ExpressionError, InputError, MessageRefused
from procflow.interpreter.messages import Command, Dispatch, Reply
from procflow.interpreter.state import (
    SCHEMA_VERSION,
    TERMINAL,
    Abandoned,
    Compensation,
    Completion,
    DefinitionRef,
    Failure,
    FailureCause,
    Frame,
    HistoryEntry,
    InstanceState,
    LateAction,
    LateReply,
    Token,
    UndoCommand,
    Wait,
    WaitKind,
    from_epoch,
    iso,
    iso_epoch,
    parse_instant,
)

MAX_NODES_PER_TRANSITION = 200_000
"""A transition that visits more nodes than this without waiting fails the instance (a loop
that never waits would otherwise spin forever)."""

ROOT = "main"

_FAIL_CAUSES: dict[str, FailureCause] = {"fail": "fail", "reply": "reply", "timeout": "timeout"}


@dataclass(slots=True)
class Transition:
    """What one call of the engine produced."""

    state: InstanceState
    dispatches: list[Dispatch] = field(default_factory=list)
    outcome: str = "applied"  # applied | duplicate | late | idle
    note: str | None = None

    @property
    def commands(self) -> list[Command]:
        """The commands to send, in order."""
        return [d.command for d in self.dispatches]


class _Failed(Exception):
    """Raised inside a run when the instance must fail (carries the cause)."""

    def __init__(self, cause: FailureCause, reason: str, step: str | None) -> None:
        super().__init__(reason)
        self.cause = cause
        self.reason = reason
        self.step = step


def _epoch(moment: datetime) -> float:
    return moment.timestamp()


class _Scope(Mapping[str, Any]):
    """What an expression sees in a frame: `input`, `steps`, and the names bound with `as`.
    Built lazily: most expressions read one or two names."""

    __slots__ = ("_frame", "_frame_id", "_completed")

    def __init__(self, frame: Frame, frame_id: str, completed: list[Completion]) -> None:
        self._frame = frame
        self._frame_id = frame_id
        self._completed = completed

    def __getitem__(self, name: str) -> Any:
        if name == "input":
            return self._frame.input
        if name == "steps":
            return steps_of(self._completed, self._frame_id)
        return self._frame.data[name]

    def __contains__(self, name: object) -> bool:
        return name in ("input", "steps") or name in self._frame.data

    def __iter__(self) -> Iterator[str]:
        yield "input"
        yield "steps"
        yield from self._frame.data

    def __len__(self) -> int:
        return 2 + len(self._frame.data)


class _Run:
    """One transition's working copy of a state, and the work it does on it."""

    def __init__(self, definition: m.ProcessDefinition, state: InstanceState, now: datetime) -> None:
        self.definition = definition
        self.now = now
        self.now_epoch = _epoch(now)
        self.now_iso = iso_epoch(self.now_epoch)
        self.state = _thaw(state)
        self.before_status = state.status
        self.before_completed = len(state.completedSteps)
        self.before_failure = state.failure
        self.before_undone = len(state.compensation.undone) if state.compensation else 0
        self.dispatches: list[Dispatch] = []
        self.ready: list[Token] = []
        self.visited = 0

    # ---------------------------------------------------------------- helpers
    def set_now(self, now: datetime) -> None:
        """Move this run's clock (used when several timers fire in one advance)."""
        self.now = now
        self.now_epoch = _epoch(now)
        self.now_iso = iso_epoch(self.now_epoch)

    def _next_seq(self) -> int:
        self.state.seq += 1
        return self.state.seq

    def _definition(self, process: str) -> m.ProcessDefinition:
        root = self.definition
        return root if process == root.name else root.definition_of(process)

    def _node(self, token: Token) -> m.AnyNode:
        frame = self.state.frames[token.frame]
        return self._definition(frame.process).nodes[token.node]

    def _scope(self, frame: Frame) -> _Scope:
        return _Scope(frame, frame_id_of(self.state, frame), self.state.completed)

    def _eval(self, condition: m.Condition | m.Mapping_, frame: Frame, where: str) -> Any:
        try:
            return condition.evaluate(self._scope(frame))
        except ExpressionError as error:
            raise _Failed("error", f"{where}: {error}", None) from None
        except (RecursionError, MemoryError):
            raise _Failed("error", f"{where}: expression too large to evaluate", None) from None

    def _send(
        self, spec: m.CommandSpec, frame: Frame, step: str, attempt: int, data: dict[str, Any] | None = None, token: Token | None = None
    ) -> None:
        payload = data if data is not None else (self._eval(spec.data, frame, f"data of `{spec.name}` in step `{step}`") if spec.data else {})
        command = Command(
            commandName=spec.name,
            workflowId=self.state.workflowId,
            correlationId=frame.correlationId,
            replyTo=self._definition(frame.process).reply_to,
            data=payload,
        )
        self._dispatch(command, step, attempt, _rounds(token))

    def _dispatch(self, command: Command, step: str, attempt: int, rounds: str = "") -> None:
        # `rounds` tells apart the entries of one step in the iterations of a `repeat`.
        key = f"{command.correlationId}:{command.commandName}:{step}{rounds}#{attempt}"
        self.dispatches.append(Dispatch(command=command, step=step, attempt=attempt, dedupKey=key))

    def _due(self, seconds: float) -> tuple[str, float]:
        due = self.now_epoch + seconds
        return iso_epoch(due), due

    def _due_or_none(self, timeout: m.TimeoutSpec | None) -> tuple[str | None, float | None]:
        return self._due(timeout.seconds) if timeout is not None else (None, None)

    # ---------------------------------------------------------------- running tokens
    def run(self) -> None:
        """Move every ready token until it waits, ends or the instance fails."""
        try:
            while self.ready:
                token = self.ready.pop(0)
                self._advance_token(token)
        except _Failed as failed:
            self.fail(failed.cause, failed.reason, failed.step)

    def _advance_token(self, token: Token) -> None:
        while True:
            self.visited += 1
            if self.visited > MAX_NODES_PER_TRANSITION:
                raise _Failed("error", f"ran {MAX_NODES_PER_TRANSITION} nodes without waiting; a loop never waits", None)
            node = self._node(token)
            frame = self.state.frames[token.frame]
            if isinstance(node, m.StartNode | m.LoopNode):
                if isinstance(node, m.LoopNode):
                    token.loops[node.id] = 1
                    token.node = node.body
                else:
                    token.node = node.next
            elif isinstance(node, m.StepNode):
                self._enter_step(token, node, frame)
                return
            elif isinstance(node, m.XorNode):
                token.node = self._choose(node, frame)
            elif isinstance(node, m.ForkNode):
                fork_key = f"{token.frame}:{node.id}#{self._next_seq()}"
                self.state.joins[fork_key] = 0
                self._remove_token(token)
                for _, target in node.branches:
                    child = Token(
                        id=self._next_seq(), node=target, frame=token.frame, loops=dict(token.loops), forks=[*token.forks, fork_key]
                    )
                    self.state.tokens.append(child)
                    self.ready.append(child)
                return
            elif isinstance(node, m.JoinNode):
                fork_key = token.forks.pop()
                arrived = self.state.joins.get(fork_key, 0) + 1
                if arrived < node.expected:
                    self.state.joins[fork_key] = arrived
                    self._remove_token(token)
                    return
                self.state.joins.pop(fork_key, None)
                token.node = node.next
            elif isinstance(node, m.RaceNode):
                self._enter_race(token, node, frame)
                return
            elif isinstance(node, m.UntilNode):
                done = self._eval(node.until, frame, f"condition of `{node.name}`")
                if not isinstance(done, bool):
                    raise _Failed("error", f"`until` of `{node.name}` gave {done!r}, not true or false", None)
                count = token.loops.get(node.loop, 1)
                loop = self._definition(frame.process).nodes[node.loop]
                bound = loop.max if isinstance(loop, m.LoopNode) else None
                if done or (bound is not None and count >= bound):
                    token.loops.pop(node.loop, None)
                    token.node = node.next
                else:
                    token.loops[node.loop] = count + 1
                    token.node = node.body
            elif isinstance(node, m.CallNode):
                self._enter_call(token, node, frame)
            elif isinstance(node, m.FailNode):
                raise _Failed(_FAIL_CAUSES.get(node.cause, "fail"), node.reason, node.step)
            elif isinstance(node, m.EndNode):
                if frame.parent is None:
                    self.complete()
                    return
                self._return_from_call(token, frame)
            else:  # pragma: no cover - every node kind is handled above
                raise TypeError(type(node).__name__)

    def _remove_token(self, token: Token) -> None:
        self.state.tokens = [t for t in self.state.tokens if t.id != token.id]

    def _choose(self, node: m.XorNode, frame: Frame) -> str:
        if node.subject is not None:
            value = self._eval(node.subject, frame, "switch subject")
            for arm in node.arms:
                if any(value == v and isinstance(value, bool) == isinstance(v, bool) for v in arm.values):
                    return arm.target
            return node.default
        for arm in node.arms:
            assert arm.condition is not None
            holds = self._eval(arm.condition, frame, f"condition `{arm.label}`")
            if not isinstance(holds, bool):
                raise _Failed("error", f"condition `{arm.label}` gave {holds!r}, not true or false", None)
            if holds:
                return arm.target
        return node.default

    def _enter_step(self, token: Token, node: m.StepNode, frame: Frame) -> None:
        if node.is_timer:
            if node.timer_seconds is not None:
                timer_at, timer_due = self._due(node.timer_seconds)
            else:
                assert node.timer_until is not None
                value = self._eval(node.timer_until, frame, f"`wait until` of `{node.name}`")
                try:
                    moment = parse_instant(str(value))
                except ValueError:
                    raise _Failed("error", f"`wait until` of `{node.name}` gave {value!r}, not an ISO-8601 instant", node.name) from None
                timer_at, timer_due = iso(moment), _epoch(moment)
            self._add_wait(token, node.name, node.id, frame, "timer", [], None, 1, timer_at, timer_due)
            return
        expects = list(node.replies) + [r for r in node.failures if r not in node.replies]
        timeout_at, due = self._due_or_none(node.timeout)
        if node.command is not None:
            self._send(node.command, frame, node.name, 1, token=token)
            self._add_wait(token, node.name, node.id, frame, "reply", expects, node.command.name, 1, timeout_at, due)
        else:
            self._add_wait(token, node.name, node.id, frame, "event", expects, None, 1, timeout_at, due)

    def _enter_race(self, token: Token, node: m.RaceNode, frame: Frame) -> None:
        expects = [name for arm in node.arms for name in arm.messages]
        best: tuple[float, str] | None = None
        for arm in node.arms:
            if arm.timer_seconds is not None:
                timeout_at, due = self._due(arm.timer_seconds)
            elif arm.timer_at is not None:
                value = self._eval(arm.timer_at, frame, f"timer of race `{node.name}`")
                try:
                    moment = parse_instant(str(value))
                except ValueError:
                    raise _Failed("error", f"timer of race `{node.name}` gave {value!r}, not an ISO-8601 instant", None) from None
                timeout_at, due = iso(moment), _epoch(moment)
            else:
                continue
            if best is None or due < best[0]:
                best = (due, timeout_at)
        self._add_wait(
            token, node.name, node.id, frame, "race", expects, None, 1, best[1] if best else None, best[0] if best else None
        )

    def _add_wait(
        self,
        token: Token,
        step: str,
        node_id: str,
        frame: Frame,
        kind: WaitKind,
        expects: list[str],
        command_name: str | None,
        attempt: int,
        timeout_at: str | None,
        due: float | None,
    ) -> None:
        token.node = node_id
        self.state.waits.append(
            Wait(
                token=token.id,
                step=step,
                node=node_id,
                frame=token.frame,
                kind=kind,
                expects=expects,
                correlationId=frame.correlationId,
                commandName=command_name,
                attempt=attempt,
                since=self.now_iso,
                timeoutAt=timeout_at,
                due=due,
            )
        )

    def _enter_call(self, token: Token, node: m.CallNode, frame: Frame) -> None:
        child_def = self._definition(node.process)
        child_input = self._eval(node.data, frame, f"input of call `{node.name}`") if node.data else {}
        if child_def.input_schema is not None:
            problem = _schema_problem(child_input, child_def.input_schema)
            if problem:
                raise _Failed("error", f"call `{node.name}`: input breaks the contract of `{child_def.name}`: {problem}", None)
        frame_id = f"{token.frame}/{node.name}#{self._next_seq()}"
        correlation = frame.correlationId
        if child_def.correlate is not None:
            value = self._eval(child_def.correlate, Frame(process=child_def.name, input=child_input, data={}, correlationId="", parent=None, call=None), "correlation key")
            correlation = value if isinstance(value, str) else str(value)
        self.state.frames[frame_id] = Frame(
            process=child_def.name, input=child_input, data={}, correlationId=correlation, parent=token.frame, call=node.id
        )
        token.frame = frame_id
        token.node = child_def.start

    def _return_from_call(self, token: Token, frame: Frame) -> None:
        assert frame.parent is not None and frame.call is not None
        parent = self.state.frames[frame.parent]
        call = self._definition(parent.process).nodes[frame.call]
        assert isinstance(call, m.CallNode)
        if call.bind:
            parent.data[call.bind] = {**frame.data, "steps": steps_of(self.state.completed, token.frame)}
        token.frame = frame.parent
        token.node = call.next

    # ---------------------------------------------------------------- outcomes
    def complete(self) -> None:
        """The main process reached an end: the instance completed."""
        self._cancel_all(abandon=True)
        self.state.status = "completed"

    def _cancel_all(self, abandon: bool) -> None:
        for wait in self.state.waits:
            if abandon and wait.kind in ("reply", "backoff") and wait.commandName:
                self._abandon(wait)
        self.state.waits = []
        self.state.tokens = []
        self.state.joins = {}
        self.ready = []

    def _abandon(self, wait: Wait) -> None:
        frame = self.state.frames[wait.frame]
        node = self._definition(frame.process).nodes[wait.node]
        assert isinstance(node, m.StepNode)
        undo = None
        if node.compensation is not None:
            try:
                undo = self._undo_for(node, frame)
            except _Failed:
                undo = None
        self.state.abandoned.append(
            Abandoned(
                step=node.name,
                frame=wait.frame,
                process=frame.process,
                commandName=wait.commandName or "",
                correlationId=wait.correlationId,
                successes=list(node.replies),
                undo=undo,
                at=self.now_iso,
            )
        )

    def fail(self, cause: FailureCause, reason: str, step: str | None) -> None:
        """The instance failed: stop everything and undo completed steps in reverse order."""
        self._cancel_all(abandon=True)
        self.state.failure = Failure(cause=cause, reason=reason, step=step, at=self.now_iso)
        pending = [c.undo for c in reversed(self.state.completed) if c.undo is not None]
        self.state.compensation = Compensation(pending=pending, undone=[], failed=None, settledStatus=None, attempts={}, roundStart=1)
        self._next_undo()

    def _settled_failure_status(self) -> str:
        failure = self.state.failure
        comp = self.state.compensation
        if comp is not None and comp.undone:
            return "compensated"
        if failure is not None and failure.cause in ("timeout", "deadline"):
            return "timed_out"
        return "failed"

    def _next_undo(self) -> None:
        comp = self.state.compensation
        assert comp is not None
        while comp.pending:
            undo = comp.pending[0]
            spec = self._undo_spec(undo)
            attempt = self._count_undo_attempt(undo)
            comp.roundStart = attempt
            self._send_undo(undo, attempt)
            if spec is not None and spec.replies:
                timeout_at, due = self._due_or_none(spec.timeout)
                self.state.waits.append(
                    Wait(
                        token=0,
                        step=f"undo:{undo.step}",
                        node=undo.step,
                        frame=undo.frame,
                        kind="compensation",
                        expects=list(spec.replies),
                        correlationId=undo.correlationId,
                        commandName=undo.commandName,
                        attempt=attempt,
                        since=self.now_iso,
                        timeoutAt=timeout_at,
                        due=due,
                    )
                )
                self.state.status = "compensating"
                return
            comp.undone.append(comp.pending.pop(0))  # fire-and-forget undo: done once sent
        # All undone: a late undo after a completed instance leaves it completed; otherwise
        # the failure is settled (compensated when anything was undone).
        self.state.status = "completed" if comp.settledStatus == "completed" else self._settled_failure_status()
        comp.settledStatus = None

    def _count_undo_attempt(self, undo: UndoCommand) -> int:
        """The next attempt number of an undo: attempts continue across resumes, so every send
        of the same undo has its own dedup key."""
        comp = self.state.compensation
        assert comp is not None
        key = f"{undo.frame}:{undo.step}{undo.round}"
        attempt = comp.attempts.get(key, 0) + 1
        comp.attempts[key] = attempt
        return attempt

    def _send_undo(self, undo: UndoCommand, attempt: int) -> None:
        self._dispatch(
            Command(
                commandName=undo.commandName,
                workflowId=self.state.workflowId,
                correlationId=undo.correlationId,
                replyTo=self._definition(undo.process).reply_to,
                data=undo.data,
            ),
            f"undo:{undo.step}",
            attempt,
            undo.round,
        )

    def _undo_spec(self, undo: UndoCommand) -> m.CompensationSpec | None:
        node = self._definition(undo.process).nodes.get(undo.step)
        return node.compensation if isinstance(node, m.StepNode) else None

    def _undo_for(self, node: m.StepNode, frame: Frame, rounds: str = "") -> UndoCommand | None:
        comp = node.compensation
        if comp is None:
            return None
        data = self._eval(comp.command.data, frame, f"compensation of `{node.name}`") if comp.command.data else {}
        return UndoCommand(
            step=node.name,
            frame=frame_id_of(self.state, frame),
            process=frame.process,
            commandName=comp.command.name,
            correlationId=frame.correlationId,
            data=data,
            round=rounds,
        )

    # ---------------------------------------------------------------- messages
    def accept(self, wait: Wait, reply: Reply) -> None:
        """A reply or event that a wait expects has arrived."""
        self.state.waits = [w for w in self.state.waits if w is not wait]
        frame = self.state.frames[wait.frame]
        if wait.kind in ("compensation", "compensation_backoff"):
            comp = self.state.compensation
            assert comp is not None
            comp.undone.append(comp.pending.pop(0))
            self._next_undo()
            return
        token = next(t for t in self.state.tokens if t.id == wait.token)
        node = self._definition(frame.process).nodes[wait.node]
        if isinstance(node, m.RaceNode):
            arm = next(a for a in node.arms if reply.type in a.messages)
            if arm.bind:
                frame.data[arm.bind] = reply.data
            token.node = arm.target
            self.ready.append(token)
            self.run()
            return
        assert isinstance(node, m.StepNode)
        if reply.type in node.failures and reply.type not in node.replies:
            bind = node.failure_binds.get(reply.type)
            if bind:
                frame.data[bind] = reply.data
            token.node = node.failures[reply.type]
            self.ready.append(token)
            self.run()
            return
        if node.bind:
            frame.data[node.bind] = reply.data
        try:
            undo = self._undo_for(node, frame, _rounds(token))
        except _Failed as failed:
            self.fail(failed.cause, failed.reason, node.name)
            return
        self.state.completed.append(
            Completion(step=node.name, frame=wait.frame, outcome=reply.type, at=self.now_iso, undo=undo)
        )
        self.state.completedSteps.append(reply.type)
        token.node = node.next
        self.ready.append(token)
        self.run()

    def late(self, abandoned: Abandoned, reply: Reply) -> LateAction:
        """A reply for a step that gave up: undo a late success, record anything else."""
        self.state.abandoned = [a for a in self.state.abandoned if a is not abandoned]
        success = reply.type in abandoned.successes
        undo = self._late_undo(abandoned, reply) if success else None
        action: LateAction = "compensated" if undo is not None else "recorded"
        self.state.lateReplies.append(
            LateReply(type=reply.type, step=abandoned.step, at=self.now_iso, action=action)
        )
        if undo is not None:
            comp = self.state.compensation
            if comp is None:
                comp = Compensation(pending=[], undone=[], failed=None, settledStatus=None, attempts={}, roundStart=1)
                self.state.compensation = comp
            if self.state.status == "compensating":
                comp.pending.insert(1 if comp.pending else 0, undo)
            else:
                comp.settledStatus = self.state.status
                comp.failed = None  # a failed undo still pending is retried after this one
                comp.pending.insert(0, undo)
                self._next_undo()
        return action

    def _late_undo(self, abandoned: Abandoned, reply: Reply) -> UndoCommand | None:
        """The undo of a late success, its mapping read with the late payload bound to the
        step's `as` name, as if the reply had come in time (`void { id: auth.id }` needs it)."""
        node = self._definition(abandoned.process).nodes.get(abandoned.step)
        frame = self.state.frames.get(abandoned.frame)
        if not isinstance(node, m.StepNode) or node.compensation is None or frame is None:
            return abandoned.undo
        comp = node.compensation
        bound = frame
        if node.bind:
            # Bind the late payload in the live frame for this one evaluation only.
            bound = frame.model_copy(update={"data": {**frame.data, node.bind: reply.data}})
            self.state.frames[abandoned.frame] = bound
        try:
            data = self._eval(comp.command.data, bound, f"compensation of `{node.name}`") if comp.command.data else {}
        except _Failed:
            return abandoned.undo
        finally:
            self.state.frames[abandoned.frame] = frame
        return UndoCommand(
            step=node.name,
            frame=abandoned.frame,
            process=abandoned.process,
            commandName=comp.command.name,
            correlationId=abandoned.correlationId,
            data=data,
        )

    # ---------------------------------------------------------------- time
    def fire(self, wait: Wait) -> None:
        """A wait's time has come: a timer ends, a timeout retries or fails, a backoff resends."""
        self.state.waits = [w for w in self.state.waits if w is not wait]
        frame = self.state.frames[wait.frame]
        if wait.kind in ("compensation", "compensation_backoff"):
            self._fire_compensation(wait, frame)
            return
        token = next(t for t in self.state.tokens if t.id == wait.token)
        node = self._definition(frame.process).nodes[wait.node]
        if isinstance(node, m.RaceNode):
            timed = [a for a in node.arms if not a.messages]
            arm = timed[0]
            if len(timed) > 1:
                arm = min(timed, key=lambda a: self._arm_due(a, frame, wait))
            token.node = arm.target
            self.ready.append(token)
            self.run()
            return
        assert isinstance(node, m.StepNode)
        if wait.kind == "timer":
            self.state.completed.append(
                Completion(step=node.name, frame=wait.frame, outcome=node.name, at=self.now_iso, undo=None)
            )
            self.state.completedSteps.append(node.name)
            token.node = node.next
            self.ready.append(token)
            self.run()
            return
        timeout = node.timeout
        if wait.kind == "backoff":
            assert node.command is not None and timeout is not None
            self._resend(token, node, frame, wait, node.command, timeout)
            return
        if timeout is not None and node.command is not None and wait.attempt <= timeout.retries:
            delay = timeout.backoff_before(wait.attempt + 1)
            if delay > 0:
                timeout_at, due = self._due(delay)
                self._add_wait(token, node.name, node.id, frame, "backoff", wait.expects, wait.commandName, wait.attempt, timeout_at, due)
                return
            self._resend(token, node, frame, wait, node.command, timeout)
            return
        if wait.commandName:
            self._abandon(wait)
        assert node.timeout_fail is not None
        token.node = node.timeout_fail
        self.ready.append(token)
        self.run()

    def _resend(self, token: Token, node: m.StepNode, frame: Frame, wait: Wait, command: m.CommandSpec, timeout: m.TimeoutSpec) -> None:
        """Send the step's command again (the next attempt) and wait for its reply anew."""
        attempt = wait.attempt + 1
        try:
            self._send(command, frame, node.name, attempt, token=token)
        except _Failed as failed:
            self.fail(failed.cause, failed.reason, node.name)
            return
        timeout_at, due = self._due(timeout.seconds)
        self._add_wait(token, node.name, node.id, frame, "reply", wait.expects, wait.commandName, attempt, timeout_at, due)

    def _arm_due(self, arm: m.RaceArmSpec, frame: Frame, wait: Wait) -> float:
        since = _epoch(parse_instant(wait.since))
        if arm.timer_seconds is not None:
            return since + arm.timer_seconds
        assert arm.timer_at is not None
        try:
            return _epoch(parse_instant(str(self._eval(arm.timer_at, frame, "race timer"))))
        except ValueError:
            return float("inf")

    def _fire_compensation(self, wait: Wait, frame: Frame) -> None:
        comp = self.state.compensation
        assert comp is not None
        undo = comp.pending[0]
        spec = self._undo_spec(undo)
        timeout = spec.timeout if spec else None
        retries_used = wait.attempt - comp.roundStart
        if wait.kind == "compensation_backoff" or (timeout is not None and retries_used < timeout.retries):
            if wait.kind == "compensation":
                delay = timeout.backoff_before(retries_used + 2) if timeout else 0.0
                if delay > 0:
                    backoff_at, backoff_due = self._due(delay)
                    self.state.waits.append(
                        wait.model_copy(update={"kind": "compensation_backoff", "since": self.now_iso, "timeoutAt": backoff_at, "due": backoff_due})
                    )
                    return
            attempt = self._count_undo_attempt(undo)
            self._send_undo(undo, attempt)
            timeout_at, due = self._due_or_none(timeout)
            self.state.waits.append(
                wait.model_copy(update={"kind": "compensation", "attempt": attempt, "since": self.now_iso, "timeoutAt": timeout_at, "due": due})
            )
            return
        comp.failed = undo
        self.state.status = "compensation_failed"

    # ---------------------------------------------------------------- the visible record
    def finish(self, event: str, message: Reply | None, note: str | None = None) -> Transition:
        """Derive the lesson's fields, append the history entry, return the transition."""
        state = self.state
        _derive(self.definition, state)
        state.updatedAt = self.now_iso
        changes: dict[str, Any] = {}
        if state.status != self.before_status:
            changes["status"] = [self.before_status, state.status]
        new_completed = state.completedSteps[self.before_completed :]
        if new_completed:
            changes["completedSteps"] = list(new_completed)
        if state.failure is not None and self.before_failure is None:
            changes["failure"] = state.failure.reason
        undone = len(state.compensation.undone) if state.compensation else 0
        if undone > self.before_undone:
            assert state.compensation is not None
            changes["undone"] = [u.commandName for u in state.compensation.undone[self.before_undone :]]
        entry = HistoryEntry(
            seq=len(state.history) + 1,
            at=self.now_iso,
            event=event,
            message=_message_summary(message) if message else None,
            changes=changes,
            sent=[f"{d.command.commandName}#{d.attempt}" for d in self.dispatches],
            note=note,
        )
        state.history.append(entry)
        return Transition(state, self.dispatches, "applied", note)


def _rounds(token: Token | None) -> str:
    """`@2` in the second iteration of the enclosing `repeat` (`@1.3` when nested), else empty."""
    if token is None or not token.loops:
        return ""
    return "@" + ".".join(str(n) for n in token.loops.values())


def steps_of(completed: list[Completion], frame_id: str) -> dict[str, dict[str, str]]:
    """`steps` as expressions see it: step -> {"reply": the reply that completed it last}.
    Derived from the completion records, so no per-step map is copied on every transition."""
    return {c.step: {"reply": c.outcome} for c in completed if c.frame == frame_id}


def frame_id_of(state: InstanceState, frame: Frame) -> str:
    """The id under which a frame is kept in the state ("" for a frame built for one evaluation,
    such as a callee's correlation key, which is not in the state)."""
    frames = state.frames
    if frames.get(ROOT) is frame:
        return ROOT
    return next((key for key, value in frames.items() if value is frame), "")


def _message_summary(message: Reply) -> dict[str, Any]:
    out: dict[str, Any] = {"type": message.type, "correlationId": message.correlationId}
    if message.messageId:
        out["messageId"] = message.messageId
    if message.data:
        out["data"] = message.data
    return out


def _status_part(definition: m.ProcessDefinition, state: InstanceState, wait: Wait) -> str:
    frame = state.frames[wait.frame]
    node = definition.definition_of(frame.process).nodes[wait.node]
    if isinstance(node, m.StepNode):
        if node.status:
            return node.status
        if node.command is not None:
            return f"waiting_for_{node.command.participant}"
        if node.is_timer:
            return f"waiting_for_{node.name}"
        return f"waiting_for_{node.replies[0] if node.replies else node.name}"
    if isinstance(node, m.RaceNode):
        return node.status or f"waiting_for_{node.name}"
    return f"waiting_for_{wait.step}"


_INSTANTS: dict[str, float] = {}


def _instant_epoch(text: str) -> float:
    epoch = _INSTANTS.get(text)
    if epoch is None:
        if len(_INSTANTS) > 4096:
            _INSTANTS.clear()
        epoch = _INSTANTS[text] = parse_instant(text).timestamp()
    return epoch


def _derive(definition: m.ProcessDefinition, state: InstanceState) -> None:
    """Fill the lesson's fields (status, nextAction, timeoutAt) from the detailed record."""
    waits = state.waits
    dues = [w.due for w in waits if w.due is not None]
    if state.status in TERMINAL and not waits:
        comp = state.compensation
        state.nextAction = f"undo_{comp.failed.step}" if state.status == "compensation_failed" and comp and comp.failed else None
        state.timeoutAt = None
        return
    if state.status == "compensating":
        current = next((w for w in waits if w.kind.startswith("compensation")), None)
        state.nextAction = f"undo_{current.node}" if current else None
    else:
        parts: list[str] = []
        for wait in waits:
            part = _status_part(definition, state, wait)
            if part not in parts:
                parts.append(part)
        if len(parts) == 1:
            state.status = parts[0]
        elif parts:
            state.status = "waiting_for_" + "_and_".join(p.removeprefix("waiting_for_") for p in parts)
        steps = list(dict.fromkeys(w.step for w in waits))
        state.nextAction = ", ".join(steps) if steps else None
        if state.deadlineAt is not None:
            dues.append(_instant_epoch(state.deadlineAt))
    if dues:
        earliest = min(dues)
        state.timeoutAt = next((w.timeoutAt for w in waits if w.due == earliest), None) or state.deadlineAt
    else:
        state.timeoutAt = None


def _thaw(state: InstanceState) -> InstanceState:
    """A working copy whose mutable parts are the engine's own (the input is never changed).

    Records that the engine only replaces (waits, completions, history entries) are shared;
    the containers and the records it edits in place (tokens, frames, compensation) are copied.
    Written out by hand: `dataclasses.replace` costs five times as much on this hot path."""
    comp = state.compensation
    return InstanceState(
        workflowId=state.workflowId,
        type=state.type,
        status=state.status,
        completedSteps=list(state.completedSteps),
        nextAction=state.nextAction,
        timeoutAt=state.timeoutAt,
        schemaVersion=state.schemaVersion,
        definition=state.definition,
        correlationId=state.correlationId,
        startedAt=state.startedAt,
        updatedAt=state.updatedAt,
        deadlineAt=state.deadlineAt,
        input=state.input,
        waits=list(state.waits),
        tokens=[Token(id=t.id, node=t.node, frame=t.frame, loops=dict(t.loops), forks=list(t.forks)) for t in state.tokens],
        frames={
            key: Frame(
                process=f.process,
                input=f.input,
                data=dict(f.data),
                correlationId=f.correlationId,
                parent=f.parent,
                call=f.call,
            )
            for key, f in state.frames.items()
        },
        joins=dict(state.joins),
        completed=list(state.completed),
        compensation=Compensation(
            pending=list(comp.pending),
            undone=list(comp.undone),
            failed=comp.failed,
            settledStatus=comp.settledStatus,
            attempts=dict(comp.attempts),
            roundStart=comp.roundStart,
        )
        if comp is not None
        else None,
        failure=state.failure,
        abandoned=list(state.abandoned),
        lateReplies=list(state.lateReplies),
        seenMessageIds=list(state.seenMessageIds),
        seq=state.seq,
        history=list(state.history),
    )


_SIMPLE_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
}
_SIMPLE_KEYWORDS = frozenset({"type", "properties", "required", "items", "enum", "title", "description"})


def _surely_valid(value: Any, schema: dict[str, Any]) -> bool:
    """A quick check for the schemas the language writes (type, properties, required, items,
    string enums): True only when jsonschema would certainly accept `value`. Anything else,
    or any doubt, says False and jsonschema decides."""
    if not schema.keys() <= _SIMPLE_KEYWORDS:
        return False
    kind = schema.get("type")
    if kind is not None:
        check = _SIMPLE_TYPES.get(kind) if isinstance(kind, str) else None
        if check is None or not check(value):
            return False
    enum = schema.get("enum")
    if enum is not None and not (isinstance(value, str) and value in enum and all(isinstance(e, str) for e in enum)):
        return False
    if isinstance(value, dict):
        for name in schema.get("required", ()):
            if name not in value:
                return False
        for name, sub in schema.get("properties", {}).items():
            if name in value and not (isinstance(sub, dict) and _surely_valid(value[name], sub)):
                return False
    elif "properties" in schema or "required" in schema:
        return False  # jsonschema ignores these for non-objects; let it decide
    if isinstance(value, list) and "items" in schema:
        items = schema["items"]
        return isinstance(items, dict) and all(_surely_valid(item, items) for item in value)
    return True


_VALIDATORS: dict[int, tuple[dict[str, Any], jsonschema.protocols.Validator]] = {}


def _schema_problem(value: Any, schema: dict[str, Any]) -> str | None:
    """None when `value` satisfies `schema`; else the most relevant problem, in words.

    Validators are built once per schema (definitions are immutable; the schema is kept
    alive beside its validator so its id cannot be reused)."""
    cached = _VALIDATORS.get(id(schema))
    if cached is None or cached[0] is not schema:
        cached = (schema, jsonschema.Draft202012Validator(schema))
        _VALIDATORS[id(schema)] = cached
    if _surely_valid(value, schema):
        return None
    validator = cached[1]
    if validator.is_valid(value):
        return None
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{error.message}" + (f" (at `{where}`)" if where else "")


# ---------------------------------------------------------------- the public functions


def start(definition: m.ProcessDefinition, workflow_id: str, input: dict[str, Any], now: datetime) -> Transition:
    """A new instance: check the input, send the first commands, wait."""
    if not isinstance(input, dict):
        raise InputError(f"the input of `{definition.name}` must be a JSON object, not {type(input).__name__}")
    if definition.input_schema is not None:
        problem = _schema_problem(input, definition.input_schema)
        if problem:
            raise InputError(f"the input breaks the contract of `{definition.name}`: {problem}")
    correlation = workflow_id
    if definition.correlate is not None:
        try:
            value = definition.correlate.evaluate({"input": input, "steps": {}})
        except ExpressionError as error:
            raise InputError(f"cannot compute the correlation key `{definition.correlate.text}`: {error}") from None
        if value is None:
            raise InputError(f"the correlation key `{definition.correlate.text}` is missing from the input")
        correlation = value if isinstance(value, str) else str(value)
    now_iso = iso(now)
    state = InstanceState(
        workflowId=workflow_id,
        type=definition.name,
        status="running",
        completedSteps=[],
        nextAction=None,
        timeoutAt=None,
        schemaVersion=SCHEMA_VERSION,
        definition=DefinitionRef(name=definition.name, version=definition.version, fingerprint=definition.fingerprint),
        correlationId=correlation,
        startedAt=now_iso,
        updatedAt=now_iso,
        deadlineAt=iso(now + timedelta(seconds=definition.deadline_seconds)) if definition.deadline_seconds else None,
        input=input,
        waits=[],
        tokens=[Token(id=1, node=definition.start, frame=ROOT, loops={}, forks=[])],
        frames={ROOT: Frame(process=definition.name, input=input, data={}, correlationId=correlation, parent=None, call=None)},
        joins={},
        completed=[],
        compensation=None,
        failure=None,
        abandoned=[],
        lateReplies=[],
        seenMessageIds=[],
        seq=1,
        history=[],
    )
    run = _Run(definition, state, now)
    run.ready.append(run.state.tokens[0])
    run.run()
    return run.finish("started", None)


def _check_pinned(definition: m.ProcessDefinition, state: InstanceState) -> None:
    ref = state.definition
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
    """A reply or event for this instance. Refused (MessageRefused, state untouched) when nobody waits for it."""
    _check_pinned(definition, state)
    if reply.workflowId is not None and reply.workflowId != state.workflowId:
        raise MessageRefused(
            f"`{reply.type}` is addressed to instance {reply.workflowId}, not {state.workflowId}", state.workflowId
        )
    if reply.messageId is not None and reply.messageId in state.seenMessageIds:
        return Transition(state, [], "duplicate", f"message {reply.messageId} was already handled")
    wait = next(
        (w for w in state.waits if reply.type in w.expects and w.correlationId == reply.correlationId), None
    )
    correlations = {f.correlationId for f in state.frames.values()}
    if reply.correlationId not in correlations:
        raise MessageRefused(
            f"instance {state.workflowId} ({state.type}) correlates by {', '.join(sorted(correlations))}, "
            f"not `{reply.correlationId}`; {_expected_text(state)}",
            state.workflowId,
        )
    if wait is not None:
        schema = _payload_schema(definition, state, wait, reply.type)
        if schema is not None:
            problem = _schema_problem(reply.data, schema)
            if problem:
                raise MessageRefused(
                    f"instance {state.workflowId}: the payload of `{reply.type}` for step `{wait.step}` "
                    f"breaks its declared schema: {problem}",
                    state.workflowId,
                    wait.step,
                )
        run = _Run(definition, state, now)
        if reply.messageId is not None:
            run.state.seenMessageIds.append(reply.messageId)
        live = next(w for w in run.state.waits if w.token == wait.token and w.step == wait.step and w.kind == wait.kind)
        run.accept(live, reply)
        kind = "event" if wait.kind in ("event", "race") else "reply"
        return run.finish(kind, reply)
    abandoned = next(
        (a for a in state.abandoned if a.correlationId == reply.correlationId and reply.type in a.successes), None
    )
    if abandoned is None:
        abandoned = next(
            (a for a in state.abandoned if a.correlationId == reply.correlationId and _is_reply_of(definition, a, reply.type)),
            None,
        )
    if abandoned is not None:
        run = _Run(definition, state, now)
        if reply.messageId is not None:
            run.state.seenMessageIds.append(reply.messageId)
        live_abandoned = next(
            a for a in run.state.abandoned if a.step == abandoned.step and a.at == abandoned.at and a.frame == abandoned.frame
        )
        action = run.late(live_abandoned, reply)
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


def _is_reply_of(definition: m.ProcessDefinition, abandoned: Abandoned, reply_type: str) -> bool:
    node = definition.definition_of(abandoned.process).nodes.get(abandoned.step)
    return isinstance(node, m.StepNode) and reply_type in node.failures


_HAS_PAYLOAD_SCHEMAS: dict[int, tuple[m.ProcessDefinition, bool]] = {}


def _has_payload_schemas(process: m.ProcessDefinition) -> bool:
    cached = _HAS_PAYLOAD_SCHEMAS.get(id(process))
    if cached is None or cached[0] is not process:
        found = any(v is not None for v in process.events.values()) or any(
            v is not None for p in process.participants.values() for v in p.replies.values()
        )
        cached = (process, found)
        _HAS_PAYLOAD_SCHEMAS[id(process)] = cached
    return cached[1]


def _payload_schema(definition: m.ProcessDefinition, state: InstanceState, wait: Wait, reply_type: str) -> dict[str, Any] | None:
    process = definition.definition_of(state.frames[wait.frame].process)
    if not _has_payload_schemas(process):
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
    """Time has passed: fire every timer, timeout, retry and deadline that is due, in order."""
    _check_pinned(definition, state)
    now_epoch = _epoch(now)
    deadline_due = (
        state.deadlineAt is not None
        and parse_instant(state.deadlineAt).timestamp() <= now_epoch
        and state.status not in TERMINAL
        and state.status != "compensating"
    )
    due = [w for w in state.waits if w.due is not None and w.due <= now_epoch]
    if not due and not deadline_due:
        return Transition(state, [], "idle", None)
    run = _Run(definition, state, now)
    fired: list[str] = []
    for _ in range(MAX_NODES_PER_TRANSITION):
        pending = sorted(
            (w for w in run.state.waits if w.due is not None and w.due <= now_epoch), key=lambda w: (w.due or 0.0, w.token)
        )
        deadline_now = (
            run.state.deadlineAt is not None
            and parse_instant(run.state.deadlineAt).timestamp() <= now_epoch
            and run.state.failure is None
            and run.state.status not in TERMINAL
        )
        if deadline_now and (not pending or (pending[0].due or 0.0) >= parse_instant(run.state.deadlineAt or "").timestamp()):
            fired.append("the deadline passed")
            run.set_now(parse_instant(run.state.deadlineAt or ""))
            run.fail("deadline", f"the deadline of `{definition.name}` passed", None)
            continue
        if not pending:
            break
        wait = pending[0]
        fired.append(_fired_text(wait))
        # Fire at the moment the timer was due, so a long jump gives the same history as small ticks.
        run.set_now(from_epoch(max(wait.due or now_epoch, run.now_epoch)))
        run.fire(wait)
    run.set_now(now)
    event = "deadline" if "the deadline passed" in fired else "timer"
    return run.finish(event, None, "; ".join(fired))


def _fired_text(wait: Wait) -> str:
    if wait.kind == "timer":
        return f"timer of `{wait.step}` fired"
    if wait.kind == "race":
        return f"timer of race `{wait.step}` fired"
    if wait.kind in ("backoff", "compensation_backoff"):
        return f"`{wait.step}` retries after backoff"
    return f"`{wait.step}` got no reply in time (attempt {wait.attempt})"


def resume(definition: m.ProcessDefinition, state: InstanceState, now: datetime) -> Transition:
    """An operator resumes a `compensation_failed` instance: the failed undo is sent again."""
    _check_pinned(definition, state)
    if state.status != "compensation_failed" or state.compensation is None or not state.compensation.pending:
        raise MessageRefused(
            f"instance {state.workflowId} is {state.status}; only a compensation_failed instance can be resumed",
            state.workflowId,
        )
    run = _Run(definition, state, now)
    comp = run.state.compensation
    assert comp is not None
    comp.failed = None
    run._next_undo()
    return run.finish("resumed", None, f"operator resumed compensation at `{comp.pending[0].step if comp.pending else '-'}`")


def validate_reply(data: Any) -> Reply:
    """A reply from JSON data, or MessageRefused saying what is wrong with it."""
    try:
        return Reply.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'message'}: {e['msg']}" for e in error.errors())
        raise MessageRefused(f"not a valid reply: {problems}") from None
