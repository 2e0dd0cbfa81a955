"""The for-each's own rules: E160 a list that the input contract says is not a list, E161 an
`at most` under one, E162 more tolerated failures than can happen, E163 a name bound inside
a for-each read after it."""

from __future__ import annotations

from typing import Any

import networkx as nx

from procflow.dsl import expressions as ex
from procflow.dsl import model as m
from procflow.dsl import syntax as sx
from procflow.dsl.diagnostics import Diagnostic
from procflow.dsl.expression_reads import schema_at
from procflow.dsl.rule_facts import Facts


def for_each_shape(facts: Facts) -> list[Diagnostic]:
    """E160, E161, E162 for every for-each as written."""
    found: list[Diagnostic] = []
    for stmt, _ in facts.statements:
        if not isinstance(stmt, sx.ForEach):
            continue
        kind = _declared_kind(facts, stmt.items)
        if kind is not None and kind != "array":
            found.append(facts.diagnostic(
                "E160", f"`for each {stmt.item.text} in {ex.to_text(stmt.items)}`: that is {_a(kind)}, not a list",
                stmt.items.span, "a for-each runs over a list: name a field the input contract declares as `type[]`",
            ))
        if stmt.at_most is not None and stmt.at_most < 1 and stmt.at_most_span is not None:
            found.append(facts.diagnostic(
                "E161", f"`at most {stmt.at_most}` runs no item at all", stmt.at_most_span,
                "say how many items may run at once (1 or more), or leave `at most` out to run them all",
            ))
        if stmt.tolerate and stmt.tolerate_span is not None:
            found.extend(_tolerance(facts, stmt))
    return found


def _a(kind: str) -> str:
    return {"object": "an object", "integer": "an integer"}.get(kind, f"a {kind}")


def _declared_kind(facts: Facts, items: ex.Expr) -> str | None:
    """The JSON type of the list expression when it is known: a literal's, or what the input
    contract declares for `input.<path>`; None when it cannot be told."""
    if isinstance(items, ex.ListExpr):
        return "array"
    if isinstance(items, ex.ObjectExpr):
        return "object"
    if isinstance(items, ex.Literal):
        value = items.value
        return "null" if value is None else "boolean" if isinstance(value, bool) else "number" if isinstance(value, int | float) else "string"
    path: list[str] = []
    current: ex.Expr = items
    while isinstance(current, ex.Field):
        path.append(current.name)
        current = current.base
    schema = facts.definition.input_schema
    if not (isinstance(current, ex.Var) and current.name == "input" and path and schema is not None):
        return None
    declared: Any = schema_at(schema, list(reversed(path)))
    kind = declared.get("type") if isinstance(declared, dict) else None
    return kind if isinstance(kind, str) else None


def _tolerance(facts: Facts, stmt: sx.ForEach) -> list[Diagnostic]:
    """E162: a literal list of no more items than the failures tolerated, or a body that has no
    way to fail."""
    assert stmt.tolerate_span is not None
    if isinstance(stmt.items, ex.ListExpr) and len(stmt.items.items) <= stmt.tolerate:
        return [facts.diagnostic(
            "E162", f"`tolerate {stmt.tolerate}` of a list of {len(stmt.items.items)} items: the for-each can never fail",
            stmt.tolerate_span, "tolerate fewer failures than there are items",
        )]
    if _body_can_fail(facts, stmt):
        return []
    return [facts.diagnostic(
        "E162", f"`tolerate {stmt.tolerate}`: no item of `for each {stmt.item.text}` can fail", stmt.tolerate_span,
        "an item fails at a `fail`, a failure reply or a timeout that ends in one; take `tolerate` out",
    )]


def _body_can_fail(facts: Facts, stmt: sx.ForEach) -> bool:
    definition = facts.definition
    each = next((n for n in definition.in_order if isinstance(n, m.EachNode) and n.span == stmt.span), None)
    if each is None:
        return True
    return any(isinstance(definition.nodes[node], m.FailNode | m.CallNode) for node in _inside(definition, each))


def _inside(definition: m.ProcessDefinition, each: m.EachNode) -> set[str]:
    """The nodes of a for-each's block (what runs once per item)."""
    graph = definition.graph
    inside: set[str] = nx.descendants(graph, each.body) | {each.body}
    after: set[str] = nx.descendants(graph, each.gather) | {each.gather}
    return inside - after


def names_bound_per_item(facts: Facts) -> list[Diagnostic]:
    """E163: an expression outside a for-each reads a name only its block binds (the item, or
    an `as` inside): each item has its own, and none is left after the block."""
    definition = facts.definition
    heads = [node for node in definition.in_order if isinstance(node, m.EachNode)]
    if not heads:
        return []
    blocks = {each.id: _inside(definition, each) for each in heads}
    in_some_block = set().union(*blocks.values())
    bound_outside = {
        name for node in definition.in_order if node.id not in in_some_block for name in _binds(node)
    }
    found: list[Diagnostic] = []
    for use, whole, _ in facts.scans:
        for var in whole.names:
            for each in heads:
                scoped = var.name in each.binds or var.name == each.item
                if scoped and var.name not in bound_outside and use.node not in blocks[each.id]:
                    found.append(facts.diagnostic(
                        "E163", f"`{var.name}` is bound inside `{each.name}`, once per item, and is not seen after it",
                        var.span, f"read the items' results through `collect`: `{each.name} ... collect results`",
                    ))
                    break
    return found


def _binds(node: m.AnyNode) -> tuple[str, ...]:
    if isinstance(node, m.StepNode):
        return tuple(name for name in (node.bind, *node.failure_binds.values()) if name)
    if isinstance(node, m.RaceNode):
        return tuple(arm.bind for arm in node.arms if arm.bind)
    if isinstance(node, m.CallNode) and node.bind:
        return (node.bind,)
    if isinstance(node, m.GatherNode) and node.collect:
        return (node.collect,)
    return ()
