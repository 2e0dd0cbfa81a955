"""`procflow lsp` end to end (issue 19, must-show 2): a real `procflow lsp` process driven by
pytest-lsp's client over standard input and output, as an editor drives it."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

from procflow.dsl.formatter import format_text

ROOT = Path(__file__).resolve().parent.parent
ORDER = ROOT / "processes" / "order_fulfillment.proc"


@pytest_lsp.fixture(config=ClientServerConfig(server_command=[sys.executable, "-m", "procflow", "lsp"]))
async def client(lsp_client: LanguageClient) -> AsyncIterator[None]:
    await lsp_client.initialize_session(types.InitializeParams(capabilities=types.ClientCapabilities(), root_uri=ROOT.as_uri()))
    yield
    await lsp_client.shutdown_session()


async def _open(client: LanguageClient, path: Path, text: str) -> str:
    uri = path.as_uri()
    client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, "procflow", 1, text)))
    await client.wait_for_notification(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    return uri


def _at(text: str, needle: str, offset: int = 0) -> types.Position:
    """The protocol position of the first `needle` in `text` (plus `offset` characters)."""
    index = text.index(needle) + offset
    line = text.count("\n", 0, index)
    return types.Position(line, index - (text.rfind("\n", 0, index) + 1))


MISTAKE = """\
process order {
  correlate by input.orderId
  participant payment "Payment"
  step authorize {
    send payment.authorize { orderId: input.orderId }
    await payment_authorized within 1h
    compensate payment.void { id: auth.id }
  }
}
"""


@pytest.mark.asyncio
async def test_a_mistake_is_reported_as_you_type_with_its_code_and_range(client: LanguageClient, tmp_path: Path) -> None:
    uri = await _open(client, tmp_path / "order.proc", MISTAKE)
    errors = [d for d in client.diagnostics[uri] if d.severity == types.DiagnosticSeverity.Error]
    assert [d.code for d in errors] == ["E113"]
    assert errors[0].range == types.Range(_at(MISTAKE, "auth.id"), _at(MISTAKE, "auth.id", len("auth")))
    assert errors[0].source == "procflow" and "`auth`" in errors[0].message

    # The mistake fixed: the next change clears the error.
    fixed = MISTAKE.replace("within 1h", "as auth within 1h")
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            types.VersionedTextDocumentIdentifier(2, uri), [types.TextDocumentContentChangeWholeDocument(fixed)]
        )
    )
    await client.wait_for_notification(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    assert [d.code for d in client.diagnostics[uri] if d.severity == types.DiagnosticSeverity.Error] == []

    # A syntax error is a diagnostic too, at the word that is wrong.
    broken = fixed.replace("await payment_authorized", "awiat payment_authorized")
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            types.VersionedTextDocumentIdentifier(3, uri), [types.TextDocumentContentChangeWholeDocument(broken)]
        )
    )
    await client.wait_for_notification(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    (syntax,) = client.diagnostics[uri]
    assert syntax.code == "E003"
    assert syntax.range.start == _at(broken, "awiat")

    # Closed, the file's findings leave the editor's list.
    client.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(uri)))
    await client.wait_for_notification(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    assert list(client.diagnostics[uri]) == []


@pytest.mark.asyncio
async def test_go_to_definition_of_a_step_and_find_its_references(client: LanguageClient) -> None:
    text = ORDER.read_text(encoding="utf-8").replace(
        "    send shipping.create { orderId: input.orderId }",
        '    send shipping.create { orderId: input.orderId, paid: steps.authorize_payment.reply == "payment_authorized" }',
    )
    uri = await _open(client, ORDER, text)
    use = _at(text, "steps.authorize_payment", len("steps.") + 3)
    found = await client.text_document_definition_async(types.DefinitionParams(types.TextDocumentIdentifier(uri), use))
    assert isinstance(found, list)
    assert [(place.uri, place.range.start) for place in found] == [(uri, _at(text, "step authorize_payment", len("step ")))]

    participant = _at(text, "send payment.authorize", len("send "))
    refs = await client.text_document_references_async(
        types.ReferenceParams(
            text_document=types.TextDocumentIdentifier(uri), position=participant, context=types.ReferenceContext(include_declaration=True)
        )
    )
    assert refs is not None
    lines = sorted(place.range.start.line for place in refs)
    # Declared once, used by one send and one compensation, and by the scenarios' `when payment.…` rules.
    assert lines[0] == _at(text, "participant payment").line
    assert _at(text, "send payment.authorize").line in lines and _at(text, "compensate payment.void").line in lines
    assert _at(text, "when payment.authorize").line in lines


@pytest.mark.asyncio
async def test_hover_shows_a_participants_contract_and_a_steps_command_and_compensation(client: LanguageClient, tmp_path: Path) -> None:
    text = (ROOT / "processes" / "refund.proc").read_text(encoding="utf-8")
    uri = await _open(client, tmp_path / "refund.proc", text)
    hover = await client.text_document_hover_async(
        types.HoverParams(types.TextDocumentIdentifier(uri), _at(text, "send orders.validate_refund", len("send ") + 1))
    )
    assert hover is not None and isinstance(hover.contents, types.MarkupContent)
    assert 'participant orders "Order Service" {' in hover.contents.value
    assert "command validate_refund { refundId: string, orderId: string, reason: string, amount: number }" in hover.contents.value
    assert "reply refund_approved { refundableAmount: number, requiresReturn: boolean }" in hover.contents.value

    hover = await client.text_document_hover_async(
        types.HoverParams(types.TextDocumentIdentifier(uri), _at(text, "step validate_request", len("step ")))
    )
    assert hover is not None and isinstance(hover.contents, types.MarkupContent)
    assert "send orders.validate_refund {" in hover.contents.value
    assert "compensate orders.cancel_refund {" in hover.contents.value


@pytest.mark.asyncio
async def test_formatting_gives_the_text_of_procflow_fmt(client: LanguageClient, tmp_path: Path) -> None:
    text = 'process p {\n  participant s "S"   # the shop\n  step a { send s.go   await done }\n}\n'
    uri = await _open(client, tmp_path / "p.proc", text)
    edits = await client.text_document_formatting_async(
        types.DocumentFormattingParams(text_document=types.TextDocumentIdentifier(uri), options=types.FormattingOptions(tab_size=2, insert_spaces=True))
    )
    assert edits is not None and len(edits) == 1
    assert edits[0].range.start == types.Position(0, 0)
    assert edits[0].new_text == format_text(text)
    assert edits[0].new_text == 'process p {\n  participant s "S"  # the shop\n\n  step a {\n    send s.go\n    await done\n  }\n}\n'


@pytest.mark.asyncio
async def test_completion_and_the_outline(client: LanguageClient, tmp_path: Path) -> None:
    text = ORDER.read_text(encoding="utf-8")
    uri = await _open(client, tmp_path / "order.proc", text)
    after_dot = _at(text, "send payment.authorize", len("send payment."))
    found = await client.text_document_completion_async(types.CompletionParams(types.TextDocumentIdentifier(uri), after_dot))
    assert isinstance(found, types.CompletionList)
    assert [item.label for item in found.items] == ["authorize", "void"]

    anywhere = _at(text, "  step create_shipment")
    found = await client.text_document_completion_async(types.CompletionParams(types.TextDocumentIdentifier(uri), anywhere))
    assert isinstance(found, types.CompletionList)
    labels = {item.label for item in found.items}
    assert {"step", "compensate", "parallel", "payment", "reserve_inventory", "inventory_reserved"} <= labels

    outline = await client.text_document_document_symbol_async(types.DocumentSymbolParams(types.TextDocumentIdentifier(uri)))
    assert outline is not None
    process = outline[0]
    assert isinstance(process, types.DocumentSymbol) and process.name == "order-fulfillment"
    assert [child.name for child in process.children or []] == [
        "inventory", "payment", "shipping", "reserve_inventory", "authorize_payment", "create_shipment"
    ]
    assert "happy_path" in [symbol.name for symbol in outline[1:] if isinstance(symbol, types.DocumentSymbol)]
