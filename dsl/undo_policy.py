"""The undo policy a process states, as the compiler records it: which steps' undos run side
by side (`undo in parallel` on a parallel block) and in which lane. The engine reads the lanes
(`ProcessDefinition.undo_lanes`) when the instance fails, and the saga table groups a path's
undos by them (`undo_waves`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from procflow.dsl import model as m
from procflow.dsl import syntax as sx
from procflow.dsl.statement_walk import child_blocks


def undoes_in_parallel(stmt: sx.Parallel) -> bool:
    """True for a parallel block that says `undo in parallel`."""
    return stmt.undo_order is not None and stmt.undo_order.text == "parallel"


def undo_lanes(body: Sequence[sx.Statement], fork_id: Callable[[sx.Parallel], str]) -> dict[str, m.UndoLane]:
    """step name -> its lane: the outermost `undo in parallel` block around the step, the
    branch of it that holds the step, and how many loops enclose that block. Walked with a
    stack (no recursion), carrying the lane and the loops around each statement."""
    lanes: dict[str, m.UndoLane] = {}
    stack: list[tuple[sx.Statement, m.UndoLane | None, int]] = [(s, None, 0) for s in reversed(body)]
    while stack:
        stmt, lane, loops = stack.pop()
        if isinstance(stmt, sx.Step) and lane is not None:
            lanes[stmt.name.text] = lane
        if isinstance(stmt, sx.Parallel):
            for branch in reversed(stmt.branches):
                inner = lane
                if inner is None and undoes_in_parallel(stmt):
                    inner = m.UndoLane(fork_id(stmt), branch.name.text, loops)
                stack.extend((s, inner, loops) for s in reversed(branch.body))
            continue
        deeper = loops + 1 if isinstance(stmt, sx.Repeat) else loops
        for block in reversed(child_blocks(stmt)):
            stack.extend((s, lane, deeper) for s in reversed(block))
    return lanes


def undo_waves(definition: m.ProcessDefinition, undone: list[tuple[str, str, str]]) -> tuple[tuple[tuple[str, ...], ...], ...]:
    """(process, step, commandName) undos, most recent first, in the waves the engine sends
    them in (see `ProcessPath.undo_waves`): the undos next to each other whose steps lie in
    one parallel block undone in parallel go out together, one lane per branch."""
    waves: list[dict[str, list[str]]] = []
    last_block: tuple[str, str] | None = None
    for process, step, command in undone:
        lane = definition.definition_of(process).undo_lanes.get(step)
        block = (process, lane.fork) if lane is not None else None
        if block is None or block != last_block:
            waves.append({})
        waves[-1].setdefault(lane.branch if lane is not None else step, []).append(command)
        last_block = block
    return tuple(tuple(tuple(commands) for commands in wave.values()) for wave in waves)
