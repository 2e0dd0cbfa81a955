"""What the console's pages show, read from a store: the definitions an instance runs, their
diagrams as inline SVG, and an instance laid out the way the lesson reads a state record
(workflowId, type, status, completedSteps, nextAction, timeoutAt first).

Diagrams come from `procflow.visualize.render` (Graphviz through the one place that runs
`dot`). Graphviz writes labels into SVG as escaped XML text, so an id such as
`<script>` is drawn as text; the XML prolog and doctype are cut so the SVG can sit inline.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from procflow.dsl import model as m
from procflow.dsl.compiler import compile_source
from procflow.dsl.paths import enumerate_paths, paths_json
from procflow.errors import InputError, ProcflowError
from procflow.interpreter.memory_store import (
    InstanceSummary,
    PinnedDefinition,
    compile_pinned_definition,
    parse_cursor,
)
from procflow.interpreter.state import InstanceState
from procflow.interpreter.stores import DurableStore, OutboxEntry
from procflow.open_tasks import open_tasks
from procflow.operator_cli import history_details, load_definition
from procflow.visualize.render import render_image

_PROLOG = re.compile(r"^.*?(?=<svg)", re.S)
_COMMENT = re.compile(r"<!--.*?-->", re.S)
PATHS_SHOWN = 6
"""How many paths of a process the processes page draws as sequences (the saga table lists all): each is a Graphviz run and
tens of kilobytes of SVG."""


def inline_svg(svg: bytes) -> str:
    """Graphviz's SVG without its prolog, doctype and comments, fit to sit inside HTML."""
    text = svg.decode("utf-8")
    return _COMMENT.sub("", _PROLOG.sub("", text, count=1))


@dataclass
class Definitions:
    """The definitions the console can draw: compiled once per fingerprint (the pinned text
    of a fingerprint never changes, so the compiled definition does not either)."""

    store: DurableStore
    deployed: dict[str, m.ProcessDefinition] = field(default_factory=dict)
    compiled: dict[str, m.ProcessDefinition] = field(default_factory=dict)

    def of(self, fingerprint: str) -> m.ProcessDefinition | None:
        """The definition with `fingerprint`, from the store's pinned text or the deployed files."""
        if fingerprint in self.compiled:
            return self.compiled[fingerprint]
        for definition in self.deployed.values():
            if definition.fingerprint == fingerprint:
                self.compiled[fingerprint] = definition
                return definition
        pinned = self.store.pinned(fingerprint)
        if pinned is None:
            return None
        definition = compile_pinned_definition(pinned, compile_source)
        self.compiled[fingerprint] = definition
        return definition

    def pinned(self) -> list[PinnedDefinition]:
        """Every definition the store keeps."""
        return self.store.pinned_definitions()


def load_processes(folder: Path | None) -> dict[str, m.ProcessDefinition]:
    """The deployed definitions: every `.proc` file of `folder` that checks clean, by name.
    A file with errors stops the server with the errors (`SourceError`), as `procflow start` would."""
    if folder is None:
        return {}
    if not folder.is_dir():
        raise ProcflowError(f"--processes {folder}: not a folder; give the folder that holds the .proc files")
    found: dict[str, m.ProcessDefinition] = {}
    for path in sorted(folder.glob("*.proc")):
        definition = load_definition(str(path))
        found[definition.name] = definition
    return found


@dataclass(frozen=True)
class Page:
    """A page of the instances list and the cursor of the next (None on the last page)."""

    rows: list[InstanceSummary]
    after: str | None


def read_page(
    store: DurableStore, process: str | None, status: str | None, text: str | None, limit: int, after: str | None
) -> Page:
    """Instances most recently changed first, filtered, after the cursor text `after` (the
    store's keyset paging; one row more than shown says whether a next page exists)."""
    try:
        cursor = parse_cursor(after) if after else None
    except InputError:
        raise InputError(f"the paging cursor `{after[:80] if after else ''}` is not one procflow handed out; start again from the first page") from None
    rows = store.instance_page(limit + 1, cursor, status, process, text=text, newest_first=True)
    shown = rows[:limit]
    return Page(shown, shown[-1].cursor if len(rows) > limit else None)


RECORD_FIRST = ("workflowId", "type", "status", "completedSteps", "nextAction", "timeoutAt")
"""The lesson's state record, in its order: shown first on an instance's page."""


def record_rows(state: InstanceState) -> list[tuple[str, str]]:
    """The state record as (field, text) rows: the lesson's fields first, then the details."""
    rows = [
        ("workflowId", state.workflowId),
        ("type", state.type),
        ("status", state.status),
        ("completedSteps", ", ".join(state.completedSteps) or "-"),
        ("nextAction", state.nextAction or "-"),
        ("timeoutAt", state.timeoutAt or "-"),
        ("correlationId", state.correlationId),
        ("definition", f"{state.definition.name} version {state.definition.version} ({state.definition.fingerprint})"),
        ("startedAt", state.startedAt),
        ("updatedAt", state.updatedAt),
    ]
    if state.deadlineAt:
        rows.append(("deadlineAt", state.deadlineAt))
    if state.failure:
        step = f", step {state.failure.step}" if state.failure.step else ""
        rows.append(("failure", f"{state.failure.reason} ({state.failure.cause}{step})"))
    comp = state.compensation
    if comp is not None:
        rows.append(("compensation", f"undone: {', '.join(u.commandName for u in comp.undone) or '-'}; "
                     f"pending: {', '.join(u.commandName for u in comp.pending) or '-'}"
                     + (f"; failed: {comp.failed.commandName}" if comp.failed else "")))
    return rows


def timer_rows(state: InstanceState, outbox: Iterable[OutboxEntry] = ()) -> list[tuple[str, str, str]]:
    """(what, waits for, until): each wait with its timer (a human task with who has it), and
    the instance's deadline."""
    tasks = {(task.task, task.round): task for task in open_tasks(state, outbox)}
    rows = []
    for wait in state.waits:
        task = tasks.get((wait.step, wait.attempt))
        if task is not None:
            rows.append((f"task {wait.step} (round {wait.attempt})", f"{task.who} to complete it", task.due))
            continue
        rows.append((f"{wait.step} (attempt {wait.attempt})", " or ".join(wait.expects) or "its timer", wait.timeoutAt or "no timer"))
    if state.deadlineAt:
        rows.append(("deadline of the instance", "-", state.deadlineAt))
    return rows


def history_rows(state: InstanceState) -> list[dict[str, str]]:
    """The history as a timeline: one row per entry with what happened and the status it led to."""
    rows = []
    status = "running"
    for entry in state.history:
        what = entry.event + (f" {entry.message.get('type')}" if entry.message else "")
        detail = []
        change = ""
        if entry.status is not None:
            change = f"{status} → {entry.status}"
            status = entry.status
        detail.extend(history_details(entry))
        rows.append({"seq": str(entry.seq), "at": entry.at, "what": what, "change": change, "detail": "; ".join(detail)})
    return rows


def command_rows(outbox: Iterable[OutboxEntry]) -> list[dict[str, str]]:
    """The commands an instance asked for: name, dedup key, sent or not."""
    return [
        {
            "command": entry.dispatch.command.commandName,
            "dedupKey": entry.dispatch.dedupKey,
            "attempt": str(entry.dispatch.attempt),
            "sent": f"sent {entry.sent_at}" if entry.sent_at else "not sent yet",
            "created": entry.created_at,
        }
        for entry in outbox
    ]


def instance_svgs(definition: m.ProcessDefinition | None, state: InstanceState) -> tuple[str, str]:
    """The flow overlay and the sequence of the history, as inline SVG ("" without a definition)."""
    if definition is None:
        return "", ""
    data = state.to_json()
    flow = inline_svg(render_image(definition, "flow", "svg", instance=data))
    sequence = inline_svg(render_image(definition, "sequence", "svg", instance=data))
    return flow, sequence


@dataclass(frozen=True)
class ProcessView:
    """One definition as the processes page shows it."""

    name: str
    version: int
    fingerprint: str
    instances: int
    flow_svg: str
    paths: list[dict[str, Any]]
    sequences: list[tuple[str, str]]
    participants: list[dict[str, Any]]


def process_view(definition: m.ProcessDefinition, instances: int) -> ProcessView:
    """A definition's diagrams, saga table and participant contracts."""
    paths = enumerate_paths(definition)
    sequences = [
        (path.name, inline_svg(render_image(definition, "sequence", "svg", path_name=path.name)))
        for path in paths[:PATHS_SHOWN]
    ]
    participants = participant_contracts(definition)
    return ProcessView(
        definition.name, definition.version, definition.fingerprint, instances,
        inline_svg(render_image(definition, "flow", "svg")), paths_json(paths), sequences, participants,
    )


def participant_contracts(definition: m.ProcessDefinition) -> list[dict[str, Any]]:
    """Each participant with the commands the process sends it and the replies it awaits from
    it (steps and their undo), each with its declared payload schema or `-`."""
    commands: dict[str, set[str]] = {name: set() for name in definition.participants}
    replies: dict[str, set[str]] = {name: set() for name in definition.participants}
    for node in definition.nodes.values():
        if not isinstance(node, m.StepNode) or node.command is None:
            continue
        who = node.command.participant
        commands.setdefault(who, set()).add(node.command.name)
        replies.setdefault(who, set()).update(node.replies, node.failure_replies)
        if node.compensation is not None:
            commands[who].add(node.compensation.command.name)
            replies[who].update(node.compensation.replies)

    def schema(declared: Any, name: str) -> str:
        found = declared.get(name) or declared.get(name.rsplit(".", 1)[-1])
        return json.dumps(found, indent=1) if found else "-"

    contracts = []
    for name in sorted(commands):
        declared = definition.participants.get(name)
        declared_commands = dict(declared.commands) if declared else {}
        declared_replies = dict(declared.replies) if declared else {}
        contracts.append({
            "name": name,
            "commands": [(command, schema(declared_commands, command)) for command in sorted(commands[name])],
            "replies": [(reply, schema(declared_replies, reply)) for reply in sorted(replies[name])],
        })
    return contracts
