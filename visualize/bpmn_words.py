"""What BPMN cannot say about a procflow process, in words: the `documentation` the BPMN
export (`procflow.visualize.bpmn`) writes on its elements (retries and backoff, bound names,
statuses, the process's correlation, deadline and input contract)."""

from __future__ import annotations

import json

from procflow.dsl import model as m
from procflow.dsl.diagnostics import Span
from procflow.dsl.paths import duration_text


def source_text(definition: m.ProcessDefinition, span: Span | None) -> str:
    """The text of the process at a span, on one line (empty when the source is not kept)."""
    lines = definition.source.splitlines()
    if span is None or not 0 < span.line <= span.end_line <= len(lines):
        return ""
    if span.line == span.end_line:
        text = lines[span.line - 1][span.column - 1 : span.end_column - 1]
    else:
        parts = [lines[span.line - 1][span.column - 1 :], *lines[span.line : span.end_line - 1]]
        text = "\n".join([*parts, lines[span.end_line - 1][: span.end_column - 1]])
    return " ".join(text.split())


def wait_words(timeout: m.TimeoutSpec | None) -> str:
    """How long a wait lasts and how its command is sent again (BPMN has no retry)."""
    if timeout is None:
        return ""
    text = f"waits {timeout.text}"
    if timeout.retries:
        backoff = f", {duration_text(timeout.backoff_seconds)} apart" if timeout.backoff_seconds else ""
        growth = f" (each wait {timeout.factor:g} times the last)" if timeout.factor != 1 else ""
        text += (
            f"; without a reply the command is sent again, up to {timeout.retries} more time(s){backoff}{growth}: "
            "BPMN has no retry, so the timer stands for the last attempt's timeout"
        )
    return text


def task_due_seconds(node: m.StepNode) -> float:
    """A human task's time until its last due passes: every round's due, one after another."""
    assert node.task is not None
    return sum(r.due_seconds or 0.0 for r in node.task.rounds)


def task_words(node: m.StepNode) -> str:
    """Who does a human task, when it is due, and its escalation (BPMN has no escalation rounds
    on a user task: the timer stands for the last due)."""
    assert node.task is not None
    first, *escalations = node.task.rounds
    text = f"a human task for {first.assignee}" + (f", due in {duration_text(first.due_seconds)}" if first.due_seconds else "")
    if escalations:
        said = [f"{r.escalation}" + (f" to {r.assignee}" if r.escalation == "reassign" else "")
                + (f" (due {duration_text(r.due_seconds)})" if r.due_seconds else "") for r in escalations]
        text += "; when it passes: " + ", then ".join(said)
    if first.due_seconds:
        text += f"; BPMN has no escalation rounds, so the timer stands for the last due: {duration_text(task_due_seconds(node))} in all"
    return text


def step_doc(definition: m.ProcessDefinition, node: m.StepNode) -> list[str]:
    """A step's documentation: its doc, its command, its wait, its bound name and status."""
    lines = [node.doc or ""]
    if node.command is not None:
        participant = definition.participants.get(node.command.participant)
        display = participant.display if participant else node.command.participant
        lines.append(f"procflow step `{node.name}`: sends command `{node.command.name}` to {display} (commandName, "
                     f"workflowId, correlationId, replyTo `{definition.reply_to}`, data).")
        written = source_text(definition, node.command.span)
        lines.append(f"As written: `{written}`" if written else "")
    lines.append(task_words(node) if node.task is not None else wait_words(node.timeout))
    if node.bind:
        lines.append(f"The reply's data is bound as `{node.bind}`.")
    if node.status:
        lines.append(f"Status while waiting: {node.status}.")
    if node.nothing_to_undo:
        lines.append(f"Nothing to undo: {node.nothing_to_undo}.")
    return lines


def process_doc(definition: m.ProcessDefinition) -> list[str]:
    """The process's documentation: its doc, correlation, deadline and input contract."""
    lines = [definition.doc or "", f"procflow process `{definition.name}` version {definition.version}."]
    if definition.correlate is not None:
        lines.append(f"Correlated by {definition.correlate.text}; replies arrive on `{definition.reply_to}`.")
    if definition.deadline_seconds is not None:
        lines.append(f"Deadline {duration_text(definition.deadline_seconds)}: an instance not done by then fails and "
                     "compensates (not drawn: BPMN would need an event subprocess around every element).")
    if definition.input_schema is not None:
        lines.append("Input (JSON Schema): " + json.dumps(definition.input_schema, sort_keys=True))
    lines.append("A failure anywhere, also in a parallel branch or a called process, fails the whole instance and "
                 "undoes the completed steps in reverse order of completion.")
    return lines
