"""What a rule of the grammar gives back while Lark parses: its value and the extent of its
text, and the decorators that make a method a rule's callback.

Lark calls a transformer's method named after a rule (or its alias) with the rule's
children: tokens, and what the methods of the rules below returned. A transformer run during
parsing is not given Lark's positions (`meta`), so every method returns a `Located` value,
and the extent of a rule runs from the start of its first child to the end of its last.
Keywords and punctuation reach the methods only for those positions (the parser keeps all
tokens): `rule` takes them out before a method sees the parts of its rule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from lark import Token

from procflow.dsl.diagnostics import Span

VALUE_TERMINALS = frozenset(
    {"NAME", "PROCESS_NAME", "STRING", "NUMBER", "DURATION", "FACTOR", "COMP_OP", "ADD_OP", "MUL_OP", "OPTIONAL"}
)
"""Tokens that carry a value; every other token is a keyword or punctuation."""


@dataclass(slots=True)
class Located:
    """What a rule built and the extent of its text (for `( a )` the parentheses included,
    while the node inside keeps its own span)."""

    value: Any
    span: Span


def token_span(token: Token) -> Span:
    """Where a token stands (the lexer gives every token its position)."""
    line, column, end_line, end_column = token.line, token.column, token.end_line, token.end_column
    assert line is not None and column is not None and end_line is not None and end_column is not None
    return Span(line, column, end_line, end_column)


def _extent(children: list[Any]) -> Span:
    if not children:
        return Span(1, 1, 1, 1)
    first, last = children[0], children[-1]
    start = first.span if isinstance(first, Located) else token_span(first)
    end = last.span if isinstance(last, Located) else token_span(last)
    return Span(start.line, start.column, end.end_line, end.end_column)


RuleMethod = Callable[[Any, Span, list[Any]], Any]
Callback = Callable[[Any, list[Any]], Located]


def rule(method: RuleMethod) -> Callback:
    """A rule's method, given the span of the rule's text and its parts: the values built
    below it and its value tokens (names, strings, numbers, operators), in order."""

    @wraps(method)
    def reduce(self: Any, children: list[Any]) -> Located:
        span = _extent(children)
        parts = [
            child.value if isinstance(child, Located) else child
            for child in children
            if isinstance(child, Located) or child.type in VALUE_TERMINALS
        ]
        return Located(method(self, span, parts), span)

    return reduce


def rule_of_words(method: RuleMethod) -> Callback:
    """A rule's method for a rule made of words (`!type_name: "string" | ...`): its parts
    are all its tokens, keywords included."""

    @wraps(method)
    def reduce(self: Any, children: list[Any]) -> Located:
        span = _extent(children)
        return Located(method(self, span, children), span)

    return reduce
