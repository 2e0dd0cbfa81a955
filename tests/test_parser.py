"""The one parser: Lark reads every sample and hand-picked case, a keyword never runs into
the next word, the limits on text are refused as the text is read, and the printer writes
back text that parses to the same tree (and, where it compiles, the same definition).

The property test over programs generated from the grammar is `test_grammar_property.py`.
"""

from __future__ import annotations

import ast
import sys
import time
from pathlib import Path

import pytest

import procflow
from procflow.dsl import grammar, transformer
from procflow.dsl import syntax as sx
from procflow.dsl.compiler import compile_source
from procflow.dsl.diagnostics import Span
from procflow.dsl.parser import parse, parse_scenarios
from procflow.dsl.printer import format_source
from procflow.errors import SourceError
from procflow.limits import SOURCE_BYTES, STRING_LITERAL

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted((ROOT / "processes").glob("*.proc"))
CASE_FILES = sorted((ROOT / "tests" / "cases").glob("**/*.proc"))

sys.path.insert(0, str(ROOT / "bench"))
from dsl_scale import generate  # noqa: E402

sys.path.insert(0, str(ROOT / "tests"))
from syntax_shape import definition_shape, without_spans  # noqa: E402


def assert_prints_back(text: str) -> sx.SourceFile:
    """Parse, print, parse again: the same tree; printing is idempotent; the same definition."""
    source = parse(text, "<text>")
    printed = format_source(source)
    again = parse(printed, "<printed>")
    assert without_spans(again) == without_spans(source)
    assert format_source(again) == printed
    try:
        definition = compile_source(text)
    except SourceError:
        return source
    assert definition_shape(compile_source(printed)) == definition_shape(definition)
    return source


# ---------------------------------------------------------------- what reads, and prints back


@pytest.mark.parametrize("path", SAMPLES + CASE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_sample_and_case_file_prints_back(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    try:
        parse(text)
    except SourceError:
        assert path.parent.name == "validation", "only validation cases may be refused"
        return
    assert_prints_back(text)


def test_a_generated_process_with_every_kind_of_block_prints_back() -> None:
    assert_prints_back(generate(120))


BASE = """process shop-order {{
  participant shop
  {body}
}}
"""

CASES = {
    "keywords as names where no keyword fits": "step status { send shop.status { input: 1, step: 2, status: 3 } await end, reply as fail }",
    "factor with a fraction": "step a { send shop.x await y within 30s retry 3 backoff 1s x1.5 }",
    "hyphenated call": 'call kyc-check from "kyc_check.proc" { id: 1 } as result',
    "parentheses and spans": "if (a) + b > (c) and (d) or not (e) { end }",
    "a keyword as a variable": "if x == not { end }\n  if -true in [1, -2.5e3] { end }",
    "not in and membership": 'if "a" not in input.list and input.list[0] in ["a"] { end }',
    "switch with literals": 'switch input.kind { case "a", 1, 2.5, true, null { end } default { fail "no" } }',
    "loops": "repeat max 3 { end } until x\n  repeat again max 2 { end } until y\n  repeat { end } until z",
    "race arms": "race r { on timer 5m { end } on timer at input.t { end } on done, late as d { end } }",
    "escapes and doc strings": 'step a {\n  doc """\n    Two\n      lines\n  """\n  send shop.x { s: "q\\"uote\\n" }\n  nothing to undo "why"\n}',
    "comments": "# a comment\n  step a { # another\n send shop.x # more\n }",
    "types": 'participant p "P" { command c { a: string, "b"?: number[], c: "x" | "y", d: { e: any }, f: {}[] } reply r {} }',
    "functions": "if len(input.items) > 0 and max(1, 2) == min(3, 4) { end }",
    "operators that need parentheses": "if (a or b) and not (c and d) and -(x + y) * 2 > (1 - 2) - 3 and (-x).y[(a + b)] { end }",
    "items given twice": 'version 2\n  version 3\n  step s { doc "a" doc "b" send shop.a send shop.b await r await q wait 1s wait 2s }',
    "empty blocks": "if a {} else if b {} else {}\n  parallel { branch x {} }\n  repeat {} until done",
    "a scenario of every kind": 'end\n}\nscenario s "d" {\n  input { a: 1 }\n  start at "2024-01-01T00:00:00Z"\n'
    "  when shop.x attempt 2 reply y { b: 2 } after 5s twice\n  when shop.z no reply\n  deliver e { c: 3 } after 1h\n"
    '  no event e, f\n  expect status completed\n  expect completed [a, b]\n  expect commands [shop.x]\n'
    '  expect compensation []\n  expect failure "no"',
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hand_picked_cases_print_back(name: str) -> None:
    assert_prints_back(BASE.format(body=CASES[name]))


def test_keywords_stay_unreserved_where_a_name_may_come() -> None:
    source = parse(BASE.format(body=CASES["keywords as names where no keyword fits"]))
    step = source.process.body[0]
    assert isinstance(step, sx.Step) and step.name.text == "status"
    assert step.send is not None and step.send.command.text == "status"
    assert step.send.data is not None and [key for key, _ in step.send.data.pairs] == ["input", "step", "status"]
    assert step.await_ is not None and [name.text for name in step.await_.replies] == ["end", "reply"]


def test_spans_cover_the_rule_and_parentheses_belong_to_the_outer_node() -> None:
    source = parse("process p {\n  if (a) + b > c { end }\n}\n")
    statement = source.process.body[0]
    assert isinstance(statement, sx.If)
    assert statement.span == Span(2, 3, 2, 25)
    comparison = statement.arms[0][0]
    assert comparison.span == Span(2, 6, 2, 17)  # from the `(`: the sum's text begins there
    total = comparison.left  # type: ignore[attr-defined]
    assert total.span == Span(2, 6, 2, 13)
    assert total.left.span == Span(2, 7, 2, 8)  # `a` itself, inside the parentheses


# ---------------------------------------------------------------- a keyword never runs into the next word

GLUED = {
    "stepone": ("process p { participant shop  stepone { send shop.x await y } }", (1, 31), "`stepone`"),
    "processp": ("processp{participantshop stepa{send shop.x await y}}", (1, 1), "`processp`"),
    "participantshop": ("process p{participantshop stepa{send shop.x await y}}", (1, 11), "`participantshop`"),
    "within5s": ("process p { participant shop step a { send shop.x await y within5s } }", (1, 59), "`within5s`"),
    "elseif": ("process p { if a { end } elseif b { end } }", (1, 26), "`elseif`"),
    "notin": ("process p { if a notin b { end } }", (1, 18), "`notin`"),
}


@pytest.mark.parametrize("name", sorted(GLUED))
def test_a_keyword_run_into_the_next_word_is_refused_where_it_stands(name: str) -> None:
    text, (line, column), shown = GLUED[name]
    with pytest.raises(SourceError) as caught:
        parse(text, "glued.proc")
    (diagnostic,) = caught.value.diagnostics
    assert (diagnostic.code, diagnostic.span.line, diagnostic.span.column) == ("E003", line, column)
    assert diagnostic.message.startswith(f"unexpected {shown}; expected ")


def test_the_same_texts_with_spaces_read() -> None:
    assert parse("process p { participant shop  step one { send shop.x await y } }").process.body[0].name.text == "one"  # type: ignore[union-attr]
    assert parse("process p{participant shop step a{send shop.x await y}}").process.participants[0].name.text == "shop"


# ---------------------------------------------------------------- limits on text


def _refusal(text: str) -> tuple[str, int, int, str]:
    with pytest.raises(SourceError) as caught:
        parse(text, "limits.proc")
    (diagnostic,) = caught.value.diagnostics
    return diagnostic.code, diagnostic.span.line, diagnostic.span.column, diagnostic.message


LIMITS = {
    "a long number": ("step s { send shop.x { n: " + "9" * 41 + " } }", "E008", 3, 29, "`number_literal` limit of 40"),
    "a number beyond a float": ("step s { send shop.x { n: 1e999 } }", "E008", 3, 29, "too large to represent"),
    "a long factor": ("step s { send shop.x await y within 1s retry 2 backoff 1s x" + "1" * 41 + " }", "E008", 3, 61,
                      "`number_literal` limit of 40"),
    "a long wait": ("step s { wait 99999999w }", "E009", 3, 17, "`duration` limit of 3162240000 seconds"),
    "a long deadline": ("deadline 9999999999w", "E009", 3, 12, "`duration` limit"),
    "a long within": ("step s { send shop.x await y within 1000000000000000000000000000000s }", "E009", 3, 39, "`duration` limit"),
    "a long backoff": ("step s { send shop.x await y within 1s retry 2 backoff 5300000w }", "E009", 3, 58, "`duration` limit"),
    "a long timer": ("race r { on timer 200000000h { end } on y { end } }", "E009", 3, 21, "`duration` limit"),
    # Each duration within the limit, but the retries' backoffs double past it (2^1999 s).
    "a doubling backoff": ("step s { send shop.x await y within 1s retry 2000 backoff 1s x2 }", "E009", 3, 32,
                           "attempts and backoffs add up to more than the `duration` limit"),
    "many long attempts": ("step s { send shop.x await y within 1000w retry 9999 }", "E009", 3, 32, "add up to more"),
    "a long loop": ("repeat max 10001 { end } until x", "E010", 3, 14, "`loop_bound` limit of 10000 rounds"),
    "a long string": ('fail "' + "x" * (STRING_LITERAL.value + 1) + '"', "E007", 3, 8, "`string_literal` limit of 65536"),
}


@pytest.mark.parametrize("name", sorted(LIMITS))
def test_a_literal_over_a_limit_is_refused_where_it_stands(name: str) -> None:
    body, code, line, column, words = LIMITS[name]
    found = _refusal(BASE.format(body=body))
    assert found[:3] == (code, line, column)
    assert words in found[3]


def test_a_wait_whose_retries_stay_within_the_limit_is_accepted() -> None:
    text = BASE.format(body="step s { send shop.x await y within 1h retry 20 backoff 1s x2 }")
    step = parse(text).process.body[0]
    assert step.await_.timeout.retry.count == 20  # type: ignore[union-attr]


def test_the_largest_values_under_the_limits_are_accepted() -> None:
    text = BASE.format(body='repeat max 10000 { step s { wait 5200w } } until x\n  fail "' + "x" * STRING_LITERAL.value + '"')
    assert parse(text).process.body[0].max == 10000  # type: ignore[union-attr]


def test_a_huge_file_and_a_huge_string_are_refused_quickly() -> None:
    """A 20 MB string is over the size of a file; a 7 MB one (within it) is refused as it is
    read: the string's pattern does not backtrack, so it takes no memory beyond the text."""
    started = time.perf_counter()
    code, *_ = _refusal('process p { fail "' + "x" * 20_000_000 + '" }')
    assert code == "E001"
    code, line, column, message = _refusal('process p { fail "' + "\\x" * 3_500_000 + '" }')
    assert (code, line, column) == ("E007", 1, 18)
    assert "7000000 characters long" in message
    assert time.perf_counter() - started < 10


def test_the_size_limit_counts_bytes() -> None:
    text = "process p { fail \"" + "é" * (SOURCE_BYTES.value // 2) + "\" }"  # fewer characters than the limit
    assert _refusal(text)[0] == "E001"


# ---------------------------------------------------------------- one parser, lark inside


def test_every_rule_of_the_grammar_has_a_method() -> None:
    """Lark builds a tree for a rule without one: every rule must build syntax instead (but
    a `?rule` of one child passes the child on, and Lark splices `_rule`s into their parent)."""
    rules = {
        str(rule.alias or rule.origin.name)
        for rule in grammar.reading_parser().rules
        if not (rule.options.expand1 and len(rule.expansion) == 1) and not rule.origin.name.startswith("_")
    }
    assert rules <= set(dir(transformer.ToSyntax)), sorted(rules - set(dir(transformer.ToSyntax)))


def test_only_the_parser_modules_import_lark() -> None:
    allowed = {"grammar.py", "parser.py", "syntax_errors.py", "transformer.py", "expression_rules.py", "located.py"}
    for folder in ("procflow", "dsl", "interpreter", "visualize"):
        for module in (ROOT / folder).glob("*.py"):
            tree = ast.parse(module.read_text(encoding="utf-8"))
            names = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
            names += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
            if any(name == "lark" or name.startswith("lark.") for name in names):
                assert folder == "dsl" and module.name in allowed, module


def test_a_refusal_carries_no_lark_type() -> None:
    for text in ("process p { step s { sned p.c } }", "process p { if f(1) { end } }", "process p { @ }"):
        with pytest.raises(SourceError) as caught:
            parse(text)
        assert caught.value.__cause__ is None and caught.value.__suppress_context__  # `from None`
        assert all(type(d).__module__.startswith("procflow") for d in caught.value.diagnostics)


def test_scenarios_are_read_later_and_their_mistakes_point_into_the_file() -> None:
    text = BASE.format(body="end") + 'scenario s {\n  expect status\n}\n'
    source = parse(text, "later.proc", scenarios=False)
    assert source.scenarios == [] and source.pending_scenarios is not None
    with pytest.raises(SourceError) as caught:
        parse_scenarios(source)
    (diagnostic,) = caught.value.diagnostics
    assert (diagnostic.code, diagnostic.span.line, diagnostic.span.column) == ("E003", 7, 1)
    good = parse(text.replace("expect status\n", "expect status completed\n"), scenarios=False)
    assert [s.name.text for s in parse_scenarios(good)] == ["s"]


def test_a_definition_prints_as_one_short_line() -> None:
    definition = procflow.load(Path(__file__).parent.parent / "processes" / "order_fulfillment.proc")
    text = repr(definition)
    assert text.startswith("ProcessDefinition(name='order-fulfillment', version=1, fingerprint='sha256:")
    assert len(text) < 200 and "\n" not in text
