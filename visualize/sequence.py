"""Extract the sequence view: lifelines and the messages between them, top to bottom.

Three sources, one IR:

- the definition: every step's command and success reply; gateway arms and race arms as
  `alt` blocks, parallel branches as `par`, loops as `loop`, called processes inlined;
- one path of `procflow paths`: what happens on it, its failure reply or timeout (with its
  retries), then the compensation as the reverse sequence it is;
- an instance's history: what actually happened, in order.

Labels come from the process's own names: a command is its step's name in words
(`reserve_inventory` -> "reserve inventory"), a reply its name in words, an undo command
its verb then its participant (`payment.void` -> "void payment").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from procflow.dsl import model as m
from procflow.dsl.paths import (
    ProcessPath,
    arm_names,
    block_exits,
    duration_text,
    loop_tails,
    race_names,
    timer_text,
)
from procflow.visualize.flow import diagram_title
from procflow.visualize.ir import (
    BlockEnd,
    BlockSection,
    BlockStart,
    Lifeline,
    Message,
    Note,
    SequenceDiagram,
    SequenceItem,
    undo_label,
    wait_text,
    words,
)

ORCHESTRATOR = "O"
EVENTS = "events"


def _definitions(definition: m.ProcessDefinition) -> list[m.ProcessDefinition]:
    """The process and every process it calls, each once, in the order they are reached."""
    out: list[m.ProcessDefinition] = []
    work = [definition]
    while work:
        current = work.pop(0)
        if any(d is current for d in out):
            continue
        out.append(current)
        work.extend(current.called[name] for name in sorted(current.called))
    return out


def _aliases(displays: list[str], taken: set[str]) -> list[str]:
    """One short alias per display name: its initial, or initial plus a later letter, or a number."""
    out = []
    for display in displays:
        letters = [c for c in display if c.isalnum()] or ["X"]
        initial = letters[0].upper()
        candidates = [initial] + [initial + c.lower() for c in letters[1:]]
        candidates += [f"{initial}{n}" for n in range(2, 100)]
        alias = next(c for c in candidates if c not in taken)
        taken.add(alias)
        out.append(alias)
    return out


class _Cast:
    """The lifelines, and how to find the one that sends or receives a message."""

    def __init__(self, definition: m.ProcessDefinition) -> None:
        self.definitions = _definitions(definition)
        participants: dict[str, str] = {}
        for d in self.definitions:
            for p in d.participants.values():
                participants.setdefault(p.name, p.display)
        aliases = _aliases(list(participants.values()), {ORCHESTRATOR})
        self.lifelines = [Lifeline(ORCHESTRATOR, "Orchestrator")]
        self.alias: dict[str, str] = {}
        for (name, display), alias in zip(participants.items(), aliases, strict=True):
            self.lifelines.append(Lifeline(alias, display, name))
            self.alias[name] = alias
        self.events_alias = _aliases(["Events"], {ORCHESTRATOR, *self.alias.values()})[0]
        self.uses_events = False
        # who sends a reply or event, and what a command is called
        self.sender: dict[str, str] = {}
        self.command_label: dict[str, str] = {}
        self.command_target: dict[str, str] = {}
        self.failure_replies: set[str] = set()
        self.undo_replies: set[str] = set()
        self.undo_commands: set[str] = set()
        self.notifications: set[str] = set()  # what `emit` publishes
        for d in self.definitions:
            for p in d.participants.values():
                for reply in p.replies:
                    self.sender.setdefault(reply, self.alias[p.name])
            for node in d.nodes.values():
                if isinstance(node, m.EmitNode):
                    self.notifications.add(node.message.name)
                    self.command_target.setdefault(node.message.name, self.alias.get(node.message.participant, ORCHESTRATOR))
                if not isinstance(node, m.StepNode):
                    continue
                if node.command is not None:
                    target = self.alias.get(node.command.participant, ORCHESTRATOR)
                    for reply in (*node.replies, *node.failure_replies):
                        self.sender.setdefault(reply, target)
                    self.failure_replies.update(node.failure_replies)
                    self.command_label.setdefault(node.command.name, words(node.name))
                    self.command_target.setdefault(node.command.name, target)
                if node.compensation is not None:
                    undo = node.compensation.command
                    target = self.alias.get(undo.participant, ORCHESTRATOR)
                    for reply in node.compensation.replies:
                        self.sender.setdefault(reply, target)
                    self.undo_replies.update(node.compensation.replies)
                    self.undo_commands.add(undo.name)
                    self.command_label.setdefault(undo.name, undo_label(undo.name))
                    self.command_target.setdefault(undo.name, target)

    def of(self, participant: str) -> str:
        return self.alias.get(participant, ORCHESTRATOR)

    def sender_of(self, message: str) -> str:
        if message in self.sender:
            return self.sender[message]
        self.uses_events = True
        return self.events_alias

    def lifelines_used(self) -> tuple[Lifeline, ...]:
        extra = [Lifeline(self.events_alias, "Events")] if self.uses_events else []
        return (*self.lifelines, *extra)


def _ok_messages(cast: _Cast, node: m.StepNode, reply: str | None) -> list[SequenceItem]:
    """A step that succeeds: its command and reply (alternatives joined by ` | `), its event, or its timer."""
    if node.is_timer:
        return [Note((ORCHESTRATOR,), f"{words(node.name)}: {wait_text(timer_text(node))}", "timer")]
    if node.command is None:
        event = reply or (node.replies[0] if node.replies else node.name)
        return [Message(cast.sender_of(event), ORCHESTRATOR, words(event), "event")]
    target = cast.of(node.command.participant)
    items: list[SequenceItem] = [Message(ORCHESTRATOR, target, words(node.name), "command")]
    if reply is not None:
        items.append(Message(target, ORCHESTRATOR, " or ".join(words(r) for r in reply.split(" | ")), "reply"))
    return items


def _task_overdue_messages(cast: _Cast, node: m.StepNode, task: m.TaskSpec) -> list[SequenceItem]:
    """A human task nobody does: its assignment, each escalation its due passing takes, the end."""
    target = cast.of(task.round(1).command.participant)
    over = (ORCHESTRATOR, target)
    first = task.round(1)
    items: list[SequenceItem] = [Message(ORCHESTRATOR, target, f"{words(node.name)} (to {first.assignee})", "command")]
    due = node.timeout.text if node.timeout else None
    for escalation in task.rounds[1:]:
        what = f"reassign to {escalation.assignee}" if escalation.escalation == "reassign" else str(escalation.escalation)
        items.append(Note(over, f"due {due} passed: {what}", "timeout"))
        items.append(Message(ORCHESTRATOR, target, f"{words(node.name)} ({what})", "command"))
        due = duration_text(escalation.due_seconds) if escalation.due_seconds is not None else None
    items.append(Note(over, f"due {due} passed: not done", "timeout"))
    return items


def _timeout_messages(cast: _Cast, node: m.StepNode) -> list[SequenceItem]:
    """A step that gets no answer: its command, each retry, and the notes that explain them."""
    if node.task is not None:
        return _task_overdue_messages(cast, node, node.task)
    timeout = node.timeout
    target = cast.of(node.command.participant) if node.command else ORCHESTRATOR
    over: tuple[str, ...] = (ORCHESTRATOR, target) if node.command else (ORCHESTRATOR,)
    wait = f"timeout {timeout.text}" if timeout else "timeout"
    items: list[SequenceItem] = []
    if node.command is not None:
        items.append(Message(ORCHESTRATOR, target, words(node.name), "command"))
    retries = timeout.retries if timeout and node.command is not None else 0
    for attempt in range(1, retries + 1):
        assert timeout is not None and node.command is not None
        backoff = timeout.backoff_before(attempt + 1)
        pause = f" in {duration_text(backoff)}" if backoff > 0 else ""
        items.append(Note(over, f"{wait}: no reply, retry {attempt} of {retries}{pause}", "timeout"))
        items.append(Message(ORCHESTRATOR, target, f"{words(node.name)} (retry {attempt})", "command"))
    items.append(Note(over, f"{wait}: no reply", "timeout"))
    return items


def _undo_messages(cast: _Cast, step: m.StepNode) -> list[SequenceItem]:
    compensation = step.compensation
    assert compensation is not None
    command = compensation.command
    target = cast.of(command.participant)
    items: list[SequenceItem] = [Message(ORCHESTRATOR, target, undo_label(command.name), "undo")]
    if compensation.replies:
        items.append(Message(target, ORCHESTRATOR, words(compensation.replies[0]), "undo_reply"))
    return items


def _notify(cast: _Cast, participant: str, event: str) -> Message:
    """An `emit`: an asynchronous arrow to the participant, which nothing answers."""
    return Message(ORCHESTRATOR, cast.of(participant), f"emit {words(event)}", "notify")


def _race_arm(cast: _Cast, arm: m.RaceArmSpec) -> list[SequenceItem]:
    if arm.messages:
        return [Message(cast.sender_of(arm.messages[0]), ORCHESTRATOR, " or ".join(words(n) for n in arm.messages), "event")]
    return [Note((ORCHESTRATOR,), f"the timer fires first ({arm.label})", "timer")]


def _step_of(cast: _Cast, process: str, name: str) -> m.StepNode:
    definition = next(d for d in cast.definitions if d.name == process)
    return definition.step(name)


# ---------------------------------------------------------------- the whole definition


def _overview(cast: _Cast, root: m.ProcessDefinition) -> list[SequenceItem]:
    """Every arm of every gateway, every branch, each loop once: the success picture."""
    items: list[SequenceItem] = []
    structure: dict[str, tuple[dict[str, str | None], dict[str, str]]] = {}  # process name -> its block exits and loop tails
    # A task is an item to emit, or a region to walk: (definition, first node, node that ends it).
    tasks: list[SequenceItem | tuple[m.ProcessDefinition, str, str | None]] = [(root, root.start, None)]
    handler = root.outcomes(root.start).get("deadline")
    if handler is not None:  # the deadline handler, after the rest: an `opt` block
        passes = f"the deadline {duration_text(root.deadline_seconds or 0.0)} passes"
        tasks = [BlockEnd(), (root, handler, None), BlockStart("opt", passes), *tasks]
    while tasks:
        task = tasks.pop()
        if not isinstance(task, tuple):
            items.append(task)
            continue
        definition, current, stop = task
        if definition.name not in structure:
            structure[definition.name] = (block_exits(definition), loop_tails(definition))
        exits, tails = structure[definition.name]
        while current != stop:
            node = definition.nodes[current]
            outcomes = definition.outcomes(current)
            match node:
                case m.StartNode() | m.JoinNode() | m.GatherNode():
                    current = outcomes["next"]
                case m.SetNode():  # the orchestrator's own data: a note on its lifeline
                    items.append(Note((ORCHESTRATOR,), f"set {node.name} = {node.value.text}", "note"))
                    current = outcomes["next"]
                case m.EmitNode():
                    items.append(_notify(cast, node.message.participant, node.message.command))
                    current = outcomes["next"]
                case m.UntilNode():
                    current = outcomes["exit"]
                case m.StepNode():
                    success = _ok_messages(cast, node, " | ".join(node.replies) if node.replies else None)
                    if _recovery_paths(definition, node):
                        _open_recoveries(cast, definition, node, success, stop, tasks)
                        break
                    items.extend(success)
                    current = outcomes["next"]
                case m.XorNode() | m.RaceNode():
                    _open_alternatives(cast, definition, node, exits[node.id], stop, tasks)
                    break
                case m.ForkNode():
                    join = definition.graph.nodes[current]["join"]
                    tasks.append((definition, join, stop))
                    if node.first:
                        tasks.append(Note((ORCHESTRATOR,), f"the first of {node.name} to finish wins: the others are cancelled"
                                          " and what they did is undone, most recent first", "status"))
                    tasks.append(BlockEnd())
                    branches = node.branch_names
                    for index in range(len(branches) - 1, -1, -1):
                        tasks.append((definition, outcomes[f"branch:{branches[index]}"], join))
                        tasks.append(BlockSection(branches[index]) if index else BlockStart("par", f"first of {node.name}: {branches[0]}" if node.first else branches[0]))
                    break
                case m.LoopNode():
                    tail = definition.nodes[tails[node.id]]
                    assert isinstance(tail, m.UntilNode)
                    tasks.append((definition, definition.follow(tail.id, "exit"), stop))
                    tasks.append(BlockEnd())
                    tasks.append((definition, outcomes["body"], tail.id))
                    tasks.append(BlockStart("loop", _loop_label(node, tail)))
                    break
                case m.EachNode():  # a `loop` block: the body, once per item
                    tasks.append((definition, definition.follow(node.gather, "next"), stop))
                    tasks.append(BlockEnd())
                    tasks.append((definition, outcomes["body"], node.gather))
                    mode = (" in parallel" + (f", at most {node.at_most} at once" if node.at_most else "")) if node.parallel else ""
                    tasks.append(BlockStart("loop", f"{node.name} in {node.items.text}{mode}"))
                    break
                case m.CallNode():
                    callee = definition.called.get(node.process)
                    if callee is None:
                        current = outcomes["next"]
                        continue
                    tasks.append((definition, outcomes["next"], stop))
                    tasks.append(BlockEnd())
                    tasks.append((callee, callee.start, None))
                    tasks.append(BlockStart("call", f"call {callee.name}"))
                    break
                case m.EndNode():
                    if node.timed_out:
                        items.append(Note((ORCHESTRATOR,), "the instance ends timed_out, nothing undone", "status"))
                    elif node.outcome is not None:
                        items.append(Note((ORCHESTRATOR,), f"the process completes here as {node.outcome}", "status"))
                    elif node.id != "end":
                        items.append(Note((ORCHESTRATOR,), "the process completes here", "status"))
                    break
                case m.FailNode():
                    items.append(Note((ORCHESTRATOR,), f"fails: {node.reason}", "fail"))
                    break
    return items


def _recovery_paths(definition: m.ProcessDefinition, node: m.StepNode) -> list[m.Way]:
    """A step's failure and timeout ways out that lead to a recovery path, not a fail end."""
    return [
        way for way in definition.ways_out(node.id)
        if way.kind in ("failure", "timeout") and not isinstance(definition.nodes[way.target], m.FailNode)
    ]


def _open_recoveries(
    cast: _Cast,
    definition: m.ProcessDefinition,
    node: m.StepNode,
    success: list[SequenceItem],
    stop: str | None,
    tasks: list[SequenceItem | tuple[m.ProcessDefinition, str, str | None]],
) -> None:
    """Queue an `alt` block for a step with recovery paths: its success, then one section per
    recovery path (the failure reply or the timeout, then the path), then what follows the step."""
    after = definition.follow(node.id, "next")
    tasks.append((definition, after, stop))
    tasks.append(BlockEnd())
    for way in reversed(_recovery_paths(definition, node)):
        tasks.append((definition, way.target, after))
        if way.kind == "timeout":
            first = _timeout_messages(cast, node)
        else:
            first = [Message(ORCHESTRATOR, cast.of(node.command.participant), words(node.name), "command"),
                     Message(cast.of(node.command.participant), ORCHESTRATOR, words(way.label), "failure")] if node.command else [
                     Message(cast.sender_of(way.label), ORCHESTRATOR, words(way.label), "event")]
        tasks.extend(reversed(first))
        tasks.append(BlockSection(f"on {way.label}"))
    tasks.extend(reversed(success))
    tasks.append(BlockStart("alt", " or ".join(node.replies) or node.name))


def _open_alternatives(
    cast: _Cast,
    definition: m.ProcessDefinition,
    node: m.XorNode | m.RaceNode,
    exit_id: str | None,
    stop: str | None,
    tasks: list[SequenceItem | tuple[m.ProcessDefinition, str, str | None]],
) -> None:
    """Queue an `alt` (or `opt`) block with one section per arm of a gateway or race, then what follows it."""
    if exit_id is not None:
        tasks.append((definition, exit_id, stop))
    tasks.append(BlockEnd())
    kind = "alt"
    outcomes = definition.outcomes(node.id)
    if isinstance(node, m.XorNode):
        labels = [label for _, label in arm_names(node)]
        keys = [f"arm:{index}" for index in range(len(node.arms))] + ["default"]
        arms: list[tuple[str, str, list[SequenceItem]]] = [
            (label, outcomes[key], []) for label, key in zip(labels, keys, strict=True)
        ]
        if not node.has_else and outcomes["default"] == exit_id:
            arms.pop()  # nothing happens otherwise: an `opt` block, or an `alt` without `else`
            kind = "opt" if len(arms) == 1 else "alt"
    else:
        arms = [
            (words(label), outcomes[f"arm:{index}"], _race_arm(cast, arm))
            for index, ((_, label), arm) in enumerate(zip(race_names(node), node.arms, strict=True))
        ]
    for index in range(len(arms) - 1, -1, -1):
        label, target, first_items = arms[index]
        tasks.append((definition, target, exit_id))
        tasks.extend(reversed(first_items))
        tasks.append(BlockSection(label) if index else BlockStart(kind, label))


def _loop_label(node: m.LoopNode, tail: m.UntilNode) -> str:
    bound = f", at most {node.max} times" if node.max is not None else ""
    return f"repeat {words(node.name)} until {tail.until.text}{bound}"


# ---------------------------------------------------------------- one path


def _path_items(cast: _Cast, path: ProcessPath) -> list[SequenceItem]:
    items: list[SequenceItem] = []
    compensating = False
    for event in path.events:
        if event.kind == "open":
            kind = event.name if event.name in ("alt", "par", "loop") else "call"
            label = f"call {event.detail}" if kind == "call" else event.detail
            if event.result == "race":
                label = words(label)
            if kind == "loop":
                label = "repeat " + words(label)
            items.append(BlockStart(kind, label))
        elif event.kind == "section":
            items.append(BlockSection(event.detail))
        elif event.kind == "close":
            items.append(BlockEnd())
        elif event.kind == "step":
            step = _step_of(cast, event.process, event.name)
            if event.result == "timeout":
                items.extend(_timeout_messages(cast, step))
            elif event.result == "failure":
                assert step.command is not None
                target = cast.of(step.command.participant)
                items.append(Message(ORCHESTRATOR, target, words(step.name), "command"))
                items.append(Message(target, ORCHESTRATOR, words(event.detail), "failure"))
            else:
                items.extend(_ok_messages(cast, step, event.detail if step.replies else None))
        elif event.kind == "race":
            if event.result == "message":
                names = event.detail.split(" | ")
                items.append(Message(cast.sender_of(names[0]), ORCHESTRATOR, " or ".join(words(n) for n in names), "event"))
            else:
                items.append(Note((ORCHESTRATOR,), f"the timer fires first ({event.detail})", "timer"))
        elif event.kind == "emit":
            items.append(_notify(cast, event.name, event.detail))
        elif event.kind == "fail":
            items.append(Note((ORCHESTRATOR,), f"failed: {event.detail}", "fail"))
        elif event.kind == "undo":
            if not compensating:
                items.append(BlockStart("compensation", "undo the completed steps, most recent first"))
                compensating = True
            items.extend(_undo_messages(cast, _step_of(cast, event.process, event.name)))
    if compensating:
        items.append(BlockEnd())
    return _without_empty_blocks(items)


def _without_empty_blocks(items: list[SequenceItem]) -> list[SequenceItem]:
    """Drop a block that opens and closes at once (a path that skips an `if` has nothing to show)."""
    out: list[SequenceItem] = []
    for item in items:
        if isinstance(item, BlockEnd) and out and isinstance(out[-1], BlockStart):
            out.pop()
            continue
        out.append(item)
    return out


# ---------------------------------------------------------------- an instance


def _instance_items(cast: _Cast, state: Mapping[str, Any]) -> list[SequenceItem]:
    items: list[SequenceItem] = []
    compensating = False
    for entry in state.get("history") or []:
        message = entry.get("message") or None
        if message:
            kind_of = str(entry.get("event", "reply"))
            name = str(message.get("type", "?"))
            sender = cast.sender_of(name)
            if name in cast.failure_replies:
                kind = "failure"
            elif name in cast.undo_replies:
                kind = "undo_reply"
            elif sender == cast.events_alias and kind_of == "event":
                kind = "event"
            else:
                kind = "reply"
            late = " (late)" if "late" in kind_of else ""
            items.append(Message(sender, ORCHESTRATOR, words(name) + late, kind))
        changes = entry.get("changes") or {}  # (how schema version 1 wrote what changed)
        if entry.get("event") == "timer" and entry.get("note"):
            text = str(entry["note"]).replace("`", "")
            items.append(Note((ORCHESTRATOR,), f"{_clock(entry.get('at'))}{text}", "timeout"))
        failure = entry.get("failure") or changes.get("failure")
        if failure:
            items.append(Note((ORCHESTRATOR,), f"failed: {failure}", "fail"))
        for sent in entry.get("sent") or []:
            command, _, attempt_text = str(sent).partition("#")
            attempt = int(attempt_text) if attempt_text.isdigit() else 1
            target = cast.command_target.get(command, ORCHESTRATOR)
            label = cast.command_label.get(command, words(command.replace(".", " ")))
            is_undo = command in cast.undo_commands
            if command in cast.notifications:
                items.append(Message(ORCHESTRATOR, target, f"emit {words(command.split('.', 1)[-1])}", "notify"))
                continue
            if is_undo and not compensating:
                items.append(BlockStart("compensation", "undo the completed steps, most recent first"))
                compensating = True
            retry = f" (retry {attempt - 1})" if attempt > 1 else ""
            items.append(Message(ORCHESTRATOR, target, label + retry, "undo" if is_undo else "command"))
        status = entry.get("status") or (changes.get("status") or [None])[-1]
        if compensating and isinstance(status, str) and status != "compensating":
            items.append(BlockEnd())
            compensating = False
    if compensating:
        items.append(BlockEnd())
    status_line = f"{state.get('workflowId', '?')}: {state.get('status', '?')}"
    for wait in state.get("waits") or []:
        until = wait.get("timeoutAt")
        expects = " or ".join(words(str(e)) for e in wait.get("expects") or [])
        status_line += f", waits for {expects or wait.get('step')}" + (f" until {until}" if until else "")
    items.append(Note((ORCHESTRATOR,), status_line, "status"))
    return items


def _clock(at: object) -> str:
    text = str(at or "")
    return f"{text[11:19]} " if len(text) >= 19 else ""


def sequence_diagram(
    definition: m.ProcessDefinition,
    *,
    path: ProcessPath | None = None,
    instance: Mapping[str, Any] | None = None,
) -> SequenceDiagram:
    """The sequence view of a definition, of one of its paths, or of an instance's history."""
    cast = _Cast(definition)
    title = diagram_title(definition)
    if instance is not None:
        items = _instance_items(cast, instance)
        title += f": instance {instance.get('workflowId', '?')}"
    elif path is not None:
        items = _path_items(cast, path)
        title += f": path {path.name}"
    else:
        items = _overview(cast, definition)
    return SequenceDiagram(definition.name, title, cast.lifelines_used(), tuple(items))
