"""Rules about the data a process keeps and hands on: its variables (`set`), the failure an
undo reads (`failure`), and the scenario lines that check its output and its notifications.

E165 a `set` of a built-in name or of a name bound with `as`; E166 `failure` read outside an
undo's mapping; E167 a field `failure` does not have; E168 a scenario expects a notification
no `emit` sends; E169 a scenario expects an output field the process does not return.
"""

from __future__ import annotations

from procflow.dsl import model as m
from procflow.dsl import syntax as sx
from procflow.dsl.diagnostics import Diagnostic
from procflow.dsl.rule_facts import BUILTIN_NAMES, Facts, name_span, suggestion
from procflow.errors import SourceError


def set_names(facts: Facts) -> list[Diagnostic]:
    """E165: `set` of `input`, `steps` or `failure`, or of a name a reply or a call binds with `as`
    (a payload is what its sender said: a variable of the same name would hide it)."""
    found = []
    for stmt, _ in facts.statements:
        if not isinstance(stmt, sx.Set):
            continue
        name = stmt.name
        if name.text in BUILTIN_NAMES or name.text == m.FAILURE_NAME:
            found.append(facts.diagnostic("E165", f"`{name.text}` cannot be set: it is a built-in name", name.span,
                                          "choose another name"))
            continue
        bound = [span for how, span in facts.bound_names.get(name.text, []) if how != "set" and span is not None]
        if bound:
            found.append(facts.diagnostic("E165", f"`{name.text}` is bound with `as` on line {bound[0].line}; `set` cannot change it",
                                          name.span, "set a variable of another name"))
    return found


def failure_reads(facts: Facts) -> list[Diagnostic]:
    """E166: `failure` read where no failure is known (anywhere but an undo's mapping);
    E167: `failure.<field>` for a field it does not have."""
    found = []
    for use, whole, _ in facts.scans:
        for var in whole.names:
            if var.name == m.FAILURE_NAME and not use.undo and m.FAILURE_NAME not in facts.bound_names:
                found.append(facts.diagnostic(
                    "E166", "`failure` is read only in the mapping of a `compensate` (it is the instance's failure)", var.span,
                    "bind a failure reply with `on reply as name` to read it in a recovery path"))
        if not use.undo:
            continue
        for read in whole.reads:
            if read.names[0] == m.FAILURE_NAME and len(read.names) > 1 and read.names[1] not in m.FAILURE_FIELDS:
                field = read.names[1]
                found.append(facts.diagnostic(
                    "E167", f"`failure` has no field `{field}`" + suggestion(field, m.FAILURE_FIELDS),
                    name_span(read.parts[1], field), f"its fields: {', '.join(m.FAILURE_FIELDS)}"))
    return found


def scenario_data(facts: Facts) -> list[Diagnostic]:
    """E168: `expect emitted p.e` that no `emit` of the process (or one it calls) sends;
    E169: `expect output { f: ... }` with a field the process's `output` does not have."""
    definition = facts.definition
    try:
        scenarios = definition.scenarios
    except SourceError:  # reported by the scenario rules
        return []
    emitted = {node.message.name for p in definition.processes.values() for node in p.in_order if isinstance(node, m.EmitNode)}
    output = [key for key, _ in definition.output.expr.pairs] if definition.output is not None else None
    found = []
    for scenario in scenarios:
        for expectation in scenario.syntax.expectations:
            if expectation.kind == "emitted" and expectation.value not in emitted:
                found.append(facts.diagnostic(
                    "E168", f"no `emit` sends `{expectation.value}`" + suggestion(expectation.value, sorted(emitted)),
                    expectation.span, f"the notifications emitted: {', '.join(sorted(emitted)) or 'none'}"))
            elif expectation.kind == "output":
                for key, _ in expectation.value.pairs:
                    if output is None:
                        found.append(facts.diagnostic("E169", f"`{definition.name}` declares no `output`, so it has no field `{key}`",
                                                      expectation.span, "declare it: output { " + key + ": ... }"))
                    elif key not in output:
                        found.append(facts.diagnostic("E169", f"the output has no field `{key}`" + suggestion(key, output),
                                                      expectation.span, f"its fields: {', '.join(output)}"))
    return found
