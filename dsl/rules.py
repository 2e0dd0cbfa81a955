"""The validator's rules, in the order they run: each a function of the shared `Facts` that
returns its findings, each finding with a stable code.

The codes, what they mean, a failing example and the exact message of each are in
docs/validation.md (and that document is tested). Rules read the compiled definition; where
they report on a name the author wrote they read the syntax tree kept in
`definition.syntax`, in which every name has its span.

=========================  ==========================================================
module                     rules
=========================  ==========================================================
`name_rules`               names and references: declared, and declared once
`statement_rules`          the shape of a step, the values a switch covers
`flow_rules`               reachability, joins, waits, loops (proofs: `flow_proofs`)
`binding_rules`            bound before use (proof: `binding_proofs`)
`compensation_rules`       undoing completed work
`scope_rules`              orchestrator scope and hygiene lints
`contract_rules`           data and time seen through the contracts and the deadline
`scenario_rules`           the names scenario lines use
`task_rules`               human tasks: who does them, how their escalation ends
=========================  ==========================================================
"""

from __future__ import annotations

from collections.abc import Mapping

from procflow.dsl import (
    binding_rules,
    compensation_rules,
    contract_rules,
    flow_rules,
    name_rules,
    scenario_rules,
    scope_rules,
    statement_rules,
    task_rules,
)
from procflow.dsl import model as m
from procflow.dsl.diagnostics import Diagnostic
from procflow.dsl.rule_facts import LIMIT_NAMES, Facts, Rule

RULES: list[Rule] = [
    name_rules.unknown_participant,
    name_rules.unknown_messages,
    name_rules.unknown_names_in_expressions,
    name_rules.undeclared_input_fields,
    contract_rules.undeclared_payload_fields,
    name_rules.unknown_limits,
    name_rules.duplicates,
    statement_rules.step_shape,
    task_rules.task_shape,
    flow_rules.waits_without_way_out,
    flow_rules.unbounded_loops,
    flow_rules.loops_without_bound_handling,
    statement_rules.switch_coverage,
    scope_rules.expression_limits,
    scope_rules.orchestrator_scope,
    compensation_rules.compensation_hygiene,
    scope_rules.unused_declarations,
    binding_rules.unbound_reads,
    flow_rules.reachability,
    compensation_rules.missing_compensation,
    compensation_rules.recovery_ends_with_work_done,
    scope_rules.callee_deadlines,
    contract_rules.waits_past_deadline,
]

SCENARIO_RULES: list[Rule] = [scenario_rules.scenario_references]
"""Run only on a process without errors: a misspelt `send` in the body would otherwise be
reported again at every scenario line that names the command as it was meant."""


def run_all(definition: m.ProcessDefinition, limits: Mapping[str, int]) -> list[Diagnostic]:
    """Run every rule and collect what they find (never stopping at the first)."""
    facts = Facts(definition, limits)
    found: list[Diagnostic] = []
    for rule in RULES:
        found.extend(rule(facts))
    if not any(d.severity == "error" for d in found):
        for rule in SCENARIO_RULES:
            found.extend(rule(facts))
    return found


__all__ = ["LIMIT_NAMES", "RULES", "SCENARIO_RULES", "Facts", "Rule", "run_all"]
