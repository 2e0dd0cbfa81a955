"""Measure a drawn diagram from Graphviz's own coordinates: size, edge crossings, label clashes.

Graphviz's JSON output (`dot -Tjson`, see `render.dot_layout`) holds, for every node, its
shape, centre and size; for every edge the Bézier curves it is drawn with; and for every
text the point it starts from, its alignment, font size and width. These functions read
that and answer what a reader would see: how big the picture is, how many times two edges
cross, and which texts overlap another text or a shape they do not belong to. The tests and
`bench/diagram_bench.py` use them; nothing here runs Graphviz.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Point = tuple[float, float]
Layout = Mapping[str, Any]

CURVE_SAMPLES = 10
"""Straight pieces per Bézier segment when an edge is compared with another."""

SLACK = 1.0
"""Points by which two boxes must overlap to count: touching at a hair is not a clash."""


@dataclass(frozen=True, slots=True)
class Box:
    """An axis-aligned rectangle in points, y growing upwards (Graphviz's own orientation)."""

    left: float
    bottom: float
    right: float
    top: float

    def overlaps(self, other: Box, slack: float = SLACK) -> bool:
        """True when the two rectangles share more than `slack` points in both directions."""
        return (
            min(self.right, other.right) - max(self.left, other.left) > slack
            and min(self.top, other.top) - max(self.bottom, other.bottom) > slack
        )


@dataclass(frozen=True, slots=True)
class Text:
    """One text Graphviz drew: whose it is (`node:ID`, `edge:A->B`, `cluster:NAME`, `graph`), and where."""

    owner: str
    text: str
    box: Box
    role: str  # label | xlabel | headlabel | taillabel


@dataclass(frozen=True, slots=True)
class Shape:
    """A node's outline: `kind` is box, circle or diamond; centre and half sizes in points."""

    owner: str
    kind: str
    x: float
    y: float
    half_width: float
    half_height: float

    def touches(self, box: Box, slack: float = SLACK) -> bool:
        """True when the box reaches more than `slack` points into the outline."""
        dx = max(box.left - self.x, 0.0, self.x - box.right)
        dy = max(box.bottom - self.y, 0.0, self.y - box.top)
        w, h = self.half_width - slack, self.half_height - slack
        if w <= 0 or h <= 0:
            return False
        if self.kind == "circle":
            return (dx / w) ** 2 + (dy / h) ** 2 < 1.0
        if self.kind == "diamond":
            return dx / w + dy / h < 1.0
        return dx < w and dy < h


# ---------------------------------------------------------------- size


def svg_size(svg: bytes) -> tuple[float, float]:
    """(width, height) in points of an SVG drawn by Graphviz, from its root element."""
    root = ET.fromstring(svg)
    sizes = []
    for name in ("width", "height"):
        match = re.fullmatch(r"([0-9.]+)(pt)?", root.get(name, ""))
        sizes.append(float(match.group(1)) if match else 0.0)
    return sizes[0], sizes[1]


def layout_size(layout: Layout) -> tuple[float, float]:
    """(width, height) in points of the laid-out graph, from its bounding box."""
    left, bottom, right, top = (float(v) for v in str(layout["bb"]).split(","))
    return right - left, top - bottom


# ---------------------------------------------------------------- what was drawn


def _owners(layout: Layout) -> dict[int, str]:
    return {int(obj["_gvid"]): str(obj["name"]) for obj in layout.get("objects", []) if "nodes" not in obj and "_gvid" in obj}


def _texts(ops: Sequence[Mapping[str, Any]], owner: str, role: str) -> Iterator[Text]:
    size = 14.0
    for op in ops:
        if op.get("op") == "F":
            size = float(op["size"])
        elif op.get("op") == "T" and str(op.get("text", "")).strip():
            x, y = (float(v) for v in op["pt"])
            width = float(op["width"])
            left = {"l": x, "r": x - width}.get(str(op.get("align")), x - width / 2)
            # `pt` is on the baseline: letters rise about 0.75 of the size and descend 0.2.
            yield Text(owner, str(op["text"]), Box(left, y - 0.2 * size, left + width, y + 0.75 * size), role)


def texts(layout: Layout) -> list[Text]:
    """Every text of the drawing with its box: the title, cluster labels, node and edge labels."""
    found = list(_texts(layout.get("_ldraw_", []), "graph", "label"))
    owners = _owners(layout)
    for obj in layout.get("objects", []):
        kind = "cluster" if "nodes" in obj else "node"
        found.extend(_texts(obj.get("_ldraw_", []), f"{kind}:{obj['name']}", "label"))
    for edge in layout.get("edges", []):
        name = f"edge:{owners.get(int(edge['tail']), '?')}->{owners.get(int(edge['head']), '?')}"
        for key, role in (("_ldraw_", "label"), ("_hldraw_", "headlabel"), ("_tldraw_", "taillabel"), ("_xldraw_", "xlabel")):
            found.extend(_texts(edge.get(key, []), name, role))
    return _split_xlabels(layout, found)


def _split_xlabels(layout: Layout, found: list[Text]) -> list[Text]:
    """A node's texts outside its outline are its xlabel (Graphviz draws both in one list)."""
    shapes = {s.owner: s for s in node_shapes(layout)}
    out = []
    for text in found:
        shape = shapes.get(text.owner)
        if shape is not None and not _inside(shape, text.box):
            text = Text(text.owner, text.text, text.box, "xlabel")
        out.append(text)
    return out


def _inside(shape: Shape, box: Box) -> bool:
    cx, cy = (box.left + box.right) / 2, (box.bottom + box.top) / 2
    return abs(cx - shape.x) <= shape.half_width and abs(cy - shape.y) <= shape.half_height


def node_shapes(layout: Layout) -> list[Shape]:
    """Every visible node's outline."""
    shapes = []
    for obj in layout.get("objects", []):
        if "nodes" in obj or "pos" not in obj or "invis" in str(obj.get("style", "")):
            continue
        if obj.get("shape") in ("point", "plaintext", "none"):
            continue
        x, y = (float(v) for v in str(obj["pos"]).split(","))
        kind = {"circle": "circle", "doublecircle": "circle", "ellipse": "circle", "diamond": "diamond"}.get(
            str(obj.get("shape")), "box")
        half_w, half_h = float(obj["width"]) * 36, float(obj["height"]) * 36
        shapes.append(Shape(f"node:{obj['name']}", kind, x, y, half_w, half_h))
    return shapes


def _bezier(points: Sequence[Point]) -> list[Point]:
    """A Graphviz B-spline (1 + 3n control points) as a polyline."""
    line = [points[0]]
    for i in range(0, len(points) - 3, 3):
        p0, p1, p2, p3 = points[i : i + 4]
        for step in range(1, CURVE_SAMPLES + 1):
            t = step / CURVE_SAMPLES
            u = 1 - t
            line.append((
                u**3 * p0[0] + 3 * u * u * t * p1[0] + 3 * u * t * t * p2[0] + t**3 * p3[0],
                u**3 * p0[1] + 3 * u * u * t * p1[1] + 3 * u * t * t * p2[1] + t**3 * p3[1],
            ))
    return line


def edge_lines(layout: Layout) -> list[tuple[str, list[Point]]]:
    """(edge name, polyline) of every visible edge."""
    owners = _owners(layout)
    lines = []
    for edge in layout.get("edges", []):
        if "invis" in str(edge.get("style", "")):
            continue
        name = f"{owners.get(int(edge['tail']), '?')}->{owners.get(int(edge['head']), '?')}"
        for op in edge.get("_draw_", []):
            if op.get("op") in ("b", "B") and len(op.get("points", [])) >= 4:
                lines.append((name, _bezier([(float(x), float(y)) for x, y in op["points"]])))
    return lines


# ---------------------------------------------------------------- crossings


def _cross(a: Point, b: Point, c: Point, d: Point) -> bool:
    """True when segments ab and cd properly cross (touching ends do not count)."""

    def side(p: Point, q: Point, r: Point) -> float:
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

    d1, d2 = side(c, d, a), side(c, d, b)
    d3, d4 = side(a, b, c), side(a, b, d)
    return d1 * d2 < 0 and d3 * d4 < 0


def _near(p: Point, ends: Sequence[Point], distance: float = 6.0) -> bool:
    return any(abs(p[0] - q[0]) <= distance and abs(p[1] - q[1]) <= distance for q in ends)


def _bounds(line: Sequence[Point]) -> Box:
    xs, ys = [p[0] for p in line], [p[1] for p in line]
    return Box(min(xs), min(ys), max(xs), max(ys))


def crossings(layout: Layout) -> int:
    """How many times two edges cross. Edges that leave or reach the same node meet there
    without crossing; a crossing within a few points of an edge's end is such a meeting."""
    lines = [(line, _bounds(line)) for _, line in edge_lines(layout)]
    count = 0
    for i, (first, first_box) in enumerate(lines):
        ends = [first[0], first[-1]]
        for second, second_box in lines[i + 1 :]:
            if not first_box.overlaps(second_box, slack=0.0):
                continue
            all_ends = [*ends, second[0], second[-1]]
            for a, b in zip(first, first[1:], strict=False):
                for c, d in zip(second, second[1:], strict=False):
                    if _cross(a, b, c, d) and not _near(a, all_ends) and not _near(c, all_ends):
                        count += 1
    return count


# ---------------------------------------------------------------- clashes


def label_clashes(layout: Layout) -> list[str]:
    """Texts that overlap another object's text, or a node outline they do not belong to.

    A node's own label sits inside its outline; an xlabel (a failure's reason, an event's
    words) sits beside it and must not touch even its own outline. No edge runs through a
    text, its own label's included (an arrow into its label); the edges of a node end at its
    outline, so they are not held against the label inside it.
    """
    found = texts(layout)
    shapes = node_shapes(layout)
    lines = edge_lines(layout)
    clashes = []
    for i, text in enumerate(found):
        if text.owner == "graph":
            continue
        for other in found[i + 1 :]:
            if other.owner != text.owner and other.owner != "graph" and text.box.overlaps(other.box):
                clashes.append(f"{text.text!r} ({text.owner}) overlaps {other.text!r} ({other.owner})")
        for shape in shapes:
            own = shape.owner == text.owner
            if (not own or text.role == "xlabel") and shape.touches(text.box):
                clashes.append(f"{text.text!r} ({text.owner}) touches the outline of {shape.owner}")
        if text.owner.startswith("cluster:"):
            continue
        for name, line in lines:
            incident = text.owner.startswith("node:") and text.role == "label" and text.owner[5:] in name.split("->")
            if not incident and _runs_through(line, text.box):
                clashes.append(f"edge {name} runs through {text.text!r} ({text.owner})")
    return clashes


def _runs_through(line: Sequence[Point], box: Box, slack: float = 2 * SLACK) -> bool:
    """True when a point of the polyline lies inside the box (shrunk by `slack`)."""
    return any(box.left + slack < x < box.right - slack and box.bottom + slack < y < box.top - slack for x, y in line)
