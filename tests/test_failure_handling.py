"""Issue 15, what the scenarios of the samples and the README cannot say: a late success of a
step undone `even on timeout` is not undone twice, a jittered backoff is the same on replay and
within its bounds, a named end shows in the state record, and the new syntax prints back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import procflow
from procflow.dsl.parser import parse
from procflow.dsl.printer import format_source

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

CHARGE = """
process pay {
  correlate by input.orderId
  input { orderId: string }
  participant payment "Payment"

  step charge {
    send payment.charge { orderId: input.orderId }
    await charged within 1m
    on bank_busy retry 2 backoff 10s x2 max 15s jitter then fail "the bank stayed busy"
    on card_declined {
      end "declined"
    }
    compensate payment.refund { orderId: input.orderId } awaiting refunded within 1m even on timeout
  }
}
"""


def _reply(kind: str) -> procflow.Reply:
    return procflow.Reply(type=kind, correlationId="o1")


def test_a_late_success_of_a_step_undone_even_on_timeout_is_not_undone_twice() -> None:
    definition = procflow.load_text(CHARGE)
    step = procflow.start(definition, "wf_late", {"orderId": "o1"}, NOW)
    step = procflow.advance(definition, step.state, NOW + timedelta(minutes=1))
    assert [c.commandName for c in step.commands] == ["payment.refund"]  # the charge may have happened
    step = procflow.deliver(definition, step.state, _reply("refunded"), NOW + timedelta(minutes=1))
    assert step.state.status == "compensated"
    late = procflow.deliver(definition, step.state, _reply("charged"), NOW + timedelta(minutes=2))
    assert late.commands == []  # already refunded: recorded, not refunded again
    assert [(r.type, r.action) for r in late.state.lateReplies] == [("charged", "recorded")]


def test_a_jittered_backoff_is_the_same_on_replay_and_between_half_and_all_of_the_delay() -> None:
    definition = procflow.load_text(CHARGE)
    waits = []
    for _ in range(2):
        step = procflow.start(definition, "wf_jitter", {"orderId": "o1"}, NOW)
        step = procflow.deliver(definition, step.state, _reply("bank_busy"), NOW)
        assert step.commands == [] and step.state.timeoutAt is not None
        waits.append(step.state.timeoutAt)
    assert waits[0] == waits[1]
    delay = (datetime.fromisoformat(waits[0].replace("Z", "+00:00")) - NOW).total_seconds()
    assert 5.0 <= delay <= 10.0
    step = procflow.advance(definition, step.state, NOW + timedelta(seconds=delay))
    assert [c.commandName for c in step.commands] == ["payment.charge"]


def test_a_named_end_completes_with_its_outcome_in_the_state_record() -> None:
    definition = procflow.load_text(CHARGE)
    step = procflow.start(definition, "wf_declined", {"orderId": "o1"}, NOW)
    step = procflow.deliver(definition, step.state, _reply("card_declined"), NOW)
    record = step.state.to_json()
    assert (record["status"], record["outcome"], record["compensation"]) == ("completed", "declined", None)


def test_the_new_syntax_prints_back_as_written() -> None:
    text = """process claim {
  deadline 7d {
    step tell {
      send mail.expired { id: input.id }
      await sent within 1h
      compensate mail.retract awaiting retracted within 1m even on timeout, bounced
    }
    end "expired"
  }

  repeat chase max 3 {
    step ask {
      send mail.ask { id: input.id }
      await answered within 1d
      on bounced as why retry 2 backoff 1m x2 max 5m jitter then {
        fail "no address"
      }
      on timeout {}
    }
  } until steps.ask.reply == "answered" else {
    end "unanswered"
  }
}
"""
    assert format_source(parse(text, "claim.proc")) == text
