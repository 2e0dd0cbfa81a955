"""Failing and undoing: stop everything, then send the undo commands of the completed steps,
most recent first, each awaited (with its retries) before the next; a late success of a step
that gave up is undone as well. Builds on the working copy of `run.py` (copy on write: the
compensation record is the run's own copy, its tuples and mappings are replaced, not changed).
"""

from __future__ import annotations

import dataclasses

from procflow.dsl import model as m
from procflow.interpreter.messages import Command, Reply
from procflow.interpreter.state import (
    EMPTY,
    ROOT,
    Abandoned,
    Compensation,
    Failure,
    FailureCause,
    Frame,
    FrameView,
    LateAction,
    LateReply,
    Token,
    UndoCommand,
    Wait,
)
from procflow.interpreter.transition import Failed, RunCore, frame_id_of


class Compensating(RunCore):
    """The outcomes of a run: completion, failure, and the compensation that follows."""

    __slots__ = ()

    def complete(self, outcome: str | None = None, timed_out: bool = False) -> None:
        """The main process reached an end (a named one gives its `outcome`): the instance
        completed; or the end of its deadline handler: it is `timed_out`, nothing undone.
        A completed instance computes its process's `output { ... }` first (an error in it fails
        the instance, as any expression's does)."""
        output = self.definition.output
        if output is not None and not timed_out:
            self.state.output = self._eval(output, self.state, "output of `{}`", self.root_name)
        self._cancel_all(abandon=True)
        self.state.outcome = outcome
        if timed_out:
            self.state.status = "timed_out"
            self.state.failure = Failure(cause="deadline", reason=f"the deadline of `{self.root_name}` passed", step=None, at=self.now_at)
            return
        self.state.status = "completed"

    def deadline_passed(self, reason: str) -> None:
        """The instance's deadline passed: it fails and compensates, or, when the process has a
        deadline handler (`deadline D { ... }`), everything it waits for is abandoned and the
        handler runs in the main process, without a deadline (its waits bound themselves)."""
        handler = self.definition.outcomes(self.definition.start).get("deadline")
        if handler is None:
            self.fail("deadline", reason, None)
            return
        self._cancel_all(abandon=True)
        self.state.deadlineAt = None
        token = Token(id=self._next_seq(), node=handler, frame=ROOT)
        self._add_token(token)
        self.run(token)

    def _cancel_all(self, abandon: bool) -> None:
        for wait in self.state.waits:
            if abandon and wait.kind in ("reply", "backoff") and wait.commandName:
                self._abandon(wait)
        self.state.waits = ()
        self.state.tokens = ()
        self.state.joins = EMPTY
        self.state.each = EMPTY
        self.ready = []

    def _abandon(self, wait: Wait, undo_late: bool = True) -> None:
        """Keep a step's command that no longer awaits a reply (`abandoned`); a late success is
        undone unless `undo_late` is False (the step's undo already runs `even on failure`)."""
        frame = self.frames[wait.frame]
        node = self._definition(frame.process).nodes[wait.node]
        assert isinstance(node, m.StepNode)
        undo = None
        if node.compensation is not None and undo_late:
            try:
                undo = self._undo_for(node, frame)
            except Failed:
                undo = None
        abandoned = Abandoned(
            step=node.name, frame=wait.frame, process=frame.process, commandName=wait.commandName or "", correlationId=wait.correlationId,
            successes=tuple(node.replies), undo=undo, at=self.now_at,
        )
        self.state.abandoned = self.state.abandoned + (abandoned,)

    def fail(self, cause: FailureCause, reason: str, step: str | None) -> None:
        """The instance failed: stop everything and undo completed steps in reverse order."""
        losers, attempts = self.cancelled_undos()  # the undos of `first of` losers not yet done come first
        self._cancel_all(abandon=True)
        reply = self.failing_reply if cause == "reply" else None
        self.state.failure = Failure(
            cause=cause, reason=reason, step=step, at=self.now_at,
            reply=reply.type if reply is not None else None, data=reply.data if reply is not None else None,
        )
        taken = self.undos_taken()  # (what `first of` blocks undid, or undo now, is not undone again)
        pending = losers + tuple(
            self._with_failure_data(c.undo) for c in reversed(self.state.completed)
            if c.undo is not None and (not taken or (c.undo.frame, c.undo.step, c.undo.round) not in taken)
        )
        self.state.compensation = Compensation(pending=pending, undone=(), failed=None, settledStatus=None, attempts=attempts or EMPTY, roundStart=1)
        self._next_undo()

    def _with_failure_data(self, undo: UndoCommand) -> UndoCommand:
        """The undo with the fields of its mapping that read `failure` (`failure_data`),
        computed now, in the frame the step completed in, with `failure` bound to the
        instance's failure (null when it has none: a late success undone after it completed).
        A field that cannot be computed is null: the undo still runs."""
        spec = self._undo_spec(undo)
        if spec is None or spec.failure_data is None:
            return undo
        failure = self.state.failure.as_value() if self.state.failure is not None else None
        frame = self.frames.get(undo.frame)
        bound = Frame(
            process=undo.process, input=frame.input if frame is not None else EMPTY,
            data={**(frame.data if frame is not None else EMPTY), m.FAILURE_NAME: failure}, correlationId=undo.correlationId,
        )
        self.frames[undo.frame] = bound
        try:
            later = self._eval(spec.failure_data, bound, "compensation of `{}`", undo.step)
        except Failed:
            later = {key: None for key, _ in spec.failure_data.expr.pairs}
        finally:
            if frame is not None:
                self.frames[undo.frame] = frame
            else:
                del self.frames[undo.frame]
        merged = {**undo.data, **later}
        data = {key: merged[key] for key in spec.keys if key in merged}
        return dataclasses.replace(undo, data=data)

    def undos_taken(self) -> frozenset[tuple[str, str, str]]:
        """(frame, step, round) of the undos `first of` blocks took over (`first_of.FirstOf`)."""
        return frozenset()

    def cancelled_undos(self) -> tuple[tuple[UndoCommand, ...], dict[str, int]]:
        """The undos of `first of` losers not yet confirmed, taken over by a failure's
        compensation, with the attempts sent of the one in flight (`first_of.FirstOf`)."""
        return (), EMPTY

    def _settled_failure_status(self) -> str:
        failure = self.state.failure
        comp = self.state.compensation
        if comp is not None and comp.undone:
            return "compensated"
        if failure is not None and failure.cause in ("timeout", "deadline"):
            return "timed_out"
        return "failed"

    def _comp(self) -> Compensation:
        comp = self.state.compensation
        assert comp is not None
        return comp

    def _next_undo(self) -> None:
        """Send what can be sent now and wait, or settle the compensation when nothing is left.

        The undos in flight are the ones the instance waits for. New ones are sent only when
        every undo in flight belongs to the wave that comes next (`_wave`): one undo, most
        recent first, or the first undo of each branch of a parallel block undone in parallel.
        After a failed undo (`on undo failure stop`) nothing new is sent: the ones in flight
        are awaited, then the instance is `compensation_failed`."""
        comp = self._comp()
        while True:
            flying = self._undos_in_flight()
            if comp.failed is not None:
                self.state.status = "compensating" if flying else "compensation_failed"
                return
            if not comp.pending:
                break
            wave = self._wave(comp.pending)
            keys = {(u.frame, u.step) for u in wave}
            if not flying <= keys:  # an undo of an earlier wave is still awaited: finish it first
                self.state.status = "compensating"
                return
            waiting = bool(flying)
            for undo in wave:
                if (undo.frame, undo.step) not in flying:
                    if self._start_undo(undo, beside=len(wave) > 1 or self._lane(undo) is not None):
                        waiting = True
                    else:
                        self._undo_done(undo)  # fire-and-forget undo: done once sent
            if waiting:
                self.state.status = "compensating"
                return
        # All undone: a late undo after a completed instance leaves it completed; otherwise
        # the failure is settled (compensated when anything was undone).
        self.state.status = "completed" if comp.settledStatus == "completed" else self._settled_failure_status()
        comp.settledStatus = None

    def _start_undo(self, undo: UndoCommand, beside: bool) -> bool:
        """Send an undo (a new round of its attempts) and, when it awaits a confirmation, park
        its wait: True then. `beside`: it is sent with others, so its round is kept by undo."""
        comp = self._comp()
        spec = self._undo_spec(undo)
        attempt = self._count_undo_attempt(undo)
        if beside:
            comp.roundStarts = {**comp.roundStarts, self._undo_key(undo): attempt}
        else:
            comp.roundStart = attempt
        self._send_undo(undo, attempt)
        if spec is None or not spec.replies:
            return False
        wait = Wait(
            token=0, step=f"undo:{undo.step}", node=undo.step, frame=undo.frame, kind="compensation", expects=spec.replies + spec.refused,
            correlationId=undo.correlationId, commandName=undo.commandName, attempt=attempt, since=self.now_at,
            timeoutAt=self._due_or_none(spec.timeout),
        )
        self._park(wait)
        return True

    def _undos_in_flight(self) -> set[tuple[str, str]]:
        """(frame, step) of every undo the instance waits for now."""
        return {(w.frame, w.node) for w in self.state.waits if w.kind in ("compensation", "compensation_backoff")}

    def _lane(self, undo: UndoCommand) -> tuple[str, str, str] | None:
        """(block, branch, run of the block) of an undo its parallel block undoes in parallel:
        undos of one block and run go out together, one per branch; None for the others."""
        lane = self._definition(undo.process).undo_lanes.get(undo.step)
        if lane is None:
            return None
        rounds = undo.round.removeprefix("@").split(".") if undo.round else []
        return (f"{undo.frame}:{lane.fork}@{'.'.join(rounds[: lane.loops])}", lane.branch, undo.frame)

    def _wave(self, pending: tuple[UndoCommand, ...]) -> list[UndoCommand]:
        """The undos that go out together next: the first pending one, or, when its parallel
        block is undone in parallel, the first pending undo of each branch of that block's
        run (the block's undos are next to each other in `pending`, its latest first)."""
        head = pending[0]
        lane = self._lane(head)
        if lane is None:
            return [head]
        wave = [head]
        branches = {lane[1]}
        for undo in pending[1:]:
            other = self._lane(undo)
            if other is None or other[0] != lane[0]:
                break
            if other[1] not in branches:
                branches.add(other[1])
                wave.append(undo)
        return wave

    def _undo_done(self, undo: UndoCommand | None = None) -> None:
        """An undo (the first pending one when not given) is done: it moves from pending to undone."""
        comp = self._comp()
        undo = comp.pending[0] if undo is None else undo
        comp.undone = comp.undone + (undo,)
        comp.pending = _without_first(comp.pending, undo)

    def _undo_of(self, wait: Wait) -> UndoCommand:
        """The pending undo a compensation wait awaits (the first of its step in its frame)."""
        comp = self._comp()
        return next(u for u in comp.pending if u.step == wait.node and u.frame == wait.frame)

    def _undo_confirmed(self, wait: Wait, reply: str) -> None:
        """A reply to an undo in flight: its confirmation, or a refusal (`unless r`), which
        leaves it unconfirmed as if its retries had run out."""
        undo = self._undo_of(wait)
        spec = self._undo_spec(undo)
        if spec is not None and reply in spec.refused:
            self._undo_not_confirmed(undo)
            return
        self._undo_done(undo)
        self._next_undo()

    def _undo_key(self, undo: UndoCommand) -> str:
        return f"{undo.frame}:{undo.step}{undo.round}"

    def _count_undo_attempt(self, undo: UndoCommand) -> int:
        """The next attempt number of an undo: attempts continue across resumes, so every send
        of the same undo has its own dedup key."""
        comp = self._comp()
        key = self._undo_key(undo)
        attempt = comp.attempts.get(key, 0) + 1
        comp.attempts = {**comp.attempts, key: attempt}
        return attempt

    def _send_undo(self, undo: UndoCommand, attempt: int) -> None:
        reply_to = self._definition(undo.process).reply_to
        command = Command(commandName=undo.commandName, workflowId=self.state.workflowId, correlationId=undo.correlationId, replyTo=reply_to, data=undo.data)
        self._dispatch(command, f"undo:{undo.step}", attempt, undo.round)

    def _undo_spec(self, undo: UndoCommand) -> m.CompensationSpec | None:
        node = self._definition(undo.process).nodes.get(undo.step)
        return node.compensation if isinstance(node, m.StepNode) else None

    def _undo_for(self, node: m.StepNode, frame: FrameView, rounds: str = "") -> UndoCommand | None:
        comp = node.compensation
        if comp is None:
            return None
        data = self._mapping(comp.command.data, frame, "compensation of `{}`", node.name) if comp.command.data else {}
        frame_id = ROOT if frame is self.state else frame_id_of(self.frames, frame)
        # In order: step, frame, process, commandName, correlationId, data, round (cheaper than keywords).
        return UndoCommand(node.name, frame_id, frame.process, comp.command.name, frame.correlationId, data, rounds)

    # ---------------------------------------------------------------- late replies
    def late(self, abandoned: Abandoned, reply: Reply) -> LateAction:
        """A reply for a step that gave up: undo a late success, record anything else."""
        self.state.abandoned = tuple(a for a in self.state.abandoned if a is not abandoned)
        success = reply.type in abandoned.successes
        undo = self._late_undo(abandoned, reply) if success else None
        action: LateAction = "compensated" if undo is not None else "recorded"
        self.state.lateReplies = (*self.state.lateReplies, LateReply(type=reply.type, step=abandoned.step, at=self.now_at, action=action))
        if undo is not None:
            undo = self._with_failure_data(undo)
            comp = self.state.compensation
            if comp is None:
                comp = Compensation(pending=(), undone=(), failed=None, settledStatus=None, attempts=EMPTY, roundStart=1)
                self.state.compensation = comp
            if self.state.status == "compensating":
                comp.pending = (*comp.pending[:1], undo, *comp.pending[1:])
            else:
                comp.settledStatus = self.state.status
                comp.failed = None  # a failed undo still pending is retried after this one
                comp.pending = (undo, *comp.pending)
                self._next_undo()
        return action

    def _late_undo(self, abandoned: Abandoned, reply: Reply) -> UndoCommand | None:
        """The undo of a late success, its mapping read with the late payload bound to the
        step's `as` name, as if the reply had come in time (`void { id: auth.id }` needs it)."""
        node = self._definition(abandoned.process).nodes.get(abandoned.step)
        frame = self.frames.find(abandoned.frame)
        if not isinstance(node, m.StepNode) or node.compensation is None or frame is None:
            return abandoned.undo
        comp = node.compensation
        if comp.undoes_failure("timeout") and abandoned.undo is None:
            return None  # the step's undo already ran (or runs) for its failure: not twice
        bound = frame
        if node.bind:
            # Bind the late payload in the frame for this one evaluation only.
            bound = Frame(
                process=frame.process, input=frame.input, data={**frame.data, node.bind: reply.data},
                correlationId=frame.correlationId, parent=frame.parent, call=frame.call,
            )
            self.frames[abandoned.frame] = bound
        try:
            data = self._eval(comp.command.data, bound, "compensation of `{}`", node.name) if comp.command.data else {}
        except Failed:
            return abandoned.undo
        finally:
            self.frames[abandoned.frame] = frame
        return UndoCommand(
            step=node.name,
            frame=abandoned.frame,
            process=abandoned.process,
            commandName=comp.command.name,
            correlationId=abandoned.correlationId,
            data=data,
        )

    # ---------------------------------------------------------------- an undo's time
    def _fire_compensation(self, wait: Wait) -> None:
        comp = self._comp()
        undo = self._undo_of(wait)
        spec = self._undo_spec(undo)
        timeout = spec.timeout if spec else None
        retries_used = wait.attempt - comp.roundStarts.get(self._undo_key(undo), comp.roundStart)
        if wait.kind == "compensation_backoff" or (timeout is not None and retries_used < timeout.retries):
            if wait.kind == "compensation":
                delay = timeout.backoff_before(retries_used + 2) if timeout else 0.0
                if delay > 0:
                    backoff = dataclasses.replace(wait, kind="compensation_backoff", since=self.now_at, timeoutAt=self._due(delay))
                    self._park(backoff)
                    return
            attempt = self._count_undo_attempt(undo)
            self._send_undo(undo, attempt)
            again = dataclasses.replace(wait, kind="compensation", attempt=attempt, since=self.now_at, timeoutAt=self._due_or_none(timeout))
            self._park(again)
            return
        self._undo_not_confirmed(undo)

    def _undo_not_confirmed(self, undo: UndoCommand) -> None:
        """An undo's retries ran out: the instance stops there (`compensation_failed`, once
        the undos in flight beside it are settled), or, `on undo failure continue`, the undo
        is left as unconfirmed and the others go on."""
        comp = self._comp()
        if self._definition(undo.process).undo_failure == "continue":
            comp.unconfirmed = comp.unconfirmed + (undo,)
            comp.pending = _without_first(comp.pending, undo)
        elif comp.failed is None:
            comp.failed = undo
        self._next_undo()


def _without_first(undos: tuple[UndoCommand, ...], undo: UndoCommand) -> tuple[UndoCommand, ...]:
    """`undos` without the first that is `undo` (or equal to it)."""
    for index, candidate in enumerate(undos):
        if candidate is undo or candidate == undo:
            return undos[:index] + undos[index + 1 :]
    return undos
