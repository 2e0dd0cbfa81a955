"""The compiled process: an immutable table of nodes, and the networkx graph drawn from it.

Node kinds (the `kind` of each node, and of each node in `ProcessDefinition.graph`):

==========  ==============================================================================
``start``   where an instance begins
``step``    sends a command and awaits a reply, or awaits an event, or waits for a timer
``xor``     exclusive gateway: the first arm whose condition holds (an `if` or a `switch`)
``fork``    parallel split: every branch starts
``join``    parallel join: continues when every branch of its fork has arrived
``race``    event-based gateway: the first message or timer to arrive wins
``loop``    head of a bounded `repeat` loop (counts iterations)
``until``   tail of a `repeat` loop: leaves when the condition holds or the bound is reached
``call``    runs another process to its end, then continues
``fail``    the instance fails here and compensates (explicit `fail`, a failure reply, a timeout)
``end``     the instance completes here
==========  ==============================================================================

Edge kinds (`kind` attribute of each graph edge): ``next`` (sequence), ``arm`` (a condition
or case of an xor; `label` holds it), ``default`` (the else of an xor), ``branch`` (fork to a
branch), ``join`` (a branch's end to its join), ``message`` and ``timer`` (race arms),
``failure`` (a failure reply to its fail end), ``timeout`` (a step's timeout to its fail end),
``back`` (loop repetition), ``exit`` (loop exit), ``call`` (a call to the called process's
start, only in its own graph). Node ids are deterministic: step names for steps, and
`<kind>_<n>` in document order for the rest.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, NamedTuple

from procflow.dsl.diagnostics import Span
from procflow.dsl.expressions import Evaluator, Expr, ObjectExpr
from procflow.dsl.quick import quicken

if TYPE_CHECKING:
    import networkx as nx


@dataclass(frozen=True, slots=True)
class Mapping_:
    """A data mapping (`{ key: expr, ... }`) with its compiled evaluator."""

    expr: ObjectExpr
    evaluate: Evaluator


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
class CompensationSpec:
    """The command that undoes a completed step, and the replies that confirm it."""

    command: CommandSpec
    replies: tuple[str, ...]
    timeout: TimeoutSpec | None
    span: Span


@dataclass(frozen=True, slots=True)
class Node:
    """Base of all nodes: a deterministic id, a kind, and where it was written."""

    id: str
    span: Span


@dataclass(frozen=True, slots=True)
class StartNode(Node):
    """Where an instance begins."""

    next: str
    kind: str = "start"


@dataclass(frozen=True, slots=True)
class EndNode(Node):
    """The instance completes here."""

    kind: str = "end"


@dataclass(frozen=True, slots=True)
class FailNode(Node):
    """The instance fails here; `cause` is `fail`, `reply` or `timeout`."""

    reason: str
    cause: str = "fail"
    step: str | None = None
    trigger: str | None = None  # the failure reply, for `reply` causes
    kind: str = "fail"


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
    failures: Mapping[str, str] = field(default_factory=dict)  # failure reply -> fail node id
    failure_binds: Mapping[str, str] = field(default_factory=dict)  # failure reply -> bound name
    timeout: TimeoutSpec | None = None
    timeout_fail: str | None = None  # fail node id taken when the wait times out
    compensation: CompensationSpec | None = None
    nothing_to_undo: str | None = None  # the author says so (a query, a decision): no compensation needed
    timer_seconds: float | None = None
    timer_until: Condition | None = None
    kind: str = "step"

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
    """Exclusive gateway: `if`/`else if`/`else`, or `switch` (when `subject` is set)."""

    arms: tuple[XorArm, ...]
    default: str  # where to go when no arm holds (the else, or what follows)
    has_else: bool
    subject: Condition | None = None
    kind: str = "xor"


@dataclass(frozen=True, slots=True)
class ForkNode(Node):
    """Parallel split into named branches."""

    name: str
    branches: tuple[tuple[str, str], ...]  # (branch name, first node id)
    join: str
    kind: str = "fork"


@dataclass(frozen=True, slots=True)
class JoinNode(Node):
    """Parallel join: continues once all `expected` branches have arrived."""

    name: str
    expected: int
    next: str
    kind: str = "join"


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
    kind: str = "race"


@dataclass(frozen=True, slots=True)
class LoopNode(Node):
    """Head of a `repeat` loop."""

    name: str
    body: str
    max: int | None
    kind: str = "loop"


@dataclass(frozen=True, slots=True)
class UntilNode(Node):
    """Tail of a `repeat` loop: leave when `until` holds or `max` iterations have run."""

    name: str
    loop: str
    until: Condition
    body: str
    next: str
    kind: str = "until"


@dataclass(frozen=True, slots=True)
class CallNode(Node):
    """Runs another process (`process`) to its end with `data` as its input."""

    name: str
    process: str
    data: Mapping_ | None
    bind: str | None
    next: str
    kind: str = "call"


AnyNode = StartNode | EndNode | FailNode | StepNode | XorNode | ForkNode | JoinNode | RaceNode | LoopNode | UntilNode | CallNode


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
    source: str = field(repr=False, default="")
    syntax: Any = field(repr=False, default=None)
    scenario_loader: Callable[[], list[Any]] | None = field(default=None, repr=False, compare=False)

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
    def input_schema_text(self) -> str | None:
        """`input_schema` as canonical JSON text: what the interpreter builds the input's
        validator from and finds it again by (`contracts.schema_text_problem`)."""
        return None if self.input_schema is None else canonical_json(self.input_schema)

    def ways_out(self, node_id: str) -> tuple[Way, ...]:
        """Every way out of a node, read from the graph's edges (each with its outcome key)."""
        return tuple(
            Way(target, data["kind"], data["label"], key)
            for _, target, key, data in self.graph.out_edges(node_id, keys=True, data=True)
        )

    def follow(self, node_id: str, key: str) -> str:
        """The node reached from `node_id` by the outcome `key` (`next`, `failure:<reply>`,
        `timeout`, `arm:<n>`, `default`, `branch:<name>`, `body`, `back`, `exit`): the graph's edge."""
        for _, target, edge_key in self.graph.out_edges(node_id, keys=True):
            if edge_key == key:
                return target  # type: ignore[no-any-return]
        raise KeyError(f"{node_id} has no way out `{key}`")

    def step(self, name: str) -> StepNode:
        """The step called `name` (KeyError when there is none)."""
        node = self.nodes[name]
        if not isinstance(node, StepNode):
            raise KeyError(name)
        return node

    @cached_property
    def graph(self) -> nx.MultiDiGraph:
        """The process as a networkx MultiDiGraph (built once, on first use)."""
        return build_graph(self)

    def definition_of(self, process: str) -> ProcessDefinition:
        """This process or one it calls (directly or not), by name."""
        if process == self.name:
            return self
        stack = list(self.called.values())
        while stack:
            candidate = stack.pop()
            if candidate.name == process:
                return candidate
            stack.extend(candidate.called.values())
        raise KeyError(process)


class Way(NamedTuple):
    """One edge out of a node: where it leads, its kind, its label, and the outcome key that
    names it uniquely among the node's ways out."""

    target: str
    kind: str
    label: str
    key: str


def successors(node: AnyNode) -> list[Way]:
    """Every way out of a node record, in the order written (the compiler draws the graph's edges from these)."""
    return _SUCCESSORS[type(node)](node)


def _step_successors(node: StepNode) -> list[Way]:
    out = [Way(node.next, "next", ",".join(node.replies) if node.command else "", "next")]
    for reply, target in node.failures.items():
        out.append(Way(target, "failure", reply, f"failure:{reply}"))
    if node.timeout_fail:
        out.append(Way(node.timeout_fail, "timeout", "timeout", "timeout"))
    return out


def _xor_successors(node: XorNode) -> list[Way]:
    out = [Way(arm.target, "arm", arm.label, f"arm:{index}") for index, arm in enumerate(node.arms)]
    out.append(Way(node.default, "default", "else" if node.has_else else "otherwise", "default"))
    return out


def _next(node: StartNode | JoinNode | CallNode) -> list[Way]:
    return [Way(node.next, "next", "", "next")]


_SUCCESSORS: dict[type, Callable[[Any], list[Way]]] = {
    StartNode: _next,
    StepNode: _step_successors,
    XorNode: _xor_successors,
    ForkNode: lambda node: [Way(target, "branch", name, f"branch:{name}") for name, target in node.branches],
    JoinNode: _next,
    CallNode: _next,
    RaceNode: lambda node: [
        Way(arm.target, "timer" if not arm.messages else "message", arm.label, f"arm:{index}") for index, arm in enumerate(node.arms)
    ],
    LoopNode: lambda node: [Way(node.body, "next", "", "body")],
    UntilNode: lambda node: [Way(node.next, "exit", "until " + node.until.text, "exit"), Way(node.body, "back", "repeat", "back")],
    FailNode: lambda node: [],
    EndNode: lambda node: [],
}
"""Per kind of node, its ways out."""


def build_graph(definition: ProcessDefinition) -> nx.MultiDiGraph:
    """The definition as a MultiDiGraph: node attributes `record` (the node), `kind`, `label`,
    `line`; one edge per way out, keyed by its outcome, with attributes `kind` and `label`."""
    import networkx as nx

    graph = nx.MultiDiGraph(name=definition.name)
    for node_id in definition.order:
        node = definition.nodes[node_id]
        attrs: dict[str, Any] = {"record": node, "kind": node.kind, "line": node.span.line}
        if isinstance(node, StepNode):
            attrs["label"] = node.name
            if node.command:
                attrs["participant"] = node.command.participant
                attrs["command"] = node.command.name
            if node.compensation:
                attrs["compensation"] = node.compensation.command.name
        elif isinstance(node, FailNode):
            attrs["label"] = node.reason
        elif isinstance(node, ForkNode | JoinNode | RaceNode | LoopNode | UntilNode | CallNode):
            attrs["label"] = node.name
        graph.add_node(node_id, **attrs)
    for node_id in definition.order:
        for way in successors(definition.nodes[node_id]):
            graph.add_edge(node_id, way.target, key=way.key, kind=way.kind, label=way.label)
    return graph


quicken(globals())  # every frozen record above gets the faster __init__ (see quick.py)
