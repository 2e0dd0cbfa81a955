"""Programs generated from `grammar.lark` (hypothesis's `from_lark`): each one parses without
a traceback (a syntax tree, or a `SourceError` with located diagnostics), and printing its
tree and parsing the text again gives the same tree and, where it compiles, the same
definition; `procflow fmt`'s text (comments kept) reads as the same tree and formats to itself. Random edits of the samples (a token deleted, replaced, doubled...) give a tree
or a located refusal too.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.lark import from_lark
from lark.lexer import PatternStr

from procflow.dsl import grammar
from procflow.dsl.compiler import compile_source
from procflow.dsl.expressions import FUNCTIONS
from procflow.dsl.formatter import format_text
from procflow.dsl.parser import parse
from procflow.dsl.printer import format_source
from procflow.errors import SourceError

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = {path.name: path.read_text(encoding="utf-8") for path in sorted((ROOT / "processes").glob("*.proc"))}


sys.path.insert(0, str(Path(__file__).resolve().parent))
from syntax_shape import definition_shape, without_spans  # noqa: E402


def check_reads_and_prints_back(text: str) -> bool:
    """The property; True when the text parsed (False: refused with located diagnostics)."""
    try:
        source = parse(text, "<generated>")
    except SourceError as error:
        assert error.diagnostics
        for diagnostic in error.diagnostics:
            assert diagnostic.is_error and diagnostic.span.line >= 1 and diagnostic.span.column >= 1
        return False
    printed = format_source(source)
    again = parse(printed, "<printed>")
    assert without_spans(again) == without_spans(source), printed
    assert format_source(again) == printed
    formatted = format_text(text)  # `procflow fmt`: the same tree, comments kept, a fixed point
    assert without_spans(parse(formatted)) == without_spans(source), formatted
    assert format_text(formatted) == formatted
    try:
        definition = compile_source(text)
    except SourceError:
        return True
    assert definition_shape(compile_source(printed)) == definition_shape(definition), printed
    return True


# ---------------------------------------------------------------- programs from the grammar

LARK = grammar.build_parser()
KEYWORDS = sorted(grammar.keywords())


def _spaced(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Every token stands apart: a keyword or a name never runs into the next token (the
    glued texts are tested one by one in `test_parser.py`)."""
    return strategy.map(lambda token: f" {token} ")


_PLAIN_NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,7}", fullmatch=True).filter(lambda name: name not in KEYWORDS)
# Mostly plain names; a keyword now and then (where no keyword fits it is a name), and the
# built-in functions, so that a call is not always refused.
_NAMES = st.one_of(_PLAIN_NAMES, _PLAIN_NAMES, _PLAIN_NAMES, st.sampled_from(sorted(FUNCTIONS)), st.sampled_from(KEYWORDS))
_STRING_BODIES = st.lists(
    st.one_of(
        st.characters(codec="utf-8", exclude_characters='"\\\n'),
        st.characters(codec="utf-8", exclude_characters="\n").map(lambda char: "\\" + char),
    ),
    max_size=8,
).map("".join)
_DOC_STRINGS = st.text(st.characters(codec="utf-8", exclude_characters='"'), max_size=20).map(lambda body: f'"""{body}"""')
_UNITS = st.sampled_from(["ms", "s", "m", "h", "d", "w"])


def _terminal_strategies() -> dict[str, st.SearchStrategy[str]]:
    explicit: dict[str, st.SearchStrategy[str]] = {
        "NAME": _NAMES,
        "PROCESS_NAME": st.from_regex(r"[a-z][a-z0-9_]{0,4}(-[a-z0-9_]{1,4}){1,2}", fullmatch=True),
        "STRING": st.one_of(_STRING_BODIES.map(lambda body: f'"{body}"'), _DOC_STRINGS),
        "NUMBER": st.from_regex(r"[0-9]{1,5}(\.[0-9]{1,3})?([eE][+-]?[0-9]{1,2})?", fullmatch=True),
        "DURATION": st.lists(st.tuples(st.integers(0, 999), _UNITS), min_size=1, max_size=2).map(
            lambda parts: "".join(f"{count}{unit}" for count, unit in parts)
        ),
        "FACTOR": st.from_regex(r"x[0-9]{1,2}(\.[0-9]{1,2})?", fullmatch=True),
        "COMP_OP": st.sampled_from(["==", "!=", "<=", ">=", "<", ">"]),
        "ADD_OP": st.sampled_from(["+", "-"]),
        "MUL_OP": st.sampled_from(["*", "/", "%"]),
        "COMMENT": st.just("# a comment\n"),
        "WS": st.sampled_from([" ", "\n", "\t"]),
    }
    for terminal in LARK.terminals:
        if isinstance(terminal.pattern, PatternStr):  # keywords and punctuation
            explicit[terminal.name] = st.just(terminal.pattern.value)
    return {name: _spaced(strategy) for name, strategy in explicit.items()}


def from_grammar(rule: str) -> st.SearchStrategy[str]:
    """Texts of one rule of the grammar (hypothesis wants strategies only for its terminals)."""
    terminals, rules, ignored = LARK.grammar.compile([rule], ())
    used = {terminal.name for terminal in terminals} | set(ignored)
    used |= {symbol.name for compiled in rules for symbol in compiled.expansion if symbol.is_term}
    return from_lark(LARK, start=rule, explicit={k: v for k, v in _terminal_strategies().items() if k in used})


# Whole files from the start rule are mostly small (the generator favours short expansions,
# and a statement is one choice among a process's items), so most programs are a process of
# items, statements and steps drawn one by one, then a few scenarios.
PROGRAMS = st.one_of(
    from_grammar("start"),
    st.builds(
        lambda name, items, scenarios: f"process {name} {{\n{''.join(items)}\n}}\n{''.join(scenarios)}",
        st.sampled_from(["p", "order-flow"]),
        st.lists(st.one_of(from_grammar("process_item"), from_grammar("statement"), from_grammar("step")), min_size=1, max_size=8),
        st.lists(from_grammar("scenario"), max_size=2),
    ),
    st.builds(lambda condition: f"process p {{ if {condition} {{ end }} }}", from_grammar("expr")),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(text=PROGRAMS)
def test_programs_from_the_grammar_parse_and_print_back(text: str) -> None:
    check_reads_and_prints_back(text)


def test_most_generated_programs_parse() -> None:
    """The generator is useful only if most of what it writes is read: count them."""
    read: list[bool] = []

    @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(text=PROGRAMS)
    def count(text: str) -> None:
        read.append(check_reads_and_prints_back(text))

    count()
    assert sum(read) >= len(read) // 3, f"{sum(read)} of {len(read)} generated programs parsed"


# ---------------------------------------------------------------- random edits of the samples

_WORDS = KEYWORDS + ["(", ")", "[", "]", "{", "}", ",", ".", ":", "-", "+", "==", "<", "?", "|", "x2", "x1.5", "kyc-check"]
_WORDS += ["1", "2.5", "30s", "1h30m", '"text"', '"""doc"""', "name", "input", "# note\n", "\n", "@", "'", "stepone"]
_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|[A-Za-z_][A-Za-z0-9_]*|[0-9]+[A-Za-z0-9.]*|\S')


@st.composite
def edited(draw: st.DrawFn) -> str:
    """A sample with one to three token-level edits (delete, replace, insert, double, glue, wrap)."""
    text = draw(st.sampled_from(sorted(SAMPLES.values())))
    tokens = [match.group() for match in _TOKEN.finditer(text)]
    spaces = _TOKEN.split(text)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(tokens) - 1))
        kind = draw(st.sampled_from(["delete", "replace", "insert", "double", "glue", "wrap"]))
        if kind == "delete":
            del tokens[at]
            del spaces[at]
        elif kind == "replace":
            tokens[at] = draw(st.sampled_from(_WORDS))
        elif kind == "insert":
            tokens.insert(at, draw(st.sampled_from(_WORDS)))
            spaces.insert(at, " ")
        elif kind == "double":
            end = min(len(tokens), at + draw(st.integers(1, 12)))
            tokens[at:at] = tokens[at:end]
            spaces[at:at] = spaces[at:end]
        elif kind == "glue":
            spaces[at] = ""
        else:
            tokens[at] = "(" + tokens[at] + ")"
    return "".join(space + token for space, token in zip(spaces, tokens, strict=False)) + "\n"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=edited())
def test_random_edits_of_the_samples_parse_or_are_refused_where_they_are(text: str) -> None:
    check_reads_and_prints_back(text)
