"""The face of the package: text diagrams, and the one place that runs Graphviz's `dot`."""

from __future__ import annotations

import difflib
import json
import math
import shutil
import subprocess
from collections.abc import Mapping
from typing import Any

import graphviz

from procflow.dsl import model as m
from procflow.dsl.paths import ProcessPath, enumerate_paths
from procflow.errors import DiagramError, GraphvizMissing
from procflow.visualize import dot, mermaid
from procflow.visualize.flow import Overlay, flow_diagram, instance_overlay, path_overlay
from procflow.visualize.ir import FlowDiagram, SequenceDiagram
from procflow.visualize.sequence import sequence_diagram

VIEWS = ("flow", "sequence")
TEXT_FORMATS = ("dot", "mermaid")
IMAGE_FORMATS = ("svg", "png")

def _path(definition: m.ProcessDefinition, name: str) -> ProcessPath:
    paths = enumerate_paths(definition)
    for path in paths:
        if path.name == name:
            return path
    names = [p.name for p in paths]
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"; did you mean `{close[0]}`?" if close else f"; it has: {', '.join(names[:8])}" + (
        ", ..." if len(names) > 8 else "")
    raise DiagramError(f"`{definition.name}` has no path `{name}` (see `procflow paths`){hint}")


def _check(view: str, fmt: str, formats: tuple[str, ...]) -> None:
    if view not in VIEWS:
        raise DiagramError(f"unknown view `{view}`: use one of {', '.join(VIEWS)}")
    if fmt not in formats:
        raise DiagramError(f"unknown format `{fmt}` here: use one of {', '.join(formats)}")


def extract(
    definition: m.ProcessDefinition,
    view: str,
    *,
    path_name: str | None = None,
    instance: Mapping[str, Any] | None = None,
    swimlanes: bool = False,
) -> FlowDiagram | SequenceDiagram:
    """The diagram IR of a view, before any printer sees it."""
    path = _path(definition, path_name) if path_name is not None else None
    if view == "flow":
        overlay: Overlay | None = None
        if instance is not None:
            overlay = instance_overlay(definition, instance)
        elif path is not None:
            overlay = path_overlay(definition, path)
        return flow_diagram(definition, swimlanes=swimlanes, overlay=overlay)
    if view == "sequence":
        return sequence_diagram(definition, path=path, instance=instance)
    raise DiagramError(f"unknown view `{view}`: use one of {', '.join(VIEWS)}")


def render_text(
    definition: m.ProcessDefinition,
    view: str,
    fmt: str,
    *,
    path_name: str | None = None,
    instance: dict[str, Any] | None = None,
    swimlanes: bool = False,
) -> str:
    """The `flow` or `sequence` view as `dot` or `mermaid` text; the same input gives the same bytes.

    `path_name` picks one path of `procflow paths` (the sequence view shows it, the flow view
    marks it); `instance` is a state record (as `procflow run --json` prints under `state`)
    whose progress the flow view marks and whose history the sequence view tells;
    `swimlanes` groups the flow view's steps by participant.
    """
    _check(view, fmt, TEXT_FORMATS)
    diagram = extract(definition, view, path_name=path_name, instance=instance, swimlanes=swimlanes)
    if isinstance(diagram, FlowDiagram):
        return dot.flow(diagram) if fmt == "dot" else mermaid.flow(diagram)
    return dot.sequence(diagram) if fmt == "dot" else mermaid.sequence(diagram)


def mermaid_flow(definition: m.ProcessDefinition) -> str:
    """The flow view as a Mermaid flowchart (`procflow export --format mermaid-flow`)."""
    return render_text(definition, "flow", "mermaid")


def dot_available() -> bool:
    """True when Graphviz's `dot` program is on the PATH."""
    return shutil.which("dot") is not None


PNG_DPI = 96
MAX_PNG_PIXELS = 20_000_000
"""A PNG larger than this at 96 dpi is drawn at a lower dpi: rasterising a very wide process
costs seconds per ten million pixels, and the SVG keeps every detail anyway."""


def _png_dpi(source: bytes) -> int:
    """96 dpi, or less when the drawing would exceed MAX_PNG_PIXELS (read from the laid-out size)."""
    plain = run_dot(source, "plain").split(b"\n", 1)[0].split()
    width, height = float(plain[2]), float(plain[3])  # `graph scale width height`, in inches
    pixels = width * height * PNG_DPI * PNG_DPI
    if pixels <= MAX_PNG_PIXELS:
        return PNG_DPI
    return max(36, int(PNG_DPI * math.sqrt(MAX_PNG_PIXELS / pixels)))


def run_dot(source: bytes, fmt: str) -> bytes:
    """Run Graphviz's `dot` on DOT text and return what it prints in `fmt`: the only place
    procflow starts it (images, the PNG's size, and the layout the BPMN export reads)."""
    if not dot_available():
        raise GraphvizMissing()
    try:
        return bytes(graphviz.pipe("dot", fmt, source, quiet=True))
    except graphviz.ExecutableNotFound:
        raise GraphvizMissing() from None
    except subprocess.CalledProcessError as error:
        detail = (error.stderr or b"").decode("utf-8", "replace").strip().splitlines()
        raise DiagramError(f"Graphviz's dot could not draw the diagram: {detail[-1] if detail else error}") from None


def dot_to_image(source: str, fmt: str) -> bytes:
    """DOT text drawn by Graphviz as `svg` or `png` bytes."""
    if fmt not in IMAGE_FORMATS:
        raise DiagramError(f"unknown image format `{fmt}`: use one of {', '.join(IMAGE_FORMATS)}")
    data = source.encode("utf-8")
    if fmt == "png":
        head, _, rest = data.partition(b"\n")
        data = head + f"\n  graph [dpi={_png_dpi(data)}]\n".encode("ascii") + rest
    return run_dot(data, fmt)


def dot_layout(source: str) -> dict[str, Any]:
    """Where Graphviz puts every node and edge of DOT text: its `json` output, parsed."""
    layout: dict[str, Any] = json.loads(run_dot(source.encode("utf-8"), "json"))
    return layout


def render_image(
    definition: m.ProcessDefinition,
    view: str,
    fmt: str,
    *,
    path_name: str | None = None,
    instance: dict[str, Any] | None = None,
    swimlanes: bool = False,
) -> bytes:
    """The view drawn by Graphviz as `svg` or `png` bytes; `GraphvizMissing` when `dot` is not installed."""
    _check(view, fmt, IMAGE_FORMATS)
    source = render_text(definition, view, "dot", path_name=path_name, instance=instance, swimlanes=swimlanes)
    return dot_to_image(source, fmt)
