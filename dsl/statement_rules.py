"""Rules about the shape of single statements: what a step holds, and which values a switch covers.

E126 a step that does nothing, E127 a send with no await, E128 a timer step that also
exchanges messages, E129 a reply with two meanings, E130 a retry with nothing to resend,
E133 `on timeout` without `within`; E118 a switch that is not exhaustive, E132 a case value
the subject cannot take, W118 a switch over open values without a default.
"""

from __future__ import annotations

import difflib

from procflow.dsl import expressions as ex
from procflow.dsl import syntax as sx
from procflow.dsl.diagnostics import Diagnostic, Span
from procflow.dsl.rule_facts import Facts, known_values, value_text


def step_shape(facts: Facts) -> list[Diagnostic]:
    """E126 a step that does nothing; E127 a send with no await; E128 a timer step that also
    exchanges messages; E129 a reply named twice or as both success and failure; E130 a retry
    with nothing to resend; E133 `on timeout` with no `within`."""
    found: list[Diagnostic] = []
    for step in facts.steps:
        name = step.name.text
        if step.wait is not None:
            parts: list[tuple[str, Span | None]] = [
                ("send", step.send.span if step.send else None),
                ("await", step.await_.span if step.await_ else None),
                ("on", step.on_replies[0].span if step.on_replies else None),
                ("on timeout", step.timeout_span),
                ("compensate", step.compensate.span if step.compensate else None),
            ]
            for word, span in parts:
                if span is not None:
                    found.append(facts.diagnostic("E128", f"step `{name}` waits for a timer; it cannot also `{word}`", span,
                                                  "put the timer and the message exchange in two steps"))
            continue
        if step.send is None and step.await_ is None:
            found.append(facts.diagnostic("E126", f"step `{name}` does nothing: it has no `send`, `await` or `wait`",
                                          step.name.span))
            continue
        if step.send is not None and step.await_ is None:
            found.append(facts.diagnostic("E127", f"step `{name}` sends `{step.send.participant.text}.{step.send.command.text}`"
                                          " but awaits no reply", step.name.span, "add `await reply_name within ...`"))
        timeout = step.await_.timeout if step.await_ else None
        if timeout is not None and timeout.retry is not None and step.send is None:
            found.append(facts.diagnostic("E130", f"step `{name}` retries but sends nothing to resend", timeout.retry.span,
                                          "drop `retry`, or send a command in this step"))
        if step.compensate is not None:
            failures = {n.text for on in step.on_replies for n in on.replies}
            for outcome in step.compensate.even_on:
                if outcome.text == "failure" or outcome.text in failures or (outcome.text == "timeout" and timeout is not None):
                    continue
                found.append(facts.diagnostic(
                    "E136", f"step `{name}` never fails with `{outcome.text}`: its undo cannot run `even on` it", outcome.span,
                    "name the step's failure replies (`on r fail ...`), `timeout` when its `await` has `within`, or `failure`"))
        for on in step.on_replies:
            if on.retry is not None and step.send is None:
                found.append(facts.diagnostic("E130", f"step `{name}` retries but sends nothing to resend", on.retry.retry.span,
                                              "drop `retry`, or send a command in this step"))
        if step.timeout_span is not None and timeout is None:
            found.append(facts.diagnostic("E133", f"step `{name}` handles `on timeout` but its `await` has no `within`",
                                          step.timeout_span, "add `within D` to the `await`"))
        found.extend(_reply_roles(facts, step))
    return found


def _reply_roles(facts: Facts, step: sx.Step) -> list[Diagnostic]:
    found = []
    successes = {n.text for n in step.await_.replies} if step.await_ else set()
    seen: set[str] = set()
    for name in [*(step.await_.replies if step.await_ else ()), *(n for on in step.on_replies for n in on.replies)]:
        if name.text in seen:
            both = name.text in successes and name.span not in {n.span for n in (step.await_.replies if step.await_ else ())}
            message = (
                f"reply `{name.text}` is both a success and a failure of step `{step.name.text}`"
                if both
                else f"reply `{name.text}` is named twice in step `{step.name.text}`"
            )
            found.append(facts.diagnostic("E129", message, name.span))
        seen.add(name.text)
    return found


def switch_coverage(facts: Facts) -> list[Diagnostic]:
    """E118 a switch over known values that misses some and has no default; E132 a case value
    that the subject cannot take; W118 a switch over unknown values without a default."""
    found = []
    for stmt, _ in facts.statements:
        if not isinstance(stmt, sx.Switch):
            continue
        subject = ex.to_text(stmt.subject) if ex.measure(stmt.subject)[1] <= ex.MAX_DEPTH else "..."
        values = known_values(facts, stmt.subject)
        if values is None:
            if stmt.default is None:
                found.append(facts.diagnostic("W118", f"switch on `{subject}` has no `default`: other values skip it",
                                              stmt.subject.span, "add `default { ... }` (it may be empty)"))
            continue
        known = [value_text(v) for v in values]
        named = {value_text(v) for case in stmt.cases for v in case.values}
        for case in stmt.cases:
            for value in case.values:
                if value_text(value) not in known:
                    guess = difflib.get_close_matches(value_text(value), known, n=1)
                    found.append(facts.diagnostic("E132", f"case {value_text(value)} is not a value of `{subject}`"
                                                  + (f"; did you mean {guess[0]}?" if guess else ""), case.span,
                                                  "its values: " + ", ".join(known)))
        missing = [text for text in known if text not in named]
        if missing and stmt.default is None:
            found.append(facts.diagnostic("E118", f"switch on `{subject}` has no case for {', '.join(missing)}"
                                          " and no `default`", stmt.subject.span, "add the cases, or `default { ... }`"))
    return found
