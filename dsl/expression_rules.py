"""The rules of expressions and types, and the checks on literals as they are read: the part
of `transformer.ToSyntax` that builds expression nodes and the types of fields.

The methods named after terminals (`STRING`, `NUMBER`, `DURATION`, `FACTOR`) run as each
such token is read, and refuse a literal over one of the limits on text before the parser
goes further.
"""

from __future__ import annotations

from typing import Any

from lark import Token

from procflow.dsl import build
from procflow.dsl import expressions as ex
from procflow.dsl import syntax as sx
from procflow.dsl.diagnostics import Span
from procflow.dsl.located import rule, rule_of_words, token_span

_CONSTANTS = {"true": True, "false": False, "null": None}


def string_value(token: Token) -> str:
    """The value of a STRING token."""
    return build.string(str(token))


class ExpressionRules:
    """The methods Lark calls for the literals, expressions and types of the grammar."""

    # ---- literals, checked as they are read
    def STRING(self, token: Token) -> Token:  # noqa: N802 - Lark calls the method named after the terminal
        """A string literal, refused over the `string_literal` limit."""
        build.check_string(str(token), token_span(token))
        return token

    def NUMBER(self, token: Token) -> Token:  # noqa: N802
        """A number literal, refused over the `number_literal` limit."""
        build.check_number(str(token), token_span(token))
        return token

    def FACTOR(self, token: Token) -> Token:  # noqa: N802
        """A backoff factor (`x1.5`), refused over the `number_literal` limit."""
        build.check_number(str(token)[1:], token_span(token))
        return token

    def DURATION(self, token: Token) -> Token:  # noqa: N802
        """A duration literal, refused over the `duration` limit."""
        build.check_duration(str(token), token_span(token))
        return token

    # ---- expressions
    @rule_of_words
    def literal(self, span: Span, parts: list[Token]) -> ex.Expr:
        (token,) = parts
        if token.type == "NUMBER":
            return ex.Literal(span, build.number(str(token)))
        if token.type == "STRING":
            return ex.Literal(span, string_value(token))
        return ex.Literal(span, _CONSTANTS[str(token)])

    @rule
    def var(self, span: Span, parts: list[Token]) -> ex.Expr:
        return ex.Var(span, str(parts[0]))

    @rule
    def field(self, span: Span, parts: list[Any]) -> ex.Expr:
        base, name = parts
        return ex.Field(span, base, str(name))

    @rule
    def index(self, span: Span, parts: list[Any]) -> ex.Expr:
        base, key = parts
        return ex.Index(span, base, key)

    @rule
    def not_op(self, span: Span, parts: list[Any]) -> ex.Expr:
        return ex.Unary(span, "not", parts[0])

    @rule
    def negate(self, span: Span, parts: list[Any]) -> ex.Expr:
        return ex.Unary(span, "-", parts[0])

    @rule
    def binary(self, span: Span, parts: list[Any]) -> ex.Expr:
        left, operator, right = parts
        return ex.Binary(span, str(operator), left, right)

    compare = binary

    @rule
    def member(self, span: Span, parts: list[Any]) -> ex.Expr:
        left, right = parts
        return ex.Binary(span, "in", left, right)

    @rule
    def not_member(self, span: Span, parts: list[Any]) -> ex.Expr:
        left, right = parts
        return ex.Binary(span, "not in", left, right)

    @rule
    def or_expr(self, span: Span, parts: list[ex.Expr]) -> ex.Expr:
        return build.chain(parts, "or")

    @rule
    def and_expr(self, span: Span, parts: list[ex.Expr]) -> ex.Expr:
        return build.chain(parts, "and")

    @rule
    def atom(self, span: Span, parts: list[Any]) -> ex.Expr:
        """`( expr )`: the expression itself; its extent takes in the parentheses."""
        return parts[0]  # type: ignore[no-any-return]

    @rule
    def func(self, span: Span, parts: list[Any]) -> ex.Expr:
        name, *args = parts
        return build.func_call(str(name), token_span(name), args, span)

    @rule
    def list_expr(self, span: Span, parts: list[ex.Expr]) -> ex.Expr:
        return ex.ListExpr(span, tuple(parts))

    @rule
    def mapping(self, span: Span, parts: list[tuple[str, ex.Expr, Span]]) -> ex.ObjectExpr:
        return build.mapping(parts, span)

    @rule
    def pair(self, span: Span, parts: list[Any]) -> tuple[str, ex.Expr, Span]:
        key, value = parts
        text = string_value(key) if key.type == "STRING" else str(key)
        return (text, value, token_span(key))

    # ---- types
    @rule
    def record_type(self, span: Span, parts: list[tuple[sx.Name, bool, sx.TypeSpec]]) -> sx.RecordType:
        return build.record_type(tuple(parts), span)

    @rule
    def field_type(self, span: Span, parts: list[Any]) -> tuple[sx.Name, bool, sx.TypeSpec]:
        return (parts[0], len(parts) == 3, parts[-1])

    @rule
    def field_name(self, span: Span, parts: list[Token]) -> sx.Name:
        (token,) = parts
        return sx.Name(string_value(token) if token.type == "STRING" else str(token), token_span(token))

    @rule
    def type_atom(self, span: Span, parts: list[Any]) -> sx.TypeSpec:
        (inner,) = parts
        if isinstance(inner, sx.RecordType):
            return sx.TypeSpec(inner.to_schema(), inner.span)
        return inner  # type: ignore[no-any-return]

    @rule_of_words
    def type_name(self, span: Span, parts: list[Token]) -> sx.TypeSpec:
        return build.type_name(str(parts[0]), span)

    @rule
    def enum_type(self, span: Span, parts: list[Token]) -> sx.TypeSpec:
        return build.enum_type([string_value(token) for token in parts], span)

    @rule
    def array_type(self, span: Span, parts: list[sx.TypeSpec]) -> sx.TypeSpec:
        return build.array_type(parts[0], span)
