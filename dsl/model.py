"""The compiled process: a networkx graph whose nodes carry immutable records.

`ProcessDefinition.graph` is a `networkx.MultiDiGraph`, built by the compiler and frozen
(`networkx.freeze`: a definition never changes; change a copy). Each node is
one of the kinds in `NODE_KINDS` (the one table of them); its attributes are `record` (the
node's record below), `kind`, `label` (a step's name, a fail end's reason, a block's name),
`line`, and for the two ends of a block the id of the other end: `join` on a fork and `fork`
on its join, `until` on a loop's head and `loop` on its `until`, `gather` on a for-each's head
and `each` on its gather. A step that commands also has
`participant`, `command` and, when it declares one, `compensation` (the undo's commandName);
a human task (dsl/tasks.py) also has `task` (true).

Each way out of a node is one edge, keyed by its outcome (the key is unique among the node's
ways out; `ProcessDefinition.follow` finds the edge by it), with attributes `kind` and `label`:

=================  =======  =======================================================================
key                kind     the way out
=================  =======  =======================================================================
``next``           next     sequence: a step's success, a start, a join, a call's return
``failure:<r>``    failure  a step's failure reply `<r>`, to its fail end or its recovery path
``timeout``        timeout  a step's wait timed out, to its fail end or its recovery path
``arm:<n>``        arm      the `n`th arm (from 0) of an xor (its condition or case as label)
``arm:<n>``        message  the `n`th arm of a race that messages win (or ``timer`` for a timer arm)
``default``        default  the else of an xor, or what follows when no arm holds
``deadline``       deadline the start to the first node of the deadline handler (`deadline 3d { ... }`)
``branch:<name>``  branch   a fork to the first node of its branch `<name>`
``body``           next     a loop's (or a for-each's) head to the first node of its body
``back``           back     an `until` back to the body (the loop repeats)
``exit``           exit     an `until` out of the loop
``bound``          bound    an `until` to its `else` block when the loop reached its `max`
=================  =======  =======================================================================

Node ids are deterministic: step names for steps, `start`, `end`, `<step>.<reply>` and
`<step>.timeout` for a step's fail ends, and `<kind>_<n>` in document order for the rest.

Why one module of about 700 lines: the node records, the definition and the graph's accessors
are one vocabulary that every stage (validator, engine, diagrams) reads together; splitting
the records from the definition would only make each import both.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, NamedTuple, TypeVar

import networkx as nx

from procflow.dsl import expressions as ex
from procflow.dsl.diagnostics import Span
from procflow.dsl.expressions import Evaluator, Expr, ObjectExpr

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Mapping_:
    """A data mapping (`{ key: expr, ... }`) with its compiled evaluator."""

    expr: ObjectExpr
    evaluate: Evaluator
    copies_input: tuple[tuple[str, str], ...] | None = None
    """(key, input field) pairs when the mapping only copies fields of the input
    (`{ orderId: input.orderId }`, the usual payload): the engine then builds it as
    `{key: input.get(field)}`, which is what evaluating it gives. None for any other."""


@dataclass(frozen=True, slots=True)
class Condition:
    """An expression with its compiled evaluator."""

    expr: Expr
    evaluate: Evaluator
    text: str


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """A command sent to a participant: `participant.command { mapping }`."""

    participant: str
    command: str
    data: Mapping_ | None
    span: Span
    participant_span: Span | None = None  # the participant's name, where diagnostics point
    command_span: Span | None = None  # the command's name

    @property
    def name(self) -> str:
        """The wire `commandName`, e.g. `payment.authorize`."""
        return f"{self.participant}.{self.command}"


@dataclass(frozen=True, slots=True)
class TimeoutSpec:
    """How long a wait lasts, and how it retries: `within 30s retry 2 backoff 5s x2`."""

    seconds: float
    text: str
    retries: int = 0
    backoff_seconds: float = 0.0
    factor: float = 1.0
    span: Span | None = None

    def backoff_before(self, attempt: int) -> float:
        """Seconds to wait before sending attempt number `attempt` (2, 3, ...)."""
        return self.backoff_seconds * (self.factor ** max(0, attempt - 2))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How an error reply is retried: `on busy retry 3 backoff 10s x2 max 1m jitter then ...`.
    Attempts are counted across the step (with its timeout's retries): the reply is retried
    while the step has sent its command at most `retries` more times."""

    retries: int
    backoff_seconds: float = 0.0
    factor: float = 1.0
    max_seconds: float | None = None
    jitter: bool = False

    def backoff_before(self, attempt: int) -> float:
        """Seconds to wait before sending attempt number `attempt` (2, 3, ...), at most
        `max_seconds`, before jitter (which the engine draws from the attempt's dedup key)."""
        delay = self.backoff_seconds * (self.factor ** max(0, attempt - 2))
        return min(delay, self.max_seconds) if self.max_seconds is not None else delay

    @property
    def text(self) -> str:
        """`3 retries`, as diagrams label the error reply's way out."""
        return f"{self.retries} {'retry' if self.retries == 1 else 'retries'}"


@dataclass(frozen=True, slots=True)
class CompensationSpec:
    """The command that undoes a completed step, and the replies that confirm it."""

    command: CommandSpec
    replies: tuple[str, ...]
    timeout: TimeoutSpec | None
    span: Span
    even_on: tuple[str, ...] = ()
    """`... even on timeout, charge_error` (`failure`: on any failure reply or timeout): the
    command may have taken effect although the step failed so (a payment that charged, then
    errored, or whose answer was lost), so its undo runs in that case too."""
    failure_data: Mapping_ | None = None
    """The fields of the undo's mapping that read `failure` (the instance's failure: its
    `cause`, `reason`, `step`, `reply` and `data`), computed when the instance fails; the
    command's own mapping holds the others, computed when the step completed. `keys` is the
    order the fields were written in."""
    keys: tuple[str, ...] = ()

    refused: tuple[str, ...] = ()
    """`... unless cancel_refused`: replies that say the undo cannot be done; like running out
    of retries, the undo is then not confirmed (`on undo failure` says what follows)."""

    def undoes_failure(self, outcome: str) -> bool:
        """True when the step's undo runs after it failed with `outcome` (a reply, or `timeout`)."""
        return outcome in self.even_on or "failure" in self.even_on


@dataclass(frozen=True, slots=True)
class Node:
    """Base of all nodes: a deterministic id, a kind, and where it was written."""

    id: str
    span: Span


@dataclass(frozen=True, slots=True)
class StartNode(Node):
    """Where an instance begins (and where its deadline handler hangs, when it has one)."""

    next: str
    deadline_handler: str | None = None  # the first node of `deadline D { ... }`
    kind: ClassVar[str] = "start"


@dataclass(frozen=True, slots=True)
class EndNode(Node):
    """The instance completes here; with an `outcome` (`end "cancelled"`), the state record
    says so (`InstanceState.outcome`)."""

    outcome: str | None = None
    timed_out: bool = False  # the end of a deadline handler: the instance ends `timed_out`, nothing undone
    kind: ClassVar[str] = "end"


@dataclass(frozen=True, slots=True)
class FailNode(Node):
    """The instance fails here and compensates: an explicit `fail`, a failure reply or a
    timeout (`cause` is `fail`, `reply` or `timeout`)."""

    reason: str
    cause: str = "fail"
    step: str | None = None
    trigger: str | None = None  # the failure reply, for `reply` causes
    kind: ClassVar[str] = "fail"


@dataclass(frozen=True, slots=True)
class TaskRound:
    """One sending of a human task (dsl/tasks.py): the assignment, or an escalation that sends
    it again (`remind`, `reassign`), with whom it goes to and how long it has."""

    command: CommandSpec  # `task.<name>` with its data (the engine adds `due`)
    due_seconds: float | None
    escalation: str | None  # None for the assignment, else "remind" or "reassign"
    assignee: str | None  # the expression giving the person or group, as written (`group "managers"`)


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """What makes a step a human task: its rounds (round `n` is sent as attempt `n`), the form
    its completing reply must fill (JSON Schema), and how the chain ends."""

    rounds: tuple[TaskRound, ...]
    form: dict[str, Any] | None
    fails_with: str  # the failure reason when the last due passes

    def round(self, attempt: int) -> TaskRound:
        """The round sent as attempt `attempt` (1, 2, ...); the last one past the end."""
        return self.rounds[min(attempt, len(self.rounds)) - 1]


@dataclass(frozen=True, slots=True)
class StepNode(Node):
    """A step: send-and-await, await an event, or a timer."""

    name: str
    next: str
    doc: str | None = None
    status: str | None = None
    command: CommandSpec | None = None
    replies: tuple[str, ...] = ()  # replies (or events) that complete the step
    bind: str | None = None
    failures: Mapping[str, str] = field(default_factory=dict)  # failure reply -> its fail node, or its recovery path's first node
    failure_binds: Mapping[str, str] = field(default_factory=dict)  # failure reply -> bound name
    reply_retries: Mapping[str, RetryPolicy] = field(default_factory=dict)  # failure reply -> its retry, when retried
    timeout: TimeoutSpec | None = None
    timeout_fail: str | None = None  # where a timeout leads: its fail node, or its recovery path's first node
    compensation: CompensationSpec | None = None
    nothing_to_undo: str | None = None  # the author says so (a query, a decision): no compensation needed
    timer_seconds: float | None = None
    timer_until: Condition | None = None
    task: TaskSpec | None = None  # a human task (`task name by ... { ... }`), see dsl/tasks.py
    kind: ClassVar[str] = "step"

    @property
    def failure_replies(self) -> tuple[str, ...]:
        """The replies that fail the step (each leads to its own fail end)."""
        return tuple(self.failures)

    @property
    def participant(self) -> str | None:
        """The participant the step commands, if it sends one."""
        return self.command.participant if self.command else None

    @property
    def is_timer(self) -> bool:
        """True for a step that only waits for time to pass."""
        return self.timer_seconds is not None or self.timer_until is not None


@dataclass(frozen=True, slots=True)
class XorArm:
    """One arm of an exclusive gateway."""

    condition: Condition | None  # None for a switch case, which uses `values`
    values: tuple[Any, ...]
    target: str
    label: str


@dataclass(frozen=True, slots=True)
class XorNode(Node):
    """Exclusive gateway: the first arm whose condition holds (`if`/`else if`/`else`), or whose
    case is the subject's value (`switch`, when `subject` is set)."""

    arms: tuple[XorArm, ...]
    default: str  # where to go when no arm holds (the else, or what follows)
    has_else: bool
    subject: Condition | None = None
    kind: ClassVar[str] = "xor"


@dataclass(frozen=True, slots=True)
class ForkNode(Node):
    """Parallel split into named branches: every branch starts. With `first` (`first of`),
    the branches compete: the first to reach the join wins."""

    name: str
    branches: tuple[tuple[str, str], ...]  # (branch name, first node id)
    join: str
    undo_in_parallel: bool = False  # `undo in parallel`: its completed branches are undone side by side
    first: bool = False
    kind: ClassVar[str] = "fork"

    @property
    def branch_names(self) -> tuple[str, ...]:
        """The branches' names, in the order written (the edge to each is `branch:<name>`)."""
        return tuple(name for name, _ in self.branches)


@dataclass(frozen=True, slots=True)
class JoinNode(Node):
    """Parallel join: continues once all `expected` branches have arrived. With `first`
    (`first of name`), it continues once the first branch arrives: the others are cancelled,
    what they completed is undone (most recent first), and `name.winner` is the winner's name."""

    name: str
    expected: int
    next: str
    first: bool = False
    kind: ClassVar[str] = "join"


@dataclass(frozen=True, slots=True)
class RaceArmSpec:
    """One arm of a race: messages or a timer, and where it leads."""

    messages: tuple[str, ...]
    bind: str | None
    timer_seconds: float | None
    timer_at: Condition | None
    target: str
    label: str


@dataclass(frozen=True, slots=True)
class RaceNode(Node):
    """Event-based gateway: the first arm to fire wins."""

    name: str
    arms: tuple[RaceArmSpec, ...]
    status: str | None = None
    kind: ClassVar[str] = "race"


@dataclass(frozen=True, slots=True)
class LoopNode(Node):
    """Head of a bounded `repeat` loop (it counts the rounds)."""

    name: str
    body: str
    max: int | None
    kind: ClassVar[str] = "loop"


@dataclass(frozen=True, slots=True)
class UntilNode(Node):
    """Tail of a `repeat` loop: leave when `until` holds or `max` iterations have run."""

    name: str
    loop: str
    until: Condition
    body: str
    next: str
    bound_reached: str | None = None  # the first node of `else { ... }`, taken when the bound is reached
    kind: ClassVar[str] = "until"


@dataclass(frozen=True, slots=True)
class CallNode(Node):
    """Runs another process (`process`) to its end with `data` as its input."""

    name: str
    process: str
    data: Mapping_ | None
    bind: str | None
    next: str
    kind: ClassVar[str] = "call"


@dataclass(frozen=True, slots=True)
class EachNode(Node):
    """For each item of a list (`for each line in input.lines ...`): the body runs once per
    item, in a frame of its own (the item bound to `item`, the names the body binds kept per
    item), one at a time or `parallel` (`at_most` at once); `tolerate` items may fail before the
    whole fails; the items' results are bound to `collect` in the enclosing frame at `gather`."""

    name: str  # `for each line`
    item: str
    items: Condition
    body: str
    gather: str
    parallel: bool = False
    at_most: int | None = None
    tolerate: int = 0
    collect: str | None = None
    binds: tuple[str, ...] = ()  # the names the body binds with `as`: each item's result keeps them
    kind: ClassVar[str] = "each"

    @property
    def concurrency(self) -> int | None:
        """How many items run at once: 1 one after another, None for all of them."""
        return self.at_most if self.parallel else 1


@dataclass(frozen=True, slots=True)
class GatherNode(Node):
    """Where every item of a for-each arrives (`each` is its head): once all have, the results
    are collected and the process goes on."""

    name: str
    each: str
    next: str
    collect: str | None = None  # the name the results are bound to (its for-each's `collect`)
    kind: ClassVar[str] = "gather"


@dataclass(frozen=True, slots=True)
class SetNode(Node):
    """`set name = value`: binds `name` in the process's data (beside the names bound with
    `as`), then goes on. Routing data, not business computation (W203 still applies)."""

    name: str
    value: Condition
    next: str
    kind: ClassVar[str] = "set"


@dataclass(frozen=True, slots=True)
class EmitNode(Node):
    """`emit participant.event { data }`: publishes a notification through the outbox, like a
    command but with no `replyTo` (nobody answers it), then goes on at once."""

    message: CommandSpec
    next: str
    kind: ClassVar[str] = "emit"


FAILURE_NAME = "failure"
"""The name an undo's mapping reads the instance's failure by (`compensate ... { reason: failure.reason }`):
an object with `cause`, `reason`, `step`, `reply` and `data` (the failure reply's payload)."""

FAILURE_FIELDS = ("cause", "reason", "step", "reply", "data")
"""The fields of `failure`."""


TERMINAL_STATUSES = frozenset({"completed", "failed", "timed_out", "compensated", "compensation_failed"})
"""Statuses after which an instance does nothing more by itself (an operator may resume
`compensation_failed`; a late success may still reopen compensation)."""

BUILTIN_STATUSES = TERMINAL_STATUSES | {"running", "compensating"}
"""Every status an instance can have besides the ones its steps and races name (`status ...`)."""


AnyNode = (
    StartNode | EndNode | FailNode | StepNode | XorNode | ForkNode | JoinNode | RaceNode | LoopNode | UntilNode | CallNode
    | EachNode | GatherNode | SetNode | EmitNode
)

NODE_KINDS: Mapping[str, type[AnyNode]] = {
    cls.kind: cls
    for cls in (
        StartNode, StepNode, XorNode, ForkNode, JoinNode, RaceNode, LoopNode, UntilNode, CallNode, EachNode, GatherNode,
        FailNode, EndNode, SetNode, EmitNode,
    )
}
"""Every kind of node, by name (a record's `kind`, and its graph node's): the one table of them.
Each record's docstring says what its kind of node does."""


@dataclass(frozen=True, slots=True)
class Participant:
    """A service the process coordinates."""

    name: str
    display: str
    span: Span
    replies: Mapping[str, dict[str, Any] | None] = field(default_factory=dict)
    commands: Mapping[str, dict[str, Any] | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Scenario:
    """A named simulation of the process with its expected outcome (see `procflow test`)."""

    name: str
    description: str | None
    span: Span
    syntax: Any  # procflow.dsl.syntax.Scenario


def canonical_json(value: Any) -> str:
    """`value` as canonical JSON text (sorted keys, no spaces): equal values give equal texts."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class ProcessDefinition:
    """An immutable, compiled process. Build with `procflow.dsl.load` / `compile_source`."""

    name: str
    version: int
    title: str | None
    doc: str | None
    fingerprint: str
    correlate: Condition | None
    reply_to: str
    deadline_seconds: float | None
    input_schema: dict[str, Any] | None
    participants: Mapping[str, Participant]
    events: Mapping[str, dict[str, Any] | None]
    nodes: Mapping[str, AnyNode]
    start: str
    order: tuple[str, ...]  # node ids in document order
    called: Mapping[str, ProcessDefinition]
    limits: Mapping[str, int]
    path: str
    graph: nx.MultiDiGraph = field(default_factory=nx.MultiDiGraph, repr=False, compare=False)
    """The process as a graph (see the module doc): the compiler builds it. A definition built
    by hand without one gets it drawn from its node records."""
    source: str = field(repr=False, default="")
    syntax: Any = field(repr=False, default=None)
    scenario_loader: Callable[[], list[Any]] | None = field(default=None, repr=False, compare=False)
    output: Mapping_ | None = None
    """`output { ... }`: what a completed instance returns (`InstanceState.output`)."""
    undo_failure: str = "stop"
    """`on undo failure continue|stop`: when an undo cannot be confirmed, the instance stops
    (`compensation_failed`, the default) or goes on with the other undos and lists it as
    unconfirmed (`Compensation.unconfirmed`)."""
    undo_lanes: Mapping[str, UndoLane] = field(default_factory=dict, repr=False)
    """step name -> where its undo runs beside others: the steps inside a `parallel` block
    that says `undo in parallel` (the outermost such block, when they nest)."""

    def __repr__(self) -> str:
        # Short: the generated one printed every node and contract (some 58 kB for a sample),
        # in a REPL and wherever a tool shows arguments (Hypothesis, pytest, loggers).
        return f"ProcessDefinition(name={self.name!r}, version={self.version}, fingerprint={self.fingerprint!r}, nodes={len(self.nodes)})"

    def __post_init__(self) -> None:
        if not self.graph and self.nodes:
            # (The documented way for a frozen dataclass to set a field it works out itself.)
            object.__setattr__(self, "graph", graph_from_records(self.name, [self.nodes[n] for n in self.order]))

    # What is worked out from the fields is kept on first use (`cached_property` writes the
    # instance's __dict__, which a frozen dataclass allows): the definition stays immutable.

    @cached_property
    def scenarios(self) -> tuple[Scenario, ...]:
        """The scenarios written after the process (parsed on first use when loading skipped them:
        the compiler hands over `scenario_loader`, so the model never imports the parser)."""
        found = self.scenario_loader() if self.scenario_loader is not None else []
        return tuple(Scenario(s.name.text, s.description, s.span, s) for s in found)

    @cached_property
    def steps(self) -> tuple[StepNode, ...]:
        """The step nodes, in document order."""
        return tuple(n for n in self.in_order if isinstance(n, StepNode))

    @cached_property
    def in_order(self) -> tuple[AnyNode, ...]:
        """The nodes in document order (`order`), worked out once: a pass over a large process
        reads them in turn instead of looking each one up by id."""
        return tuple(self.nodes[node_id] for node_id in self.order)

    @cached_property
    def position(self) -> Mapping[str, int]:
        """node id -> its index in `order`."""
        return {node_id: index for index, node_id in enumerate(self.order)}

    @cached_property
    def processes(self) -> Mapping[str, ProcessDefinition]:
        """This process and every process it calls (directly or not), by name: this one first,
        then each callee before the ones it calls, in the order they are called."""
        found: dict[str, ProcessDefinition] = {}
        stack = [self]
        while stack:
            process = stack.pop()
            if process.name not in found:
                found[process.name] = process
                stack.extend(reversed(list(process.called.values())))
        return found

    @cached_property
    def declares_payload_schemas(self) -> bool:
        """True when this process (not the ones it calls) declares the payload of an event or of
        a participant's reply."""
        return any(v is not None for v in self.events.values()) or any(
            v is not None for p in self.participants.values() for v in p.replies.values()
        )

    @cached_property
    def correlation_field(self) -> str | None:
        """The input field the correlation key is (`correlate by input.orderId`), else None."""
        return input_field(self.correlate.expr) if self.correlate is not None else None

    @cached_property
    def waits(self) -> Mapping[str, WaitSpec]:
        """For each step and race: what a wait there needs (one value per node, which every
        wait on it shares)."""
        found: dict[str, WaitSpec] = {}
        for node in self.in_order:
            match node:
                case StepNode():
                    expects = node.replies + tuple(r for r in node.failure_replies if r not in node.replies)
                    found[node.id] = WaitSpec(expects, node.command.name if node.command else None)
                case RaceNode():
                    found[node.id] = WaitSpec(tuple(name for arm in node.arms for name in arm.messages), None)
        return found

    def worked_out(self, kind: type[T], work: Callable[[ProcessDefinition], T]) -> T:
        """What a later stage works out once for this definition (the engine's plan): made by
        `work` on first use and kept with the definition, so it lives exactly as long as the
        definition does (the model imports none of the stages that use it)."""
        kept = self._worked_out
        found: T | None = kept.get(kind)
        if found is None:
            found = kept[kind] = work(self)
        return found

    @cached_property
    def _worked_out(self) -> dict[type, Any]:
        return {}

    @cached_property
    def input_schema_text(self) -> str | None:
        """`input_schema` as canonical JSON text: what the interpreter builds the input's
        validator from and finds it again by (`contracts.schema_text_problem`)."""
        return None if self.input_schema is None else canonical_json(self.input_schema)

    def ways_out(self, node_id: str) -> tuple[Way, ...]:
        """Every way out of a node, read from the graph's edges (each with its outcome key)."""
        return self._ways[node_id]

    def follow(self, node_id: str, key: str) -> str:
        """The node reached from `node_id` by the outcome `key` (`next`, `failure:<reply>`,
        `timeout`, `arm:<n>`, `default`, `branch:<name>`, `body`, `back`, `exit`): the graph's edge."""
        try:
            return self._outcomes[node_id][key]
        except KeyError:
            raise KeyError(f"{node_id} has no way out `{key}`") from None

    def outcomes(self, node_id: str) -> Mapping[str, str]:
        """A node's ways out as outcome key -> the node it leads to (the graph's edges by key)."""
        return self._outcomes[node_id]

    # The graph's edges indexed once, by node and by outcome: the engine follows one on every
    # move and the validator reads every node's ways out, and networkx's views, made anew on
    # each call, cost a fifth of a transition. The graph is frozen, so they cannot go stale.

    @cached_property
    def _ways(self) -> dict[str, tuple[Way, ...]]:
        found: dict[str, list[Way]] = {node_id: [] for node_id in self.graph}
        for source, target, key, data in self.graph.edges(keys=True, data=True):
            found[source].append(Way(target, data["kind"], data["label"], key))
        return {node_id: tuple(ways) for node_id, ways in found.items()}

    @cached_property
    def _outcomes(self) -> dict[str, dict[str, str]]:
        return {node_id: {way.key: way.target for way in ways} for node_id, ways in self._ways.items()}

    def step(self, name: str) -> StepNode:
        """The step called `name` (KeyError when there is none)."""
        node = self.nodes[name]
        if not isinstance(node, StepNode):
            raise KeyError(name)
        return node

    def definition_of(self, process: str) -> ProcessDefinition:
        """This process or one it calls (directly or not), by name."""
        return self.processes[process]


@dataclass(frozen=True, slots=True)
class UndoLane:
    """Where a step's undo runs when its parallel block is undone in parallel: the block
    (its fork), the branch (each branch is undone in reverse order of its own completions,
    beside the other branches), and how many loops enclose the block (the first `loops`
    counters of the step's round say which run of the block it completed in)."""

    fork: str
    branch: str
    loops: int


@dataclass(frozen=True, slots=True)
class WaitSpec:
    """What a wait at a step or a race needs."""

    expects: tuple[str, ...]
    """The replies and events that end it: a step's successes then its failure replies, or
    every message arm of a race."""
    command_name: str | None
    """The commandName the step sends (None for a race, a timer or a step awaiting an event)."""


class Way(NamedTuple):
    """One edge out of a node: where it leads, its kind, its label, and the outcome key that
    names it uniquely among the node's ways out."""

    target: str
    kind: str
    label: str
    key: str


def input_field(expr: Expr) -> str | None:
    """The field of the input an expression is when it is just `input.<field>`, else None."""
    if isinstance(expr, ex.Field) and isinstance(expr.base, ex.Var) and expr.base.name == "input":
        return expr.name
    return None


def input_fields(expr: ObjectExpr) -> tuple[tuple[str, str], ...] | None:
    """(key, input field) pairs of a mapping that only copies fields of the input, else None
    (see `Mapping_.copies_input`)."""
    pairs = []
    for key, value in expr.pairs:
        name = input_field(value)
        if name is None:
            return None
        pairs.append((key, name))
    if 1 + 2 * len(pairs) > ex.MAX_NODES:  # its nodes: the object, and a field of `input` per pair
        return None  # refused when evaluated (E106): leave it to the evaluator
    return tuple(pairs)


def node_attributes(node: AnyNode) -> dict[str, Any]:
    """A graph node's attributes but its block partner's id (see the module doc)."""
    attrs: dict[str, Any] = {"record": node, "kind": node.kind, "line": node.span.line}
    match node:
        case StepNode():
            attrs["label"] = node.name
            if node.command:
                attrs["participant"] = node.command.participant
                attrs["command"] = node.command.name
            if node.compensation:
                attrs["compensation"] = node.compensation.command.name
            if node.task is not None:
                attrs["task"] = True
        case FailNode():
            attrs["label"] = node.reason
        case XorNode():
            attrs["label"] = f"switch {node.subject.text}" if node.subject is not None else "if"
        case EndNode():
            attrs["label"] = node.outcome if node.outcome is not None else node.kind
        case StartNode():
            attrs["label"] = node.kind
        case ForkNode() | JoinNode() | RaceNode() | LoopNode() | UntilNode() | CallNode() | EachNode() | GatherNode():
            attrs["label"] = node.name
            if isinstance(node, ForkNode | JoinNode) and node.first:
                attrs["first"] = True  # `first of`: the first branch to finish wins
        case SetNode():
            attrs["label"] = f"set {node.name}"
        case EmitNode():
            attrs["label"] = node.message.name
            attrs["participant"] = node.message.participant
    return attrs


def graph_data(definition: ProcessDefinition) -> dict[str, Any]:
    """The graph as plain JSON-ready data (what `procflow graph` prints): networkx's node-link
    form, with each node's attributes but its `record` (the attributes say what it holds) and
    its `line` (where it is written is not what the process is: `procflow fmt`, or a comment
    added above, leaves the printed graph as it was)."""
    data: dict[str, Any] = nx.node_link_data(definition.graph, edges="edges")
    data["nodes"] = [{key: value for key, value in node.items() if key not in ("record", "line")} for node in data["nodes"]]
    return data


def graph_from_records(name: str, nodes: Sequence[AnyNode]) -> nx.MultiDiGraph:
    """The graph of a definition built by hand (the compiler builds its own as it links): drawn
    from the target fields of the node records, given in document order."""
    graph = nx.MultiDiGraph(name=name)
    for node in nodes:
        attrs = node_attributes(node)
        match node:
            case ForkNode():
                attrs["join"] = node.join
            case UntilNode():
                attrs["loop"] = node.loop
            case GatherNode():
                attrs["each"] = node.each
        graph.add_node(node.id, **attrs)
    for node in nodes:
        match node:
            case ForkNode():
                graph.nodes[node.join]["fork"] = node.id
            case UntilNode():
                graph.nodes[node.loop]["until"] = node.id
            case GatherNode():
                graph.nodes[node.each]["gather"] = node.id
        for way in _record_ways(node):
            graph.add_edge(node.id, way.target, key=way.key, kind=way.kind, label=way.label)
    return nx.freeze(graph)


def _record_ways(node: AnyNode) -> list[Way]:
    """A node record's ways out, read from its target fields, in the order written."""
    match node:
        case StartNode():
            ways = [Way(node.next, "next", "", "next")]
            return ways + [Way(node.deadline_handler, "deadline", "deadline", "deadline")] if node.deadline_handler else ways
        case JoinNode() | CallNode() | GatherNode() | SetNode() | EmitNode():
            return [Way(node.next, "next", "", "next")]
        case EachNode():
            return [Way(node.body, "next", "", "body")]
        case StepNode():
            ways = [Way(node.next, "next", ",".join(node.replies) if node.command else "", "next")]
            ways += [Way(target, "failure", reply, f"failure:{reply}") for reply, target in node.failures.items()]
            if node.timeout_fail:
                ways.append(Way(node.timeout_fail, "timeout", "timeout", "timeout"))
            return ways
        case XorNode():
            ways = [Way(arm.target, "arm", arm.label, f"arm:{index}") for index, arm in enumerate(node.arms)]
            return [*ways, Way(node.default, "default", "else" if node.has_else else "otherwise", "default")]
        case ForkNode():
            return [Way(target, "branch", name, f"branch:{name}") for name, target in node.branches]
        case RaceNode():
            return [
                Way(arm.target, "message" if arm.messages else "timer", arm.label, f"arm:{index}")
                for index, arm in enumerate(node.arms)
            ]
        case LoopNode():
            return [Way(node.body, "next", "", "body")]
        case UntilNode():
            ways = [Way(node.next, "exit", "until " + node.until.text, "exit"), Way(node.body, "back", "repeat", "back")]
            return ways + [Way(node.bound_reached, "bound", "bound reached", "bound")] if node.bound_reached else ways
        case FailNode() | EndNode():
            return []

