"""Rules about undoing completed work when a process fails.

W201 a step that commands something, has no `compensate`, and a failure can still follow it
(found on the graph: `FlowProofs.failure_after`, or a failure in a parallel branch running
beside it); W204 a compensation that awaits no reply, so the undo cannot be confirmed.
"""

from __future__ import annotations

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
