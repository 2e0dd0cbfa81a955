"""Fit the flow view to a page: choose its direction and fold a long process into bands.

Graphviz draws a process as one long strip of ranks. Before any DOT is printed, this module
estimates from the text of each shape how long and how broad that strip will be, in each
direction (`LR`: the main line runs left to right; `TB`: top to bottom), and how it looks
folded into 2, 3 or 4 bands laid side by side across the direction of flow (rows for `LR`,
columns for `TB`). It keeps the arrangement whose aspect ratio lies within 1 : 3 and 3 : 1
with the shortest long side. An edge that crosses from one band into the next is drawn as a
pair of BPMN link events (`▶ A` at the end of a band, `A ▶` where the next one picks it up),
so no arrow runs back across the picture.

The estimate only chooses; the tests measure the real drawing (`procflow.visualize.measure`).
Nothing here runs Graphviz, so DOT text stays a pure function of the process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial

from procflow.visualize.ir import FlowCluster, FlowDiagram, FlowEdge, FlowNode, attached_lines

DIRECTIONS = ("auto", "lr", "tb")

MAX_RATIO = 3.0
"""The flattest a picture may be, either way (the issue's 1 : 3 to 3 : 1)."""

TARGET_RATIO = 2.2
"""Arrangements flatter than this are kept only when nothing squarer exists: estimates err."""

MAX_BANDS = 4
RANKSEP = 32.0  # points between ranks (dot.py's ranksep, 0.45 in)
NODESEP = 22.0  # points between shapes of one rank (nodesep, 0.3 in)
BAND_GAP = 40.0  # points between two bands
CHAR = 0.56  # a Helvetica character's average width, per point of font size
SMALL = 900.0
"""A picture whose long side is estimated under this many points is left as one strip, however
flat: folding three shapes into two bands to make them squarer only adds link events."""
FITS = 1800.0
"""Estimated long sides up to this count as fitting 2,000 points (estimates err by a tenth or so)."""

# Graphviz spreads side branches (failure ends, arms) wider than one rank's sum and packs
# top-to-bottom ranks tighter than their sizes add up to; measured on the sample library.
BREADTH_FACTOR = {"LR": 1.3, "TB": 1.4}
LENGTH_FACTOR = {"LR": 1.05, "TB": 0.8}


@dataclass(frozen=True, slots=True)
class Link:
    """An edge cut where one band ends and the next begins: drawn as two link events named `letter`."""

    edge: FlowEdge
    letter: str


@dataclass(frozen=True, slots=True)
class Arrangement:
    """How to lay out a flow view: Graphviz's `rankdir`, the band of each node, and the cut edges."""

    rankdir: str = "LR"
    bands: dict[str, int] = field(default_factory=dict)
    links: tuple[Link, ...] = ()

    @property
    def band_count(self) -> int:
        """How many bands the process is folded into (1 when it is not)."""
        return max(self.bands.values(), default=0) + 1


def wrap(text: str, width: int) -> list[str]:
    """Words in lines of at most `width` characters (a longer word keeps its own line)."""
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines or [""]


def fail_reason_lines(reason: str) -> list[str]:
    """A failure's reason as the lines written beside its end event (the drawing and the estimate share them)."""
    return wrap(reason, 24)


def text_width(text: str, size: float) -> float:
    """Estimated width in points of a line of Helvetica."""
    return len(text) * CHAR * size


def node_size(node: FlowNode) -> tuple[float, float]:
    """Estimated (width, height) in points of a node as dot.py draws it, its side text included."""
    if node.kind in ("start", "end"):
        return 40.0, 40.0
    if node.kind == "fail":
        lines = fail_reason_lines(node.title)
        return 24.0 + max(text_width(line, 9) for line in lines), max(24.0, 12.0 * len(lines))
    if node.kind in ("step", "call", "undo", "collapsed", "set"):
        rows = [*node.lines, *(line for item in node.attached for line in attached_lines(item))]  # swimlane rows
        width = max([text_width(node.title, 11) * 1.1, *(text_width(line, 9) for line in rows)]) + 24
        return width, 16.0 + 13.0 * (1 + len(rows)) + (12.0 if node.note else 0.0)
    if node.kind in ("timer", "event", "throw"):
        words = max([text_width(node.title, 10), *(text_width(line, 10) for line in node.lines)])
        return 30.0 + words, 30.0 + 12.0 * len(node.lines)
    if node.kind == "catch":
        return 30.0, 30.0
    return 36.0 + (text_width(" ".join(node.lines), 9) if node.lines else 0.0), 36.0  # gateways


def _label_size(edge: FlowEdge) -> tuple[float, float]:
    if not edge.label:
        return 0.0, 0.0
    lines = max(1, -(-len(edge.label) // 32)) if len(edge.label) > 40 else 1
    widest = min(len(edge.label), 32) if lines > 1 else len(edge.label)
    return widest * CHAR * 9 + 8, 12.0 * lines


@dataclass(slots=True)
class _Strip:
    """The estimated strip: each node's position along the flow, its rank, and the strip's extent."""

    position: dict[str, float]
    rank: dict[str, int]
    length: float
    breadth: float


def _forward(diagram: FlowDiagram) -> list[FlowEdge]:
    return [e for e in diagram.edges if e.kind not in ("back", "compensation")]


def _strip(diagram: FlowDiagram, along: int, nodes: Sequence[FlowNode] | None = None) -> _Strip:
    """Lay the nodes out along the flow (axis 0: width, for LR; axis 1: height, for TB)."""
    chosen = list(nodes if nodes is not None else diagram.nodes)
    ids = {n.id for n in chosen}
    sizes = {n.id: node_size(n) for n in chosen}
    edges = [e for e in _forward(diagram) if e.source in ids and e.target in ids]
    incoming: dict[str, list[FlowEdge]] = {}
    for edge in edges:
        incoming.setdefault(edge.target, []).append(edge)
    position: dict[str, float] = {}
    rank: dict[str, int] = {}
    order = [n.id for n in chosen if n.kind != "undo"]
    for _ in range(len(order)):  # relax until stable: the graph without back edges has no cycle
        changed = False
        for node_id in order:
            best, best_rank = 0.0, 0
            for edge in incoming.get(node_id, []):
                if edge.source not in position:
                    continue
                label = _label_size(edge)[along]
                gap = RANKSEP + (label + RANKSEP / 2 if label else 0.0)
                reach = position[edge.source] + sizes[edge.source][along] / 2 + gap + sizes[node_id][along] / 2
                if reach > best:
                    best, best_rank = reach, rank[edge.source] + 1
            if position.get(node_id) != best:
                position[node_id], rank[node_id] = best, best_rank
                changed = True
        if not changed:
            break
    for node in chosen:  # an undo box stands beside its step
        if node.kind == "undo":
            step = node.id.removesuffix(".undo")
            position[node.id], rank[node.id] = position.get(step, 0.0), rank.get(step, 0)
    length = max((position[i] + sizes[i][along] / 2 for i in position), default=0.0)
    across = 1 - along
    per_rank: dict[int, float] = {}
    for node_id, value in rank.items():
        per_rank[value] = per_rank.get(value, 0.0) + sizes[node_id][across] + NODESEP
    return _Strip(position, rank, length + 40.0, max(per_rank.values(), default=0.0) + 40.0)


def _anchor(diagram: FlowDiagram, node: FlowNode) -> str:
    """The node whose band a shape joins: an undo box or a failure end goes with its step."""
    if node.kind == "undo":
        return node.id.removesuffix(".undo")
    if node.kind == "fail":
        sources = [e.source for e in diagram.edges if e.target == node.id]
        return sources[0] if sources else node.id
    return node.id


def _fold(diagram: FlowDiagram, strip: _Strip, count: int) -> dict[str, int]:
    """Bands by position along the flow; a structure cluster (branch, loop) stays in one band."""
    spine = sorted({strip.position[n.id] for n in diagram.nodes if n.spine and n.id in strip.position})
    cuts: list[float] = []
    edges = _forward(diagram)
    for index in range(1, count):
        target = strip.length * index / count
        candidates = [(a + b) / 2 for a, b in zip(spine, spine[1:], strict=False) if (a + b) / 2 > (cuts[-1] if cuts else 0)]
        if not candidates:
            break

        cuts.append(min(candidates, key=partial(_cut_cost, strip, edges, target=target)))
    band_of_position = {}
    for node in diagram.nodes:
        where = strip.position.get(_anchor(diagram, node), 0.0)
        band_of_position[node.id] = sum(1 for cut in cuts if where >= cut)
    # A cluster goes whole into the band of its first member.
    first_band: dict[str, int] = {}
    for node in sorted(diagram.nodes, key=lambda n: strip.position.get(n.id, 0.0)):
        for cluster in _clusters_of(diagram, node.cluster):
            first_band.setdefault(cluster, band_of_position[node.id])
    bands = {}
    for node in diagram.nodes:
        outer = _clusters_of(diagram, node.cluster)
        bands[node.id] = first_band[outer[-1]] if outer else band_of_position[node.id]
    return bands


def _cut_cost(strip: _Strip, edges: list[FlowEdge], cut: float, target: float) -> float:
    """How bad a cut is: its distance from where it should fall, and the edges it cuts (each a link pair)."""
    crossing = sum(1 for e in edges if strip.position.get(e.source, 0) < cut <= strip.position.get(e.target, 0))
    return abs(cut - target) / strip.length + 0.12 * crossing


def _clusters_of(diagram: FlowDiagram, cluster: str | None) -> list[str]:
    """The cluster and its parents, innermost first."""
    parents = {c.id: c.parent for c in diagram.clusters}
    chain = []
    while cluster is not None:
        chain.append(cluster)
        cluster = parents.get(cluster)
    return chain


def _links(diagram: FlowDiagram, bands: dict[str, int]) -> tuple[Link, ...]:
    crossing = [e for e in diagram.edges if e.kind != "compensation" and bands.get(e.source) != bands.get(e.target)]
    return tuple(Link(edge, chr(ord("A") + index) if index < 26 else f"L{index}") for index, edge in enumerate(crossing))


def _estimate(diagram: FlowDiagram, rankdir: str, count: int) -> tuple[float, float, dict[str, int]]:
    """(width, height) of the arrangement, and its bands."""
    along = 0 if rankdir == "LR" else 1
    strip = _strip(diagram, along)
    bands = _fold(diagram, strip, count) if count > 1 else {n.id: 0 for n in diagram.nodes}
    used = max(bands.values(), default=0) + 1
    length, breadth = 0.0, 0.0
    for band in range(used):
        members = [n for n in diagram.nodes if bands[n.id] == band]
        part = _strip(diagram, along, members)
        length = max(length, part.length * LENGTH_FACTOR[rankdir])
        breadth += part.breadth * BREADTH_FACTOR[rankdir] + (BAND_GAP if band else 0.0)
    width, height = (length, breadth) if along == 0 else (breadth, length)
    return width, height, bands


def arrange(diagram: FlowDiagram, direction: str = "auto") -> Arrangement:
    """The arrangement for a flow view: `lr` or `tb` fixes the direction, `auto` tries both.

    A diagram with swimlanes is not folded (a lane runs the whole length of its pool); it
    runs top to bottom, lanes side by side, unless `lr` is asked for.
    """
    lanes = any(c.kind == "lane" for c in diagram.clusters)
    if lanes:
        return Arrangement("LR" if direction == "lr" else "TB", {n.id: 0 for n in diagram.nodes})
    directions = {"lr": ["LR"], "tb": ["TB"]}.get(direction, ["LR", "TB"])
    options = []
    for rankdir in directions:
        for count in range(1, MAX_BANDS + 1):
            width, height, bands = _estimate(diagram, rankdir, count)
            if count > 1 and max(bands.values(), default=0) + 1 < count:
                break  # nowhere left to cut
            ratio = max(width, height) / max(1.0, min(width, height))
            long_side = max(width, height)
            flat = ratio > TARGET_RATIO and long_side > SMALL
            options.append(((flat, long_side > FITS, count, rankdir != "LR", long_side), rankdir, bands))
    # Fold only when the strip does not fit; of what fits, fewest bands, left to right first.
    _, rankdir, bands = min(options, key=lambda o: o[0])
    return Arrangement(rankdir, bands, _links(diagram, bands))


# ---------------------------------------------------------------- folding


def fold(diagram: FlowDiagram, arrangement: Arrangement) -> tuple[FlowDiagram, list[str]]:
    """The diagram with its bands as clusters and each cut edge as a pair of link events, and the
    names of the first node of each band (stood side by side, in order, by `_band_order`)."""
    if arrangement.band_count < 2:
        return diagram, []
    bands = arrangement.bands
    order = range(arrangement.band_count)
    # Graphviz stacks left-to-right bands in the reverse of the order it meets them.
    clusters = [FlowCluster(f"band{b}", "band", "") for b in (reversed(order) if arrangement.rankdir == "LR" else order)]
    clusters += [c if c.parent is not None else replace(c, parent=f"band{_cluster_band(diagram, c.id, bands)}")
                 for c in diagram.clusters]
    nodes = [n if n.cluster is not None else replace(n, cluster=f"band{bands[n.id]}") for n in diagram.nodes]
    cut = {link.edge for link in arrangement.links}
    edges = [e for e in diagram.edges if e not in cut]
    kept = list(edges)
    firsts = [next((n.id for n in diagram.nodes if n.kind == "start"), diagram.nodes[0].id)]
    for link in arrangement.links:
        edge = link.edge
        out_id, in_id = f"link.{link.letter}.out", f"link.{link.letter}.in"
        source_cluster = next(n.cluster for n in nodes if n.id == edge.source)
        target_cluster = next(n.cluster for n in nodes if n.id == edge.target)
        nodes.append(FlowNode(out_id, "link", link.letter, cluster=source_cluster, sign="out", spine=edge.spine))
        nodes.append(FlowNode(in_id, "link", link.letter, cluster=target_cluster, sign="in", spine=edge.spine))
        edges.append(replace(edge, target=out_id))
        edges.append(FlowEdge(in_id, edge.target, edge.kind, "", edge.taken, edge.spine))
        # A band's beginnings (no shape of the band leads to them) stand first, in the links' order.
        if not any(e.target == edge.target for e in kept):
            firsts.append(in_id)
    firsts.sort(key=lambda name: bands.get(name, 0) if name in bands else bands[_link_target(edges, name)])
    return replace(diagram, nodes=tuple(nodes), edges=tuple(edges), clusters=tuple(clusters)), firsts


def _link_target(edges: list[FlowEdge], link_in: str) -> str:
    return next(e.target for e in edges if e.source == link_in)


def _cluster_band(diagram: FlowDiagram, cluster: str, bands: dict[str, int]) -> int:
    parents = {c.id: c.parent for c in diagram.clusters}
    for node in diagram.nodes:
        inner = node.cluster
        while inner is not None and inner != cluster:
            inner = parents.get(inner)
        if inner == cluster:
            return bands[node.id]
    return 0
