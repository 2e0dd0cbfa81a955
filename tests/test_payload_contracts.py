"""The validator sees data through contracts (issue 16, item 7): a read of a bound reply's or
event's field that its declared contract does not have is an error (E150, E151), and a timer or
a `within` longer than the process's deadline is a warning (W150, W151)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import procflow
from procflow.dsl.compiler import compile_source
from procflow.dsl.validate import check_file, check_source, validate
from procflow.interpreter.simulate import check_scenario

PAY = """
process pay {
  correlate by input.orderId
  input { orderId: string, amount: number }
  participant payment "Payment" {
    command authorize { orderId: string, amount: number }
    command void { authorizationId: string }
    reply payment_authorized { authorizationId: string, card: { last4: string, limit: number }, extra?: object }
    reply payment_pending { authorizationId: string, retryAfter: number }
    reply payment_voided
  }

  step authorize {
    send payment.authorize { orderId: input.orderId, amount: input.amount }
    await payment_authorized, payment_pending as auth within 1h
    compensate payment.void { authorizationId: auth.authorizationId } awaiting payment_voided within 5m retry 3
  }
  if READ > 1000 {
    fail "over the limit"
  }
}
"""

ISSUE_SCENARIO = """
scenario large "A large authorization" {
  input { orderId: "o1", amount: 5000 }
  when payment.authorize reply payment_authorized { authorizationId: "a1", card: { last4: "4242", limit: 9000 } }
  expect status completed
}
"""


def _findings(text: str) -> list[tuple[str, int, int, str]]:
    _, found = check_source(text, "pay.proc")
    return [(d.code, d.span.line, d.span.column, d.message) for d in found]


def test_the_issues_example_is_an_error_before_it_fails_at_run_time() -> None:
    text = PAY.replace("READ", "auth.amount") + ISSUE_SCENARIO
    # What the error saves the author from: the instance runs, the reply is accepted, and the
    # condition fails on a null.
    definition = procflow.load_text(text)
    outcome = check_scenario(definition, definition.scenarios[0])
    assert outcome.result is not None and outcome.result.state.failure is not None
    assert "cannot compare null > number" in outcome.result.state.failure.reason
    assert _findings(text) == [
        ("E150", 18, 11, "`auth` has no field `amount` in the contracts of replies `payment_authorized`, "
                         "`payment_pending`"),
    ]
    _, found = check_source(text, "pay.proc")
    assert found[0].hint == (
        "`auth` declares: authorizationId, card, extra, retryAfter; read one of them, or declare the field in the contract"
    )


def test_a_field_one_of_the_bound_replies_declares_is_fine() -> None:
    for read in ("auth.retryAfter", "auth.card.limit", "auth.extra.anything.at.all", "len(auth.authorizationId)"):
        assert _findings(PAY.replace("READ", read)) == [], read


def test_nested_records_are_followed_and_a_field_of_a_scalar_is_reported() -> None:
    assert _findings(PAY.replace("READ", "auth.card.limt")) == [
        ("E150", 18, 16, "`auth.card` has no field `limt` in the contracts of replies `payment_authorized`, "
                         "`payment_pending`; did you mean `limit`?"),
    ]
    assert _findings(PAY.replace("READ", "auth.retryAfter.seconds")) == [
        ("E150", 18, 22, "`auth.retryAfter` is a number in the contract of reply `payment_pending`; "
                         "it has no field `seconds`"),
    ]


def test_mappings_and_compensation_data_are_checked_too() -> None:
    text = PAY.replace("READ", "1").replace("{ authorizationId: auth.authorizationId }", "{ authorizationId: auth.authId }")
    assert [f[:2] for f in _findings(text)] == [("E150", 16)]


def test_a_reply_declared_without_a_record_leaves_the_name_open() -> None:
    text = PAY.replace("READ", "auth.amount").replace(
        "reply payment_pending { authorizationId: string, retryAfter: number }", "reply payment_pending"
    )
    assert _findings(text) == []


def test_a_name_a_call_also_binds_is_not_checked(tmp_path: Path) -> None:
    (tmp_path / "other.proc").write_text(
        "process other {\n  correlate by input.orderId\n  input { orderId: string }\n  step pause { wait 1m }\n}\n",
        encoding="utf-8",
    )
    text = PAY.replace("READ", "auth.amount")
    (tmp_path / "pay.proc").write_text(text, encoding="utf-8")
    assert [d.code for d in check_file(tmp_path / "pay.proc")[1]] == ["E150"]
    called = text.replace("  if auth.amount", "  call other { orderId: input.orderId } as auth\n  if auth.amount")
    (tmp_path / "pay.proc").write_text(called, encoding="utf-8")
    definition, found, _ = check_file(tmp_path / "pay.proc")
    assert definition is not None and found == []


def test_an_events_contract_is_read_for_a_race_arm() -> None:
    text = """
process onboarding {
  correlate by input.customerId
  input { customerId: string }
  participant crm "Customer Records"
  event first_deposit_received { amount: number, currency: string }
  event account_closed

  race funding {
    on first_deposit_received as deposit {
      step thank { send crm.thank { amount: deposit.amout, currency: deposit.currency } await thanked within 1h nothing to undo "a letter" }
    }
    on account_closed as closure {
      step note { send crm.note { why: closure.reason } await noted within 1h nothing to undo "a note" }
    }
    on timer 30d { fail "not funded" }
  }
}
"""
    assert _findings(text) == [
        ("E151", 11, 53, "`deposit` has no field `amout` in the contract of event `first_deposit_received`; "
                         "did you mean `amount`?"),
    ]


def test_the_payload_rule_works_without_a_syntax_tree() -> None:
    definition = compile_source(PAY.replace("READ", "auth.amount"), "pay.proc")
    assert [d.code for d in validate(replace(definition, syntax=None))] == ["E150"]


DEADLINE = """
process pay {
  correlate by input.orderId
  input { orderId: string }
  deadline 1d
  participant payment "Payment"
  event confirmed

  step charge {
    send payment.charge { orderId: input.orderId }
    await charged within WITHIN
    compensate payment.refund { orderId: input.orderId } awaiting refunded within 3d
  }
  step cooling_off { wait WAIT }
  race confirmation {
    on confirmed { end }
    on timer TIMER { fail "not confirmed" }
  }
}
"""


def _deadline_findings(within: str = "1h", wait: str = "1h", timer: str = "1h") -> list[tuple[str, int, str]]:
    text = DEADLINE.replace("WITHIN", within).replace("WAIT", wait).replace("TIMER", timer)
    return [(code, line, message) for code, line, _, message in _findings(text)]


def test_waits_within_the_deadline_are_fine_and_a_compensations_wait_is_not_compared() -> None:
    assert _deadline_findings() == []
    # 3 x 6h + 2 x 1h = 20h; then 1h, then 23h: the race's timer ends at the deadline, not after it.
    assert _deadline_findings(within="6h retry 2 backoff 1h", wait="1h", timer="23h") == []


def test_a_timer_that_ends_after_the_deadline_is_a_warning() -> None:
    said = "the process's `deadline 1d` (line 5)"
    assert _deadline_findings(wait="2d") == [
        ("W150", 14, f"the timer `2d` ends after {said}: it can never fire"),
    ]  # (the race after it is reached only after the deadline: one warning, at the wait that crosses it)
    assert _deadline_findings(wait="20h", timer="5h") == [
        ("W150", 17, f"the timer `5h`, which starts 20h after the instance at the earliest, ends after {said}: "
                     "it can never fire"),
    ]


def test_a_within_that_ends_after_the_deadline_counts_its_retries_and_backoff() -> None:
    said = "the process's `deadline 1d` (line 5)"
    assert _deadline_findings(within="2d") == [
        ("W151", 11, f"`within 2d` ends after {said}: the step can never time out"),
    ]
    # 4 attempts of 5h and backoffs of 1h, 2h, 4h: 27h.
    assert _deadline_findings(within="5h retry 3 backoff 1h x2") == [
        ("W151", 11, f"`within 5h` with 3 retries waits up to 1d3h and ends after {said}: "
                     "the last attempt can never time out"),
    ]


def test_a_wait_is_counted_from_the_earliest_time_its_step_is_reached() -> None:
    text = """
process pay {
  correlate by input.orderId
  input { orderId: string }
  deadline 7d
  participant payment "Payment"

  step cooling_off { wait 5d }
  step charge {
    send payment.charge { orderId: input.orderId }
    await charged within 3d
    nothing to undo "an example"
  }
}
"""
    assert _findings(text) == [
        ("W151", 11, 19, "`within 3d`, on a step reached 5d after the instance starts at the earliest, ends after "
                         "the process's `deadline 7d` (line 5): the step can never time out"),
    ]
    assert _findings(text.replace("wait 5d", "wait 4d")) == []


def test_without_a_deadline_nothing_is_compared() -> None:
    text = DEADLINE.replace("  deadline 1d\n", "").replace("WITHIN", "30d").replace("WAIT", "30d").replace("TIMER", "30d")
    assert _findings(text) == []


def test_warnings_do_not_make_the_process_invalid() -> None:
    text = DEADLINE.replace("WITHIN", "1h").replace("WAIT", "2d").replace("TIMER", "1h")
    definition, found = check_source(text, "pay.proc")
    assert definition is not None
    assert [(d.code, d.severity) for d in found] == [("W150", "warning")]


def test_a_name_bound_by_two_steps_is_read_through_both_contracts() -> None:
    text = PAY.replace("READ", "auth.amount").replace(
        "  if auth.amount",
        "  step again {\n    send payment.authorize { orderId: input.orderId, amount: 1 }\n"
        "    await payment_authorized as auth within 1h\n    nothing to undo \"an example\"\n  }\n  if auth.amount",
    )
    assert [f[3] for f in _findings(text)] == [
        "`auth` has no field `amount` in the contracts of replies `payment_authorized`, `payment_pending`"
    ]
    voided = text.replace("await payment_authorized as auth within 1h\n    nothing", "await payment_voided as auth within 1h\n    nothing")
    assert _findings(voided) == []  # `payment_voided` has no record: `auth` is open
    other = voided.replace("reply payment_voided", "reply payment_voided { reference: string }")
    assert [f[3] for f in _findings(other)] == [
        "`auth` has no field `amount` in the contracts of replies `payment_authorized`, `payment_pending`, `payment_voided`"
    ]
    assert _findings(voided.replace("reply payment_voided", "reply payment_voided { amount: number }")) == []
