"""Where a finding about a process text is (`Span`), what it says (`Diagnostic`), and the one
renderer for every diagnostic: `FILE:LINE:COL: error[CODE]: message`, the line, a caret."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple


class Span(NamedTuple):
    """A region of source text: 1-based line and column, end exclusive (an immutable value
    that compares and sorts by position)."""

    line: int
    column: int
    end_line: int
    end_column: int

    def to_json(self) -> dict[str, int]:
        """The span as a JSON object."""
        return {
            "line": self.line,
            "column": self.column,
            "endLine": self.end_line,
            "endColumn": self.end_column,
        }


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One finding about a process text: a stable code, a severity, a message, where, and a hint."""

    code: str
    severity: str  # "error" or "warning"
    message: str
    span: Span
    hint: str | None = None
    file: str = "<text>"

    @property
    def is_error(self) -> bool:
        """True for an error, False for a warning."""
        return self.severity == "error"

    def to_json(self) -> dict[str, object]:
        """The diagnostic as a JSON object (the `--format json` form)."""
        out: dict[str, object] = {
            "file": self.file,
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            **self.span.to_json(),
        }
        if self.hint:
            out["hint"] = self.hint
        return out


def render(diagnostic: Diagnostic, source: str | None) -> str:
    """The diagnostic as text: a header line, the source line, a caret under the span, a hint."""
    span = diagnostic.span
    head = f"{diagnostic.file}:{span.line}:{span.column}: {diagnostic.severity}[{diagnostic.code}]: {diagnostic.message}"
    lines = [head]
    if source is not None:
        source_lines = source.split("\n")
        if 1 <= span.line <= len(source_lines):
            text = source_lines[span.line - 1].replace("\t", " ")
            if len(text) > 200:
                text = text[:200] + "…"
            width = span.end_column - span.column if span.end_line == span.line else len(text) - span.column + 1
            width = max(1, min(width, max(1, len(text) - span.column + 1)))
            gutter = f"{span.line:>4} | "
            lines.append(gutter + text)
            lines.append(" " * (len(gutter) + span.column - 1) + "^" * width)
    if diagnostic.hint:
        lines.append(f"     = hint: {diagnostic.hint}")
    return "\n".join(lines)


def render_all(diagnostics: Iterable[Diagnostic], sources: dict[str, str]) -> str:
    """Every diagnostic, each followed by a blank line."""
    return "".join(render(d, sources.get(d.file)) + "\n\n" for d in diagnostics)


def to_json(diagnostics: Iterable[Diagnostic]) -> str:
    """The `--format json` form: a list of diagnostic objects."""
    return json.dumps([d.to_json() for d in diagnostics], indent=2)
