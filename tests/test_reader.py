"""The fast reader (dsl/reader.py) and Lark read the grammar alike.

`parse` reads with the fast reader and falls back to Lark on anything the reader does not
accept, so one property keeps it correct: whatever the reader accepts, Lark accepts, as the
same syntax tree, spans included. Checked on every sample, on a generated process with every
kind of block, on cases where the two could plausibly part ways, and on random token-level
edits of the samples (most of which are still valid programs).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from procflow.dsl import parser, reader
from procflow.dsl.build import BadLiteral
from procflow.errors import SourceError

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted((ROOT / "processes").glob("*.proc"))
TEXTS = {path.name: path.read_text(encoding="utf-8") for path in SAMPLES}

sys.path.insert(0, str(ROOT / "bench"))
from dsl_scale import generate  # noqa: E402


def fast(text: str) -> Any:
    try:
        return reader.read(text)
    except (reader.Unreadable, BadLiteral, RecursionError):
        return None


def lark(text: str) -> Any:
    try:
        return parser.read_with_lark(text)
    except (SourceError, RecursionError):
        return None


def assert_agree(text: str, *, both_accept: bool) -> None:
    ours = fast(text)
    reference = lark(text)
    if ours is not None:
        assert reference is not None, "the fast reader accepted text that Lark refuses"
        assert ours == reference
    if both_accept:
        assert ours is not None and reference is not None


@pytest.mark.parametrize("name", sorted(TEXTS))
def test_every_sample_reads_the_same(name: str) -> None:
    assert_agree(TEXTS[name], both_accept=True)


def test_a_generated_process_with_every_kind_of_block_reads_the_same() -> None:
    assert_agree(generate(120), both_accept=True)


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
    "types": 'participant p "P" { command c { a: string, "b"?: number[], c: "x" | "y", d: { e: any } } reply r }',
    "functions": "if len(input.items) > 0 and max(1, 2) == min(3, 4) { end }",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_cases_where_the_readers_could_part_ways(name: str) -> None:
    assert_agree(BASE.format(body=CASES[name]), both_accept=True)


@pytest.mark.parametrize(
    "text",
    [
        "process a { step s { send p.c } } @",
        'process a { step s { send p.c { x: "open } } }',
        "process a { step s { send p.c { x: 1 " + "(" * 70 + "1" + ")" * 70 + " } } }",
        "process a { step s { await x within 5s retry 2 backoff 1s x2.5e3 } }",
        "process a { step s { await x within 5s retry 1.5 } }",
        "process a { if f(1) { end } }",
        "process a { step s { send p.c { a: 1, a: 2 } } }",
        "process a { step s { send p.c } }\nscenario x { expect status }",
        "process a { if x == 1 == 2 { end } }",
    ],
)
def test_text_the_reader_refuses_is_refused_by_lark_too(text: str) -> None:
    assert fast(text) is None
    assert_agree(text, both_accept=False)


def test_parse_does_not_need_lark_for_a_valid_file(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_lark(*args: object, **kwargs: object) -> None:
        raise AssertionError("Lark was used")

    monkeypatch.setattr(parser, "read_with_lark", no_lark)
    source = parser.parse(TEXTS["order_fulfillment.proc"], "order_fulfillment.proc")
    assert source.process.name.text == "order-fulfillment"
    assert parser.parse_scenarios(parser.parse(TEXTS["refund.proc"], scenarios=False))


def test_a_mistake_still_gets_larks_diagnostic() -> None:
    with pytest.raises(SourceError) as caught:
        parser.parse("process a {\n  step s { sned p.c }\n}\n", "bad.proc")
    (diagnostic,) = caught.value.diagnostics
    assert (diagnostic.code, diagnostic.span.line, diagnostic.span.column) == ("E003", 2, 12)
    assert diagnostic.message.startswith("unexpected `sned`; expected a step item")
    assert diagnostic.hint == "did you mean `send`?"


# ---------------------------------------------------------------- random edits

WORDS = (
    parser.KEYWORDS
    + ["(", ")", "[", "]", "{", "}", ",", ".", ":", "-", "+", "==", "<", "?", "|", "x2", "x1.5", "kyc-check"]
    + ["1", "2.5", "30s", "1h30m", '"text"', '"""doc"""', "name", "input", "# note\n", "\n"]
)
_TOKEN_RE = re.compile(r'"(?:[^"\\\n]|\\.)*"|[A-Za-z_][A-Za-z0-9_]*|[0-9]+[A-Za-z0-9.]*|\S')


@st.composite
def edited(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(sorted(TEXTS.values())))
    tokens = [m.group() for m in _TOKEN_RE.finditer(text)]
    spaces = re.split(r'"(?:[^"\\\n]|\\.)*"|[A-Za-z_][A-Za-z0-9_]*|[0-9]+[A-Za-z0-9.]*|\S', text)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(tokens) - 1))
        kind = draw(st.sampled_from(["delete", "replace", "insert", "duplicate", "wrap"]))
        if kind == "delete":
            del tokens[at]
            del spaces[at]
        elif kind == "replace":
            tokens[at] = draw(st.sampled_from(WORDS))
        elif kind == "insert":
            tokens.insert(at, draw(st.sampled_from(WORDS)))
            spaces.insert(at, " ")
        elif kind == "duplicate":
            end = min(len(tokens), at + draw(st.integers(1, 12)))
            tokens[at:at] = tokens[at:end]
            spaces[at:at] = spaces[at:end]
        else:
            tokens[at] = "(" + tokens[at] + ")"
    return "".join(space + token for space, token in zip(spaces, tokens, strict=False)) + "\n"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=edited())
def test_random_edits_of_the_samples_read_the_same(text: str) -> None:
    assert_agree(text, both_accept=False)
