"""Validation rules. Each rule is a function of (definition, limits) -> diagnostics."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from procflow.dsl.errors import Diagnostic
from procflow.dsl.model import ProcessDefinition, StepNode

Rule = Callable[[ProcessDefinition, Mapping[str, int]], list[Diagnostic]]


def unknown_participant(definition: ProcessDefinition, limits: Mapping[str, int]) -> list[Diagnostic]:
    """E110: a step sends to (or compensates with) a participant that is not declared."""
    import difflib

    found = []
    known = list(definition.participants)
    for node in definition.steps:
        for spec in (node.command, node.compensation.command if node.compensation else None):
            if spec is None or spec.participant in definition.participants:
                continue
            guess = difflib.get_close_matches(spec.participant, known, n=1)
            found.append(
                Diagnostic(
                    "E110",
                    "error",
                    f"unknown participant `{spec.participant}`" + (f"; did you mean `{guess[0]}`?" if guess else ""),
                    spec.span,
                    f"declare it: participant {spec.participant} \"...\"" if not guess else None,
                    definition.path,
                )
            )
    return found


RULES: list[Rule] = [unknown_participant]


def run_all(definition: ProcessDefinition, limits: Mapping[str, int]) -> list[Diagnostic]:
    """Run every rule and collect what they find."""
    found: list[Diagnostic] = []
    for rule in RULES:
        found.extend(rule(definition, limits))
    return found


__all__ = ["RULES", "StepNode", "run_all"]
