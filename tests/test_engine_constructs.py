"""Regression tests: language constructs that once did not run as the language means.

Each test names the construct, the wrong behaviour it guards against, and checks the right one
through the public API (`procflow.load_text` / `procflow.load`, `procflow.simulate`, and the
engine functions `start`, `deliver`, `advance`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import procflow
from procflow.interpreter.simulate import check_scenario

NOW = datetime(2026, 3, 23, 16, 0, tzinfo=UTC)

REMINDER_LOOP = """
process reminder-loop {
  correlate by input.id
  input { id: string }
  participant portal "Portal"
  event documents_uploaded
  repeat chase max 3 {
    race documents {
      on documents_uploaded { step verify { send portal.verify { id: input.id } await verified within 1h } }
      on timer 5d { step remind { send portal.remind { id: input.id } await reminded within 1h } }
    }
  } until steps.verify.reply == "verified"
}
scenario silent "No documents: three reminders, each answered" {
  input { id: "app_1" }
  no event documents_uploaded
  expect status completed
  expect completed [reminded, reminded, reminded]
  expect commands [portal.remind, portal.remind, portal.remind]
}
"""


def test_a_step_entered_again_by_a_repeat_gets_a_new_dedup_key_each_round() -> None:
    # Was: every round sent `app_1:portal.remind:remind#1`, so an outbox deduplicating by key
    # would drop rounds 2 and 3, and the reply to round 2 was taken for a duplicate of round 1.
    definition = procflow.load_text(REMINDER_LOOP)
    result = procflow.simulate(definition, workflow_id="wf_1", scenario="silent")
    keys = [d.dedupKey for d in result.dispatches]
    assert keys == ["app_1:portal.remind:remind@1#1", "app_1:portal.remind:remind@2#1", "app_1:portal.remind:remind@3#1"]
    assert not [t for t in result.trace if t.kind == "duplicate"]
    assert check_scenario(definition, definition.scenarios[0]).passed


def test_outside_a_repeat_the_dedup_key_is_unchanged() -> None:
    definition = procflow.load_text(LATE_VOID)
    step = procflow.start(definition, "wf_2", {"orderId": "ord_2"}, NOW)
    assert [d.dedupKey for d in step.dispatches] == ["ord_2:payment.authorize:authorize#1"]


LATE_VOID = """
process late-void {
  correlate by input.orderId
  input { orderId: string }
  participant payment "Payment"
  step authorize {
    send payment.authorize { orderId: input.orderId }
    await payment_authorized as auth within 1h
    compensate payment.void { authorizationId: auth.authorizationId } awaiting payment_voided within 1m
  }
}
"""


def test_a_late_success_is_undone_with_its_own_payload_bound() -> None:
    # Was: the undo was computed when the step gave up, when `auth` was not bound yet; the
    # mapping failed, the undo was dropped, and the late authorization was only "recorded".
    definition = procflow.load_text(LATE_VOID)
    step = procflow.start(definition, "wf_3", {"orderId": "ord_3"}, NOW)
    step = procflow.advance(definition, step.state, NOW + timedelta(hours=1))
    assert step.state.status == "timed_out"
    late = procflow.Reply(
        type="payment_authorized", correlationId="ord_3", messageId="m-1", data={"authorizationId": "auth_9"}
    )
    step = procflow.deliver(definition, step.state, late, NOW + timedelta(hours=2))
    assert step.outcome == "late"
    assert [(c.commandName, c.data) for c in step.commands] == [("payment.void", {"authorizationId": "auth_9"})]
    assert step.state.lateReplies[-1].action == "compensated"
    confirm = procflow.Reply(type="payment_voided", correlationId="ord_3", messageId="m-2")
    step = procflow.deliver(definition, step.state, confirm, NOW + timedelta(hours=2))
    assert step.state.status == "compensated"


PARENT = """
process parent-proc {
  correlate by input.id
  input { id: string }
  participant desk "Desk"
  call child-proc { id: input.id } as child
  step finish { send desk.finish { id: input.id } await finished within 1h }
}
scenario ping_later "The event the called process waits for is delivered an hour later" {
  input { id: "x" }
  no event ping
  deliver ping after 1h
  expect status completed
  expect completed [ping, finished]
}
"""

CHILD = """
process child-proc {
  correlate by "child-" + input.id
  input { id: string }
  event ping
  step wait_for_ping { await ping within 1d }
}
"""


def test_a_delivered_event_reaches_a_called_process_that_correlates_by_its_own_key(tmp_path: Path) -> None:
    # Was: `deliver` always used the caller's correlationId, so the event was refused and the
    # called process timed out a day later.
    (tmp_path / "parent_proc.proc").write_text(PARENT, encoding="utf-8")
    (tmp_path / "child_proc.proc").write_text(CHILD, encoding="utf-8")
    definition = procflow.load(tmp_path / "parent_proc.proc")
    outcome = check_scenario(definition, definition.scenarios[0])
    assert outcome.passed, outcome.differences
    assert outcome.result is not None and outcome.result.refused == []


REPEATED_BOOKING = """
process rebook {
  participant p "P"
  repeat rounds max 2 {
    step book {
      send p.book
      await booked within 1h
      compensate p.unbook awaiting unbooked within 1h
    }
  } until false
  step confirm {
    send p.confirm
    await confirmed within 1h
    on refused fail "refused"
  }
}

scenario refused {
  when p.confirm reply refused
  expect status compensated
  expect commands [p.book, p.book, p.confirm, p.unbook, p.unbook]
  expect compensation [p.unbook, p.unbook]
}
"""


def test_each_round_of_a_repeated_step_is_undone_with_its_own_key() -> None:
    definition = procflow.load_text(REPEATED_BOOKING)
    outcome = check_scenario(definition, definition.scenarios[0])
    assert outcome.passed, outcome.differences
    assert outcome.result is not None
    undo_keys = [d.dedupKey for d in outcome.result.dispatches if d.step == "undo:book"]
    assert undo_keys == ["wf_refused:p.unbook:undo:book@2#1", "wf_refused:p.unbook:undo:book@1#1"]


def test_a_5000_step_process_runs_to_its_end_at_the_default_recursion_limit() -> None:
    """Nothing in reading, compiling or running a process recurses per step: a 5,000-step
    process (one send and await each, five times Python's default recursion limit) completes
    with the limit untouched. (`bench/compare.py`'s full run drives a 50,000-step one.)"""
    import sys

    from procflow.interpreter.messages import Reply

    steps = 5_000
    text = "process long-run {\n  participant worker\n" + "".join(
        f"  step s{i} {{ send worker.do{i} await done{i} within 1d }}\n" for i in range(steps)
    ) + "}\n"
    limit = sys.getrecursionlimit()
    definition = procflow.load_text(text)
    state = procflow.start(definition, "wf_long", {}, NOW).state
    for i in range(steps):
        state = procflow.deliver(definition, state, Reply(type=f"done{i}", correlationId="wf_long"), NOW).state
    assert state.status == "completed"
    assert len(state.completedSteps) == steps and state.completedSteps[-1] == f"done{steps - 1}"  # each reply is a milestone
    assert sys.getrecursionlimit() == limit
