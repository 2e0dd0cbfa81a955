"""What the expressions of a process read, and which names its statements bind.

- `scan`: one walk of an expression: the names and plain field paths it reads, its size and
  depth, and how many arithmetic operations it does.
- `node_uses`: the expressions a compiled node evaluates, and what is bound by then.
- `output_uses`: the process's `output { ... }`, at each end that completes an instance.
- `bindings_of` / `model_bindings`: the names bound with `as` or `set`, from the syntax tree or the node.
- `schema_fields` / `schema_at`: the declared fields of the input contract.

Nothing here reads the flow of the process (the graph proofs do) or makes a diagnostic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from procflow.dsl import expressions as ex
from procflow.dsl import model as m
from procflow.dsl import syntax as sx

STEP_PREFIX = "steps."
"""Facts about completed steps are keyed `steps.<name>`; bound names are keyed by the name."""


@dataclass(frozen=True, slots=True)
class PathRead:
    """A plain field path read by an expression (`input.customer.name`), each part's node."""

    names: tuple[str, ...]
    parts: tuple[ex.Expr, ...]  # parts[i] is the Var (i == 0) or Field whose name is names[i]


@dataclass(frozen=True, slots=True)
class Scan:
    """What one expression holds, found in one walk: the names and plain paths it reads, its
    size and depth, and how many arithmetic operations it performs."""

    names: tuple[ex.Var, ...]
    reads: tuple[PathRead, ...]
    size: int
    depth: int
    arithmetic: int


def scan(expr: ex.Expr) -> Scan:
    """Walk an expression once, without recursion."""
    var, field, binary = ex.Var, ex.Field, ex.Binary
    kind = type(expr)
    if kind is ex.Literal:  # the commonest expressions, answered without the walk
        return _LITERAL_SCAN
    if kind is field or kind is var:
        path: list[Any] = []
        head: Any = expr
        while type(head) is field:
            path.append(head)
            head = head.base
        if type(head) is var:  # a plain path, `input.a.b`: one read
            path.append(head)
            path.reverse()
            return Scan((head,), (PathRead(tuple([p.name for p in path]), tuple(path)),), len(path), len(path), 0)
    names: list[ex.Var] = []
    reads: list[PathRead] = []
    size = depth = arithmetic = 0
    stack: list[tuple[ex.Expr, int]] = [(expr, 1)]
    while stack:
        node, level = stack.pop()
        kind = type(node)
        if kind is var or kind is field:
            parts: list[ex.Expr] = []
            current: ex.Expr = node
            while type(current) is field:
                parts.append(current)
                current = current.base
            if type(current) is var:  # a plain path: input.a.b
                parts.append(current)
                parts.reverse()
                names.append(current)
                reads.append(PathRead(tuple(p.name for p in parts), tuple(parts)))  # type: ignore[attr-defined]
                size += len(parts)
                depth = max(depth, level + len(parts) - 1)
                continue
        size += 1
        if level > depth:
            depth = level
        if kind is binary and node.op in ex.ARITHMETIC:  # type: ignore[attr-defined]
            arithmetic += 1
        for child in ex.children(node):
            stack.append((child, level + 1))
    return Scan(tuple(names), tuple(reads), size, depth, arithmetic)


_LITERAL_SCAN = Scan((), (), 1, 1, 0)


@dataclass(frozen=True, slots=True)
class ExprUse:
    """An expression of the process: where it is evaluated and what is bound by then."""

    expr: ex.Expr
    node: str | None  # the node that evaluates it; None for the correlation key
    after: tuple[str, ...]  # facts established at that node before it is evaluated
    mapping: bool  # a data mapping (its values are measured one by one) or a condition
    undo: bool = False  # an undo's mapping, where `failure` may be read



def node_uses(node: m.AnyNode) -> list[ExprUse]:
    """The expressions a node evaluates."""
    found: list[ExprUse] = []
    if isinstance(node, m.StepNode):
        if node.command is not None and node.command.data is not None:
            found.append(ExprUse(node.command.data.expr, node.id, (), True))
        if node.timer_until is not None:
            found.append(ExprUse(node.timer_until.expr, node.id, (), False))
        comp = node.compensation
        if comp is not None and comp.command.data is not None:
            # The undo's data is computed when the step completes: its own reply is bound.
            after = (STEP_PREFIX + node.name, node.bind) if node.bind else (STEP_PREFIX + node.name,)
            found.append(ExprUse(comp.command.data.expr, node.id, after, True, undo=True))
        if comp is not None and comp.failure_data is not None:
            # Its fields that read `failure` are computed when the instance fails, in the same frame.
            after = (STEP_PREFIX + node.name, node.bind) if node.bind else (STEP_PREFIX + node.name,)
            found.append(ExprUse(comp.failure_data.expr, node.id, after, True, undo=True))
    elif isinstance(node, m.XorNode):
        if node.subject is not None:
            found.append(ExprUse(node.subject.expr, node.id, (), False))
        found.extend(ExprUse(arm.condition.expr, node.id, (), False) for arm in node.arms if arm.condition)
    elif isinstance(node, m.RaceNode):
        found.extend(ExprUse(arm.timer_at.expr, node.id, (), False) for arm in node.arms if arm.timer_at)
    elif isinstance(node, m.UntilNode):
        found.append(ExprUse(node.until.expr, node.id, (), False))
    elif isinstance(node, m.CallNode) and node.data is not None:
        found.append(ExprUse(node.data.expr, node.id, (), True))
    elif isinstance(node, m.EachNode):
        found.append(ExprUse(node.items.expr, node.id, (), False))
    elif isinstance(node, m.SetNode):
        found.append(ExprUse(node.value.expr, node.id, (), False))
    elif isinstance(node, m.EmitNode) and node.message.data is not None:
        found.append(ExprUse(node.message.data.expr, node.id, (), True))
    return found


def output_uses(definition: m.ProcessDefinition) -> list[ExprUse]:
    """The process's `output { ... }`, evaluated at each end that completes the instance (not
    the end of a deadline handler, which leaves it `timed_out`)."""
    if definition.output is None:
        return []
    return [
        ExprUse(definition.output.expr, node.id, (), True)
        for node in definition.in_order
        if isinstance(node, m.EndNode) and not node.timed_out
    ]


def bindings_of(stmt: sx.Statement) -> list[tuple[str, sx.Name]]:
    """(how, name) for every `as name` of a statement: how is await, failure, race or call; and
    (`first`) the name of a `first of` block, bound to `{winner: branch}` after it."""
    if isinstance(stmt, sx.Step):
        found = [("await", stmt.await_.bind)] if stmt.await_ and stmt.await_.bind else []
        found.extend(("failure", on.bind) for on in stmt.on_replies if on.bind)
        return found
    if isinstance(stmt, sx.Race):
        return [("race", arm.bind) for arm in stmt.arms if arm.bind]
    if isinstance(stmt, sx.Call) and stmt.bind:
        return [("call", stmt.bind)]
    if isinstance(stmt, sx.ForEach):
        return [("each", stmt.item)] + ([("collect", stmt.collect)] if stmt.collect else [])
    if isinstance(stmt, sx.Set) and stmt.name.text not in ("input", "steps", m.FAILURE_NAME):  # (those are E165)
        return [("set", stmt.name)]
    if isinstance(stmt, sx.Parallel) and stmt.first and stmt.name is not None:
        return [("first", stmt.name)]
    return []


def model_bindings(node: m.AnyNode) -> list[str]:
    """The names a compiled node binds (for definitions built without a syntax tree)."""
    if isinstance(node, m.StepNode):
        return [n for n in (node.bind, *node.failure_binds.values()) if n]
    if isinstance(node, m.RaceNode):
        return [a.bind for a in node.arms if a.bind]
    if isinstance(node, m.CallNode) and node.bind:
        return [node.bind]
    if isinstance(node, m.EachNode):
        return [node.item] + ([node.collect] if node.collect else [])
    if isinstance(node, m.SetNode):
        return [node.name]
    if isinstance(node, m.JoinNode) and node.first:
        return [node.name]
    return []



def schema_fields(schema: Any) -> dict[str, Any] | None:
    """The declared fields of an object schema, or None when its fields are open or unknown."""
    if not isinstance(schema, dict):
        return None
    props = schema.get("properties")
    if not isinstance(props, dict) or "patternProperties" in schema or isinstance(schema.get("additionalProperties"), dict):
        return None
    return props


def schema_at(schema: Any, path: Sequence[str]) -> Any:
    """The JSON Schema of a field path inside a schema, or None when it is not declared."""
    current = schema
    for name in path:
        props = schema_fields(current)
        if props is None or name not in props:
            return None
        current = props[name]
    return current
