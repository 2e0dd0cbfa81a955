"""`first of` (issue 16, item 2) and replies per round of a loop (item 6): what a user relies on.

The first branch to finish wins; the others are cancelled (their waits dropped, a command
still awaited abandoned, so a late reply is late, not applied) and what they completed is
undone, most recent first, before the winner goes on; `name.winner` names the winner.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import procflow
from procflow.dsl.formatter import format_text
from procflow.dsl.paths import enumerate_paths
from procflow.dsl.validate import check_source
from procflow.errors import MessageRefused
from procflow.interpreter.simulate import check_scenario, simulate
from procflow.interpreter.state import SCHEMA_VERSION, InstanceState, migrate_state

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 3, 23, 16, 0, tzinfo=UTC)

RACE_OF_SUPPLIERS = """
process suppliers {
  correlate by input.id
  input { id: string }
  participant a "A"
  participant b "B"
  participant shop "Shop"

  first of quotes {
    branch a {
      step ask_a {
        send a.quote { id: input.id }
        await a_quoted as offer_a
        compensate a.withdraw { id: input.id } awaiting a_withdrawn within 1m retry 1
      }
    }
    branch b {
      step reserve_b {
        send b.reserve { id: input.id }
        await b_reserved
        compensate b.release { id: input.id } awaiting b_released within 1m retry 1
      }
      step pack_b {
        send b.pack { id: input.id }
        await b_packed
        compensate b.unpack { id: input.id } awaiting b_unpacked within 1m retry 1
      }
      step ask_b {
        send b.quote { id: input.id }
        await b_quoted
        compensate b.withdraw { id: input.id } awaiting b_withdrawn within 1m retry 1
      }
    }
    branch late {
      step give_up {
        wait 1h
      }
    }
  }

  step buy {
    send shop.buy { id: input.id, from: quotes.winner }
    await bought within 1m
  }
}
"""


def _reply(state: InstanceState, kind: str, at: datetime) -> procflow.Transition:
    return procflow.deliver(DEFINITION, state, procflow.Reply(type=kind, correlationId="x1", messageId=f"m-{kind}-{at.isoformat()}"), at)


DEFINITION = procflow.load_text(RACE_OF_SUPPLIERS, "suppliers.proc")


def _b_has_packed_then_a_wins() -> tuple[InstanceState, list[str]]:
    started = procflow.start(DEFINITION, "wf_1", {"id": "x1"}, NOW)
    state, sent = started.state, [c.commandName for c in started.commands]
    for kind in ("b_reserved", "b_packed", "a_quoted"):
        moved = _reply(state, kind, NOW + timedelta(seconds=1))
        state = moved.state
        sent += [c.commandName for c in moved.commands]
    return state, sent


def test_the_first_branch_to_finish_wins_and_the_losers_are_undone_most_recent_first() -> None:
    state, sent = _b_has_packed_then_a_wins()
    # B had reserved, then packed: unpack first, then release; B's quote request is abandoned.
    assert sent == ["a.quote", "b.reserve", "b.pack", "b.quote", "b.unpack"]
    assert state.status == "cancelling_quotes" and state.nextAction == "undo:pack_b"
    assert [w.kind for w in state.waits] == ["cancel"]  # the timer of `late` and B's quote wait are gone
    assert [a.step for a in state.abandoned] == ["ask_b"]
    state = _reply(state, "b_unpacked", NOW + timedelta(seconds=2)).state
    assert state.nextAction == "undo:reserve_b"
    moved = _reply(state, "b_released", NOW + timedelta(seconds=3))
    # Only now does the winner go on, knowing it won.
    assert [c.commandName for c in moved.commands] == ["shop.buy"]
    assert moved.commands[0].data == {"id": "x1", "from": "a"}
    assert moved.state.data["quotes"] == {"winner": "a"}
    cancel = moved.state.cancels[0]
    assert (cancel.block, cancel.winner, [u.step for u in cancel.undone], cancel.pending) == ("quotes", "a", ["pack_b", "reserve_b"], ())
    done = _reply(moved.state, "bought", NOW + timedelta(seconds=4)).state
    assert done.status == "completed"


def test_a_late_reply_to_a_loser_is_late_not_applied() -> None:
    state, _ = _b_has_packed_then_a_wins()
    late = _reply(state, "b_quoted", NOW + timedelta(seconds=5))
    assert late.outcome == "late"
    assert [(r.type, r.step, r.action) for r in late.state.lateReplies] == [("b_quoted", "ask_b", "compensated")]
    assert "b_quoted" not in late.state.completedSteps


def test_a_failure_while_the_losers_are_undone_compensates_the_rest_and_undoes_nothing_twice() -> None:
    state, _ = _b_has_packed_then_a_wins()
    # B never confirms the unpack: two tries (a retry), then the instance fails.
    failed = procflow.advance(DEFINITION, state, NOW + timedelta(minutes=5))
    sent = [(d.command.commandName, d.attempt) for d in failed.dispatches]
    assert failed.state.failure is not None and "which lost `first of quotes`" in failed.state.failure.reason
    # The unpack goes on with attempt 3 (not 1 again: a new dedup key), then the release, then A's withdraw.
    assert sent[:2] == [("b.unpack", 2), ("b.unpack", 3)]
    comp = failed.state.compensation
    assert comp is not None and [u.step for u in comp.pending] == ["pack_b", "reserve_b", "ask_a"]


def test_the_losers_completed_nothing_the_winner_goes_on_at_once() -> None:
    started = procflow.start(DEFINITION, "wf_2", {"id": "x1"}, NOW)
    moved = _reply(started.state, "a_quoted", NOW)
    assert [c.commandName for c in moved.commands] == ["shop.buy"]
    assert moved.state.status == "waiting_for_shop"


def test_a_branch_that_only_waits_bounds_the_block() -> None:
    started = procflow.start(DEFINITION, "wf_3", {"id": "x1"}, NOW)
    timed = procflow.advance(DEFINITION, started.state, NOW + timedelta(hours=1))
    assert timed.state.data["quotes"] == {"winner": "late"}
    assert [c.commandName for c in timed.commands] == ["shop.buy"]
    with pytest.raises(MessageRefused):  # B never packed: nobody can take that reply
        procflow.deliver(DEFINITION, timed.state, procflow.Reply(type="b_packed", correlationId="x1"), NOW + timedelta(hours=1))
    late = procflow.deliver(DEFINITION, timed.state, procflow.Reply(type="b_reserved", correlationId="x1"), NOW + timedelta(hours=1))
    assert late.outcome == "late" and [c.commandName for c in late.commands] == ["b.release"]


def test_first_of_inside_a_loop_is_won_anew_each_round() -> None:
    text = """
process rounds {
  correlate by input.id
  input { id: string }
  participant a "A"
  participant b "B"
  repeat tries max 2 {
    first of pick {
      branch a {
        step ask_a {
          send a.ask { id: input.id }
          await a_said within 1h
          compensate a.undo { id: input.id } awaiting a_undone within 1m
        }
      }
      branch b {
        step ask_b {
          send b.ask { id: input.id }
          await b_said within 1h
          compensate b.undo { id: input.id } awaiting b_undone within 1m
        }
      }
    }
  } until pick.winner == "b"
}
scenario a_then_b "A answers first in round 1, B first in round 2; each loser's late answer is undone" {
  input { id: "r1" }
  when b.ask reply b_said after 1m
  when b.ask round 2 reply b_said
  when a.ask round 2 reply a_said after 1m
  expect status completed
  expect commands [a.ask, b.ask, a.ask, b.ask, b.undo, a.undo]
  expect compensation [b.undo, a.undo]
}
"""
    definition = procflow.load_text(text, "rounds.proc", scenarios=True)
    outcome = check_scenario(definition, definition.scenarios[0])
    assert outcome.passed, outcome.differences
    result = simulate(definition, workflow_id="wf_r", scenario="a_then_b")
    assert [(r.type, r.step, r.action) for r in result.state.lateReplies] == [("b_said", "ask_b", "compensated"), ("a_said", "ask_a", "compensated")]
    assert result.state.data["pick"] == {"winner": "b"}


def test_per_round_replies_pick_the_round_of_the_loop_around_the_step() -> None:
    text = """
process pay {
  correlate by input.orderId
  input { orderId: string }
  participant payment "Payment"
  repeat charging max 3 {
    step charge {
      send payment.charge { orderId: input.orderId }
      await charged, declined within 1m
      nothing to undo "a declined charge takes nothing"
    }
  } until steps.charge.reply == "charged" else {
    fail "declined three times"
  }
}
scenario third "Declined twice, charged in the third round; a lost reply in round 3 is resent" {
  input { orderId: "o1" }
  when payment.charge reply declined
  when payment.charge round 3 attempt 1 no reply
  when payment.charge round 3 reply charged
  expect status failed
}
"""
    definition = procflow.load_text(text, "pay.proc", scenarios=True)
    result = simulate(definition, workflow_id="wf_p", scenario="third")
    # Round 3's first send is lost, so the step times out (no retry): the most precise line wins.
    assert list(result.state.completedSteps) == ["declined", "declined"]
    assert result.command_names == ["payment.charge"] * 3
    assert result.state.failure is not None and result.state.failure.reason == "charge timed out"


def test_per_round_replies_are_checked() -> None:
    _, diagnostics = check_source(
        (ROOT / "processes" / "order_fulfillment.proc").read_text(encoding="utf-8").split("\nscenario ")[0]
        + '\nscenario s {\n  when payment.authorize round 2 reply payment_authorized\n}\n',
        "example.proc",
    )
    assert [(d.code, d.message) for d in diagnostics if d.is_error] == [
        ("E182", "`payment.authorize` is sent in no `repeat`: it has no round 2")
    ]


def test_first_of_prints_back_as_written_and_its_paths_list_a_winner_each() -> None:
    assert format_text(RACE_OF_SUPPLIERS, "suppliers.proc").strip() == RACE_OF_SUPPLIERS.strip()
    paths = enumerate_paths(DEFINITION)
    assert [p.name for p in paths if p.completed] == ["happy", "quotes: b first", "quotes: late first"]
    happy = paths.by_name("happy")
    # A won: what B may have done is undone, most recent first.
    assert happy.compensation == ["b.withdraw", "b.unpack", "b.release"]
    assert paths.by_name("quotes: b first").compensation == ["a.withdraw"]


def test_a_state_of_schema_version_2_reads_and_finishes() -> None:
    order = procflow.load(ROOT / "processes" / "order_fulfillment.proc")
    state = procflow.start(order, "wf_v2", {"orderId": "o9", "amount": 5.0}, NOW).state.to_json()
    old = {key: value for key, value in state.items() if key != "cancels"} | {"schemaVersion": 2}
    read = InstanceState.model_validate(migrate_state(json.loads(json.dumps(old))))
    assert read.schemaVersion == SCHEMA_VERSION and read.cancels == ()
    done = procflow.deliver(order, read, procflow.Reply(type="inventory_reserved", correlationId="o9"), NOW)
    assert done.state.status == "waiting_for_payment"


def test_a_first_of_inside_a_parallel_branch_leaves_the_parallel_block_joining() -> None:
    text = """
process nested {
  correlate by input.id
  input { id: string }
  participant a "A"
  participant b "B"
  participant c "C"
  parallel both {
    branch quotes {
      first of pick {
        branch a {
          step ask_a {
            send a.ask { id: input.id }
            await a_said within 1h
            compensate a.undo { id: input.id } awaiting a_undone within 1m
          }
        }
        branch b {
          step hold_b {
            send b.hold { id: input.id }
            await b_held within 1h
            compensate b.release { id: input.id } awaiting b_released within 1m
          }
          step ask_b {
            send b.ask { id: input.id }
            await b_said within 1h
          }
        }
      }
    }
    branch check {
      step check_c {
        send c.check { id: input.id }
        await c_checked within 1h
      }
    }
  }
}
scenario check_then_a_wins "The check is done first; then A wins, B's hold is released, and the parallel block joins" {
  input { id: "n1" }
  when a.ask reply a_said after 10m
  when b.ask no reply
  expect status completed
  expect commands [c.check, a.ask, b.hold, b.ask, b.release]
  expect compensation [b.release]
}
"""
    definition = procflow.load_text(text, "nested.proc", scenarios=True)
    outcome = check_scenario(definition, definition.scenarios[0])
    assert outcome.passed, outcome.differences


def test_a_loser_s_own_parallel_block_is_forgotten_with_it() -> None:
    text = """
process inner {
  correlate by input.id
  input { id: string }
  participant a "A"
  participant b "B"
  first of pick {
    branch a {
      step ask_a {
        send a.ask { id: input.id }
        await a_said within 1h
      }
    }
    branch b {
      parallel checks {
        branch one {
          step check_one {
            send b.one { id: input.id }
            await one_done within 1h
          }
        }
        branch two {
          step check_two {
            send b.two { id: input.id }
            await two_done within 1h
          }
        }
      }
    }
  }
  step confirm {
    send a.confirm { id: input.id }
    await confirmed within 1h
  }
}
"""
    definition = procflow.load_text(text, "inner.proc")
    state = procflow.start(definition, "wf_i", {"id": "i1"}, NOW).state
    state = procflow.deliver(definition, state, procflow.Reply(type="one_done", correlationId="i1"), NOW).state
    assert len(state.joins) == 2  # the first of, and the loser's parallel block with one branch in
    won = procflow.deliver(definition, state, procflow.Reply(type="a_said", correlationId="i1"), NOW).state
    assert won.status == "waiting_for_a" and won.joins == {} and [w.step for w in won.waits] == ["confirm"]


def test_a_first_of_won_on_a_durable_store_undoes_each_loser_step_once(tmp_path: Path) -> None:
    # The store keeps completions out of the instance row: the win reads them back whole, and
    # a failure after it must not undo the losers again (the completions are never rewritten).
    from procflow.interpreter.orchestrator import InProcessTransport, Orchestrator
    from procflow.interpreter.stores import open_store

    clock = [NOW]
    transport = InProcessTransport({})
    orchestrator = Orchestrator(DEFINITION, store=open_store(tmp_path / "s.db"), transport=transport, clock=lambda: clock[0])
    orchestrator.start("wf_d", {"id": "x1"})
    for kind in ("b_reserved", "b_packed", "a_quoted", "b_unpacked", "b_released"):
        orchestrator.receive({"type": kind, "correlationId": "x1", "messageId": f"m-{kind}"})
    clock[0] = NOW + timedelta(seconds=90)
    orchestrator.tick(clock[0])  # shop.buy never answers: the instance fails and compensates
    for kind in ("a_withdrawn",):
        orchestrator.receive({"type": kind, "correlationId": "x1", "messageId": f"m-{kind}"})
    undos = [d.command.commandName for d in transport.sent if d.step.startswith("undo:")]
    assert undos == ["b.unpack", "b.release", "a.withdraw"]
    assert orchestrator.state("wf_d").status == "compensated"
