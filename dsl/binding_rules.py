"""E114: a name bound with `as` (or `steps.<name>`) read where some path to it has not bound
it. The proof is `procflow.dsl.binding_proofs`; this module finds the reads and words the
finding (which binding, which line, a parallel branch running beside the read)."""

from __future__ import annotations

from collections.abc import Iterable

from procflow.dsl import expression_reads as er
from procflow.dsl import expressions as ex
from procflow.dsl import model as m
from procflow.dsl.binding_proofs import BindingProofs
from procflow.dsl.diagnostics import Diagnostic
from procflow.dsl.flow_proofs import FlowProofs
from procflow.dsl.rule_facts import Facts, name_span


def unbound_reads(facts: Facts) -> list[Diagnostic]:
    """E114: a bound name (or `steps.<name>`) read where some path to it has not bound it."""
    definition = facts.definition
    steps = {node.name: node for node in definition.steps}
    reads: list[tuple[er.ExprUse, str, ex.Expr]] = []
    for use, whole, _ in facts.scans:
        for node in whole.names:
            if node.name in facts.bound_names:
                reads.append((use, node.name, node))
        for read in whole.reads:
            if read.names[0] == "steps" and len(read.names) > 1 and read.names[1] in steps:
                reads.append((use, er.STEP_PREFIX + read.names[1], read.parts[1]))
    if not reads:
        return []
    at: dict[str, list[str]] = {}
    for use, key, _ in reads:
        if use.node is not None:
            at.setdefault(key, []).append(use.node)
    proofs = BindingProofs(facts.flow, at)
    sites = _binding_sites(definition)
    found = []
    for use, key, expr in reads:
        if use.node is None:
            always = sometimes = False
        else:
            always, sometimes = proofs.holds(use.node, key, use.after)
        is_step = key.startswith(er.STEP_PREFIX)
        if always or (is_step and sometimes):  # `steps.x` is null until x runs: testing that is fine
            continue
        name = key.removeprefix(er.STEP_PREFIX)
        shown = f"steps.{name}" if is_step else name
        line = steps[name].span.line if is_step else _first_line(facts, name, sites)
        span = name_span(expr, name) if is_step else expr.span
        sibling = _sibling_branch(facts.flow, use.node, [s for s, _ in sites.get(key, [])])
        later = line > expr.span.line
        if sibling is not None and not sometimes:
            message = f"`{shown}` is bound in parallel branch `{sibling}`, which may not have finished here"
            hint = "read it after the parallel block, where every branch has finished"
        elif is_step:
            message = (
                f"`{shown}` is read where step `{name}` may not have run (line {line})"
                if sometimes
                else f"`{shown}` is read before step `{name}` can have run (line {line})"
            )
            hint = "read it only after the step, on every path"
        elif sometimes:
            message = f"`{shown}` may not be bound here: only some paths to here bind it (line {line})"
            hint = "bind it on every path that leads here, or read it only where it is bound"
        else:
            message = (
                f"`{shown}` is read before it is bound (line {line})"
                if later
                else f"`{shown}` is not bound on any path to here (bound on line {line})"
            )
            hint = "read it where the binding has happened, or bind it earlier"
            if all(how == "failure" for _, how in sites.get(key, [])):
                hint = "a name bound by `on ... as` is bound only on a failure, which ends the process"
        found.append(facts.diagnostic("E114", message, span, hint))
    return found


def _binding_sites(definition: m.ProcessDefinition) -> dict[str, list[tuple[str, str]]]:
    """key -> (node id, how it binds) for every node that binds it, in document order."""
    sites: dict[str, list[tuple[str, str]]] = {}
    for node in definition.in_order:
        node_id = node.id
        if isinstance(node, m.StepNode):
            sites.setdefault(er.STEP_PREFIX + node.name, []).append((node_id, "step"))
            if node.bind:
                sites.setdefault(node.bind, []).append((node_id, "await"))
            for bound in node.failure_binds.values():
                sites.setdefault(bound, []).append((node_id, "failure"))
        else:
            for bound in er.model_bindings(node):
                sites.setdefault(bound, []).append((node_id, node.kind))
    return sites


def _first_line(facts: Facts, name: str, sites: dict[str, list[tuple[str, str]]]) -> int:
    spans = [span for _, span in facts.bound_names.get(name, []) if span is not None]
    if spans:
        return spans[0].line
    return facts.definition.nodes[sites[name][0][0]].span.line


def _sibling_branch(flow: FlowProofs, use: str | None, binders: Iterable[str]) -> str | None:
    """The name of a parallel branch running beside `use` that holds one of `binders`."""
    if use is None:
        return None
    enclosing = {branch.fork: branch.first for branch in flow.enclosing(use)}
    for binder in binders:
        for branch in flow.enclosing(binder):
            if branch.fork in enclosing and enclosing[branch.fork] != branch.first:
                return branch.name
    return None
