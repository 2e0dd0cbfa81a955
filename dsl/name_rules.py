"""Rules about names and references: each participant, command, message, step, variable,
input field and limit a process names must be declared, and declared once.

E110 unknown participant, E131 unknown command, E112 unknown event or reply, E113 unknown
variable, E111 unknown step, E135 a step field other than `reply`, E125 an undeclared input
field, E134 unknown limit, E115 duplicate names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from procflow.dsl import expression_reads as er
from procflow.dsl import model as m
from procflow.dsl import syntax as sx
from procflow.dsl.diagnostics import Diagnostic, Span
from procflow.dsl.rule_facts import (
    BUILTIN_NAMES,
    LIMIT_NAMES,
    Facts,
    name_span,
    suggestion,
    value_text,
)


def unknown_participant(facts: Facts) -> list[Diagnostic]:
    """E110: a step sends to (or compensates with) a participant that is not declared.

    E131: the participant declares its commands, and this one is not among them.
    """
    found = []
    participants = facts.definition.participants
    specs = [(n.command, n.compensation.command if n.compensation else None) for n in facts.definition.steps]
    specs += [(n.message, None) for n in facts.definition.in_order if isinstance(n, m.EmitNode)]  # `emit p.e`
    for pair in specs:
        for spec in pair:
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
            if node.name == m.FAILURE_NAME:
                continue  # an undo's mapping reads the failure; anywhere else it is E166

            if node.name not in BUILTIN_NAMES and node.name not in bound:
                hint = (
                    f"a payload is read through the name it is bound to: `await {node.name} as {node.name}_data`"
                    if node.name in messages or _awaited(facts, node.name)
                    else "names come from `input`, `steps.<step>`, a binding `as name` or `set name = ...`"
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
                props = er.schema_fields(current)
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
                block = f"`first of {stmt.name.text}`" if stmt.first and stmt.name else "this parallel block"
                once(branches, branch.name, f"branch `{branch.name.text}` is named twice in {block}")
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
        for _, bound in er.bindings_of(stmt):
            if bound.text in BUILTIN_NAMES or bound.text == m.FAILURE_NAME:
                found.append(facts.diagnostic("E115", f"`{bound.text}` cannot be bound with `as`: it is a built-in name",
                                              bound.span, "choose another name"))
    return found
