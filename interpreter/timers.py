"""Time in a run: a timer step ends, a race's timer arm wins, a wait times out and its command
is sent again (after its backoff) or the step gives up, an undo is retried.
"""

from __future__ import annotations

import hashlib

from procflow.dsl import model as m
from procflow.interpreter.first_of import FirstOf
from procflow.interpreter.foreach import Iterating
from procflow.interpreter.state import (
    Completion,
    FrameView,
    Token,
    Wait,
    appended,
    epoch_of,
    parse_instant,
)
from procflow.interpreter.transition import Failed, rounds_of


class Timed(Iterating, FirstOf):
    """What happens when a wait's time has come."""

    __slots__ = ()

    def fire(self, wait: Wait) -> None:
        """A wait's time has come: a timer ends, a timeout retries or fails, a backoff resends."""
        self._unpark(wait)
        if wait.kind in ("compensation", "compensation_backoff"):  # (its frame may be gone: a for-each item's)
            self._fire_compensation(wait)
            return
        if wait.kind in ("cancel", "cancel_backoff"):
            self.cancel_timed_out(wait)
            return
        frame = self.frames[wait.frame]
        token = self._token(wait.token)
        definition = self._definition(frame.process)
        node = definition.nodes[wait.node]
        match node:
            case m.RaceNode():
                self._race_timer(token, node, frame, wait, definition)
            case m.StepNode() if wait.kind == "timer":
                state = self.state
                state.completed = appended(state.completed, Completion(step=node.name, frame=wait.frame, outcome=node.name, at=self.now_at))
                state.completedSteps = appended(state.completedSteps, node.name)
                token.node = definition.follow(node.id, "next")
                self.run(token)
            case m.StepNode():
                self._no_reply(token, node, frame, wait, definition)
            case _:  # pragma: no cover - only steps and races wait for time
                raise TypeError(f"{type(node).__name__} does not wait for time")

    def _race_timer(self, token: Token, node: m.RaceNode, frame: FrameView, wait: Wait, definition: m.ProcessDefinition) -> None:
        """A race's timer arm wins (the earliest due, when it has several)."""
        timed = [index for index, arm in enumerate(node.arms) if not arm.messages]
        index = timed[0]
        if len(timed) > 1:
            index = min(timed, key=lambda i: self._arm_due(node.arms[i], frame, wait))
        token.node = definition.follow(node.id, f"arm:{index}")
        self.run(token)

    def retry_after_error(self, token: Token, node: m.StepNode, frame: FrameView, wait: Wait, policy: m.RetryPolicy) -> None:
        """An error reply the step retries: wait the policy's backoff (with jitter, drawn from
        the next attempt's dedup key, so a replay waits the same), then send the command again."""
        assert node.command is not None
        attempt = wait.attempt + 1
        delay = policy.backoff_before(attempt)
        if policy.jitter and delay > 0:
            key = f"{self.state.workflowId}:{frame.correlationId}:{node.name}{rounds_of(token)}#{attempt}"
            fraction = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:4], "big") / 2**32
            delay *= 0.5 + 0.5 * fraction  # "equal jitter": between half the delay and all of it
        if delay > 0:
            self._add_wait(token, node.name, node.id, frame, "backoff", wait.expects, wait.commandName, wait.attempt, self._due(delay))
            return
        self._resend(token, node, frame, wait, node.command, node.timeout)

    def _no_reply(self, token: Token, node: m.StepNode, frame: FrameView, wait: Wait, definition: m.ProcessDefinition) -> None:
        """A step's wait timed out (its command is sent again, after its backoff, while it has
        retries left, then the step takes its `timeout` way), or its backoff is over."""
        timeout = node.timeout
        if wait.kind == "backoff":
            assert node.command is not None
            self._resend(token, node, frame, wait, node.command, timeout)
            return
        if timeout is not None and node.command is not None and wait.attempt <= timeout.retries:
            delay = timeout.backoff_before(wait.attempt + 1)
            if delay > 0:
                self._add_wait(token, node.name, node.id, frame, "backoff", wait.expects, wait.commandName, wait.attempt, self._due(delay))
                return
            self._resend(token, node, frame, wait, node.command, timeout)
            return
        undone_anyway = node.compensation is not None and node.compensation.undoes_failure("timeout")
        if wait.commandName:
            self._abandon(wait, undo_late=not undone_anyway)
        if undone_anyway:
            self.undo_failed_step(token, node, frame, "timeout")
        token.node = definition.follow(node.id, "timeout")
        self.run(token)

    def _resend(self, token: Token, node: m.StepNode, frame: FrameView, wait: Wait, command: m.CommandSpec, timeout: m.TimeoutSpec | None) -> None:
        """Send the step's command again (the next attempt) and wait for its reply anew."""
        attempt = wait.attempt + 1
        due_at = self._due_or_none(timeout)
        task_due: str | None = None
        if node.task is not None:  # a human task's escalation: its round's command and due
            escalation = node.task.round(attempt)
            command = escalation.command
            due_at = task_due = self._due(escalation.due_seconds) if escalation.due_seconds is not None else None
        try:
            self._send(command, frame, node.name, attempt, token, due_at=task_due)
        except Failed as failed:
            self.fail(failed.cause, failed.reason, node.name)
            return
        self._add_wait(token, node.name, node.id, frame, "reply", wait.expects, wait.commandName, attempt, due_at)

    def _arm_due(self, arm: m.RaceArmSpec, frame: FrameView, wait: Wait) -> float:
        since = epoch_of(wait.since)
        if arm.timer_seconds is not None:
            return since + arm.timer_seconds
        assert arm.timer_at is not None
        try:
            return parse_instant(str(self._eval(arm.timer_at, frame, "race timer"))).timestamp()
        except ValueError:
            return float("inf")
