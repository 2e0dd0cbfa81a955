"""The validator's proofs about where a process can go: each is a networkx algorithm run on
the compiled graph (`ProcessDefinition.graph`) or a view of it. Nothing here makes a
diagnostic; the rules in `flow_rules`, `binding_rules` and `compensation_rules` do.

=========================================  ==============================================
question                                   how it is proved
=========================================  ==============================================
which nodes a run can reach                ``nx.descendants`` of the start
can a statement let the process go on      ``nx.has_path`` from its first node to the next
                                           statement's first node, on the flow view
can a parallel join fire                   ``nx.has_path`` from each branch's first node to
                                           the join, inner blocks first
which parallel branch holds a node         ``nx.generic_bfs_edges`` from the branch's first
                                           node, never onto its join
which failure can still follow a node      ``nx.bfs_labeled_edges`` backwards from every
                                           failure at once: each node gets the closest
which loops can repeat forever             ``nx.strongly_connected_components`` of the graph
                                           without the back edges of bounded loops
which of them can go round without waiting the same, without the nodes that always wait
can time end a wait                        the wait's ways out: a `timeout` or `timer` edge
is a name bound before it is read          ``nx.immediate_dominators`` and ``nx.has_path``
                                           (`procflow.dsl.binding_proofs`)
=========================================  ==============================================

The flow view is the graph without the ways no run takes: the way on from a join that some
branch never reaches, and the fall-through of a switch that names every value its subject
can take. Views filter the graph in place (``nx.subgraph_view``); nothing is copied.

Flow is read only from the graph's edges and their outcome keys; node records give the
facts that are not flow (a loop's bound, a step's `within`). A statement's first node, and
the two ends of a `parallel` (fork and join) and of a `repeat` (loop and until), carry the
span of their statement: that pairs a fork with its join and a loop with its until, and
finds a statement of the syntax tree in the graph.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property
from typing import Any, NamedTuple

import networkx as nx

from procflow.dsl import model as m
from procflow.dsl.diagnostics import Span

FIRST_NODE_KINDS = frozenset({"step", "xor", "fork", "race", "loop", "call", "each", "fail", "end", "set", "emit"})
"""The kinds of node a statement starts with (a fail node made for a failure reply or a
timeout belongs to its step instead, and a join or an until ends its statement)."""

Edge = tuple[str, str, str]
"""(source, target, outcome key): one edge of the graph."""


class Branch(NamedTuple):
    """A branch of a parallel block: its fork, its first node (the join when it is empty), its name."""

    fork: str
    first: str
    name: str


class FlowProofs:
    """The flow facts of one definition, each worked out on first use and kept.

    `exhaustive`: the xor nodes of switches that name every value their subject can take
    (their fall-through is never taken)."""

    def __init__(self, definition: m.ProcessDefinition, exhaustive: frozenset[str] = frozenset()) -> None:
        self.definition = definition
        self.graph: nx.MultiDiGraph = definition.graph
        self.exhaustive = exhaustive
        self._stuck: set[str] = set()  # joins that cannot fire, filled by `arrives`
        self._flow = nx.subgraph_view(self.graph, filter_edge=self.can_take)

    def record(self, node_id: str) -> Any:
        """The node record (`StepNode`, `ForkNode`, ...) of a graph node."""
        return self.graph.nodes[node_id]["record"]

    # ---------------------------------------------------------------- the graph and its views

    def can_take(self, source: str, target: str, key: str) -> bool:
        """Whether a run can take an edge: not out of a join that cannot fire, not the
        fall-through of a switch that names every value. (Joins count once `arrives` has
        been worked out: `flow` and `stuck_joins` see to it.)"""
        return source not in self._stuck and not (key == "default" and source in self.exhaustive)

    @property
    def flow(self) -> Any:
        """The flow view: the graph without the edges no run takes (the graph itself when there
        are none, which is faster to search)."""
        _ = self.arrives
        return self._flow_so_far()

    def _flow_so_far(self) -> Any:
        return self._flow if self._stuck or self.exhaustive else self.graph

    @cached_property
    def without_fall_through(self) -> Any:
        """The graph without the fall-through of exhaustive switches (joins all kept)."""
        if not self.exhaustive:
            return self.graph
        exhaustive = self.exhaustive
        return nx.subgraph_view(self.graph, filter_edge=lambda source, target, key: not (key == "default" and source in exhaustive))

    @cached_property
    def _statements(self) -> tuple[dict[Span, str], dict[str, str], dict[str, str]]:
        first_node: dict[Span, str] = {}
        ends: list[tuple[str, Any]] = []
        for node_id, record in self.graph.nodes(data="record"):
            kind = record.kind
            if kind in ("join", "until"):
                ends.append((node_id, record))
            elif kind in FIRST_NODE_KINDS and not (kind == "fail" and record.cause != "fail"):
                first_node.setdefault(record.span, node_id)
        join_of: dict[str, str] = {}
        loop_of: dict[str, str] = {}
        for node_id, record in ends:
            if record.kind == "join":
                join_of[first_node[record.span]] = node_id
            else:
                loop_of[node_id] = first_node[record.span]
        return first_node, join_of, loop_of

    def first_node(self, span: Span) -> str:
        """The node a statement (known by its span) starts with."""
        return self._statements[0][span]

    @property
    def join_of(self) -> dict[str, str]:
        """fork id -> the id of its join."""
        return self._statements[1]

    @property
    def loop_of(self) -> dict[str, str]:
        """until id -> the id of its loop head."""
        return self._statements[2]

    @cached_property
    def forks(self) -> tuple[str, ...]:
        """The fork nodes in document order: an enclosing parallel block before those inside it."""
        return tuple(fork for fork in self.definition.order if fork in self.join_of)

    def branches(self, fork: str) -> Iterator[Branch]:
        """The branches of a fork, from its `branch` edges, in the order they were drawn."""
        for _, first, name in self.graph.out_edges(fork, data="label"):
            yield Branch(fork, first, name)

    # ---------------------------------------------------------------- reachability and joins

    @cached_property
    def reachable(self) -> frozenset[str]:
        """The nodes some run can reach (a join counts as reached when any branch arrives)."""
        start = self.definition.start
        return frozenset({start, *nx.descendants(self.without_fall_through, start)})

    @cached_property
    def reachable_in_flow(self) -> frozenset[str]:
        """The nodes reached on the flow view: not past a join that cannot fire, nor past a
        switch that names every value when all its cases stop."""
        start = self.definition.start
        return frozenset({start, *nx.descendants(self.flow, start)})

    @cached_property
    def arrives(self) -> dict[tuple[str, str], bool]:
        """(fork, branch's first node) -> the branch can arrive at the join.

        Forks are taken inner first (an inner parallel block is written after the one around
        it): a join that some branch never reaches cannot fire, so its way on leaves the flow
        view before the blocks around it are asked."""
        arrives: dict[tuple[str, str], bool] = {}
        for fork in reversed(self.forks):
            join = self.join_of[fork]
            first_of = bool(self.graph.nodes[fork].get("first"))  # `first of`: one arriving branch is enough
            arrived_any = False
            for branch in self.branches(fork):
                arrived = nx.has_path(self._flow_so_far(), branch.first, join)
                arrives[(fork, branch.first)] = arrived
                arrived_any = arrived_any or arrived
                if not arrived and not first_of:
                    self._stuck.add(join)
            if first_of and not arrived_any:
                self._stuck.add(join)
        return arrives

    @property
    def stuck_joins(self) -> frozenset[str]:
        """The joins that can never fire: some branch of theirs never arrives."""
        _ = self.arrives
        return frozenset(self._stuck)

    def goes_on(self, first: str, later: str) -> bool:
        """True when the statement whose first node is `first` can finish and, through the
        statements after it in its block, let the one whose first node is `later` run: a path
        between them on the flow view. (A statement is entered only through its first node
        and left only through what follows it, or by a fail or an end; a direct edge, a
        step's `next`, is the common case.)"""
        flow = self.flow
        return bool(flow.has_edge(first, later)) or nx.has_path(flow, first, later)

    # ---------------------------------------------------------------- parallel branches

    @cached_property
    def branch_of(self) -> dict[str, Branch]:
        """node id -> the innermost parallel branch holding it.

        A branch holds the nodes a breadth-first search from its first node reaches without
        stepping onto the join: a branch is left only through its join (or by a fail or an
        end). Forks are taken outer first, so an inner branch overwrites what the branch
        around it wrote."""
        member: dict[str, Branch] = {}
        successors = self.graph.succ
        for fork in self.forks:
            join = self.join_of[fork]

            def short_of_join(node_id: str, join: str = join) -> Iterator[str]:
                return (target for target in successors[node_id] if target != join)

            for branch in self.branches(fork):
                if branch.first == join:
                    continue
                member[branch.first] = branch
                for _, node_id in nx.generic_bfs_edges(self.graph, branch.first, neighbors=short_of_join):
                    member[node_id] = branch
        return member

    def enclosing(self, node_id: str) -> Iterator[Branch]:
        """The parallel branches around a node, innermost first."""
        branch = self.branch_of.get(node_id)
        while branch is not None:
            yield branch
            branch = self.branch_of.get(branch.fork)

    # ---------------------------------------------------------------- failures

    @cached_property
    def failure_after(self) -> dict[str, str]:
        """node id -> the closest fail node (or call of a process that can fail) reachable
        from it, when there is one.

        One breadth-first search of the reversed graph from every failure at once, in
        document order: a node takes the failure whose search reached it first."""
        sources = [
            node_id
            for node_id in self.definition.order
            if isinstance(record := self.record(node_id), m.FailNode)
            or (isinstance(record, m.CallNode) and _can_fail(self.definition, record.process))
        ]
        witness = {source: source for source in sources}
        for parent, child, label in nx.bfs_labeled_edges(self.graph.reverse(copy=False), sources):
            if label == "tree":
                witness[child] = witness[parent]
        return witness

    # ---------------------------------------------------------------- loops and waits

    @cached_property
    def unbounded_loops(self) -> frozenset[str]:
        """The loop heads whose repetition no bound stops: the until of a loop without `max`
        lies on a cycle (a strongly connected component) of the graph without the back edges
        of bounded loops. A compiled graph has no cycle but through a back edge, so when every
        loop is bounded there is nothing to search."""
        loop_of = self.loop_of
        bounded = {until for until, loop in loop_of.items() if self.record(loop).max is not None}
        if len(bounded) == len(loop_of):
            return frozenset()
        repeating = nx.DiGraph()
        repeating.add_edges_from(
            (source, target) for source, target, key in self.graph.edges(keys=True) if not (key == "back" and source in bounded)
        )
        found = set()
        for component in nx.strongly_connected_components(repeating):
            for node_id in component:
                if node_id in loop_of and node_id not in bounded and (len(component) > 1 or repeating.has_edge(node_id, node_id)):
                    found.add(loop_of[node_id])
        return frozenset(found)

    @cached_property
    def spinning_loops(self) -> frozenset[str]:
        """The unbounded loop heads (`unbounded_loops`) that can go round without waiting: their
        until still lies on a cycle once every node that waits (`waits_every_time`) is taken
        out of the graph, with the back edges of bounded loops. A loop whose every round
        passes a wait repeats only as fast as messages or time come in, so a deadline ends it."""
        unbounded = self.unbounded_loops
        if not unbounded:
            return frozenset()
        loop_of = self.loop_of
        bounded = {until for until, loop in loop_of.items() if self.record(loop).max is not None}
        spinning = nx.DiGraph()
        spinning.add_edges_from(
            (source, target)
            for source, target, key in self.graph.edges(keys=True)
            if not (key == "back" and source in bounded) and not self.waits_every_time(source) and not self.waits_every_time(target)
        )
        found = set()
        for component in nx.strongly_connected_components(spinning):
            for node_id in component:
                if node_id in loop_of and loop_of[node_id] in unbounded and (len(component) > 1 or spinning.has_edge(node_id, node_id)):
                    found.add(loop_of[node_id])
        return frozenset(found)

    def waits_every_time(self, node_id: str) -> bool:
        """True for a node a run cannot pass without waiting for a message or for time: a step
        that sends or awaits, a `wait D` step, a race whose timer arms all wait a duration (a
        `wait until` or an `on timer at` may name a moment already past)."""
        record = self.record(node_id)
        if isinstance(record, m.StepNode):
            if record.is_timer:
                return record.timer_seconds is not None and record.timer_seconds > 0
            return bool(record.command is not None or record.replies)
        if isinstance(record, m.RaceNode):
            return all(arm.messages or (arm.timer_seconds is not None and arm.timer_seconds > 0) for arm in record.arms)
        return False

    def cancelled_in_time(self, node_id: str) -> bool:
        """True when a wait sits in a branch of a `first of` block that another branch can win
        with time alone (every wait on its way to the join ends by time, as a `wait 4h` does):
        the wait then ends when that branch wins, whatever comes."""
        for branch in self.enclosing(node_id):
            if not self.graph.nodes[branch.fork].get("first"):
                continue
            join = self.join_of[branch.fork]
            if any(other.first != branch.first and self._ends_by_time(other.first, join) for other in self.branches(branch.fork)):
                return True
        return False

    def _ends_by_time(self, first: str, join: str) -> bool:
        """True when a branch reaches its join on some path whose every wait ends by time."""

        def timed(source: str, target: str, key: str) -> bool:
            record = self.record(source)
            if isinstance(record, m.StepNode) and not record.is_timer and (record.command is not None or record.replies):
                return key == "timeout" and record.timeout is not None
            if isinstance(record, m.RaceNode):
                kind: str = self.graph.edges[source, target, key]["kind"]
                return kind == "timer"
            return True

        return first == join or nx.has_path(nx.subgraph_view(self.graph, filter_edge=timed), first, join)

    def time_can_end(self, node_id: str) -> bool:
        """True when a wait can be left with no message arriving: a race's `timer` arm, or a
        step's `timeout` way out (taken when its `within` runs out; a step that handles
        `on timeout` without a `within` has the edge, but nothing starts its clock)."""
        for _, _, kind in self.graph.out_edges(node_id, data="kind"):
            if kind == "timer" or (kind == "timeout" and self.record(node_id).timeout is not None):
                return True
        return False


def _can_fail(definition: m.ProcessDefinition, process: str) -> bool:
    """True when a called process (or one it calls) has a way to fail."""
    try:
        stack = [definition.definition_of(process)]
    except KeyError:
        return True
    seen: set[str] = set()
    while stack:
        called = stack.pop()
        if called.name in seen:
            continue
        seen.add(called.name)
        if any(isinstance(n, m.FailNode) for n in called.nodes.values()):
            return True
        stack.extend(called.called.values())
    return False
