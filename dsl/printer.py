"""Syntax tree -> canonical .proc text (what `procflow fmt` will write).

Parsing the printed text gives the same syntax tree, spans aside (a property test checks
it on programs generated from the grammar). The layout is fixed: two spaces a level; in a
process its header, limits, participants and events first, then its statements; in a step
its items in one order (`doc`, `status`, `send`, `await`, `on`, `on timeout`,
`compensate`, `nothing to undo`, `wait`; a human task's `doc`, `status`, `form`, `details`,
then its `escalate` lines in their order), an item given twice last (the validator reports
it); expressions with only the parentheses their meaning needs.

Each printed line is a `Line` that remembers where what it prints stood in the source, so
that `formatter.py` can put every comment back beside the line that prints what the comment
stood beside. A new construct needs only its printing here: the formatter reads positions,
never the syntax tree.

Why one module of about 600 lines: it is one recursive printer, a function per kind of
node of the syntax tree; split by kind, each part would need all the others to print
what it nests.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from procflow.dsl import build
from procflow.dsl import expressions as ex
from procflow.dsl import syntax as sx
from procflow.dsl.diagnostics import Span
from procflow.dsl.lines import BLANK, INDENT, Line, Position, text_of, wrap

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
    return text_of(layout_source(source))


def layout_source(source: sx.SourceFile) -> list[Line]:
    """The canonical lines of a parsed file: the process, then each scenario after a blank line."""
    lines = layout_process(source.process)
    for scenario in source.scenarios:
        lines += [BLANK, *layout_scenario(scenario)]
    return lines


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


def _start(span: Span) -> Position:
    return (span.line, span.column)


def _end(span: Span) -> Position:
    return (span.end_line, span.end_column)


def _whole(indent: str, text: str, span: Span) -> Line:
    """A line that prints the whole node at `span` (broken over lines when it is too wide)."""
    return Line(indent, wrap(text, indent), _start(span), _end(span))


def _closing(indent: str, span: Span, text: str = "}") -> Line:
    """The `}` that ends the node at `span` (its last character)."""
    return Line(indent, text, (span.end_line, span.end_column - 1))


def format_process(process: sx.Process) -> str:
    """`process name { ... }`."""
    return text_of(layout_process(process))


def layout_process(process: sx.Process) -> list[Line]:
    """The lines of `process name { ... }`."""
    lines = [Line("", f"process {process.name.text} {{", _start(process.span))]
    body = INDENT
    headers: list[tuple[str, Any, Span]] = [
        (key, getattr(process, key), process.header_spans[key]) for key in _HEADERS if key in process.header_spans
    ]
    if "input_record" in process.header_spans:
        headers.append(("input_record", process.input_record, process.header_spans["input_record"]))
    if "input_file" in process.header_spans and process.input_file is not None:
        headers.append(("input_file", process.input_file[0], process.header_spans["input_file"]))
    if "output" in process.header_spans:
        headers.append(("output", process.output, process.header_spans["output"]))
    headers += [(key, value, span) for (key, span), value in zip(process.duplicates, process.duplicate_items, strict=True)]
    for key, value, span in headers:
        handler = process.deadline_handler if key == "deadline" and value is process.deadline else None
        if key == "deadline" and isinstance(value, tuple):  # a `deadline` given twice, with a handler
            value, handler = value
        if handler is not None:  # `deadline 30d { ... }`: the handler's block on lines of its own
            lines += _braced(f"deadline {value.text}", handler, body, Line(body, "", _start(span)))
        else:
            lines.append(_whole(body, _header(key, value, body), span))
    lines += [_whole(body, f"limit {name} {value}", span) for name, (value, span) in process.limits.items()]
    for participant in process.participants:
        lines += _participant(participant, body)
    for event in process.events:
        line = f"event {event.name.text}"
        lines.append(_whole(body, f"{line} {format_record(event.payload)}" if event.payload is not None else line, event.span))
    if process.body and len(lines) > 1:
        lines.append(BLANK)
    for statement in process.body:
        lines += _statement(statement, body)
    lines.append(_closing("", process.span))
    return lines


_HEADERS = ("version", "title", "doc", "correlate", "reply_to", "deadline", "undo_failure")


def _header(key: str, value: Any, indent: str) -> str:
    if key == "version":
        return f"version {value}"
    if key in ("title", "doc"):
        return f"{key} {string_literal(value, indent)}"
    if key == "correlate":
        return f"correlate by {format_expr(value)}"
    if key == "reply_to":
        return f"reply to {string_literal(value)}"
    if key == "deadline":
        return f"deadline {value.text}"
    if key == "undo_failure":
        return f"on undo failure {value}"
    if key == "input_record":
        return f"input {format_record(value)}"
    if key == "output":
        return f"output {format_mapping(value)}"
    return f"input from {string_literal(value)}"


def _participant(participant: sx.Participant, indent: str) -> list[Line]:
    head = f"participant {participant.name.text}"
    if participant.display is not None:
        head += f" {string_literal(participant.display)}"
    if not participant.contracts:
        return [_whole(indent, head, participant.span)]
    lines = [Line(indent, head + " {", _start(participant.span))]
    for contract in participant.contracts:
        line = f"{contract.kind} {contract.name.text}"
        text = f"{line} {format_record(contract.payload)}" if contract.payload is not None else line
        lines.append(_whole(indent + INDENT, text, contract.span))
    return [*lines, _closing(indent, participant.span)]


# ---------------------------------------------------------------- statements


def _block(statements: tuple[sx.Statement, ...], indent: str) -> list[Line]:
    """The statements of a block, between the braces the caller writes."""
    lines: list[Line] = []
    for statement in statements:
        lines += _statement(statement, indent + INDENT)
    return lines


def _for_each_head(stmt: sx.ForEach) -> str:
    """`for each line in input.lines in parallel at most 10 tolerate 2 failures collect results`."""
    head = f"for each {stmt.item.text} in {format_expr(stmt.items)}"
    if stmt.parallel:
        head += " in parallel" + (f" at most {stmt.at_most}" if stmt.at_most is not None else "")
    if stmt.tolerate_span is not None:
        head += f" tolerate {stmt.tolerate} {'failure' if stmt.tolerate == 1 else 'failures'}"
    return head + (f" collect {stmt.collect.text}" if stmt.collect else "")


def _braced(
    head: str, statements: tuple[sx.Statement, ...], indent: str, opener: Line, tail: str = "", close: Position | None = None
) -> list[Line]:
    """`head { statements }tail`, on lines of its own; `opener` says where the head stood,
    `close` where its `}` stands when the tree knows it (else it is looked for)."""
    after = _end(statements[-1].span) if statements else None  # an empty block: just after its head
    closing = Line(indent, f"}}{tail}", close, seek=None if close else ("}", after))
    head_line = Line(indent, f"{head} {{", opener.start, None, opener.seek, joins_next=not statements)
    return [head_line, *_block(statements, indent), closing]


def _statement(statement: sx.Statement, indent: str) -> list[Line]:
    at = Line(indent, "", _start(statement.span))
    match statement:
        case sx.Step():
            return _step(statement, indent)
        case sx.If(arms=arms, otherwise=otherwise):
            lines: list[Line] = []
            last = _closing(indent, statement.span).start  # the `}` of the last arm ends the statement
            for index, (condition, body) in enumerate(arms):
                head = f"if {format_expr(condition)}"
                opener = at if index == 0 else Line(indent, "", _start(condition.span))
                close = last if index == len(arms) - 1 and otherwise is None else None
                lines += _joined(lines, head if index == 0 else f"else {head}", body, indent, opener, close)
            if otherwise is not None:
                lines += _joined(lines, "else", otherwise, indent, at, last)
            return lines
        case sx.Switch(subject=subject, cases=cases, default=default):
            lines = [Line(indent, f"switch {format_expr(subject)} {{", _start(statement.span))]
            inner = indent + INDENT
            for case in cases:
                head = "case " + ", ".join(_value(value) for value in case.values)
                lines += _braced(head, case.body, inner, Line(inner, "", _start(case.span)), close=_closing(inner, case.span).start)
            if default is not None:
                after = _end(cases[-1].span)
                lines += _braced("default", default, inner, Line(inner, "", seek=("default", after)))
            return [*lines, _closing(indent, statement.span)]
        case sx.Parallel(name=name, branches=branches, undo_order=order, first=first):
            head = f"first of {name.text}" if first and name else f"parallel {name.text}" if name else "parallel"
            lines = [Line(indent, f"{head} {{", _start(statement.span))]
            if order is not None:
                lines.append(_whole(indent + INDENT, f"undo in {order.text}", order.span))
            for branch in branches:
                opener = Line(indent, "", _start(branch.span))
                lines += _braced(f"branch {branch.name.text}", branch.body, indent + INDENT, opener, close=_closing(indent, branch.span).start)
            return [*lines, _closing(indent, statement.span)]
        case sx.Race(name=name, arms=race_arms):
            lines = [Line(indent, f"race {name.text} {{", _start(statement.span))]
            for arm in race_arms:
                opener = Line(indent, "", _start(arm.span))
                lines += _braced(_race_arm(arm), arm.body, indent + INDENT, opener, close=_closing(indent, arm.span).start)
            return [*lines, _closing(indent, statement.span)]
        case sx.Repeat(name=name, max=bound, body=body, until=until, bound_reached=otherwise):
            head = "repeat" + (f" {name.text}" if name else "") + (f" max {bound}" if bound is not None else "")
            lines = _braced(head, body, indent, at, f" until {format_expr(until)}")
            if otherwise is None:
                return lines
            # `} until c else { ... }`: the `else` joins the line of the `until`
            return lines + _joined(lines, "else", otherwise, indent, Line(indent, "", seek=("else", _end(until.span))), None)
        case sx.Call(process=process, path=path, data=data, bind=bind):
            line = f"call {process.text}" + (f" from {string_literal(path)}" if path is not None else "")
            line = _with_data(line, data) + (f" as {bind.text}" if bind else "")
            return [_whole(indent, line, statement.span)]
        case sx.ForEach():
            return _braced(_for_each_head(statement), statement.body, indent, at, close=_closing(indent, statement.span).start)
        case sx.Fail(reason=reason):
            return [_whole(indent, f"fail {string_literal(reason)}", statement.span)]
        case sx.End(outcome=outcome):
            return [_whole(indent, "end" + (f" {string_literal(outcome)}" if outcome is not None else ""), statement.span)]
        case sx.Set(name=name, value=value):
            return [_whole(indent, f"set {name.text} = {format_expr(value)}", statement.span)]
        case sx.Emit(participant=participant, event=event, data=data):
            return [_whole(indent, _with_data(f"emit {participant.text}.{event.text}", data), statement.span)]
    raise TypeError(f"not a statement: {statement!r}")


def _joined(
    lines: list[Line], head: str, body: tuple[sx.Statement, ...], indent: str, opener: Line, close: Position | None
) -> list[Line]:
    """An `if` arm, or the `else` after one: on the line of the `}` before it, if any."""
    arm = _braced(head, body, indent, opener, close=close)
    if lines:
        before, first = lines[-1], arm[0]
        lines[-1] = Line(before.indent, f"{before.text} {first.text}", before.start, None, before.seek, first.joins_next)
        return arm[1:]
    return arm


def _race_arm(arm: sx.RaceArm) -> str:
    if arm.after is not None:
        return f"on timer {arm.after.text}"
    if arm.at is not None:
        return f"on timer at {format_expr(arm.at)}"
    return "on " + ", ".join(name.text for name in arm.messages) + (f" as {arm.bind.text}" if arm.bind else "")


def _step(step: sx.Step, indent: str) -> list[Line]:
    if step.task is not None:
        return _task(step, step.task, indent)
    inner = indent + INDENT
    items: list[tuple[str, Any, Span | None]] = [
        (key, value, span)
        for key, value, span in (
            ("doc", step.doc, step.doc_span),
            ("status", step.status, step.status.span if step.status else None),
            ("send", step.send, step.send.span if step.send else None),
            ("await", step.await_, step.await_.span if step.await_ else None),
        )
        if value is not None
    ]
    items += [("on", on, on.span) for on in step.on_replies]
    if step.timeout_reason is not None:
        items.append(("on timeout", step.timeout_reason, step.timeout_span))
    if step.timeout_handler is not None:
        items.append(("on timeout", step.timeout_handler, step.timeout_span))
    if step.compensate is not None:
        items.append(("compensate", step.compensate, step.compensate.span))
    if step.nothing_to_undo is not None:
        items.append(("nothing to undo", step.nothing_to_undo, step.nothing_to_undo_span))
    if step.wait is not None:
        items.append(("wait", step.wait, step.wait.span))
    items += [(key, value, span) for (key, span), value in zip(step.duplicates, step.duplicate_items, strict=True)]
    lines = [Line(indent, f"step {step.name.text} {{", _start(step.span))]
    for key, value, span in items:
        handler = _handler(key, value)
        if handler is not None:  # a recovery path: its block on lines of its own
            opener = Line(inner, "", _start(span)) if span is not None else Line(inner, "")
            lines += _braced(handler[0], handler[1], inner, opener)
            continue
        text = _step_item(key, value, inner)
        lines.append(_whole(inner, text, span) if span is not None else Line(inner, text))
    return [*lines, _closing(indent, step.span)]


def _assignee(assignee: sx.Assignee) -> str:
    return ("group " if assignee.group else "") + format_expr(assignee.who)


def _task(step: sx.Step, task: sx.Task, indent: str) -> list[Line]:
    """`task name by ... due D { doc, status, form, details, escalate ... }` (dsl/tasks.py)."""
    inner = indent + INDENT
    head = f"task {step.name.text}" + (f" by {_assignee(task.assignee)}" if task.assignee else "")
    head += f" due {task.due.text}" if task.due else ""
    items: list[tuple[str, Span | None]] = []
    if step.doc is not None:
        items.append((f"doc {string_literal(step.doc, inner)}", step.doc_span))
    if step.status is not None:
        items.append((f"status {step.status.text}", step.status.span))
    if task.form is not None:
        items.append((f"form {format_record(task.form)}", task.form.span))
    if task.details is not None:
        items.append((f"details {format_mapping(task.details)}", task.details.span))
    for escalation in task.escalations:
        items.append((_escalation(escalation), escalation.span))
    items += [(_task_item(key, value, inner), span) for (key, span), value in zip(step.duplicates, step.duplicate_items, strict=True)]
    lines = [Line(indent, f"{head} {{", _start(step.span))]
    lines += [_whole(inner, text, span) if span is not None else Line(inner, text) for text, span in items]
    return [*lines, _closing(indent, step.span)]


def _task_item(key: str, value: Any, indent: str) -> str:
    """An item of a task given twice (the validator reports it), as it was written: its own
    items here, `doc` and `status` as a step's."""
    match key, value:
        case "form", sx.RecordType():
            return f"form {format_record(value)}"
        case "details", ex.ObjectExpr():
            return f"details {format_mapping(value)}"
    return _step_item(key, value, indent)


def _escalation(escalation: sx.Escalation) -> str:
    if escalation.action == "fail":
        return f"escalate fail {string_literal(escalation.reason or '')}"
    text = "escalate remind" if escalation.assignee is None else f"escalate reassign to {_assignee(escalation.assignee)}"
    return text + (f" due {escalation.due.text}" if escalation.due else "")


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
            refused = " unless " + ", ".join(n.text for n in value.refused) if value.refused else ""
            return line + _timeout(timeout) + refused + (" even on " + ", ".join(n.text for n in value.even_on) if value.even_on else "")
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
    return text_of(layout_scenario(scenario))


def layout_scenario(scenario: sx.Scenario) -> list[Line]:
    """The lines of `scenario name "description" { ... }`."""
    head = f"scenario {scenario.name.text}" + (f" {string_literal(scenario.description)}" if scenario.description is not None else "")
    lines = [Line("", head + " {", _start(scenario.span))]
    body = INDENT
    if scenario.input is not None:
        lines.append(_whole(body, f"input {format_mapping(scenario.input)}", scenario.input.span))
    if scenario.start_at is not None:
        lines.append(_whole(body, f"start at {string_literal(scenario.start_at[0])}", scenario.start_at[1]))
    lines += [_whole(body, _when(rule), rule.span) for rule in scenario.rules]
    for delivery in scenario.deliveries:
        text = _with_data(f"deliver {delivery.event.text}", delivery.data) + f" after {delivery.after.text}"
        lines.append(_whole(body, text, delivery.span))
    if scenario.silenced:
        first, last = scenario.silenced[0].span, scenario.silenced[-1].span
        text = "no event " + ", ".join(name.text for name in scenario.silenced)
        lines.append(Line(body, text, _start(first), _end(last)))
    lines += [_whole(body, _expectation(expectation), expectation.span) for expectation in scenario.expectations]
    lines.append(_closing("", scenario.span))
    return lines


def _when(rule: sx.WhenRule) -> str:
    if rule.task:  # `when task review complete { ... }`, `when task review passes due`
        head = f"when task {rule.command.text}" + (f" attempt {rule.attempt}" if rule.attempt is not None else "")
        if rule.reply is None:
            return head + " passes due"
        line = _with_data(f"{head} complete", rule.data) + (f" after {rule.after.text}" if rule.after is not None else "")
        return line + (" twice" if rule.twice else "")
    line = f"when {rule.participant.text}.{rule.command.text}" + (f" round {rule.round}" if rule.round is not None else "")
    line += f" attempt {rule.attempt}" if rule.attempt is not None else ""
    line += f" for item {rule.item}" if rule.item is not None else ""
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
    if kind == "output":
        return f"expect output {format_mapping(value)}"
    if kind == "emitted":
        return f"expect emitted {value}"
    return f"expect {kind} [{', '.join(value)}]"


def step_text(step: sx.Step) -> str:
    """A step as canonical text (the language server shows it on hover)."""
    return text_of(_step(step, "")).rstrip("\n")


def participant_text(participant: sx.Participant) -> str:
    """A participant and its contracts as canonical text (shown on hover)."""
    return text_of(_participant(participant, "")).rstrip("\n")
