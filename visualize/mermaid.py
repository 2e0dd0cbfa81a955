"""Mermaid text from the diagram IR: `flowchart LR` for the flow view, `sequenceDiagram` for the sequence view.

Output is deterministic: the same IR gives the same bytes. Labels are escaped with Mermaid's
entity codes (`#35;`, `#59;`, `#quot;`, ...) so no name or condition can break the diagram.
"""

from __future__ import annotations

import re

from procflow.visualize.ir import (
    BlockEnd,
    BlockSection,
    BlockStart,
    FlowCluster,
    FlowDiagram,
    FlowNode,
    Message,
    Note,
    SequenceDiagram,
    attached_lines,
)

# ---------------------------------------------------------------- sequence

_SEQUENCE_ESCAPES = str.maketrans({"#": "#35;", ";": "#59;", "\n": " ", "\r": " ", "%": "#37;"})
_ARROWS = {
    "command": "->>",
    "reply": "-->>",
    "failure": "--x",
    "event": "-->>",
    "undo": "->>",
    "undo_reply": "-->>",
}
_BLOCK_COLOURS = {"call": "rgb(236, 242, 250)", "compensation": "rgb(253, 237, 220)"}


def _sequence_text(text: str) -> str:
    return text.translate(_SEQUENCE_ESCAPES).strip()


def sequence(diagram: SequenceDiagram) -> str:
    """A `sequenceDiagram`: participants, then messages, notes and blocks, indented by depth."""
    lines = ["sequenceDiagram"]
    for lifeline in diagram.lifelines:
        lines.append(f"participant {lifeline.alias} as {_sequence_text(lifeline.name)}")
    open_blocks: list[str] = []
    for item in diagram.items:
        indent = "  " * len(open_blocks)
        if isinstance(item, Message):
            arrow = _ARROWS.get(item.kind, "->>")
            lines.append(f"{indent}{item.source}{arrow}{item.target}: {_sequence_text(item.label)}")
        elif isinstance(item, Note):
            over = item.over if len(item.over) <= 2 else (item.over[0], item.over[-1])
            lines.append(f"{indent}Note over {','.join(over)}: {_sequence_text(item.text)}")
        elif isinstance(item, BlockStart):
            if item.kind in _BLOCK_COLOURS:
                lines.append(f"{indent}rect {_BLOCK_COLOURS[item.kind]}")
                prefix = "compensate: " if item.kind == "compensation" else ""
                lines.append(f"{indent}  Note over {diagram.lifelines[0].alias}: {prefix}{_sequence_text(item.label)}")
            else:
                lines.append(f"{indent}{item.kind} {_sequence_text(item.label)}".rstrip())
            open_blocks.append(item.kind)
        elif isinstance(item, BlockSection):
            kind = open_blocks[-1] if open_blocks else "alt"
            word = "and" if kind == "par" else "else"
            label = "" if item.label == "else" else _sequence_text(item.label)
            lines.append(f"{indent[:-2]}{word} {label}".rstrip())
        elif isinstance(item, BlockEnd):
            if open_blocks:
                open_blocks.pop()
            lines.append(f"{'  ' * len(open_blocks)}end")
    lines.extend("  " * (len(open_blocks) - i - 1) + "end" for i in range(len(open_blocks)))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- flow

_FLOW_ESCAPES = str.maketrans(
    {"#": "#35;", ";": "#59;", '"': "#quot;", "<": "#lt;", ">": "#gt;", "\n": " ", "\r": " ", "%": "#37;"}
)

_CLASS_DEFS = (
    ("step", "fill:#ffffff,stroke:#34495e,stroke-width:1.5px,color:#1b2631"),
    ("call", "fill:#ffffff,stroke:#34495e,stroke-width:3px,color:#1b2631"),
    ("event", "fill:#ffffff,stroke:#5d6d7e,stroke-width:1.5px,color:#1b2631"),
    ("gateway", "fill:#fef9e7,stroke:#b7950b,stroke-width:1.5px,color:#7d6608"),
    ("start", "fill:#eafaf1,stroke:#1e8449,stroke-width:1.5px,color:#145a32"),
    ("end", "fill:#ffffff,stroke:#1b2631,stroke-width:4px,color:#1b2631"),
    ("fail", "fill:#fdedec,stroke:#c0392b,stroke-width:4px,color:#922b21"),
    ("undo", "fill:#fef5e7,stroke:#af601a,stroke-width:1.5px,stroke-dasharray:5 4,color:#784212"),
    ("legend", "fill:#fbfcfc,stroke:#aab7b8,stroke-width:1px,color:#1b2631,text-align:left"),
    ("completed", "fill:#d5f5e3,stroke:#1e8449,stroke-width:2.5px"),
    ("current", "fill:#d6eaf8,stroke:#1f618d,stroke-width:4px"),
    ("failed", "fill:#f5b7b1,stroke:#c0392b,stroke-width:4px"),
    ("compensated", "fill:#fad7a0,stroke:#ca6f1e,stroke-width:2.5px"),
)

_CLASS_OF_KIND = {
    "start": "start",
    "end": "end",
    "fail": "fail",
    "step": "step",
    "call": "call",
    "event": "event",
    "timer": "event",
    "catch": "event",
    "undo": "undo",
}


def _class_name(name: str) -> str:
    """`pfStep`, ...: Mermaid keywords (`call`, `end`, `class`) cannot name a class."""
    return "pf" + name.capitalize()


def _flow_text(text: str) -> str:
    return text.translate(_FLOW_ESCAPES).strip()


def _ids(nodes: tuple[FlowNode, ...]) -> dict[str, str]:
    """Mermaid-safe ids: `n_` then the node id with every other character as `_`, made unique."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for node in nodes:
        base = "n_" + re.sub(r"[^A-Za-z0-9_]", "_", node.id)
        candidate, count = base, 1
        while candidate in used:
            count += 1
            candidate = f"{base}_{count}"
        used.add(candidate)
        out[node.id] = candidate
    return out


def _node_line(node: FlowNode, node_id: str) -> str:
    title = _flow_text(node.title)
    details = [_flow_text(line) for line in node.lines]
    details += [_flow_text(line) for item in node.attached for line in attached_lines(item)]  # swimlanes
    if node.note:
        details.append(f"<i>{_flow_text(node.note)}</i>")
    if node.kind in ("xor", "fork", "join", "race", "loop", "until"):
        return f'{node_id}{{"{node.sign}"}}'
    if node.kind == "start":
        return f'{node_id}(("{title}"))'
    if node.kind in ("end", "fail"):
        return f'{node_id}((("{title}")))'
    if node.kind in ("timer", "event", "catch"):
        text = "<br/>".join([f"{node.sign} {title}", *details])
        return f'{node_id}(("{text}"))'
    head = f"{node.sign} <b>{title}</b>" if node.kind == "step" and node.sign else f"<b>{title}</b>"  # a human task's marker
    text = "<br/>".join([head if node.kind != "undo" else title, *details])
    if node.kind in ("call", "collapsed"):  # a sub-process: Mermaid's subroutine shape
        return f'{node_id}[["{text}"]]'
    return f'{node_id}("{text}")'


def flow(diagram: FlowDiagram, rankdir: str = "LR") -> str:
    """A `flowchart LR` (or `TB`, the direction the DOT drawing chose): shapes by node kind,
    subgraphs for clusters, classes for the overlay. Mermaid lays out and folds nothing itself."""
    ids = _ids(diagram.nodes)
    lines = [f"flowchart {rankdir}"]
    lines.append(f"%% {_flow_text(diagram.title)}")
    children: dict[str | None, list[FlowCluster]] = {}
    for group in diagram.clusters:
        children.setdefault(group.parent, []).append(group)
    members: dict[str | None, list[FlowNode]] = {}
    for node in diagram.nodes:
        members.setdefault(node.cluster, []).append(node)
    # Print the cluster tree without recursion: (cluster or None for the top, depth, entering?).
    work: list[tuple[FlowCluster | None, int, bool]] = [(None, 0, True)]
    while work:
        cluster, depth, entering = work.pop()
        indent = "  " * (depth + 1)
        key = cluster.id if cluster else None
        if not entering:
            lines.append(f"{'  ' * depth}end")
            continue
        if cluster is not None:
            lines.append(f'{"  " * depth}subgraph {_cluster_id(cluster)}["{_flow_text(cluster.label)}"]')
            work.append((cluster, depth, False))
        for node in members.get(key, []):
            lines.append(indent + _node_line(node, ids[node.id]))
        for child in reversed(children.get(key, [])):
            work.append((child, depth + 1, True))
    if diagram.legend is not None:
        legend = diagram.legend
        text = "<br/>".join([f"<b>{_flow_text(legend.heading)}</b>", *(_flow_text(line) for line in legend.lines)])
        lines.append(f'  legend["{text}"]')
    taken: list[int] = []
    dashed: list[int] = []
    for index, edge in enumerate(diagram.edges):
        source, target = ids[edge.source], ids[edge.target]
        arrow = "-.->" if edge.kind == "compensation" else "-->"
        label = f'|"{_flow_text(edge.label)}"|' if edge.label else ""
        lines.append(f"  {source} {arrow}{label} {target}")
        if edge.taken:
            taken.append(index)
        if edge.kind in ("failure", "timeout"):
            dashed.append(index)
    for name, style in _CLASS_DEFS:
        lines.append(f"  classDef {_class_name(name)} {style}")
    groups: dict[str, list[str]] = {}
    for node in diagram.nodes:
        base = _CLASS_OF_KIND.get(node.kind, "gateway")
        groups.setdefault(base, []).append(ids[node.id])
        if node.state:
            groups.setdefault(node.state, []).append(ids[node.id])
    if diagram.legend is not None:
        groups.setdefault("legend", []).append("legend")
    for name, _ in _CLASS_DEFS:
        if name in groups:
            lines.append(f"  class {','.join(groups[name])} {_class_name(name)}")
    if dashed:
        lines.append(f"  linkStyle {','.join(map(str, dashed))} stroke:#c0392b,color:#922b21")
    if taken:
        lines.append(f"  linkStyle {','.join(map(str, taken))} stroke:#1e8449,stroke-width:3px")
    return "\n".join(lines) + "\n"


def _cluster_id(cluster: FlowCluster) -> str:
    return "c_" + re.sub(r"[^A-Za-z0-9_]", "_", cluster.id)
