"""Rules about undoing completed work when a process fails.

W201 a step that commands something, has no `compensate`, and a failure can still follow it
(found on the graph: `FlowProofs.failure_after`, or a failure in a parallel branch running
beside it); W204 a compensation that awaits no reply, so the undo cannot be confirmed; W210 a
recovery path that ends the instance while completed work with an undo stays done.
"""

from __future__ import annotations

import networkx as nx

from procflow.dsl import model as m
from procflow.dsl.diagnostics import Diagnostic
from procflow.dsl.flow_proofs import FlowProofs
from procflow.dsl.rule_facts import Facts


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
    flow = facts.flow
    witness = flow.failure_after
    names = {s.name.text: s.name.span for s in facts.steps}
    found = []
    for node, command in bare:
        fail_id = witness.get(definition.follow(node.id, "next")) or _failing_sibling(flow, witness, node.id)
        if fail_id is None:
            continue
        fail = definition.nodes[fail_id]
        found.append(facts.diagnostic("W201", f"step `{node.name}` has no `compensate`, yet the process can fail after it"
                                      f" (line {fail.span.line})", names.get(node.name, node.span),
                                      f"add `compensate {command.participant}.<undo> {{ ... }} awaiting ...`,"
                                      " say `nothing to undo \"why\"` when the step changes nothing,"
                                      " or move the step after the steps that can fail"))
    return found


def _failing_sibling(flow: FlowProofs, witness: dict[str, str], node_id: str) -> str | None:
    """A failure in a parallel branch running beside the node (it may fail after the node)."""
    for branch in flow.enclosing(node_id):
        for other in flow.branches(branch.fork):
            if other.first != branch.first and other.first in witness:
                return witness[other.first]
    return None


def compensation_hygiene(facts: Facts) -> list[Diagnostic]:
    """W204: a compensation that awaits no reply cannot be confirmed."""
    return [
        facts.diagnostic("W204", f"the compensation of `{step.name.text}` awaits no reply: the undo cannot be confirmed",
                         step.compensate.span, "add `awaiting reply_name within D retry N`")
        for step in facts.steps
        if step.compensate is not None and not step.compensate.replies
    ]


def recovery_ends_with_work_done(facts: Facts) -> list[Diagnostic]:
    """W210: an `end` in a recovery path (`on r { ... }`, `on timeout { ... }`) completes the
    instance, so no undo runs; the steps with a `compensate` that may have completed before it
    (its ancestors in the graph, but the step that failed) would stay done."""
    definition = facts.definition
    graph = definition.graph
    found = []
    for step in definition.steps:
        for way in definition.ways_out(step.id):
            if way.kind not in ("failure", "timeout") or isinstance(definition.nodes[way.target], m.FailNode):
                continue
            for end in _ends_in_recovery(definition, step, way.target):
                done = [
                    node.name
                    for node_id in sorted(nx.ancestors(graph, end.id), key=definition.position.__getitem__)
                    if node_id != step.id and isinstance(node := definition.nodes[node_id], m.StepNode) and node.compensation
                ]
                if not done:
                    continue
                what = "`end`" if end.outcome is None else f'`end "{end.outcome}"`'
                steps = ", ".join(f"`{name}`" for name in done)
                found.append(facts.diagnostic(
                    "W210", f"{what} in the recovery path of `{step.name}` completes the instance with {steps} still done:"
                    " no undo runs", end.span, "`fail \"why\"` undoes the completed steps; end only where nothing needs undoing"))
    return found


def _ends_in_recovery(definition: m.ProcessDefinition, step: m.StepNode, first: str) -> list[m.EndNode]:
    """The `end`s written inside a step's recovery path that starts at `first`."""
    span = step.span
    found: list[m.EndNode] = []
    seen = {first}
    stack = [first]
    while stack:
        node = definition.nodes[stack.pop()]
        inside = (node.span.line, node.span.column) >= (span.line, span.column) and (node.span.end_line, node.span.end_column) <= (
            span.end_line, span.end_column)
        if not inside:
            continue  # past the recovery path: the process goes on after the step
        if isinstance(node, m.EndNode):
            found.append(node)
        for way in definition.ways_out(node.id):
            if way.kind != "back" and way.target not in seen:
                seen.add(way.target)
                stack.append(way.target)
    return sorted(found, key=lambda end: (end.span.line, end.span.column))
