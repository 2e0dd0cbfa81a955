"""Lints of orchestrator scope and hygiene: what a process should not hold even when it runs.

E106 an expression too large, W202 too many participants, W203 business computation in an
expression, W207 declared but never used, W208 no business key, W209 a called process's
deadline (not enforced).
"""

from __future__ import annotations

from procflow.dsl import expressions as ex
from procflow.dsl import model as m
from procflow.dsl import syntax as sx
from procflow.dsl.diagnostics import Diagnostic
from procflow.dsl.rule_facts import Facts


def expression_limits(facts: Facts) -> list[Diagnostic]:
    """E106: an expression larger or deeper than the evaluator accepts."""
    found = []
    for use, whole, _ in facts.scans:
        count, depth = whole.size, whole.depth
        if count > ex.MAX_NODES:
            found.append(facts.diagnostic("E106", f"this expression has {count} parts; at most {ex.MAX_NODES} are allowed",
                                          use.expr.span, "compute it in a participant"))
        elif depth > ex.MAX_DEPTH:
            found.append(facts.diagnostic("E106", f"this expression is nested {depth} deep; at most {ex.MAX_DEPTH} is allowed",
                                          use.expr.span, "compute it in a participant"))
    return found


def orchestrator_scope(facts: Facts) -> list[Diagnostic]:
    """W202 too many participants; W203 an expression that computes rather than routes."""
    found = []
    most = facts.limits.get("participants", 7)
    if facts.process is not None and len(facts.process.participants) > most:
        extra = facts.process.participants[most]
        found.append(facts.diagnostic("W202", f"the process coordinates {len(facts.process.participants)} participants;"
                                      f" the limit is {most}", extra.name.span,
                                      "split it into called processes, or raise `limit participants N`"))
    computation = facts.limits.get("computation", 2)
    for _, _, parts in facts.scans:
        for part, found_in in parts:
            if found_in.arithmetic > computation:
                found.append(facts.diagnostic("W203", f"this expression does {found_in.arithmetic} arithmetic operations;"
                                              f" the limit is {computation}", part.span,
                                              "business computation belongs in a participant; raise `limit computation N` if not"))
    return found


def unused_declarations(facts: Facts) -> list[Diagnostic]:
    """W207: a participant or an event declared and never used; W208: no `correlate by`."""
    proc = facts.process
    if proc is None:
        return []
    used: set[str] = set()
    awaited: set[str] = set()
    for stmt, _ in facts.statements:
        if isinstance(stmt, sx.Step):
            used.update(c.participant.text for c in (stmt.send, stmt.compensate) if c is not None)
            awaited.update(n.text for n in (stmt.await_.replies if stmt.await_ else ()))
            awaited.update(n.text for on in stmt.on_replies for n in on.replies)
        elif isinstance(stmt, sx.Race):
            awaited.update(n.text for arm in stmt.arms for n in arm.messages)
        elif isinstance(stmt, sx.Emit):
            used.add(stmt.participant.text)
    found = [facts.diagnostic("W207", f"participant `{p.name.text}` is declared but never used", p.name.span)
             for p in proc.participants if p.name.text not in used]
    found.extend(facts.diagnostic("W207", f"event `{e.name.text}` is declared but never awaited", e.name.span)
                 for e in proc.events if e.name.text not in awaited)
    if proc.correlate is None:
        found.append(facts.diagnostic("W208", f"process `{proc.name.text}` has no `correlate by`: commands carry no business key",
                                      proc.name.span, "add `correlate by input.<key>`"))
    return found


def callee_deadlines(facts: Facts) -> list[Diagnostic]:
    """W209: a called process declares a `deadline`, which only a main process enforces."""
    found = []
    for node in facts.definition.in_order:
        if not isinstance(node, m.CallNode):
            continue
        callee = facts.definition.called.get(node.process)
        if callee is None or callee.deadline_seconds is None:
            continue
        found.append(facts.diagnostic(
            "W209",
            f"`{callee.name}` declares a deadline, which is not enforced when it is called; only the main process's deadline is",
            node.span,
            "put the deadline on the calling process, or bound the callee's waits with `within`",
        ))
    return found
