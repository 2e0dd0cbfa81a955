"""The index the language server navigates by (`dsl/symbols.py`): every declaration and use
of participants, commands, replies and events, steps and bound names, with its span."""

from __future__ import annotations

from procflow.dsl.diagnostics import Span
from procflow.dsl.parser import parse
from procflow.dsl.symbols import index_source

TEXT = """\
process p {
  participant bank "Bank" {
    command check { id: string }
    reply checked { score: number }
  }
  event documents { count: integer }
  step ask {
    send bank.check { id: input.id }
    await checked as result within 1h
    compensate bank.forget { id: result.id }
  }
  race docs {
    on documents as uploaded { step read { wait until uploaded.at } }
    on timer 1d { fail "late" }
  }
  if steps.ask.reply == "checked" and result.score > 3 { end }
}
scenario s {
  when bank.check reply checked { score: 4 }
  deliver documents { count: 1 } after 1h
  no event documents
}
"""


def _where(kind: str, name: str) -> list[tuple[int, int, bool]]:
    index = index_source(parse(TEXT))
    return [(o.span.line, o.span.column, o.declares) for o in index.references(kind, name)]


def test_each_kind_of_symbol_is_declared_and_used_where_the_text_says() -> None:
    assert _where("participant", "bank") == [(2, 15, True), (8, 10, False), (10, 16, False), (19, 8, False)]
    assert _where("command", "bank.check") == [(3, 13, True), (8, 15, False), (19, 13, False)]
    assert _where("command", "bank.forget") == [(10, 21, False)]  # used, declared nowhere
    assert _where("message", "checked") == [(4, 11, True), (9, 11, False), (19, 25, False)]
    assert _where("message", "documents") == [(6, 9, True), (13, 8, False), (20, 11, False), (21, 12, False)]
    assert _where("step", "ask") == [(7, 8, True), (16, 12, False)]
    assert _where("binding", "result") == [(9, 22, True), (10, 34, False), (16, 39, False)]
    assert _where("binding", "uploaded") == [(13, 21, True), (13, 55, False)]
    assert _where("binding", "input") == []  # `input` is not a bound name


def test_a_position_finds_the_name_under_it_and_hover_text_comes_from_the_declaration() -> None:
    index = index_source(parse(TEXT))
    found = index.at(8, 12)  # inside `bank` of `send bank.check`
    assert found is not None and (found.kind, found.name, found.span) == ("participant", "bank", Span(8, 10, 8, 14))
    (declared,) = index.declarations("participant", "bank")
    assert declared.detail == 'participant bank "Bank" {\n  command check { id: string }\n  reply checked { score: number }\n}'
    (step,) = index.declarations("step", "ask")
    assert "send bank.check { id: input.id }" in step.detail and "compensate bank.forget { id: result.id }" in step.detail
    (bound,) = index.declarations("binding", "result")
    assert bound.detail == "result: bound by `await checked` in step ask"
    assert index.at(1, 1) is None
    assert index.names("message") == ["checked", "documents"]
