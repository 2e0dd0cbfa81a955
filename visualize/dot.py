"""Graphviz DOT text from the diagram IR.

The flow view is a `dot` layout with BPMN-like shapes, its direction chosen by `arrange.py`. The sequence view pins
every shape where a sequence diagram wants it (`layout=neato` with `pos="x,y!"`): lifelines
as columns, one row per message, note or block edge; Graphviz only draws it. Output is
deterministic: the same IR gives the same bytes.

Why one module of about 535 lines: the two views share the one vocabulary of colours, fonts
and HTML labels, and both print the same DOT; how a flow is arranged is `arrange.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from procflow.visualize.arrange import Arrangement, arrange, fail_reason_lines, fold, wrap
from procflow.visualize.ir import (
    NODE_STATES,
    BlockEnd,
    BlockSection,
    BlockStart,
    FlowCluster,
    FlowDiagram,
    FlowEdge,
    FlowNode,
    Legend,
    Message,
    Note,
    SequenceDiagram,
    attached_lines,
)

FONT = "Helvetica"
MONO = "Courier"

INK = "#1b2631"
MUTED = "#5d6d7e"
RED = "#c0392b"
RED_INK = "#922b21"
UNDO = "#af601a"

STATE_STYLE = {
    "completed": {"fillcolor": "#d5f5e3", "color": "#1e8449", "penwidth": "2.5"},
    "current": {"fillcolor": "#d6eaf8", "color": "#1f618d", "penwidth": "3.5"},
    "failed": {"fillcolor": "#f5b7b1", "color": RED, "penwidth": "3.5"},
    "compensated": {"fillcolor": "#fad7a0", "color": "#ca6f1e", "penwidth": "2.5"},
}
STATE_WORDS = {"completed": "completed", "current": "waiting now", "failed": "failed", "compensated": "compensated"}


def quote(text: str) -> str:
    """A DOT double-quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class Html(str):
    """A Graphviz HTML-like label (written between `<` and `>`, not quoted)."""


def _attrs(attrs: dict[str, str]) -> str:
    parts = []
    for key, value in attrs.items():
        if isinstance(value, Html):
            parts.append(f"{key}=<{value}>")
        else:
            parts.append(f"{key}={quote(value)}")
    return "[" + ", ".join(parts) + "]"


def _html(text: str) -> str:
    return escape(text, quote=False)


# ---------------------------------------------------------------- flow


def _node_attrs(node: FlowNode, straight: bool = True) -> dict[str, str]:
    kind = node.kind
    note = f'<br/><font point-size="9" color="#1f618d"><i>{_html(node.note)}</i></font>' if node.note else ""
    attrs: dict[str, str]
    if kind == "start":
        attrs = {"shape": "circle", "width": "0.55", "fixedsize": "true", "label": "start", "fontsize": "10",
                 "style": "filled", "fillcolor": "#eafaf1", "color": "#1e8449", "penwidth": "1.5"}
    elif kind == "end":
        attrs = {"shape": "circle", "width": "0.55", "fixedsize": "true", "label": "end", "fontsize": "10",
                 "style": "filled", "fillcolor": "#ffffff", "color": INK, "penwidth": "3"}
        if node.title != "end":  # a named end (`end "cancelled"`): its outcome in the circle
            text = "<br/>".join(_html(line) for line in wrap(node.title, 13))
            attrs.update({"width": "0.8", "fixedsize": "false", "margin": "0.02", "label": Html(f'<font point-size="9">{text}</font>')})
    elif kind == "fail":
        attrs = {"shape": "plain", "label": _error_end(node)}
    elif kind == "link":
        attrs = {"shape": "doublecircle", "width": "0.32", "fixedsize": "true", "label": node.title, "fontsize": "11",
                 "style": "filled", "fillcolor": "#eaf2f8" if node.sign == "in" else "#1f618d",
                 "fontcolor": INK if node.sign == "in" else "#ffffff", "color": "#1f618d", "penwidth": "1.2"}
    elif kind == "collapsed":
        rows = [f"<b>{_html(node.title)}</b>", *(f'<font point-size="9" color="{MUTED}">{_html(line)}</font>' for line in node.lines)]
        rows.append('<font point-size="12">⊞</font>')
        attrs = {"shape": "box", "style": "rounded,filled", "fillcolor": "#ffffff", "color": "#34495e", "penwidth": "1.5",
                 "margin": "0.14,0.05", "label": Html("<br/>".join(rows) + note)}
    elif kind in ("step", "call", "undo"):
        title = f"<b>{_html(node.title)}</b>" if kind != "undo" else _html(node.title)
        if kind == "step" and node.sign:  # a human task's person marker (BPMN's user task)
            title = f'<font point-size="13">{_html(node.sign)}</font> {title}'
        rows = [title]
        for index, line in enumerate(node.lines):
            face = MONO if (kind == "step" and index == len(node.lines) - 1) else FONT  # the command, last
            rows.append(f'<font face="{face}" point-size="9" color="{MUTED}">{_html(line)}</font>')
        attrs = {"shape": "box", "style": "rounded,filled", "fillcolor": "#ffffff", "color": "#34495e",
                 "penwidth": "1.5", "margin": "0.14,0.07", "label": Html("<br/>".join(rows) + note)}
        if node.attached:
            attrs.update({"margin": "0.1,0.05", "label": _with_attached("<br/>".join(rows) + note, node)})
        if kind == "call":
            attrs["penwidth"] = "3.5"
        if kind == "undo":
            attrs.update({"style": "rounded,dashed,filled", "fillcolor": "#fef5e7", "color": UNDO, "fontcolor": "#784212",
                          "fontsize": "10"})
    elif kind in ("timer", "event", "catch"):
        # BPMN's intermediate event: a small double circle with its marker, its words beside it.
        attrs = {"shape": "doublecircle", "width": "0.42", "fixedsize": "true", "style": "filled", "fillcolor": "#ffffff",
                 "color": MUTED, "penwidth": "1.2", "fontsize": "15", "label": node.sign}
        # Its words stand beside it (_side_text).
    else:  # gateways: xor, fork, join, race, loop, until
        attrs = {"shape": "diamond", "width": "0.5", "height": "0.5", "fixedsize": "true", "label": node.sign,
                 "fontsize": "16", "style": "filled", "fillcolor": "#fef9e7", "color": "#b7950b", "fontcolor": "#7d6608",
                 "penwidth": "1.5"}
    if node.state in STATE_STYLE and kind != "fail":  # an error end colours its own circle
        attrs.update(STATE_STYLE[node.state])
        if "filled" not in attrs.get("style", ""):
            attrs["style"] = (attrs.get("style", "") + ",filled").strip(",")
    attrs["tooltip"] = node.title or node.kind
    if node.spine and straight:
        attrs["group"] = "spine"
    return attrs


def _error_end(node: FlowNode) -> Html:
    """BPMN's error end event, small, thick and red, with its reason beside it: one node, so the
    words stay next to their circle (edges end at the circle, its port `end`)."""
    style = STATE_STYLE["failed"] if node.state == "failed" else {"fillcolor": "#fdedec", "color": RED}
    text = '<br align="left"/>'.join(_html(line) for line in fail_reason_lines(node.title))
    circle = (f'<td port="end" width="18" height="18" fixedsize="true" style="rounded" border="3" '
              f'color="{style["color"]}" bgcolor="{style["fillcolor"]}"></td>')
    words = f'<td align="left"><font point-size="9" color="{RED_INK}">{text}<br align="left"/></font></td>'
    return Html(f'<table border="0" cellborder="0" cellspacing="0" cellpadding="0"><tr>{circle}<td width="5"></td>'
                f"{words}</tr></table>")


def _with_attached(text: str, node: FlowNode) -> Html:
    """A step's words and, under them, what the swimlane view draws inside its box
    (`procflow.visualize.lanes`): a red row for a timeout that fails the process, a dashed
    orange row for its undo. An overlay's state colours the row it reached."""
    rows = [f"<tr><td>{text}</td></tr>"]
    for item in node.attached:
        state = STATE_STYLE.get(item.state or "")
        fill = state["fillcolor"] if state else None
        words = "<br/>".join(_html(line) for line in attached_lines(item))
        if item.kind == "timeout":
            # Reached, the row is framed in its state's colour: the step's own fill may be the same.
            frame = f' border="1" style="rounded" color="{state["color"]}" bgcolor="{fill}"' if state else ""
            rows.append(f'<tr><td{frame}><font point-size="9" color="{RED_INK}">{words}</font></td></tr>')
        else:
            rows.append(f'<tr><td border="1" style="rounded,dashed" color="{UNDO}" bgcolor="{fill or "#fef5e7"}" '
                        f'cellpadding="2"><font point-size="9" color="#784212">{words}</font></td></tr>')
    return Html('<table border="0" cellborder="0" cellspacing="2" cellpadding="0">' + "".join(rows) + "</table>")


def _side_text(node: FlowNode) -> str | None:
    """The words beside a small shape (an event's name and wait, a race's name),
    as a plain text node of their own: Graphviz keeps room for a node, not for an `xlabel`."""
    if node.kind in ("timer", "event"):
        rows = [f"<b>{_html(node.title)}</b>", *(_html(line) for line in node.lines)]
        note = f'<br/><font point-size="9" color="#1f618d"><i>{_html(node.note)}</i></font>' if node.note else ""
        label = f'<font point-size="10">{"<br/>".join(rows)}</font>{note}'
    elif node.kind in ("xor", "fork", "join", "race", "loop", "until") and node.lines:
        label = f'<font point-size="9" color="{MUTED}">{_html(" ".join(node.lines))}</font>'
    else:
        return None
    attrs = {"shape": "plaintext", "margin": "0.02", "width": "0.1", "height": "0.1", "label": Html(label), "tooltip": node.title or node.kind}
    return f"{quote(node.id + '.text')} {_attrs(attrs)}"


def _edge_attrs(edge: FlowEdge, straight: bool) -> dict[str, str]:
    attrs: dict[str, str] = {}
    if edge.spine and straight:
        attrs.update({"weight": "8", "penwidth": "1.6", "color": "#34495e"})
    if edge.label:
        # A long condition would stretch the whole row: wrap it.
        attrs["label"] = "\n".join(wrap(edge.label, 32)) if len(edge.label) > 40 else edge.label
    if edge.kind == "failure":
        attrs.update({"color": RED, "fontcolor": RED_INK})
    elif edge.kind == "timeout":
        attrs.update({"color": RED, "fontcolor": RED_INK, "style": "dashed", "label": "◷ " + attrs.get("label", "")})
    elif edge.kind == "compensation":
        attrs.update({"style": "dashed", "color": UNDO, "fontcolor": UNDO, "arrowhead": "vee"})
    elif edge.kind == "back":
        attrs.update({"style": "dashed", "constraint": "false", "color": MUTED})
    if edge.taken:
        colour = {"failure": RED, "timeout": RED, "compensation": "#ca6f1e"}.get(edge.kind, "#1e8449")
        attrs.update({"color": colour, "penwidth": "2.5"})
    return attrs


def _cluster_attrs(cluster: FlowCluster) -> list[str]:
    label = f"label={quote(cluster.label)}"
    if cluster.kind == "band":
        return ['label=""', "style=invis", "margin=12"]
    if cluster.kind == "lane":
        return [label, 'style="filled"', 'fillcolor="#f4f6f7"', 'color="#d5d8dc"', "labeljust=l", "fontsize=12"]
    if cluster.kind == "loop":
        return [label, 'style="rounded"', 'color="#85929e"', "labeljust=l", "fontsize=10", f'fontcolor="{MUTED}"']
    return [label, 'style="rounded,dashed"', 'color="#aab7b8"', "labeljust=l", "fontsize=10", f'fontcolor="{MUTED}"']


def _title(title: str, legend: Legend | None) -> str:
    """The graph's label: its title, and under it the overlay's legend (kept out of the layout)."""
    if legend is None:
        return quote(title)
    return f"<{_legend(title, legend)}>"


def _legend(title: str, legend: Legend) -> Html:
    cells = "".join(
        f'<td bgcolor="{STATE_STYLE[s]["fillcolor"]}"><font point-size="9">{STATE_WORDS[s]}</font></td>'
        for s in legend.states
        if s in NODE_STATES
    )
    span = max(1, len(legend.states))
    rows = [f'<tr><td colspan="{span}" align="left" border="0"><font point-size="14">{_html(title)}</font></td></tr>']
    rows.append(f'<tr><td colspan="{span}" align="left"><font point-size="12"><b>{_html(legend.heading)}</b></font></td></tr>')
    rows += [f'<tr><td colspan="{span}" align="left"><font point-size="10">{_html(line)}</font></td></tr>' for line in legend.lines]
    rows.append(f"<tr>{cells}</tr>")
    table = '<table border="0" cellborder="1" cellspacing="0" cellpadding="4" bgcolor="#fbfcfc" color="#aab7b8">'
    return Html(f"{table}{''.join(rows)}</table>")


def _lane_anchors(diagram: FlowDiagram) -> list[str]:
    """Invisible anchors that stretch every swimlane across the whole width, stacked in order.

    Each lane gets a first and a last anchor; every shape of the lane lies between them, and
    all first (and all last) anchors share a rank, so the lanes line up as bands.
    """
    lanes = [c for c in diagram.clusters if c.kind == "lane"]
    if not lanes:
        return []
    out = []
    for edge in ("first", "last"):
        names = [quote(f"{lane.id}.{edge}") for lane in lanes]
        out.append(f"  {{rank=same; {'; '.join(names)}}}")
        if len(names) > 1:
            out.append(f"  {' -> '.join(names)} [style=invis]")
    for node in diagram.nodes:
        if node.cluster is not None:
            out.append(f"  {quote(node.cluster + '.first')} -> {quote(node.id)} [style=invis, weight=0]")
            out.append(f"  {quote(node.id)} -> {quote(node.cluster + '.last')} [style=invis, weight=0]")
    return out


def _band_order(firsts: list[str]) -> list[str]:
    """Bands side by side across the flow, in order: their first nodes share a rank, each after the last."""
    if len(firsts) < 2:
        return []
    names = [quote(name) for name in firsts]
    return [f"  {{rank=same; {'; '.join(names)}}}", f"  {' -> '.join(names)} [style=invis, weight=0]"]


def flow(diagram: FlowDiagram, arrangement: Arrangement | None = None) -> str:
    """The flow view as a `digraph`: left to right or top to bottom, folded into bands as `arrangement`
    says (by default, as `procflow.visualize.arrange.arrange` chooses)."""
    if arrangement is None:
        arrangement = arrange(diagram)
    diagram, firsts = fold(diagram, arrangement)
    # Lanes stand side by side, each as wide as its widest row, the pool as tall as all ranks:
    # shapes of a row and rows of a lane sit closer than in the flow view.
    lanes = any(c.kind == "lane" for c in diagram.clusters)
    nodesep, ranksep = ("0.15", "0.35") if lanes else ("0.3", "0.45")
    out = [
        f"digraph {quote(diagram.name)} {{",
        f"  graph [rankdir={arrangement.rankdir}, fontname={quote(FONT)}, fontsize=14, labelloc=t, labeljust=l, "
        f"label={_title(diagram.title, diagram.legend)}, nodesep={nodesep}, ranksep={ranksep}, pad=0.25, newrank=true, forcelabels=true, "
        f'bgcolor="white"]',
        f'  node [fontname={quote(FONT)}, fontsize=11, fontcolor="{INK}"]',
        f'  edge [fontname={quote(FONT)}, fontsize=9, color="{MUTED}", fontcolor="#2c3e50", arrowsize=0.7]',
    ]
    children: dict[str | None, list[FlowCluster]] = {}
    for group in diagram.clusters:
        children.setdefault(group.parent, []).append(group)
    members: dict[str | None, list[FlowNode]] = {}
    for node in diagram.nodes:
        members.setdefault(node.cluster, []).append(node)
    cluster_of = {node.id: node.cluster for node in diagram.nodes}
    # An undo box stands beside its step: same rank, in the step's cluster.
    beside: dict[str | None, list[tuple[str, str]]] = {}
    for edge in diagram.edges:
        if edge.kind == "compensation" and cluster_of.get(edge.source) == cluster_of.get(edge.target):
            beside.setdefault(cluster_of.get(edge.source), []).append((edge.source, edge.target))
    work: list[tuple[FlowCluster | None, int, bool]] = [(None, 1, True)]
    while work:
        cluster, depth, entering = work.pop()
        indent = "  " * depth
        if not entering:
            out.append(f"{'  ' * (depth - 1)}}}")
            continue
        key = cluster.id if cluster else None
        if cluster is not None:
            out.append(f"{'  ' * (depth - 1)}subgraph {quote('cluster_' + cluster.id)} {{")
            out.extend(f"{indent}{attr}" for attr in _cluster_attrs(cluster))
            work.append((cluster, depth, False))
        if cluster is not None and cluster.kind == "lane":
            for end in ("first", "last"):
                out.append(f'{indent}{quote(cluster.id + "." + end)} [shape=point, style=invis, width=0.01, label=""]')
        for node in members.get(key, []):
            out.append(f"{indent}{quote(node.id)} {_attrs(_node_attrs(node, not lanes))}")
            side = _side_text(node)
            if side is not None:
                out.append(f"{indent}{side}")
                reason = quote(node.id + ".text")
                out.append(f"{indent}{{rank=same; {quote(node.id)}; {reason}}}")
                # A flat edge puts its tail first: left of its head top to bottom, below it left to right.
                pair = f"{quote(node.id)} -> {reason}" if arrangement.rankdir == "TB" else f"{reason} -> {quote(node.id)}"
                out.append(f"{indent}{pair} [style=invis]")
        for source, target in beside.get(key, []):
            out.append(f"{indent}{{rank=same; {quote(source)}; {quote(target)}}}")
        for child in reversed(children.get(key, [])):
            work.append((child, depth + 1, True))
    out.extend(_lane_anchors(diagram))
    out.extend(_band_order(firsts if arrangement.rankdir == "TB" else firsts[::-1]))
    on_spine = {node.id for node in diagram.nodes if node.spine}
    error_ends = {node.id for node in diagram.nodes if node.kind == "fail"}
    for edge in diagram.edges:
        attrs = _edge_attrs(edge, not lanes)
        if not edge.spine and edge.source in on_spine and edge.target in on_spine and edge.kind != "back":
            attrs["weight"] = "0"  # a way around a block bends freely, out of the block's labels
        if edge.target in error_ends:
            attrs["headport"] = "end:c"  # aimed at the circle's centre, clipped at its ring
        tail = f" {_attrs(attrs)}" if attrs else ""
        out.append(f"  {quote(edge.source)} -> {quote(edge.target)}{tail}")
    out.append("}")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- sequence

CHAR = 0.085  # inches per character at the message font size (a generous Helvetica average)
ROW = 0.5


@dataclass(slots=True)
class _Shape:
    """A pinned shape of the sequence view."""

    id: str
    x: float
    y: float
    attrs: dict[str, str]


def _text_width(text: str, size: float = 10.0) -> float:
    return len(text) * CHAR * size / 10.0


def _columns(diagram: SequenceDiagram) -> dict[str, float]:
    """x of each lifeline: wide enough for every message label between two of them."""
    order = [lifeline.alias for lifeline in diagram.lifelines]
    index = {alias: i for i, alias in enumerate(order)}
    heads = [max(1.2, _text_width(lifeline.name, 11) + 0.4) for lifeline in diagram.lifelines]
    needs: dict[tuple[int, int], float] = {}
    for item in diagram.items:
        if isinstance(item, Message) and item.source in index and item.target in index:
            a, b = sorted((index[item.source], index[item.target]))
            if a != b:
                needs[(a, b)] = max(needs.get((a, b), 0.0), _text_width(item.label) + 0.5)
    xs = [0.0]
    for j in range(1, len(order)):
        x = xs[j - 1] + max(1.6, (heads[j - 1] + heads[j]) / 2 + 0.3)
        for (a, b), width in needs.items():
            if b == j:
                x = max(x, xs[a] + width)
        xs.append(round(x, 2))
    return {alias: xs[i] for i, alias in enumerate(order)}


def _pos(x: float, y: float) -> str:
    return f"{x:.2f},{y:.2f}!"


_MESSAGE_STYLE = {
    "command": ("solid", INK, "normal", INK),
    "reply": ("dashed", INK, "normal", INK),
    "failure": ("dashed", RED, "tee", RED_INK),
    "event": ("dashed", "#1f618d", "normal", "#1f618d"),
    "undo": ("solid", UNDO, "normal", UNDO),
    "undo_reply": ("dashed", UNDO, "normal", UNDO),
}
_NOTE_FILL = {"fail": ("#fdedec", RED), "status": ("#eaf2f8", "#1f618d")}
_FRAME_COLOUR = {"compensation": UNDO, "call": "#2e86c1", "par": "#7d3c98"}
_BLOCK_WORD = {"compensation": "compensate", "call": "call"}


class _SequenceLayout:
    """Places every shape of a sequence diagram, top to bottom (y grows downwards as it goes negative)."""

    def __init__(self, diagram: SequenceDiagram) -> None:
        self.diagram = diagram
        self.xs = _columns(diagram)
        self.left = min(self.xs.values()) - 0.6
        self.right = max(self.xs.values()) + 0.6
        self.y = -0.35
        self.shapes: list[str] = []
        self.edges: list[str] = []
        self.blocks: list[tuple[str, float, int]] = []  # (kind, top y, depth) of each open block
        self.frames: list[str] = []
        self.count = 0

    def _name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def point(self, x: float, y: float) -> str:
        name = self._name("p")
        attrs = {"shape": "point", "width": "0.01", "height": "0.01", "style": "invis", "label": "", "pos": _pos(x, y)}
        self.shapes.append(f"  {name} {_attrs(attrs)}")
        return name

    def text(self, x: float, y: float, label: Html, width: float, *, left: bool = False) -> None:
        """A label centred at x, or starting at x when `left`."""
        width = max(width, 0.2)
        if left:
            label = Html(f'<table border="0" cellpadding="0" cellspacing="0"><tr><td width="{int(width * 72)}" '
                         f'height="14" fixedsize="true" align="left">{label}</td></tr></table>')
            x += width / 2
        # White behind the words: a lifeline passing under a label does not cross its letters.
        attrs = {"shape": "plaintext", "margin": "0", "width": f"{width:.2f}", "height": "0.18", "fixedsize": "true",
                 "style": "filled", "fillcolor": "white", "label": label, "pos": _pos(x, y)}
        self.shapes.append(f"  {self._name('t')} {_attrs(attrs)}")

    def message(self, item: Message) -> None:
        self.y -= ROW
        x1, x2 = self.xs.get(item.source, 0.0), self.xs.get(item.target, 0.0)
        a, b = self.point(x1, self.y), self.point(x2, self.y)
        line, colour, head, ink = _MESSAGE_STYLE.get(item.kind, _MESSAGE_STYLE["command"])
        self.edges.append(f'  {a} -> {b} [style={line}, color="{colour}", arrowhead={head}, penwidth=1.3]')
        label = Html(f'<font point-size="10" color="{ink}">{_html(item.label)}</font>')
        self.text((x1 + x2) / 2, self.y + 0.14, label, _text_width(item.label, 9.2) + 0.08)

    def note(self, item: Note) -> None:
        over = [self.xs[a] for a in item.over if a in self.xs] or [min(self.xs.values())]
        lines = wrap(item.text, 60)
        height = 0.22 + 0.17 * len(lines)
        width = max(_text_width(max(lines, key=len)) + 0.35, max(over) - min(over) + 0.7)
        x0 = min(over) - 0.35 if len(over) > 1 else over[0] - 0.25
        self.y -= height / 2 + 0.17
        fill, border = _NOTE_FILL.get(item.kind, ("#fef9e7", "#b7950b"))
        attrs = {"shape": "note", "style": "filled", "fillcolor": fill, "color": border, "fixedsize": "true",
                 "width": f"{width:.2f}", "height": f"{height:.2f}", "fontsize": "10",
                 "label": Html("".join(f'{_html(t)}<br align="left"/>' for t in lines)), "pos": _pos(x0 + width / 2, self.y)}
        self.shapes.append(f"  {self._name('note')} {_attrs(attrs)}")
        self.y -= height / 2 - 0.05

    def start(self, item: BlockStart) -> None:
        depth = len(self.blocks)
        self.y -= 0.42
        self.blocks.append((item.kind, self.y + 0.25, depth))
        word = _BLOCK_WORD.get(item.kind, item.kind)
        shown = item.label.removeprefix("call ") if item.kind == "call" else item.label
        label = Html(f'<font point-size="10" color="{MUTED}"><b>{_html(word)}</b>  [{_html(shown)}]</font>')
        self.text(self.left + 0.12 * depth + 0.1, self.y + 0.08, label, _text_width(f"{word}  [{item.label}]") + 0.2,
                  left=True)

    def section(self, item: BlockSection) -> None:
        self.y -= 0.34
        if not self.blocks:
            return
        kind, _, depth = self.blocks[-1]
        inset = 0.12 * depth
        a, b = self.point(self.left + inset, self.y + 0.12), self.point(self.right - inset, self.y + 0.12)
        self.edges.append(f'  {a} -> {b} [style=dashed, color="#aab7b8", arrowhead=none]')
        word = "and" if kind == "par" else "else"
        text = "[else]" if item.label == "else" else f"[{word}: {item.label}]"
        label = Html(f'<font point-size="10" color="{MUTED}">{_html(text)}</font>')
        self.text(self.left + inset + 0.1, self.y - 0.04, label, _text_width(text) + 0.2, left=True)

    def end(self) -> None:
        if not self.blocks:
            return
        kind, top, depth = self.blocks.pop()
        self.y -= 0.25
        inset = 0.12 * depth
        x0, x1 = self.left + inset, self.right - inset
        attrs = {"shape": "box", "style": "rounded", "color": _FRAME_COLOUR.get(kind, "#85929e"), "penwidth": "1.2",
                 "label": "", "fixedsize": "true", "width": f"{x1 - x0:.2f}", "height": f"{top - self.y:.2f}",
                 "pos": _pos((x0 + x1) / 2, (top + self.y) / 2)}
        self.frames.append(f"  frame{len(self.frames) + 1} {_attrs(attrs)}")

    def lifelines(self, bottom: float) -> list[str]:
        out = []
        for lifeline in self.diagram.lifelines:
            x = self.xs[lifeline.alias]
            box = {"shape": "box", "style": "rounded,filled", "fillcolor": "#eaf2f8" if lifeline.participant else "#d6eaf8",
                   "color": "#1f618d", "penwidth": "1.5", "fixedsize": "true",
                   "width": f"{max(1.2, _text_width(lifeline.name, 11) + 0.4):.2f}", "height": "0.42", "label": lifeline.name}
            head, foot = quote("head_" + lifeline.alias), quote("foot_" + lifeline.alias)
            out.append(f"  {head} {_attrs({**box, 'pos': _pos(x, 0.0)})}")
            out.append(f"  {foot} {_attrs({**box, 'pos': _pos(x, bottom)})}")
            out.append(f'  {head} -> {foot} [style=dashed, color="#aab7b8", arrowhead=none]')
        return out


def sequence(diagram: SequenceDiagram) -> str:
    """The sequence view as a `digraph` of pinned shapes (neato draws it as laid out here)."""
    layout = _SequenceLayout(diagram)
    for item in diagram.items:
        if isinstance(item, Message):
            layout.message(item)
        elif isinstance(item, Note):
            layout.note(item)
        elif isinstance(item, BlockStart):
            layout.start(item)
        elif isinstance(item, BlockSection):
            layout.section(item)
        elif isinstance(item, BlockEnd):
            layout.end()
    while layout.blocks:
        layout.end()
    out = [
        f"digraph {quote(diagram.name + '-sequence')} {{",
        f"  graph [layout=neato, splines=false, overlap=true, outputorder=edgesfirst, fontname={quote(FONT)}, "
        f'fontsize=14, labelloc=t, labeljust=l, label={quote(diagram.title)}, pad=0.3, bgcolor="white"]',
        f'  node [fontname={quote(FONT)}, fontsize=11, fontcolor="{INK}"]',
        "  edge [arrowsize=0.8]",
    ]
    out.extend(layout.frames)
    out.extend(layout.lifelines(layout.y - 0.6))
    out.extend(layout.shapes)
    out.extend(layout.edges)
    out.append("}")
    return "\n".join(out) + "\n"
