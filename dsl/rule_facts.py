"""What the validator's rules read: `Facts` (the definition, its syntax tree, the limits, and
what several rules share, each worked out once per validation) and the small helpers rules
use to word a finding.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import Any

from procflow.dsl import expression_reads as er
from procflow.dsl import expressions as ex
from procflow.dsl import model as m
from procflow.dsl import syntax as sx
from procflow.dsl.diagnostics import Diagnostic, Span
from procflow.dsl.flow_proofs import FlowProofs
from procflow.dsl.statement_walk import walk_statements

LIMIT_NAMES = ("participants", "computation")
"""The thresholds a process may set with `limit NAME N` (defaults: `validate.DEFAULT_LIMITS`)."""

BUILTIN_NAMES = ("input", "steps")
"""Names every expression can read without binding them."""


def suggestion(name: str, candidates: Sequence[str]) -> str:
    """`; did you mean `x`?` for the closest candidate, or nothing."""
    guess = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean `{guess[0]}`?" if guess else ""


def name_span(expr: ex.Expr, name: str) -> Span:
    """The span of the last `name` of a field access such as `input.amount`."""
    span = expr.span
    if isinstance(expr, ex.Field) and span.end_column > len(name):
        return Span(span.end_line, span.end_column - len(name), span.end_line, span.end_column)
    return span


def value_text(value: Any) -> str:
    """A case value as written: `"home"`, `true`, `3`."""
    return json.dumps(value)


class Facts:
    """What the rules read: the definition, its syntax, the limits, and shared analyses."""

    def __init__(self, definition: m.ProcessDefinition, limits: Mapping[str, int]) -> None:
        self.definition = definition
        self.limits = limits
        source = definition.syntax
        self.process: sx.Process | None = source.process if isinstance(source, sx.SourceFile) else None

    def diagnostic(self, code: str, message: str, span: Span, hint: str | None = None) -> Diagnostic:
        """A finding of this process; codes starting with W are warnings."""
        severity = "warning" if code.startswith("W") else "error"
        return Diagnostic(code, severity, message, span, hint, self.definition.path)

    @cached_property
    def statements(self) -> list[tuple[sx.Statement, tuple[sx.Branch, ...]]]:
        """Every statement in document order, with its enclosing parallel branches."""
        if self.process is None:
            return []
        return list(walk_statements([*self.process.body, *(self.process.deadline_handler or ())]))

    @cached_property
    def in_deadline_handler(self) -> frozenset[Span]:
        """The spans of the statements of the deadline handler (`deadline D { ... }`), which
        the deadline no longer bounds: it has passed when they run."""
        handler = self.process.deadline_handler if self.process else None
        return frozenset(stmt.span for stmt, _ in walk_statements(handler or ()))

    @cached_property
    def steps(self) -> list[sx.Step]:
        """Every step as written, in document order."""
        return [s for s, _ in self.statements if isinstance(s, sx.Step)]

    @cached_property
    def uses(self) -> list[er.ExprUse]:
        """Every expression of the process, in document order of its node."""
        found: list[er.ExprUse] = []
        if self.definition.correlate is not None:
            found.append(er.ExprUse(self.definition.correlate.expr, None, (), False))
        for node in self.definition.in_order:
            found.extend(er.node_uses(node))
        found.extend(er.output_uses(self.definition))
        return found

    @cached_property
    def scans(self) -> list[tuple[er.ExprUse, er.Scan, list[tuple[ex.Expr, er.Scan]]]]:
        """Every use with a scan of its whole expression and of each part (a mapping's values)."""
        found = []
        for use in self.uses:
            if use.mapping and isinstance(use.expr, ex.ObjectExpr):
                parts = []
                names: list[ex.Var] = []
                reads: list[er.PathRead] = []
                size, depth, arithmetic = 1, 0, 0
                for _, value in use.expr.pairs:
                    part = er.scan(value)
                    parts.append((value, part))
                    names += part.names
                    reads += part.reads
                    size += part.size
                    depth = max(depth, part.depth)
                    arithmetic += part.arithmetic
                whole = er.Scan(tuple(names), tuple(reads), size, 1 + depth, arithmetic)
            else:
                whole = er.scan(use.expr)
                parts = [(use.expr, whole)]
            found.append((use, whole, parts))
        return found

    @cached_property
    def flow(self) -> FlowProofs:
        """The proofs about the process's flow, on its graph."""
        return FlowProofs(self.definition, self.exhaustive_nodes)

    @cached_property
    def bound_names(self) -> dict[str, list[tuple[str, Span | None]]]:
        """name -> (how, where) for every name bound with `as`; `how` names the binding."""
        bound: dict[str, list[tuple[str, Span | None]]] = {}
        for stmt, _ in self.statements:
            for how, bound_name in er.bindings_of(stmt):
                bound.setdefault(bound_name.text, []).append((how, bound_name.span))
        if self.process is None:
            for node in self.definition.nodes.values():
                for name in er.model_bindings(node):
                    bound.setdefault(name, []).append(("as", None))
        return bound

    @cached_property
    def exhaustive_nodes(self) -> frozenset[str]:
        """The xor nodes of switches that name every value their subject can take."""
        found = set()
        for node in self.definition.nodes.values():
            if isinstance(node, m.XorNode) and node.subject is not None and not node.has_else:
                values = known_values(self, node.subject.expr)
                named = {value_text(v) for arm in node.arms for v in arm.values}
                if values is not None and all(value_text(v) in named for v in values):
                    found.add(node.id)
        return frozenset(found)

    @cached_property
    def declared_replies(self) -> set[str]:
        """Replies some participant declares in its contract block."""
        return {r for p in self.definition.participants.values() for r in p.replies}


def known_values(facts: Facts, subject: ex.Expr) -> list[Any] | None:
    """The values a switch's subject can take, when it is an input field whose contract is an
    enum or a boolean; None when they are open."""
    path = ex.field_path(subject)
    if path is None or path[0] != "input" or facts.definition.input_schema is None:
        return None
    schema = er.schema_at(facts.definition.input_schema, path[1:])
    if not isinstance(schema, dict):
        return None
    if isinstance(schema.get("enum"), list):
        return list(schema["enum"])
    if schema.get("type") == "boolean":
        return [True, False]
    return None


Rule = Callable[[Facts], list[Diagnostic]]
"""A validation rule: every finding of one kind (or a few related kinds) in a process."""
