"""The one exception tree of procflow.

::

    ProcflowError
    ├── SourceError            a .proc text cannot be read, parsed or compiled (carries diagnostics)
    ├── ExpressionError        an expression failed while it was evaluated (type mismatch, limits)
    ├── InputError             an instance's input breaks the process's input contract
    ├── MessageRefused         a reply or event was refused; the instance state is untouched
    ├── ScenarioError          a scenario cannot be run as written
    └── StoreError             the durable store cannot be used (corrupt, foreign, newer schema)

Every exception carries plain data only, so it pickles and crosses process boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


class ProcflowError(Exception):
    """Root of every error procflow raises on purpose."""


class Span(NamedTuple):
    """A region of source text: 1-based line and column, end exclusive.

    A named tuple rather than a frozen dataclass: reading a process makes one for every name
    and node (150,000 for 5,000 steps), and a tuple is built four times faster."""

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


class SourceError(ProcflowError):
    """A process text could not be turned into a definition; `diagnostics` says why and where."""

    def __init__(self, diagnostics: list[Diagnostic], source: str = "") -> None:
        self.diagnostics = list(diagnostics)
        self.source = source
        first = self.diagnostics[0] if self.diagnostics else None
        text = (
            f"{first.file}:{first.span.line}:{first.span.column}: error[{first.code}]: {first.message}"
            if first
            else "invalid process text"
        )
        super().__init__(text)

    def __reduce__(self) -> tuple[object, ...]:
        return (SourceError, (self.diagnostics, self.source))


class ExpressionError(ProcflowError):
    """An expression could not be evaluated over the data it was given."""


class InputError(ProcflowError):
    """The input of a new instance breaks the process's input contract."""


class MessageRefused(ProcflowError):
    """A reply or event was refused with a reason; the instance state is unchanged."""

    def __init__(self, reason: str, workflow_id: str | None = None, step: str | None = None) -> None:
        self.reason = reason
        self.workflow_id = workflow_id
        self.step = step
        super().__init__(reason)

    def __reduce__(self) -> tuple[object, ...]:
        return (MessageRefused, (self.reason, self.workflow_id, self.step))


class ScenarioError(ProcflowError):
    """A scenario cannot be run as written."""


class StoreError(ProcflowError):
    """The durable store cannot be used as asked; nothing in it was changed."""
