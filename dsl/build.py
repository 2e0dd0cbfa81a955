"""Building syntax nodes from the pieces of a rule: shared by both readers of the grammar.

`parser.py` reads text with Lark (and explains mistakes); `reader.py` reads the same grammar by
recursive descent, fast. Both hand the parts of each rule to these functions, so a node is
built, and a bad literal refused, in one place only.
"""

from __future__ import annotations

import difflib
import re
from functools import lru_cache
from typing import Any

from procflow.dsl import expressions as ex
from procflow.dsl import syntax as sx
from procflow.dsl.diagnostics import Span

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h|d|w)")
_ESCAPE = re.compile(r"\\(.)")
_ESCAPES = {"n": "\n", "t": "\t"}


class BadLiteral(Exception):
    """Text the grammar accepts but the language refuses (a bad number, an unknown function...)."""

    def __init__(self, code: str, message: str, span: Span, hint: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.span = span
        self.hint = hint


@lru_cache(maxsize=4096)
def parse_duration(text: str) -> float:
    """Seconds in a duration literal such as `1h30m`."""
    return sum(int(n) * _UNITS[unit] for n, unit in _DURATION_PART.findall(text))


def duration(text: str, span: Span) -> sx.Duration:
    return sx.Duration(parse_duration(text), text, span)


def string(text: str) -> str:
    """The value of a string literal as written (quotes, escapes, doc-string indentation)."""
    if text.startswith('"""'):
        return _dedent_doc(text[3:-3])
    body = text[1:-1]
    if "\\" not in body:
        return body
    return _ESCAPE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(1)), body)


def _dedent_doc(text: str) -> str:
    lines = text.strip("\n").splitlines()
    indents = [len(line) - len(line.lstrip()) for line in lines if line.strip()]
    cut = min(indents) if indents else 0
    return "\n".join(line[cut:] for line in lines).strip()


def integer(text: str, span: Span, what: str) -> int:
    if not text.isdigit():
        raise BadLiteral("E006", f"{what} must be a whole number, not `{text}`", span)
    return int(text)


def number(text: str) -> Any:
    return float(text) if "." in text or "e" in text or "E" in text else int(text)


# ---------------------------------------------------------------- expressions


def chain(items: list[ex.Expr], op: str) -> ex.Expr:
    """`a and b and c` -> ((a and b) and c), each spanning its operands."""
    result = items[0]
    for right in items[1:]:
        span = Span(result.span.line, result.span.column, right.span.end_line, right.span.end_column)
        result = ex.Binary(span, op, result, right)
    return result


def func_call(name: str, name_span: Span, args: list[ex.Expr], span: Span) -> ex.Expr:
    if name not in ex.FUNCTIONS:
        guess = difflib.get_close_matches(name, list(ex.FUNCTIONS), n=1)
        raise BadLiteral(
            "E103",
            f"unknown function `{name}`",
            name_span,
            f"did you mean `{guess[0]}`?" if guess else "functions: " + ", ".join(sorted(ex.FUNCTIONS)),
        )
    _, fewest, most = ex.FUNCTIONS[name]
    if not fewest <= len(args) <= most:
        want = str(fewest) if fewest == most else f"{fewest} to {most}"
        raise BadLiteral("E104", f"`{name}()` takes {want} argument{'s' if most != 1 else ''}, not {len(args)}", span)
    return ex.FuncCall(span, name, tuple(args))


def mapping(pairs: list[tuple[str, ex.Expr, Span]], span: Span) -> ex.ObjectExpr:
    seen: set[str] = set()
    for key, _value, key_span in pairs:
        if key in seen:
            raise BadLiteral("E105", f"the key `{key}` is given twice in this object", key_span)
        seen.add(key)
    return ex.ObjectExpr(span, tuple((k, v) for k, v, _ in pairs))


# ---------------------------------------------------------------- types


def record_type(fields: tuple[tuple[sx.Name, bool, sx.TypeSpec], ...], span: Span) -> sx.RecordType:
    seen: set[str] = set()
    for name, _, _ in fields:
        if name.text in seen:
            raise BadLiteral("E105", f"the field `{name.text}` is declared twice", name.span)
        seen.add(name.text)
    return sx.RecordType(fields, span)


def type_name(name: str, span: Span) -> sx.TypeSpec:
    return sx.TypeSpec({} if name == "any" else {"type": name}, span)


def enum_type(values: list[str], span: Span) -> sx.TypeSpec:
    return sx.TypeSpec({"type": "string", "enum": values}, span)


def array_type(item: sx.TypeSpec, span: Span) -> sx.TypeSpec:
    return sx.TypeSpec({"type": "array", "items": item.schema}, span)


# ---------------------------------------------------------------- blocks with items


def process(name: sx.Name, span: Span, items: list[Any]) -> sx.Process:
    """A process from its items: header tuples, limits, participants, events and statements."""
    proc = sx.Process(name=name, span=span)
    for item in items:
        if isinstance(item, tuple) and item[0] == "header":
            _, key, value, item_span = item
            if key in proc.header_spans:
                proc.duplicates.append((key, item_span))
                continue
            proc.header_spans[key] = item_span
            if key == "input_record":
                proc.input_record = value
            elif key == "input_file":
                proc.input_file = (value, item_span)
            else:
                setattr(proc, key, value)
        elif isinstance(item, tuple) and item[0] == "limit":
            _, limit_name, value, item_span = item
            proc.limits[limit_name] = (value, item_span)
        elif isinstance(item, sx.Participant):
            proc.participants.append(item)
        elif isinstance(item, sx.EventDecl):
            proc.events.append(item)
        else:
            proc.body.append(item)
    return proc


def step(name: sx.Name, span: Span, items: list[Any]) -> sx.Step:
    """A step from its items; an item given twice is kept as a duplicate for the validator."""
    result = sx.Step(name=name, span=span)
    seen: dict[str, Span] = {}

    def once(key: str, item_span: Span) -> bool:
        if key in seen:
            result.duplicates.append((key, item_span))
            return False
        seen[key] = item_span
        return True

    for item in items:
        if isinstance(item, sx.Send):
            if once("send", item.span):
                result.send = item
        elif isinstance(item, sx.Await):
            if once("await", item.span):
                result.await_ = item
        elif isinstance(item, sx.OnReply):
            result.on_replies.append(item)
        elif isinstance(item, sx.Compensate):
            if once("compensate", item.span):
                result.compensate = item
        elif isinstance(item, sx.Wait):
            if once("wait", item.span):
                result.wait = item
        elif item[0] == "header":  # doc
            if once("doc", item[3]):
                result.doc = item[2]
        elif item[0] == "status":
            if once("status", item[1].span):
                result.status = item[1]
        elif item[0] == "on_timeout":
            if once("on timeout", item[2]):
                result.timeout_reason = item[1]
                result.timeout_span = item[2]
        elif item[0] == "nothing_to_undo" and once("nothing to undo", item[2]):
            result.nothing_to_undo = item[1]
            result.nothing_to_undo_span = item[2]
    return result


def scenario(name: sx.Name, description: str | None, span: Span, items: list[Any]) -> sx.Scenario:
    sc = sx.Scenario(name, description, span)
    for item in items:
        if isinstance(item, ex.ObjectExpr):
            sc.input = item
        elif isinstance(item, sx.WhenRule):
            sc.rules.append(item)
        elif isinstance(item, sx.DeliverRule):
            sc.deliveries.append(item)
        elif isinstance(item, sx.Expectation):
            sc.expectations.append(item)
        elif item[0] == "start":
            sc.start_at = (item[1], item[2])
        elif item[0] == "silence":
            sc.silenced.extend(item[1])
    return sc
