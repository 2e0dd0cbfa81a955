"""Issue 17, must show 3: the outcome of an instance depends on the messages it got and when,
not on how often a worker fired its timers. The same messages, delivered at the same moments,
give the same outcome whether the worker ticked every second, once an hour, or never: what
was due fires before a message is applied (`engine.deliver`), and each timer fires at the
moment it was due (`engine.advance`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import procflow
from procflow.errors import MessageRefused
from procflow.interpreter import engine
from procflow.interpreter.memory_store import InMemoryStore
from procflow.interpreter.orchestrator import InProcessTransport, Orchestrator
from procflow.interpreter.state import InstanceState

ORDER = procflow.load("processes/order_fulfillment.proc")
T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)
HORIZON = 3 * 3600
"""Messages arrive within three hours: past every timer of the order process but the shipment's day."""

REPLIES = (
    "inventory_reserved", "inventory_unavailable", "inventory_released",
    "payment_authorized", "payment_declined", "payment_voided",
    "shipment_created", "shipment_rejected",
)
# Moments next to the order process's own: reserve within 30s, backoff 5s, 2 retries (fails at
# 100s); payment within 1h; an undo within 1m, 3 retries.
NEAR_TIMERS = (0, 1, 29, 30, 31, 34, 35, 36, 64, 65, 66, 99, 100, 101, 160, 3599, 3600, 3601, 3630, 3660, 3661, 3900)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


Message = tuple[float, str, str | None]
"""(seconds after the start, reply type, messageId)."""


@st.composite
def histories(draw: st.DrawFn) -> list[Message]:
    count = draw(st.integers(0, 8))
    moments = [
        draw(st.one_of(st.sampled_from(NEAR_TIMERS), st.integers(0, HORIZON), st.floats(0, HORIZON).map(lambda s: round(s, 3))))
        for _ in range(count)
    ]
    found: list[Message] = []
    for number, moment in enumerate(sorted(moments)):
        reply = draw(st.sampled_from(REPLIES))
        message_id = draw(st.sampled_from([None, f"m{number}", "m0"]))  # "m0" again: a duplicate (or a reused id)
        found.append((float(moment), reply, message_id))
    return found


def _run(messages: list[Message], every: float | None) -> dict[str, Any]:
    """Start the instance, deliver the messages at their moments, and tick every `every`
    seconds in between (never when None); then tell what came of it."""
    clock = Clock()
    transport = InProcessTransport({})  # nobody answers by itself: only the drawn messages arrive
    orchestrator = Orchestrator(ORDER, store=InMemoryStore(), transport=transport, clock=clock)
    orchestrator.start("wf_1", {"orderId": "ord_1", "amount": 10.0})
    outcomes: list[str] = []
    ticked = 0.0
    for at, reply, message_id in messages:
        if every is not None:
            while ticked + every <= at:
                ticked += every
                clock.now = T0 + timedelta(seconds=ticked)
                orchestrator.tick(clock.now)
        clock.now = T0 + timedelta(seconds=at)
        try:
            outcomes.append(orchestrator.receive({"type": reply, "correlationId": "ord_1", "messageId": message_id}).outcome)
        except MessageRefused:
            outcomes.append("refused")
    end = T0 + timedelta(seconds=messages[-1][0] if messages else 0)
    state = orchestrator.state("wf_1")
    # What the instance has decided by the end: timers due by then fire, as the next tick would.
    settled = engine.advance(ORDER, state, end)
    sent = [d.dedupKey for d in transport.sent] + [d.dedupKey for d in settled.dispatches]
    return {"outcomes": outcomes, "sent": sent, **_decided(settled.state)}


def _decided(state: InstanceState) -> dict[str, Any]:
    return {
        "status": state.status,
        "completedSteps": list(state.completedSteps),
        "completed": [(c.step, c.outcome, c.at) for c in state.completed],
        "failure": state.failure.model_dump() if state.failure else None,
        "lateReplies": [(r.type, r.step, r.action, r.at) for r in state.lateReplies],
        "compensation": state.compensation.model_dump() if state.compensation else None,
        "waits": [(w.step, w.kind, w.attempt, w.timeoutAt) for w in state.waits],
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=histories())
@example(messages=[(3605.0, "payment_authorized", "m-late")])  # the issue's: after the hour, no tick between
@example(messages=[(0.0, "inventory_reserved", "m0"), (3605.0, "payment_authorized", "m1")])
@example(messages=[(0.0, "inventory_reserved", None), (3601.0, "payment_authorized", None), (3700.0, "inventory_released", None)])
def test_the_same_messages_give_the_same_outcome_however_often_the_worker_ticks(messages: list[Message]) -> None:
    never = _run(messages, None)
    assert _run(messages, 3600.0) == never  # once an hour
    assert _run(messages, 1.0) == never  # every second


def test_a_late_reply_is_late_with_or_without_a_tick() -> None:
    messages: list[Message] = [(0.0, "inventory_reserved", "m0"), (3605.0, "payment_authorized", "m1")]
    for every in (None, 3600.0, 1.0):
        result = _run(messages, every)
        assert result["outcomes"] == ["applied", "late"], every
        assert result["status"] == "compensating" and result["failure"]["reason"] == "authorize_payment timed out"
        assert "payment_authorized" not in result["completedSteps"]
