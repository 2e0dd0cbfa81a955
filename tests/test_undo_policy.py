"""Issue 15, construct 4 (the undo policy) and construct 6's second half (unbounded loops that
wait, under a deadline), what the scenarios of the trip booking and the README cannot say:
the state record while branches are undone in parallel, an undo left unconfirmed in what an
operator reads, a stopped parallel undo resumed by an operator, a state written before the
policy existed, the new syntax printed back, and which unbounded loops the validator allows."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import procflow
from procflow.dsl.parser import parse
from procflow.dsl.paths import enumerate_paths, paths_json, paths_text
from procflow.dsl.printer import format_source
from procflow.dsl.validate import check_source
from procflow.interpreter.state import InstanceState, migrate_state
from procflow.operator_cli import inspect_text

ROOT = Path(__file__).resolve().parents[1]
TRIP = ROOT / "processes" / "trip_booking.proc"
NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
INPUT = {"tripId": "trip_1", "amount": 1200.0}


def _reply(kind: str) -> procflow.Reply:
    return procflow.Reply(type=kind, correlationId="trip_1")


def _booked_then_declined(definition: procflow.ProcessDefinition) -> procflow.Transition:
    step = procflow.start(definition, "wf_trip", INPUT, NOW)
    for reply in ("flight_booked", "room_booked", "car_booked"):
        step = procflow.deliver(definition, step.state, _reply(reply), NOW)
    return procflow.deliver(definition, step.state, _reply("card_declined"), NOW)


def test_branches_undone_in_parallel_are_sent_at_once_and_all_awaited() -> None:
    definition = procflow.load(TRIP)
    failed = _booked_then_declined(definition)
    state = failed.state
    # One transition sends the three cancellations, most recent first, and waits for all three.
    assert [c.commandName for c in failed.commands] == ["cars.cancel", "hotel.cancel", "airline.cancel"]
    assert state.status == "compensating"
    assert sorted((w.step, w.kind) for w in state.waits) == [
        ("undo:book_car", "compensation"), ("undo:book_flight", "compensation"), ("undo:book_hotel", "compensation"),
    ]
    assert state.nextAction == "undo_book_car, undo_book_hotel, undo_book_flight"
    # Confirmations in any order: the instance settles once the last one is in.
    step = procflow.deliver(definition, state, _reply("flight_cancelled"), NOW)
    assert step.commands == [] and step.state.status == "compensating"
    assert [w.step for w in step.state.waits] == ["undo:book_car", "undo:book_hotel"]
    step = procflow.deliver(definition, step.state, _reply("car_cancelled"), NOW)
    step = procflow.deliver(definition, step.state, _reply("room_cancelled"), NOW)
    assert step.state.status == "compensated" and step.state.waits == ()
    assert step.state.compensation is not None
    assert [u.commandName for u in step.state.compensation.undone] == ["airline.cancel", "cars.cancel", "hotel.cancel"]


def test_an_unconfirmed_undo_is_left_listed_and_the_others_go_on() -> None:
    definition = procflow.load(TRIP)
    step = _booked_then_declined(definition)
    step = procflow.deliver(definition, step.state, _reply("flight_cancelled"), NOW)
    step = procflow.deliver(definition, step.state, _reply("room_cancelled"), NOW)
    step = procflow.advance(definition, step.state, NOW + timedelta(hours=1))  # the car rental never answers
    state = step.state
    assert state.status == "compensated"
    assert state.compensation is not None
    assert [u.commandName for u in state.compensation.unconfirmed] == ["cars.cancel"]
    assert state.compensation.pending == () and state.compensation.failed is None
    assert state.to_json()["compensation"]["unconfirmed"][0]["commandName"] == "cars.cancel"
    assert "unconfirmed: cars.cancel" in inspect_text(state, 1)
    # The state's JSON reads back (a store keeps it so).
    assert InstanceState.model_validate(json.loads(json.dumps(state.to_json()))).compensation == state.compensation


def test_run_json_shows_the_unconfirmed_undo() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "procflow", "run", str(TRIP), "--scenario", "car_cancel_unconfirmed", "--json"],
        capture_output=True, text=True, check=True,
    )
    document = json.loads(out.stdout)
    assert [u["commandName"] for u in document["state"]["compensation"]["unconfirmed"]] == ["cars.cancel"]


# The default policy (stop), the hotel's cancellation given longer than the car rental's.
STOPPING = (
    TRIP.read_text(encoding="utf-8")
    .replace("  on undo failure continue\n", "")
    .replace("awaiting room_cancelled within 5m retry 2", "awaiting room_cancelled within 10m retry 2")
)


def test_a_stopped_parallel_undo_awaits_the_others_then_an_operator_resumes_it() -> None:
    definition = procflow.load_text(STOPPING)
    assert definition.undo_failure == "stop"
    step = _booked_then_declined(definition)
    step = procflow.deliver(definition, step.state, _reply("flight_cancelled"), NOW)
    # The car rental's retries run out while the hotel's cancellation is still awaited.
    step = procflow.advance(definition, step.state, NOW + timedelta(minutes=15))
    assert step.state.status == "compensating"
    assert [w.step for w in step.state.waits] == ["undo:book_hotel"]
    assert step.state.compensation is not None and step.state.compensation.failed is not None
    assert sorted(c.commandName for c in step.commands) == ["cars.cancel", "cars.cancel", "hotel.cancel"]  # retries only
    step = procflow.deliver(definition, step.state, _reply("room_cancelled"), NOW + timedelta(minutes=16))
    state = step.state
    assert state.status == "compensation_failed" and state.nextAction == "undo_book_car"
    assert state.compensation is not None and state.compensation.failed is not None
    assert [u.commandName for u in state.compensation.pending] == ["cars.cancel"]
    resumed = procflow.resume(definition, state, NOW + timedelta(hours=1))
    assert [(c.commandName, d.attempt) for c, d in zip(resumed.commands, resumed.dispatches, strict=True)] == [("cars.cancel", 4)]
    done = procflow.deliver(definition, resumed.state, _reply("car_cancelled"), NOW + timedelta(hours=1))
    assert done.state.status == "compensated"


def test_a_refused_undo_is_not_sent_again_and_stops_or_goes_on_as_the_process_says() -> None:
    for text, status in ((TRIP.read_text(encoding="utf-8"), "compensated"), (STOPPING, "compensation_failed")):
        definition = procflow.load_text(text)
        step = _booked_then_declined(definition)
        step = procflow.deliver(definition, step.state, _reply("too_late_to_cancel"), NOW)
        assert step.commands == []  # not sent again: the car rental said it cannot be done
        for reply in ("flight_cancelled", "room_cancelled"):
            step = procflow.deliver(definition, step.state, _reply(reply), NOW)
        assert step.state.status == status and step.state.compensation is not None
        left = step.state.compensation.unconfirmed if status == "compensated" else (step.state.compensation.failed,)
        assert [u.commandName for u in left if u] == ["cars.cancel"]


def test_a_state_compensating_before_the_policy_existed_still_finishes() -> None:
    definition = procflow.load(ROOT / "processes" / "order_fulfillment.proc")
    step = procflow.start(definition, "wf_old", {"orderId": "ord_1", "amount": 10.0, "items": [{"sku": "a", "qty": 1}]}, NOW)
    while step.state.waits and step.state.status != "compensating":
        wait = step.state.waits[0]
        reply = "payment_declined" if "payment" in (wait.commandName or "") else wait.expects[0]
        step = procflow.deliver(definition, step.state, procflow.Reply(type=reply, correlationId=wait.correlationId), NOW)
    record = step.state.to_json()
    assert record["status"] == "compensating"
    # As a store wrote it before `roundStarts` and `unconfirmed` were fields.
    for key in ("roundStarts", "unconfirmed"):
        del record["compensation"][key]
    old = InstanceState.model_validate(migrate_state(record))
    wait = old.waits[0]
    done = procflow.deliver(definition, old, procflow.Reply(type=wait.expects[0], correlationId=wait.correlationId), NOW)
    assert done.state.status == "compensated"


def test_the_undo_policy_prints_back_as_written() -> None:
    text = format_source(parse(TRIP.read_text(encoding="utf-8")))
    assert "\n  on undo failure continue\n" in text and "\n    undo in parallel\n    branch flight {" in text
    assert format_source(parse(text)) == text
    assert procflow.load_text(text).undo_lanes == procflow.load(TRIP).undo_lanes


def _codes(text: str) -> list[str]:
    _, diagnostics = check_source(text, "example.proc")
    return [d.code for d in diagnostics]


POLL = """process poll {
  correlate by input.jobId
  input { jobId: string }
  participant jobs "Jobs"
%s
  repeat watch {
    %s
  } until job.state == "done"
}
"""
ASK = """step check {
      send jobs.status { jobId: input.jobId }
      await job_status as job within 1m
      nothing to undo "a question"
    }"""


def test_an_unbounded_loop_that_always_waits_needs_a_deadline_and_nothing_more() -> None:
    assert _codes(POLL % ("  deadline 1d", ASK)) == []
    assert _codes(POLL % ("", ASK)) == ["E124"]
    # In the deadline handler the deadline has passed: nothing ends the loop.
    handler = "  deadline 1d {\n    repeat again {\n      " + ASK.replace("check", "again_check") + "\n    } until true\n  }"
    assert "E124" in _codes(POLL % (handler, ASK))


def test_an_unbounded_loop_that_may_not_wait_is_refused_even_under_a_deadline() -> None:
    maybe = "if input.jobId == \"x\" {\n      " + ASK + "\n    }"
    assert "E138" in _codes(POLL % ("  deadline 1d", maybe))  # (and E114: `job` may not be bound)
    until_moment = "step pause { wait until input.jobId }"
    assert "E138" in _codes(POLL % ("  deadline 1d", until_moment))
    timer = "step pause { wait 1h }"
    assert "E138" not in _codes(POLL % ("  deadline 1d", timer))


def test_an_unbounded_waiting_loop_runs_until_the_deadline() -> None:
    definition = procflow.load_text((POLL % ("  deadline 1d", ASK)).replace("job_status as job within 1m", "job_status as job within 2h"))
    step = procflow.start(definition, "wf_poll", {"jobId": "j1"}, NOW)
    for hour in range(1, 24):
        step = procflow.deliver(definition, step.state, procflow.Reply(type="job_status", correlationId="j1", data={"state": "running"}),
                                NOW + timedelta(hours=hour))
        assert [c.commandName for c in step.commands] == ["jobs.status"]
    step = procflow.advance(definition, step.state, NOW + timedelta(days=1))
    assert step.state.status == "timed_out"


TWO_IN_A_BRANCH = """process move {
  correlate by input.id
  input { id: string }
  participant p "P"

  parallel work {
    undo in parallel
    branch a {
      step a1 {
        send p.a1 { id: input.id }
        await a1_done within 1m
        compensate p.undo_a1 { id: input.id } awaiting a1_undone within 1m
      }
      step a2 {
        send p.a2 { id: input.id }
        await a2_done within 1m
        compensate p.undo_a2 { id: input.id } awaiting a2_undone within 1m
      }
    }
    branch b {
      step b1 {
        send p.b1 { id: input.id }
        await b1_done within 1m
        compensate p.undo_b1 { id: input.id } awaiting b1_undone within 1m
      }
    }
  }
  step last {
    send p.last { id: input.id }
    await last_done within 1m
    on refused fail "refused"
    nothing to undo "the last step"
  }
}
"""


def test_a_branch_of_several_steps_is_undone_in_reverse_beside_the_other_branches() -> None:
    definition = procflow.load_text(TWO_IN_A_BRANCH)

    def deliver(step: procflow.Transition, kind: str) -> procflow.Transition:
        return procflow.deliver(definition, step.state, procflow.Reply(type=kind, correlationId="x"), NOW)

    step = procflow.start(definition, "wf_move", {"id": "x"}, NOW)
    for reply in ("a1_done", "b1_done", "a2_done"):
        step = deliver(step, reply)
    step = deliver(step, "refused")
    assert [c.commandName for c in step.commands] == ["p.undo_a2", "p.undo_b1"]  # a1 waits for a2, not for b1
    step = deliver(step, "b1_undone")
    assert step.commands == [] and [w.step for w in step.state.waits] == ["undo:a2"]
    step = deliver(step, "a2_undone")
    assert [c.commandName for c in step.commands] == ["p.undo_a1"]
    step = deliver(step, "a1_undone")
    assert step.state.status == "compensated"
    # The saga table says the same: branch `a` in order, beside branch `b` (a path runs the
    # branches one after the other, so `b1` completed last there).
    paths = enumerate_paths(definition)
    refused = paths.by_name("last.refused")
    assert refused.undo_waves == ((("p.undo_b1",), ("p.undo_a2", "p.undo_a1")),)
    assert "p.undo_b1 & (p.undo_a2, p.undo_a1)" in paths_text(paths)
    assert paths_json([refused])[0]["undoneTogether"] == [[["p.undo_b1"], ["p.undo_a2", "p.undo_a1"]]]
    # Undone in reverse (the default), the same path has no `undoneTogether`.
    reverse = procflow.load_text(TWO_IN_A_BRANCH.replace("undo in parallel", "undo in reverse"))
    assert "undoneTogether" not in paths_json([enumerate_paths(reverse).by_name("last.refused")])[0]
