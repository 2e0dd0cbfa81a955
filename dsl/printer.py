"""Syntax tree -> canonical .proc text (what `procflow fmt` will write).

Parsing the printed text gives the same syntax tree, spans aside (a property test checks
it on programs generated from the grammar). The layout is fixed: two spaces a level; in a
process its header, limits, participants and events first, then its statements; in a step
its items in one order (`doc`, `status`, `send`, `await`, `on`, `on timeout`,
`compensate`, `nothing to undo`, `wait`), an item given twice last (the validator reports
it); expressions with only the parentheses their meaning needs. Comments are not kept yet.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from procflow.dsl import build
from procflow.dsl import expressions as ex
from procflow.dsl import syntax as sx

INDENT = "  "
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TYPE_NAMES = {"string", "number", "integer", "boolean", "object", "array"}

# How tightly each operator binds (higher binds tighter), as the grammar's expression rules nest.
_OR, _AND, _NOT, _COMPARE, _SUM, _PRODUCT, _NEGATE, _POSTFIX = range(1, 9)
_BINARY_LEVEL = {
    "or": _OR,
    "and": _AND,
    **dict.fromkeys(("==", "!=", "<", "<=", ">", ">=", "in", "not in"), _COMPARE),
    "+": _SUM,
    "-": _SUM,
    "*": _PRODUCT,
    "/": _PRODUCT,
    "%": _PRODUCT,
}


def format_source(source: sx.SourceFile) -> str:
    """A parsed file (with its scenarios: parse it with `scenarios=True`) as canonical text."""
    parts = [format_process(source.process)]
    parts += [format_scenario(scenario) for scenario in source.scenarios]
    return "\n".join(parts)


# ---------------------------------------------------------------- literals


def string_literal(value: str, indent: str = "") -> str:
    """A string value as a literal: in three quotes when it runs over several lines and reads
    back the same so, else in double quotes with `\\`, `"` and new lines escaped."""
    if "\n" in value:
        lines = [f"{indent}{INDENT}{line}" if line else "" for line in value.split("\n")]
        doc = '"""\n' + "\n".join(lines) + f'\n{indent}"""'
        if '"""' not in value and build.string(doc) == value:
            return doc
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _number(value: int | float) -> str:
    if isinstance(value, int):
        return str(value)
    return repr(value)  # the shortest text that reads back as the same float; NUMBER accepts its form


def _factor(value: float) -> str:
    """A backoff factor as `FACTOR` reads it: digits, an optional fraction, no exponent."""
    text = format(Decimal(repr(value)), "f")
    return "x" + (text.rstrip("0").rstrip(".") if "." in text else text)


def _value(value: Any) -> str:
    """A constant (a `case` value or a literal)."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return string_literal(value)
    return _number(value)


def _name_or_string(text: str) -> str:
    return text if _NAME.fullmatch(text) else string_literal(text)


# ---------------------------------------------------------------- expressions


def format_expr(expr: ex.Expr) -> str:
    """An expression with only the parentheses its meaning needs."""
    return _expr(expr, 0)


def _level(expr: ex.Expr) -> int:
    if isinstance(expr, ex.Binary):
        return _BINARY_LEVEL[expr.op]
    if isinstance(expr, ex.Unary):
        return _NOT if expr.op == "not" else _NEGATE
    return _POSTFIX


def _expr(expr: ex.Expr, least: int) -> str:
    """`expr` where the grammar expects an expression that binds at least as tightly as `least`."""
    text = _bare(expr)
    return f"({text})" if _level(expr) < least else text


def _bare(expr: ex.Expr) -> str:
    match expr:
        case ex.Literal(value=value):
            return _value(value)
        case ex.Var(name=name):
            return name
        case ex.Field(base=base, name=name):
            return f"{_expr(base, _POSTFIX)}.{name}"
        case ex.Index(base=base, key=key):
            return f"{_expr(base, _POSTFIX)}[{format_expr(key)}]"
        case ex.Unary(op="not", operand=operand):
            return f"not {_expr(operand, _NOT)}"
        case ex.Unary(operand=operand):
            inner = _expr(operand, _NEGATE)
            return f"- {inner}" if inner.startswith("-") else f"-{inner}"
        case ex.Binary(op=op, left=left, right=right):
            level = _BINARY_LEVEL[op]
            if level == _COMPARE:  # `sum COMP_OP sum`: no chains, either side a sum
                return f"{_expr(left, _SUM)} {op} {_expr(right, _SUM)}"
            return f"{_expr(left, level)} {op} {_expr(right, level + 1)}"  # left-associative
        case ex.FuncCall(name=name, args=args):
            return f"{name}({', '.join(format_expr(arg) for arg in args)})"
        case ex.ListExpr(items=items):
            return f"[{', '.join(format_expr(item) for item in items)}]"
        case ex.ObjectExpr():
            return format_mapping(expr)
    raise TypeError(f"not an expression node: {expr!r}")


def format_mapping(mapping: ex.ObjectExpr) -> str:
    """`{ key: value, ... }`."""
    if not mapping.pairs:
        return "{}"
    return "{ " + ", ".join(f"{_name_or_string(key)}: {format_expr(value)}" for key, value in mapping.pairs) + " }"


def _with_data(head: str, data: ex.ObjectExpr | None) -> str:
    return f"{head} {format_mapping(data)}" if data is not None else head


# ---------------------------------------------------------------- types


def format_record(record: sx.RecordType) -> str:
    """`{ name: type, other?: type }`."""
    return _record(record.to_schema())


def _record(schema: dict[str, Any]) -> str:
    properties: dict[str, Any] = schema["properties"]
    if not properties:
        return "{}"
    required = set(schema.get("required", ()))
    fields = [f"{_name_or_string(name)}{'' if name in required else '?'}: {_type(spec)}" for name, spec in properties.items()]
    return "{ " + ", ".join(fields) + " }"


def _type(schema: dict[str, Any]) -> str:
    """A field type from the JSON Schema the parser made of it (`expression_rules.ExpressionRules.type_*`)."""
    if not schema:
        return "any"
    if "enum" in schema:
        return " | ".join(string_literal(value) for value in schema["enum"])
    if schema["type"] == "object" and "properties" in schema:
        return _record(schema)
    if schema["type"] == "array" and "items" in schema:
        return _type(schema["items"]) + "[]"
    if schema["type"] in _TYPE_NAMES:
        return str(schema["type"])
    raise ValueError(f"not a type the language writes: {schema!r}")


# ---------------------------------------------------------------- the process


def format_process(process: sx.Process) -> str:
    """`process name { ... }`."""
    lines = [f"process {process.name.text} {{"]
    body = INDENT
    headers: list[tuple[str, Any]] = [(key, getattr(process, key)) for key in _HEADERS if key in process.header_spans]
    if process.deadline_handler is not None:
        headers = [(key, (value, process.deadline_handler) if key == "deadline" else value) for key, value in headers]
    if "input_record" in process.header_spans:
        headers.append(("input_record", process.input_record))
    if "input_file" in process.header_spans and process.input_file is not None:
        headers.append(("input_file", process.input_file[0]))
    headers += [(key, value) for (key, _), value in zip(process.duplicates, process.duplicate_items, strict=True)]
    lines += [body + _header(key, value, body) for key, value in headers]
    lines += [f"{body}limit {name} {value}" for name, (value, _) in process.limits.items()]
    for participant in process.participants:
        lines += _participant(participant, body)
    for event in process.events:
        line = f"{body}event {event.name.text}"
        lines.append(f"{line} {format_record(event.payload)}" if event.payload is not None else line)
    if process.body and len(lines) > 1:
        lines.append("")
    for statement in process.body:
        lines += _statement(statement, body)
    lines.append("}")
    return "\n".join(lines) + "\n"


_HEADERS = ("version", "title", "doc", "correlate", "reply_to", "deadline")


def _header(key: str, value: Any, indent: str) -> str:
    if key == "version":
        return f"version {value}"
    if key in ("title", "doc"):
        return f"{key} {string_literal(value, indent)}"
    if key == "correlate":
        return f"correlate by {format_expr(value)}"
    if key == "reply_to":
        return f"reply to {string_literal(value)}"
    if key == "deadline" and isinstance(value, tuple):  # with its handler, on lines of its own
        duration, handler = value
        return "\n".join(_braced(f"deadline {duration.text}", handler, indent)).removeprefix(indent)
    if key == "deadline":
        return f"deadline {value.text}"
    if key == "input_record":
        return f"input {format_record(value)}"
    return f"input from {string_literal(value)}"


def _participant(participant: sx.Participant, indent: str) -> list[str]:
    head = f"{indent}participant {participant.name.text}"
    if participant.display is not None:
        head += f" {string_literal(participant.display)}"
    if not participant.contracts:
        return [head]
    lines = [head + " {"]
    for contract in participant.contracts:
        line = f"{indent}{INDENT}{contract.kind} {contract.name.text}"
        lines.append(f"{line} {format_record(contract.payload)}" if contract.payload is not None else line)
    return [*lines, indent + "}"]


# ---------------------------------------------------------------- statements


def _block(statements: tuple[sx.Statement, ...], indent: str) -> list[str]:
    """The statements of a block, between the braces the caller writes."""
    lines: list[str] = []
    for statement in statements:
        lines += _statement(statement, indent + INDENT)
    return lines


def _braced(head: str, statements: tuple[sx.Statement, ...], indent: str, tail: str = "") -> list[str]:
    """`head { statements }tail`, on lines of its own."""
    if not statements:
        return [f"{indent}{head} {{}}{tail}"]
    return [f"{indent}{head} {{", *_block(statements, indent), f"{indent}}}{tail}"]


def _statement(statement: sx.Statement, indent: str) -> list[str]:
    match statement:
        case sx.Step():
            return _step(statement, indent)
        case sx.If(arms=arms, otherwise=otherwise):
            lines: list[str] = []
            for index, (condition, body) in enumerate(arms):
                head = f"if {format_expr(condition)}"
                lines += _joined(lines, head if index == 0 else f"else {head}", body, indent)
            if otherwise is not None:
                lines += _joined(lines, "else", otherwise, indent)
            return lines
        case sx.Switch(subject=subject, cases=cases, default=default):
            lines = [f"{indent}switch {format_expr(subject)} {{"]
            for case in cases:
                lines += _braced("case " + ", ".join(_value(value) for value in case.values), case.body, indent + INDENT)
            if default is not None:
                lines += _braced("default", default, indent + INDENT)
            return [*lines, indent + "}"]
        case sx.Parallel(name=name, branches=branches):
            lines = [f"{indent}parallel {name.text} {{" if name else f"{indent}parallel {{"]
            for branch in branches:
                lines += _braced(f"branch {branch.name.text}", branch.body, indent + INDENT)
            return [*lines, indent + "}"]
        case sx.Race(name=name, arms=arms):
            lines = [f"{indent}race {name.text} {{"]
            for arm in arms:
                lines += _braced(_race_arm(arm), arm.body, indent + INDENT)
            return [*lines, indent + "}"]
        case sx.Repeat(name=name, max=bound, body=body, until=until, bound_reached=otherwise):
            head = "repeat" + (f" {name.text}" if name else "") + (f" max {bound}" if bound is not None else "")
            lines = _braced(head, body, indent, f" until {format_expr(until)}")
            if otherwise is None:
                return lines
            tail = _braced("else", otherwise, indent)
            return [*lines[:-1], lines[-1] + " " + tail[0].lstrip(), *tail[1:]]
        case sx.Call(process=process, path=path, data=data, bind=bind):
            line = f"call {process.text}" + (f" from {string_literal(path)}" if path is not None else "")
            line = _with_data(line, data) + (f" as {bind.text}" if bind else "")
            return [indent + line]
        case sx.Fail(reason=reason):
            return [f"{indent}fail {string_literal(reason)}"]
        case sx.End(outcome=outcome):
            return [f"{indent}end" + (f" {string_literal(outcome)}" if outcome is not None else "")]
    raise TypeError(f"not a statement: {statement!r}")


def _joined(lines: list[str], head: str, body: tuple[sx.Statement, ...], indent: str) -> list[str]:
    """An `if` arm, or the `else` after one: on the line of the `}` before it, if any."""
    arm = _braced(head, body, indent)
    if lines:
        lines[-1] += " " + arm[0].lstrip()
        return arm[1:]
    return arm


def _race_arm(arm: sx.RaceArm) -> str:
    if arm.after is not None:
        return f"on timer {arm.after.text}"
    if arm.at is not None:
        return f"on timer at {format_expr(arm.at)}"
    return "on " + ", ".join(name.text for name in arm.messages) + (f" as {arm.bind.text}" if arm.bind else "")


def _step(step: sx.Step, indent: str) -> list[str]:
    inner = indent + INDENT
    items: list[tuple[str, Any]] = [
        (key, value)
        for key, value in (
            ("doc", step.doc),
            ("status", step.status),
            ("send", step.send),
            ("await", step.await_),
        )
        if value is not None
    ]
    items += [("on", on) for on in step.on_replies]
    if step.timeout_reason is not None:
        items.append(("on timeout", step.timeout_reason))
    if step.timeout_handler is not None:
        items.append(("on timeout", step.timeout_handler))
    if step.compensate is not None:
        items.append(("compensate", step.compensate))
    if step.nothing_to_undo is not None:
        items.append(("nothing to undo", step.nothing_to_undo))
    if step.wait is not None:
        items.append(("wait", step.wait))
    items += [(key, value) for (key, _), value in zip(step.duplicates, step.duplicate_items, strict=True)]
    lines = [f"{indent}step {step.name.text} {{"]
    for key, value in items:
        handler = _handler(key, value)
        if handler is None:
            lines.append(inner + _step_item(key, value, inner))
        else:  # a recovery path: its block on lines of its own
            lines += _braced(handler[0], handler[1], inner)
    return [*lines, indent + "}"]


def _handler(key: str, value: Any) -> tuple[str, tuple[sx.Statement, ...]] | None:
    """The head and block of a recovery path (`on r as x { ... }`, `on timeout { ... }`), else None."""
    match key, value:
        case "on", sx.OnReply(replies=replies, bind=bind, handler=tuple() as handler, retry=retry):
            names = ", ".join(name.text for name in replies)
            return f"on {names}" + (f" as {bind.text}" if bind else "") + _reply_retry(retry), handler
        case "on timeout", tuple():
            return "on timeout", value
    return None


def _step_item(key: str, value: Any, indent: str) -> str:
    match key, value:
        case "doc", str():
            return f"doc {string_literal(value, indent)}"
        case "status", sx.Name(text=text):
            return f"status {text}"
        case "send", sx.Send(participant=participant, command=command, data=data):
            return _with_data(f"send {participant.text}.{command.text}", data)
        case "await", sx.Await(replies=replies, bind=bind, timeout=timeout):
            line = "await " + ", ".join(name.text for name in replies) + (f" as {bind.text}" if bind else "")
            return line + _timeout(timeout)
        case "on", sx.OnReply(replies=replies, bind=bind, reason=str() as reason, retry=retry):
            names = ", ".join(name.text for name in replies)
            return f"on {names}" + (f" as {bind.text}" if bind else "") + _reply_retry(retry) + f" fail {string_literal(reason)}"
        case "on timeout", str():
            return f"on timeout fail {string_literal(value)}"
        case "compensate", sx.Compensate(participant=participant, command=command, data=data, replies=replies, timeout=timeout):
            line = _with_data(f"compensate {participant.text}.{command.text}", data)
            if replies:
                line += " awaiting " + ", ".join(name.text for name in replies)
            return line + _timeout(timeout) + (" even on " + ", ".join(n.text for n in value.even_on) if value.even_on else "")
        case "nothing to undo", str():
            return f"nothing to undo {string_literal(value)}" if value else "nothing to undo"
        case "wait", sx.Wait(duration=duration, until=until):
            return f"wait {duration.text}" if duration is not None else f"wait until {format_expr(until)}"  # type: ignore[arg-type]
    raise TypeError(f"not a step item: {key} {value!r}")


def _timeout(timeout: sx.Timeout | None) -> str:
    if timeout is None:
        return ""
    return f" within {timeout.duration.text}" + _retry(timeout.retry)


def _retry(retry: sx.Retry | None) -> str:
    if retry is None:
        return ""
    text = f" retry {retry.count}"
    if retry.backoff is not None:
        text += f" backoff {retry.backoff.text}"
        if retry.factor != 1.0:
            text += " " + _factor(retry.factor)
    return text


def _reply_retry(retry: sx.ReplyRetry | None) -> str:
    """` retry N backoff D xF max M jitter then` of an error reply, or nothing."""
    if retry is None:
        return ""
    text = _retry(retry.retry)
    if retry.max_delay is not None:
        text += f" max {retry.max_delay.text}"
    return text + (" jitter" if retry.jitter else "") + " then"


# ---------------------------------------------------------------- scenarios


def format_scenario(scenario: sx.Scenario) -> str:
    """`scenario name "description" { ... }`."""
    head = f"scenario {scenario.name.text}" + (f" {string_literal(scenario.description)}" if scenario.description is not None else "")
    lines = [head + " {"]
    body = INDENT
    if scenario.input is not None:
        lines.append(f"{body}input {format_mapping(scenario.input)}")
    if scenario.start_at is not None:
        lines.append(f"{body}start at {string_literal(scenario.start_at[0])}")
    for rule in scenario.rules:
        lines.append(body + _when(rule))
    for delivery in scenario.deliveries:
        lines.append(body + _with_data(f"deliver {delivery.event.text}", delivery.data) + f" after {delivery.after.text}")
    if scenario.silenced:
        lines.append(f"{body}no event " + ", ".join(name.text for name in scenario.silenced))
    for expectation in scenario.expectations:
        lines.append(body + _expectation(expectation))
    lines.append("}")
    return "\n".join(lines) + "\n"


def _when(rule: sx.WhenRule) -> str:
    line = f"when {rule.participant.text}.{rule.command.text}" + (f" attempt {rule.attempt}" if rule.attempt is not None else "")
    if rule.reply is None:
        return line + " no reply"
    line = _with_data(f"{line} reply {rule.reply.text}", rule.data)
    if rule.after is not None:
        line += f" after {rule.after.text}"
    return line + (" twice" if rule.twice else "")


def _expectation(expectation: sx.Expectation) -> str:
    kind, value = expectation.kind, expectation.value
    if kind == "status":
        return f"expect status {value}"
    if kind in ("failure", "outcome"):
        return f"expect {kind} {string_literal(value)}"
    return f"expect {kind} [{', '.join(value)}]"
