"""The engine's contract: purity, refusals that say why, schemas, operator resume."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import pytest

import procflow
from procflow.interpreter.messages import Command, Reply
from procflow.interpreter.simulate import check_scenario, simulate
from procflow.interpreter.state import InstanceState

ROOT = Path(__file__).resolve().parent.parent
ORDER = procflow.load(ROOT / "processes" / "order_fulfillment.proc")
NOW = datetime(2026, 3, 23, 16, 0, tzinfo=UTC)
INPUT = {"orderId": "ord_441", "amount": 180.0}


def waiting_for_payment() -> InstanceState:
    first = procflow.start(ORDER, "wf_401", INPUT, NOW)
    return procflow.deliver(ORDER, first.state, Reply(type="inventory_reserved", correlationId="ord_441"), NOW).state


def test_same_inputs_same_history() -> None:
    a = waiting_for_payment()
    b = waiting_for_payment()
    assert a == b
    assert a.model_dump_json() == b.model_dump_json()


def test_the_state_given_is_never_changed() -> None:
    state = waiting_for_payment()
    before = state.model_dump_json()
    procflow.deliver(ORDER, state, Reply(type="payment_declined", correlationId="ord_441"), NOW)
    procflow.advance(ORDER, state, NOW + timedelta(days=3))
    assert state.model_dump_json() == before


def test_unknown_correlation_is_refused_with_instance_step_and_expectation() -> None:
    state = waiting_for_payment()
    with pytest.raises(procflow.MessageRefused) as refused:
        procflow.deliver(ORDER, state, Reply(type="payment_authorized", correlationId="ord_999"), NOW)
    assert str(refused.value) == (
        "instance wf_401 (order-fulfillment) correlates by ord_441, not `ord_999`; "
        "step `authorize_payment` waits for `payment_authorized` or `payment_declined`"
    )


def test_unexpected_type_is_refused_with_what_was_expected() -> None:
    state = waiting_for_payment()
    with pytest.raises(procflow.MessageRefused) as refused:
        procflow.deliver(ORDER, state, Reply(type="shipment_created", correlationId="ord_441"), NOW)
    assert str(refused.value) == (
        "instance wf_401 (order-fulfillment, waiting_for_payment) does not expect `shipment_created`: "
        "step `authorize_payment` waits for `payment_authorized` or `payment_declined`"
    )
    assert refused.value.step == "authorize_payment"


def test_invalid_payload_is_refused_and_the_state_is_untouched() -> None:
    text = (ROOT / "processes" / "order_fulfillment.proc").read_text(encoding="utf-8")
    text = text.replace('participant payment   "Payment"', 'participant payment "Payment" { reply payment_authorized { authorizationId: string } }')
    definition = procflow.load_text(text)
    first = procflow.start(definition, "wf_401", INPUT, NOW)
    state = procflow.deliver(definition, first.state, Reply(type="inventory_reserved", correlationId="ord_441"), NOW).state
    with pytest.raises(procflow.MessageRefused) as refused:
        procflow.deliver(definition, state, Reply(type="payment_authorized", correlationId="ord_441", data={"authorizationId": 7}), NOW)
    assert str(refused.value) == (
        "instance wf_401: the payload of `payment_authorized` for step `authorize_payment` breaks its declared schema: "
        "7 is not of type \"string\" (at `authorizationId`)"
    )
    accepted = procflow.deliver(definition, state, Reply(type="payment_authorized", correlationId="ord_441", data={"authorizationId": "a1"}), NOW)
    assert accepted.state.status == "waiting_for_shipping"


def test_a_reply_for_another_instance_is_refused() -> None:
    state = waiting_for_payment()
    with pytest.raises(procflow.MessageRefused, match="addressed to instance wf_999, not wf_401"):
        procflow.deliver(ORDER, state, Reply(type="payment_authorized", correlationId="ord_441", workflowId="wf_999"), NOW)


def test_duplicate_message_id_changes_nothing() -> None:
    state = waiting_for_payment()
    reply = Reply(type="payment_authorized", correlationId="ord_441", messageId="m-1")
    once = procflow.deliver(ORDER, state, reply, NOW)
    twice = procflow.deliver(ORDER, once.state, reply, NOW)
    assert twice.outcome == "duplicate" and twice.state is once.state and twice.dispatches == []


def test_a_changed_definition_is_refused() -> None:
    state = waiting_for_payment()
    changed = procflow.load_text((ROOT / "processes" / "order_fulfillment.proc").read_text(encoding="utf-8").replace("within 1h", "within 2h"))
    with pytest.raises(procflow.MessageRefused, match="Run it with the definition it started with"):
        procflow.deliver(changed, state, Reply(type="payment_authorized", correlationId="ord_441"), NOW)


def test_operator_resumes_a_failed_compensation() -> None:
    stuck = simulate(ORDER, workflow_id="wf_1", scenario="void_never_confirmed")
    state = stuck.state
    assert state.status == "compensation_failed"
    assert state.nextAction == "undo_authorize_payment"
    assert state.compensation is not None
    assert [u.commandName for u in state.compensation.pending] == ["payment.void", "inventory.release"]
    later = datetime(2026, 1, 2, tzinfo=UTC)
    resumed = procflow.resume(ORDER, state, later)
    assert resumed.state.status == "compensating"
    assert [c.commandName for c in resumed.commands] == ["payment.void"]
    voided = procflow.deliver(ORDER, resumed.state, Reply(type="payment_voided", correlationId="ord_451"), later)
    assert [c.commandName for c in voided.commands] == ["inventory.release"]
    done = procflow.deliver(ORDER, voided.state, Reply(type="inventory_released", correlationId="ord_451"), later)
    assert done.state.status == "compensated"
    assert done.state.history[-1].undone == ("inventory.release",)


def test_schemas_validate_what_the_scenarios_exchange() -> None:
    command_schema = Command.model_json_schema()
    reply_schema = Reply.model_json_schema()
    state_schema = InstanceState.model_json_schema()
    for scenario in ORDER.scenarios:
        outcome = check_scenario(ORDER, scenario)
        assert outcome.passed, outcome.differences
        assert outcome.result is not None
        jsonschema.validate(outcome.result.state.to_json(), state_schema)
        for dispatch in outcome.result.dispatches:
            jsonschema.validate(dispatch.command.model_dump(mode="json"), command_schema)
        for entry in outcome.result.state.history:
            if entry.message:
                jsonschema.validate(entry.message, reply_schema)


def test_history_says_what_came_in_what_changed_and_what_was_sent() -> None:
    state = waiting_for_payment()
    entry = state.history[-1]
    assert entry.event == "reply"
    assert entry.message == {"type": "inventory_reserved", "correlationId": "ord_441"}
    assert (entry.status, entry.completedSteps, entry.failure, entry.undone) == ("waiting_for_payment", ("inventory_reserved",), None, ())
    assert state.history[-2].status == "waiting_for_inventory"  # the status this entry left
    assert entry.sent == ("payment.authorize#1",)
