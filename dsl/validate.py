"""The validator: rules that prove things about a compiled process, each with a stable code.

`validate(definition)` collects every diagnostic; the caller decides what fails (errors do,
warnings are shown). `check_file(path)` runs the whole pipeline on a file and turns parse and
compile failures into diagnostics too, so a caller never sees an exception for bad input.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from procflow.dsl import rules
from procflow.dsl.compiler import compile_source, file_loader, read_source
from procflow.dsl.diagnostics import Diagnostic, Span
from procflow.dsl.model import ProcessDefinition
from procflow.dsl.source import decode_source
from procflow.errors import SourceError

DEFAULT_LIMITS: Mapping[str, int] = {"participants": 7, "computation": 2}
"""Orchestrator-scope thresholds: most participants, most arithmetic operations per expression."""


def validate(definition: ProcessDefinition, limits: Mapping[str, int] | None = None) -> list[Diagnostic]:
    """Every finding about a compiled process, sorted by position."""
    effective = dict(DEFAULT_LIMITS)
    effective.update(definition.limits)
    if limits:
        effective.update(limits)
    found = rules.run_all(definition, effective)
    found.sort(key=lambda d: (d.file, d.span.line, d.span.column, d.code))
    return found


def check_source(text: str, path: str = "<text>", limits: Mapping[str, int] | None = None) -> tuple[ProcessDefinition | None, list[Diagnostic]]:
    """Parse, compile and validate text; every problem comes back as a diagnostic."""
    try:
        definition = compile_source(text, path, file_loader(path) if not path.startswith("<") else None, scenarios=True)
    except SourceError as error:
        return None, error.diagnostics
    return definition, validate(definition, limits)


def check_file(path: str | Path, limits: Mapping[str, int] | None = None) -> tuple[ProcessDefinition | None, list[Diagnostic], str]:
    """Read and check a file: (definition or None, diagnostics, source text)."""
    file = str(path)
    try:
        data = read_source(file)
    except OSError as error:
        reason = error.strerror or str(error)
        return None, [Diagnostic("E001", "error", f"cannot read the file: {reason}", Span(1, 1, 1, 2), None, file)], ""
    try:
        text = decode_source(data, file)
    except SourceError as error:
        return None, error.diagnostics, ""
    definition, diagnostics = check_source(text, file, limits)
    return definition, diagnostics, text
