"""Rules about where a process can go, each answered by a proof on its graph
(`procflow.dsl.flow_proofs`) and worded against the statements the author wrote.

E116 a statement no path reaches, E119 a parallel join that can never fire, W206 `end` in a
parallel branch, E117 a wait with no way out, E124 a loop without a bound (E138: one
that a deadline cannot end, for a round can go without waiting; W214: its `else` never runs),
E180 a `first of` with one branch, E181 a branch of a `first of` that can never finish.
"""

from __future__ import annotations

from procflow.dsl import syntax as sx
from procflow.dsl.diagnostics import Diagnostic, Span
from procflow.dsl.rule_facts import Facts
from procflow.dsl.statement_walk import blocks


def reachability(facts: Facts) -> list[Diagnostic]:
    """E116 a statement no path reaches; E119 a parallel join that can never fire;
    W206 `end` inside a parallel branch (it ends the whole instance).

    A statement is unreachable when the one before it cannot finish: no path on the flow
    view leads from that statement's first node to this one's. Only the first of a block is
    reported. A path from a block's first statement to its last passes every statement
    between, so one search answers for a block in which every statement can finish."""
    if facts.process is None:
        return []
    flow = facts.flow
    found = []
    for block in [*blocks(facts.process.body), *blocks(facts.process.deadline_handler or ())]:
        if len(block) < 2 or flow.goes_on(flow.first_node(block[0].span), flow.first_node(block[-1].span)):
            continue
        for index, stmt in enumerate(block[:-1]):
            if flow.goes_on(flow.first_node(stmt.span), flow.first_node(block[index + 1].span)):
                continue
            if not isinstance(stmt, sx.Parallel):  # a join that never fires is E119's finding
                what, span = _describe(block[index + 1])
                found.append(facts.diagnostic("E116", f"{what} is unreachable: {_blocker(stmt)}", span,
                                              "remove it, or move it before what stops the process"))
            break
    for stmt, branches in facts.statements:
        if isinstance(stmt, sx.Parallel) and stmt.first:
            found.extend(_first_of(facts, stmt))
        elif isinstance(stmt, sx.Parallel):
            label = f"parallel block `{stmt.name.text}`" if stmt.name else "this parallel block"
            fork = flow.first_node(stmt.span)
            join = flow.join_of[fork]
            for branch in stmt.branches:
                first = flow.first_node(branch.body[0].span) if branch.body else join
                if not flow.arrives[(fork, first)]:
                    found.append(facts.diagnostic("E119", f"{label} can never join: branch `{branch.name.text}`"
                                                  " always fails or ends", branch.name.span,
                                                  "a join waits for every branch; let this one finish on some path"))
        elif isinstance(stmt, sx.End) and branches:
            found.append(facts.diagnostic("W206", f"`end` in branch `{branches[-1].name.text}` ends the whole instance,"
                                          " not just the branch", stmt.span, "let the branch finish instead"))
    return found


def _first_of(facts: Facts, stmt: sx.Parallel) -> list[Diagnostic]:
    """E180 a `first of` with one branch (nothing competes with it); E181 a branch of one that
    can never finish (it always fails or ends, so it can never win)."""
    assert stmt.name is not None
    label = f"`first of {stmt.name.text}`"
    if len(stmt.branches) < 2:
        return [facts.diagnostic("E180", f"{label} has one branch: nothing competes with it", stmt.name.span,
                                 "add the branches that compete with it, or write its steps without the block")]
    flow = facts.flow
    fork = flow.first_node(stmt.span)
    join = flow.join_of[fork]
    found = []
    for branch in stmt.branches:
        first = flow.first_node(branch.body[0].span) if branch.body else join
        if not flow.arrives[(fork, first)]:
            found.append(facts.diagnostic("E181", f"branch `{branch.name.text}` of {label} can never finish: it always"
                                          " fails or ends, so it can never win", branch.name.span,
                                          "let the branch finish on some path, or take it out of the block"))
    return found


def _describe(stmt: sx.Statement) -> tuple[str, Span]:
    if isinstance(stmt, sx.Step):
        return f"step `{stmt.name.text}`", stmt.name.span
    if isinstance(stmt, sx.Call):
        return f"the call of `{stmt.process.text}`", stmt.span
    if isinstance(stmt, sx.Parallel | sx.Race | sx.Repeat) and stmt.name is not None:
        kind = {sx.Parallel: "parallel block", sx.Race: "race", sx.Repeat: "loop"}[type(stmt)]
        kind = "first of" if isinstance(stmt, sx.Parallel) and stmt.first else kind
        return f"{kind} `{stmt.name.text}`", stmt.name.span
    keyword = {
        sx.If: "if", sx.Switch: "switch", sx.Parallel: "parallel", sx.Repeat: "repeat", sx.ForEach: "for each", sx.Fail: "fail",
        sx.End: "end", sx.Set: "set", sx.Emit: "emit",
    }
    return f"this `{keyword.get(type(stmt), 'statement')}`", stmt.span


def _blocker(stmt: sx.Statement) -> str:
    line = stmt.span.line
    if isinstance(stmt, sx.Fail | sx.End):
        return f"the `{'fail' if isinstance(stmt, sx.Fail) else 'end'}` on line {line} stops every path before it"
    if isinstance(stmt, sx.Race):
        return f"every arm of race `{stmt.name.text}` (line {line}) stops the process"
    if isinstance(stmt, sx.Repeat):
        return f"the loop on line {line} never reaches its `until`"
    if isinstance(stmt, sx.ForEach):
        return f"no item of the for-each on line {line} reaches its end"
    word = "if" if isinstance(stmt, sx.If) else "switch"
    return f"every arm of the `{word}` on line {line} stops the process"


def waits_without_way_out(facts: Facts) -> list[Diagnostic]:
    """E117: a wait that nothing ends when the awaited message never comes: a step or a race
    with no way out that time takes (a `within`, a timer arm, another branch of its `first of`
    block that wins by time alone) and no process `deadline` (which does not bound the
    deadline handler's own waits); or
    a compensation awaiting its confirmation without `within` (the deadline does not cover it)."""
    found = []
    deadline = facts.definition.deadline_seconds is not None
    flow = facts.flow
    for stmt, _ in facts.statements:
        if stmt.span in facts.in_deadline_handler:  # the deadline has passed when these run
            deadline = False
        if isinstance(stmt, sx.Step) and stmt.wait is None:
            first = flow.first_node(stmt.span)
            if stmt.task is not None and stmt.await_ is not None and not deadline and not flow.time_can_end(first):
                found.append(facts.diagnostic("E117", f"task `{stmt.name.text}` may wait forever: no `due` and no process `deadline`",
                                              stmt.name.span, f"give it a due time (`task {stmt.name.text} by ... due 2d {{ ... }}`), or a `deadline`"))
            elif stmt.await_ is not None and not deadline and not flow.time_can_end(first) and not flow.cancelled_in_time(first):
                found.append(facts.diagnostic("E117", f"step `{stmt.name.text}` may wait forever: no `within` and no process `deadline`",
                                              stmt.await_.span, "add `within D` (with `retry` or `on timeout`), or a `deadline`"))
            comp = stmt.compensate
            if comp is not None and comp.replies and comp.timeout is None:
                found.append(facts.diagnostic("E117", f"the compensation of `{stmt.name.text}` may wait forever: no `within`",
                                              comp.replies[0].span, "add `within D retry N` after the awaited reply"))
        elif isinstance(stmt, sx.Race) and not deadline and not flow.time_can_end(flow.first_node(stmt.span)) \
                and not flow.cancelled_in_time(flow.first_node(stmt.span)):
            found.append(facts.diagnostic("E117", f"race `{stmt.name.text}` may wait forever: no `on timer` arm and no process `deadline`",
                                          stmt.name.span, "add an arm `on timer D { ... }`, or a `deadline`"))
    return found


def loops_without_bound_handling(facts: Facts) -> list[Diagnostic]:
    """W211: a `repeat ... max N` without `else`: when the bound is reached and `until` never
    held, the process goes on as if it had (a card refused five times would end `completed`)."""
    found = []
    for stmt, _ in facts.statements:
        if isinstance(stmt, sx.Repeat) and stmt.max is not None and stmt.bound_reached is None:
            what = f"loop `{stmt.name.text}`" if stmt.name else "this `repeat`"
            span = stmt.name.span if stmt.name else stmt.span
            found.append(facts.diagnostic(
                "W211", f"{what} goes on as if `until` held when it reaches its bound of {stmt.max} rounds", span,
                "say what happens then: `} until ... else { fail \"why\" }`"))
    return found


def else_without_bound(facts: Facts) -> list[Diagnostic]:
    """W214: `else { ... }` after the `until` of a loop without `max`: no bound is ever
    reached, so it never runs (such a loop ends by its `until` or by the deadline)."""
    found = []
    for stmt, _ in facts.statements:
        if isinstance(stmt, sx.Repeat) and stmt.max is None and stmt.bound_reached is not None:
            what = f"loop `{stmt.name.text}`" if stmt.name else "this `repeat`"
            span = stmt.name.span if stmt.name else stmt.span
            found.append(facts.diagnostic(
                "W214", f"{what} has no `max`: its `else` never runs", span,
                "give it a bound (`repeat max 5 { ... }`), or remove the `else`; the deadline ends an unbounded loop"))
    return found


def unbounded_loops(facts: Facts) -> list[Diagnostic]:
    """E124: a `repeat` without `max` that can come round again: its repetition is a cycle of
    the graph that no bound stops. Allowed when every round waits for a message or for time
    and the process has a `deadline` (which ends it; not in the deadline handler, which runs
    after it); E138 when the process has one but a round can go without waiting."""
    unbounded = facts.flow.unbounded_loops
    if not unbounded:
        return []
    deadline = facts.definition.deadline_seconds is not None
    spinning = facts.flow.spinning_loops
    found = []
    for stmt, _ in facts.statements:
        if not isinstance(stmt, sx.Repeat) or (loop := facts.flow.first_node(stmt.span)) not in unbounded:
            continue
        what = f"loop `{stmt.name.text}`" if stmt.name else "this `repeat`"
        span = stmt.name.span if stmt.name else stmt.span
        if not deadline or stmt.span in facts.in_deadline_handler:
            hint = "bound it: `repeat max 5 { ... } until ...`"
            if loop not in spinning and stmt.span not in facts.in_deadline_handler:
                hint += ", or give the process a `deadline` (every round waits, so the deadline ends it)"
            found.append(facts.diagnostic("E124", f"{what} has no `max`: it may repeat forever", span, hint))
        elif loop in spinning:
            found.append(facts.diagnostic(
                "E138", f"{what} has no `max` and a round can go without waiting: it may spin before the deadline ends it",
                span, "bound it: `repeat max 5 { ... } until ...`, or let every round wait for a reply, an event or a `wait D`"))
    return found
