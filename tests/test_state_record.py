"""The state record as a value: what is shared between states is never changed, a working
copy starts with every field, each field holds one type, and states of schema version 1 still read."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import procflow
from procflow.interpreter.messages import Command, Dispatch, Reply
from procflow.interpreter.state import (
    EMPTY,
    LOG_FROM,
    SCHEMA_VERSION,
    Completion,
    HistoryEntry,
    InstanceState,
    Log,
    UndoCommand,
    Wait,
    appended,
    migrate_history_entry,
    migrate_state,
    shell,
)

ROOT = Path(__file__).resolve().parent.parent
ORDER = procflow.load(ROOT / "processes" / "order_fulfillment.proc")
NOW = datetime(2026, 3, 23, 16, 0, tzinfo=UTC)
NOW_TEXT = "2026-03-23T16:00:00Z"


def waiting_for_payment() -> InstanceState:
    """The instance the committed state record (`procflow run ... --stop-at authorize_payment`) shows."""
    first = procflow.start(ORDER, "wf_401", {"orderId": "ord_441", "amount": 180.0}, NOW)
    reply = Reply(type="inventory_reserved", correlationId="ord_441", messageId="ord_441:inventory.reserve:reserve_inventory#1:inventory_reserved")
    return procflow.deliver(ORDER, first.state, reply, NOW).state


def test_the_shared_empty_mapping_refuses_changes() -> None:
    state = procflow.start(ORDER, "wf_1", {"orderId": "ord_1", "amount": 1.0}, NOW).state
    assert state.data is EMPTY and state.frames is EMPTY and state.joins is EMPTY
    with pytest.raises(TypeError):
        state.data["x"] = 1
    with pytest.raises(TypeError):
        EMPTY.update({"x": 1})
    assert EMPTY == {}


def test_instances_share_what_does_not_change_and_nothing_else() -> None:
    a = procflow.start(ORDER, "wf_1", {"orderId": "ord_1", "amount": 1.0}, NOW).state
    b = procflow.start(ORDER, "wf_2", {"orderId": "ord_2", "amount": 2.0}, NOW).state
    assert a.definition is b.definition and a.tokens is b.tokens  # the same values
    assert a.waits[0] is not b.waits[0] and a.history[0] is not b.history[0]
    moved = procflow.deliver(ORDER, a, Reply(type="inventory_reserved", correlationId="ord_1"), NOW).state
    assert moved.tokens[0].node == "authorize_payment" and a.tokens[0].node == b.tokens[0].node == "reserve_inventory"


def test_a_working_copy_starts_with_every_field() -> None:
    state = waiting_for_payment()
    copy = shell(state)
    assert copy == state and copy is not state
    # Every field, the very same value (`shell` names each field: none may be left out).
    assert all(getattr(copy, f.name) is getattr(state, f.name) for f in dataclasses.fields(InstanceState))
    # Not only the defaults: a state with a value of its own in every field is copied whole.
    own = {f.name: object() for f in dataclasses.fields(InstanceState)}
    full = InstanceState(**own)  # type: ignore[arg-type]
    assert all(getattr(shell(full), name) is value for name, value in own.items())


def test_the_records_built_in_place_have_every_field() -> None:
    first = procflow.start(ORDER, "wf_1", {"orderId": "ord_1", "amount": 1.0}, NOW)
    moved = procflow.deliver(ORDER, first.state, Reply(type="inventory_reserved", correlationId="ord_1"), NOW)
    records = [*moved.state.waits, *moved.state.history, *moved.state.completed]
    records += [d for t in (first, moved) for d in t.dispatches] + [c for t in (first, moved) for c in t.commands]
    for record in records:
        assert all(hasattr(record, f.name) for f in dataclasses.fields(record)), record


def test_the_records_the_engine_builds_hold_each_value_in_its_field() -> None:
    # The engine builds these records with their fields in order: each must land where it belongs.
    state = waiting_for_payment()
    state = procflow.deliver(ORDER, state, Reply(type="payment_authorized", correlationId="ord_441"), NOW).state
    late = NOW + timedelta(minutes=5)
    rejected = Reply(type="shipment_rejected", correlationId="ord_441", messageId="m-9", data={"why": "no"})
    state = procflow.deliver(ORDER, state, rejected, late).state
    state = procflow.deliver(ORDER, state, Reply(type="payment_voided", correlationId="ord_441"), late).state
    assert state.history[-2] == HistoryEntry(
        seq=4, at="2026-03-23T16:05:00Z", event="reply",
        message={"type": "shipment_rejected", "correlationId": "ord_441", "messageId": "m-9", "data": {"why": "no"}},
        status="compensating", completedSteps=(), failure="shipping refused the order", undone=(), sent=("payment.void#1",), note=None,
    )
    assert state.history[-1] == HistoryEntry(
        seq=5, at="2026-03-23T16:05:00Z", event="reply", message={"type": "payment_voided", "correlationId": "ord_441"},
        status=None, completedSteps=(), failure=None, undone=("payment.void",), sent=("inventory.release#1",), note=None,
    )
    undo = UndoCommand(
        step="authorize_payment", frame="main", process="order-fulfillment", commandName="payment.void",
        correlationId="ord_441", data={"orderId": "ord_441"}, round="",
    )
    assert state.completed[1] == Completion(step="authorize_payment", frame="main", outcome="payment_authorized", at=NOW_TEXT, undo=undo)
    started = procflow.start(ORDER, "wf_3", {"orderId": "o3", "amount": 2.5}, NOW)
    assert started.state.waits == (
        Wait(
            token=1, step="reserve_inventory", node="reserve_inventory", frame="main", kind="reply",
            expects=("inventory_reserved", "inventory_unavailable"), correlationId="o3", commandName="inventory.reserve",
            attempt=1, since=NOW_TEXT, timeoutAt="2026-03-23T16:00:30Z",
        ),
    )
    sent = started.dispatches
    command = Command(
        commandName="inventory.reserve", workflowId="wf_3", correlationId="o3", replyTo="workflow-replies", data={"orderId": "o3"}
    )
    assert sent == [Dispatch(command=command, step="reserve_inventory", attempt=1, dedupKey="o3:inventory.reserve:reserve_inventory#1")]
    timed_out = procflow.advance(ORDER, procflow.start(ORDER, "wf_2", {"orderId": "o2", "amount": 1.0}, NOW).state, NOW + timedelta(seconds=31)).state
    assert timed_out.history[-1].note == "`reserve_inventory` got no reply in time (attempt 1)"
    assert timed_out.history[-1].status is None and timed_out.history[-1].completedSteps == ()


def test_a_state_of_schema_version_1_reads_as_the_current_one() -> None:
    old = json.loads((ROOT / "tests" / "cases" / "state_v1_waiting.json").read_text(encoding="utf-8"))
    assert old["schemaVersion"] == 1 and "main" in old["frames"]
    migrated = InstanceState.model_validate(migrate_state(old))
    assert migrated.schemaVersion == SCHEMA_VERSION
    current = waiting_for_payment()
    assert migrated == current  # the same instance as the engine writes it now
    assert [(e.status, e.completedSteps, e.sent) for e in migrated.history] == [
        ("waiting_for_inventory", (), ("inventory.reserve#1",)),
        ("waiting_for_payment", ("inventory_reserved",), ("payment.authorize#1",)),
    ]
    assert migrate_state(migrated.to_json()) == migrated.to_json()  # the current version is left as it is
    entry = {"seq": 3, "at": "x", "event": "reply", "changes": {"failure": "no", "undone": ["a.b"]}, "sent": []}
    assert migrate_history_entry(entry) == {"seq": 3, "at": "x", "event": "reply", "failure": "no", "undone": ["a.b"], "sent": []}


def test_a_state_of_schema_version_2_reads_as_the_current_one_and_finishes() -> None:
    # Version 3 added for-each runs (`each`, a frame's `forEach` and `item`); a version 2
    # state has none, and goes on as it would have.
    old = json.loads((ROOT / "tests" / "cases" / "state_v2_waiting.json").read_text(encoding="utf-8"))
    assert old["schemaVersion"] == 2 and "each" not in old
    migrated = InstanceState.model_validate(migrate_state(old))
    assert migrated.schemaVersion == SCHEMA_VERSION and migrated.each == {}
    state = procflow.deliver(ORDER, migrated, Reply(type="payment_authorized", correlationId="ord_441"), NOW).state
    state = procflow.deliver(ORDER, state, Reply(type="shipment_created", correlationId="ord_441"), NOW).state
    assert state.status == "completed"
    assert list(state.completedSteps) == ["inventory_reserved", "payment_authorized", "shipment_created"]


def _linear(steps: int) -> procflow.ProcessDefinition:
    lines = ["process linear {", "  participant worker"]
    lines += [f"  step s{i} {{ send worker.do_{i} await done_{i} within 1d }}" for i in range(steps)]
    return procflow.load_text("\n".join([*lines, "}"]) + "\n")


def test_long_sequences_are_logs_that_read_and_compare_as_tuples() -> None:
    log = Log(["a", "b", "c", "extra"], 3)
    assert len(log) == 3 and list(log) == ["a", "b", "c"] and log[-1] == "c" and log[1:] == ("b", "c")
    assert log == ("a", "b", "c") and ("a", "b", "c") == log and log != ("a", "b") and log != ["a", "b", "c"]
    assert repr(log) == "('a', 'b', 'c')"
    with pytest.raises(IndexError):
        log[3]
    assert appended(log, "d") == ("a", "b", "c", "d") and log == ("a", "b", "c")  # another list: this one was longer
    short = appended((), "x")
    assert isinstance(short, tuple) and not isinstance(appended(tuple(range(LOG_FROM - 1)), 1), tuple)


def test_a_step_does_not_copy_the_history_and_branches_stay_apart() -> None:
    definition = _linear(3 * LOG_FROM)
    state = procflow.start(definition, "wf_1", {}, NOW).state
    for i in range(2 * LOG_FROM):
        state = procflow.deliver(definition, state, Reply(type=f"done_{i}", correlationId="wf_1"), NOW).state
    assert isinstance(state.history, Log) and isinstance(state.completed, Log) and isinstance(state.completedSteps, Log)
    before = state.model_dump_json()
    # Two transitions from the same state: each sees its own next entry, the state given is unchanged.
    reply = Reply(type=f"done_{2 * LOG_FROM}", correlationId="wf_1")
    once = procflow.deliver(definition, state, reply, NOW).state
    again = procflow.deliver(definition, state, reply, NOW + timedelta(seconds=1)).state
    assert state.model_dump_json() == before and len(state.history) == 2 * LOG_FROM + 1
    assert once.history[-1].at != again.history[-1].at and once.history[:-1] == again.history[:-1] == state.history
    assert once.completedSteps[-1] == again.completedSteps[-1] == f"done_{2 * LOG_FROM}"
    # A long state survives a JSON round trip (and reads back as tuples).
    copy = InstanceState.model_validate_json(once.model_dump_json())
    assert copy == once and isinstance(copy.history, tuple)
    assert procflow.deliver(definition, copy, Reply(type=f"done_{2 * LOG_FROM + 1}", correlationId="wf_1"), NOW).state == (
        procflow.deliver(definition, once, Reply(type=f"done_{2 * LOG_FROM + 1}", correlationId="wf_1"), NOW).state
    )


def test_each_field_holds_one_type() -> None:
    at = NOW + timedelta(milliseconds=7)
    state = procflow.start(ORDER, "wf_1", {"orderId": "ord_1", "amount": 1.0}, at).state
    wait, entry = state.waits[0], state.history[0]
    # Timestamps are their ISO-8601 texts, sequences are tuples, whoever wrote them.
    assert state.startedAt == state.updatedAt == wait.since == entry.at == "2026-03-23T16:00:00.007Z"
    assert state.timeoutAt == wait.timeoutAt == "2026-03-23T16:00:30.007Z"  # 30 s for inventory
    assert wait.due == datetime(2026, 3, 23, 16, 0, 30, 7000, tzinfo=UTC).timestamp()
    assert state.waits == (wait,) and state.history == (entry,)
    text = state.model_dump_json()
    assert '"startedAt":"2026-03-23T16:00:00.007Z"' in text and '"waits":[{' in text
    copy = InstanceState.model_validate_json(text)
    assert copy == state and copy.model_dump_json() == text
    for record in (state, copy):
        assert all(isinstance(getattr(record, name), str) for name in ("startedAt", "updatedAt", "timeoutAt"))
        assert isinstance(record.waits, tuple) and isinstance(record.history, tuple)
    # No field is a property over another: every field is a plain slot of its record.
    for record_class in (InstanceState, type(wait), type(entry)):
        assert all(not isinstance(vars(record_class).get(f.name), property) for f in dataclasses.fields(record_class))


@pytest.mark.parametrize("microseconds", [0, 7000, 500, 123456, 999999])
def test_a_state_continued_from_its_json_is_the_state_continued_in_memory(microseconds: int) -> None:
    # 500 µs is written `.000Z` (not `Z`, what the whole second is written): the engine keeps that text.
    at = NOW + timedelta(microseconds=microseconds)
    replies = ("inventory_reserved", "payment_authorized", "shipment_rejected", "payment_voided", "inventory_released")
    memory = durable = procflow.start(ORDER, "wf_1", {"orderId": "ord_1", "amount": 1.0}, at).state
    for number, reply in enumerate(replies):
        now = at + timedelta(seconds=number * 61.25)
        durable = InstanceState.model_validate_json(durable.model_dump_json())
        memory = procflow.deliver(ORDER, memory, Reply(type=reply, correlationId="ord_1"), now).state
        durable = procflow.deliver(ORDER, durable, Reply(type=reply, correlationId="ord_1"), now).state
        assert memory.model_dump_json() == durable.model_dump_json() and memory == durable
    assert memory.status == "compensated"
    assert memory.startedAt == ("2026-03-23T16:00:00Z" if microseconds == 0 else f"2026-03-23T16:00:00.{microseconds // 1000:03d}Z")
    # Nobody answers: timeouts, retries and the failure fire at the instants the engine kept.
    memory = durable = procflow.start(ORDER, "wf_2", {"orderId": "ord_2", "amount": 1.0}, at).state
    for number in range(1, 12):
        now = at + timedelta(seconds=number * 17, microseconds=microseconds)  # a tick between timers
        durable = InstanceState.model_validate_json(durable.model_dump_json())
        memory = procflow.advance(ORDER, memory, now).state
        durable = procflow.advance(ORDER, durable, now).state
        assert memory.model_dump_json() == durable.model_dump_json() and memory == durable
    assert memory.is_terminal and len(memory.history) > 3
