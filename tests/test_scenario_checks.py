"""Scenarios are checked like the process body (issue 16, item 6): a scenario line that names
something the process never meets is an error at that line, and a scenario that delivers one
arm of a race decides that race (the first arm is no longer delivered at once as well)."""

from __future__ import annotations

import procflow
from procflow.dsl.validate import check_source
from procflow.interpreter.simulate import check_scenario

PAYMENT = """
process pay {
  correlate by input.orderId
  input { orderId: string }
  participant payment "Payment"

  step charge {
    send payment.charge { orderId: input.orderId }
    await charged within 1m
    on card_declined fail "card declined"
  }
}
"""


def _findings(scenario: str) -> list[tuple[str, int, int, str]]:
    _, found = check_source(PAYMENT + scenario, "pay.proc")
    return [(d.code, d.span.line, d.span.column, d.message) for d in found]


def test_the_issues_misspelt_scenario_no_longer_passes_for_the_wrong_reason() -> None:
    # Was: the `when` rule matched no command, the scenario ran on the defaults (charged), and
    # `expect status completed` passed although the author meant a declined card.
    scenario = (
        'scenario declined {\n  input { orderId: "o1" }\n  when paymnt.chrage reply card_declined\n'
        "  expect status completed\n}\n"
    )
    definition = procflow.load_text(PAYMENT + scenario)
    assert check_scenario(definition, definition.scenarios[0]).passed  # what made the mistake silent
    assert _findings(scenario) == [
        ("E140", 15, 8, "no process here declares the participant `paymnt`; did you mean `payment`?")
    ]
    fixed_participant = scenario.replace("paymnt", "payment")
    assert _findings(fixed_participant) == [("E141", 15, 16, "no step sends `chrage` to `payment`; did you mean `charge`?")]


def test_each_kind_of_scenario_line_is_checked() -> None:
    lines = {
        "when payment.charge reply card_refused": "E142",
        "no event refund_requested": "E143",
        "expect status declined": "E144",
        "expect completed [charge]": "E145",
        "expect commands [payment.charge, payment.void]": "E141",
        "expect compensation [payment.void]": "E141",
    }
    for line, code in lines.items():
        scenario = f'scenario s {{\n  input {{ orderId: "o1" }}\n  {line}\n  expect status failed\n}}\n'
        assert [f[0] for f in _findings(scenario)] == [code], line


def test_names_the_process_can_meet_are_accepted() -> None:
    scenario = (
        'scenario declined {\n  input { orderId: "o1" }\n  when payment.charge reply card_declined\n'
        '  expect status failed\n  expect commands [payment.charge]\n  expect completed []\n  expect failure "card declined"\n}\n'
    )
    assert _findings(scenario) == []


def test_a_misspelt_send_is_reported_once_not_again_at_every_scenario_line() -> None:
    scenario = 'scenario ok {\n  input { orderId: "o1" }\n  when payment.charge reply charged\n  expect status completed\n}\n'
    _, found = check_source(PAYMENT.replace("send payment.charge", "send paymnt.charge") + scenario, "pay.proc")
    assert [d.code for d in found if d.severity == "error"] == ["E110"]


RACE = """
process approval {
  correlate by input.id
  input { id: string }
  participant desk "Desk"
  event approved
  event rejected
  race decision {
    on approved { step book { send desk.book { id: input.id } await booked within 1h } }
    on rejected { fail "rejected by the reviewer" }
    on timer 2d { fail "no decision in time" }
  }
}
scenario rejected_later "The reviewer rejects after an hour" {
  input { id: "a1" }
  deliver rejected after 1h
  expect status failed
  expect failure "rejected by the reviewer"
  expect commands []
}
"""


def test_delivering_one_arm_of_a_race_stops_the_default_first_arm() -> None:
    # Was: `approved` (the first arm) was delivered at once by default, the booking ran and the
    # instance completed; the scenario's `rejected` then arrived for a race already decided.
    definition = procflow.load_text(RACE)
    _, found = check_source(RACE, "approval.proc")
    assert [d.code for d in found if d.severity == "error"] == []
    outcome = check_scenario(definition, definition.scenarios[0])
    assert outcome.passed, outcome.differences
    result = procflow.simulate(definition, workflow_id="wf_1", scenario="rejected_later")
    assert result.command_names == []
