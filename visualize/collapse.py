"""Collapse the blocks of a large flow view, so that it stays readable on one page.

Past COLLAPSE_ABOVE steps a flow view draws each outermost parallel block and loop as one
shape, BPMN's collapsed sub-process (a box with the ⊞ marker) that names the block and
counts what it holds, largest first, until the count is back under the bar or nothing is
left to fold. A `call` is already one shape. `--expand` (`expand=True`) draws everything.
An overlay keeps its meaning: a collapsed block takes the most telling state of its members.
"""

from __future__ import annotations

from dataclasses import replace

from procflow.dsl import model as m
from procflow.visualize.ir import FlowCluster, FlowEdge, FlowNode, words

COLLAPSE_ABOVE = 20
"""Steps (steps, waits, calls) a flow view draws open; a larger one collapses its blocks."""

_ACTIVITIES = ("step", "event", "timer", "call")
_STATE_RANK = ("failed", "current", "compensated", "completed")


def _activities(nodes: list[FlowNode]) -> int:
    return sum(1 for n in nodes if n.kind in _ACTIVITIES)


NAMED = 4
"""How many branch names a collapsed block's label gives; the rest are counted (a block of a
thousand branches would otherwise draw a line a thousand names long)."""


def _named(names: list[str]) -> str:
    """`a, b, c, d and 996 more`."""
    shown = ", ".join(names[:NAMED])
    return f"{shown} and {len(names) - NAMED} more" if len(names) > NAMED else shown


def _blocks(definition: m.ProcessDefinition, clusters: list[FlowCluster]) -> list[tuple[str, str, str, set[str]]]:
    """(node id, title, summary, cluster ids) of each outermost parallel block and loop."""
    blocks = []
    top = [c for c in clusters if c.parent is None]
    seen: set[str] = set()
    for cluster in top:
        head = cluster.id.rsplit(".", 1)[0]
        if head in seen:
            continue
        seen.add(head)
        node = definition.nodes.get(head)
        if isinstance(node, m.ForkNode):
            owned = {c.id for c in top if c.id.rsplit(".", 1)[0] == head}
            blocks.append((head, f"parallel {words(node.name)}", f"{len(owned)} branches: {_named([n for n, _ in node.branches])}", owned))
        elif isinstance(node, m.LoopNode):
            blocks.append((head, cluster.label, "", {cluster.id}))
    return blocks


def collapse(
    definition: m.ProcessDefinition,
    nodes: list[FlowNode],
    edges: list[FlowEdge],
    clusters: list[FlowCluster],
) -> tuple[list[FlowNode], list[FlowEdge], list[FlowCluster]]:
    """The flow view with its outermost blocks collapsed while it has more than COLLAPSE_ABOVE steps."""
    parents = {c.id: c.parent for c in clusters}

    def outermost(cluster: str | None) -> str | None:
        while cluster is not None and parents.get(cluster) is not None:
            cluster = parents[cluster]
        return cluster

    blocks = []
    for head, title, summary, owned in _blocks(definition, clusters):
        members = {n.id for n in nodes if outermost(n.cluster) in owned}
        node = definition.nodes[head]
        if isinstance(node, m.ForkNode):
            members |= {head, node.join}
        blocks.append((head, title, summary, owned, members))
    blocks.sort(key=lambda b: -_activities([n for n in nodes if n.id in b[4]]))
    for head, title, summary, owned, members in blocks:
        if _activities(nodes) <= COLLAPSE_ABOVE:
            break
        inside = [n for n in nodes if n.id in members]
        count = _activities(inside)
        states = {n.state for n in inside}
        state = next((s for s in _STATE_RANK if s in states), None)
        lines = tuple(line for line in (summary, f"{count} steps, collapsed") if line)
        first = next(n for n in nodes if n.id in members)
        shape = FlowNode(head, "collapsed", title, lines, state=state, spine=any(n.spine for n in inside))
        nodes = [shape if n is first else n for n in nodes if n.id not in members or n is first]
        moved: list[FlowEdge] = []
        kept: set[tuple[str, str, str]] = set()
        for edge in edges:
            source = head if edge.source in members else edge.source
            target = head if edge.target in members else edge.target
            if source == target == head or (source, target, edge.kind) in kept:
                continue
            kept.add((source, target, edge.kind))
            moved.append(replace(edge, source=source, target=target))
        edges = moved
        gone = {c.id for c in clusters if outermost(c.id) in owned}
        clusters = [c for c in clusters if c.id not in gone]
    return nodes, edges, clusters
