"""Every path through a process, from its start to an end: the saga table.

A path is one way an instance can go: which arm each gateway takes, which reply each step
gets (its success, one of its failure replies, or its timeout), and so which commands are
sent and which undo commands run when it fails. Loops are taken once (the body once, then
the exit); the branches of a parallel block run one after the other in document order; each
branch of a `first of` block wins on a path of its own (the losers' undo listed as it runs,
at the block's end: see `loser_undos`); a called process is inlined. A failure compensates the steps completed before it on that
path, most recent first, whatever branch they ran in.

A deadline handler (`deadline D { ... }`) is listed as its own paths, named `deadline`, as if
the deadline passed before anything was done. Paths are listed simplest first: `happy` (the first arm of every gateway, every step
succeeding), then every path with one deviation in the order the deviation occurs, then
those with two, and so on. A path's name lists its deviations, e.g.
`authorize_payment.payment_declined`, `create_shipment.timeout`, `if input.amount > 1000`,
`paperwork: after 7d`. The walk is iterative (a process of any length works) and stops
after `max_paths` paths; the list says so in `truncated`.

Why one module of about 700 lines: the walk that enumerates paths and the saga table it
fills are one state machine (cursor, branch and loop handling share its state); the table's
rendering is a small part of it.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from procflow.dsl import expressions as ex
from procflow.dsl import model as m
from procflow.dsl.diagnostics import Span
from procflow.dsl.undo_policy import undo_waves
from procflow.errors import ExpressionError

DEFAULT_MAX_PATHS = 1000
"""How many paths `enumerate_paths` lists before it stops (and says so)."""

HAPPY = "happy"
"""The name of the path on which every gateway takes its first arm and every step succeeds."""


@dataclass(frozen=True, slots=True)
class PathEvent:
    """One thing that happens on a path, in order: what a sequence diagram of the path draws.

    ``kind`` is one of:

    ========  ==========================================================================
    step      a step ran; `result` is ``ok``, ``failure``, ``timeout``, ``timer`` or ``event``
              and `detail` the reply (or event, or timer text) that ended it
    race      a race was won; `detail` is the arm's label, `result` ``message`` or ``timer``
    open      a block starts: `name` is ``alt``, ``par``, ``loop`` or ``call``; `detail` its label;
              `result` is ``race`` for the arm of a race, ``first`` for the winner of `first of`
    section   the next section of the open block (the next parallel branch): `detail` its label
    close     the innermost open block ends
    fail      the instance fails here; `detail` is the reason, `name` the failing step or ""
    undo      a compensation runs: `name` is the step it undoes, `detail` its commandName;
              `result` ``cancel`` for the undo of a loser of `first of`, at the block's end
    emit      a notification is published: `name` is the participant, `detail` the event
    end       the instance completes here
    ========  ==========================================================================
    """

    kind: str
    process: str = ""
    name: str = ""
    detail: str = ""
    result: str = ""


@dataclass(frozen=True)
class ProcessPath:
    """One path from the start to an end, with what it sends and what it undoes."""

    name: str
    outcome: str  # "completed", "completed: <outcome>" (a named end), "timed_out" (a deadline handler's end) or "failed: <reason>"
    steps: list[tuple[str, str]]  # (step, reply or outcome), in order
    commands: list[str]  # commandNames sent, in order (a retried command once per attempt)
    compensation: list[str]  # undo commandNames that run, in order
    events: tuple[PathEvent, ...] = field(default=(), repr=False, compare=False)
    undo_waves: tuple[tuple[tuple[str, ...], ...], ...] = field(default=(), compare=False)
    """`compensation` as it goes out: waves one after the other, each wave a tuple of lanes
    sent side by side (a parallel block undone in parallel: one lane a branch, in reverse
    order within it), each lane its commandNames in order; a lone undo is a wave of one lane."""

    @property
    def emitted(self) -> list[str]:
        """The notifications published (`emit participant.event`), in order."""
        return [f"{event.name}.{event.detail}" for event in self.events if event.kind == "emit"]

    @property
    def completed(self) -> bool:
        """True when the path reaches an end rather than a failure."""
        return self.outcome == "completed" or self.outcome.startswith("completed: ")


class PathList(list[ProcessPath]):
    """The paths of a process; `truncated` is True when more exist than `limit` allowed."""

    def __init__(self, paths: list[ProcessPath], *, truncated: bool, limit: int) -> None:
        super().__init__(paths)
        self.truncated = truncated
        self.limit = limit

    def by_name(self, name: str) -> ProcessPath:
        """The path called `name` (KeyError when there is none)."""
        for path in self:
            if path.name == name:
                return path
        raise KeyError(name)


# ---------------------------------------------------------------- structure of blocks


def _inside(inner: Span, outer: Span) -> bool:
    return (inner.line, inner.column) >= (outer.line, outer.column) and (inner.end_line, inner.end_column) <= (
        outer.end_line,
        outer.end_column,
    )


def forward_successors(definition: m.ProcessDefinition, node_id: str) -> list[str]:
    """Where a node leads on success paths (the graph's edges but failure, timeout and loop-back ones)."""
    return [way.target for way in definition.ways_out(node_id) if way.kind not in ("failure", "timeout", "back")]


def block_exits(definition: m.ProcessDefinition) -> dict[str, str | None]:
    """For every gateway and race: the node where its arms meet again (None when no arm goes on).

    The compiler links every arm of an `if`, `switch` or `race` to the statement that follows
    it; that statement is the first node reached from the gateway whose source text lies
    outside the gateway's statement.
    """
    exits: dict[str, str | None] = {}
    for node_id in definition.order:
        node = definition.nodes[node_id]
        if not isinstance(node, m.XorNode | m.RaceNode):
            continue
        found: str | None = None
        seen = {node_id}
        queue = forward_successors(definition, node_id)
        while queue and found is None:
            candidate = queue.pop(0)
            if candidate in seen:
                continue
            seen.add(candidate)
            target = definition.nodes[candidate]
            if not _inside(target.span, node.span) or candidate == "end":
                found = candidate
                break
            queue.extend(forward_successors(definition, candidate))
        exits[node_id] = found
    return exits


def loop_tails(definition: m.ProcessDefinition) -> dict[str, str]:
    """Loop head id -> the id of its `until` node (the graph notes each on the other)."""
    return {node_id: until for node_id, until in definition.graph.nodes(data="until") if until is not None}


def duration_text(seconds: float) -> str:
    """Seconds as the language writes them: 90 -> `1m30s`, 3600 -> `1h`, 0.5 -> `500ms`."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    rest = int(round(seconds))
    parts = []
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts)


def timer_text(node: m.StepNode) -> str:
    """`after 1h` or `until <expr>` for a timer step."""
    if node.timer_seconds is not None:
        return f"after {duration_text(node.timer_seconds)}"
    assert node.timer_until is not None
    return f"until {node.timer_until.text}"


def arm_names(node: m.XorNode) -> list[tuple[str, str]]:
    """(path name part, diagram label) for each way out of a gateway: its arms, then its default."""
    out: list[tuple[str, str]] = []
    if node.subject is not None:
        subject = node.subject.text
        for arm in node.arms:
            out.append((f"{subject} is {arm.label}", f"{subject} is {arm.label}"))
        out.append((f"{subject} is another value", "else" if node.has_else else "otherwise"))
        return out
    for arm in node.arms:
        out.append((f"if {arm.label}", arm.label))
    negated = " and ".join(negation(arm.condition.expr) if arm.condition else f"not ({arm.label})" for arm in node.arms)
    out.append((f"if {negated}", "else" if node.has_else else "otherwise"))
    return out


_OPPOSITE = {"==": "!=", "!=": "==", "<": ">=", ">=": "<", ">": "<=", "<=": ">"}


def negation(expr: ex.Expr) -> str:
    """A condition's opposite as readable text: `a > 1` -> `a <= 1`, `not x` -> `x`, else `not (...)`."""
    if isinstance(expr, ex.Binary) and expr.op in _OPPOSITE:
        return f"{ex.to_text(expr.left)} {_OPPOSITE[expr.op]} {ex.to_text(expr.right)}"
    if isinstance(expr, ex.Unary) and expr.op == "not":
        return ex.to_text(expr.operand)
    return f"not ({ex.to_text(expr)})"


def race_names(node: m.RaceNode) -> list[tuple[str, str]]:
    """(path name part, diagram label) for each arm of a race."""
    out = []
    for arm in node.arms:
        label = f"on {arm.label}" if arm.messages else arm.label
        out.append((f"{node.name}: {label}", label))
    return out


# ---------------------------------------------------------------- what a path already knows


class _StepReplies(dict[str, Any]):
    """`steps` as an expression sees it on a path: `steps.<name>.reply` of the steps run so far.

    Read on demand from the path's shared list (a condition reads one or two steps).
    """

    def __init__(self, steps: _Cons, scope: str, blocks: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.path_steps = steps
        self.scope = scope
        self.blocks = blocks  # the names of `first of` blocks: `name.winner` is known once run

    def winners(self) -> dict[str, Any]:
        """`name` -> `{winner: branch}` for the `first of` blocks the path has run (the latest run)."""
        found: dict[str, Any] = {}
        items = self.path_steps
        while items is not None and self.blocks:
            scope, step, outcome = items[0]
            if step in self.blocks and scope == self.scope and step not in found:
                found[step] = {"winner": outcome}
            items = items[1]
        return found

    def get(self, key: str, default: Any = None) -> Any:
        items = self.path_steps
        while items is not None:
            scope, step, outcome = items[0]
            if step == key and scope == self.scope:
                return {"reply": outcome}
            items = items[1]
        return default


def _decide(evaluate: Callable[[Mapping[str, Any]], Any], steps: _StepReplies) -> Any:
    """A condition's value from what the path knows (its steps' replies), or _UNKNOWN."""
    try:
        return evaluate({"steps": steps, **steps.winners()})
    except (ExpressionError, RecursionError, TypeError, ValueError):
        return _UNKNOWN


_UNKNOWN = object()


def _feasible_arms(node: m.XorNode, steps: _StepReplies) -> list[int]:
    """Indexes of the ways out of a gateway that a path can take (the default is the last index).

    A condition that only reads replies of steps already run on the path is decided; any
    other (input, bound payloads) may go either way.
    """
    if node.subject is not None:
        subject = _decide(node.subject.evaluate, steps)
        if subject is _UNKNOWN:
            return list(range(len(node.arms) + 1))
        for index, arm in enumerate(node.arms):
            if any(subject == v and isinstance(subject, bool) == isinstance(v, bool) for v in arm.values):
                return [index]
        return [len(node.arms)]
    feasible: list[int] = []
    for index, arm in enumerate(node.arms):
        holds = _decide(arm.condition.evaluate, steps) if arm.condition else _UNKNOWN
        if holds is True:
            feasible.append(index)
            return feasible
        if holds is not False:
            feasible.append(index)
    feasible.append(len(node.arms))
    return feasible


# ---------------------------------------------------------------- the walk

_Cons = tuple[Any, Any] | None
"""A shared, immutable list, newest first: (item, rest). Paths share their prefixes."""


def _push(items: _Cons, item: Any) -> _Cons:
    return (item, items)


def _items(items: _Cons) -> list[Any]:
    out = []
    while items is not None:
        out.append(items[0])
        items = items[1]
    out.reverse()
    return out


@dataclass(frozen=True, slots=True)
class _Control:
    """An open block on the walk: what closes it and where the walk goes on then."""

    kind: str  # close | branches | first | loop | each | return
    node: str  # the node that closes it (exit of a gateway, join, until, a for-each's gather); "" for a return
    definition: m.ProcessDefinition
    fork: m.ForkNode | None = None
    branch: int = 0
    call: m.CallNode | None = None
    scope: str = ""
    each: m.EachNode | None = None
    tolerate: int = 0  # a for-each's failed items the path still lets end only their item


def _for_each(control: tuple[_Control, ...]) -> int | None:
    """The index of the innermost open for-each in this process (not past a call), or None."""
    for index in range(len(control) - 1, -1, -1):
        if control[index].kind == "return":
            return None
        if control[index].kind == "each":
            return index
    return None


def _other_items(definition: m.ProcessDefinition, each: m.EachNode, undo: _Cons) -> _Cons:
    """`undo` with the undo of every step of a for-each's block that has one (`... per line`),
    unless the path already undoes it: when an item fails, the other items may have completed
    their steps, and those are undone too."""
    done = set(_items(undo))
    seen: set[str] = set()
    work = [each.body]
    while work:
        node_id = work.pop()
        if node_id in seen or node_id == each.gather:
            continue
        seen.add(node_id)
        work.extend(way.target for way in definition.ways_out(node_id))
    for node in definition.in_order:
        if node.id in seen and isinstance(node, m.StepNode) and node.compensation is not None:
            entry = (definition.name, node.name, f"{node.compensation.command.name} per {each.item}")
            if entry not in done:
                undo = _push(undo, entry)
    return undo


@dataclass(frozen=True, slots=True)
class _Cursor:
    """A partial path, waiting to be walked on: everything it has done so far."""

    definition: m.ProcessDefinition
    node: str
    control: tuple[_Control, ...]
    scope: str
    events: _Cons
    steps: _Cons  # (scope, step, outcome), newest first
    commands: _Cons
    undo: _Cons  # (process, step, commandName), newest first
    names: _Cons
    deviations: tuple[tuple[int, int], ...]
    position: int


class _Structure:
    """Block exits and loop tails of the definitions one walk meets (the process and those it
    calls), each worked out once. Keyed by fingerprint: a fingerprint covers the process's text
    and those of the processes it calls, so two definitions with one fingerprint have one
    structure."""

    def __init__(self) -> None:
        self.cache: dict[str, tuple[dict[str, str | None], dict[str, str]]] = {}

    def of(self, definition: m.ProcessDefinition) -> tuple[dict[str, str | None], dict[str, str]]:
        key = definition.fingerprint
        if key not in self.cache:
            self.cache[key] = (block_exits(definition), loop_tails(definition))
        return self.cache[key]


class _Walker:
    def __init__(self, definition: m.ProcessDefinition, max_paths: int) -> None:
        self.root = definition
        self.max_paths = max_paths
        self.structure = _Structure()
        self.heap: list[tuple[int, tuple[tuple[int, int], ...], int, _Cursor]] = []
        self.counter = itertools.count()
        self.pruned = False
        self.room = max_paths  # how many more offers of the current run can still be listed

    def offer(self, cursor: _Cursor) -> None:
        if self.room <= 0:
            # The offers of one run grow in order, and each yields a path: later ones never make the list.
            self.pruned = True
            return
        self.room -= 1
        heapq.heappush(self.heap, (len(cursor.deviations), cursor.deviations, next(self.counter), cursor))
        if len(self.heap) > 4 * self.max_paths + 64:
            # Every entry yields at least one path, and only the first max_paths are kept.
            self.heap = heapq.nsmallest(self.max_paths, self.heap)
            heapq.heapify(self.heap)
            self.pruned = True

    def paths(self) -> PathList:
        start = _Cursor(self.root, self.root.start, (), "", None, None, None, None, None, (), 0)
        self.offer(start)
        handler = self.root.outcomes(self.root.start).get("deadline")
        if handler is not None:
            # The deadline can pass anywhere: its handler is listed once, as if it passed before
            # anything was done (what it undoes, when it fails, is what was done by then).
            self.offer(_Cursor(self.root, handler, (), "", None, None, None, None, _push(None, "deadline"), ((1 << 30, 0),), 1))
        found: list[ProcessPath] = []
        while self.heap and len(found) < self.max_paths:
            _, _, _, cursor = heapq.heappop(self.heap)
            self.room = self.max_paths - len(found) - 1
            found.append(self.run(cursor))
        truncated = bool(self.heap) or self.pruned
        return PathList(_unique_names(found), truncated=truncated, limit=self.max_paths)

    def run(self, cursor: _Cursor) -> ProcessPath:
        """Walk a cursor to its end along first choices, offering every other choice."""
        definition = cursor.definition
        current = cursor.node
        control = cursor.control
        scope = cursor.scope
        events, steps, commands, undo, names = cursor.events, cursor.steps, cursor.commands, cursor.undo, cursor.names
        deviations = cursor.deviations
        position = cursor.position
        exits, tails = self.structure.of(definition)

        def fork(target: str, *, extra_events: tuple[PathEvent, ...] = (), step: tuple[str, str] | None = None,
                 sent: tuple[str, ...] = (), name: str, choice: int, opens: _Control | None = None,
                 completes: tuple[str, str, str] | None = None) -> None:
            new_events = events
            for event in extra_events:
                new_events = _push(new_events, event)
            new_steps = _push(steps, (scope, *step)) if step is not None else steps
            new_commands = commands
            for command in sent:
                new_commands = _push(new_commands, command)
            self.offer(
                _Cursor(
                    definition,
                    target,
                    control + (opens,) if opens is not None else control,
                    scope,
                    new_events,
                    new_steps,
                    new_commands,
                    _push(undo, completes) if completes is not None else undo,
                    _push(names, scope + name),
                    deviations + ((position, choice),),
                    position + 1,
                )
            )

        while True:
            if control and control[-1].definition is definition and control[-1].node == current:
                top = control[-1]
                if top.kind == "close":
                    events = _push(events, PathEvent("close"))
                    control = control[:-1]
                elif top.kind == "branches":
                    assert top.fork is not None
                    following = top.branch + 1
                    if following < len(top.fork.branch_names):
                        branch_name = top.fork.branch_names[following]
                        events = _push(events, PathEvent("section", definition.name, top.fork.name, branch_name))
                        control = control[:-1] + (_Control("branches", top.node, definition, top.fork, following),)
                        current = definition.follow(top.fork.id, f"branch:{branch_name}")
                    else:
                        events = _push(events, PathEvent("close"))
                        control = control[:-1]
                        current = definition.follow(current, "next")  # on from the join
                elif top.kind == "each":
                    events = _push(events, PathEvent("close"))
                    control = control[:-1]
                    current = definition.follow(current, "next")  # on from the gather
                elif top.kind == "first":  # the winner arrived: the losers are cancelled and undone
                    assert top.fork is not None
                    for process, step, command in loser_undos(definition, top.fork, top.branch):
                        events = _push(events, PathEvent("undo", process, step, command, "cancel"))
                    steps = _push(steps, (scope, top.fork.name, top.fork.branch_names[top.branch]))  # `name.winner`
                    events = _push(events, PathEvent("close"))
                    control = control[:-1]
                    current = definition.follow(current, "next")
                elif top.kind == "loop":
                    events = _push(events, PathEvent("close"))
                    control = control[:-1]
                    tail = definition.nodes[current]
                    bound = definition.outcomes(current).get("bound")
                    if bound is not None and isinstance(tail, m.UntilNode):  # its `else`, when `max` rounds ran
                        head = definition.nodes[tail.loop]
                        rounds = head.max if isinstance(head, m.LoopNode) else None
                        fork(bound, name=f"{tail.name}: {rounds} rounds", choice=1)
                        position += 1
                    current = definition.follow(current, "exit")  # out of the loop's `until`
                continue
            node = definition.nodes[current]
            match node:
                case m.StartNode() | m.JoinNode() | m.SetNode():
                    current = definition.follow(current, "next")
                case m.EmitNode():
                    message = node.message
                    events = _push(events, PathEvent("emit", definition.name, message.participant, message.command))
                    current = definition.follow(current, "next")
                case m.UntilNode():
                    current = definition.follow(current, "exit")
                case m.LoopNode():
                    tail_id = tails[node.id]
                    tail = definition.nodes[tail_id]
                    assert isinstance(tail, m.UntilNode)
                    bound = f", at most {node.max} times" if node.max is not None else ""
                    label = f"{node.name}: until {tail.until.text}{bound}"
                    events = _push(events, PathEvent("open", definition.name, "loop", label))
                    control = control + (_Control("loop", tail_id, definition),)
                    current = definition.follow(current, "body")
                case m.StepNode():
                    process = definition.name
                    outcomes = definition.outcomes(current)
                    if node.is_timer:
                        outcome = timer_text(node)
                        events = _push(events, PathEvent("step", process, node.name, outcome, "timer"))
                        steps = _push(steps, (scope, node.name, outcome))
                        current = outcomes["next"]
                        continue
                    sent: tuple[str, ...] = (node.command.name,) if node.command else ()
                    result = "ok" if node.command else "event"
                    completes = (process, node.name, node.compensation.command.name) if node.compensation else None
                    inside = _for_each(control)
                    each = control[inside].each if inside is not None else None
                    if completes is not None and each is not None:
                        completes = (process, node.name, f"{completes[2]} per {each.item}")
                    choice = 1
                    for reply in node.replies[1:]:  # every other success reply is an outcome of its own
                        fork(outcomes["next"], extra_events=(PathEvent("step", process, node.name, reply, result),),
                             step=(node.name, reply), sent=sent, name=f"{node.name}.{reply}", choice=choice,
                             completes=completes)
                        choice += 1
                    for reply in node.failure_replies:
                        policy = node.reply_retries.get(reply)  # a retried reply: sent again until its retries run out
                        fork(outcomes[f"failure:{reply}"], extra_events=(PathEvent("step", process, node.name, reply, "failure"),),
                             step=(node.name, reply), sent=sent * (1 + (policy.retries if policy else 0)),
                             name=f"{node.name}.{reply}", choice=choice, completes=_undone_anyway(node, completes, reply))
                        choice += 1
                    if "timeout" in outcomes:
                        attempts = 1 + (node.timeout.retries if node.timeout else 0)
                        fork(outcomes["timeout"], extra_events=(PathEvent("step", process, node.name, "timeout", "timeout"),),
                             step=(node.name, "timeout"), sent=sent * attempts, name=f"{node.name}.timeout", choice=choice,
                             completes=_undone_anyway(node, completes, "timeout"))
                    position += 1
                    success = node.replies[0] if node.replies else "sent"
                    events = _push(events, PathEvent("step", process, node.name, success, result))
                    steps = _push(steps, (scope, node.name, success))
                    for command in sent:
                        commands = _push(commands, command)
                    if completes is not None:
                        undo = _push(undo, completes)
                    current = outcomes["next"]
                case m.XorNode():
                    exit_id = exits[node.id] or ""
                    closer = _Control("close", exit_id, definition)
                    choices = arm_names(node)
                    outcomes = definition.outcomes(current)
                    targets = [outcomes[f"arm:{index}"] for index in range(len(node.arms))] + [outcomes["default"]]
                    feasible = _feasible_arms(node, _StepReplies(steps, scope, first_blocks(definition)))
                    for index in feasible[1:]:
                        part, label = choices[index]
                        fork(targets[index], extra_events=(PathEvent("open", definition.name, "alt", label),),
                             name=part, choice=index, opens=closer)
                    position += 1
                    events = _push(events, PathEvent("open", definition.name, "alt", choices[feasible[0]][1]))
                    control = control + (closer,)
                    current = targets[feasible[0]]
                case m.RaceNode():
                    exit_id = exits[node.id] or ""
                    closer = _Control("close", exit_id, definition)
                    labels = race_names(node)
                    outcomes = definition.outcomes(current)
                    for index, arm in enumerate(node.arms):
                        part, label = labels[index]
                        won = PathEvent("race", definition.name, node.name, arm.label, "message" if arm.messages else "timer")
                        opened = PathEvent("open", definition.name, "alt", label, "race")
                        if index == 0:
                            continue
                        fork(outcomes[f"arm:{index}"], extra_events=(opened, won), step=(node.name, arm.label), name=part,
                             choice=index, opens=closer)
                    position += 1
                    first = node.arms[0]
                    events = _push(events, PathEvent("open", definition.name, "alt", labels[0][1], "race"))
                    events = _push(events, PathEvent("race", definition.name, node.name, first.label,
                                                     "message" if first.messages else "timer"))
                    steps = _push(steps, (scope, node.name, first.label))
                    control = control + (closer,)
                    current = outcomes["arm:0"]
                case m.ForkNode() if node.first:
                    winner_waits: str = definition.graph.nodes[current]["join"]
                    for index, branch_name in enumerate(node.branch_names):
                        label = f"first of {node.name}: {branch_name} wins"
                        if index:
                            fork(definition.follow(current, f"branch:{branch_name}"),
                                 extra_events=(PathEvent("open", definition.name, "alt", label, "first"),),
                                 name=f"{node.name}: {branch_name} first", choice=index,
                                 opens=_Control("first", winner_waits, definition, node, index))
                    position += 1
                    branch_name = node.branch_names[0]
                    events = _push(events, PathEvent("open", definition.name, "alt", f"first of {node.name}: {branch_name} wins", "first"))
                    control = control + (_Control("first", winner_waits, definition, node, 0),)
                    current = definition.follow(current, f"branch:{branch_name}")
                case m.ForkNode():
                    branch_name = node.branch_names[0]
                    join_id: str = definition.graph.nodes[current]["join"]
                    events = _push(events, PathEvent("open", definition.name, "par", branch_name))
                    control = control + (_Control("branches", join_id, definition, node, 0),)
                    current = definition.follow(current, f"branch:{branch_name}")
                case m.EachNode():  # the body once, standing for every item
                    mode = (" in parallel" + (f", at most {node.at_most} at once" if node.at_most else "")) if node.parallel else ""
                    events = _push(events, PathEvent("open", definition.name, "loop", f"{node.name} in {node.items.text}{mode}"))
                    control = control + (_Control("each", node.gather, definition, each=node, tolerate=node.tolerate),)
                    current = definition.follow(current, "body")
                case m.CallNode():
                    callee = definition.called.get(node.process)
                    if callee is None:  # an unresolved call: the validator reports it
                        current = definition.follow(current, "next")
                        continue
                    events = _push(events, PathEvent("open", definition.name, "call", callee.name))
                    control = control + (_Control("return", "", definition, call=node, scope=scope),)
                    scope = f"{scope}{node.name}: "
                    definition = callee
                    exits, tails = self.structure.of(definition)
                    current = callee.start
                case m.EndNode():
                    returning = next((i for i in range(len(control) - 1, -1, -1) if control[i].kind == "return"), None)
                    if returning is None:
                        for _ in control:
                            events = _push(events, PathEvent("close"))
                        events = _push(events, PathEvent("end", definition.name))
                        outcome = "completed" if node.outcome is None else f"completed: {node.outcome}"
                        if node.timed_out:
                            outcome = "timed_out"
                        return self.finish(events, steps, commands, None, names, outcome)
                    for _ in range(len(control) - returning):
                        events = _push(events, PathEvent("close"))
                    frame = control[returning]
                    assert frame.call is not None
                    control = control[:returning]
                    definition = frame.definition
                    exits, tails = self.structure.of(definition)
                    scope = frame.scope
                    current = definition.follow(frame.call.id, "next")
                case m.FailNode() if (inside := _for_each(control)) is not None and control[inside].tolerate > 0:
                    # A failed item ends only itself while the for-each tolerates it: the path goes on
                    # after the block; another path has more items fail than it tolerates.
                    tolerated = control[inside]
                    assert tolerated.each is not None
                    beyond = control[:inside] + (dataclasses.replace(tolerated, tolerate=0),) + control[inside + 1 :]
                    more = f"more than {tolerated.tolerate} {'item fails' if tolerated.tolerate == 1 else 'items fail'}"
                    undo = _other_items(definition, tolerated.each, undo)  # the other items completed
                    self.offer(_Cursor(definition, current, beyond, scope, events, steps, commands, undo,
                                       _push(names, f"{scope}{tolerated.each.name}: {more}"), deviations + ((position, 1),), position + 1))
                    position += 1
                    for _ in control[inside:]:
                        events = _push(events, PathEvent("close"))
                    control = control[:inside]
                    current = definition.follow(tolerated.node, "next")
                case m.FailNode():
                    inside = _for_each(control)
                    enclosing = control[inside].each if inside is not None else None
                    if enclosing is not None:
                        undo = _other_items(definition, enclosing, undo)
                    for _ in control:
                        events = _push(events, PathEvent("close"))
                    events = _push(events, PathEvent("fail", definition.name, node.step or "", node.reason))
                    if names is None and node.cause == "fail":
                        names = _push(names, f'{scope}fail "{node.reason}"')
                    return self.finish(events, steps, commands, undo, names, f"failed: {node.reason}")

    def finish(self, events: _Cons, steps: _Cons, commands: _Cons, undo: _Cons, names: _Cons, outcome: str) -> ProcessPath:
        undone = list(reversed(_items(undo)))
        for process, step, command in undone:
            events = _push(events, PathEvent("undo", process, step, command))
        parts = _items(names)
        happened = _items(events)
        cancelled = [event.detail for event in happened if event.kind == "undo" and event.result == "cancel"]
        return ProcessPath(
            name=" / ".join(parts) if parts else HAPPY,
            outcome=outcome,
            steps=[(step, outcome) for _, step, outcome in _items(steps)],
            commands=_items(commands),
            compensation=cancelled + [command for _, _, command in undone],
            events=tuple(happened),
            undo_waves=undo_waves(self.root, undone),
        )


def first_blocks(definition: m.ProcessDefinition) -> frozenset[str]:
    """The names of the `first of` blocks of a definition."""
    return frozenset(node.name for node in definition.in_order if isinstance(node, m.JoinNode) and node.first)


def loser_undos(definition: m.ProcessDefinition, fork: m.ForkNode, winner: int) -> list[tuple[str, str, str]]:
    """(process, step, undo command) of what the losers of a `first of` block undo when branch
    number `winner` wins, most recent first: at most, every step on each loser's way through
    its branch that declares a compensation (a step still waiting when the winner arrives is
    abandoned, and its late success undone all the same). The first arm of each gateway, every
    branch of a parallel block; the steps of a called process are left out."""
    join: str = definition.graph.nodes[fork.id]["join"]
    found: list[tuple[str, str, str]] = []
    for index, branch in enumerate(fork.branch_names):
        if index == winner:
            continue
        work = [definition.follow(fork.id, f"branch:{branch}")]
        seen: set[str] = set()
        while work:
            current = work.pop()
            if current == join or current in seen:
                continue
            seen.add(current)
            node = definition.nodes[current]
            if isinstance(node, m.StepNode) and node.compensation is not None:
                found.append((definition.name, node.name, node.compensation.command.name))
            following = forward_successors(definition, current)
            work.extend(reversed(following) if isinstance(node, m.ForkNode) else following[:1])
    return list(reversed(found))


def _undone_anyway(node: m.StepNode, completes: tuple[str, str, str] | None, outcome: str) -> tuple[str, str, str] | None:
    """What a step that failed with `outcome` leaves to undo: its undo when it runs `even on` that."""
    return completes if node.compensation is not None and node.compensation.undoes_failure(outcome) else None


def _unique_names(paths: list[ProcessPath]) -> list[ProcessPath]:
    seen: dict[str, int] = {}
    out = []
    for path in paths:
        count = seen.get(path.name, 0) + 1
        seen[path.name] = count
        if count > 1:
            path = ProcessPath(f"{path.name} ({count})", path.outcome, path.steps, path.commands, path.compensation,
                               path.events, path.undo_waves)
        out.append(path)
    return out


def enumerate_paths(definition: m.ProcessDefinition, max_paths: int = DEFAULT_MAX_PATHS) -> PathList:
    """Every path from the start to an end, simplest first, at most `max_paths` of them."""
    if max_paths < 1:
        raise ValueError("max_paths must be at least 1")
    return _Walker(definition, max_paths).paths()


def default_path(paths: list[ProcessPath]) -> ProcessPath:
    """The path a diagram shows by default: `happy`, else the first that completes, else the first."""
    for path in paths:
        if path.name == HAPPY:
            return path
    return next((p for p in paths if p.completed), paths[0])


# ---------------------------------------------------------------- printing


def _compensation_text(path: ProcessPath) -> str:
    """The undos in order; those sent side by side joined with `&` (a lane of several, in
    parentheses: its undos go one after the other)."""
    if not path.compensation:
        return "-"
    if all(len(wave) == 1 for wave in path.undo_waves):
        return ", ".join(path.compensation)
    return ", ".join(
        " & ".join(lane[0] if len(lane) == 1 else f"({', '.join(lane)})" for lane in wave) for wave in path.undo_waves
    )


def _table(rows: list[tuple[str, ...]]) -> Iterator[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths[:-1], strict=True)]
        yield "  ".join([*cells, row[-1]]).rstrip()


def paths_text(paths: list[ProcessPath]) -> str:
    """The saga table: one line per path with its outcome and the undo commands that run (and,
    when a path publishes notifications, a column of them before the compensation)."""
    emits = any(path.emitted for path in paths)
    rows: list[tuple[str, ...]] = [("PATH", "OUTCOME", "STEPS", *(("EMITTED",) if emits else ()), "COMPENSATION")]
    for path in paths:
        emitted = (", ".join(path.emitted) or "-",) if emits else ()
        rows.append((path.name, path.outcome, str(len(path.steps)), *emitted, _compensation_text(path)))
    lines = list(_table(rows))
    count = len(paths)
    summary = f"{count} path{'s' if count != 1 else ''}"
    if isinstance(paths, PathList) and paths.truncated:
        summary += f" (stopped after {paths.limit}: the process has more)"
    lines.append(summary)
    return "\n".join(lines) + "\n"


def paths_json(paths: list[ProcessPath]) -> list[dict[str, Any]]:
    """The paths as JSON-friendly objects."""
    return [
        {
            "name": path.name,
            "outcome": path.outcome,
            "steps": [{"step": step, "outcome": outcome} for step, outcome in path.steps],
            "commands": list(path.commands),
            "compensation": list(path.compensation),
            "emitted": path.emitted,
            **({"undoneTogether": [[list(lane) for lane in wave] for wave in path.undo_waves]}
               if any(len(wave) > 1 for wave in path.undo_waves) else {}),
        }
        for path in paths
    ]
