"""Syntax tree -> `ProcessDefinition`: its graph of nodes and ways out, compiled expressions,
called processes.

Statements are linked back to front (each learns the node it leads to from the statement after
it); as each node is made, its ways out become the graph's edges (see `procflow.dsl.model`).

Compilation stops only where a definition cannot be built (two steps with one name, a call
that cannot be resolved); every other finding is the validator's (`procflow.dsl.validate`).

Why one module of about 600 lines: one pass links the statements back to front, and each
kind of statement is a method of it that reads and writes the same pass state.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import networkx as nx

from procflow.dsl import expressions as ex
from procflow.dsl import model as m
from procflow.dsl import syntax as sx
from procflow.dsl import tasks
from procflow.dsl.diagnostics import Diagnostic, Span
from procflow.dsl.parser import parse, parse_scenarios
from procflow.dsl.source import decode_source
from procflow.dsl.statement_walk import child_blocks, walk_statements
from procflow.dsl.undo_policy import undo_lanes, undoes_in_parallel
from procflow.errors import ExpressionError, FileRefused, SourceError
from procflow.files import confined_loader, read_at_most
from procflow.limits import FILE_BYTES, SOURCE_BYTES
from procflow.strict_json import loads as strict_loads

Loader = Callable[[str], bytes]
"""Reads a file named relative to the process being compiled."""


def _within_limits(expr: ex.Expr) -> bool:
    count, depth = ex.measure(expr)
    return count <= ex.MAX_NODES and depth <= ex.MAX_DEPTH


def _refused(scope: ex.Scope) -> ex.Json:
    raise ExpressionError("this expression is over the size limits (see E106)")


class _CompiledOnFirstUse:
    """An expression's evaluator, compiled to closures the first time it is evaluated.

    Compiling every expression up front was two fifths of compiling a process, and a
    definition that is only validated, drawn or listed never evaluates one. An expression
    over the limits is never compiled (that would recurse too deep); the validator reports
    it as E106, so such a definition never runs."""

    __slots__ = ("expr", "compiled")

    def __init__(self, expr: ex.Expr) -> None:
        self.expr = expr
        self.compiled: ex.Evaluator | None = None

    def __call__(self, scope: ex.Scope) -> ex.Json:
        compiled = self.compiled
        if compiled is None:
            compiled = self.compiled = ex.compile_expr(self.expr) if _within_limits(self.expr) else _refused
        return compiled(scope)


def _evaluator(expr: ex.Expr) -> ex.Evaluator:
    return _CompiledOnFirstUse(expr)


def _text(expr: ex.Expr) -> str:
    return ex.to_text(expr) if _within_limits(expr) else "(expression over the size limits)"


def _condition(expr: ex.Expr) -> m.Condition:
    return m.Condition(expr, _evaluator(expr), _text(expr))


def _mapping(expr: ex.ObjectExpr | None) -> m.Mapping_ | None:
    return m.Mapping_(expr, _evaluator(expr), m.input_fields(expr)) if expr is not None else None


def _timeout(timeout: sx.Timeout | None) -> m.TimeoutSpec | None:
    if timeout is None:
        return None
    retry = timeout.retry
    return m.TimeoutSpec(
        seconds=timeout.duration.seconds,
        text=timeout.duration.text,
        retries=retry.count if retry else 0,
        backoff_seconds=retry.backoff.seconds if retry and retry.backoff else 0.0,
        factor=retry.factor if retry else 1.0,
        span=timeout.span,
    )


class _Compiler:
    def __init__(self, source: sx.SourceFile, loader: Loader | None, stack: tuple[str, ...]) -> None:
        self.source = source
        self.path = source.path
        self.loader = loader
        self.stack = stack
        self.nodes: dict[str, m.AnyNode] = {}
        self.ways: dict[str, list[m.Way]] = {}  # node id -> its ways out, in the order written
        self.partners: dict[str, dict[str, str]] = {}  # node id -> the other end of its block
        self.order: list[str] = []
        self.counters: dict[str, int] = {}
        self.ids: dict[Span, tuple[str, ...]] = {}  # a statement's span -> the ids of its nodes
        self.diagnostics: list[Diagnostic] = []
        self.called: dict[str, m.ProcessDefinition] = {}

    # ---- ids, assigned in document order before linking
    def _new_id(self, kind: str) -> str:
        self.counters[kind] = self.counters.get(kind, 0) + 1
        return f"{kind}_{self.counters[kind]}"

    def _error(self, code: str, message: str, span: Span, hint: str | None = None) -> None:
        self.diagnostics.append(Diagnostic(code, "error", message, span, hint, self.path))

    def _assign_ids(self, statements: Sequence[sx.Statement]) -> None:
        """Give every statement's nodes their ids, in document order (linking runs back to front)."""
        work: list[sx.Statement] = list(reversed(statements))
        step_spans: dict[str, Span] = {}
        while work:
            stmt = work.pop()
            match stmt:
                case sx.Step():
                    name = stmt.name.text
                    if name in step_spans or name in ("start", "end"):
                        first = step_spans.get(name)
                        where = f" (first at line {first.line})" if first else ""
                        self._error("E101", f"the step name `{name}` is used twice{where}", stmt.name.span,
                                    "give every step its own name")
                        name = f"{name}__{stmt.name.span.line}"
                    else:
                        step_spans[name] = stmt.name.span
                    ids: tuple[str, ...] = (name,)
                    for body in reversed(child_blocks(stmt)):  # its recovery paths
                        work.extend(reversed(body))
                case sx.If():
                    ids = (self._new_id("xor"),)
                    bodies = [body for _, body in stmt.arms] + ([stmt.otherwise] if stmt.otherwise is not None else [])
                    for body in reversed(bodies):
                        work.extend(reversed(body))
                case sx.Switch():
                    ids = (self._new_id("xor"),)
                    bodies = [case.body for case in stmt.cases] + ([stmt.default] if stmt.default is not None else [])
                    for body in reversed(bodies):
                        work.extend(reversed(body))
                case sx.Parallel():
                    ids = (self._new_id("fork"), self._new_id("join"))
                    for branch in reversed(stmt.branches):
                        work.extend(reversed(branch.body))
                case sx.Race():
                    ids = (self._new_id("race"),)
                    for arm in reversed(stmt.arms):
                        work.extend(reversed(arm.body))
                case sx.Repeat():
                    ids = (self._new_id("loop"), self._new_id("until"))
                    work.extend(reversed(stmt.bound_reached or ()))
                    work.extend(reversed(stmt.body))
                case sx.Call():
                    ids = (self._new_id("call"),)
                case sx.ForEach():
                    ids = (self._new_id("each"), self._new_id("gather"))
                    work.extend(reversed(stmt.body))
                case sx.Fail():
                    ids = (self._new_id("fail"),)
                case sx.End():
                    ids = (self._new_id("end"),)
                case sx.Set():
                    ids = (self._new_id("set"),)
                case sx.Emit():
                    ids = (self._new_id("emit"),)
            self.ids[stmt.span] = ids

    def _add(self, node: m.AnyNode, *ways: m.Way) -> str:
        """Add a node and its ways out (the graph's edges from it); return its id."""
        self.nodes[node.id] = node
        self.ways[node.id] = list(ways)
        return node.id

    def _pair(self, first: str, first_role: str, second: str, second_role: str) -> None:
        """Note the two ends of a block on each other (a fork and its join, a loop and its until)."""
        self.partners[first] = {second_role: second}
        self.partners[second] = {first_role: first}

    # ---- statements, linked back to front
    def block(self, statements: Sequence[sx.Statement], next_id: str) -> str:
        for stmt in reversed(statements):
            next_id = self.statement(stmt, next_id)
        return next_id

    def statement(self, stmt: sx.Statement, next_id: str) -> str:
        ids = self.ids[stmt.span]
        match stmt:
            case sx.Step():
                return self.step(stmt, ids[0], next_id)
            case sx.If():
                arms = tuple(
                    m.XorArm(_condition(cond), (), self.block(body, next_id), _text(cond)) for cond, body in stmt.arms
                )
                default = self.block(stmt.otherwise, next_id) if stmt.otherwise is not None else next_id
                return self._add_xor(m.XorNode(ids[0], stmt.span, arms, default, stmt.otherwise is not None))
            case sx.Switch():
                arms = tuple(
                    m.XorArm(None, case.values, self.block(case.body, next_id), ", ".join(_value_text(v) for v in case.values))
                    for case in stmt.cases
                )
                default = self.block(stmt.default, next_id) if stmt.default is not None else next_id
                return self._add_xor(
                    m.XorNode(ids[0], stmt.span, arms, default, stmt.default is not None, subject=_condition(stmt.subject))
                )
            case sx.Parallel():
                fork_id, join_id = ids
                name = stmt.name.text if stmt.name else fork_id
                join = m.JoinNode(join_id, stmt.span, name, len(stmt.branches), next_id, stmt.first)
                self._add(join, m.Way(next_id, "next", "", "next"))
                branches = tuple((b.name.text, self.block(b.body, join_id)) for b in stmt.branches)
                self._pair(fork_id, "fork", join_id, "join")
                return self._add(
                    m.ForkNode(fork_id, stmt.span, name, branches, join_id, undoes_in_parallel(stmt), first=stmt.first),
                    *(m.Way(target, "branch", branch, f"branch:{branch}") for branch, target in branches),
                )
            case sx.Race():
                return self.race(stmt, ids[0], next_id)
            case sx.Repeat():
                loop_id, until_id = ids
                name = stmt.name.text if stmt.name else loop_id
                body = self.block(stmt.body, until_id)
                until = _condition(stmt.until)
                bound = self.block(stmt.bound_reached, next_id) if stmt.bound_reached is not None else None
                self._add(
                    m.UntilNode(until_id, stmt.span, name, loop_id, until, body, next_id, bound),
                    m.Way(next_id, "exit", "until " + until.text, "exit"),
                    m.Way(body, "back", "repeat", "back"),
                    *([m.Way(bound, "bound", "bound reached", "bound")] if bound is not None else []),
                )
                self._pair(loop_id, "loop", until_id, "until")
                return self._add(m.LoopNode(loop_id, stmt.span, name, body, stmt.max), m.Way(body, "next", "", "body"))
            case sx.Call():
                process = self.callee(stmt)
                bind = stmt.bind.text if stmt.bind else None
                call = m.CallNode(ids[0], stmt.span, bind or stmt.process.text, process, _mapping(stmt.data), bind, next_id)
                return self._add(call, m.Way(next_id, "next", "", "next"))
            case sx.ForEach():
                return self.for_each(stmt, ids, next_id)
            case sx.Fail():
                return self._add(m.FailNode(ids[0], stmt.span, stmt.reason, "fail"))
            case sx.End():
                return self._add(m.EndNode(ids[0], stmt.span, stmt.outcome))
            case sx.Set():
                node = m.SetNode(ids[0], stmt.span, stmt.name.text, _condition(stmt.value), next_id)
                return self._add(node, m.Way(next_id, "next", "", "next"))
            case sx.Emit():
                message = m.CommandSpec(
                    stmt.participant.text, stmt.event.text, _mapping(stmt.data), stmt.span, stmt.participant.span, stmt.event.span,
                )
                return self._add(m.EmitNode(ids[0], stmt.span, message, next_id), m.Way(next_id, "next", "", "next"))
        raise TypeError(type(stmt).__name__)

    def _add_xor(self, node: m.XorNode) -> str:
        ways = [m.Way(arm.target, "arm", arm.label, f"arm:{index}") for index, arm in enumerate(node.arms)]
        otherwise = m.Way(node.default, "default", "else" if node.has_else else "otherwise", "default")
        return self._add(node, *ways, otherwise)

    def for_each(self, stmt: sx.ForEach, ids: tuple[str, ...], next_id: str) -> str:
        """A for-each: its head, its body (run once per item) and the gather its items reach."""
        each_id, gather_id = ids
        name = f"for each {stmt.item.text}"
        collect = stmt.collect.text if stmt.collect else None
        self._add(m.GatherNode(gather_id, stmt.span, name, each_id, next_id, collect), m.Way(next_id, "next", "", "next"))
        body = self.block(stmt.body, gather_id)
        self._pair(each_id, "each", gather_id, "gather")
        each = m.EachNode(
            each_id, stmt.span, name, stmt.item.text, _condition(stmt.items), body, gather_id, stmt.parallel,
            stmt.at_most, stmt.tolerate, collect, bound_names(stmt.body),
        )
        return self._add(each, m.Way(body, "next", "", "body"))

    def race(self, stmt: sx.Race, node_id: str, next_id: str) -> str:
        race_arms: list[m.RaceArmSpec] = []
        ways: list[m.Way] = []
        for index, arm in enumerate(stmt.arms):
            target = self.block(arm.body, next_id)
            if arm.messages:
                label = " | ".join(n.text for n in arm.messages)
            elif arm.after is not None:
                label = f"after {arm.after.text}"
            else:
                assert arm.at is not None
                label = f"at {_text(arm.at)}"
            race_arms.append(
                m.RaceArmSpec(
                    tuple(n.text for n in arm.messages),
                    arm.bind.text if arm.bind else None,
                    arm.after.seconds if arm.after else None,
                    _condition(arm.at) if arm.at is not None else None,
                    target,
                    label,
                )
            )
            ways.append(m.Way(target, "message" if arm.messages else "timer", label, f"arm:{index}"))
        return self._add(m.RaceNode(node_id, stmt.span, stmt.name.text, tuple(race_arms)), *ways)

    def step(self, stmt: sx.Step, node_id: str, next_id: str) -> str:
        name = stmt.name.text
        failures: dict[str, str] = {}
        failure_binds: dict[str, str] = {}
        reply_retries: dict[str, m.RetryPolicy] = {}
        for on in stmt.on_replies:
            if on.retry is not None:
                retry = on.retry.retry
                policy = m.RetryPolicy(
                    retry.count, retry.backoff.seconds if retry.backoff else 0.0, retry.factor,
                    on.retry.max_delay.seconds if on.retry.max_delay else None, on.retry.jitter,
                )
                reply_retries.update((reply.text, policy) for reply in on.replies)
            # A recovery path runs its block, then goes on after the step; `fail` ends in a fail node.
            recovery = self.block(on.handler, next_id) if on.handler is not None else None
            for reply in on.replies:
                fail_id = f"{node_id}.{reply.text}"
                if recovery is not None:
                    fail_id = recovery
                elif fail_id not in self.nodes:
                    self._add(m.FailNode(fail_id, on.span, on.reason or "", "reply", name, reply.text))
                failures[reply.text] = fail_id
                if on.bind:
                    failure_binds[reply.text] = on.bind.text
        await_ = stmt.await_
        timeout = _timeout(await_.timeout) if await_ else None
        timeout_fail = None
        if stmt.timeout_handler is not None:
            timeout_fail = self.block(stmt.timeout_handler, next_id)
        elif timeout is not None or (stmt.wait is None and stmt.timeout_reason is not None):
            timeout_fail = self._add(
                m.FailNode(
                    f"{node_id}.timeout",
                    stmt.timeout_span or (await_.timeout.span if await_ and await_.timeout else stmt.span),
                    stmt.timeout_reason or f"{name} timed out",
                    "timeout",
                    name,
                )
            )
        compensation = None
        if stmt.compensate is not None:
            comp = stmt.compensate
            on_completion, on_failure = _split_on_failure(comp.data)
            compensation = m.CompensationSpec(
                m.CommandSpec(
                    comp.participant.text, comp.command.text, _mapping(on_completion), comp.span,
                    comp.participant.span, comp.command.span,
                ),
                tuple(r.text for r in comp.replies),
                _timeout(comp.timeout),
                comp.span,
                tuple(name.text for name in comp.even_on),
                _mapping(on_failure),
                tuple(key for key, _ in comp.data.pairs) if on_failure is not None and comp.data is not None else (),
                tuple(name.text for name in comp.refused),
            )
        command = None
        if stmt.send is not None:
            send = stmt.send
            command = m.CommandSpec(
                send.participant.text, send.command.text, _mapping(send.data), send.span,
                send.participant.span, send.command.span,
            )
        wait = stmt.wait
        replies = tuple(r.text for r in await_.replies) if await_ else ()
        ways = [m.Way(next_id, "next", ",".join(replies) if command else "", "next")]
        ways += [m.Way(target, "failure", reply, f"failure:{reply}") for reply, target in failures.items()]
        if timeout_fail is not None:
            ways.append(m.Way(timeout_fail, "timeout", "timeout", "timeout"))
        return self._add(
            m.StepNode(
                node_id,
                stmt.span,
                name=name,
                next=next_id,
                doc=stmt.doc,
                status=stmt.status.text if stmt.status else None,
                command=command,
                replies=replies,
                bind=await_.bind.text if await_ and await_.bind else None,
                failures=failures,
                failure_binds=failure_binds,
                reply_retries=reply_retries,
                timeout=timeout,
                timeout_fail=timeout_fail,
                compensation=compensation,
                nothing_to_undo=stmt.nothing_to_undo,
                timer_seconds=wait.duration.seconds if wait and wait.duration else None,
                timer_until=_condition(wait.until) if wait and wait.until is not None else None,
                task=_task_spec(stmt) if stmt.task is not None else None,
            ),
            *ways,
        )

    def callee(self, stmt: sx.Call) -> str:
        file_name = stmt.path or stmt.process.text.replace("-", "_") + ".proc"
        target = str(Path(self.path).parent / file_name) if self.path and not self.path.startswith("<") else file_name
        if target in self.stack:
            self._error("E120", f"`{stmt.process.text}` calls itself (through {' -> '.join(Path(p).stem for p in self.stack)})",
                        stmt.process.span, "a process may not call itself, directly or not")
            return stmt.process.text
        if self.loader is None:
            self._error("E121", f"cannot find the process `{stmt.process.text}`: no files can be read here",
                        stmt.process.span)
            return stmt.process.text
        try:
            data = self.loader(target)
        except FileRefused as refused:
            self._error("E121", f"cannot read the process `{stmt.process.text}`: {refused}", stmt.process.span,
                        "put it in the folder of this process")
            return stmt.process.text
        except OSError:
            self._error("E121", f"cannot find the process `{stmt.process.text}` (looked for {file_name})",
                        stmt.process.span, "put it beside this file or name its file with `from \"file.proc\"`")
            return stmt.process.text
        try:
            child = compile_source(decode_source(data, target), target, self.loader, self.stack + (target,))
        except SourceError as error:
            first = error.diagnostics[0]
            self._error("E122", f"the called process `{stmt.process.text}` has errors: {first.file}:{first.span.line}:"
                        f"{first.span.column}: {first.message}", stmt.process.span)
            return stmt.process.text
        if child.name != stmt.process.text:
            self._error("E121", f"{file_name} holds the process `{child.name}`, not `{stmt.process.text}`",
                        stmt.process.span)
        self.called[stmt.process.text] = child
        return child.name

    # ---- the whole process
    def compile(self) -> m.ProcessDefinition:
        proc = self.source.process
        self._assign_ids([*proc.body, *(proc.deadline_handler or ())])
        end = self._add(m.EndNode("end", Span(proc.span.end_line, proc.span.end_column, proc.span.end_line, proc.span.end_column)))
        first = self.block(proc.body, end)
        handler = None
        if proc.deadline_handler is not None and proc.deadline is not None:
            # Falling off the handler ends the instance `timed_out`, undoing nothing.
            timed_out = self._add(m.EndNode("deadline_end", proc.deadline.span, None, True))
            handler = self.block(proc.deadline_handler, timed_out)
        ways = [m.Way(first, "next", "", "next")] + ([m.Way(handler, "deadline", "deadline", "deadline")] if handler else [])
        start = self._add(m.StartNode("start", proc.name.span, first, handler), *ways)
        self.order = _document_order(self.nodes, start)
        participants: dict[str, m.Participant] = {}
        for p in proc.participants:
            if p.name.text in participants:
                continue  # reported by the validator
            replies = {c.name.text: c.payload.to_schema() if c.payload else None for c in p.contracts if c.kind == "reply"}
            commands = {c.name.text: c.payload.to_schema() if c.payload else None for c in p.contracts if c.kind == "command"}
            participants[p.name.text] = m.Participant(
                p.name.text, p.display or p.name.text.replace("_", " ").title(), p.span, replies, commands
            )
        _add_task_participant(participants, self.nodes, proc.span)
        events = {e.name.text: e.payload.to_schema() if e.payload else None for e in proc.events}
        input_schema = self.input_schema(proc)
        text = self.source.text
        process_text = _slice(text, proc.span)
        digest = hashlib.sha256(process_text.encode("utf-8"))
        for name in sorted(self.called):
            digest.update(self.called[name].fingerprint.encode("ascii"))
        if self.diagnostics:
            raise SourceError(self.diagnostics, text)
        return m.ProcessDefinition(
            name=proc.name.text,
            version=proc.version,
            title=proc.title,
            doc=proc.doc,
            fingerprint="sha256:" + digest.hexdigest()[:16],
            correlate=_condition(proc.correlate) if proc.correlate is not None else None,
            reply_to=proc.reply_to or f"{proc.name.text}-replies",
            deadline_seconds=proc.deadline.seconds if proc.deadline else None,
            input_schema=input_schema,
            participants=participants,
            events=events,
            nodes=self.nodes,
            start=start,
            order=tuple(self.order),
            called=self.called,
            limits={k: v for k, (v, _) in proc.limits.items()},
            path=self.path,
            graph=self.graph(proc.name.text),
            source=text,
            syntax=self.source,
            scenario_loader=partial(parse_scenarios, self.source),
            output=_mapping(proc.output),
            undo_failure=proc.undo_failure or "stop",
            undo_lanes=undo_lanes([*proc.body, *(proc.deadline_handler or ())], lambda fork: self.ids[fork.span][0]),
        )

    def graph(self, name: str) -> nx.MultiDiGraph:
        """The process as its graph: the nodes in document order, then each one's ways out."""
        graph = nx.MultiDiGraph(name=name)
        graph.add_nodes_from(
            (node_id, {**m.node_attributes(self.nodes[node_id]), **self.partners.get(node_id, {})}) for node_id in self.order
        )
        graph.add_edges_from(
            (node_id, way.target, way.key, {"kind": way.kind, "label": way.label})
            for node_id in self.order
            for way in self.ways[node_id]
        )
        return nx.freeze(graph)

    def input_schema(self, proc: sx.Process) -> dict[str, Any] | None:
        if proc.input_record is not None:
            return proc.input_record.to_schema()
        if proc.input_file is None:
            return None
        file_name, span = proc.input_file
        target = str(Path(self.path).parent / file_name) if not self.path.startswith("<") else file_name
        try:
            if self.loader is None:
                raise OSError
            data = self.loader(target)
        except FileRefused as refused:
            self._error("E123", f"cannot read the input contract: {refused}", span, "put the JSON Schema file beside the process")
            return None
        except OSError:
            self._error("E123", f"cannot read the input contract {file_name}", span, "put the JSON Schema file beside the process")
            return None
        try:
            schema = strict_loads(data, what=f"the input contract {file_name}", limit=FILE_BYTES, refuse=FileRefused)
        except FileRefused as refused:
            self._error("E123", str(refused), span)
            return None
        if not isinstance(schema, dict):
            self._error("E123", f"the input contract {file_name} must be a JSON object (a JSON Schema)", span)
            return None
        return schema


def _task_spec(stmt: sx.Step) -> m.TaskSpec:
    """A task's rounds, form and failure reason, for the engine and the views (dsl/tasks.py)."""
    task = stmt.task
    assert task is not None
    found = []
    for data, due, escalation, assignee in tasks.rounds(stmt.name.text, task):
        command = m.CommandSpec(tasks.PARTICIPANT, stmt.name.text, _mapping(data), task.span, task.span, stmt.name.span)
        who = None
        if assignee is not None:
            who = ("group " if assignee.group else "") + _text(assignee.who)
        found.append(m.TaskRound(command, due.seconds if due else None, escalation, who))
    return m.TaskSpec(
        tuple(found), task.form.to_schema() if task.form else None, stmt.timeout_reason or tasks.default_reason(stmt.name.text)
    )


def _add_task_participant(participants: dict[str, m.Participant], nodes: dict[str, m.AnyNode], span: Span) -> None:
    """The implicit participant `task` that human tasks are commanded to, with each task's
    command and its completing reply (the form), when the process has a task."""
    found = [n for n in nodes.values() if isinstance(n, m.StepNode) and n.task is not None]
    if not found or tasks.PARTICIPANT in participants:  # a declared `task` is refused by the validator
        return
    replies = {tasks.completed_reply(n.name): n.task.form for n in found if n.task is not None}
    commands: dict[str, dict[str, Any] | None] = {n.name: None for n in found}
    participants[tasks.PARTICIPANT] = m.Participant(tasks.PARTICIPANT, tasks.PARTICIPANT_DISPLAY, span, replies, commands)

def bound_names(body: Sequence[sx.Statement]) -> tuple[str, ...]:
    """The names a block binds (`as`, and a nested for-each's `collect`), in document order."""
    found: dict[str, None] = {}
    for stmt, _ in walk_statements(body):
        match stmt:
            case sx.Step():
                binds = [stmt.await_.bind if stmt.await_ else None, *(on.bind for on in stmt.on_replies)]
                found.update((bind.text, None) for bind in binds if bind is not None)
            case sx.Race():
                found.update((arm.bind.text, None) for arm in stmt.arms if arm.bind is not None)
            case sx.Call() if stmt.bind is not None:
                found[stmt.bind.text] = None
            case sx.ForEach() if stmt.collect is not None:
                found[stmt.collect.text] = None
    return tuple(found)


def reads_failure(expr: ex.Expr) -> bool:
    """True when an expression reads `failure`."""
    return any(isinstance(node, ex.Var) and node.name == m.FAILURE_NAME for node in ex.walk(expr))


def _split_on_failure(data: ex.ObjectExpr | None) -> tuple[ex.ObjectExpr | None, ex.ObjectExpr | None]:
    """An undo's mapping as (the fields computed when the step completes, the fields that read
    `failure`, computed when the instance fails); None for a part with no fields (the first
    part keeps an empty mapping when the undo had one)."""
    if data is None:
        return None, None
    later = tuple(pair for pair in data.pairs if reads_failure(pair[1]))
    if not later:
        return data, None
    now = tuple(pair for pair in data.pairs if not reads_failure(pair[1]))
    return ex.ObjectExpr(data.span, now), ex.ObjectExpr(data.span, later)


def _value_text(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else f'"{value}"'


def _slice(text: str, span: Span) -> str:
    lines = text.split("\n")
    if span.line == span.end_line:
        return lines[span.line - 1][span.column - 1 : span.end_column - 1]
    parts = [lines[span.line - 1][span.column - 1 :]]
    parts.extend(lines[span.line : span.end_line - 1])
    parts.append(lines[span.end_line - 1][: span.end_column - 1])
    return "\n".join(parts)


def _document_order(nodes: dict[str, m.AnyNode], start: str) -> list[str]:
    """Node ids sorted by where they were written; generated fail ends follow their step."""

    def key(node_id: str) -> tuple[int, int, int, str]:
        node = nodes[node_id]
        if node_id == "start":
            return (0, 0, 0, "")
        if node_id == "end":
            return (1 << 30, 0, 0, "")
        if node_id == "deadline_end":  # (not where the deadline is written: headers may stand anywhere)
            return ((1 << 30) - 1, 0, 0, "")
        if isinstance(node, m.FailNode) and node.step is not None:
            step = nodes[node.step] if node.step in nodes else node
            return (step.span.line, step.span.column, 1, node_id)
        if isinstance(node, m.JoinNode | m.UntilNode | m.GatherNode):
            return (node.span.end_line, node.span.end_column, 2, node_id)
        return (node.span.line, node.span.column, 0, node_id)

    return sorted(nodes, key=key)


def file_loader(process_path: str) -> Loader:
    """How a process read from `process_path` reads the files it names (`input from`,
    `call ... from`): regular files inside its folder only, of at most `file_bytes`
    (`procflow.files.confined_loader`)."""
    return confined_loader(process_path)


def read_source(path: str) -> bytes:
    """The bytes of a .proc file named by the caller: no more than one byte past the
    `source_bytes` limit is read (the parser refuses a longer text), so a device such as
    /dev/zero cannot take the machine's memory. OSError when it cannot be read."""
    return read_at_most(path, SOURCE_BYTES.value + 1)


def compile_source(
    text: str,
    path: str = "<text>",
    loader: Loader | None = None,
    stack: tuple[str, ...] = (),
    scenarios: bool = False,
) -> m.ProcessDefinition:
    """Parse and compile process text; raise `SourceError` when it cannot be built.

    Scenarios are parsed when first asked for (`definition.scenarios`) unless `scenarios=True`
    (the validator's choice: it reports every problem of the file at once)."""
    source = parse(text, path, scenarios=scenarios)
    return _Compiler(source, loader, stack or (path,)).compile()


def load(path: str | Path) -> m.ProcessDefinition:
    """Read, parse and compile a .proc file (and the processes it calls)."""
    file = str(path)
    try:
        data = read_source(file)
    except OSError as error:
        raise SourceError(
            [Diagnostic("E001", "error", f"cannot read the file: {error.strerror or error}", Span(1, 1, 1, 2), None, file)]
        ) from None
    return compile_source(decode_source(data, file), file, file_loader(file))
