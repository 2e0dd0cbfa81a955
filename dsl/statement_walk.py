"""The syntax tree in document order: every statement with the parallel branches around it,
and every block. Iterative, so a process of any depth or length is walked without recursion."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from procflow.dsl import syntax as sx


def child_blocks(stmt: sx.Statement) -> list[tuple[sx.Statement, ...]]:
    """The blocks directly inside a statement, in document order."""
    blocks_of = _CHILD_BLOCKS.get(type(stmt))
    return blocks_of(stmt) if blocks_of is not None else []


def _if_blocks(stmt: sx.If) -> list[tuple[sx.Statement, ...]]:
    found = [body for _, body in stmt.arms]
    if stmt.otherwise is not None:
        found.append(stmt.otherwise)
    return found


def _switch_blocks(stmt: sx.Switch) -> list[tuple[sx.Statement, ...]]:
    found = [case.body for case in stmt.cases]
    if stmt.default is not None:
        found.append(stmt.default)
    return found


def _step_blocks(stmt: sx.Step) -> list[tuple[sx.Statement, ...]]:
    found = [(on.span, on.handler) for on in stmt.on_replies if on.handler is not None]
    if stmt.timeout_handler is not None and stmt.timeout_span is not None:
        found.append((stmt.timeout_span, stmt.timeout_handler))
    return [body for _, body in sorted(found, key=lambda item: (item[0].line, item[0].column))]


_CHILD_BLOCKS: dict[type, Callable[[Any], list[tuple[sx.Statement, ...]]]] = {
    sx.If: _if_blocks,
    sx.Switch: _switch_blocks,
    sx.Parallel: lambda stmt: [branch.body for branch in stmt.branches],
    sx.Race: lambda stmt: [arm.body for arm in stmt.arms],
    sx.Repeat: lambda stmt: [stmt.body] + ([stmt.bound_reached] if stmt.bound_reached is not None else []),
    sx.Step: _step_blocks,  # its recovery paths
    sx.ForEach: lambda stmt: [stmt.body],
}
"""Per kind of statement that holds blocks, its blocks (one lookup, no isinstance chain)."""


def walk_statements(body: Sequence[sx.Statement]) -> Iterator[tuple[sx.Statement, tuple[sx.Branch, ...]]]:
    """Every statement in document order, with the parallel branches that enclose it."""
    stack: list[tuple[sx.Statement, tuple[sx.Branch, ...]]] = [(s, ()) for s in reversed(body)]
    while stack:
        stmt, branches = stack.pop()
        yield stmt, branches
        if isinstance(stmt, sx.Parallel):
            for branch in reversed(stmt.branches):
                stack.extend((s, (*branches, branch)) for s in reversed(branch.body))
            continue
        for block in reversed(child_blocks(stmt)):
            stack.extend((s, branches) for s in reversed(block))


def blocks(body: Sequence[sx.Statement]) -> Iterator[Sequence[sx.Statement]]:
    """The process body and every block nested in it."""
    yield body
    for stmt, _ in walk_statements(body):
        yield from child_blocks(stmt)
