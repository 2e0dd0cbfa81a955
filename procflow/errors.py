"""The one exception tree of procflow: every error raised on purpose, in one place.

::

    ProcflowError
    ├── SourceError            a .proc text cannot be read, parsed or compiled (carries diagnostics)
    ├── ExpressionError        an expression failed while it was evaluated (type mismatch, limits)
    ├── InputError             an instance's input or id is refused (contract, JSON, limits)
    ├── MessageRefused         a reply or event was refused; the instance state is untouched
    ├── InstantError           an instant outside the range procflow represents
    ├── FileRefused            a file may not be read (outside the folder, not regular, too big)
    ├── ScenarioError          a scenario cannot be run as written
    ├── DiagramError           a diagram cannot be made as asked
    │   └── GraphvizMissing    Graphviz's `dot` is not installed
    ├── TransportError         the message broker cannot be reached, or refused a message
    └── StoreError             the durable store cannot be used (corrupt, foreign, newer schema)
        ├── ConcurrencyError   another writer changed the instance first
        ├── DuplicateMessage   the inbox already holds this message id
        └── DamagedRecord      one stored record cannot be read back; the others can

Every exception carries plain data only, so it pickles and crosses process boundaries. Every
module of the package imports its errors from here; nothing else escapes the public API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from procflow.dsl.diagnostics import Diagnostic

INSTALL_HINT = (
    "Graphviz's `dot` program is not installed, so svg/png images cannot be drawn: install it "
    "(Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz); "
    "--format dot and --format mermaid work without it"
)


class ProcflowError(Exception):
    """Root of every error procflow raises on purpose."""


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
    """What a new instance is started with is refused: its input breaks the process's input
    contract or is not strict JSON within the limits, or its workflow id is not a valid id."""


class MessageRefused(ProcflowError):
    """A reply or event was refused with a reason; the instance state is unchanged."""

    def __init__(self, reason: str, workflow_id: str | None = None, step: str | None = None) -> None:
        self.reason = reason
        self.workflow_id = workflow_id
        self.step = step
        super().__init__(reason)

    def __reduce__(self) -> tuple[object, ...]:
        return (MessageRefused, (self.reason, self.workflow_id, self.step))


class InstantError(ProcflowError, ValueError):
    """An instant is outside what procflow represents (the `instant_year_min` and
    `instant_year_max` limits), so no due time computed from it could be written down. Also a
    ValueError, as a malformed instant is: code that reads instants catches both at once."""


class FileRefused(ProcflowError):
    """A file may not be read: it lies outside the process's folder, is not a regular file
    (a device, a pipe, a folder), or is larger than its limit."""


class ScenarioError(ProcflowError):
    """A scenario cannot be run as written."""


class StoreError(ProcflowError):
    """The durable store cannot be used as asked; nothing in it was changed."""


class StoreUnavailable(StoreError):
    """The store cannot be reached for now: a lost connection, a server that does not answer, a
    file another process keeps locked. Nothing was written; the same call can succeed later,
    and a worker waits and tries again (`procflow.interpreter.orchestrator.worker`)."""


class ConcurrencyError(StoreError):
    """Another writer changed the instance first; reload and try again."""


class DuplicateMessage(StoreError):
    """The inbox already holds this message id: the message was applied before."""


class DamagedRecord(StoreError):
    """One record of the store (an instance's state or history) cannot be read back: it is not
    strict JSON or not a record procflow wrote. The rest of the store is still readable."""


class TransportError(ProcflowError):
    """The message broker cannot be reached, or did not take a message (no confirm, nowhere to
    route it). What was being sent stays in the outbox; a worker reconnects and sends it again."""


class DiagramError(ProcflowError):
    """A diagram cannot be made as asked: an unknown view, format or path, or `dot` failed."""


class GraphvizMissing(DiagramError):
    """Graphviz's `dot` program is not installed; the message says how to install it."""

    def __init__(self, message: str = INSTALL_HINT) -> None:
        super().__init__(message)
