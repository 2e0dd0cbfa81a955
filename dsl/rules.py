"""Validation rules: each a function of the shared `Facts`, each with stable codes.

The codes, what they mean, a failing example and the exact message of each are in
docs/validation.md (and that document is tested). Rules read the compiled definition; where
they report on a name the author wrote they read the syntax tree kept in
`definition.syntax`, in which every name has its span. The analyses behind the flow rules
(bindings, reachability, joins, failures) are in `procflow.dsl.flow_analysis`.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import Any

from procflow.dsl import expressions as ex
from procflow.dsl import flow_analysis as fa
from procflow.dsl import model as m
from procflow.dsl import syntax as sx
from procflow.dsl.diagnostics import Diagnostic, Span

LIMIT_NAMES = ("participants", "computation")
"""The thresholds a process may set with `limit NAME N` (defaults: `validate.DEFAULT_LIMITS`)."""

BUILTIN_NAMES = ("input", "steps")
"""Names every expression can read without binding them."""


def suggestion(name: str, candidates: Sequence[str]) -> str:
    """`; did you mean `x`?` for the closest candidate, or nothing."""
    guess = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean `{guess[0]}`?" if guess else ""


def name_span(expr: ex.Expr, name: str) -> Span:
    """The span of the last `name` of a field access such as `input.amount`."""
    span = expr.span
    if isinstance(expr, ex.Field) and span.end_column > len(name):
        return Span(span.end_line, span.end_column - len(name), span.end_line, span.end_column)
    return span


def value_text(value: Any) -> str:
    """A case value as written: `"home"`, `true`, `3`."""
    return json.dumps(value)


class Facts:
    """What the rules read: the definition, its syntax, the limits, and shared analyses."""

    def __init__(self, definition: m.ProcessDefinition, limits: Mapping[str, int]) -> None:
        self.definition = definition
        self.limits = limits
        source = definition.syntax
        self.process: sx.Process | None = source.process if isinstance(source, sx.SourceFile) else None

    def diagnostic(self, code: str, message: str, span: Span, hint: str | None = None) -> Diagnostic:
        """A finding of this process; codes starting with W are warnings."""
        severity = "warning" if code.startswith("W") else "error"
        return Diagnostic(code, severity, message, span, hint, self.definition.path)

    @cached_property
    def statements(self) -> list[tuple[sx.Statement, tuple[sx.Branch, ...]]]:
        """Every statement in document order, with its enclosing parallel branches."""
        return list(fa.walk_statements(self.process.body)) if self.process else []

    @cached_property
    def steps(self) -> list[sx.Step]:
        """Every step as written, in document order."""
        return [s for s, _ in self.statements if isinstance(s, sx.Step)]

    @cached_property
    def uses(self) -> list[fa.ExprUse]:
        """Every expression of the process, in document order of its node."""
        found: list[fa.ExprUse] = []
        if self.definition.correlate is not None:
            found.append(fa.ExprUse(self.definition.correlate.expr, None, (), False))
        for node in self.definition.in_order:
            found.extend(fa.node_uses(node))
        return found

    @cached_property
    def scans(self) -> list[tuple[fa.ExprUse, fa.Scan, list[tuple[ex.Expr, fa.Scan]]]]:
        """Every use with a scan of its whole expression and of each part (a mapping's values)."""
        found = []
        for use in self.uses:
            if use.mapping and isinstance(use.expr, ex.ObjectExpr):
                parts = []
                names: list[ex.Var] = []
                reads: list[fa.PathRead] = []
                size, depth, arithmetic = 1, 0, 0
                for _, value in use.expr.pairs:
                    part = fa.scan(value)
                    parts.append((value, part))
                    names += part.names
                    reads += part.reads
                    size += part.size
                    depth = max(depth, part.depth)
                    arithmetic += part.arithmetic
                whole = fa.Scan(tuple(names), tuple(reads), size, 1 + depth, arithmetic)
            else:
                whole = fa.scan(use.expr)
                parts = [(use.expr, whole)]
            found.append((use, whole, parts))
        return found

    @cached_property
    def branches(self) -> dict[str, tuple[str, int]]:
        """node id -> (fork id, branch index) of its innermost parallel branch."""
        return fa.branch_membership(self.definition)

    @cached_property
    def bound_names(self) -> dict[str, list[tuple[str, Span | None]]]:
        """name -> (how, where) for every name bound with `as`; `how` names the binding."""
        bound: dict[str, list[tuple[str, Span | None]]] = {}
        for stmt, _ in self.statements:
            for how, bound_name in fa.bindings_of(stmt):
                bound.setdefault(bound_name.text, []).append((how, bound_name.span))
        if self.process is None:
            for node in self.definition.nodes.values():
                for name in fa.model_bindings(node):
                    bound.setdefault(name, []).append(("as", None))
        return bound

    @cached_property
    def exhaustive_nodes(self) -> frozenset[str]:
        """The xor nodes of switches that name every value their subject can take."""
        found = set()
        for node in self.definition.nodes.values():
            if isinstance(node, m.XorNode) and node.subject is not None and not node.has_else:
                values = _known_values(self, node.subject.expr)
                named = {value_text(v) for arm in node.arms for v in arm.values}
                if values is not None and all(value_text(v) in named for v in values):
                    found.add(node.id)
        return frozenset(found)

    @cached_property
    def declared_replies(self) -> set[str]:
        """Replies some participant declares in its contract block."""
        return {r for p in self.definition.participants.values() for r in p.replies}


Rule = Callable[[Facts], list[Diagnostic]]


# ---------------------------------------------------------------- names


def unknown_participant(facts: Facts) -> list[Diagnostic]:
    """E110: a step sends to (or compensates with) a participant that is not declared.

    E131: the participant declares its commands, and this one is not among them.
    """
    found = []
    participants = facts.definition.participants
    for node in facts.definition.steps:
        for spec in (node.command, node.compensation.command if node.compensation else None):
            if spec is None:
                continue
            participant = participants.get(spec.participant)
            if participant is None:
                found.append(
                    facts.diagnostic(
                        "E110",
                        f"unknown participant `{spec.participant}`" + suggestion(spec.participant, list(participants)),
                        spec.participant_span or spec.span,
                        f'declare it: participant {spec.participant} "..."',
                    )
                )
            elif participant.commands and spec.command not in participant.commands:
                found.append(
                    facts.diagnostic(
                        "E131",
                        f"participant `{spec.participant}` has no command `{spec.command}`"
                        + suggestion(spec.command, list(participant.commands)),
                        spec.command_span or spec.span,
                        f"its contract declares: {', '.join(sorted(participant.commands))}",
                    )
                )
    return found


def unknown_messages(facts: Facts) -> list[Diagnostic]:
    """E112: an awaited name that is neither a declared event nor a reply it can be.

    A step that sends may await the replies its participant declares (any name, when the
    participant declares none) and declared events; a step that only awaits, and a race,
    may await declared events and replies declared by any participant.
    """
    definition = facts.definition
    events = list(definition.events)
    anywhere = sorted(facts.declared_replies) + events
    found: list[Diagnostic] = []

    def check(name: sx.Name, allowed: Sequence[str], what: str, hint: str) -> None:
        if name.text not in allowed:
            found.append(facts.diagnostic("E112", f"unknown {what} `{name.text}`" + suggestion(name.text, allowed), name.span, hint))

    for stmt, _ in facts.statements:
        if isinstance(stmt, sx.Step):
            names = [*(stmt.await_.replies if stmt.await_ else ()), *(n for on in stmt.on_replies for n in on.replies)]
            participant = definition.participants.get(stmt.send.participant.text) if stmt.send else None
            if stmt.send is None:
                for name in names:
                    check(name, anywhere, "event", f"declare it: event {name.text} {{ ... }}")
            elif participant is not None and participant.replies:
                for name in names:
                    check(name, [*participant.replies, *events], "reply", f"participant `{participant.name}` declares: "
                          + ", ".join(sorted(participant.replies)))
            comp = stmt.compensate
            undo = definition.participants.get(comp.participant.text) if comp else None
            if comp is not None and undo is not None and undo.replies:
                for name in comp.replies:
                    check(name, [*undo.replies, *events], "reply", f"participant `{undo.name}` declares: "
                          + ", ".join(sorted(undo.replies)))
        elif isinstance(stmt, sx.Race):
            for arm in stmt.arms:
                for name in arm.messages:
                    check(name, anywhere, "event", f"declare it: event {name.text} {{ ... }}")
    return found


def unknown_names_in_expressions(facts: Facts) -> list[Diagnostic]:
    """E113 unknown variable; E111 unknown step (`steps.<name>`); E135 a step field other than `reply`."""
    found: list[Diagnostic] = []
    bound = facts.bound_names
    known = [*BUILTIN_NAMES, *bound]
    steps = [node.name for node in facts.definition.steps]
    step_names = set(steps)
    messages = set(facts.definition.events) | facts.declared_replies
    for _, whole, _ in facts.scans:
        for node in whole.names:
            if node.name not in BUILTIN_NAMES and node.name not in bound:
                hint = (
                    f"a payload is read through the name it is bound to: `await {node.name} as {node.name}_data`"
                    if node.name in messages or _awaited(facts, node.name)
                    else "names come from `input`, `steps.<step>` or a binding `as name`"
                )
                found.append(facts.diagnostic("E113", f"unknown variable `{node.name}`" + suggestion(node.name, known), node.span, hint))
        for read in whole.reads:
            if read.names[0] != "steps" or len(read.names) < 2:
                continue
            step = read.names[1]
            if step not in step_names:
                found.append(facts.diagnostic("E111", f"unknown step `{step}`" + suggestion(step, steps), name_span(read.parts[1], step)))
            elif len(read.names) > 2 and read.names[2] != "reply":
                found.append(
                    facts.diagnostic(
                        "E135",
                        f"`steps.{step}` has no field `{read.names[2]}`; it has only `reply`",
                        name_span(read.parts[2], read.names[2]),
                        "bind the payload with `as name` to read its fields",
                    )
                )
    return found


def _awaited(facts: Facts, name: str) -> bool:
    return any(name in node.replies or name in node.failures for node in facts.definition.steps)


def undeclared_input_fields(facts: Facts) -> list[Diagnostic]:
    """E125: an expression reads `input.x` where the input contract declares no `x`."""
    schema = facts.definition.input_schema
    if schema is None:
        return []
    found: list[Diagnostic] = []
    for _, whole, _ in facts.scans:
        for read in whole.reads:
            if read.names[0] != "input":
                continue
            current: Any = schema
            for depth, name in enumerate(read.names[1:], start=1):
                where = ".".join(read.names[:depth])
                kind = current.get("type") if isinstance(current, dict) else None
                props = fa.schema_fields(current)
                if isinstance(kind, str) and kind not in ("object",) and props is None:
                    found.append(facts.diagnostic("E125", f"`{where}` is a {kind}; it has no field `{name}`",
                                                  name_span(read.parts[depth], name)))
                    break
                if props is None:
                    break
                if name not in props:
                    found.append(
                        facts.diagnostic(
                            "E125",
                            f"`{where}` has no field `{name}`" + suggestion(name, list(props)),
                            name_span(read.parts[depth], name),
                            "the input contract declares: " + ", ".join(props),
                        )
                    )
                    break
                current = props[name]
    return found


def unknown_limits(facts: Facts) -> list[Diagnostic]:
    """E134: `limit NAME N` with a name no check reads."""
    if facts.process is None:
        return []
    return [
        facts.diagnostic("E134", f"unknown limit `{name}`" + suggestion(name, LIMIT_NAMES), span,
                         "limits: " + ", ".join(LIMIT_NAMES))
        for name, (_, span) in facts.process.limits.items()
        if name not in LIMIT_NAMES
    ]


# ---------------------------------------------------------------- duplicates


_HEADER_WORDS = {"reply_to": "reply to", "input_record": "input", "input_file": "input"}


def duplicates(facts: Facts) -> list[Diagnostic]:
    """E115: a name or a header item given twice, or a binding that hides `input` or `steps`."""
    proc = facts.process
    if proc is None:
        return []
    found: list[Diagnostic] = []

    def once(seen: dict[str, Span], name: sx.Name, message: str) -> None:
        if name.text in seen:
            found.append(facts.diagnostic("E115", f"{message} (first on line {seen[name.text].line})", name.span))
        else:
            seen[name.text] = name.span

    for key, span in proc.duplicates:
        word = _HEADER_WORDS.get(key, key)
        found.append(facts.diagnostic("E115", f"`{word}` is given twice in this process", span))
    if proc.input_record is not None and proc.input_file is not None:
        found.append(facts.diagnostic("E115", "`input` is given twice in this process", proc.input_file[1]))
    participants: dict[str, Span] = {}
    for p in proc.participants:
        once(participants, p.name, f"participant `{p.name.text}` is declared twice")
        contracts: dict[str, Span] = {}
        for contract in p.contracts:
            once(contracts, contract.name, f"`{contract.name.text}` is declared twice in participant `{p.name.text}`")
    events: dict[str, Span] = {}
    for event in proc.events:
        once(events, event.name, f"event `{event.name.text}` is declared twice")
    blocks: dict[str, Span] = {s.name.text: s.name.span for s in facts.steps}
    for stmt, _ in facts.statements:
        if isinstance(stmt, sx.Step):
            for key, span in stmt.duplicates:
                found.append(facts.diagnostic("E115", f"`{key}` is given twice in step `{stmt.name.text}`", span))
        elif isinstance(stmt, sx.Parallel):
            branches: dict[str, Span] = {}
            for branch in stmt.branches:
                once(branches, branch.name, f"branch `{branch.name.text}` is named twice in this parallel block")
        elif isinstance(stmt, sx.Switch):
            values: dict[str, Span] = {}
            for case in stmt.cases:
                for value in case.values:
                    once(values, sx.Name(value_text(value), case.span), f"case {value_text(value)} is given twice")
        elif isinstance(stmt, sx.Race):
            messages: dict[str, Span] = {}
            for arm in stmt.arms:
                for name in arm.messages:
                    once(messages, name, f"`{name.text}` is named by two arms of race `{stmt.name.text}`")
        block_name = stmt.name if isinstance(stmt, sx.Parallel | sx.Race | sx.Repeat) else None
        if block_name is not None:
            once(blocks, block_name, f"the name `{block_name.text}` is used twice")
        for _, bound in fa.bindings_of(stmt):
            if bound.text in BUILTIN_NAMES:
                found.append(facts.diagnostic("E115", f"`{bound.text}` cannot be bound with `as`: it is a built-in name",
                                              bound.span, "choose another name"))
    return found


# ---------------------------------------------------------------- steps and their parts


def step_shape(facts: Facts) -> list[Diagnostic]:
    """E126 a step that does nothing; E127 a send with no await; E128 a timer step that also
    exchanges messages; E129 a reply named twice or as both success and failure; E130 a retry
    with nothing to resend; E133 `on timeout` with no `within`."""
    found: list[Diagnostic] = []
    for step in facts.steps:
        name = step.name.text
        if step.wait is not None:
            parts: list[tuple[str, Span | None]] = [
                ("send", step.send.span if step.send else None),
                ("await", step.await_.span if step.await_ else None),
                ("on", step.on_replies[0].span if step.on_replies else None),
                ("on timeout", step.timeout_span),
                ("compensate", step.compensate.span if step.compensate else None),
            ]
            for word, span in parts:
                if span is not None:
                    found.append(facts.diagnostic("E128", f"step `{name}` waits for a timer; it cannot also `{word}`", span,
                                                  "put the timer and the message exchange in two steps"))
            continue
        if step.send is None and step.await_ is None:
            found.append(facts.diagnostic("E126", f"step `{name}` does nothing: it has no `send`, `await` or `wait`",
                                          step.name.span))
            continue
        if step.send is not None and step.await_ is None:
            found.append(facts.diagnostic("E127", f"step `{name}` sends `{step.send.participant.text}.{step.send.command.text}`"
                                          " but awaits no reply", step.name.span, "add `await reply_name within ...`"))
        timeout = step.await_.timeout if step.await_ else None
        if timeout is not None and timeout.retry is not None and step.send is None:
            found.append(facts.diagnostic("E130", f"step `{name}` retries but sends nothing to resend", timeout.retry.span,
                                          "drop `retry`, or send a command in this step"))
        if step.timeout_span is not None and timeout is None:
            found.append(facts.diagnostic("E133", f"step `{name}` handles `on timeout` but its `await` has no `within`",
                                          step.timeout_span, "add `within D` to the `await`"))
        found.extend(_reply_roles(facts, step))
    return found


def _reply_roles(facts: Facts, step: sx.Step) -> list[Diagnostic]:
    found = []
    successes = {n.text for n in step.await_.replies} if step.await_ else set()
    seen: set[str] = set()
    for name in [*(step.await_.replies if step.await_ else ()), *(n for on in step.on_replies for n in on.replies)]:
        if name.text in seen:
            both = name.text in successes and name.span not in {n.span for n in (step.await_.replies if step.await_ else ())}
            message = (
                f"reply `{name.text}` is both a success and a failure of step `{step.name.text}`"
                if both
                else f"reply `{name.text}` is named twice in step `{step.name.text}`"
            )
            found.append(facts.diagnostic("E129", message, name.span))
        seen.add(name.text)
    return found


def waits_without_way_out(facts: Facts) -> list[Diagnostic]:
    """E117: a wait that nothing ends when the awaited message never comes."""
    found = []
    deadline = facts.definition.deadline_seconds is not None
    for stmt, _ in facts.statements:
        if isinstance(stmt, sx.Step) and stmt.wait is None:
            if stmt.await_ is not None and stmt.await_.timeout is None and not deadline:
                found.append(facts.diagnostic("E117", f"step `{stmt.name.text}` may wait forever: no `within` and no process `deadline`",
                                              stmt.await_.span, "add `within D` (with `retry` or `on timeout`), or a `deadline`"))
            comp = stmt.compensate
            if comp is not None and comp.replies and comp.timeout is None:
                found.append(facts.diagnostic("E117", f"the compensation of `{stmt.name.text}` may wait forever: no `within`",
                                              comp.replies[0].span, "add `within D retry N` after the awaited reply"))
        elif isinstance(stmt, sx.Race) and not deadline and all(arm.messages for arm in stmt.arms):
            found.append(facts.diagnostic("E117", f"race `{stmt.name.text}` may wait forever: no `on timer` arm and no process `deadline`",
                                          stmt.name.span, "add an arm `on timer D { ... }`, or a `deadline`"))
    return found


def unbounded_loops(facts: Facts) -> list[Diagnostic]:
    """E124: `repeat` without `max`."""
    found = []
    for stmt, _ in facts.statements:
        if isinstance(stmt, sx.Repeat) and stmt.max is None:
            what = f"loop `{stmt.name.text}`" if stmt.name else "this `repeat`"
            span = stmt.name.span if stmt.name else stmt.span
            found.append(facts.diagnostic("E124", f"{what} has no `max`: it may repeat forever", span,
                                          "bound it: `repeat max 5 { ... } until ...`"))
    return found


def switch_coverage(facts: Facts) -> list[Diagnostic]:
    """E118 a switch over known values that misses some and has no default; E132 a case value
    that the subject cannot take; W118 a switch over unknown values without a default."""
    found = []
    for stmt, _ in facts.statements:
        if not isinstance(stmt, sx.Switch):
            continue
        subject = ex.to_text(stmt.subject) if ex.measure(stmt.subject)[1] <= ex.MAX_DEPTH else "..."
        values = _known_values(facts, stmt.subject)
        if values is None:
            if stmt.default is None:
                found.append(facts.diagnostic("W118", f"switch on `{subject}` has no `default`: other values skip it",
                                              stmt.subject.span, "add `default { ... }` (it may be empty)"))
            continue
        known = [value_text(v) for v in values]
        named = {value_text(v) for case in stmt.cases for v in case.values}
        for case in stmt.cases:
            for value in case.values:
                if value_text(value) not in known:
                    guess = difflib.get_close_matches(value_text(value), known, n=1)
                    found.append(facts.diagnostic("E132", f"case {value_text(value)} is not a value of `{subject}`"
                                                  + (f"; did you mean {guess[0]}?" if guess else ""), case.span,
                                                  "its values: " + ", ".join(known)))
        missing = [text for text in known if text not in named]
        if missing and stmt.default is None:
            found.append(facts.diagnostic("E118", f"switch on `{subject}` has no case for {', '.join(missing)}"
                                          " and no `default`", stmt.subject.span, "add the cases, or `default { ... }`"))
    return found


def _is_exhaustive(facts: Facts, stmt: sx.Switch) -> bool:
    values = _known_values(facts, stmt.subject)
    named = {value_text(v) for case in stmt.cases for v in case.values}
    return stmt.default is None and values is not None and all(value_text(v) in named for v in values)


def _known_values(facts: Facts, subject: ex.Expr) -> list[Any] | None:
    path = ex.field_path(subject)
    if path is None or path[0] != "input" or facts.definition.input_schema is None:
        return None
    schema = fa.schema_at(facts.definition.input_schema, path[1:])
    if not isinstance(schema, dict):
        return None
    if isinstance(schema.get("enum"), list):
        return list(schema["enum"])
    if schema.get("type") == "boolean":
        return [True, False]
    return None


# ---------------------------------------------------------------- orchestrator scope and hygiene


def expression_limits(facts: Facts) -> list[Diagnostic]:
    """E106: an expression larger or deeper than the evaluator accepts."""
    found = []
    for use, whole, _ in facts.scans:
        count, depth = whole.size, whole.depth
        if count > ex.MAX_NODES:
            found.append(facts.diagnostic("E106", f"this expression has {count} parts; at most {ex.MAX_NODES} are allowed",
                                          use.expr.span, "compute it in a participant"))
        elif depth > ex.MAX_DEPTH:
            found.append(facts.diagnostic("E106", f"this expression is nested {depth} deep; at most {ex.MAX_DEPTH} is allowed",
                                          use.expr.span, "compute it in a participant"))
    return found


def orchestrator_scope(facts: Facts) -> list[Diagnostic]:
    """W202 too many participants; W203 an expression that computes rather than routes."""
    found = []
    most = facts.limits.get("participants", 7)
    if facts.process is not None and len(facts.process.participants) > most:
        extra = facts.process.participants[most]
        found.append(facts.diagnostic("W202", f"the process coordinates {len(facts.process.participants)} participants;"
                                      f" the limit is {most}", extra.name.span,
                                      "split it into called processes, or raise `limit participants N`"))
    computation = facts.limits.get("computation", 2)
    for _, _, parts in facts.scans:
        for part, found_in in parts:
            if found_in.arithmetic > computation:
                found.append(facts.diagnostic("W203", f"this expression does {found_in.arithmetic} arithmetic operations;"
                                              f" the limit is {computation}", part.span,
                                              "business computation belongs in a participant; raise `limit computation N` if not"))
    return found


def compensation_hygiene(facts: Facts) -> list[Diagnostic]:
    """W204: a compensation that awaits no reply cannot be confirmed."""
    return [
        facts.diagnostic("W204", f"the compensation of `{step.name.text}` awaits no reply: the undo cannot be confirmed",
                         step.compensate.span, "add `awaiting reply_name within D retry N`")
        for step in facts.steps
        if step.compensate is not None and not step.compensate.replies
    ]


def unused_declarations(facts: Facts) -> list[Diagnostic]:
    """W207: a participant or an event declared and never used; W208: no `correlate by`."""
    proc = facts.process
    if proc is None:
        return []
    used: set[str] = set()
    awaited: set[str] = set()
    for stmt, _ in facts.statements:
        if isinstance(stmt, sx.Step):
            used.update(c.participant.text for c in (stmt.send, stmt.compensate) if c is not None)
            awaited.update(n.text for n in (stmt.await_.replies if stmt.await_ else ()))
            awaited.update(n.text for on in stmt.on_replies for n in on.replies)
        elif isinstance(stmt, sx.Race):
            awaited.update(n.text for arm in stmt.arms for n in arm.messages)
    found = [facts.diagnostic("W207", f"participant `{p.name.text}` is declared but never used", p.name.span)
             for p in proc.participants if p.name.text not in used]
    found.extend(facts.diagnostic("W207", f"event `{e.name.text}` is declared but never awaited", e.name.span)
                 for e in proc.events if e.name.text not in awaited)
    if proc.correlate is None:
        found.append(facts.diagnostic("W208", f"process `{proc.name.text}` has no `correlate by`: commands carry no business key",
                                      proc.name.span, "add `correlate by input.<key>`"))
    return found


# ---------------------------------------------------------------- flow


def unbound_reads(facts: Facts) -> list[Diagnostic]:
    """E114: a bound name (or `steps.<name>`) read where some path to it has not bound it."""
    definition = facts.definition
    steps = {node.name: node for node in definition.steps}
    reads: list[tuple[fa.ExprUse, str, ex.Expr]] = []
    for use, whole, _ in facts.scans:
        for node in whole.names:
            if node.name in facts.bound_names:
                reads.append((use, node.name, node))
        for read in whole.reads:
            if read.names[0] == "steps" and len(read.names) > 1 and read.names[1] in steps:
                reads.append((use, fa.STEP_PREFIX + read.names[1], read.parts[1]))
    if not reads:
        return []
    at: dict[str, list[str]] = {}
    for use, key, _ in reads:
        if use.node is not None:
            at.setdefault(key, []).append(use.node)
    facts_at = fa.Bindings(definition, at, facts.exhaustive_nodes, facts.branches)
    member = facts.branches
    sites = _binding_sites(definition)
    found = []
    for use, key, expr in reads:
        if use.node is None:
            always = sometimes = False
        else:
            always, sometimes = facts_at.holds(use.node, key, use.after)
        is_step = key.startswith(fa.STEP_PREFIX)
        if always or (is_step and sometimes):  # `steps.x` is null until x runs: testing that is fine
            continue
        name = key.removeprefix(fa.STEP_PREFIX)
        shown = f"steps.{name}" if is_step else name
        line = steps[name].span.line if is_step else _first_line(facts, name, sites)
        span = name_span(expr, name) if is_step else expr.span
        sibling = _sibling_branch(definition, member, use.node, [s for s, _ in sites.get(key, [])])
        later = line > expr.span.line
        if sibling is not None and not sometimes:
            message = f"`{shown}` is bound in parallel branch `{sibling}`, which may not have finished here"
            hint = "read it after the parallel block, where every branch has finished"
        elif is_step:
            message = (
                f"`{shown}` is read where step `{name}` may not have run (line {line})"
                if sometimes
                else f"`{shown}` is read before step `{name}` can have run (line {line})"
            )
            hint = "read it only after the step, on every path"
        elif sometimes:
            message = f"`{shown}` may not be bound here: only some paths to here bind it (line {line})"
            hint = "bind it on every path that leads here, or read it only where it is bound"
        else:
            message = (
                f"`{shown}` is read before it is bound (line {line})"
                if later
                else f"`{shown}` is not bound on any path to here (bound on line {line})"
            )
            hint = "read it where the binding has happened, or bind it earlier"
            if all(how == "failure" for _, how in sites.get(key, [])):
                hint = "a name bound by `on ... as` is bound only on a failure, which ends the process"
        found.append(facts.diagnostic("E114", message, span, hint))
    return found


def _binding_sites(definition: m.ProcessDefinition) -> dict[str, list[tuple[str, str]]]:
    sites: dict[str, list[tuple[str, str]]] = {}
    for node in definition.in_order:
        node_id = node.id
        if isinstance(node, m.StepNode):
            sites.setdefault(fa.STEP_PREFIX + node.name, []).append((node_id, "step"))
            if node.bind:
                sites.setdefault(node.bind, []).append((node_id, "await"))
            for bound in node.failure_binds.values():
                sites.setdefault(bound, []).append((node_id, "failure"))
        else:
            for bound in fa.model_bindings(node):
                sites.setdefault(bound, []).append((node_id, node.kind))
    return sites


def _first_line(facts: Facts, name: str, sites: dict[str, list[tuple[str, str]]]) -> int:
    spans = [span for _, span in facts.bound_names.get(name, []) if span is not None]
    if spans:
        return spans[0].line
    return facts.definition.nodes[sites[name][0][0]].span.line


def _sibling_branch(
    definition: m.ProcessDefinition, member: dict[str, tuple[str, int]], use: str | None, binders: list[str]
) -> str | None:
    """The name of a parallel branch running beside `use` that holds one of `binders`."""
    if use is None:
        return None
    enclosing: dict[str, int] = {}
    current = member.get(use)
    while current is not None:
        enclosing[current[0]] = current[1]
        current = member.get(current[0])
    for binder in binders:
        current = member.get(binder)
        while current is not None:
            fork, index = current
            if fork in enclosing and enclosing[fork] != index:
                node = definition.nodes[fork]
                assert isinstance(node, m.ForkNode)
                return node.branches[index][0]
            current = member.get(fork)
    return None


def _describe(stmt: sx.Statement) -> tuple[str, Span]:
    if isinstance(stmt, sx.Step):
        return f"step `{stmt.name.text}`", stmt.name.span
    if isinstance(stmt, sx.Call):
        return f"the call of `{stmt.process.text}`", stmt.span
    if isinstance(stmt, sx.Parallel | sx.Race | sx.Repeat) and stmt.name is not None:
        kind = {sx.Parallel: "parallel block", sx.Race: "race", sx.Repeat: "loop"}[type(stmt)]
        return f"{kind} `{stmt.name.text}`", stmt.name.span
    keyword = {sx.If: "if", sx.Switch: "switch", sx.Parallel: "parallel", sx.Repeat: "repeat", sx.Fail: "fail", sx.End: "end"}
    return f"this `{keyword.get(type(stmt), 'statement')}`", stmt.span


def _blocker(stmt: sx.Statement) -> str:
    line = stmt.span.line
    if isinstance(stmt, sx.Fail | sx.End):
        return f"the `{'fail' if isinstance(stmt, sx.Fail) else 'end'}` on line {line} stops every path before it"
    if isinstance(stmt, sx.Race):
        return f"every arm of race `{stmt.name.text}` (line {line}) stops the process"
    if isinstance(stmt, sx.Repeat):
        return f"the loop on line {line} never reaches its `until`"
    word = "if" if isinstance(stmt, sx.If) else "switch"
    return f"every arm of the `{word}` on line {line} stops the process"


def reachability(facts: Facts) -> list[Diagnostic]:
    """E116 a statement no path reaches; E119 a parallel join that can never fire;
    W206 `end` inside a parallel branch (it ends the whole instance)."""
    if facts.process is None:
        return []
    exhaustive = frozenset(id(s) for s, _ in facts.statements if isinstance(s, sx.Switch) and _is_exhaustive(facts, s))
    completes = fa.completion(facts.process.body, exhaustive)
    found = []
    for block in fa.blocks(facts.process.body):
        for index, stmt in enumerate(block[:-1]):
            if completes[id(stmt)]:
                continue
            if not isinstance(stmt, sx.Parallel):  # a join that never fires is E119's finding
                what, span = _describe(block[index + 1])
                found.append(facts.diagnostic("E116", f"{what} is unreachable: {_blocker(stmt)}", span,
                                              "remove it, or move it before what stops the process"))
            break
    for stmt, branches in facts.statements:
        if isinstance(stmt, sx.Parallel):
            label = f"parallel block `{stmt.name.text}`" if stmt.name else "this parallel block"
            for branch in stmt.branches:
                if not all(completes[id(s)] for s in branch.body):
                    found.append(facts.diagnostic("E119", f"{label} can never join: branch `{branch.name.text}`"
                                                  " always fails or ends", branch.name.span,
                                                  "a join waits for every branch; let this one finish on some path"))
        elif isinstance(stmt, sx.End) and branches:
            found.append(facts.diagnostic("W206", f"`end` in branch `{branches[-1].name.text}` ends the whole instance,"
                                          " not just the branch", stmt.span, "let the branch finish instead"))
    return found


def missing_compensation(facts: Facts) -> list[Diagnostic]:
    """W201: a step that commands something, has no `compensate`, and a later failure."""
    definition = facts.definition
    bare = [
        (node, node.command)
        for node in definition.steps
        if node.command is not None and node.compensation is None and node.nothing_to_undo is None
    ]
    if not bare:  # every step that commands something says how it is undone: nothing to search
        return []
    witness = fa.failure_witness(definition)
    member = facts.branches
    names = {s.name.text: s.name.span for s in facts.steps}
    found = []
    for node, command in bare:
        fail_id = witness.get(node.next) or _failing_sibling(definition, member, witness, node.id)
        if fail_id is None:
            continue
        fail = definition.nodes[fail_id]
        found.append(facts.diagnostic("W201", f"step `{node.name}` has no `compensate`, yet the process can fail after it"
                                      f" (line {fail.span.line})", names.get(node.name, node.span),
                                      f"add `compensate {command.participant}.<undo> {{ ... }} awaiting ...`,"
                                      " say `nothing to undo \"why\"` when the step changes nothing,"
                                      " or move the step after the steps that can fail"))
    return found


def _failing_sibling(
    definition: m.ProcessDefinition, member: dict[str, tuple[str, int]], witness: dict[str, str], node_id: str
) -> str | None:
    """A fail node in a parallel branch running beside the node (it may fail after the node)."""
    current = member.get(node_id)
    while current is not None:
        fork_id, index = current
        fork = definition.nodes[fork_id]
        assert isinstance(fork, m.ForkNode)
        for other, (_, first) in enumerate(fork.branches):
            if other != index and first in witness:
                return witness[first]
        current = member.get(fork_id)
    return None


def callee_deadlines(facts: Facts) -> list[Diagnostic]:
    """W209: a called process declares a `deadline`, which only a main process enforces."""
    found = []
    for node in facts.definition.in_order:
        if not isinstance(node, m.CallNode):
            continue
        callee = facts.definition.called.get(node.process)
        if callee is None or callee.deadline_seconds is None:
            continue
        found.append(facts.diagnostic(
            "W209",
            f"`{callee.name}` declares a deadline, which is not enforced when it is called; only the main process's deadline is",
            node.span,
            "put the deadline on the calling process, or bound the callee's waits with `within`",
        ))
    return found


RULES: list[Rule] = [
    unknown_participant,
    unknown_messages,
    unknown_names_in_expressions,
    undeclared_input_fields,
    unknown_limits,
    duplicates,
    step_shape,
    waits_without_way_out,
    unbounded_loops,
    switch_coverage,
    expression_limits,
    orchestrator_scope,
    compensation_hygiene,
    unused_declarations,
    unbound_reads,
    reachability,
    missing_compensation,
    callee_deadlines,
]


def run_all(definition: m.ProcessDefinition, limits: Mapping[str, int]) -> list[Diagnostic]:
    """Run every rule and collect what they find (never stopping at the first)."""
    facts = Facts(definition, limits)
    found: list[Diagnostic] = []
    for rule in RULES:
        found.extend(rule(facts))
    return found


__all__ = ["LIMIT_NAMES", "RULES", "Facts", "Rule", "run_all"]
