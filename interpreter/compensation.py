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
        completed; or the end of its deadline handler: it is `timed_out`, nothing undone."""
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
        self.state.failure = Failure(cause=cause, reason=reason, step=step, at=self.now_at)
        taken = self.undos_taken()  # (what `first of` blocks undid, or undo now, is not undone again)
        pending = losers + tuple(
            c.undo for c in reversed(self.state.completed)
            if c.undo is not None and (not taken or (c.undo.frame, c.undo.step, c.undo.round) not in taken)
        )
        self.state.compensation = Compensation(pending=pending, undone=(), failed=None, settledStatus=None, attempts=attempts or EMPTY, roundStart=1)
        self._next_undo()

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
        comp = self._comp()
        while comp.pending:
            undo = comp.pending[0]
            spec = self._undo_spec(undo)
            attempt = self._count_undo_attempt(undo)
            comp.roundStart = attempt
            self._send_undo(undo, attempt)
            if spec is not None and spec.replies:
                timeout_at = self._due_or_none(spec.timeout)
                wait = Wait(
                    token=0, step=f"undo:{undo.step}", node=undo.step, frame=undo.frame, kind="compensation", expects=tuple(spec.replies),
                    correlationId=undo.correlationId, commandName=undo.commandName, attempt=attempt, since=self.now_at, timeoutAt=timeout_at,
                )
                self._park(wait)
                self.state.status = "compensating"
                return
            self._undo_done()  # fire-and-forget undo: done once sent
        # All undone: a late undo after a completed instance leaves it completed; otherwise
        # the failure is settled (compensated when anything was undone).
        self.state.status = "completed" if comp.settledStatus == "completed" else self._settled_failure_status()
        comp.settledStatus = None

    def _undo_done(self) -> None:
        """The undo in flight is done: it moves from pending to undone."""
        comp = self._comp()
        comp.undone = comp.undone + comp.pending[:1]
        comp.pending = comp.pending[1:]

    def _undo_confirmed(self) -> None:
        self._undo_done()
        self._next_undo()

    def _count_undo_attempt(self, undo: UndoCommand) -> int:
        """The next attempt number of an undo: attempts continue across resumes, so every send
        of the same undo has its own dedup key."""
        comp = self._comp()
        key = f"{undo.frame}:{undo.step}{undo.round}"
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
        frame = self.frames.get(abandoned.frame)
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
        undo = comp.pending[0]
        spec = self._undo_spec(undo)
        timeout = spec.timeout if spec else None
        retries_used = wait.attempt - comp.roundStart
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
        comp.failed = undo
        self.state.status = "compensation_failed"
