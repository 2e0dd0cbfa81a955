"""Human tasks: `task review by group "credit-officers" due 2d { form {...} escalate ... }`.

A task is a step that a person completes. It reaches people as a command to the implicit
participant `task` (`commandName` `task.<name>`, through the outbox and the transport like any
other), whose `data` says who (`assignee` or `group`), by when (`due`, an ISO-8601 instant the
engine fills in), what the person sees (`details`) and the form to fill (`form`, a JSON
Schema). The person's answer is the reply `<name>_completed`, checked against the form like
any reply contract, and bound to the task's name (`review.approved`).

Each `escalate` line is taken, in order, when the current due passes: `remind` sends the
command again to the same people (with `escalation: "remind"`), `reassign to ...` sends it to
others (`escalation: "reassign"`), each with its own new `due`; `fail "…"` fails the instance.
When the last due passes with no `fail` line, the task fails with a default reason.

So a task is lowered here, as it is read, to the step it is (a send, an await bound to the
task's name, a timeout whose retries are the escalations that send again), with the task as
written kept beside it (`Step.task`) for the printer, the views and the engine, which sends
round `n` of the task (`TaskSpec.rounds`) as attempt `n` of the step.
"""

from __future__ import annotations

from typing import Any

from procflow.dsl import expressions as ex
from procflow.dsl import syntax as sx
from procflow.dsl.diagnostics import Span

PARTICIPANT = "task"
"""The participant every task is commanded to: the team's task list (an inbox service)."""
PARTICIPANT_DISPLAY = "People (tasks)"


def completed_reply(task: str) -> str:
    """The reply that completes task `task`: `review_completed`."""
    return f"{task}_completed"


def default_reason(task: str) -> str:
    """Why the instance fails when the task's last due passes and no `escalate fail` says."""
    return f"task `{task}` was not done in time"


def resending(task: sx.Task) -> tuple[sx.Escalation, ...]:
    """The escalations that send the task again (`remind`, `reassign`), up to the first `fail`."""
    found: list[sx.Escalation] = []
    for escalation in task.escalations:
        if escalation.action == "fail":
            break
        found.append(escalation)
    return tuple(found)


def total_due(task: sx.Task) -> float:
    """Seconds from the assignment until the last due passes: every round's due in turn."""
    return sum(d.seconds for d in (task.due, *(e.due for e in resending(task))) if d is not None)


def fail_reason(task: sx.Task) -> sx.Escalation | None:
    """The `escalate fail "…"` line that ends the chain, if one does."""
    return next((e for e in task.escalations if e.action == "fail"), None)


Round = tuple[ex.ObjectExpr, sx.Duration | None, str | None, sx.Assignee | None]
"""One sending of a task: its data mapping, its due, its escalation (None first), its assignee."""


def rounds(name: str, task: sx.Task) -> list[Round]:
    """Each time the task is sent: the assignment, then one per `remind` / `reassign`."""
    assignee = task.assignee
    found: list[Round] = [(_payload(name, task, assignee, None), task.due, None, assignee)]
    for escalation in resending(task):
        if escalation.action == "reassign" and escalation.assignee is not None:
            assignee = escalation.assignee
        found.append((_payload(name, task, assignee, escalation.action), escalation.due, escalation.action, assignee))
    return found


def _payload(name: str, task: sx.Task, assignee: sx.Assignee | None, escalation: str | None) -> ex.ObjectExpr:
    span = task.span
    pairs: list[tuple[str, ex.Expr]] = [("task", ex.Literal(span, name))]
    if assignee is not None:
        pairs.append(("group" if assignee.group else "assignee", assignee.who))
    if escalation is not None:
        pairs.append(("escalation", ex.Literal(span, escalation)))
    if task.details is not None:
        pairs.append(("details", task.details))
    if task.form is not None:
        form: Any = task.form.to_schema()
        pairs.append(("form", ex.Literal(span, form)))
    return ex.ObjectExpr(span, tuple(pairs))


def lower(name: sx.Name, span: Span, assignee: sx.Assignee | None, due: sx.Duration | None, items: list[Any]) -> sx.Step:
    """The step a task is, with the task as written beside it (`Step.task`)."""
    step = sx.Step(name=name, span=span)
    form: sx.RecordType | None = None
    details: ex.ObjectExpr | None = None
    escalations: list[sx.Escalation] = []
    seen: dict[str, Span] = {}

    def once(key: str, item_span: Span, item: Any) -> bool:
        if key in seen:
            step.duplicates.append((key, item_span))
            step.duplicate_items.append(item)
            return False
        seen[key] = item_span
        return True

    for item in items:
        if isinstance(item, sx.Escalation):
            escalations.append(item)
        elif isinstance(item, sx.RecordType):
            if once("form", item.span, item):
                form = item
        elif isinstance(item, ex.ObjectExpr):
            if once("details", item.span, item):
                details = item
        elif item[0] == "header" and once("doc", item[3], item[2]):
            step.doc, step.doc_span = item[2], item[3]
        elif item[0] == "status" and once("status", item[1].span, item[1]):
            step.status = item[1]
    task = sx.Task(assignee, form, details, due, tuple(escalations), span)
    step.task = task
    keyword = Span(span.line, span.column, span.line, span.column + len(PARTICIPANT))  # `task`: where the participant is named
    step.send = sx.Send(sx.Name(PARTICIPANT, keyword), name, rounds(name.text, task)[0][0], span)
    timeout = None
    if due is not None:
        again = len(resending(task))
        retry = sx.Retry(again, None, 1.0, due.span) if again else None
        timeout = sx.Timeout(due, retry, due.span)
    step.await_ = sx.Await((sx.Name(completed_reply(name.text), name.span),), name, timeout, span)
    ends = fail_reason(task)
    if due is not None and ends is not None and ends.reason is not None:
        step.timeout_reason, step.timeout_span = ends.reason, ends.span
    elif due is not None:
        step.timeout_reason, step.timeout_span = default_reason(name.text), due.span
    step.nothing_to_undo = "a person's decision"  # nothing outside changed: a later failure leaves it
    return step
