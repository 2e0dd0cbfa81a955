"""Bound before use: is a key (a name bound with `as`, or `steps.<name>`: a step that has
completed) bound on entry to a node on every path there (must), or on some path (may)?

A binding happens on an edge, read from the graph's outcome keys and the records' names: a
step binds `steps.<step>` on every way out but its timeout, its `as` name on `next`, and a
failure's `as` name on that failure's way out; a race arm binds its name on its arm; a call
binds on `next`; a for-each binds its item on `body` and its `collect` name on its gather's `next`;
and a `set` binds on `next`.

**must** — a read is unbound exactly when some path from the start reaches it without
crossing a binding edge (on the flow view of `flow_proofs`, where no run goes through a join
that cannot fire or past a switch that names every value). Every such path passes every
dominator of the read (``nx.immediate_dominators``, worked out on the whole graph: a node
that dominates another there dominates it on the view, which only takes paths away). The
nearest common dominator `a` of the read and the binding edges' sources is reached without a
binding when a run reaches it at all (a simple path to it cannot pass a node it dominates),
so a read that a run reaches is unbound exactly when ``nx.has_path`` finds a path from `a`
to it that crosses no binding edge. The search stays between the
binding and the read: a name bound once and read in every later step is proved for each
read in a step or two, since its binding dominates the reads (its one way on is cut).
Whether one node dominates another is answered from the dominator tree's depth-first
intervals, without walking up the tree.

A join runs once every branch has arrived, so a branch that binds on every path binds for the
join: a join with such a branch (``nx.has_path`` from the branch's first node to the join
finds no unbound path) loses its way on before the read is searched, inner blocks first.
Not the join of `first of`, which goes on when the first branch arrives: only the winner's
bindings hold after it.

**may** — some path crosses a binding edge and goes on to the read: ``nx.has_path`` from a
binding edge's target (its source reachable) to the read. Asked only where must fails.

A node no run reaches counts as bound (unreachable code is reported elsewhere).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

import networkx as nx

from procflow.dsl import model as m
from procflow.dsl.expression_reads import STEP_PREFIX
from procflow.dsl.flow_proofs import Edge, FlowProofs


def binds(record: Any, key: str) -> tuple[str, ...]:
    """The keys an edge binds, given its source's record and its outcome key."""
    if isinstance(record, m.StepNode):
        if key == "timeout":
            return ()
        done = STEP_PREFIX + record.name
        bound = record.bind if key == "next" else record.failure_binds.get(key.removeprefix("failure:"))
        return (done, bound) if bound else (done,)
    if isinstance(record, m.RaceNode) and key.startswith("arm:"):
        arm = record.arms[int(key.removeprefix("arm:"))]
        return (arm.bind,) if arm.bind else ()
    if isinstance(record, m.CallNode) and key == "next" and record.bind:
        return (record.bind,)
    if isinstance(record, m.EachNode) and key == "body":
        return (record.item,)
    if isinstance(record, m.GatherNode) and key == "next":
        return (record.collect,) if record.collect else ()
    if isinstance(record, m.SetNode):
        return (record.name,)
    if isinstance(record, m.JoinNode) and key == "next" and record.first:
        return (record.name,)  # `first of name`: `name.winner` after the block
    return ()


class BindingProofs:
    """Which reads are bound on every path, for the keys asked about (`reads`: key -> the
    nodes that read it)."""

    def __init__(self, flow: FlowProofs, reads: Mapping[str, Sequence[str]]) -> None:
        self.flow = flow
        _ = flow.stuck_joins  # the views below leave out the joins that cannot fire: find them first
        self.graph = flow.graph
        self.start = flow.definition.start
        self._cut: set[tuple[str, str]] = set()  # the key being proved: its binding edges
        self._blocked: set[str] = set()  # and the joins it binds for
        self.unbound: dict[str, set[str]] = {key: self._unbound_reads(key, at) for key, at in reads.items()}

    def holds(self, node_id: str, key: str, extra: Sequence[str] = ()) -> tuple[bool, bool]:
        """(on every path, on some path): is `key` bound on entry to the node, or among `extra`
        (facts the node itself establishes before it evaluates)? A read bound on every path
        is reported as bound on some path too."""
        if key in extra or node_id not in self.unbound[key]:
            return True, True
        return False, self._bound_somewhere(key, node_id)

    @cached_property
    def _binders(self) -> dict[str, list[str]]:
        """key -> the nodes that may bind it (their records name it), in document order."""
        found: dict[str, list[str]] = {}
        for node_id, record in self.graph.nodes(data="record"):
            if isinstance(record, m.StepNode):
                keys = [STEP_PREFIX + record.name, *(bound for bound in (record.bind, *record.failure_binds.values()) if bound)]
            elif isinstance(record, m.RaceNode):
                keys = [arm.bind for arm in record.arms if arm.bind]
            elif isinstance(record, m.CallNode) and record.bind:
                keys = [record.bind]
            elif isinstance(record, m.EachNode):
                keys = [record.item]
            elif isinstance(record, m.GatherNode) and record.collect:
                keys = [record.collect]
            elif isinstance(record, m.SetNode):
                keys = [record.name]
            elif isinstance(record, m.JoinNode) and record.first:
                keys = [record.name]
            else:
                continue
            for key in dict.fromkeys(keys):
                found.setdefault(key, []).append(node_id)
        return found

    def binding_edges(self, key: str) -> list[Edge]:
        """The edges that bind a key."""
        found = []
        for source in self._binders.get(key, []):
            record = self.flow.record(source)
            for _, target, outcome in self.graph.out_edges(source, keys=True):
                if key in binds(record, outcome):
                    found.append((source, target, outcome))
        return found

    # ---------------------------------------------------------------- dominators

    @cached_property
    def dominators(self) -> dict[str, str]:
        """node id -> its immediate dominator on the whole graph (the start and the nodes no
        path reaches are not keys); faster to work out than on the flow view, and as good."""
        return nx.immediate_dominators(self.graph, self.start)  # type: ignore[no-any-return]

    @cached_property
    def _intervals(self) -> dict[str, tuple[int, int]]:
        """node id -> (entered, left) in one depth-first pass over the dominator tree: a node
        dominates another exactly when its interval holds the other's. (The tree is a dict
        of children, numbered in place: making it a networkx graph to walk it cost more than
        the dominators themselves.)"""
        children: dict[str, list[str]] = {}
        for node_id, dominator in self.dominators.items():
            children.setdefault(dominator, []).append(node_id)
        entered: dict[str, int] = {}
        intervals: dict[str, tuple[int, int]] = {}
        clock = 0
        stack: list[tuple[str, bool]] = [(self.start, False)]
        while stack:
            node_id, left = stack.pop()
            if left:
                intervals[node_id] = (entered[node_id], clock)
            else:
                entered[node_id] = clock
                stack.append((node_id, True))
                stack.extend((child, False) for child in children.get(node_id, ()))
            clock += 1
        return intervals

    def _dominates(self, node_id: str, other: str) -> bool:
        entered, left = self._intervals[node_id]
        other_entered, other_left = self._intervals[other]
        return entered <= other_entered and other_left <= left

    def _up(self, node_id: str) -> str:
        return self.dominators.get(node_id, self.start)

    def _common_dominator(self, node_id: str, other: str) -> str:
        while not self._dominates(node_id, other):
            node_id = self._up(node_id)
        return node_id

    # ---------------------------------------------------------------- must and may

    @cached_property
    def _unbound_view(self) -> Any:
        """The flow view without the binding edges of the key being proved (`_cut`) and without
        the ways on from the joins it binds for (`_blocked`): set before each proof."""
        flow = self.flow

        def unbound(source: str, target: str, outcome: str) -> bool:
            return (source, outcome) not in self._cut and source not in self._blocked and flow.can_take(source, target, outcome)

        return nx.subgraph_view(self.graph, filter_edge=unbound)

    def _reached_in_flow(self, node_id: str) -> bool:
        if self.flow.flow is self.graph:  # nothing left out: every node of the dominator tree is reached
            return node_id in self._intervals
        return node_id in self.flow.reachable_in_flow

    def _unbound_reads(self, key: str, reads: Sequence[str]) -> set[str]:
        """The reads of `key` that some path from the start reaches without a binding."""
        in_tree = self._intervals
        reads = [read for read in dict.fromkeys(reads) if read in in_tree]  # no path reaches the others
        edges = [edge for edge in self.binding_edges(key) if edge[0] in in_tree]
        if not edges or not reads:
            return {read for read in reads if self._reached_in_flow(read)}
        self._cut = {(source, outcome) for source, _, outcome in edges}
        self._blocked = set()
        unbound = self._unbound_view
        # A join whose branch binds on every path binds for the join: innermost blocks first.
        flow = self.flow
        around = {branch for source, _, _ in edges for branch in flow.enclosing(source)}
        position = flow.definition.position
        for branch in sorted(around, key=lambda b: position[b.fork], reverse=True):
            join = flow.join_of[branch.fork]
            if self.graph.nodes[join].get("first"):
                continue  # `first of`: the join goes on when any branch arrives, the winner's bindings only
            if not nx.has_path(unbound, branch.first, join):
                self._blocked.add(join)
        sites = [source for source, _, _ in edges]
        top = sites[0]
        for site in sites[1:]:
            top = self._common_dominator(top, site)
        found = set()
        for read in reads:
            # The nearest dominator of the read and the sites is reached unbound when a run
            # reaches it at all; a run that reaches the read passes it.
            if nx.has_path(unbound, self._common_dominator(top, read), read) and self._reached_in_flow(read):
                found.add(read)
        return found

    def _bound_somewhere(self, key: str, node_id: str) -> bool:
        reachable = self.flow.reachable
        graph = self.flow.without_fall_through
        return any(source in reachable and nx.has_path(graph, target, node_id) for source, target, _ in self.binding_edges(key))
