"""Where the BPMN export draws its shapes: the flow view's graph, laid out by Graphviz.

The flow view's IR (`procflow.visualize.flow`) is written as DOT once more, with each node
the size of the BPMN shapes it becomes (a step is a send task and a receive task side by
side, a failure end a compensation throw and an error end, a gateway a 50-pixel diamond),
and laid out left to right by `dot`, with the flow view's main line kept straight and its
undo boxes beside their steps, as the flow view does. Graphviz's `json` output (read through
`render.dot_layout`, the one place that runs `dot`) gives each node's box and each edge's
route; `procflow.visualize.bpmn` places its shapes in those boxes. Units are Graphviz's
points, used as BPMN's pixels; y grows downwards, as BPMN DI wants.
"""

from __future__ import annotations

from dataclasses import dataclass

from procflow.visualize.dot import quote
from procflow.visualize.ir import FlowDiagram, FlowNode
from procflow.visualize.render import dot_layout

TASK_WIDTH = 100.0
TASK_HEIGHT = 80.0
TASK_GAP = 40.0  # between a step's send task and its receive task
EVENT = 36.0
GATEWAY = 50.0
BOUNDARY_PITCH = 40.0  # centre to centre of the boundary events along a receive task's bottom
MARGIN = 40.0  # around the process inside its pool


@dataclass(frozen=True, slots=True)
class Box:
    """A rectangle: top-left corner, width and height (BPMN's `dc:Bounds`)."""

    x: float
    y: float
    width: float
    height: float

    @property
    def centre(self) -> tuple[float, float]:
        """The middle of the box."""
        return (self.x + self.width / 2, self.y + self.height / 2)


@dataclass(frozen=True, slots=True)
class Layout:
    """Each flow node's box, each flow edge's route (by its index in the diagram), the size."""

    boxes: dict[str, Box]
    routes: dict[int, list[tuple[float, float]]]
    width: float
    height: float


def receive_width(boundary_events: int) -> float:
    """A receive task wide enough for its boundary events along its bottom."""
    return max(TASK_WIDTH, BOUNDARY_PITCH * (boundary_events + 1))


def node_size(node: FlowNode, boundary_events: int, compensates: bool) -> tuple[float, float]:
    """The size of the box a flow node's BPMN shapes fill (see the module doc)."""
    match node.kind:
        case "step" if node.sign:  # a human task: one user task
            return (receive_width(boundary_events), TASK_HEIGHT)
        case "step":
            return (TASK_WIDTH + TASK_GAP + receive_width(boundary_events), TASK_HEIGHT)
        case "event":
            return (receive_width(boundary_events), TASK_HEIGHT)
        case "call" | "undo":
            return (TASK_WIDTH, TASK_HEIGHT)
        case "fail":
            return (EVENT * 2 + TASK_GAP, EVENT) if compensates else (EVENT, EVENT)
        case "xor" | "fork" | "join" | "race" | "loop" | "until":
            return (GATEWAY, GATEWAY)
        case _:  # start, end, timer, catch
            return (EVENT, EVENT)


def layout_dot(diagram: FlowDiagram, sizes: dict[str, tuple[float, float]]) -> str:
    """The DOT text laid out: the flow view's nodes and edges, at the BPMN shapes' sizes."""
    lines = [
        f"digraph {quote(diagram.name)} {{",
        "  graph [rankdir=LR, nodesep=0.6, ranksep=0.6, newrank=true, splines=true]",
        '  node [shape=box, fixedsize=true, label=""]',
    ]
    for node in diagram.nodes:
        width, height = sizes[node.id]
        group = ', group="spine"' if node.spine else ""
        lines.append(f"  {quote(node.id)} [width={width / 72:.4f}, height={height / 72:.4f}{group}]")
    for node in diagram.nodes:
        if node.kind == "undo":
            # Beside its step, as the flow view draws it.
            lines.append(f"  {{rank=same; {quote(node.id.removesuffix('.undo'))}; {quote(node.id)}}}")
    for index, edge in enumerate(diagram.edges):
        attrs = [f'id="e{index}"']
        if edge.spine:
            attrs.append("weight=8")
        if edge.kind in ("failure", "timeout", "compensation"):
            attrs.append("tailport=s")  # they leave from boundary events on the bottom edge
        if edge.kind == "compensation":
            attrs.append("constraint=false")
        lines.append(f"  {quote(edge.source)} -> {quote(edge.target)} [{', '.join(attrs)}]")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _points(text: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in (pair.split(",") for pair in text.split())]


def layout(diagram: FlowDiagram, sizes: dict[str, tuple[float, float]]) -> Layout:
    """Lay the flow view out with Graphviz: boxes and routes in BPMN's coordinates."""
    data = dot_layout(layout_dot(diagram, sizes))
    _, _, right, top = (float(v) for v in str(data["bb"]).split(","))

    def flip(point: tuple[float, float]) -> tuple[float, float]:
        return (round(point[0] + MARGIN, 1), round(top - point[1] + MARGIN, 1))

    boxes: dict[str, Box] = {}
    for item in data.get("objects", []):
        if "pos" not in item:
            continue
        x, y = flip(_points(item["pos"])[0])
        width, height = float(item["width"]) * 72, float(item["height"]) * 72
        boxes[str(item["name"])] = Box(round(x - width / 2, 1), round(y - height / 2, 1), width, height)
    routes: dict[int, list[tuple[float, float]]] = {}
    for item in data.get("edges", []):
        spline = str(item.get("pos", ""))
        parts = spline.split()
        end = None
        if parts and parts[0].startswith("e,"):
            end = _points(parts.pop(0)[2:])[0]
        if parts and parts[0].startswith("s,"):
            parts.pop(0)
        points = _points(" ".join(parts))
        # The points on the curve: every third of the Bézier's control points.
        route = [flip(p) for p in points[::3]]
        if end is not None:
            route.append(flip(end))
        routes[int(str(item["id"]).removeprefix("e"))] = route
    return Layout(boxes, routes, right + 2 * MARGIN, top + 2 * MARGIN)
