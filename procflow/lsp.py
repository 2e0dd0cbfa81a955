"""`procflow lsp`: the language server for editors, on pygls.

What it answers, and from where (this module only translates between the protocol and
procflow's own answers):

- diagnostics as the text changes: the validator's (`validate.check_source`: the parser's,
  the compiler's and every rule's), with their codes, hints and spans;
- go to definition, find references, hover: `dsl/symbols.py`'s index of the file's names;
- completion: the language's keywords (`grammar.keywords`), the file's names, and after
  `participant.` that participant's commands, after `steps.` the steps;
- document symbols (the outline): the process, its participants, events and steps, and the
  scenarios;
- formatting: `procflow fmt`'s text (`dsl/formatter.py`), or nothing while the text does
  not parse.

Positions: procflow counts columns in characters, the protocol in UTF-16 units by default;
pygls's position codec converts between the two.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path
from pygls.workspace import TextDocument

from procflow import __version__
from procflow.dsl import syntax as sx
from procflow.dsl.diagnostics import Diagnostic, Span
from procflow.dsl.formatter import format_tree
from procflow.dsl.grammar import keywords
from procflow.dsl.parser import parse
from procflow.dsl.statement_walk import walk_statements
from procflow.dsl.symbols import SymbolIndex, index_source
from procflow.dsl.validate import check_source
from procflow.errors import SourceError

__all__ = ["build_server", "serve"]


@dataclass(frozen=True, slots=True)
class _Reading:
    """What the server knows of one version of a document: its tree and index, when it parses."""

    source: sx.SourceFile | None
    index: SymbolIndex


_EMPTY = SymbolIndex(())


def _read(document: TextDocument) -> _Reading:
    path = to_fs_path(document.uri) or "<text>"
    try:
        source = parse(document.source, path)
    except SourceError:
        return _Reading(None, _EMPTY)
    return _Reading(source, index_source(source))


def _range(document: TextDocument, span: Span) -> types.Range:
    codec, lines = document.position_codec, document.lines
    start = codec.position_to_client_units(lines, types.Position(span.line - 1, span.column - 1))
    end = codec.position_to_client_units(lines, types.Position(span.end_line - 1, span.end_column - 1))
    return types.Range(start, end)


def _position(document: TextDocument, position: types.Position) -> tuple[int, int]:
    """A protocol position as procflow's 1-based line and column (in characters)."""
    server = document.position_codec.position_from_client_units(document.lines, position)
    return server.line + 1, server.character + 1


def _diagnostic(document: TextDocument, found: Diagnostic) -> types.Diagnostic:
    message = f"{found.message}\nhint: {found.hint}" if found.hint else found.message
    severity = types.DiagnosticSeverity.Error if found.is_error else types.DiagnosticSeverity.Warning
    return types.Diagnostic(_range(document, found.span), message, severity, found.code, source="procflow")


def build_server() -> LanguageServer:
    """A language server with every feature registered (not started)."""
    server = LanguageServer("procflow", __version__, text_document_sync_kind=types.TextDocumentSyncKind.Full)

    def check(uri: str) -> None:
        document = server.workspace.get_text_document(uri)
        path = to_fs_path(uri) or "<text>"
        _, found = check_source(document.source, path if Path(path).is_absolute() else "<text>")
        diagnostics = [_diagnostic(document, item) for item in found]
        server.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri, diagnostics, document.version))

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(params: types.DidOpenTextDocumentParams) -> None:
        check(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(params: types.DidChangeTextDocumentParams) -> None:
        check(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(params: types.DidSaveTextDocumentParams) -> None:
        check(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(params: types.DidCloseTextDocumentParams) -> None:
        # A closed file's findings leave the editor's problem list with it.
        server.text_document_publish_diagnostics(types.PublishDiagnosticsParams(params.text_document.uri, []))

    def under_cursor(uri: str, position: types.Position) -> tuple[TextDocument, SymbolIndex, tuple[str, str] | None]:
        document = server.workspace.get_text_document(uri)
        index = _read(document).index
        found = index.at(*_position(document, position))
        return document, index, (found.kind, found.name) if found else None

    @server.feature(types.TEXT_DOCUMENT_DEFINITION)
    def definition(params: types.DefinitionParams) -> list[types.Location] | None:
        document, index, symbol = under_cursor(params.text_document.uri, params.position)
        if symbol is None:
            return None
        places = index.declarations(*symbol)
        return [types.Location(document.uri, _range(document, place.span)) for place in places] or None

    @server.feature(types.TEXT_DOCUMENT_REFERENCES)
    def references(params: types.ReferenceParams) -> list[types.Location] | None:
        document, index, symbol = under_cursor(params.text_document.uri, params.position)
        if symbol is None:
            return None
        places = index.references(*symbol, include_declarations=params.context.include_declaration)
        return [types.Location(document.uri, _range(document, place.span)) for place in places]

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    def hover(params: types.HoverParams) -> types.Hover | None:
        document, index, symbol = under_cursor(params.text_document.uri, params.position)
        if symbol is None:
            return None
        details = [place.detail for place in index.declarations(*symbol)]
        if not details:
            return None
        kind, name = symbol
        text = f"**{kind}** `{name}`\n\n" + "\n\n".join(f"```proc\n{detail}\n```" for detail in details)
        return types.Hover(types.MarkupContent(types.MarkupKind.Markdown, text))

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=["."]))
    def completion(params: types.CompletionParams) -> types.CompletionList:
        document = server.workspace.get_text_document(params.text_document.uri)
        index = _read(document).index
        line, column = _position(document, params.position)
        before = document.lines[line - 1][: column - 1] if line <= len(document.lines) else ""
        return types.CompletionList(False, _completions(index, before))

    @server.feature(types.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
    def document_symbols(params: types.DocumentSymbolParams) -> list[types.DocumentSymbol] | None:
        document = server.workspace.get_text_document(params.text_document.uri)
        source = _read(document).source
        return _outline(document, source) if source is not None else None

    @server.feature(types.TEXT_DOCUMENT_FORMATTING)
    def formatting(params: types.DocumentFormattingParams) -> list[types.TextEdit] | None:
        document = server.workspace.get_text_document(params.text_document.uri)
        source = _read(document).source
        if source is None:
            return None  # the diagnostics say why; an editor keeps the text as it is
        formatted = format_tree(source, document.source)
        if formatted == document.source:
            return []
        end = types.Position(len(document.lines), 0)
        return [types.TextEdit(types.Range(types.Position(0, 0), end), formatted)]

    return server


_NAME_KINDS = {
    "participant": types.CompletionItemKind.Module,
    "step": types.CompletionItemKind.Function,
    "message": types.CompletionItemKind.Event,
    "binding": types.CompletionItemKind.Variable,
}


def _completions(index: SymbolIndex, before: str) -> list[types.CompletionItem]:
    """What may come at the cursor, from the text of its line before it."""
    word = before.rstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
    if word.endswith("."):
        owner = word[:-1].rsplit(None, 1)[-1] if word[:-1].strip() else ""
        owner = owner.rsplit("{", 1)[-1].rsplit("(", 1)[-1]
        if owner == "steps":
            return [types.CompletionItem(name, kind=types.CompletionItemKind.Function) for name in index.names("step")]
        commands = [o.name.split(".", 1)[1] for o in index.occurrences if o.kind == "command" and o.name.startswith(owner + ".")]
        return [types.CompletionItem(name, kind=types.CompletionItemKind.Method) for name in dict.fromkeys(commands)]
    items = [types.CompletionItem(word, kind=types.CompletionItemKind.Keyword) for word in sorted(keywords())]
    for kind, item_kind in _NAME_KINDS.items():
        items += [types.CompletionItem(name, kind=item_kind, detail=kind) for name in index.names(kind, declared=kind != "message")]
    return items


def _symbol(document: TextDocument, name: sx.Name, span: Span, kind: types.SymbolKind, detail: str = "") -> types.DocumentSymbol:
    return types.DocumentSymbol(name.text, kind, _range(document, span), _range(document, name.span), detail=detail or None)


def _outline(document: TextDocument, source: sx.SourceFile) -> list[types.DocumentSymbol]:
    """The process with its participants, events and steps (nested as the blocks nest them
    would say more, but an outline reads best flat), then the scenarios."""
    process = source.process
    children = [_symbol(document, p.name, p.span, types.SymbolKind.Interface, p.display or "") for p in process.participants]
    children += [_symbol(document, e.name, e.span, types.SymbolKind.Event) for e in process.events]
    children += [
        _symbol(document, statement.name, statement.span, types.SymbolKind.Function)
        for statement, _ in walk_statements(process.body)
        if isinstance(statement, sx.Step)
    ]
    top = _symbol(document, process.name, process.span, types.SymbolKind.Module, process.title or "")
    top.children = children
    scenarios = [_symbol(document, s.name, s.span, types.SymbolKind.Method, s.description or "") for s in source.scenarios]
    return [top, *scenarios]


def serve() -> None:
    """Speak the protocol on standard input and output until the editor says exit. The
    server closes the streams it is given when it stops: it is given copies of the two file
    descriptors, so that `sys.stdout` stays open for the command line's last flush."""
    with os.fdopen(os.dup(0), "rb") as stdin, os.fdopen(os.dup(1), "wb") as stdout:
        build_server().start_io(stdin, stdout)
