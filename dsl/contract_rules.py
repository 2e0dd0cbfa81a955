"""Rules that see data and time through what the process declares.

E150 a field of a bound reply's payload that its reply contract does not declare; E151 the
same for an event's payload contract; W150 a timer (`wait D`, a race's `on timer D`) that ends
after the process's `deadline`; W151 a `within` (with its retries) that ends after it;
E172 a field of a human task's completed form that the form does not declare.

A name bound with `as` holds the payload of the message that completed its step or won its
race arm. When every message that can bind the name has a declared record, a read of a field
none of those records has relies on data no contract promises: when it is missing it is null,
and the failure shows up at run time far from its cause ("cannot compare null > number"). As
for the input contract (E125), it is an error here, where it is written. A message
declared without a record, or a name also bound by a `call`, has open fields: not checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx

from procflow.dsl import expression_reads as er
from procflow.dsl import model as m
from procflow.dsl import syntax as sx
from procflow.dsl import tasks
from procflow.dsl.diagnostics import Diagnostic
from procflow.dsl.paths import duration_text
from procflow.dsl.rule_facts import Facts, name_span, suggestion


@dataclass(frozen=True, slots=True)
class Contract:
    """The declared payload of one message a bound name can hold."""

    message: str
    kind: str  # "reply", "event", or "form" (a human task's; `message` is then the task's name)
    schema: dict[str, Any]


def payload_contract(definition: m.ProcessDefinition, participant: str | None, message: str) -> Contract | None:
    """The contract the engine checks `message` against (see `engine._payload_schema`): the
    commanded participant's reply, else the event, else any participant's reply; None when
    the message is declared without a record (or not at all)."""
    owner = definition.participants.get(participant) if participant else None
    schema = owner.replies.get(message) if owner is not None else None
    if schema is not None and participant == tasks.PARTICIPANT and message.endswith("_completed"):
        return Contract(message.removesuffix("_completed"), "form", schema)  # a human task's form (E172)
    if schema is not None:
        return Contract(message, "reply", schema)
    if message in definition.events:
        schema = definition.events[message]
        return None if schema is None else Contract(message, "event", schema)
    for other in definition.participants.values():
        schema = other.replies.get(message)
        if schema is not None:
            return Contract(message, "reply", schema)
    return None


def bound_contracts(definition: m.ProcessDefinition) -> dict[str, list[Contract] | None]:
    """name -> the contracts of every message that can bind it; None when one of them has no
    declared record (or a `call` binds it), so its fields are open."""
    found: dict[str, list[Contract] | None] = {}

    def add(name: str, participant: str | None, messages: Sequence[str]) -> None:
        for message in messages:
            contract = payload_contract(definition, participant, message)
            known = found.setdefault(name, [])
            if contract is None or known is None:
                found[name] = None
            elif contract not in known:  # the same reply bound to the name twice counts once
                known.append(contract)

    for node in definition.in_order:
        if isinstance(node, m.StepNode):
            if node.bind:
                add(node.bind, node.participant, node.replies)
            for reply, name in node.failure_binds.items():
                add(name, node.participant, [reply])
        elif isinstance(node, m.RaceNode):
            for arm in node.arms:
                if arm.bind:
                    add(arm.bind, None, arm.messages)
        elif isinstance(node, m.CallNode) and node.bind:
            found[node.bind] = None  # a called process's result has no declared contract
    return found


def undeclared_payload_fields(facts: Facts) -> list[Diagnostic]:
    """E150 / E151: an expression reads `name.x` where `name` holds a reply's (an event's)
    payload and no contract of a message that can bind it declares `x`."""
    contracts = {name: c for name, c in bound_contracts(facts.definition).items() if c}
    if not contracts:
        return []
    found: list[Diagnostic] = []
    for _, whole, _ in facts.scans:
        for read in whole.reads:
            known = contracts.get(read.names[0])
            if known is None or len(read.names) < 2:
                continue
            problem = _missing_field(read, known)
            if problem is not None:
                found.append(_finding(facts, read, known, *problem))
    return found


def _missing_field(read: er.PathRead, contracts: list[Contract]) -> tuple[int, list[tuple[Contract, Any]]] | None:
    """None when some contract declares the path read (or leaves it open); else the depth of
    the first part that the contracts getting furthest do not declare, with each of those
    contracts and its schema just above that part."""
    deepest = 0
    parents: list[tuple[Contract, Any]] = []
    for contract in contracts:
        current: Any = contract.schema
        depth = 1
        while depth < len(read.names):
            props = er.schema_fields(current)
            kind = current.get("type") if isinstance(current, dict) else None
            if props is None and (not isinstance(kind, str) or kind == "object"):
                return None  # open fields (`any`, `object`, an open schema): anything may be there
            if props is None or read.names[depth] not in props:
                break
            current = props[read.names[depth]]
            depth += 1
        else:
            return None  # declared all the way
        if depth > deepest:
            deepest, parents = depth, [(contract, current)]
        elif depth == deepest:
            parents.append((contract, current))
    return deepest, parents


def _finding(facts: Facts, read: er.PathRead, known: list[Contract], depth: int,
             parents: list[tuple[Contract, Any]]) -> Diagnostic:
    where = ".".join(read.names[:depth])
    name = read.names[depth]
    code = "E150" if any(c.kind == "reply" for c in known) else "E172" if all(c.kind == "form" for c in known) else "E151"
    span = name_span(read.parts[depth], name)
    fields = list(dict.fromkeys(f for _, p in parents for f in (er.schema_fields(p) or {})))  # as declared
    types = sorted({str(p.get("type")) for _, p in parents if isinstance(p, dict)} - {"object"})
    if not fields and types:
        article = "an" if types[0][0] in "aeiou" else "a"
        whose = _whose([c for c, _ in parents])  # the contracts that declare `where`
        message = f"`{where}` is {article} {' or '.join(types)} in {whose}; it has no field `{name}`"
        return facts.diagnostic(code, message, span, "read a field the contract declares, or declare the one you need")
    message = f"`{where}` has no field `{name}` in {_whose(known)}" + suggestion(name, fields)
    declared = f"declares: {', '.join(fields)}" if fields else "declares no fields"
    contract = "the task's form" if code == "E172" else "the contract"
    hint = f"`{where}` {declared}; read one of them, or declare the field in {contract}"
    return facts.diagnostic(code, message, span, hint)


def _whose(contracts: list[Contract]) -> str:
    """`the contract of reply `x``, `the contracts of events `a`, `b``."""
    if len(contracts) == 1 and contracts[0].kind == "form":
        return f"the form of task `{contracts[0].message}`"
    if len(contracts) == 1:
        return f"the contract of {contracts[0].kind} `{contracts[0].message}`"
    kinds = {c.kind for c in contracts}
    plural = "replies" if kinds == {"reply"} else "events" if kinds == {"event"} else "messages"
    return f"the contracts of {plural} " + ", ".join(f"`{c.message}`" for c in contracts)


def waits_past_deadline(facts: Facts) -> list[Diagnostic]:
    """W150: a timer that ends after the deadline; W151: a step's `within` whose attempts,
    with their retries and backoff, end after the deadline (the deadline fails the instance
    first, so the timer or the timeout never fires). Each is counted from the earliest time
    a run can reach it (`earliest_arrival`), which is the start for most."""
    deadline = facts.definition.deadline_seconds
    if deadline is None or facts.process is None:
        return []
    written = facts.process.deadline
    said = f"the process's `deadline {written.text if written else duration_text(deadline)}`"
    if written is not None:
        said += f" (line {written.span.line})"
    earliest = earliest_arrival(facts.definition)
    ids = {node.name: node.id for node in facts.definition.in_order if isinstance(node, m.StepNode | m.RaceNode)}
    found: list[Diagnostic] = []
    for stmt, _ in facts.statements:
        if not isinstance(stmt, sx.Step | sx.Race) or ids.get(stmt.name.text) not in earliest:
            continue  # a node no run reaches has E116 instead
        reached = earliest[ids[stmt.name.text]]
        if reached >= deadline:
            continue  # reached only after the deadline: the wait that crosses it is reported
        timers: list[sx.Duration] = []
        if isinstance(stmt, sx.Step):
            if stmt.wait is not None and stmt.wait.duration is not None:
                timers.append(stmt.wait.duration)
            timeout = stmt.await_.timeout if stmt.await_ else None
            if stmt.task is not None and timeout is not None:  # a human task: its dues, one after the other
                if reached + tasks.total_due(stmt.task) > deadline:
                    found.append(_late_task(facts, stmt.name.text, stmt.task, timeout, reached, said))
            elif timeout is not None and reached + _total_wait(timeout) > deadline:
                found.append(_late_timeout(facts, timeout, reached, said))
        else:
            timers.extend(arm.after for arm in stmt.arms if arm.after is not None)
        for timer in timers:
            if reached + timer.seconds > deadline:
                what = f"the timer `{timer.text}`"
                if reached:
                    what += f", which starts {duration_text(reached)} after the instance at the earliest,"
                found.append(facts.diagnostic(
                    "W150", f"{what} ends after {said}: it can never fire", timer.span,
                    "the deadline fails the instance first; shorten the waits or lengthen the deadline"))
    return found


def earliest_arrival(definition: m.ProcessDefinition) -> dict[str, float]:
    """node id -> the least time after the start at which a run can reach it (reachable nodes
    only). Timers on the way cannot be cut short (a `wait D`, a race's timer arm, a step's
    timeout after all its attempts); every message may arrive at once. A lower bound: a join
    counts as reached when its first branch arrives, a call as returning at once."""

    def weight(source: str, _: str, edges: dict[str, Any]) -> float:
        return min(_edge_seconds(definition.nodes[source], key) for key in edges)

    lengths: dict[str, float] = nx.single_source_dijkstra_path_length(definition.graph, definition.start, weight=weight)
    return lengths


def _edge_seconds(node: m.AnyNode, key: str) -> float:
    """The least time a run spends at `node` before leaving it by the way out `key`."""
    if isinstance(node, m.StepNode):
        if key == "next" and node.timer_seconds is not None:
            return node.timer_seconds
        if key == "timeout" and node.task is not None:  # a human task: every round's due
            return sum(r.due_seconds or 0.0 for r in node.task.rounds)
        if key == "timeout" and node.timeout is not None:
            spec = node.timeout
            backoff = sum(spec.backoff_before(attempt) for attempt in range(2, spec.retries + 2))
            return spec.seconds * (spec.retries + 1) + backoff
    if isinstance(node, m.RaceNode) and key.startswith("arm:"):
        return node.arms[int(key.removeprefix("arm:"))].timer_seconds or 0.0
    return 0.0


def _total_wait(timeout: sx.Timeout) -> float:
    """Seconds from the first send to the last attempt's timeout: every attempt's `within`
    and the backoff before each resend (as `model.TimeoutSpec.backoff_before` computes it)."""
    retry = timeout.retry
    if retry is None:
        return timeout.duration.seconds
    spec = m.TimeoutSpec(timeout.duration.seconds, timeout.duration.text, retry.count,
                         retry.backoff.seconds if retry.backoff else 0.0, retry.factor)
    backoff = sum(spec.backoff_before(attempt) for attempt in range(2, retry.count + 2))
    return timeout.duration.seconds * (retry.count + 1) + backoff


def _late_task(facts: Facts, name: str, task: sx.Task, timeout: sx.Timeout, reached: float, said: str) -> Diagnostic:
    dues = [d.text for d in (task.due, *(e.due for e in tasks.resending(task))) if d is not None]
    what = f"the dues of task `{name}` ({', then '.join(dues)}) add up to {duration_text(tasks.total_due(task))} and"
    if reached:
        what += f", on a task reached {duration_text(reached)} after the instance starts at the earliest,"
    return facts.diagnostic("W151", f"{what} end after {said}: its last due can never pass", timeout.span,
                            "the deadline fails the instance first; shorten the dues or lengthen the deadline")


def _late_timeout(facts: Facts, timeout: sx.Timeout, reached: float, said: str) -> Diagnostic:
    what = f"`within {timeout.duration.text}`"
    if timeout.retry is not None:
        what += f" with {timeout.retry.count} retries waits up to {duration_text(_total_wait(timeout))} and"
    if reached:
        what += f", on a step reached {duration_text(reached)} after the instance starts at the earliest,"
    last = "the last attempt" if timeout.retry is not None else "the step"
    return facts.diagnostic("W151", f"{what} ends after {said}: {last} can never time out", timeout.span,
                            "the deadline fails the instance first; shorten the waits or lengthen the deadline")
