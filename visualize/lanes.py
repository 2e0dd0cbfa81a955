"""Make the swimlane view fit a page: what a step's box can say, it says inside the box.

A swimlane view runs its lanes the whole height of the pool, side by side, so the pool is as
wide as the sum of its lanes, and a lane as wide as its widest row. In the flow view a step's
row holds the step, its undo box beside it, and under it a `timed out` end for its timeout
and an end for each failure: three to five shapes where the lane has room for two. BPMN
attaches such things to the activity's border (a timer boundary event, a compensation
boundary event); the swimlane view draws them as rows of the step's own box:

- a timeout that only fails the process (`timed out`, the default reason) is a red row
  `◷ 10m, 2 retries → fails`, in place of its own end event;
- an undo in the step's own lane is a dashed orange row `undo: payment.void`, in place of
  its box beside the step (an undo another participant carries keeps its box, in that lane);
- a shape does not repeat the name of the lane it stands in (the lane's heading says it).

A process of more than COLLAPSE_ABOVE steps collapses its outermost blocks here too, as the
flow view does (`collapse.py`); the collapsed box stands in the lane of the step before it.

Failure ends that name a reason keep their own shape, shared per lane (`flow.py`), and a
timeout that leads somewhere (a recovery path, a named end) keeps its arrow.
"""

from __future__ import annotations

from dataclasses import replace

from procflow.dsl import model as m
from procflow.visualize.collapse import collapse
from procflow.visualize.ir import Attached, FlowCluster, FlowEdge, FlowNode

TIMED_OUT = "timed out"
"""The title of a failure end whose reason is the default one (`<step> timed out`)."""


def _attachment(source: FlowNode, edge: FlowEdge, target: FlowNode, arrivals: int) -> Attached | None:
    """What `edge` from a step to `target` becomes inside the step's box, or None when it stays drawn."""
    if edge.kind == "timeout" and target.kind == "fail" and target.title == TIMED_OUT and arrivals == 1:
        return Attached(target.id, "timeout", edge.label.removeprefix("timeout").strip(), state=target.state)
    if edge.kind == "compensation" and target.kind == "undo" and target.cluster == source.cluster:
        return Attached(target.id, "undo", target.title, target.lines, target.state)
    return None


def attach_to_steps(
    nodes: list[FlowNode], edges: list[FlowEdge], clusters: list[FlowCluster]
) -> tuple[list[FlowNode], list[FlowEdge]]:
    """The swimlane view's nodes and edges with timeout ends and same-lane undo boxes drawn
    inside their step's box, and without the lane's name repeated in its shapes."""
    lane_names = {c.id: c.label for c in clusters if c.kind == "lane"}
    nodes = [_without_lane_name(n, lane_names.get(n.cluster or "")) for n in nodes]
    by_id = {n.id: n for n in nodes}
    arrivals: dict[str, int] = {}
    for edge in edges:
        arrivals[edge.target] = arrivals.get(edge.target, 0) + 1
    attached: dict[str, list[Attached]] = {}
    gone: set[str] = set()
    kept: list[FlowEdge] = []
    for edge in edges:
        source, target = by_id.get(edge.source), by_id.get(edge.target)
        found = None
        if source is not None and target is not None and source.kind == "step":
            found = _attachment(source, edge, target, arrivals.get(target.id, 0))
        if found is None:
            kept.append(edge)
            continue
        attached.setdefault(source.id if source else "", []).append(found)
        gone.add(found.id)
    out = []
    for node in nodes:
        if node.id in gone:
            continue
        mine = attached.get(node.id)
        if mine:  # the timeout first, then the undo, as the step's text orders them
            mine.sort(key=lambda a: a.kind != "timeout")
            node = replace(node, attached=(*node.attached, *mine))
        out.append(node)
    return out, kept


def _without_lane_name(node: FlowNode, lane: str | None) -> FlowNode:
    """A step's (or undo box's) first line names its participant: the lane it stands in says it already."""
    if lane is not None and node.kind in ("step", "undo") and node.lines and node.lines[0] == lane:
        return replace(node, lines=node.lines[1:])
    return node


def collapse_in_lanes(
    definition: m.ProcessDefinition,
    nodes: list[FlowNode],
    edges: list[FlowEdge],
    structure: tuple[list[FlowCluster], dict[str, str]],
) -> tuple[list[FlowNode], list[FlowEdge]]:
    """The swimlane view's shapes with the blocks a flow view would collapse collapsed;
    `structure` is the flow view's clusters and the owner of each node
    (`flow._structure_clusters`). The caller settles the lanes again afterwards: a collapsed
    block, like a gateway, stands in the lane of the step it follows, and a lane whose
    participant works only inside collapsed blocks is left out."""
    blocks, owner = structure
    inner = [replace(n, cluster=owner.get(n.id)) for n in nodes]
    folded, edges, _ = collapse(definition, inner, edges, list(blocks))
    return folded, edges
