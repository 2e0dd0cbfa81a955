"""Rules about the scenarios written after a process: every name a scenario line uses must be
one the process (or a process it calls) can meet, so a misspelt line is an error at its place
instead of a rule that never fires and a scenario that passes for the wrong reason.

E140 a participant no process declares, E141 a command no step sends to that participant,
E142 a reply the command's step cannot receive, E143 an event no process declares, E144 a
status no instance can have, E145 a completed entry no step can complete with, E182 a
`round` of a command no step sends in a loop, E183 a `round` its loop never runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from procflow.dsl import model as m
from procflow.dsl import syntax as sx
from procflow.dsl.diagnostics import Diagnostic, Span
from procflow.dsl.rule_facts import Facts, suggestion
from procflow.dsl.statement_walk import child_blocks
from procflow.errors import SourceError

IN_NO_LOOP = 0
"""`_Reachable.rounds_of`: the step runs in no `repeat`."""


@dataclass
class _Reachable:
    """What the scenarios of a process may name, gathered from it and every process it calls."""

    participants: set[str] = field(default_factory=set)
    replies_of: dict[str, set[str]] = field(default_factory=dict)  # "participant.command" -> its replies
    events: set[str] = field(default_factory=set)
    statuses: set[str] = field(default_factory=lambda: set(m.BUILTIN_STATUSES))
    completions: set[str] = field(default_factory=set)  # what `completedSteps` can hold
    rounds_of: dict[str, list[int | None]] = field(default_factory=dict)
    """"participant.command" -> for each step of the main process that sends it, the `max` of
    the innermost loop around it (`IN_NO_LOOP`; None: no `max`). A command sent in a called
    process is left out: its rounds are the caller's loops'."""

    @classmethod
    def of(cls, definition: m.ProcessDefinition) -> _Reachable:
        found = cls()
        for process in definition.processes.values():
            found.participants.update(process.participants)
            found.events.update(process.events)
            for node in process.in_order:
                match node:
                    case m.StepNode():
                        found.completions.update(node.replies)
                        if node.timer_seconds is not None or node.timer_until is not None:
                            found.completions.add(node.name)  # a timer step completes with its name
                        if node.status:
                            found.statuses.add(node.status)
                        if node.command is not None:
                            replies = found.replies_of.setdefault(f"{node.command.participant}.{node.command.command}", set())
                            replies.update(node.replies, node.failure_replies)
                        if node.compensation is not None:
                            undo = node.compensation.command
                            found.replies_of.setdefault(f"{undo.participant}.{undo.command}", set()).update(
                                node.compensation.replies + node.compensation.refused)
                    case m.RaceNode():
                        if node.status:
                            found.statuses.add(node.status)
                    case m.JoinNode() if node.first:
                        found.statuses.add(f"cancelling_{node.name}")  # its losers are undone
        syntax = definition.syntax
        if syntax is not None:
            found.rounds_of = _rounds(syntax.process.body)
            called = {f"{n.command.participant}.{n.command.command}" for p in list(definition.processes.values())[1:]
                      for n in p.steps if n.command is not None}
            for command in called:
                found.rounds_of.pop(command, None)
        return found

    def commands_of(self, participant: str) -> list[str]:
        return sorted(key.split(".", 1)[1] for key in self.replies_of if key.split(".", 1)[0] == participant)


def scenario_references(facts: Facts) -> list[Diagnostic]:
    """E140-E145: each name a scenario line uses exists where the scenario can meet it;
    E182-E183: each `round` is one the command is sent in."""
    definition = facts.definition
    try:
        scenarios = definition.scenarios
    except SourceError as error:  # scenarios are read on first use: their text may be wrong
        return list(error.diagnostics)
    if not scenarios:
        return []
    reachable = _Reachable.of(definition)
    found: list[Diagnostic] = []
    for scenario in scenarios:
        syntax: sx.Scenario = scenario.syntax
        for rule in syntax.rules:
            found.extend(_when_rule(facts, reachable, rule) or _round(facts, reachable, rule))
        for name in [d.event for d in syntax.deliveries] + list(syntax.silenced):
            if name.text not in reachable.events:
                found.append(facts.diagnostic(
                    "E143", f"no process here declares the event `{name.text}`" + suggestion(name.text, sorted(reachable.events)),
                    name.span, _listing("the events declared", reachable.events)))
        for expectation in syntax.expectations:
            found.extend(_expectation(facts, reachable, expectation))
    return found


def _when_rule(facts: Facts, reachable: _Reachable, rule: sx.WhenRule) -> list[Diagnostic]:
    participant, command = rule.participant.text, rule.command.text
    if participant not in reachable.participants:
        return [facts.diagnostic(
            "E140", f"no process here declares the participant `{participant}`"
            + suggestion(participant, sorted(reachable.participants)),
            rule.participant.span, _listing("the participants", reachable.participants))]
    replies = reachable.replies_of.get(f"{participant}.{command}")
    if replies is None and rule.task:
        tasks_here = reachable.commands_of(participant)
        return [facts.diagnostic(
            "E141", f"no task `{command}` in this process" + suggestion(command, tasks_here),
            rule.command.span, _listing("the tasks", tasks_here))]
    if replies is None:
        commands = reachable.commands_of(participant)
        return [facts.diagnostic(
            "E141", f"no step sends `{command}` to `{participant}`" + suggestion(command, commands),
            rule.command.span, _listing(f"the commands sent to `{participant}`", commands))]
    if rule.reply is not None and rule.reply.text not in replies:
        return [facts.diagnostic(
            "E142", f"the step that sends `{participant}.{command}` does not await `{rule.reply.text}`"
            + suggestion(rule.reply.text, sorted(replies)),
            rule.reply.span, _listing("it awaits", replies))]
    return []


def _rounds(body: tuple[sx.Statement, ...] | list[sx.Statement]) -> dict[str, list[int | None]]:
    """command -> the `max` of the innermost loop around each step that sends it (see `_Reachable`)."""
    found: dict[str, list[int | None]] = {}
    stack: list[tuple[sx.Statement, int | None]] = [(s, IN_NO_LOOP) for s in reversed(body)]
    while stack:
        stmt, rounds = stack.pop()
        if isinstance(stmt, sx.Step) and stmt.send is not None:
            found.setdefault(f"{stmt.send.participant.text}.{stmt.send.command.text}", []).append(rounds)
        inner = stmt.max if isinstance(stmt, sx.Repeat) else rounds
        for block in reversed(child_blocks(stmt)):
            stack.extend((s, inner) for s in reversed(block))
    return found


def _round(facts: Facts, reachable: _Reachable, rule: sx.WhenRule) -> list[Diagnostic]:
    """E182, E183: the `round N` of a `when` line is one some step sending the command runs."""
    if rule.round is None or rule.round_span is None:
        return []
    command = f"{rule.participant.text}.{rule.command.text}"
    rounds = reachable.rounds_of.get(command)
    if rounds is None:
        return []  # sent in a called process (or not at all: E141)
    if all(r == IN_NO_LOOP for r in rounds):
        return [facts.diagnostic(
            "E182", f"`{command}` is sent in no `repeat`: it has no round {rule.round}", rule.round_span,
            "a round counts the rounds of the loop around the step; for a resend after a timeout, say `attempt N`")]
    most = None if any(r is None for r in rounds) else max(r for r in rounds if r is not None)
    if rule.round < 1 or (most is not None and rule.round > most):
        ran = "rounds count from 1" if rule.round < 1 else f"the loop around it runs at most {most} rounds"
        return [facts.diagnostic(
            "E183", f"`{command}` has no round {rule.round}: {ran}", rule.round_span,
            f"say a round from 1 to {most}" if most is not None else "rounds count from 1")]
    return []


def _expectation(facts: Facts, reachable: _Reachable, expectation: sx.Expectation) -> list[Diagnostic]:
    span: Span = expectation.span
    match expectation.kind:
        case "status" if expectation.value not in reachable.statuses:
            return [facts.diagnostic(
                "E144", f"no instance of this process can have the status `{expectation.value}`"
                + suggestion(expectation.value, sorted(reachable.statuses)),
                span, _listing("the statuses", reachable.statuses))]
        case "completed":
            return [facts.diagnostic(
                "E145", f"no step completes with `{name}`" + suggestion(name, sorted(reachable.completions)),
                span, _listing("steps complete with", reachable.completions))
                for name in expectation.value if name is not None and name not in reachable.completions]
        case "commands" | "compensation" | "unconfirmed":
            unknown = [ref for ref in expectation.value if ref not in reachable.replies_of]
            return [facts.diagnostic(
                "E141", f"no step sends `{ref}`" + suggestion(ref, sorted(reachable.replies_of)),
                span, _listing("the commands sent", reachable.replies_of)) for ref in unknown]
    return []


def _listing(what: str, names: Iterable[str]) -> str:
    listed = sorted(names)
    return f"{what}: {', '.join(listed)}" if listed else f"{what}: none"


__all__ = ["scenario_references"]
