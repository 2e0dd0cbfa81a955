"""Lark's syntax errors as worded diagnostics: where, what was found, what was expected (in
words, never a terminal name), and a suggestion for the common mistakes.

`tests/test_syntax_errors.py` catalogues the mistakes, each with its code, line, column and
words.
"""

from __future__ import annotations

import difflib
from functools import lru_cache

from lark import Token
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from procflow.dsl.diagnostics import Diagnostic, Span
from procflow.dsl.grammar import literal_texts, reading_parser
from procflow.dsl.located import token_span

_TOKEN_WORDS = {
    "NAME": "a name",
    "PROCESS_NAME": "a process name",
    "STRING": "a string in double quotes",
    "NUMBER": "a number",
    "DURATION": "a duration such as 30s, 5m, 1h or 2d",
    "FACTOR": "a backoff factor such as x2",
    "COMP_OP": "a comparison (==, !=, <, <=, >, >=)",
    "ADD_OP": "`+` or `-`",
    "MUL_OP": "`*`, `/` or `%`",
    "OPTIONAL": "`?`",
    "WS": "white space",
    "COMMENT": "a comment",
    "$END": "the end of the file",
}

# Long lists of expected tokens are summarised by what they have in common. Members are the
# keyword or symbol itself, or the kind of token (NAME, NUMBER, ...); `needs` must be present.
_GROUPS: tuple[tuple[str, frozenset[str], int, str | None], ...] = (
    ("a statement (`step`, `if`, `parallel`, …)",
     frozenset({"step", "if", "switch", "parallel", "first", "race", "repeat", "call", "for", "fail", "end", "task", "set", "emit"}), 3, None),
    ("a process item (`participant`, `input`, `event`, …)",
     frozenset({"version", "title", "doc", "correlate", "reply", "deadline", "on", "input", "limit", "participant", "event", "output"}),
     3, None),
    ("a step item (`send`, `await`, `compensate`, …)",
     frozenset({"send", "await", "on", "compensate", "nothing", "wait", "status", "doc"}), 3, None),
    ("a task item (`form`, `details`, `escalate`, …)",
     frozenset({"form", "details", "escalate", "doc", "status"}), 3, None),
    ("a scenario item (`input`, `when`, `expect`, …)",
     frozenset({"input", "start", "when", "deliver", "no", "expect"}), 3, None),
    ("a type (`string`, `number`, `boolean`, …)",
     frozenset({"string", "number", "integer", "boolean", "object", "array", "any"}), 3, None),
    ("a value (a name, number, string, list or object)",
     frozenset({"NAME", "NUMBER", "STRING", "(", "-", "[", "{", "true", "false", "null", "not"}), 4, "NAME"),
    ("an operator", frozenset({"COMP_OP", "ADD_OP", "MUL_OP", "and", "or", "in", "not", ".", "["}), 4, None),
)

_STEP_ITEMS = frozenset({"send", "await", "compensate", "nothing", "wait", "status", "on"})
_LONGEST_SHOWN = 30


@lru_cache(maxsize=1)
def _literals() -> dict[str, str]:
    return literal_texts(reading_parser())


@lru_cache(maxsize=1)
def _keyword_terminals() -> dict[str, str]:
    return {text: name for name, text in _literals().items() if text.isidentifier()}


def _as_keyword(token: Token) -> Token:
    """A word that was read as a name where no keyword fits is described as the keyword it is
    (`unexpected `expect`` rather than a hint about names)."""
    if token.type == "NAME" and str(token) in _keyword_terminals():
        return Token.new_borrow_pos(_keyword_terminals()[str(token)], str(token), token)
    return token


def describe_token(name: str) -> str:
    """A token kind in words, never a lark terminal name."""
    if name in _TOKEN_WORDS:
        return _TOKEN_WORDS[name]
    literal = _literals().get(name)
    if literal is not None:
        return f"`{literal}`"
    return "a token"


def _expected_words(expected: set[str]) -> str:
    """What was expected, in words: groups first, then kinds of tokens, then keywords."""
    literals = _literals()
    left = {literals.get(name, name) for name in expected}
    grouped: list[str] = []
    for words, members, at_least, needs in _GROUPS:
        present = left & members
        if len(present) >= at_least and (needs is None or needs in present):
            grouped.append(words)
            left -= present
    described = sorted({_TOKEN_WORDS.get(key, f"`{key}`") for key in left})
    keywords = [w for w in described if w.startswith("`")]
    kinds = [w for w in described if not w.startswith("`")]
    ordered = grouped + kinds + keywords
    if len(ordered) > 10:
        ordered = ordered[:9] + ["…"]
    if not ordered:
        return "something else"
    if len(ordered) == 1:
        return ordered[0]
    return ", ".join(ordered[:-1]) + " or " + ordered[-1]


def _token_text(token: Token) -> str:
    if token.type == "$END":
        return "the end of the file"
    text = str(token)
    if len(text) > _LONGEST_SHOWN:
        text = text[: _LONGEST_SHOWN - 3] + "..."
    return f"`{text}`"


def _hint_for(token: Token, expected: set[str]) -> str | None:
    """A suggestion for the most common ways to get a token wrong."""
    text = str(token)
    if text in ("elif", "elsif", "elseif") and "ELSE" in expected:
        return "write `else if`"
    if text in _STEP_ITEMS and "STEP" in expected:
        return f"`{text}` belongs inside a step: `step name {{ {text} ... }}`"
    if token.type == "NAME":
        allowed = [_literals().get(e) for e in expected]
        words = [w for w in allowed if w and w.isalpha()]
        glued = sorted((w for w in words if text.startswith(w) and len(text) > len(w)), key=len)
        if glued:
            return f"a space may be missing: `{glued[-1]} {text[len(glued[-1]):]}`"
        guess = difflib.get_close_matches(text, words, n=1, cutoff=0.6) or [w for w in words if w == text.lower()]
        if guess:
            return f"did you mean `{guess[0]}`?"
    if token.type in ("NAME", "STRING", "NUMBER") and "COMMA" in expected and "NAME" not in expected:
        return f"a `,` may be missing before {_token_text(token)}"
    if token.type == "NAME" and "STRING" in expected and "NAME" not in expected:
        return f'a text value is written in double quotes: "{text}"'
    if token.type == "STRING" and ("NAME" in expected or "PROCESS_NAME" in expected):
        return "names are written without quotes"
    if token.type == "NUMBER" and "DURATION" in expected:
        if "." in text:
            return "durations are whole numbers with a unit: `90m`, not `1.5h`"
        return f"give a unit: `{text}s`, `{text}m`, `{text}h` or `{text}d`"
    if text == "-" and not expected & {"ADD_OP", "MINUS"}:
        return "names use letters, digits and `_`; only process names may contain `-`"
    if text == "/" and "MUL_OP" not in expected:
        return "comments start with `#`"
    if text == "|" and "VBAR" not in expected:
        return "write `or`"
    if text == "=" and "EQUAL" not in expected:  # (a token since `set name = value`)
        return _character_hint("=", expected)
    return None


_CHARACTER_HINTS = {
    "'": 'strings use double quotes: "like this"',
    "-": "names use letters, digits and `_`; only process names may contain `-`",
    "&": "write `and`",
    "!": "write `not`, or `!=` to compare",
    ";": "no `;` is needed: a line ends an item",
    '"': "this string is not closed on its line; a string on several lines uses three quotes",
}


def _character_hint(char: str, expected: set[str]) -> str | None:
    if char.isalpha() and not char.isascii():
        return "names use the letters a-z and A-Z, digits and `_`"
    if char == "=":
        return "a field is written `name: value`" if "COLON" in expected else "to compare, write `==`"
    return _CHARACTER_HINTS.get(char)


def syntax_diagnostic(error: UnexpectedInput, text: str, path: str, start: str) -> Diagnostic:
    """A Lark syntax error as one diagnostic in words: where, what was found, what was
    expected. `start` is the grammar rule the text was read from."""
    if isinstance(error, UnexpectedToken):
        token = _as_keyword(error.token)
        expected = _accepted(error)
        if token.type == "$END":
            line, column = _end_position(text)
            return Diagnostic(
                "E004",
                "error",
                f"the file ends too early; expected {_expected_words(expected)}",
                Span(line, column, line, column + 1),
                "a `}` may be missing" if "RBRACE" in expected else None,
                path,
            )
        return Diagnostic(
            "E003",
            "error",
            f"unexpected {_token_text(token)}; expected {_expected_words(expected)}",
            token_span(token),
            _hint_for(token, expected),
            path,
        )
    if isinstance(error, UnexpectedCharacters):
        line, column = error.line, error.column
        char = error.char
        position = error.pos_in_stream
        assert position is not None  # a lexer error always knows where it is
        expected = _accepted_at(text, position, start) or set(error.allowed or ())
        shown = repr(char)[1:-1] if not char.isprintable() else char
        want = f"; expected {_expected_words(expected)}" if expected else ""
        return Diagnostic(
            "E002", "error", f"unexpected character `{shown}`{want}", Span(line, column, line, column + 1),
            _character_hint(char, expected), path,
        )
    if isinstance(error, UnexpectedEOF):
        line, column = _end_position(text)
        return Diagnostic(
            "E004",
            "error",
            f"the file ends too early; expected {_expected_words(set(error.expected))}",
            Span(line, column, line, column + 1),
            None,
            path,
        )
    return Diagnostic("E003", "error", "the text cannot be parsed here", Span(1, 1, 1, 2), None, path)


def _accepted_at(text: str, position: int, start: str) -> set[str] | None:
    """The tokens the grammar accepts at `position` (the lexer's list for a bad character is wider)."""
    try:
        interactive = reading_parser().parse_interactive(text[:position], start=start)
        interactive.exhaust_lexer()
        accepted: set[str] = interactive.accepts()  # type: ignore[no-untyped-call]
        return accepted - {"$END"}
    except Exception:  # noqa: BLE001 - the text before the position does not parse: use lark's list
        return None


def _accepted(error: UnexpectedToken) -> set[str]:
    """The tokens truly acceptable where the error happened (LALR's lookahead set is wider)."""
    expected = set(error.expected)
    interactive = error.interactive_parser
    if interactive is not None:
        try:
            precise: set[str] = interactive.accepts()  # type: ignore[no-untyped-call]
        except Exception:  # noqa: BLE001 - fall back to lark's own list
            return expected
        if precise:
            return precise
    return expected


def _end_position(text: str) -> tuple[int, int]:
    line = text.count("\n") + 1
    return line, len(text) - (text.rfind("\n") + 1) + 1
