"""Building syntax nodes from the parts of a rule, and the checks on literals.

`transformer.py` hands the parts of each rule of the grammar to these functions, so a node
is built, and a bad literal refused, in one place. A literal over one of the limits on text
(`procflow.limits`) is refused here as it is read, with a diagnostic that names the limit.
"""

from __future__ import annotations

import difflib
import math
import re
from typing import Any

from procflow.dsl import expressions as ex
from procflow.dsl import syntax as sx
from procflow.dsl.diagnostics import Diagnostic, Span
from procflow.errors import InstantError
from procflow.instants import instant_problem, parse_instant
from procflow.limits import DURATION, LOOP_BOUND, NUMBER_LITERAL, STRING_LITERAL

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h|d|w)")
_ESCAPE = re.compile(r"\\(.)")
_ESCAPES = {"n": "\n", "t": "\t"}
_LONGEST_SHOWN = 30
_SECONDS_A_YEAR = 365.25 * 86400


class BadLiteral(Exception):
    """Text the grammar accepts but the language refuses (a bad number, an unknown function,
    a literal over a limit...): the parts of its diagnostic, without the file."""

    def __init__(self, code: str, message: str, span: Span, hint: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.span = span
        self.hint = hint

    def diagnostic(self, path: str) -> Diagnostic:
        """The refusal as an error diagnostic in `path`."""
        return Diagnostic(self.code, "error", self.message, self.span, self.hint, path)


def _shown(text: str) -> str:
    return text if len(text) <= _LONGEST_SHOWN else text[: _LONGEST_SHOWN - 3] + "..."


# ---------------------------------------------------------------- literals


def check_string(text: str, span: Span) -> None:
    """Refuse a string literal (quotes included in `text`) over the `string_literal` limit."""
    quotes = 6 if text.startswith('"""') else 2
    length = len(text) - quotes
    if length > STRING_LITERAL.value:
        raise BadLiteral(
            "E007",
            f"this string is {length} characters long, over the `{STRING_LITERAL.name}` limit of {STRING_LITERAL.value} characters",
            span,
            "pass long texts in the input instead of writing them in the process",
        )


def check_number(text: str, span: Span) -> None:
    """Refuse a number literal over the `number_literal` limit, or too large for a float."""
    if len(text) > NUMBER_LITERAL.value:
        raise BadLiteral(
            "E008",
            f"this number is {len(text)} characters long, over the `{NUMBER_LITERAL.name}` limit of {NUMBER_LITERAL.value} characters",
            span,
        )
    if not math.isfinite(float(text)):
        raise BadLiteral("E008", f"the number `{text}` is too large to represent", span)


def check_duration(text: str, span: Span) -> None:
    """Refuse a duration over the `duration` limit (a part with more digits than any duration
    under the limit has is refused before it is turned into a number)."""
    longest_part = len(str(DURATION.value * 1000))  # the most digits a part under the limit has, in ms
    parts = _DURATION_PART.findall(text)
    if any(len(digits) > longest_part for digits, _ in parts) or _seconds(parts) > DURATION.value:
        raise BadLiteral(
            "E009",
            f"the duration `{_shown(text)}` is longer than the `{DURATION.name}` limit of {DURATION.value} seconds"
            f" (about {round(DURATION.value / _SECONDS_A_YEAR)} years)",
            span,
        )


def check_wait_total(within: float, retries: int, backoff: float, factor: float, span: Span) -> None:
    """Refuse a wait whose attempts and backoffs add up to more than the `duration` limit
    (`within 1h retry 2000 backoff 1s x2` waits 2^1999 seconds before its last attempt): every
    due time the engine computes from it must stay representable, as for a single duration."""
    if retries <= 0:
        return
    if backoff == 0 or factor == 1:
        total = (retries + 1) * within + retries * backoff
    elif factor > 1 and retries * math.log(factor) > math.log(DURATION.value / backoff * (factor - 1) + 1):
        total = math.inf  # the backoffs alone pass the limit; f**n itself may not be representable
    else:
        total = (retries + 1) * within + backoff * (factor**retries - 1) / (factor - 1)
    if total > DURATION.value:
        raise BadLiteral(
            "E009",
            f"this wait's attempts and backoffs add up to more than the `{DURATION.name}` limit of {DURATION.value}"
            f" seconds (about {round(DURATION.value / _SECONDS_A_YEAR)} years)",
            span,
            "retry fewer times, or with a smaller backoff or factor",
        )


def _seconds(parts: list[tuple[str, str]]) -> float:
    return sum(int(digits) * _UNITS[unit] for digits, unit in parts)


def parse_duration(text: str) -> float:
    """Seconds in a duration literal such as `1h30m`."""
    return _seconds(_DURATION_PART.findall(text))


def duration(text: str, span: Span) -> sx.Duration:
    """A duration literal as a node."""
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
    """A literal that must be a whole number (a version, a retry count, a loop bound...)."""
    if not text.isdigit():
        raise BadLiteral("E006", f"{what} must be a whole number, not `{text}`", span)
    return int(text)


def loop_bound(text: str, span: Span) -> int:
    """The `max` of a `repeat`: a whole number within the `loop_bound` limit."""
    bound = integer(text, span, "a loop bound")
    if bound > LOOP_BOUND.value:
        raise BadLiteral(
            "E010",
            f"a loop bound of {bound} rounds is over the `{LOOP_BOUND.name}` limit of {LOOP_BOUND.value} rounds",
            span,
            "a longer job belongs in a participant, which the process waits for",
        )
    return bound


def retry_rounds(retry: sx.Retry) -> None:
    """A retry count within the `loop_bound` limit: each retry is a round of send and reply,
    and `procflow paths` lists every command a path sends (`retry 99999999` on a 1 ms wait was
    within the `duration` limit and made it build a list of a hundred million sends)."""
    if retry.count > LOOP_BOUND.value:
        raise BadLiteral(
            "E010",
            f"a retry count of {retry.count} is over the `{LOOP_BOUND.name}` limit of {LOOP_BOUND.value} rounds",
            retry.span,
            "retry fewer times; a longer job belongs in a participant, which the process waits for",
        )


def reply_retry_count(retry: sx.Retry) -> None:
    """The count of a retry on an error reply (`retry_rounds`), and its backoffs within the
    `duration` limit."""
    retry_rounds(retry)
    check_wait_total(0.0, retry.count, retry.backoff.seconds if retry.backoff else 0.0, retry.factor, retry.span)


def start_instant(text: str, span: Span) -> str:
    """A scenario's `start at` text, refused unless it is an instant procflow computes with, so
    that `validate` says so at the line rather than `test` when the scenario runs."""
    try:
        problem = instant_problem(parse_instant(text))
    except InstantError as error:
        problem = str(error)
    except ValueError:
        problem = f"`{text}` is not an ISO-8601 instant"
    if problem:
        raise BadLiteral("E011", f"a scenario cannot start at this instant: {problem}", span,
                         'write an ISO-8601 instant such as "2026-03-23T16:00:00Z"')
    return text


def number(text: str) -> Any:
    """The value of a number literal: an int when written without a fraction or exponent."""
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
    """A call of a built-in function, refused when the function is unknown or the count of
    arguments is wrong."""
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
    """An object from its (key, value, key's span) pairs; a key given twice is refused."""
    seen: set[str] = set()
    for key, _value, key_span in pairs:
        if key in seen:
            raise BadLiteral("E105", f"the key `{key}` is given twice in this object", key_span)
        seen.add(key)
    return ex.ObjectExpr(span, tuple((k, v) for k, v, _ in pairs))


# ---------------------------------------------------------------- types


def record_type(fields: tuple[tuple[sx.Name, bool, sx.TypeSpec], ...], span: Span) -> sx.RecordType:
    """A record type from its (name, optional, type) fields; a field declared twice is refused."""
    seen: set[str] = set()
    for name, _, _ in fields:
        if name.text in seen:
            raise BadLiteral("E105", f"the field `{name.text}` is declared twice", name.span)
        seen.add(name.text)
    return sx.RecordType(fields, span)


def type_name(name: str, span: Span) -> sx.TypeSpec:
    """`string`, `number`, ... `any` as JSON Schema."""
    return sx.TypeSpec({} if name == "any" else {"type": name}, span)


def enum_type(values: list[str], span: Span) -> sx.TypeSpec:
    """`"a" | "b"` as JSON Schema."""
    return sx.TypeSpec({"type": "string", "enum": values}, span)


def array_type(item: sx.TypeSpec, span: Span) -> sx.TypeSpec:
    """`type[]` as JSON Schema."""
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
                proc.duplicate_items.append(value)
                continue
            proc.header_spans[key] = item_span
            if key == "deadline" and isinstance(value, tuple):  # `deadline 3d { ... }`: with its handler
                proc.deadline, proc.deadline_handler = value
            elif key == "input_record":
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

    def once(key: str, item_span: Span, item: Any) -> bool:
        if key in seen:
            result.duplicates.append((key, item_span))
            result.duplicate_items.append(item)
            return False
        seen[key] = item_span
        return True

    for item in items:
        if isinstance(item, sx.Send):
            if once("send", item.span, item):
                result.send = item
        elif isinstance(item, sx.Await):
            if once("await", item.span, item):
                result.await_ = item
        elif isinstance(item, sx.OnReply):
            result.on_replies.append(item)
        elif isinstance(item, sx.Compensate):
            if once("compensate", item.span, item):
                result.compensate = item
        elif isinstance(item, sx.Wait):
            if once("wait", item.span, item):
                result.wait = item
        elif item[0] == "header":  # doc
            if once("doc", item[3], item[2]):
                result.doc = item[2]
                result.doc_span = item[3]
        elif item[0] == "status":
            if once("status", item[1].span, item[1]):
                result.status = item[1]
        elif item[0] == "on_timeout":
            if once("on timeout", item[2], item[1]):
                if isinstance(item[1], tuple):
                    result.timeout_handler = item[1]
                else:
                    result.timeout_reason = item[1]
                result.timeout_span = item[2]
        elif item[0] == "nothing_to_undo" and once("nothing to undo", item[2], item[1]):
            result.nothing_to_undo = item[1]
            result.nothing_to_undo_span = item[2]
    return result


def scenario(name: sx.Name, description: str | None, span: Span, items: list[Any]) -> sx.Scenario:
    """A scenario from its items (an `input` or `start at` given again replaces the earlier one)."""
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
