"""Diagrams of processes and instances: flow and sequence views, as DOT, Mermaid, SVG and PNG.

Extract an IR from a definition (and optionally a path or an instance's state), then print
it as DOT or Mermaid text; `render_image` is the one place that runs Graphviz's `dot`::

    text = render_text(definition, "sequence", "mermaid")
    svg = render_image(definition, "flow", "svg", instance=state)
"""

from procflow.errors import DiagramError, GraphvizMissing
from procflow.visualize.render import (
    dot_available,
    extract,
    render_image,
    render_text,
)

__all__ = ["DiagramError", "GraphvizMissing", "dot_available", "extract", "render_image", "render_text"]
