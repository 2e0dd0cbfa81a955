"""Rules about human tasks (`task review by group "…" due 2d { … }`, see dsl/tasks.py).

E170 a task with no assignee or group; E171 an escalation chain that never ends (a `remind`
or `reassign` that gives no new `due`: the task then waits for a person with no end);
E173 an escalation that is never taken (after `escalate fail`, or on a task without a
`due`); E174 a declared participant named `task`, which human tasks are commanded to.
E172 (a form field read that the form lacks) is found with the other contracts, in
`contract_rules`.
"""

from __future__ import annotations

from procflow.dsl import syntax as sx
from procflow.dsl import tasks
from procflow.dsl.diagnostics import Diagnostic
from procflow.dsl.rule_facts import Facts


def task_shape(facts: Facts) -> list[Diagnostic]:
    """E170, E171, E173 on each task; E174 on a participant that takes the tasks' name."""
    found: list[Diagnostic] = []
    has_task = False
    for step in facts.steps:
        task = step.task
        if task is None:
            continue
        has_task = True
        name = step.name.text
        if task.assignee is None:
            found.append(facts.diagnostic(
                "E170", f"task `{name}` has no assignee: nobody would be asked to do it", step.name.span,
                f'say who does it: `task {name} by "ana" ...` (a person) or `task {name} by group "reviewers" ...`'))
        found.extend(_chain(facts, name, task))
    if has_task and facts.process is not None:
        for participant in facts.process.participants:
            if participant.name.text == tasks.PARTICIPANT:
                found.append(facts.diagnostic(
                    "E174", f"the participant name `{tasks.PARTICIPANT}` is taken by the process's human tasks",
                    participant.name.span, "give the participant another name"))
    return found


def _chain(facts: Facts, name: str, task: sx.Task) -> list[Diagnostic]:
    found: list[Diagnostic] = []
    ended: sx.Escalation | None = None
    for escalation in task.escalations:
        if ended is not None:
            found.append(facts.diagnostic(
                "E173", f"this escalation of task `{name}` is never taken: `escalate fail` at line {ended.span.line} ends the chain",
                escalation.span, "remove it, or move it before the `escalate fail` line"))
            continue
        if task.due is None:
            found.append(facts.diagnostic(
                "E173", f"this escalation of task `{name}` is never taken: the task has no `due` to pass",
                escalation.span, f"give the task a due time: `task {name} by ... due 2d {{ ... }}`"))
            break
        if escalation.action == "fail":
            ended = escalation
        elif escalation.due is None:
            found.append(facts.diagnostic(
                "E171", f"the escalation chain of task `{name}` never ends: after this `{escalation.action}` the task has no due",
                escalation.span, f"give it a new due (`escalate {escalation.action} ... due 1d`), so the chain goes on to its end"))
            break
    return found


__all__ = ["task_shape"]
