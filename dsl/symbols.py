"""Where each name of a .proc file is declared and used: what the language server answers
"go to definition", "find references", hover and completion from.

A `SymbolIndex` is built from a syntax tree (no compiling): participants and their commands,
messages (a participant's replies and the process's events share a name space, as `await`
reads them), steps (declared by `step`, used as `steps.<name>` in expressions) and bound names
(declared by `as`, used as the head of an expression path). Each occurrence keeps its span, so
a position in the text finds its symbol.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from procflow.dsl import expressions as ex
from procflow.dsl import syntax as sx
from procflow.dsl.diagnostics import Span
from procflow.dsl.printer import format_record, participant_text, step_text
from procflow.dsl.statement_walk import walk_statements

__all__ = ["Occurrence", "SymbolIndex", "index_source"]

KINDS = ("participant", "command", "message", "step", "binding")
"""The kinds of symbol: a command's name is `participant.command`."""


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One place a symbol's name stands: declared there (`declares`) or used; a declaration
    says in `detail` what it declares, as canonical text."""

    kind: str
    name: str
    span: Span
    declares: bool = False
    detail: str = ""


@dataclass(frozen=True, slots=True)
class SymbolIndex:
    """Every occurrence of every symbol of one file, in document order."""

    occurrences: tuple[Occurrence, ...]

    def at(self, line: int, column: int) -> Occurrence | None:
        """The occurrence under a 1-based position (its end counts: the cursor just after a name is on it)."""
        hits = [o for o in self.occurrences if (o.span.line, o.span.column) <= (line, column) <= (o.span.end_line, o.span.end_column)]
        return min(hits, key=lambda o: (o.span.end_line - o.span.line, o.span.end_column - o.span.column), default=None)

    def declarations(self, kind: str, name: str) -> list[Occurrence]:
        """Where the symbol is declared (a bound name may be bound in several places)."""
        return [o for o in self.occurrences if o.declares and o.kind == kind and o.name == name]

    def references(self, kind: str, name: str, include_declarations: bool = True) -> list[Occurrence]:
        """Every occurrence of the symbol."""
        return [o for o in self.occurrences if o.kind == kind and o.name == name and (include_declarations or not o.declares)]

    def names(self, kind: str, declared: bool = True) -> list[str]:
        """The names of one kind, in document order, once each: those declared, or (`declared=False`)
        every name used too (a reply needs no declaration)."""
        return list(dict.fromkeys(o.name for o in self.occurrences if o.kind == kind and (o.declares or not declared)))


def index_source(source: sx.SourceFile) -> SymbolIndex:
    """The symbols of a parsed file (its scenarios included, when it was parsed with them)."""
    found = list(_process(source.process))
    for scenario in source.scenarios:
        found += _scenario(scenario)
    bound = {o.name for o in found if o.kind == "binding" and o.declares}
    # A path's head is a bound name only where something binds it (`input` and `steps` are not).
    kept = [o for o in found if o.kind != "binding" or o.name in bound]
    return SymbolIndex(tuple(sorted(kept, key=lambda o: o.span)))


def _process(process: sx.Process) -> Iterator[Occurrence]:
    for participant in process.participants:
        yield Occurrence("participant", participant.name.text, participant.name.span, True, participant_text(participant))
        for contract in participant.contracts:
            payload = f" {format_record(contract.payload)}" if contract.payload is not None else ""
            detail = f"{contract.kind} {contract.name.text}{payload}  (participant {participant.name.text})"
            if contract.kind == "command":
                yield Occurrence("command", f"{participant.name.text}.{contract.name.text}", contract.name.span, True, detail)
            else:
                yield Occurrence("message", contract.name.text, contract.name.span, True, detail)
    for event in process.events:
        payload = f" {format_record(event.payload)}" if event.payload is not None else ""
        yield Occurrence("message", event.name.text, event.name.span, True, f"event {event.name.text}{payload}")
    if process.correlate is not None:
        yield from _expression(process.correlate)
    if process.output is not None:
        yield from _expression(process.output)
    for statement, _ in walk_statements(process.body):
        yield from _statement(statement)


def _messages(names: Iterable[sx.Name]) -> Iterator[Occurrence]:
    return (Occurrence("message", name.text, name.span) for name in names)


def _binding(name: sx.Name | None, detail: str) -> Iterator[Occurrence]:
    if name is not None:
        yield Occurrence("binding", name.text, name.span, True, f"{name.text}: bound by {detail}")


def _command(participant: sx.Name, command: sx.Name) -> Iterator[Occurrence]:
    yield Occurrence("participant", participant.text, participant.span)
    yield Occurrence("command", f"{participant.text}.{command.text}", command.span)


def _statement(statement: sx.Statement) -> Iterator[Occurrence]:
    match statement:
        case sx.Step():
            yield from _step(statement)
        case sx.If(arms=arms):
            for condition, _ in arms:
                yield from _expression(condition)
        case sx.Switch(subject=subject):
            yield from _expression(subject)
        case sx.Race(arms=arms):
            for arm in arms:
                yield from _messages(arm.messages)
                yield from _binding(arm.bind, "a race arm `on " + ", ".join(n.text for n in arm.messages) + "`")
                if arm.at is not None:
                    yield from _expression(arm.at)
        case sx.Repeat(until=until):
            yield from _expression(until)
        case sx.Call(process=process, data=data, bind=bind):
            if data is not None:
                yield from _expression(data)
            yield from _binding(bind, f"`call {process.text}`")
        case sx.ForEach(item=item, items=items, collect=collect):
            yield from _expression(items)
            yield from _binding(item, f"`for each {item.text}`: each item of {ex.to_text(items)} in turn")
            yield from _binding(collect, f"`collect {collect.text}`: the results of `for each {item.text}`" if collect else "")
        case sx.Set(name=name, value=value):
            yield from _expression(value)
            yield from _binding(name, f"`set {name.text} = ...`")
        case sx.Emit(participant=participant, event=event, data=data):
            yield from _command(participant, event)
            if data is not None:
                yield from _expression(data)


def _step(step: sx.Step) -> Iterator[Occurrence]:
    yield Occurrence("step", step.name.text, step.name.span, True, step_text(step))
    where = f"step {step.name.text}"
    if step.send is not None:
        yield from _command(step.send.participant, step.send.command)
        if step.send.data is not None:
            yield from _expression(step.send.data)
    if step.await_ is not None:
        yield from _messages(step.await_.replies)
        replies = ", ".join(name.text for name in step.await_.replies)
        yield from _binding(step.await_.bind, f"`await {replies}` in {where}")
    for on in step.on_replies:
        yield from _messages(on.replies)
        replies = ", ".join(name.text for name in on.replies)
        yield from _binding(on.bind, f"`on {replies}` in {where}")
    if step.compensate is not None:
        yield from _command(step.compensate.participant, step.compensate.command)
        if step.compensate.data is not None:
            yield from _expression(step.compensate.data)
        yield from _messages(step.compensate.replies)
    if step.wait is not None and step.wait.until is not None:
        yield from _expression(step.wait.until)


def _expression(expr: ex.Expr) -> Iterator[Occurrence]:
    """`steps.<name>` names a step; a path's head may be a bound name (kept when something binds it)."""
    for node in ex.walk(expr):
        if isinstance(node, ex.Var):
            yield Occurrence("binding", node.name, node.span)
        elif isinstance(node, ex.Field) and isinstance(node.base, ex.Var) and node.base.name == "steps":
            span = node.span
            yield Occurrence("step", node.name, Span(span.end_line, span.end_column - len(node.name), span.end_line, span.end_column))


def _scenario(scenario: sx.Scenario) -> Iterator[Occurrence]:
    for rule in scenario.rules:
        yield from _command(rule.participant, rule.command)
        if rule.reply is not None:
            yield Occurrence("message", rule.reply.text, rule.reply.span)
    for delivery in scenario.deliveries:
        yield Occurrence("message", delivery.event.text, delivery.event.span)
    yield from _messages(scenario.silenced)
