"""One transition's working copy of a state, and the core of what the engine does on it:
moving tokens through the nodes, entering steps, races and called processes, accepting the
replies and events a wait expects.

The way on from a node is an edge of the definition's graph (`ProcessDefinition.graph`, a
networkx MultiDiGraph whose edges are keyed by outcome): the engine asks the graph where a
node's `next`, `failure:<reply>`, `timeout`, `arm:<n>`, `default`, `branch:<name>`, `body`,
`back` or `exit` leads (`ProcessDefinition.follow`), never a record's fields.

Copy on write: the working copy starts as a new state object that shares every value with the
state it was made from. The engine never changes a shared value in place: it replaces a
tuple or a mapping with a new one, and copies a token, a frame or the compensation record
before it changes one (`_token`, the frames in `frames`, `Compensating`). So a transition
costs what it changes, not the size of the state, and the state given is never touched.
Compensation (`compensation.py`), timers (`timers.py`) and the visible record
(`derive.py`) build on this class.

Why one module of about 570 lines: `RunCore`'s token moves (steps, gateways, forks and
joins, races, loops, calls, accepting replies) are one state machine over one working copy;
compensation and timers, which build on it, are their own modules.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from procflow.dsl import model as m
from procflow.errors import ExpressionError
from procflow.interpreter.contracts import schema_text_problem
from procflow.interpreter.derive import status_part
from procflow.interpreter.frames import WorkingFrames
from procflow.interpreter.indexed import (
    Tokens,
    parked,
    token_of,
    unparked,
    with_new_token,
    with_token,
    without_token,
)
from procflow.interpreter.messages import Command, Dispatch, Reply
from procflow.interpreter.plan import Plan
from procflow.interpreter.state import (
    EMPTY,
    ROOT,
    Completion,
    FailureCause,
    Frame,
    FrameView,
    InstanceState,
    Token,
    UndoCommand,
    Wait,
    WaitKind,
    appended,
    epoch_of,
    iso,
    iso_epoch,
    parse_instant,
    shell,
)

MAX_NODES_PER_TRANSITION = 200_000
"""A transition that visits more nodes than this without waiting fails the instance (a loop
that never waits would otherwise spin forever)."""

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


class Failed(Exception):
    """Raised inside a run when the instance must fail (carries the cause)."""

    def __init__(self, cause: FailureCause, reason: str, step: str | None) -> None:
        super().__init__(reason)
        self.cause = cause
        self.reason = reason
        self.step = step


class Scope(Mapping[str, Any]):
    """What an expression sees in a frame: `input`, `steps`, and the names bound with `as`.
    Lazy: most expressions read one or two names, and each is read from the frame and the
    state as they are at that moment."""

    __slots__ = ("_frame", "_frames", "_state")

    def __init__(self, frame: FrameView, frames: Mapping[str, FrameView], state: InstanceState) -> None:
        self._frame = frame
        self._frames = frames  # (where the frame's id is found, when `steps` is read)
        self._state = state

    def __getitem__(self, name: str) -> Any:
        if name == "input":
            return self._frame.input
        if name == "steps":
            return steps_of(self._state.completed, frame_id_of(self._frames, self._frame))
        return self._frame.data[name]

    def __contains__(self, name: object) -> bool:
        return name in ("input", "steps") or name in self._frame.data

    def __iter__(self) -> Iterator[str]:
        yield "input"
        yield "steps"
        yield from self._frame.data

    def __len__(self) -> int:
        return 2 + len(self._frame.data)


def steps_of(completed: Sequence[Completion], frame_id: str) -> dict[str, dict[str, str]]:
    """`steps` as expressions see it: step -> {"reply": the reply that completed it last}.
    Derived from the completion records, so no per-step map is copied on every transition."""
    return {c.step: {"reply": c.outcome} for c in completed if c.frame == frame_id}


def frame_id_of(frames: Mapping[str, FrameView], frame: FrameView) -> str:
    """The id under which a frame is kept ("" for a frame built for one evaluation, such as a
    callee's correlation key, which is not kept)."""
    if frames.get(ROOT) is frame:
        return ROOT
    return next((key for key, value in frames.items() if value is frame), "")


def rounds_of(token: Token | None) -> str:
    """`@2` in the second iteration of the enclosing `repeat` (`@1.3` when nested), else empty."""
    if token is None or not token.loops:
        return ""
    return "@" + ".".join(str(n) for n in token.loops.values())


def without(mapping: dict[str, Any], key: str) -> dict[str, Any]:
    """A copy of `mapping` without `key` (the shared empty mapping when nothing is left)."""
    if key not in mapping:
        return mapping
    rest = {k: v for k, v in mapping.items() if k != key}
    return rest or EMPTY


class RunCore:
    """One transition's working copy of a state, and the work it does on it (see the module doc)."""

    __slots__ = (
        "plan", "definition", "root_name", "now_epoch", "now_at", "before", "state",
        "frames", "main_scope", "owned", "dispatches", "ready", "visited", "failing_reply",
    )

    def __init__(self, plan: Plan, state: InstanceState, now_epoch: float, new: InstanceState | None = None) -> None:
        """A run from `state` at `now_epoch` (seconds since the epoch: the run's clock, read
        once by the caller); or, with `new`, a run of the new state `new` (the run's own, as
        `start` makes it) for which `state` is what it was before it began."""
        self.plan = plan
        self.definition = definition = plan.definition
        self.root_name = definition.name
        self.now_epoch = now_epoch
        self.now_at = iso_epoch(now_epoch)  # the time records of this transition say
        # The state the transition started from (never changed: `finish` reads what changed).
        self.before = state
        if new is not None:
            self.state = state = new
        else:  # the working copy shares everything with the caller's state
            self.state = shell(state)
            tokens = state.tokens
            if not isinstance(tokens, tuple):  # (many: what this transition changes is counted from here)
                assert isinstance(tokens, Tokens)
                self.state.tokens = tokens.rebased()
            if state.compensation is not None:
                self.state.compensation = state.compensation.model_copy()
        # The working frames: the main process's is the working state itself (its `input`,
        # `data` and `correlationId`), the called ones are copies; `finish` writes them back.
        self.frames = WorkingFrames(self.state, state.frames)
        self.main_scope: Scope | None = None
        self.owned: set[int] = set()
        self.dispatches: list[Dispatch] = []
        self.ready: list[Token] = []
        self.visited = 0
        self.failing_reply: Reply | None = None  # the failure reply this run follows, which `failure.data` reads

    # ---------------------------------------------------------------- hooks (compensation.py)
    def fail(self, cause: FailureCause, reason: str, step: str | None) -> None:
        """The instance failed: stop everything and undo completed steps in reverse order."""
        raise NotImplementedError

    def complete(self, outcome: str | None = None, timed_out: bool = False) -> None:
        """The main process reached an end (a named one gives its `outcome`; the end of the
        deadline handler is `timed_out`): the instance completed."""
        raise NotImplementedError

    def _undo_for(self, node: m.StepNode, frame: FrameView, rounds: str = "") -> UndoCommand | None:
        raise NotImplementedError

    def enter_each(self, token: Token, node: m.EachNode, frame: FrameView, definition: m.ProcessDefinition) -> bool:
        """A for-each begins (`foreach.py`): its items start, as many at once as it allows;
        True when the token goes on at once (no items)."""
        raise NotImplementedError

    def item_done(self, token: Token, frame: FrameView) -> None:
        """A for-each item's token reached the gather (or an end): the item is done."""
        raise NotImplementedError

    def item_failed(self, token: Token, frame: FrameView, reason: str) -> bool:
        """A for-each item reached a fail end: True when the for-each tolerates it."""
        raise NotImplementedError

    def first_fork(self, token: Token, node: m.ForkNode, definition: m.ProcessDefinition) -> None:
        """A `first of` block starts every branch (`first_of.FirstOf`)."""
        raise NotImplementedError

    def first_arrived(self, token: Token, node: m.JoinNode, definition: m.ProcessDefinition) -> bool:
        """The first branch of a `first of` block arrived (`first_of.FirstOf`): True when it goes on at once."""
        raise NotImplementedError

    def cancel_confirmed(self, wait: Wait) -> None:
        """An undo of a `first of` block's loser is confirmed (`first_of.FirstOf`)."""
        raise NotImplementedError

    def retry_after_error(self, token: Token, node: m.StepNode, frame: FrameView, wait: Wait, policy: m.RetryPolicy) -> None:
        """An error reply the step retries: send its command again after the policy's backoff."""
        raise NotImplementedError

    # ---------------------------------------------------------------- helpers
    def set_now(self, now_epoch: float) -> None:
        """Move this run's clock to `now_epoch` (used when several timers fire in one advance)."""
        self.now_epoch = now_epoch
        self.now_at = iso_epoch(now_epoch)

    def _next_seq(self) -> int:
        self.state.seq += 1
        return self.state.seq

    def _definition(self, process: str) -> m.ProcessDefinition:
        return self.definition if process == self.root_name else self.plan.process(process)

    def _token(self, token_id: int) -> Token:
        """The token `token_id`, this run's own (copied into the state on first use)."""
        token = token_of(self.state.tokens, token_id)
        if token is None:
            raise KeyError(f"no token {token_id}")
        if token_id in self.owned:
            return token
        own = Token(token.id, token.node, token.frame, token.loops, token.forks)  # (in order: a third of the cost)
        self.state.tokens = with_token(self.state.tokens, own)
        self.owned.add(token_id)
        return own

    def _add_token(self, token: Token) -> None:
        self.state.tokens = with_new_token(self.state.tokens, token)
        self.owned.add(token.id)

    def _remove_token(self, token: Token) -> None:
        self.state.tokens = without_token(self.state.tokens, token.id)

    def _scope(self, frame: FrameView) -> Scope:
        if frame is self.state:
            scope = self.main_scope
            if scope is None:
                scope = self.main_scope = Scope(frame, self.frames, self.state)
            return scope
        return Scope(frame, self.frames, self.state)

    def _eval(self, condition: m.Condition | m.Mapping_, frame: FrameView, where: str, *args: object) -> Any:
        """The value of an expression in a frame; an error fails the instance, saying where
        (`where.format(*args)`: the text is made only when it is needed)."""
        try:
            return condition.evaluate(self._scope(frame))
        except ExpressionError as error:
            raise Failed("error", f"{where.format(*args)}: {error}", None) from None
        except (RecursionError, MemoryError):
            raise Failed("error", f"{where.format(*args)}: expression too large to evaluate", None) from None

    def _mapping(self, mapping: m.Mapping_, frame: FrameView, where: str, *args: object) -> Any:
        """The value of a data mapping (`_eval`; a mapping that only copies input fields is
        built directly, with the same result)."""
        fields = self.plan.input_fields(mapping)
        if fields is None:
            return self._eval(mapping, frame, where, *args)
        source = frame.input
        return {key: source.get(name) for key, name in fields}

    def _bind(self, frame: FrameView, name: str, value: Any) -> None:
        frame.data = {**frame.data, name: value}

    def _send(
        self, spec: m.CommandSpec, frame: FrameView, step: str, attempt: int, token: Token | None = None, name: str | None = None,
        due_at: str | None = None,
    ) -> None:
        payload = self._mapping(spec.data, frame, "data of `{0.name}` in step `{1}`", spec, step) if spec.data else {}
        if due_at is not None:  # a human task says by when (dsl/tasks.py)
            payload = {**payload, "due": due_at}
        process = frame.process
        reply_to = self.definition.reply_to if process == self.root_name else self.plan.process(process).reply_to
        # In order: commandName, workflowId, correlationId, replyTo, data (cheaper than keywords).
        command = Command(name or spec.name, self.state.workflowId, frame.correlationId, reply_to, payload)
        self._dispatch(command, step, attempt, rounds_of(token))

    def _dispatch(self, command: Command, step: str, attempt: int, rounds: str = "") -> None:
        # `rounds` tells apart the entries of one step in the iterations of a `repeat`.
        key = f"{command.correlationId}:{command.commandName}:{step}{rounds}#{attempt}"
        self.dispatches.append(Dispatch(command, step, attempt, key))  # (command, step, attempt, dedupKey)

    def _due(self, seconds: float) -> str:
        """The instant `seconds` from now, as ISO-8601 text."""
        return iso_epoch(self.now_epoch + seconds)

    def _due_or_none(self, timeout: m.TimeoutSpec | None) -> str | None:
        return iso_epoch(self.now_epoch + timeout.seconds) if timeout is not None else None

    # ---------------------------------------------------------------- running tokens
    def run(self, first: Token | None = None) -> None:
        """Move `first`, then every ready token, until each waits or ends, or the instance fails."""
        try:
            if first is not None:
                self._advance_token(first)
            while self.ready:
                token = self.ready.pop(0)
                self._advance_token(token)
        except Failed as failed:
            self.fail(failed.cause, failed.reason, failed.step)

    def _advance_token(self, token: Token) -> None:
        frames = self.frames
        while True:
            self.visited += 1
            if self.visited > MAX_NODES_PER_TRANSITION:
                raise Failed("error", f"ran {MAX_NODES_PER_TRANSITION} nodes without waiting; a loop never waits", None)
            frame = frames[token.frame]
            definition = self._definition(frame.process)
            node = definition.nodes[token.node]
            match node:
                case m.StepNode():
                    self._enter_step(token, node, frame, definition)
                    return
                case m.StartNode():
                    token.node = definition.follow(node.id, "next")
                case m.XorNode():
                    token.node = definition.follow(node.id, self._choose(node, frame))
                case m.EndNode():
                    if frame.parent is None:
                        self.complete(node.outcome, node.timed_out)
                        return
                    if frame.forEach is not None:  # an `end` inside a for-each ends that item
                        self.item_done(token, frame)
                        return
                    self._return_from_call(token, frame)
                case m.LoopNode():
                    token.loops = {**token.loops, node.id: 1}
                    token.node = definition.follow(node.id, "body")
                case m.ForkNode() if node.first:
                    self.first_fork(token, node, definition)
                    return
                case m.ForkNode():
                    self._fork(token, node, definition)
                    return
                case m.JoinNode() if node.first:
                    if not self.first_arrived(token, node, definition):
                        return  # it waits at the join while the losers are undone
                    token.node = definition.follow(node.id, "next")
                case m.JoinNode():
                    fork_key = token.forks[-1]
                    token.forks = token.forks[:-1]
                    arrived = self.state.joins.get(fork_key, 0) + 1
                    if arrived < node.expected:
                        self.state.joins = {**self.state.joins, fork_key: arrived}
                        self._remove_token(token)
                        return
                    self.state.joins = without(self.state.joins, fork_key)
                    token.node = definition.follow(node.id, "next")
                case m.RaceNode():
                    self._enter_race(token, node, frame, definition)
                    return
                case m.UntilNode():
                    self._until(token, node, frame, definition)
                case m.CallNode():
                    self._enter_call(token, node, frame)
                case m.EachNode():
                    if not self.enter_each(token, node, frame, definition):
                        return
                case m.GatherNode():
                    self.item_done(token, frame)
                    return
                case m.FailNode():
                    if frame.forEach is not None and self.item_failed(token, frame, node.reason):
                        return
                    raise Failed(_FAIL_CAUSES.get(node.cause, "fail"), node.reason, node.step)
                case m.SetNode():
                    self._bind(frame, node.name, self._eval(node.value, frame, "value of `set {}`", node.name))
                    token.node = definition.follow(node.id, "next")
                case m.EmitNode():
                    self._emit(node, frame, token)
                    token.node = definition.follow(node.id, "next")

    def _emit(self, node: m.EmitNode, frame: FrameView, token: Token) -> None:
        """Publish a notification through the outbox: a command with no `replyTo`, which
        nobody answers and nothing waits for (its dedup key names the emit's node)."""
        spec = node.message
        payload = self._mapping(spec.data, frame, "data of `emit {0.name}`", spec) if spec.data else {}
        command = Command(spec.name, self.state.workflowId, frame.correlationId, None, payload)
        self._dispatch(command, f"emit:{node.id}", 1, rounds_of(token))

    def _fork(self, token: Token, node: m.ForkNode, definition: m.ProcessDefinition) -> None:
        """Every branch starts: the token gives way to one child per branch, in the order written."""
        fork_key = f"{token.frame}:{node.id}#{self._next_seq()}"
        self.state.joins = {**self.state.joins, fork_key: 0}
        self._remove_token(token)
        for branch in node.branch_names:
            first = definition.follow(node.id, f"branch:{branch}")
            child = Token(id=self._next_seq(), node=first, frame=token.frame, loops=token.loops, forks=(*token.forks, fork_key))
            self._add_token(child)
            self.ready.append(child)

    def _until(self, token: Token, node: m.UntilNode, frame: FrameView, definition: m.ProcessDefinition) -> None:
        """The end of a loop's body: leave (`exit`) when the condition holds or the bound is
        reached, else go round again (`back`)."""
        done = self._eval(node.until, frame, "condition of `{}`", node.name)
        if not isinstance(done, bool):
            raise Failed("error", f"`until` of `{node.name}` gave {done!r}, not true or false", None)
        graph: nx.MultiDiGraph = definition.graph
        loop_id: str = graph.nodes[node.id]["loop"]  # the loop's head, which counts its rounds
        count = token.loops.get(loop_id, 1)
        head = definition.nodes[loop_id]
        bound = head.max if isinstance(head, m.LoopNode) else None
        if done or (bound is not None and count >= bound):
            token.loops = without(token.loops, loop_id)
            # The bound reached without `until` holding: its `else`, when it has one.
            way = "exit" if done or "bound" not in definition.outcomes(node.id) else "bound"
            token.node = definition.follow(node.id, way)
        else:
            token.loops = {**token.loops, loop_id: count + 1}
            token.node = definition.follow(node.id, "back")

    def _choose(self, node: m.XorNode, frame: FrameView) -> str:
        """The way an exclusive gateway takes: `arm:<n>` for the first arm that holds (or whose
        case is the subject's value), else `default`."""
        if node.subject is not None:
            value = self._eval(node.subject, frame, "switch subject")
            for index, arm in enumerate(node.arms):
                if any(value == v and isinstance(value, bool) == isinstance(v, bool) for v in arm.values):
                    return f"arm:{index}"
            return "default"
        for index, arm in enumerate(node.arms):
            assert arm.condition is not None
            holds = self._eval(arm.condition, frame, "condition `{}`", arm.label)
            if not isinstance(holds, bool):
                raise Failed("error", f"condition `{arm.label}` gave {holds!r}, not true or false", None)
            if holds:
                return f"arm:{index}"
        return "default"

    def _enter_step(self, token: Token, node: m.StepNode, frame: FrameView, definition: m.ProcessDefinition) -> None:
        if node.is_timer:
            if node.timer_seconds is not None:
                timer_at = self._due(node.timer_seconds)
            else:
                assert node.timer_until is not None
                value = self._eval(node.timer_until, frame, "`wait until` of `{}`", node.name)
                try:
                    moment = parse_instant(str(value))
                except ValueError:
                    raise Failed("error", f"`wait until` of `{node.name}` gave {value!r}, not an ISO-8601 instant", node.name) from None
                timer_at = iso(moment)
            self._add_wait(token, node.name, node.id, frame, "timer", (), None, 1, timer_at)
            return
        timeout = node.timeout
        timeout_at = self._due(timeout.seconds) if timeout is not None else None
        spec = definition.waits[node.id]  # (its values are shared by every wait on the step)
        if node.task is not None:  # a human task: its first round, with its due
            self._send(node.task.round(1).command, frame, node.name, 1, token, spec.command_name, timeout_at)
            self._add_wait(token, node.name, node.id, frame, "reply", spec.expects, spec.command_name, 1, timeout_at)
        elif node.command is not None:
            self._send(node.command, frame, node.name, 1, token, spec.command_name)
            self._add_wait(token, node.name, node.id, frame, "reply", spec.expects, spec.command_name, 1, timeout_at)
        else:
            self._add_wait(token, node.name, node.id, frame, "event", spec.expects, None, 1, timeout_at)

    def _enter_race(self, token: Token, node: m.RaceNode, frame: FrameView, definition: m.ProcessDefinition) -> None:
        expects = definition.waits[node.id].expects
        best: tuple[float, str] | None = None
        for arm in node.arms:
            if arm.timer_seconds is not None:
                timeout_at = self._due(arm.timer_seconds)
            elif arm.timer_at is not None:
                value = self._eval(arm.timer_at, frame, "timer of race `{}`", node.name)
                try:
                    moment = parse_instant(str(value))
                except ValueError:
                    raise Failed("error", f"timer of race `{node.name}` gave {value!r}, not an ISO-8601 instant", None) from None
                timeout_at = iso(moment)
            else:
                continue
            due = epoch_of(timeout_at)
            if best is None or due < best[0]:
                best = (due, timeout_at)
        self._add_wait(token, node.name, node.id, frame, "race", expects, None, 1, best[1] if best else None)

    def _add_wait(
        self,
        token: Token,
        step: str,
        node_id: str,
        frame: FrameView,
        kind: WaitKind,
        expects: tuple[str, ...],
        command_name: str | None,
        attempt: int,
        timeout_at: str | None,
    ) -> None:
        token.node = node_id
        self._park(
            Wait(  # (token, step, node, frame, kind, expects, correlationId: in order, see `Wait`)
                token.id, step, node_id, token.frame, kind, expects, frame.correlationId,
                commandName=command_name, attempt=attempt, since=self.now_at, timeoutAt=timeout_at,
            )
        )

    def _park(self, wait: Wait) -> None:
        """Add `wait` to the state's waits."""
        self.state.waits = parked(self.state.waits, wait, self._status_part)

    def _unpark(self, wait: Wait) -> None:
        """Remove `wait` from the state's waits."""
        self.state.waits = unparked(self.state.waits, wait, self._status_part)

    def _status_part(self, wait: Wait) -> str:
        """What `wait` shows in the instance's status (its frame may be new in this run)."""
        return status_part(self.plan, wait, None if wait.frame == ROOT else self.frames.process_of(wait.frame))

    def _enter_call(self, token: Token, node: m.CallNode, frame: FrameView) -> None:
        child_def = self._definition(node.process)
        child_input = self._eval(node.data, frame, "input of call `{}`", node.name) if node.data else {}
        if child_def.input_schema_text is not None:
            problem = schema_text_problem(child_input, child_def.input_schema_text)
            if problem:
                raise Failed("error", f"call `{node.name}`: input breaks the contract of `{child_def.name}`: {problem}", None)
        frame_id = f"{token.frame}/{node.name}#{self._next_seq()}"
        correlation = frame.correlationId
        if child_def.correlate is not None:
            value = self._eval(child_def.correlate, Frame(process=child_def.name, input=child_input, correlationId=""), "correlation key")
            correlation = value if isinstance(value, str) else str(value)
        self.frames[frame_id] = Frame(process=child_def.name, input=child_input, data=EMPTY, correlationId=correlation, parent=token.frame, call=node.id)
        token.frame = frame_id
        token.node = child_def.start

    def _return_from_call(self, token: Token, frame: FrameView) -> None:
        assert frame.parent is not None and frame.call is not None
        parent = self.frames[frame.parent]
        definition = self._definition(parent.process)
        call = definition.nodes[frame.call]
        assert isinstance(call, m.CallNode)
        if call.bind:
            self._bind(parent, call.bind, {**frame.data, "steps": steps_of(self.state.completed, token.frame)})
        token.frame = frame.parent
        token.node = definition.follow(call.id, "next")

    def undo_failed_step(self, token: Token, node: m.StepNode, frame: FrameView, outcome: str) -> None:
        """A step whose undo runs `even on failure` failed or timed out (`outcome`): it is
        recorded as done, with its undo, so a failure of the instance undoes it in its turn
        (not as a milestone: `completedSteps` shows what succeeded)."""
        try:
            undo = self._undo_for(node, frame, rounds_of(token) if token.loops else "")
        except Failed as failed:
            raise Failed(failed.cause, failed.reason, node.name) from None
        state = self.state
        state.completed = appended(state.completed, Completion(step=node.name, frame=token.frame, outcome=outcome, at=self.now_at, undo=undo))

    # ---------------------------------------------------------------- messages
    def accept(self, wait: Wait, reply: Reply) -> None:
        """A reply or event that a wait expects has arrived."""
        self._unpark(wait)
        if wait.kind in ("compensation", "compensation_backoff"):  # (its frame may be gone: a for-each item's)
            self._undo_confirmed(wait, reply.type)
            return
        if wait.kind in ("cancel", "cancel_backoff"):
            self.cancel_confirmed(wait)
            return
        frame = self.frames[wait.frame]
        token = self._token(wait.token)
        definition = self._definition(frame.process)
        node = definition.nodes[wait.node]
        match node:
            case m.RaceNode():
                index = next(i for i, arm in enumerate(node.arms) if reply.type in arm.messages)
                bind = node.arms[index].bind
                if bind:
                    self._bind(frame, bind, reply.data)
                token.node = definition.follow(node.id, f"arm:{index}")
            case m.StepNode() if reply.type not in node.replies and reply.type in node.failure_replies:
                policy = node.reply_retries.get(reply.type)
                if policy is not None and node.command is not None and wait.attempt <= policy.retries:
                    self.retry_after_error(token, node, frame, wait, policy)
                    return
                bind = node.failure_binds.get(reply.type)
                if bind:
                    self._bind(frame, bind, reply.data)
                self.failing_reply = reply
                if node.compensation is not None and node.compensation.undoes_failure(reply.type):
                    self.undo_failed_step(token, node, frame, reply.type)
                token.node = definition.follow(node.id, f"failure:{reply.type}")
            case m.StepNode():
                if node.bind:
                    self._bind(frame, node.bind, reply.data)
                try:
                    undo = self._undo_for(node, frame, rounds_of(token) if token.loops else "")
                except Failed as failed:
                    self.fail(failed.cause, failed.reason, node.name)
                    return
                state = self.state
                state.completed = appended(state.completed, Completion(node.name, wait.frame, reply.type, self.now_at, undo))  # (step, frame, outcome, at, undo)
                state.completedSteps = appended(state.completedSteps, reply.type)
                token.node = definition.follow(node.id, "next")
            case _:  # pragma: no cover - only steps and races wait for messages
                raise TypeError(f"{type(node).__name__} does not wait for messages")
        self.run(token)

    def _undo_confirmed(self, wait: Wait, reply: str) -> None:
        raise NotImplementedError
