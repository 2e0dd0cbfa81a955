"""The expression language: syntax nodes, static facts about them, and evaluation over JSON values.

Expressions route and map data; they never run Python. Each tree is compiled once into nested
closures (no `eval`, no attribute access on Python objects), and evaluation works only on JSON
values: None, bool, int, float, str, list, dict. Size and depth are bounded when the text is
parsed (see `MAX_NODES`, `MAX_DEPTH`), and values built at run time are bounded too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from procflow.dsl.diagnostics import Span
from procflow.errors import ExpressionError

MAX_NODES = 500
"""An expression with more nodes than this is refused when the process is compiled."""
MAX_DEPTH = 32
"""An expression nested deeper than this is refused when the process is compiled."""
MAX_VALUE_LENGTH = 100_000
"""A string or list built by an expression may not be longer than this."""

Json = Any
Scope = Mapping[str, Json]
Evaluator = Callable[[Scope], Json]


@dataclass(frozen=True, slots=True)
class Expr:
    """Base of expression nodes; every node knows where it stands in the text."""

    span: Span


@dataclass(frozen=True, slots=True)
class Literal(Expr):
    """A constant: number, string, true, false or null."""

    value: Json


@dataclass(frozen=True, slots=True)
class Var(Expr):
    """A name: `input`, a bound payload, or `steps`."""

    name: str


@dataclass(frozen=True, slots=True)
class Field(Expr):
    """`base.name`: a field of an object (null when absent)."""

    base: Expr
    name: str


@dataclass(frozen=True, slots=True)
class Index(Expr):
    """`base[key]`: an element of a list or a field of an object."""

    base: Expr
    key: Expr


@dataclass(frozen=True, slots=True)
class Unary(Expr):
    """`not x` or `-x`."""

    op: str
    operand: Expr


@dataclass(frozen=True, slots=True)
class Binary(Expr):
    """Arithmetic, comparison, membership and boolean operators."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class FuncCall(Expr):
    """A call of one of the built-in pure functions (see `FUNCTIONS`)."""

    name: str
    args: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class ListExpr(Expr):
    """`[a, b, c]`."""

    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class ObjectExpr(Expr):
    """`{ key: value, ... }`: the form of every data mapping."""

    pairs: tuple[tuple[str, Expr], ...] = field(default_factory=tuple)


ARITHMETIC = frozenset({"+", "-", "*", "/", "%"})
"""Operators that compute; counted by the orchestrator-scope check."""


def children(expr: Expr) -> tuple[Expr, ...]:
    """The direct sub-expressions of a node."""
    return _CHILDREN[type(expr)](expr)


_NO_CHILDREN: tuple[Expr, ...] = ()
_CHILDREN: dict[type, Callable[[Any], tuple[Expr, ...]]] = {
    Literal: lambda e: _NO_CHILDREN,
    Var: lambda e: _NO_CHILDREN,
    Field: lambda e: (e.base,),
    Index: lambda e: (e.base, e.key),
    Unary: lambda e: (e.operand,),
    Binary: lambda e: (e.left, e.right),
    FuncCall: lambda e: e.args,
    ListExpr: lambda e: e.items,
    ObjectExpr: lambda e: tuple(value for _, value in e.pairs),
}


def walk(expr: Expr) -> Iterator[Expr]:
    """Every node of the tree, parents before children, without recursion."""
    stack = [expr]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(children(node)))


def field_path(expr: Expr) -> tuple[str, ...] | None:
    """`input.a.b` -> ("input", "a", "b"); None when the expression is not a plain path."""
    names: list[str] = []
    node = expr
    while isinstance(node, Field):
        names.append(node.name)
        node = node.base
    if isinstance(node, Var):
        names.append(node.name)
        return tuple(reversed(names))
    return None


def paths_read(expr: Expr) -> list[tuple[tuple[str, ...], Span]]:
    """The longest plain field paths an expression reads, with their spans (`input.a.b`)."""
    found: list[tuple[tuple[str, ...], Span]] = []
    stack = [expr]
    while stack:
        node = stack.pop()
        path = field_path(node)
        if path is not None:
            found.append((path, node.span))
            continue
        stack.extend(children(node))
    found.sort(key=lambda item: (item[1].line, item[1].column))
    return found


def computation_count(expr: Expr) -> int:
    """How many arithmetic operations an expression performs: a measure of business logic."""
    return sum(1 for node in walk(expr) if isinstance(node, Binary) and node.op in ARITHMETIC)


def measure(expr: Expr) -> tuple[int, int]:
    """(node count, depth) of an expression tree, without recursion."""
    count = 0
    deepest = 0
    stack: list[tuple[Expr, int]] = [(expr, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children(node))
    return count, deepest


def to_text(expr: Expr) -> str:
    """A readable, canonical rendering of an expression (for diagrams and messages)."""
    if isinstance(expr, Literal):
        return _json_text(expr.value)
    if isinstance(expr, Var):
        return expr.name
    if isinstance(expr, Field):
        return f"{to_text(expr.base)}.{expr.name}"
    if isinstance(expr, Index):
        return f"{to_text(expr.base)}[{to_text(expr.key)}]"
    if isinstance(expr, Unary):
        return f"not {to_text(expr.operand)}" if expr.op == "not" else f"-{to_text(expr.operand)}"
    if isinstance(expr, Binary):
        return f"{to_text(expr.left)} {expr.op} {to_text(expr.right)}"
    if isinstance(expr, FuncCall):
        return f"{expr.name}({', '.join(to_text(a) for a in expr.args)})"
    if isinstance(expr, ListExpr):
        return "[" + ", ".join(to_text(i) for i in expr.items) + "]"
    if isinstance(expr, ObjectExpr):
        return "{ " + ", ".join(f"{k}: {to_text(v)}" for k, v in expr.pairs) + " }"
    raise TypeError(type(expr).__name__)


def _json_text(value: Json) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


# ---------------------------------------------------------------- evaluation


def type_name(value: Json) -> str:
    """The JSON type name of a value, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _is_number(value: Json) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _bounded(value: Json) -> Json:
    if isinstance(value, str | list) and len(value) > MAX_VALUE_LENGTH:
        raise ExpressionError(f"value longer than {MAX_VALUE_LENGTH} items built by an expression")
    return value


def _fn_len(value: Json) -> Json:
    if isinstance(value, str | list | dict):
        return len(value)
    raise ExpressionError(f"len() takes a string, list or object, not {type_name(value)}")


def _fn_lower(value: Json) -> Json:
    if not isinstance(value, str):
        raise ExpressionError(f"lower() takes a string, not {type_name(value)}")
    return value.lower()


def _fn_upper(value: Json) -> Json:
    if not isinstance(value, str):
        raise ExpressionError(f"upper() takes a string, not {type_name(value)}")
    return value.upper()


def _fn_string(value: Json) -> Json:
    return value if isinstance(value, str) else _json_text(value)


def _numbers(name: str, values: tuple[Json, ...]) -> list[float]:
    items: list[Json] = list(values[0]) if len(values) == 1 and isinstance(values[0], list) else list(values)
    if not items or not all(_is_number(v) for v in items):
        raise ExpressionError(f"{name}() takes numbers or one list of numbers")
    return items


def _fn_min(*values: Json) -> Json:
    return min(_numbers("min", values))


def _fn_max(*values: Json) -> Json:
    return max(_numbers("max", values))


def _fn_round(value: Json, digits: Json = 0) -> Json:
    if not _is_number(value) or not isinstance(digits, int):
        raise ExpressionError("round() takes a number and a whole number of digits")
    return round(value, digits)


def _fn_coalesce(*values: Json) -> Json:
    return next((v for v in values if v is not None), None)


def _fn_contains(container: Json, item: Json) -> Json:
    return _member(item, container)


def _fn_keys(value: Json) -> Json:
    if not isinstance(value, dict):
        raise ExpressionError(f"keys() takes an object, not {type_name(value)}")
    return sorted(value)


FUNCTIONS: dict[str, tuple[Callable[..., Json], int, int]] = {
    "len": (_fn_len, 1, 1),
    "lower": (_fn_lower, 1, 1),
    "upper": (_fn_upper, 1, 1),
    "string": (_fn_string, 1, 1),
    "min": (_fn_min, 1, 16),
    "max": (_fn_max, 1, 16),
    "round": (_fn_round, 1, 2),
    "coalesce": (_fn_coalesce, 1, 16),
    "contains": (_fn_contains, 2, 2),
    "keys": (_fn_keys, 1, 1),
}
"""The built-in pure functions: name -> (implementation, fewest arguments, most arguments)."""


def _member(item: Json, container: Json) -> bool:
    if isinstance(container, list):
        return item in container
    if isinstance(container, dict):
        return isinstance(item, str) and item in container
    if isinstance(container, str) and isinstance(item, str):
        return item in container
    raise ExpressionError(f"`in` needs a list, object or string on its right, not {type_name(container)}")


def _equal(left: Json, right: Json) -> bool:
    if isinstance(left, bool) != isinstance(right, bool):
        return False
    return bool(left == right)


def _order(op: str, left: Json, right: Json) -> bool:
    if (_is_number(left) and _is_number(right)) or (isinstance(left, str) and isinstance(right, str)):
        if op == "<":
            return bool(left < right)
        if op == "<=":
            return bool(left <= right)
        if op == ">":
            return bool(left > right)
        return bool(left >= right)
    raise ExpressionError(f"cannot compare {type_name(left)} {op} {type_name(right)}")


def _arith(op: str, left: Json, right: Json) -> Json:
    if op == "+" and isinstance(left, str) and isinstance(right, str):
        return _bounded(left + right)
    if op == "+" and isinstance(left, list) and isinstance(right, list):
        return _bounded(left + right)
    if not (_is_number(left) and _is_number(right)):
        raise ExpressionError(f"cannot compute {type_name(left)} {op} {type_name(right)}")
    if op == "+":
        result = left + right
    elif op == "-":
        result = left - right
    elif op == "*":
        result = left * right
    else:
        if right == 0:
            raise ExpressionError("division by zero")
        result = left / right if op == "/" else left % right
    if isinstance(result, float) and not math.isfinite(result):
        raise ExpressionError("arithmetic overflow")
    return result


def _truthy(value: Json, where: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ExpressionError(f"{where} needs true or false, not {type_name(value)}")


def compile_expr(expr: Expr) -> Evaluator:
    """Turn an expression tree into a function of a scope (name -> JSON value)."""
    if isinstance(expr, Literal):
        value = expr.value
        return lambda scope: value
    if isinstance(expr, Var):
        name = expr.name

        def read_var(scope: Scope) -> Json:
            if name not in scope:
                raise ExpressionError(f"`{name}` is not bound here")
            return scope[name]

        return read_var
    if isinstance(expr, Field):
        base = compile_expr(expr.base)
        key = expr.name

        def read_field(scope: Scope) -> Json:
            obj = base(scope)
            if isinstance(obj, dict):
                return obj.get(key)
            if obj is None:
                return None
            raise ExpressionError(f"cannot read field `{key}` of a {type_name(obj)}")

        return read_field
    if isinstance(expr, Index):
        base_i = compile_expr(expr.base)
        key_i = compile_expr(expr.key)

        def read_index(scope: Scope) -> Json:
            obj = base_i(scope)
            k = key_i(scope)
            if isinstance(obj, list) and isinstance(k, int) and not isinstance(k, bool):
                return obj[k] if -len(obj) <= k < len(obj) else None
            if isinstance(obj, dict) and isinstance(k, str):
                return obj.get(k)
            if obj is None:
                return None
            raise ExpressionError(f"cannot index a {type_name(obj)} with a {type_name(k)}")

        return read_index
    if isinstance(expr, Unary):
        operand = compile_expr(expr.operand)
        if expr.op == "not":
            return lambda scope: not _truthy(operand(scope), "`not`")

        def negate(scope: Scope) -> Json:
            v = operand(scope)
            if not _is_number(v):
                raise ExpressionError(f"cannot negate a {type_name(v)}")
            return -v

        return negate
    if isinstance(expr, Binary):
        return _compile_binary(expr)
    if isinstance(expr, FuncCall):
        impl = FUNCTIONS[expr.name][0]
        args = tuple(compile_expr(a) for a in expr.args)
        return lambda scope: _bounded(impl(*(a(scope) for a in args)))
    if isinstance(expr, ListExpr):
        items = tuple(compile_expr(i) for i in expr.items)
        return lambda scope: [i(scope) for i in items]
    if isinstance(expr, ObjectExpr):
        pairs = tuple((k, compile_expr(v)) for k, v in expr.pairs)
        return lambda scope: {k: v(scope) for k, v in pairs}
    raise TypeError(type(expr).__name__)


def _compile_binary(expr: Binary) -> Evaluator:
    left = compile_expr(expr.left)
    right = compile_expr(expr.right)
    op = expr.op
    if op == "and":
        return lambda s: _truthy(left(s), "`and`") and _truthy(right(s), "`and`")
    if op == "or":
        return lambda s: _truthy(left(s), "`or`") or _truthy(right(s), "`or`")
    if op == "==":
        return lambda s: _equal(left(s), right(s))
    if op == "!=":
        return lambda s: not _equal(left(s), right(s))
    if op in ("<", "<=", ">", ">="):
        return lambda s: _order(op, left(s), right(s))
    if op == "in":
        return lambda s: _member(left(s), right(s))
    if op == "not in":
        return lambda s: not _member(left(s), right(s))
    return lambda s: _arith(op, left(s), right(s))


def evaluate(expr: Expr, scope: Scope) -> Json:
    """Evaluate an expression once (compiles it first; hot paths keep the compiled form)."""
    return compile_expr(expr)(scope)
