"""Text -> syntax tree: `parse` and `parse_scenarios`, the one way a .proc text is read.

The text is checked against the limits on its size and nesting (`source.py`), then read by
Lark's LALR parser, which builds the syntax nodes as it reduces each rule
(`transformer.py`; no Lark tree is built, then walked). A mistake comes out as a
`SourceError` holding one `Diagnostic` that points at the text and says in words what was
expected there (`syntax_errors.py`). Callers never see a Lark type: Lark's syntax errors
become diagnostics here, and what the transformer refuses (`build.BadLiteral`) too. (Lark
wraps a transformer's exception in `VisitError` only when it walks a built tree, which this
parser never does.)
"""

from __future__ import annotations

from typing import Any

from lark.exceptions import UnexpectedInput

from procflow.dsl import source as src
from procflow.dsl import syntax as sx
from procflow.dsl.build import BadLiteral
from procflow.dsl.diagnostics import Diagnostic, Span
from procflow.dsl.grammar import reading_parser
from procflow.dsl.located import Located
from procflow.dsl.syntax_errors import syntax_diagnostic
from procflow.errors import SourceError

__all__ = ["parse", "parse_scenarios"]


def parse(text: str, path: str = "<text>", scenarios: bool = True) -> sx.SourceFile:
    """Parse process text into its syntax tree, or raise `SourceError` with one diagnostic.

    With `scenarios=False` the scenario blocks after the process are not parsed now: the
    returned file keeps their text (`pending_scenarios`) for `parse_scenarios`, so a service
    that only runs the process does not pay for its tests."""
    src.check_size(text, path)
    if not text.strip():
        raise SourceError(
            [Diagnostic("E004", "error", "the file is empty; expected `process`", Span(1, 1, 1, 2), "start with `process name { ... }`", path)],
            text,
        )
    src.check_nesting(text, path)
    if not scenarios:
        cut = src.scenarios_start(text)
        if cut is not None:
            process, _ = _read(text[:cut], path, "start", text)
            return sx.SourceFile(process, [], path, text, pending_scenarios=src.blank_before(text, cut))
    process, found = _read(text, path, "start", text)
    return sx.SourceFile(process, found, path, text)


def parse_scenarios(source: sx.SourceFile) -> list[sx.Scenario]:
    """The scenarios of a file parsed with `scenarios=False` (its own, if it has none pending)."""
    if source.pending_scenarios is None:
        return source.scenarios
    found: list[sx.Scenario] = _read(source.pending_scenarios, source.path, "scenarios", source.text)
    return found


def _read(text: str, path: str, start: str, shown: str) -> Any:
    """What the grammar rule `start` builds from `text`; a mistake becomes a `SourceError`
    over `shown` (the file's own text, of which `text` may be a part)."""
    try:
        built: object = reading_parser().parse(text, start=start)
    except UnexpectedInput as error:
        raise SourceError([syntax_diagnostic(error, text, path, start)], shown) from None
    except BadLiteral as refused:
        raise SourceError([refused.diagnostic(path)], shown) from None
    assert isinstance(built, Located)  # what the transformer's methods return, never a Lark tree
    return built.value
