"""`Bindings`: a must-be-bound and a may-be-bound dataflow over the node table, for the names
bound with `as` and for `steps.<name>` (a step that has completed). Nothing here makes a
diagnostic. Iterative: a process of 50,000 steps is solved with work lists.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence

from procflow.dsl import model as m
from procflow.dsl.expression_reads import STEP_PREFIX


def out_edges(node: m.AnyNode, ways: tuple[m.Way, ...]) -> list[tuple[str, tuple[str, ...]]]:
    """(target, facts the edge establishes) for every way out of a node, duplicates kept
    (`ways`: the node's `successors`, as `ProcessDefinition.edges` keeps them)."""
    if isinstance(node, m.StepNode):
        done = STEP_PREFIX + node.name
        edges: list[tuple[str, tuple[str, ...]]] = [(node.next, (done, node.bind) if node.bind else (done,))]
        for reply, target in node.failures.items():
            bind = node.failure_binds.get(reply)
            edges.append((target, (done, bind) if bind else (done,)))
        if node.timeout_fail:
            edges.append((node.timeout_fail, ()))
        return edges
    if isinstance(node, m.RaceNode):
        return [(arm.target, (arm.bind,) if arm.bind else ()) for arm in node.arms]
    if isinstance(node, m.CallNode):
        return [(node.next, (node.bind,) if node.bind else ())]
    return [(target, ()) for target, *_ in ways]


def branch_membership(definition: m.ProcessDefinition) -> dict[str, tuple[str, int]]:
    """node id -> (fork id, branch index) of the innermost parallel branch holding the node.

    Forks are visited in document order, outer before inner, so an inner branch overwrites
    what its enclosing branch wrote. A branch's nodes are those reached from its first node
    without passing its fork's join (a branch can only leave through the join or an end).
    """
    member: dict[str, tuple[str, int]] = {}
    for fork in definition.in_order:
        if not isinstance(fork, m.ForkNode):
            continue
        for index, (_, first) in enumerate(fork.branches):
            if first == fork.join:
                continue
            seen = {first}
            work = [first]
            while work:
                current = work.pop()
                member[current] = (fork.id, index)
                for target, *_ in definition.ways_out(current):
                    if target != fork.join and target not in seen:
                        seen.add(target)
                        work.append(target)
    return member


class Bindings:
    """Is a key (a name bound with `as`, or `steps.<name>`) bound on entry to a node: on every
    path there (must), on some path (may)?

    Each key is solved by an iterative work list over a window of the graph: the nodes, in
    document order, from its first binding or read to its last read, widened to the whole of
    any loop or parallel block the window cuts (so that back edges and joins lie inside).
    A path enters a window only from earlier nodes, where the key cannot be bound yet, so the
    window's answer is the whole graph's, and the cost is the window's size rather than the
    process's: a process of 50,000 steps whose names are read near where they are bound is
    solved in linear time.

    Meets: an ordinary node takes the intersection (must) and union (may) over its incoming
    edges. A join runs after all its branches, so it takes the union over branches of what
    each branch guarantees (the intersection over that branch's ways into the join). A node
    no path reaches counts as bound (unreachable code is reported elsewhere).
    """

    def __init__(
        self,
        definition: m.ProcessDefinition,
        reads: Mapping[str, Sequence[str]],
        exhaustive: frozenset[str] = frozenset(),
        member: dict[str, tuple[str, int]] | None = None,
    ) -> None:
        self.definition = definition
        order = definition.order
        self.position = definition.position
        self.preds: dict[str, list[tuple[str, tuple[str, ...]]]] = {node_id: [] for node_id in order}
        self.succs: dict[str, list[str]] = {}
        sites: dict[str, list[int]] = {}
        for node in definition.in_order:
            node_id = node.id
            edges = out_edges(node, definition.ways_out(node_id))
            if node_id in exhaustive and isinstance(node, m.XorNode):
                edges = [(arm.target, ()) for arm in node.arms]  # a switch that names every value never falls through
            self.succs[node_id] = [target for target, _ in edges]
            for target, facts in edges:
                self.preds[target].append((node_id, facts))
                for fact in facts:
                    if fact in reads:  # only the keys asked about need their binding sites
                        sites.setdefault(fact, []).append(self.position[node_id])
        self.reached = self._reached()
        self.member = branch_membership(definition) if member is None else member
        self.fork_of = {n.join: n for n in definition.nodes.values() if isinstance(n, m.ForkNode)}
        outer = self._outer_spans()
        self.facts: dict[str, tuple[dict[str, bool], dict[str, bool]]] = {}
        for key, at in reads.items():
            places = [self.position[n] for n in at] + sites.get(key, [])
            low, high = min(places), max(self.position[n] for n in at)
            low, high = min(low, outer[low][0]), max(high, outer[high][1])
            self.facts[key] = self._solve(key, low, high)

    def holds(self, node_id: str, key: str, extra: Sequence[str] = ()) -> tuple[bool, bool]:
        """(on every path, on some path): is `key` bound on entry to the node, or among `extra`?"""
        if key in extra:
            return True, True
        must, may = self.facts[key]
        return must[node_id], may[node_id]

    def _reached(self) -> set[str]:
        seen = {self.definition.start}
        work = [self.definition.start]
        while work:
            for target in self.succs[work.pop()]:
                if target not in seen:
                    seen.add(target)
                    work.append(target)
        return seen

    def _outer_spans(self) -> list[tuple[int, int]]:
        """For every position, the span of the outermost loop or parallel block holding it."""
        spans = []
        for node in self.definition.nodes.values():
            if isinstance(node, m.ForkNode):
                spans.append((self.position[node.id], self.position[node.join]))
            elif isinstance(node, m.UntilNode):
                spans.append((self.position[node.loop], self.position[node.id]))
        spans.sort()
        outer = [(i, i) for i in range(len(self.definition.order))]
        end = -1
        for start, stop in spans:
            if start <= end:
                continue  # inside the outermost span already filled
            end = stop
            for i in range(start, stop + 1):
                outer[i] = (start, stop)
        return outer

    def _solve(self, key: str, low: int, high: int) -> tuple[dict[str, bool], dict[str, bool]]:
        window = self.definition.order[low : high + 1]
        must = {node_id: True for node_id in window}
        may = {node_id: False for node_id in window}
        work = deque(window)
        queued = set(window)
        while work:
            node_id = work.popleft()
            queued.discard(node_id)
            if node_id == self.definition.start:
                new_must, new_may = False, False
            elif node_id in self.fork_of:
                new_must, new_may = self._join(key, self.fork_of[node_id], must, may)
            else:
                new_must, new_may = True, False
                for source, facts in self.preds[node_id]:
                    if source not in self.reached:
                        continue
                    gen = key in facts
                    inside = source in must
                    new_must = new_must and (gen or (inside and must[source]))
                    new_may = new_may or gen or (inside and may[source])
            if new_must == must[node_id] and new_may == may[node_id]:
                continue
            must[node_id], may[node_id] = new_must, new_may
            for target in self.succs[node_id]:
                if target in must and target not in queued:
                    queued.add(target)
                    work.append(target)
        return must, may

    def _join(self, key: str, fork: m.ForkNode, must: dict[str, bool], may: dict[str, bool]) -> tuple[bool, bool]:
        per_branch = [True] * len(fork.branches)
        for index, (_, first) in enumerate(fork.branches):
            if first == fork.join:  # an empty branch guarantees what the fork had
                per_branch[index] = must.get(fork.id, False)
        new_may = False
        for source, facts in self.preds[fork.join]:
            if source not in self.reached:
                continue
            gen = key in facts
            inside = source in must
            new_may = new_may or gen or (inside and may[source])
            owner = self.member.get(source)
            if owner is not None and owner[0] == fork.id:
                per_branch[owner[1]] = per_branch[owner[1]] and (gen or (inside and must[source]))
        return any(per_branch), new_may
