"""Extract the flow view (nodes, edges, clusters) from a definition, with an optional overlay.

The overlay marks what an instance did (its state record, as `procflow run --json` prints
it under `state`) or what one path of `procflow paths` does: completed, current (waiting),
failed and compensated nodes, and a legend that says it in words.

Why one module of about 590 lines: the nodes, the edges and the overlay are read from the
same walk of the graph, and the overlay names the nodes the walk made; folding and
collapsing a large flow live apart (`arrange.py`, `collapse.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from procflow.dsl import model as m
from procflow.dsl.paths import (
    ProcessPath,
    arm_names,
    duration_text,
    forward_successors,
    race_names,
    timer_text,
)
from procflow.visualize.collapse import collapse
from procflow.visualize.ir import (
    FlowCluster,
    FlowDiagram,
    FlowEdge,
    FlowNode,
    Legend,
    wait_text,
    words,
)
from procflow.visualize.lanes import attach_to_steps, collapse_in_lanes

SIGNS = {
    "xor": "×",
    "fork": "+",
    "join": "+",
    "first": "✱",
    "race": "⬠",
    "loop": "↻",
    "each": "|||",  # BPMN's multi-instance marker: three bars, upright when the items run in parallel
    "each_sequential": "≡",  # ... lying when they run one after another
    "until": "×",
    "timer": "◷",
    "event": "✉",
    "error": "⚡",
    "task": "♟",  # a human task (BPMN's user task marker is a person: this is the silhouette fonts carry)
    "throw": "✉",
}
"""The symbol drawn in each gateway and event (BPMN's markers, in characters fonts carry)."""


def each_sign(node: m.EachNode) -> str:
    """BPMN's multi-instance marker of a for-each: `|||` in parallel, `≡` one after another."""
    return SIGNS["each"] if node.parallel else SIGNS["each_sequential"]


def each_label(node: m.EachNode) -> str:
    """`for each line in input.lines ||| (at most 10 at once, 1 failure tolerated) → reservations`."""
    terms = [f"at most {node.at_most} at once"] if node.at_most is not None and node.parallel else []
    if node.tolerate:
        terms.append(f"{node.tolerate} {'failure' if node.tolerate == 1 else 'failures'} tolerated")
    label = f"{node.name} in {node.items.text} {each_sign(node)}" + (f" ({', '.join(terms)})" if terms else "")
    return label + (f" → {node.collect}" if node.collect else "")


def diagram_title(definition: m.ProcessDefinition) -> str:
    """`Order fulfillment (order-fulfillment v1)`, or the bare name and version."""
    if definition.title:
        return f"{definition.title} ({definition.name} v{definition.version})"
    return f"{definition.name} v{definition.version}"


def _timeout_label(node: m.StepNode) -> str:
    timeout = node.timeout
    if timeout is None:
        return "timeout"
    if node.task is not None:
        return _escalation_label(node.task)
    if timeout.retries:
        tries = "retry" if timeout.retries == 1 else "retries"
        return f"timeout {timeout.text}, {timeout.retries} {tries}"
    return f"timeout {timeout.text}"


def _escalation_label(task: m.TaskSpec) -> str:
    """A task's way when its last due passed: `overdue after remind 1d, reassign 1d`."""
    steps = []
    for r in task.rounds[1:]:
        step = f"reassign to {r.assignee}" if r.escalation == "reassign" else str(r.escalation)
        steps.append(f"{step} {duration_text(r.due_seconds)}" if r.due_seconds is not None else step)
    return "overdue" + (f" after {', '.join(steps)}" if steps else "")


def _step_node(definition: m.ProcessDefinition, node: m.StepNode) -> FlowNode:
    if node.is_timer:
        return FlowNode(node.id, "timer", words(node.name), (wait_text(timer_text(node)),), sign=SIGNS["timer"])
    if node.command is None:
        awaited = " or ".join(node.replies) or "an event"
        return FlowNode(node.id, "event", words(node.name), (f"await {awaited}",), sign=SIGNS["event"])
    if node.task is not None:
        return _task_node(node, node.task)
    participant = definition.participants.get(node.command.participant)
    display = participant.display if participant else node.command.participant
    return FlowNode(node.id, "step", words(node.name), (display, node.command.name))


def _task_node(node: m.StepNode, task: m.TaskSpec) -> FlowNode:
    """A human task: BPMN's user task, a step box with a person marker (`sign`), saying who
    does it and when it is due (the escalations are drawn on its timeout way)."""
    first = task.round(1)
    lines = [f"by {first.assignee}" if first.assignee else "by nobody"]
    if first.due_seconds is not None and node.timeout is not None:
        lines.append(f"due {node.timeout.text}")
    return FlowNode(node.id, "step", words(node.name), tuple(lines), sign=SIGNS["task"])


def _retried(node: m.StepNode, kind: str, label: str) -> str:
    """A failure reply's label, with its retries when it is retried (`bank_busy, 2 retries`)."""
    policy = node.reply_retries.get(label) if kind == "failure" else None
    return f"{label}, {policy.text}" if policy is not None else label


def _deadline_boundary(
    definition: m.ProcessDefinition, outgoing: list[tuple[str, str, str]], nodes: list[FlowNode], edges: list[FlowEdge],
) -> list[tuple[str, str, str]]:
    """The deadline handler hangs from the start on a timer event, `deadline 7d`, drawn as a
    timeout. Returns the start's other ways."""
    kept = []
    for target, kind, label in outgoing:
        if kind != "deadline":
            kept.append((target, kind, label))
            continue
        seconds = definition.deadline_seconds or 0.0
        catch_id = "start.deadline"
        nodes.append(FlowNode(catch_id, "catch", "deadline", sign=SIGNS["timer"]))
        edges.append(FlowEdge("start", catch_id, "timeout", f"deadline {duration_text(seconds)}"))
        edges.append(FlowEdge(catch_id, target, "next"))
    return kept


def _recovery_boundaries(
    definition: m.ProcessDefinition, node: m.StepNode, outgoing: list[tuple[str, str, str]],
    nodes: list[FlowNode], edges: list[FlowEdge],
) -> list[tuple[str, str, str]]:
    """A failure or timeout that leads to a recovery path (not a fail end) is drawn as BPMN
    draws an error or timer boundary event: the step's arrow to a small catching event, and
    from it to the recovery path. Returns the ways still drawn straight from the step."""
    kept = []
    for target, kind, label in outgoing:
        if kind not in ("failure", "timeout") or isinstance(definition.nodes[target], m.FailNode):
            kept.append((target, kind, label))
            continue
        catch_id = f"{node.id}.catch.{label.split(',')[0] if kind == 'failure' else 'timeout'}"
        nodes.append(FlowNode(catch_id, "catch", label, sign=SIGNS["error" if kind == "failure" else "timer"]))
        edges.append(FlowEdge(node.id, catch_id, kind, label))
        edges.append(FlowEdge(catch_id, target, "next"))
    return kept


def _nodes_and_edges(definition: m.ProcessDefinition, boundary_events: bool = True) -> tuple[list[FlowNode], list[FlowEdge]]:
    nodes: list[FlowNode] = []
    edges: list[FlowEdge] = []
    graph = definition.graph
    for node_id in definition.order:
        node = definition.nodes[node_id]
        outgoing = [(way.target, way.kind, way.label) for way in _ways_as_written(definition, node)]
        match node:
            case m.StartNode():
                nodes.append(FlowNode(node_id, "start", "start"))
                if boundary_events:
                    outgoing = _deadline_boundary(definition, outgoing, nodes, edges)
            case m.EndNode() if node.timed_out:  # where the deadline handler ends, when it can
                if graph.in_degree(node_id):
                    nodes.append(FlowNode(node_id, "end", "ends timed out"))
            case m.EndNode():
                nodes.append(FlowNode(node_id, "end", words(node.outcome) if node.outcome is not None else "end"))
            case m.FailNode():
                # The default reason repeats the step's name, which the diagram shows beside it.
                default = node.step is not None and node.reason == f"{node.step} timed out"
                nodes.append(FlowNode(node_id, "fail", "timed out" if default else node.reason))
            case m.StepNode():
                nodes.append(_step_node(definition, node))
                labels = {"next": ", ".join(node.replies) if node.command else "", "timeout": _timeout_label(node)}
                outgoing = [(t, kind, labels.get(kind, label)) for t, kind, label in outgoing]
                if boundary_events:
                    outgoing = [(t, kind, _retried(node, kind, label)) for t, kind, label in outgoing]
                    outgoing = _recovery_boundaries(definition, node, outgoing, nodes, edges)
                if node.compensation is not None:
                    undo = node.compensation.command
                    participant = definition.participants.get(undo.participant)
                    display = participant.display if participant else undo.participant
                    undo_id = f"{node_id}.undo"
                    even_on = node.compensation.even_on
                    anyway = (f"even on {', '.join(even_on)}",) if even_on else ()
                    told = ("with the failure's data",) if node.compensation.failure_data is not None else ()
                    refused = node.compensation.refused
                    unless = (f"unless {', '.join(refused)}",) if refused else ()
                    nodes.append(FlowNode(undo_id, "undo", f"undo: {undo.name}", (display, *anyway, *told, *unless)))
                    edges.append(FlowEdge(node_id, undo_id, "compensation"))
            case m.XorNode():
                nodes.append(FlowNode(node_id, "xor", "", sign=SIGNS["xor"]))
                labels_by_arm = [label for _, label in arm_names(node)]
                outgoing = [(t, kind, label) for (t, kind, _), label in zip(outgoing, labels_by_arm, strict=True)]
            case m.ForkNode():
                policy = ("undo in parallel",) if node.undo_in_parallel else ()  # drawn beside the gateway, as a race's name
                nodes.append(FlowNode(node_id, "fork", "", policy, sign=SIGNS["fork"]))
                outgoing = [(t, kind, "") for t, kind, _ in outgoing]
            case m.JoinNode() if node.first:
                # BPMN's complex gateway: the first branch to arrive goes on, the others are cancelled
                nodes.append(FlowNode(node_id, "join", "", (f"first of {node.name}",), sign=SIGNS["first"]))
                outgoing = [(t, kind, "losers undone") for t, kind, _ in outgoing]
            case m.JoinNode():
                nodes.append(FlowNode(node_id, "join", "", sign=SIGNS["join"]))
            case m.RaceNode():
                nodes.append(FlowNode(node_id, "race", "", (node.name,), sign=SIGNS["race"]))
                for index, ((target, kind, _), (_, label)) in enumerate(zip(outgoing, race_names(node), strict=True)):
                    catch_id = f"{node_id}.arm{index + 1}"
                    nodes.append(FlowNode(catch_id, "catch", label, sign=SIGNS["event" if kind == "message" else "timer"]))
                    edges.append(FlowEdge(node_id, catch_id, kind, label))
                    edges.append(FlowEdge(catch_id, target, "next"))
                outgoing = []
            case m.LoopNode():
                nodes.append(FlowNode(node_id, "loop", "", sign=SIGNS["loop"]))
            case m.UntilNode():
                nodes.append(FlowNode(node_id, "until", "", sign=SIGNS["until"]))
                # Drawn back to the loop's head (a merge), over the top, as BPMN draws a loop.
                head = graph.nodes[node_id]["loop"]
                outgoing = [(head if kind == "back" else t, kind, label) for t, kind, label in outgoing]
                head_node = definition.nodes[head]
                rounds = head_node.max if isinstance(head_node, m.LoopNode) else None
                outgoing = [(t, kind, f"after {rounds} rounds" if kind == "bound" else label) for t, kind, label in outgoing]
            case m.CallNode():
                nodes.append(FlowNode(node_id, "call", words(node.name), (f"call {node.process}",)))
            case m.EachNode():
                nodes.append(FlowNode(node_id, "each", node.name, sign=each_sign(node)))
            case m.GatherNode():
                head = definition.nodes[node.each]
                nodes.append(FlowNode(node_id, "gather", node.name, sign=each_sign(head) if isinstance(head, m.EachNode) else ""))
            case m.SetNode():
                nodes.append(FlowNode(node_id, "set", f"set {node.name}", (f"= {node.value.text}",)))
            case m.EmitNode():
                participant = definition.participants.get(node.message.participant)
                display = participant.display if participant else node.message.participant
                nodes.append(FlowNode(node_id, "throw", f"emit {node.message.command}", (f"to {display}",), sign=SIGNS["throw"]))
        for target, kind, label in outgoing:
            edges.append(FlowEdge(node_id, target, kind, label))
    return nodes, edges


def _ways_as_written(definition: m.ProcessDefinition, node: m.AnyNode) -> list[m.Way]:
    """A node's ways out (the graph's edges) in the order the text gives them: an xor's arms
    then its default, a race's arms, a fork's branches, a step's success, failures, timeout."""
    ways = definition.ways_out(node.id)
    match node:
        case m.XorNode():
            order = [f"arm:{index}" for index in range(len(node.arms))] + ["default"]
        case m.RaceNode():
            order = [f"arm:{index}" for index in range(len(node.arms))]
        case m.ForkNode():
            order = [f"branch:{name}" for name in node.branch_names]
        case m.StepNode():
            order = ["next", *(f"failure:{reply}" for reply in node.failure_replies), "timeout"]
        case m.UntilNode():
            order = ["exit", "back", "bound"]
        case _:
            return list(ways)
    rank = {key: index for index, key in enumerate(order)}
    return sorted(ways, key=lambda way: rank[way.key])


# ---------------------------------------------------------------- clusters


def _members(definition: m.ProcessDefinition, first: str, stop: str, include_stop: bool) -> set[str]:
    """Nodes reached from `first` (with their failure ends) before `stop`."""
    seen: set[str] = set()
    work = [first]
    while work:
        node_id = work.pop()
        if node_id in seen:
            continue
        if node_id == stop:
            if include_stop:
                seen.add(node_id)
            continue
        seen.add(node_id)
        work.extend(way.target for way in definition.ways_out(node_id) if way.kind != "back")
        match definition.nodes[node_id]:
            case m.StepNode(compensation=m.CompensationSpec()):
                seen.add(f"{node_id}.undo")
            case m.RaceNode(arms=arms):
                seen.update(f"{node_id}.arm{i + 1}" for i in range(len(arms)))
    return seen


def _structure_clusters(definition: m.ProcessDefinition) -> tuple[list[FlowCluster], dict[str, str]]:
    """Clusters for parallel branches and loop bodies, nested as the text nests them."""
    found: list[tuple[str, str, str, set[str]]] = []  # (id, kind, label, members)
    graph = definition.graph
    for node_id in definition.order:
        node = definition.nodes[node_id]
        match node:
            case m.ForkNode():
                join = graph.nodes[node_id]["join"]
                for index, branch in enumerate(node.branch_names):
                    first = definition.follow(node_id, f"branch:{branch}")
                    members = _members(definition, first, join, include_stop=False)
                    found.append((f"{node_id}.branch{index + 1}", "branch", f"branch {branch}", members))
            case m.EachNode():
                members = _members(definition, node_id, node.gather, include_stop=True)
                found.append((f"{node_id}.body", "each", each_label(node), members))
            case m.LoopNode():
                members = _members(definition, node_id, graph.nodes[node_id]["until"], include_stop=True)
                bound = f", at most {node.max} times" if node.max is not None else ""
                found.append((f"{node_id}.body", "loop", f"repeat {words(node.name)}{bound}", members))
    # Smaller sets nest inside larger ones; a node belongs to the smallest set holding it.
    # A for-each that is all of a branch holds the same nodes: it nests inside the branch.
    def inside(inner: int, outer: int) -> bool:
        a, b = found[inner][3], found[outer][3]
        return a < b or (a == b and found[inner][1] == "each" and found[outer][1] != "each")

    by_size = sorted(range(len(found)), key=lambda i: (len(found[i][3]), found[i][1] != "each", i))
    owner: dict[str, str] = {}
    for index in by_size:
        cluster_id, _, _, members = found[index]
        for member in sorted(members):
            owner.setdefault(member, cluster_id)
    clusters = []
    for position, (cluster_id, kind, label, _) in enumerate(found):
        parents = [c for c in by_size if inside(position, c)]
        parent = found[parents[0]][0] if parents else None
        clusters.append(FlowCluster(cluster_id, kind, label, parent))
    return clusters, owner


def _lane_clusters(
    definition: m.ProcessDefinition, nodes: list[FlowNode], edges: list[FlowEdge]
) -> tuple[list[FlowCluster], dict[str, str]]:
    """Swimlanes as BPMN draws them: one lane per participant, in the order the process first
    commands them.

    A step, its failure ends and its undo box (in the lane of the participant the undo
    commands) belong to their participant. A shape of the orchestrator's own (a gateway, an
    event, a timer, a join, the end) stands in the lane of the step it follows, and the start
    in the lane of the first step, so edges stay short. Only a process without participants
    gets an `Orchestrator` lane.
    """
    owner: dict[str, str] = {}
    for node in nodes:
        base = node.id.removesuffix(".undo")
        source = definition.nodes.get(base)
        if isinstance(source, m.FailNode) and source.step is not None:
            source = definition.nodes.get(source.step)
        if isinstance(source, m.StepNode) and source.command is not None:
            command = source.compensation.command if node.kind == "undo" and source.compensation else source.command
            owner[node.id] = f"lane.{command.participant}"
        elif isinstance(source, m.EmitNode):  # a notification stands in the lane of whom it tells
            owner[node.id] = f"lane.{source.message.participant}"
    incoming: dict[str, list[str]] = {}
    outgoing: dict[str, list[str]] = {}
    for edge in edges:
        if edge.kind not in ("back", "compensation"):
            incoming.setdefault(edge.target, []).append(edge.source)
            outgoing.setdefault(edge.source, []).append(edge.target)
    for _ in range(len(nodes)):  # each pass settles at least one more shape along the edges
        unsettled = [n.id for n in nodes if n.id not in owner]
        for node_id in unsettled:
            before = [owner[s] for s in incoming.get(node_id, []) if s in owner]
            after = [owner[t] for t in outgoing.get(node_id, []) if t in owner]
            if before or (after and not incoming.get(node_id)):
                owner[node_id] = (before or after)[0]
        if not unsettled:
            break
    for node in nodes:
        owner.setdefault(node.id, "lane")
    first_use: list[str] = []
    for node in nodes:
        if node.kind != "undo" and owner[node.id] not in first_use:
            first_use.append(owner[node.id])
    first_use += [lane for lane in dict.fromkeys(owner.values()) if lane not in first_use]
    names = {f"lane.{p.name}": p.display for p in definition.participants.values()}
    lanes = [FlowCluster(lane, "lane", names.get(lane, "Orchestrator")) for lane in first_use]
    return lanes, owner


# ---------------------------------------------------------------- overlays


@dataclass(slots=True)
class Overlay:
    """What to mark on the flow: node states, notes on nodes, and the legend."""

    states: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    legend: Legend | None = None


def _step_ids(definition: m.ProcessDefinition) -> dict[str, str]:
    return {n.name: n.id for n in definition.nodes.values() if isinstance(n, m.StepNode)}


def _fail_ends(definition: m.ProcessDefinition, step: str | None, reason: str) -> list[str]:
    return [
        n.id
        for n in definition.nodes.values()
        if isinstance(n, m.FailNode) and n.reason == reason and (step is None or n.step in (None, step))
    ]


def instance_overlay(definition: m.ProcessDefinition, state: Mapping[str, Any]) -> Overlay:
    """Mark an instance's completed, current, failed and compensated steps."""
    overlay = Overlay()
    steps = _step_ids(definition)
    frames: Mapping[str, Any] = state.get("frames") or {}
    root = {key for key, frame in frames.items() if not frame.get("parent")} or {"main"}

    def in_root(record: Mapping[str, Any]) -> bool:
        return str(record.get("frame", "main")) in root

    for record in state.get("completed") or []:
        if in_root(record) and record.get("step") in steps:
            overlay.states[steps[record["step"]]] = "completed"
    lines: list[str] = []
    for wait in state.get("waits") or []:
        until = wait.get("timeoutAt")
        expects = " or ".join(wait.get("expects") or [])
        step = str(wait.get("step", ""))
        if not in_root(wait):
            frame = frames.get(wait.get("frame"), {})
            while frame.get("parent") and frame["parent"] not in root:
                frame = frames.get(frame["parent"], {})
            target = frame.get("call")
        elif step.startswith("undo:") and step[5:] in steps:
            target = f"{steps[step[5:]]}.undo"
        else:
            target = wait.get("node")
        if target is None:
            continue
        overlay.states[str(target)] = "current"
        note = f"waits until {until}" if until else "waits"
        if int(wait.get("attempt") or 1) > 1:
            note += f" (attempt {wait['attempt']})"
        overlay.notes[str(target)] = note
        what = f"for {expects}" if expects else ""
        lines.append(" ".join(part for part in (f"{step} waits", what, f"until {until}" if until else "") if part))
    failure = state.get("failure") or None
    if failure:
        step = failure.get("step")
        if step in steps:
            overlay.states[steps[step]] = "failed"
        for fail_id in _fail_ends(definition, step, str(failure.get("reason"))):
            overlay.states[fail_id] = "failed"
        lines.append(f"failed: {failure.get('reason')}" + (f" (at {step})" if step else ""))
    compensation = state.get("compensation") or None
    if compensation:
        undone = [u for u in compensation.get("undone") or [] if in_root(u)]
        for undo in undone:
            if undo.get("step") in steps:
                step_id = steps[undo["step"]]
                overlay.states[step_id] = "compensated"
                overlay.states[f"{step_id}.undo"] = "compensated"
        if undone:
            lines.append("undone: " + ", ".join(str(u.get("commandName")) for u in undone))
        stuck = compensation.get("failed")
        if stuck and stuck.get("step") in steps:
            overlay.states[f"{steps[stuck['step']]}.undo"] = "failed"
            lines.append(f"could not undo: {stuck.get('commandName')} (an operator must act)")
    done = state.get("completedSteps") or []
    lines.insert(0, "completed: " + (", ".join(done) if done else "nothing yet"))
    heading = f"instance {state.get('workflowId', '?')}: {state.get('status', '?')}"
    overlay.legend = Legend(heading, tuple(lines))
    return overlay


def path_overlay(definition: m.ProcessDefinition, path: ProcessPath) -> Overlay:
    """Mark the steps one path of `procflow paths` runs, fails at and undoes."""
    overlay = Overlay()
    steps = _step_ids(definition)
    races = {n.name: n for n in definition.nodes.values() if isinstance(n, m.RaceNode)}
    for event in path.events:
        if event.process != definition.name:
            continue
        if event.kind == "step" and event.name in steps:
            failed = event.result in ("failure", "timeout")
            overlay.states[steps[event.name]] = "failed" if failed else "completed"
        elif event.kind == "race" and event.name in races:
            race = races[event.name]
            for index, arm in enumerate(race.arms):
                if arm.label == event.detail:
                    overlay.states[f"{race.id}.arm{index + 1}"] = "completed"
        elif event.kind == "fail":
            for fail_id in _fail_ends(definition, event.name or None, event.detail):
                overlay.states[fail_id] = "failed"
        elif event.kind == "undo" and event.name in steps:
            overlay.states[steps[event.name]] = "compensated"
            overlay.states[f"{steps[event.name]}.undo"] = "compensated"
    lines = [path.outcome, "compensation: " + (", ".join(path.compensation) or "none")]
    overlay.legend = Legend(f"path: {path.name}", tuple(lines))
    return overlay


def _taken_edges(nodes: list[FlowNode], edges: list[FlowEdge]) -> list[FlowEdge]:
    """Edges between marked nodes, passing through the gateways that lead from one to the next."""
    marked = {n.id for n in nodes if n.state is not None} | {n.id for n in nodes if n.kind == "start"}
    if len(marked) <= 1:
        return edges
    structural = {n.id for n in nodes if n.kind in ("xor", "fork", "join", "race", "loop", "until", "each", "gather", "catch", "set", "throw")}
    incoming: dict[str, set[str]] = {}
    outgoing: dict[str, set[str]] = {}
    for edge in edges:
        if edge.kind in ("back", "compensation"):
            continue
        incoming.setdefault(edge.target, set()).add(edge.source)
        outgoing.setdefault(edge.source, set()).add(edge.target)
    changed = True
    while changed:
        changed = False
        for node_id in sorted(structural - marked):
            if incoming.get(node_id, set()) & marked and outgoing.get(node_id, set()) & marked:
                marked.add(node_id)
                changed = True
    return [
        replace(e, taken=True) if e.source in marked and e.target in marked and e.kind != "back" else e for e in edges
    ]


def _spine(definition: m.ProcessDefinition) -> list[str]:
    """The main line, in order: from the start, always the first way out (success, first arm, first branch)."""
    spine: list[str] = []
    seen: set[str] = set()
    current: str | None = definition.start
    while current is not None and current not in seen:
        seen.add(current)
        spine.append(current)
        node = definition.nodes[current]
        ways = forward_successors(definition, current)
        if isinstance(node, m.RaceNode) and node.arms:
            spine.append(f"{current}.arm1")
        current = ways[0] if ways else None
    return spine


def _share_failure_ends(nodes: list[FlowNode], edges: list[FlowEdge]) -> tuple[list[FlowNode], list[FlowEdge]]:
    """Failure ends with the same reason in the same frame become one end that every such path reaches.

    A step's own `timed out` end is not shared: joining every timeout of a process into one
    end would draw long edges across the picture, and the ◷ arrow says what happened.
    """
    first: dict[tuple[str, str | None], FlowNode] = {}
    merged: dict[str, str] = {}
    for node in nodes:
        if node.kind != "fail" or node.title == "timed out":
            continue
        key = (node.title, node.cluster)
        if key in first:
            merged[node.id] = first[key].id
            if node.state is not None:
                first[key] = replace(first[key], state=node.state)
        else:
            first[key] = node
    if not merged:
        return nodes, edges
    kept = [first[(n.title, n.cluster)] if n.kind == "fail" and (n.title, n.cluster) in first else n
            for n in nodes if n.id not in merged]
    return kept, [replace(e, target=merged.get(e.target, e.target)) for e in edges]


def flow_diagram(
    definition: m.ProcessDefinition,
    *,
    swimlanes: bool = False,
    overlay: Overlay | None = None,
    expand: bool = False,
    share_ends: bool = True,
    boundary_events: bool = True,
) -> FlowDiagram:
    """The flow view of a definition, with clusters (or swimlanes) and an optional overlay.

    A flow of more than COLLAPSE_ABOVE steps draws its outermost parallel blocks and loops
    collapsed (`procflow.visualize.collapse`) unless `expand` is true; failure ends with the
    same reason are one end unless `share_ends` is false. Without `boundary_events`, a
    recovery path and the deadline handler leave their step (the start) by a plain failure,
    timeout or `deadline` edge. The BPMN export asks for all three off: it needs every node
    the model has, and draws its own events.
    """
    nodes, edges = _nodes_and_edges(definition, boundary_events)
    if swimlanes:
        clusters, owner = _lane_clusters(definition, nodes, edges)
    else:
        clusters, owner = _structure_clusters(definition)
    line = _spine(definition)
    spine = set(line)
    links = set(zip(line, line[1:], strict=False))
    edges = [replace(e, spine=True) if (e.source, e.target) in links else e for e in edges]
    marked = []
    for node in nodes:
        state = overlay.states.get(node.id) if overlay else None
        note = overlay.notes.get(node.id) if overlay else None
        marked.append(replace(node, cluster=owner.get(node.id), state=state, note=note, spine=node.id in spine))
    if overlay is not None:
        edges = _taken_edges(marked, edges)
    if share_ends:
        marked, edges = _share_failure_ends(marked, edges)
    if not expand and not swimlanes:
        marked, edges, clusters = collapse(definition, marked, edges, clusters)
    if swimlanes:
        if not expand:
            marked, edges = collapse_in_lanes(definition, marked, edges, _structure_clusters(definition))
            clusters, owner = _lane_clusters(definition, marked, edges)
            marked = [replace(n, cluster=owner[n.id]) for n in marked]
        marked, edges = attach_to_steps(marked, edges, clusters)
    return FlowDiagram(
        name=definition.name,
        title=diagram_title(definition),
        nodes=tuple(marked),
        edges=tuple(edges),
        clusters=tuple(clusters),
        legend=overlay.legend if overlay else None,
    )

