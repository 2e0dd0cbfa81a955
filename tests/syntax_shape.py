"""What two readings of a process have to agree on, where they stand in the text aside: the
syntax tree without its spans, and the meaning of a compiled definition (its graph). Shared by
the parser's tests and its property tests."""

from __future__ import annotations

import dataclasses
from typing import Any

from procflow.dsl import syntax as sx
from procflow.dsl.diagnostics import Span
from procflow.dsl.model import ProcessDefinition


def without_spans(value: Any) -> Any:
    """A syntax tree as plain tuples, every span left out (and a file's own text and path)."""
    if isinstance(value, Span):
        return None
    if isinstance(value, sx.SourceFile):
        return without_spans((value.process, value.scenarios))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__, *(without_spans(getattr(value, f.name)) for f in dataclasses.fields(value)))
    if isinstance(value, list | tuple):
        return tuple(without_spans(item) for item in value)
    if isinstance(value, dict):
        return tuple(sorted((key, without_spans(item)) for key, item in value.items()))
    return value


def definition_shape(definition: ProcessDefinition) -> tuple[Any, ...]:
    """What a definition means, where it stands in the text aside: its header and its graph."""
    graph = definition.graph
    return (
        definition.name,
        definition.version,
        definition.title,
        definition.doc,
        definition.reply_to,
        definition.deadline_seconds,
        definition.input_schema,
        dict(definition.events),
        dict(definition.limits),
        sorted(definition.participants),
        definition.start,
        definition.order,
        sorted((node, data["kind"]) for node, data in graph.nodes(data=True)),
        sorted((u, v, key, data["kind"], data["label"]) for u, v, key, data in graph.edges(keys=True, data=True)),
    )
