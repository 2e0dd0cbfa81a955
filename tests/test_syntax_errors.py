"""A catalogue of common mistakes: each gives its code at the exact line and column, says in
words what was expected (never a lark terminal name), and suggests a fix where one exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from procflow.dsl import grammar, syntax_errors
from procflow.dsl.diagnostics import Diagnostic, render
from procflow.dsl.validate import check_file, check_source
from procflow.limits import SOURCE_BYTES

GOOD = """process pay {
  correlate by input.orderId
  input { orderId: string, amount: number }
  participant payment "Payment"

  step charge {
    send payment.charge { orderId: input.orderId, amount: input.amount }
    await charged within 1m
    compensate payment.refund { orderId: input.orderId } awaiting refunded within 1m
  }
  if input.amount > 100 {
    end
  }
}
"""

# name: (text to replace in GOOD, replacement, code, line, column, words the message or hint must hold)
MISTAKES: dict[str, tuple[str, str, str, int, int, str]] = {
    "misspelled keyword": ("    compensate payment", "    compensat payment", "E003", 9, 5, "did you mean `compensate`?"),
    "misspelled await": ("    await charged", "    awiat charged", "E003", 8, 5, "did you mean `await`?"),
    "keyword in capitals": ("  step charge {", "  Step charge {", "E003", 6, 3, "did you mean `step`?"),
    "missing closing brace": ("    end\n  }\n}\n", "    end\n  }\n", "E004", 14, 1, "a `}` may be missing"),
    "missing unit on a duration": ("within 1m\n    compensate", "within 30\n    compensate", "E003", 8, 26,
                                   "give a unit: `30s`, `30m`, `30h` or `30d`"),
    "fractional duration": ("within 1m\n    compensate", "within 1.5h\n    compensate", "E003", 8, 26, "`90m`"),
    "single quotes": ('participant payment "Payment"', "participant payment 'Payment'", "E002", 4, 23,
                      'strings use double quotes'),
    "unclosed string": ('participant payment "Payment"', 'participant payment "Payment', "E002", 4, 23,
                        "not closed on its line"),
    "name with a dash": ("step charge {", "step charge-card {", "E003", 6, 14, "only process names may contain `-`"),
    "name with an accent": ("step charge {", "step chargé {", "E002", 6, 13, "letters a-z and A-Z"),
    "unknown function": ("amount: input.amount }", "amount: round2(input.amount) }", "E103", 7, 59, "did you mean `round`?"),
    "too many arguments": ("amount: input.amount }", "amount: round(input.amount, 2, 3) }", "E104", 7, 59,
                           "takes 1 to 2 arguments, not 3"),
    "= instead of ==": ("if input.amount > 100", "if input.amount = 100", "E003", 11, 19, "to compare, write `==`"),
    "&& instead of and": ("if input.amount > 100", "if input.amount > 100 && input.amount < 5", "E002", 11, 25, "write `and`"),
    "|| instead of or": ("if input.amount > 100", "if input.amount > 100 || input.amount < 5", "E003", 11, 25, "write `or`"),
    "! instead of not": ("if input.amount > 100", "if !input.amount", "E002", 11, 6, "write `not`"),
    "missing comma in an object": ("{ orderId: input.orderId, amount: input.amount }",
                                   "{ orderId: input.orderId amount: input.amount }", "E003", 7, 50,
                                   "a `,` may be missing before `amount`"),
    "key given twice": ("{ orderId: input.orderId, amount", "{ orderId: input.orderId, orderId: input.amount, amount",
                        "E105", 7, 51, "given twice"),
    "a string where a name is expected": ("step charge {", 'step "charge" {', "E003", 6, 8,
                                          "names are written without quotes"),
    "a name where a value is expected": ("  if input.amount > 100 {\n    end\n  }",
                                         "  switch input.amount {\n    case big {\n      end\n    }\n  }", "E003", 12, 10,
                                         'a text value is written in double quotes: "big"'),
    "missing colon in a record": ("input { orderId: string,", "input { orderId string,", "E003", 3, 19, "expected `:` or `?`"),
    "misspelled type": ("input { orderId: string,", "input { orderId: strng,", "E003", 3, 20, "did you mean `string`?"),
    "missing dot in a command": ("send payment.charge", "send payment charge", "E003", 7, 18, "expected `.`"),
    "send outside a step": ("  if input.amount > 100 {\n    end", "  send payment.x {}\n  if input.amount > 100 {\n    end",
                            "E003", 11, 3, "`send` belongs inside a step"),
    "elif": ("    end\n  }\n}\n", "    end\n  } elif input.amount > 5 {\n    end\n  }\n}\n", "E003", 13, 5, "write `else if`"),
    "comment with //": ("  step charge {", "  // charge the card\n  step charge {", "E003", 6, 3, "comments start with `#`"),
    "semicolon": ("await charged within 1m\n", "await charged within 1m;\n", "E002", 8, 28, "no `;` is needed"),
    "retry count not whole": ("await charged within 1m", "await charged within 1m retry 1.5", "E006", 8, 35,
                              "a retry count must be a whole number"),
    "step name used twice": ("  if input.amount > 100 {", "  step charge {\n    wait 1m\n  }\n  if input.amount > 100 {",
                             "E101", 11, 8, "the step name `charge` is used twice (first at line 6)"),
    "missing process name": ("process pay {", "process {", "E003", 1, 9, "expected a name or a process name"),
    "trailing comma in a call": ("amount: input.amount }", "amount: min(input.amount,) }", "E003", 7, 76, "expected a value"),
    "process in capitals": ("process pay {", "Process pay {", "E003", 1, 1, "did you mean `process`?"),
    "misspelled send": ("    send payment.charge", "    sned payment.charge", "E003", 7, 5, "did you mean `send`?"),
    "keyword run into a name": ("  step charge {", "  stepcharge {", "E003", 6, 3, "a space may be missing: `step charge`"),
    "keyword run into a number": ("    await charged within 1m", "    await charged within1m", "E003", 8, 19,
                                  "a space may be missing: `within 1m`"),
}

TERMINALS = sorted({t.name for t in grammar.reading_parser().terminals} | {"$END"}, key=len, reverse=True)
TERMINAL = re.compile(r"(?<![\w$])(?:__ANON\w*|" + "|".join(re.escape(t) for t in TERMINALS) + r")(?!\w)")


def _first(text: str) -> Diagnostic:
    definition, diagnostics = check_source(text, "mistake.proc")
    assert definition is None or any(d.is_error for d in diagnostics), "the mistake was accepted"
    return next(d for d in diagnostics if d.is_error)


def _assert_in_words(diagnostic: Diagnostic) -> None:
    for text in (diagnostic.message, diagnostic.hint or ""):
        assert not TERMINAL.search(text), f"a lark terminal name in: {text}"
        assert "Token(" not in text and "Tree(" not in text


@pytest.mark.parametrize("name", list(MISTAKES))
def test_common_mistake(name: str) -> None:
    before, after, code, line, column, words = MISTAKES[name]
    assert before in GOOD
    diagnostic = _first(GOOD.replace(before, after))
    assert (diagnostic.code, diagnostic.span.line, diagnostic.span.column) == (code, line, column), diagnostic
    assert words in diagnostic.message + " | " + (diagnostic.hint or "")
    _assert_in_words(diagnostic)
    shown = render(diagnostic, GOOD.replace(before, after))
    assert shown.startswith(f"mistake.proc:{line}:{column}: error[{code}]: ")
    assert "^" in shown


def test_the_good_text_is_good() -> None:
    assert check_source(GOOD, "good.proc")[1] == []


def test_empty_and_blank_files() -> None:
    for text in ("", "   \n\n  # only a comment\n"):
        diagnostic = _first(text) if text.strip() and not text.strip().startswith("#") else check_source(text)[1][0]
        assert diagnostic.code == "E004"


def test_every_token_kind_has_words() -> None:
    for terminal in grammar.reading_parser().terminals:
        words = syntax_errors.describe_token(terminal.name)
        assert not TERMINAL.search(words), (terminal.name, words)
    assert syntax_errors.describe_token("$END") == "the end of the file"


def test_every_prefix_of_a_good_file_reads_in_words() -> None:
    """Truncating the sample anywhere gives one diagnostic in words, never a terminal name."""
    text = (Path(__file__).resolve().parent.parent / "processes" / "order_fulfillment.proc").read_text(encoding="utf-8")
    for cut in range(1, len(text), 37):
        _, diagnostics = check_source(text[:cut], "cut.proc")
        for diagnostic in diagnostics:
            _assert_in_words(diagnostic)


def test_nesting_too_deep_is_refused_before_parsing() -> None:
    text = GOOD.replace("if input.amount > 100", "if " + "(" * 70 + "true" + ")" * 70)
    diagnostic = _first(text)
    assert (diagnostic.code, diagnostic.span.line) == ("E005", 11)


def test_a_very_long_chain_is_refused_not_crashed() -> None:
    """The LALR parser reads the chain without recursion; the expression limits refuse it."""
    text = GOOD.replace("amount: input.amount }", "amount: input.amount" + " + 1" * 3000 + " }")
    diagnostic = _first(text)
    assert diagnostic.code == "E106"
    assert "parts" in diagnostic.message
    _assert_in_words(diagnostic)


def test_an_expression_over_the_limits_is_an_error() -> None:
    text = GOOD.replace("if input.amount > 100", "if " + "not " * 40 + "true")
    diagnostic = _first(text)
    assert (diagnostic.code, diagnostic.span.line, diagnostic.span.column) == ("E106", 11, 6)


# ---------------------------------------------------------------- files: E001, E120-E123


def test_binary_and_non_utf8_files(tmp_path: Path) -> None:
    nul = tmp_path / "nul.proc"
    nul.write_bytes(GOOD.encode() + b"\x00")
    latin = tmp_path / "latin.proc"
    latin.write_bytes(GOOD.replace('"Payment"', '"Paiement \xe9"').encode("latin-1"))
    missing = tmp_path / "missing.proc"
    for path, where in ((nul, (1, 1)), (latin, (4, 33)), (missing, (1, 1))):
        definition, diagnostics, _ = check_file(path)
        assert definition is None
        (diagnostic,) = diagnostics
        assert (diagnostic.code, diagnostic.span.line, diagnostic.span.column) == ("E001", *where)
        _assert_in_words(diagnostic)


def test_a_file_over_the_size_limit(tmp_path: Path) -> None:
    big = tmp_path / "big.proc"
    big.write_text(GOOD + "#" * SOURCE_BYTES.value, encoding="utf-8")
    _, diagnostics, _ = check_file(big)
    assert [(d.code, d.message) for d in diagnostics] == [
        ("E001", f"the file is over the `source_bytes` limit of {SOURCE_BYTES.value} bytes")
    ]


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    bom = tmp_path / "bom.proc"
    bom.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert check_file(bom)[1] == []


CALLER = GOOD.replace("  if input.amount > 100 {", "  call archive-order { orderId: input.orderId }\n  if input.amount > 100 {")


def test_calls_that_cannot_be_resolved(tmp_path: Path) -> None:
    caller = tmp_path / "caller.proc"
    caller.write_text(CALLER, encoding="utf-8")
    assert [(d.code, d.span.line, d.span.column) for d in check_file(caller)[1]] == [("E121", 11, 8)]
    (tmp_path / "archive_order.proc").write_text("process archive-order {\n  step x {\n", encoding="utf-8")
    (diagnostic,) = check_file(caller)[1]
    assert diagnostic.code == "E122" and "archive_order.proc:3:1" in diagnostic.message
    (tmp_path / "archive_order.proc").write_text(GOOD.replace("process pay", "process archive"), encoding="utf-8")
    (diagnostic,) = check_file(caller)[1]
    assert diagnostic.code == "E121" and "holds the process `archive`" in diagnostic.message
    (tmp_path / "archive_order.proc").write_text(CALLER.replace("process pay", "process archive-order"), encoding="utf-8")
    (diagnostic,) = check_file(caller)[1]
    assert diagnostic.code == "E122" and "calls itself" in diagnostic.message
    assert check_source(CALLER, "<text>")[1][0].code == "E121"


def test_a_called_process_deadline_is_flagged(tmp_path: Path) -> None:
    caller = tmp_path / "caller.proc"
    caller.write_text(CALLER, encoding="utf-8")
    callee = GOOD.replace("process pay {", "process archive-order {\n  deadline 2h")
    (tmp_path / "archive_order.proc").write_text(callee, encoding="utf-8")
    (diagnostic,) = check_file(caller)[1]
    assert (diagnostic.code, diagnostic.severity, diagnostic.span.line, diagnostic.span.column) == ("W209", "warning", 11, 3)
    assert diagnostic.message == (
        "`archive-order` declares a deadline, which is not enforced when it is called; only the main process's deadline is"
    )


def test_input_contract_files(tmp_path: Path) -> None:
    text = GOOD.replace("input { orderId: string, amount: number }", 'input from "pay.schema.json"')
    proc = tmp_path / "pay.proc"
    proc.write_text(text, encoding="utf-8")
    assert [(d.code, d.span.line, d.span.column) for d in check_file(proc)[1]] == [("E123", 3, 14)]
    schema = tmp_path / "pay.schema.json"
    for content, words in (("{not json", "not valid JSON"), ("[1, 2]", "must be a JSON object")):
        schema.write_text(content, encoding="utf-8")
        (diagnostic,) = check_file(proc)[1]
        assert diagnostic.code == "E123" and words in diagnostic.message
    schema.write_text('{"type": "object", "properties": {"orderId": {"type": "string"}}}', encoding="utf-8")
    found = check_file(proc)[1]
    assert [(d.code, d.span.line, d.message) for d in found] == [("E125", 7, "`input` has no field `amount`"),
                                                                  ("E125", 11, "`input` has no field `amount`")]


def test_the_grammar_builds_without_conflicts_in_strict_mode() -> None:
    assert grammar.build_parser(strict=True) is not None


def test_scenarios_are_parsed_when_first_used_and_report_their_errors() -> None:
    import pytest

    import procflow
    from procflow.errors import SourceError

    text = (Path(__file__).resolve().parent.parent / "processes" / "order_fulfillment.proc").read_text(encoding="utf-8")
    definition = procflow.load_text(text)
    assert [s.name for s in definition.scenarios][:2] == ["happy_path", "out_of_stock"]
    broken = procflow.load_text(text.replace("expect status completed", "expect status", 1))
    with pytest.raises(SourceError) as error:
        broken.scenarios  # noqa: B018 - the property parses
    first = error.value.diagnostics[0]
    assert (first.code, first.span.line) == ("E003", text[: text.index("expect status completed")].count("\n") + 2)
