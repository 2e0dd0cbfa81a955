"""Text -> syntax nodes, built by Lark as it reduces each rule of the grammar (no tree is
built, then walked): `ToSyntax` has one method per rule, named after the rule or its alias.

The rules of expressions and types, and the checks on literals as they are read, are in
`expression_rules.py`; what every method returns (`Located`) is in `located.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lark import Token

from procflow.dsl import build, tasks
from procflow.dsl import expressions as ex
from procflow.dsl import syntax as sx
from procflow.dsl.diagnostics import Span
from procflow.dsl.expression_rules import ExpressionRules, string_value
from procflow.dsl.located import rule, rule_of_words, token_span


def _name(token: Token) -> sx.Name:
    return sx.Name(str(token), token_span(token))


def _duration(token: Token) -> sx.Duration:
    return build.duration(str(token), token_span(token))


def _tokens(parts: list[Any], kind: str) -> list[Token]:
    return [part for part in parts if isinstance(part, Token) and part.type == kind]


def _first(parts: list[Any], kind: type) -> Any:
    return next((part for part in parts if isinstance(part, kind)), None)


@dataclass(frozen=True, slots=True)
class _EachParallel:
    at_most: int | None
    span: Span


@dataclass(frozen=True, slots=True)
class _EachTolerate:
    count: int
    span: Span


@dataclass(frozen=True, slots=True)
class _ForItem:
    number: int  # (a class of its own: `attempt N` is an int among the same parts)


@dataclass(frozen=True, slots=True)
class _Round:
    """`round N` of a scenario's `when` line, with where it is written."""

    number: int
    span: Span


def _reaction(reply: Any, parts: list[Any]) -> dict[str, Any]:
    """A scenario's answer to a command (`reply r { data } [after D] [twice]`, or a task's
    `complete { data } ...`): the reply, its data, its delay and whether it comes twice."""
    reaction: dict[str, Any] = {"reply": reply, "data": None, "after": None, "twice": False}
    for item in parts:
        if isinstance(item, ex.ObjectExpr):
            reaction["data"] = item
        elif item == "twice":
            reaction["twice"] = True
        else:
            reaction["after"] = item
    return reaction


class ToSyntax(ExpressionRules):
    """The methods Lark calls as it reduces each rule (named after the rule or its alias)."""

    # ---- the process and its header
    @rule
    def process_name(self, span: Span, parts: list[Token]) -> sx.Name:
        return _name(parts[0])

    @rule
    def process(self, span: Span, parts: list[Any]) -> sx.Process:
        name, *items = parts
        return build.process(name, span, items)

    @rule
    def version(self, span: Span, parts: list[Token]) -> tuple[Any, ...]:
        return ("header", "version", build.integer(str(parts[0]), token_span(parts[0]), "a version"), span)

    @rule
    def title(self, span: Span, parts: list[Token]) -> tuple[Any, ...]:
        return ("header", "title", string_value(parts[0]), span)

    @rule
    def doc(self, span: Span, parts: list[Token]) -> tuple[Any, ...]:
        return ("header", "doc", string_value(parts[0]), span)

    @rule
    def correlate(self, span: Span, parts: list[ex.Expr]) -> tuple[Any, ...]:
        return ("header", "correlate", parts[0], span)

    @rule
    def reply_channel(self, span: Span, parts: list[Token]) -> tuple[Any, ...]:
        return ("header", "reply_to", string_value(parts[0]), span)

    @rule
    def deadline(self, span: Span, parts: list[Token]) -> tuple[Any, ...]:
        duration = _duration(parts[0])
        return ("header", "deadline", (duration, parts[1]) if len(parts) > 1 else duration, span)

    @rule_of_words
    def undo_failure(self, span: Span, parts: list[Token]) -> tuple[Any, ...]:
        return ("header", "undo_failure", str(parts[-1]), span)

    @rule
    def input_decl(self, span: Span, parts: list[Any]) -> tuple[Any, ...]:
        (inner,) = parts
        if isinstance(inner, sx.RecordType):
            return ("header", "input_record", inner, span)
        return ("header", "input_file", string_value(inner), token_span(inner))

    @rule
    def limit(self, span: Span, parts: list[Token]) -> tuple[Any, ...]:
        name, value = parts
        return ("limit", str(name), build.integer(str(value), token_span(value), "a limit"), token_span(name))

    @rule
    def participant(self, span: Span, parts: list[Any]) -> sx.Participant:
        name, *rest = parts
        display = next((string_value(item) for item in rest if isinstance(item, Token)), None)
        contracts = next((item for item in rest if isinstance(item, tuple)), ())
        return sx.Participant(_name(name), display, contracts, span)

    @rule
    def participant_body(self, span: Span, parts: list[sx.Contract]) -> tuple[sx.Contract, ...]:
        return tuple(parts)

    @rule
    def contract_item(self, span: Span, parts: list[Any]) -> sx.Contract:
        kind, name, *payload = parts
        return sx.Contract(kind, _name(name), payload[0] if payload else None, span)

    @rule_of_words
    def contract_kind(self, span: Span, parts: list[Token]) -> str:
        return str(parts[0])

    @rule
    def output_decl(self, span: Span, parts: list[ex.ObjectExpr]) -> tuple[Any, ...]:
        return ("header", "output", parts[0], span)

    @rule
    def event_decl(self, span: Span, parts: list[Any]) -> sx.EventDecl:
        name, *payload = parts
        return sx.EventDecl(_name(name), payload[0] if payload else None, span)

    # ---- steps
    @rule
    def step(self, span: Span, parts: list[Any]) -> sx.Step:
        name, *items = parts
        return build.step(_name(name), span, items)

    # ---- human tasks (dsl/tasks.py)
    @rule
    def task(self, span: Span, parts: list[Any]) -> sx.Step:
        name, *items = parts
        assignee = items.pop(0) if items and isinstance(items[0], sx.Assignee) else None
        due = items.pop(0) if items and isinstance(items[0], sx.Duration) else None
        return tasks.lower(_name(name), span, assignee, due, items)

    @rule
    def by_person(self, span: Span, parts: list[ex.Expr]) -> sx.Assignee:
        return sx.Assignee(parts[0], False, span)

    @rule
    def by_group(self, span: Span, parts: list[ex.Expr]) -> sx.Assignee:
        return sx.Assignee(parts[0], True, span)

    @rule
    def task_form(self, span: Span, parts: list[sx.RecordType]) -> sx.RecordType:
        return parts[0]

    @rule
    def task_details(self, span: Span, parts: list[ex.ObjectExpr]) -> ex.ObjectExpr:
        return parts[0]

    @rule
    def task_due(self, span: Span, parts: list[Token]) -> sx.Duration:
        return _duration(parts[0])

    @rule
    def escalate_remind(self, span: Span, parts: list[sx.Duration]) -> sx.Escalation:
        return sx.Escalation("remind", span, due=parts[0] if parts else None)

    @rule
    def escalate_reassign(self, span: Span, parts: list[Any]) -> sx.Escalation:
        return sx.Escalation("reassign", span, assignee=parts[0], due=parts[1] if len(parts) > 1 else None)

    @rule
    def escalate_fail(self, span: Span, parts: list[Token]) -> sx.Escalation:
        return sx.Escalation("fail", span, reason=string_value(parts[0]))

    @rule
    def when_task(self, span: Span, parts: list[Any]) -> sx.WhenRule:
        task, *rest = parts
        attempt = _first(rest, int)
        reaction = rest[-1]
        reply = sx.Name(tasks.completed_reply(str(task)), token_span(task)) if reaction["reply"] else None
        return sx.WhenRule(
            sx.Name(tasks.PARTICIPANT, span), _name(task), attempt, reply, reaction["data"], reaction["after"],
            reaction["twice"], span, task=True,
        )

    @rule
    def task_complete(self, span: Span, parts: list[Any]) -> dict[str, Any]:
        return _reaction(True, parts)

    @rule
    def task_overdue(self, span: Span, parts: list[Any]) -> dict[str, Any]:
        return {"reply": None, "data": None, "after": None, "twice": False}

    @rule
    def nothing_to_undo(self, span: Span, parts: list[Token]) -> tuple[str, str, Span]:
        return ("nothing_to_undo", string_value(parts[0]) if parts else "", span)

    @rule
    def status(self, span: Span, parts: list[Token]) -> tuple[str, sx.Name]:
        return ("status", _name(parts[0]))

    @rule
    def send(self, span: Span, parts: list[Any]) -> sx.Send:
        participant, command, *data = parts
        return sx.Send(_name(participant), _name(command), data[0] if data else None, span)

    @rule
    def binding(self, span: Span, parts: list[Token]) -> sx.Name:
        return _name(parts[0])

    @rule
    def await_(self, span: Span, parts: list[Any]) -> sx.Await:
        names = tuple(_name(token) for token in _tokens(parts, "NAME"))
        return sx.Await(names, _first(parts, sx.Name), _first(parts, sx.Timeout), span)

    @rule
    def timeout(self, span: Span, parts: list[Any]) -> sx.Timeout:
        duration, *retry = parts
        timeout = sx.Timeout(_duration(duration), retry[0] if retry else None, span)
        if timeout.retry is not None:
            build.retry_rounds(timeout.retry)
            backoff = timeout.retry.backoff.seconds if timeout.retry.backoff is not None else 0.0
            build.check_wait_total(timeout.duration.seconds, timeout.retry.count, backoff, timeout.retry.factor, span)
        return timeout

    @rule
    def retry(self, span: Span, parts: list[Token]) -> sx.Retry:
        count, *rest = parts
        backoff = _duration(rest[0]) if rest else None
        factor = float(str(rest[1])[1:]) if len(rest) > 1 else 1.0
        return sx.Retry(build.integer(str(count), token_span(count), "a retry count"), backoff, factor, span)

    @rule
    def on_reply(self, span: Span, parts: list[Any]) -> sx.OnReply:
        names = tuple(_name(token) for token in _tokens(parts, "NAME"))
        reasons = _tokens(parts, "STRING")
        retry = _first(parts, sx.ReplyRetry)
        if reasons:
            return sx.OnReply(names, _first(parts, sx.Name), string_value(reasons[0]), span, None, retry)
        handler = next(part for part in parts if isinstance(part, tuple))
        return sx.OnReply(names, _first(parts, sx.Name), None, span, handler, retry)

    @rule
    def reply_retry(self, span: Span, parts: list[Any]) -> sx.ReplyRetry:
        retry, *rest = parts
        build.reply_retry_count(retry)
        durations = _tokens(rest, "DURATION")
        return sx.ReplyRetry(retry, _duration(durations[0]) if durations else None, True in rest, span)

    @rule
    def jitter(self, span: Span, parts: list[Any]) -> bool:
        return True

    @rule
    def on_timeout(self, span: Span, parts: list[str | tuple[sx.Statement, ...]]) -> tuple[str, str | tuple[sx.Statement, ...], Span]:
        return ("on_timeout", parts[0], span)

    @rule
    def timeout_action(self, span: Span, parts: list[Any]) -> str | tuple[sx.Statement, ...]:
        (action,) = parts
        return action if isinstance(action, tuple) else string_value(action)

    @rule
    def compensate(self, span: Span, parts: list[Any]) -> sx.Compensate:
        participant, command, *rest = parts
        replies = tuple(_name(token) for token in _tokens(rest, "NAME"))
        data = _first(rest, ex.ObjectExpr)  # (the names after `even on` come as one tuple)
        even_on = next((part for part in rest if isinstance(part, tuple)), ())
        refused = tuple(next((part for part in rest if isinstance(part, list)), ()))  # (`unless ...` comes as a list)
        return sx.Compensate(_name(participant), _name(command), data, replies, _first(rest, sx.Timeout), span, even_on, refused)

    @rule
    def undo_refused(self, span: Span, parts: list[Token]) -> list[sx.Name]:
        return [_name(token) for token in parts]

    @rule
    def even_on_failure(self, span: Span, parts: list[Token]) -> tuple[sx.Name, ...]:
        return tuple(_name(token) for token in parts)

    @rule
    def wait_for(self, span: Span, parts: list[Token]) -> sx.Wait:
        return sx.Wait(_duration(parts[0]), None, span)

    @rule
    def wait_until(self, span: Span, parts: list[ex.Expr]) -> sx.Wait:
        return sx.Wait(None, parts[0], span)

    # ---- control flow
    @rule
    def block(self, span: Span, parts: list[sx.Statement]) -> tuple[sx.Statement, ...]:
        return tuple(parts)

    @rule
    def if_stmt(self, span: Span, parts: list[Any]) -> sx.If:
        condition, body, *clauses = parts
        arms = [(condition, body)]
        otherwise = None
        for clause in clauses:
            if clause[0] == "elif":
                arms.append((clause[1], clause[2]))
            else:
                otherwise = clause[1]
        return sx.If(tuple(arms), otherwise, span)

    @rule
    def elif_clause(self, span: Span, parts: list[Any]) -> tuple[Any, ...]:
        return ("elif", parts[0], parts[1])

    @rule
    def else_clause(self, span: Span, parts: list[Any]) -> tuple[Any, ...]:
        return ("else", parts[0])

    @rule
    def switch_stmt(self, span: Span, parts: list[Any]) -> sx.Switch:
        subject, *clauses = parts
        cases = tuple(clause for clause in clauses if isinstance(clause, sx.Case))
        default = next((clause[1] for clause in clauses if isinstance(clause, tuple)), None)
        return sx.Switch(subject, cases, default, span)

    @rule
    def case_clause(self, span: Span, parts: list[Any]) -> sx.Case:
        *values, body = parts
        return sx.Case(tuple(value.value for value in values), body, span)

    @rule
    def default_clause(self, span: Span, parts: list[Any]) -> tuple[Any, ...]:
        return ("default", parts[0])

    @rule
    def parallel(self, span: Span, parts: list[Any]) -> sx.Parallel:
        name = next((_name(part) for part in parts if isinstance(part, Token)), None)
        branches = tuple(part for part in parts if isinstance(part, sx.Branch))
        order = next((part for part in parts if isinstance(part, sx.Name)), None)
        return sx.Parallel(name, branches, span, order)

    @rule_of_words
    def undo_order(self, span: Span, parts: list[Token]) -> sx.Name:
        return sx.Name(str(parts[-1]), span)

    @rule
    def first_of(self, span: Span, parts: list[Any]) -> sx.Parallel:
        name = _tokens(parts, "NAME")[0]
        branches = tuple(part for part in parts if isinstance(part, sx.Branch))
        return sx.Parallel(_name(name), branches, span, first=True)

    @rule
    def branch(self, span: Span, parts: list[Any]) -> sx.Branch:
        name, body = parts
        return sx.Branch(_name(name), body, span)

    @rule
    def race(self, span: Span, parts: list[Any]) -> sx.Race:
        name, *arms = parts
        return sx.Race(_name(name), tuple(arms), span)

    @rule
    def race_message(self, span: Span, parts: list[Any]) -> sx.RaceArm:
        names = tuple(_name(token) for token in _tokens(parts, "NAME"))
        return sx.RaceArm(names, _first(parts, sx.Name), None, None, parts[-1], span)

    @rule
    def race_after(self, span: Span, parts: list[Any]) -> sx.RaceArm:
        duration, body = parts
        return sx.RaceArm((), None, _duration(duration), None, body, span)

    @rule
    def race_at(self, span: Span, parts: list[Any]) -> sx.RaceArm:
        at, body = parts
        return sx.RaceArm((), None, None, at, body, span)

    @rule
    def repeat(self, span: Span, parts: list[Any]) -> sx.Repeat:
        name = next((_name(token) for token in _tokens(parts, "NAME")), None)
        bound = next((build.loop_bound(str(token), token_span(token)) for token in _tokens(parts, "NUMBER")), None)
        body = _first(parts, tuple)
        otherwise = _first(parts, sx.BoundReached)
        until = parts[-2] if otherwise is not None else parts[-1]
        return sx.Repeat(name, bound, body, until, span, otherwise.body if otherwise is not None else None)

    @rule
    def bound_reached(self, span: Span, parts: list[Any]) -> sx.BoundReached:
        return sx.BoundReached(parts[0], span)

    @rule
    def call(self, span: Span, parts: list[Any]) -> sx.Call:
        process, *rest = parts
        path = next((string_value(token) for token in _tokens(rest, "STRING")), None)
        return sx.Call(process, path, _first(rest, ex.ObjectExpr), _first(rest, sx.Name), span)

    @rule
    def for_each(self, span: Span, parts: list[Any]) -> sx.ForEach:
        item, items, *options, body = parts
        parallel = _first(options, _EachParallel)
        tolerate = _first(options, _EachTolerate)
        return sx.ForEach(
            _name(item), items, body, span,
            parallel is not None, parallel.at_most if parallel else None, parallel.span if parallel else None,
            tolerate.count if tolerate else 0, tolerate.span if tolerate else None, _first(options, sx.Name),
        )

    @rule
    def each_parallel(self, span: Span, parts: list[Token]) -> _EachParallel:
        numbers = _tokens(parts, "NUMBER")
        at_most = build.integer(str(numbers[0]), token_span(numbers[0]), "a number of items at once") if numbers else None
        return _EachParallel(at_most, span)

    @rule
    def each_tolerate(self, span: Span, parts: list[Token]) -> _EachTolerate:
        number = _tokens(parts, "NUMBER")[0]
        return _EachTolerate(build.integer(str(number), token_span(number), "a number of failures"), span)

    @rule
    def each_collect(self, span: Span, parts: list[Token]) -> sx.Name:
        return _name(parts[0])

    @rule
    def fail_stmt(self, span: Span, parts: list[Token]) -> sx.Fail:
        return sx.Fail(string_value(parts[0]), span)

    @rule
    def end_stmt(self, span: Span, parts: list[Any]) -> sx.End:
        outcomes = _tokens(parts, "STRING")
        return sx.End(span, string_value(outcomes[0]) if outcomes else None)

    @rule
    def set_stmt(self, span: Span, parts: list[Any]) -> sx.Set:
        name, value = parts
        return sx.Set(_name(name), value, span)

    @rule
    def emit_stmt(self, span: Span, parts: list[Any]) -> sx.Emit:
        participant, event, *data = parts
        return sx.Emit(_name(participant), _name(event), data[0] if data else None, span)

    # ---- scenarios
    @rule
    def scenario(self, span: Span, parts: list[Any]) -> sx.Scenario:
        name, *items = parts
        description = string_value(items.pop(0)) if items and isinstance(items[0], Token) else None
        return build.scenario(_name(name), description, span, items)

    @rule
    def scenario_input(self, span: Span, parts: list[ex.ObjectExpr]) -> ex.ObjectExpr:
        return parts[0]

    @rule
    def scenario_start(self, span: Span, parts: list[Token]) -> tuple[Any, ...]:
        return ("start", build.start_instant(string_value(parts[0]), token_span(parts[0])), span)

    @rule
    def when_rule(self, span: Span, parts: list[Any]) -> sx.WhenRule:
        participant, command, *rest = parts
        attempt = _first(rest, int)
        item = _first(rest, _ForItem)
        round_ = _first(rest, _Round)
        reaction = rest[-1]
        return sx.WhenRule(
            _name(participant),
            _name(command),
            attempt,
            reaction["reply"],
            reaction["data"],
            reaction["after"],
            reaction["twice"],
            span,
            round_.number if round_ is not None else None,
            round_.span if round_ is not None else None,
            item=item.number if item is not None else None,
        )

    @rule
    def for_item(self, span: Span, parts: list[Token]) -> _ForItem:
        return _ForItem(build.integer(str(parts[0]), token_span(parts[0]), "an item number"))

    @rule
    def round(self, span: Span, parts: list[Token]) -> _Round:
        return _Round(build.integer(str(parts[0]), token_span(parts[0]), "a round"), span)

    @rule
    def attempt(self, span: Span, parts: list[Token]) -> int:
        return build.integer(str(parts[0]), token_span(parts[0]), "an attempt")

    @rule
    def react_reply(self, span: Span, parts: list[Any]) -> dict[str, Any]:
        name, *timings = parts
        return _reaction(_name(name), timings)

    @rule
    def react_silent(self, span: Span, parts: list[Any]) -> dict[str, Any]:
        return {"reply": None, "data": None, "after": None, "twice": False}

    @rule
    def reply_after(self, span: Span, parts: list[Token]) -> sx.Duration:
        return _duration(parts[0])

    @rule
    def reply_twice(self, span: Span, parts: list[Any]) -> str:
        return "twice"

    @rule
    def event_rule(self, span: Span, parts: list[Any]) -> sx.DeliverRule:
        name, *rest = parts
        return sx.DeliverRule(_name(name), _first(rest, ex.ObjectExpr), _duration(rest[-1]), span)

    @rule
    def silence(self, span: Span, parts: list[Token]) -> tuple[str, list[sx.Name]]:
        return ("silence", [_name(token) for token in parts])

    @rule
    def command_ref(self, span: Span, parts: list[Token]) -> str:
        return f"{parts[0]}.{parts[1]}"

    @rule
    def expect_status(self, span: Span, parts: list[Token]) -> sx.Expectation:
        return sx.Expectation("status", str(parts[0]), span)

    @rule
    def expect_completed(self, span: Span, parts: list[Token]) -> sx.Expectation:
        return sx.Expectation("completed", [str(token) for token in parts], span)

    @rule
    def expect_commands(self, span: Span, parts: list[str]) -> sx.Expectation:
        return sx.Expectation("commands", list(parts), span)

    @rule
    def expect_compensation(self, span: Span, parts: list[str]) -> sx.Expectation:
        return sx.Expectation("compensation", list(parts), span)

    @rule
    def expect_unconfirmed(self, span: Span, parts: list[str]) -> sx.Expectation:
        return sx.Expectation("unconfirmed", list(parts), span)

    @rule
    def expect_failure(self, span: Span, parts: list[Token]) -> sx.Expectation:
        return sx.Expectation("failure", string_value(parts[0]), span)

    @rule
    def expect_outcome(self, span: Span, parts: list[Token]) -> sx.Expectation:
        return sx.Expectation("outcome", string_value(parts[0]), span)

    @rule
    def expect_output(self, span: Span, parts: list[ex.ObjectExpr]) -> sx.Expectation:
        return sx.Expectation("output", parts[0], span)

    @rule
    def expect_emitted(self, span: Span, parts: list[str]) -> sx.Expectation:
        return sx.Expectation("emitted", parts[0], span)

    # ---- the two start rules
    @rule
    def scenarios(self, span: Span, parts: list[sx.Scenario]) -> list[sx.Scenario]:
        return list(parts)

    @rule
    def start(self, span: Span, parts: list[Any]) -> tuple[sx.Process, list[sx.Scenario]]:
        process, *scenarios = parts
        return process, scenarios
