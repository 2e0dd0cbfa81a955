"""Rules about the undo policy a process states (`undo in parallel` on a parallel block,
`on undo failure continue|stop` in its header).

W212 `undo in parallel` that can never apply (fewer than two of its branches have a step with
an undo, or a block around it already says `undo in parallel`); E137 two branches undone in
parallel whose undos await the same reply (a confirmation could not be told apart); W213 `on
undo failure ...` in a process with no undo that awaits a confirmation.
"""

from __future__ import annotations

from procflow.dsl import syntax as sx
from procflow.dsl.diagnostics import Diagnostic
from procflow.dsl.rule_facts import Facts
from procflow.dsl.statement_walk import walk_statements
from procflow.dsl.undo_policy import undoes_in_parallel


def _undoing_steps(body: tuple[sx.Statement, ...]) -> list[sx.Step]:
    """The steps of a block (and all blocks inside it) that declare a `compensate`."""
    return [stmt for stmt, _ in walk_statements(body) if isinstance(stmt, sx.Step) and stmt.compensate is not None]


def parallel_undo(facts: Facts) -> list[Diagnostic]:
    """W212 a parallel undo that can never apply; E137 branches undone in parallel whose undos
    await the same confirmation."""
    found = []
    for stmt, _ in facts.statements:
        if not isinstance(stmt, sx.Parallel) or not undoes_in_parallel(stmt) or stmt.undo_order is None:
            continue
        label = f"parallel block `{stmt.name.text}`" if stmt.name else "this parallel block"
        span = stmt.undo_order.span
        outer = _enclosing_parallel_undo(facts, stmt)
        if outer is not None:
            found.append(facts.diagnostic(
                "W212", f"{label} is inside `{outer}`, which is undone in parallel already: its branches are undone"
                f" in reverse, in the branch of `{outer}` that holds it", span,
                "remove `undo in parallel` here; only the outermost block's says how its branches are undone"))
            continue
        undoing = [(branch.name.text, _undoing_steps(branch.body)) for branch in stmt.branches]
        with_undo = [name for name, steps in undoing if steps]
        if len(with_undo) < 2:
            which = f"only branch `{with_undo[0]}` has" if with_undo else "no branch has"
            found.append(facts.diagnostic(
                "W212", f"{label} is undone in parallel, but {which} a step with an undo: nothing is undone beside anything",
                span, "remove `undo in parallel`, or give the steps of the other branches a `compensate`"))
            continue
        seen: dict[str, tuple[str, str]] = {}  # awaited reply -> (branch, step) that awaits it first
        for branch, steps in undoing:
            for step in steps:
                assert step.compensate is not None
                for reply in step.compensate.replies + step.compensate.refused:
                    other = seen.get(reply.text)
                    if other is not None and other[0] != branch:
                        found.append(facts.diagnostic(
                            "E137", f"the undos of `{other[1]}` and `{step.name.text}` both await `{reply.text}`: undone in"
                            " parallel, a confirmation could not be told apart", reply.span,
                            "let each undo await a reply of its own (`awaiting hotel_cancelled`), or undo the block in reverse"))
                    seen.setdefault(reply.text, (branch, step.name.text))
    return found


def _enclosing_parallel_undo(facts: Facts, inner: sx.Parallel) -> str | None:
    for stmt, _ in facts.statements:
        if stmt is inner or not isinstance(stmt, sx.Parallel) or not undoes_in_parallel(stmt):
            continue
        if any(s is inner for branch in stmt.branches for s, _ in walk_statements(branch.body)):
            return stmt.name.text if stmt.name else "a parallel block"
    return None


def undo_failure_policy(facts: Facts) -> list[Diagnostic]:
    """W213: `on undo failure ...` where no undo awaits a confirmation, so none can fail."""
    process = facts.process
    if process is None or process.undo_failure is None:
        return []
    if any(step.compensate is not None and step.compensate.replies for step in facts.steps):
        return []
    return [facts.diagnostic(
        "W213", f"`on undo failure {process.undo_failure}` never applies: no undo of this process awaits a confirmation",
        process.header_spans["undo_failure"], "remove it, or let an undo await its reply: `compensate ... awaiting cancelled within D`")]
