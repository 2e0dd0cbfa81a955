"""For each item of a list (issue 16, item 1): what a user relies on, through the engine's
public functions: one run per item, under the item's own correlation id; one at a time, or at
most N at once; results collected by item, whatever order the items end in; failed items
tolerated up to the threshold; every completed item undone, the last completed first; a
for-each in the middle of its run survives a store (its state is plain JSON)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import procflow
from procflow.interpreter.messages import Reply
from procflow.interpreter.simulate import check_scenario
from procflow.interpreter.state import InstanceState

NOW = datetime(2026, 3, 23, 16, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parent.parent

LINES = """
process lines {{
  correlate by input.orderId
  input {{ orderId: string, lines: {{ sku: string }}[] }}
  participant inventory "Inventory"
  participant payment "Payment"

  for each line in input.lines {mode} collect reservations {{
    step reserve {{
      send inventory.reserve {{ sku: line.sku }}
      await reserved as reservation within 1h
      on out_of_stock fail "out of stock"
      compensate inventory.release {{ sku: line.sku }} awaiting released within 1m
    }}
  }}

  step charge {{
    send payment.charge {{ orderId: input.orderId, lines: reservations }}
    await charged within 1h
    on declined fail "declined"
  }}
}}
"""

ORDER = {"orderId": "o1", "lines": [{"sku": "a"}, {"sku": "b"}, {"sku": "c"}]}


def _load(mode: str) -> procflow.ProcessDefinition:
    return procflow.load_text(LINES.format(mode=mode))


def _reply(definition: procflow.ProcessDefinition, state: InstanceState, kind: str, correlation: str, data: Any = None) -> InstanceState:
    return procflow.deliver(definition, state, Reply(type=kind, correlationId=correlation, data=data or {}), NOW).state


def _sent(transition: Any) -> list[tuple[str, str, Any]]:
    return [(c.commandName, c.correlationId, c.data) for c in transition.commands]


def test_one_item_after_another_each_under_its_own_correlation_id() -> None:
    definition = _load("")
    first = procflow.start(definition, "wf_1", ORDER, NOW)
    assert _sent(first) == [("inventory.reserve", "o1/line/1", {"sku": "a"})]
    second = procflow.deliver(definition, first.state, Reply(type="reserved", correlationId="o1/line/1"), NOW)
    assert _sent(second) == [("inventory.reserve", "o1/line/2", {"sku": "b"})]


def test_in_parallel_at_most_n_at_once_the_next_starting_when_one_ends() -> None:
    definition = _load("in parallel at most 2")
    first = procflow.start(definition, "wf_1", ORDER, NOW)
    assert [c for _, c, _ in _sent(first)] == ["o1/line/1", "o1/line/2"]
    second = procflow.deliver(definition, first.state, Reply(type="reserved", correlationId="o1/line/2"), NOW)
    assert _sent(second) == [("inventory.reserve", "o1/line/3", {"sku": "c"})]


def test_a_reply_reaches_its_own_item_and_results_are_collected_in_list_order() -> None:
    definition = _load("in parallel")
    state = procflow.start(definition, "wf_1", ORDER, NOW).state
    for number in (3, 1, 2):  # the items end in another order than the list's
        state = _reply(definition, state, "reserved", f"o1/line/{number}", {"slot": number})
    assert state.data["reservations"] == [
        {"line": {"sku": sku}, "status": "completed", "reservation": {"slot": number}}
        for number, sku in ((1, "a"), (2, "b"), (3, "c"))
    ]
    assert state.frames == {} and state.each == {}  # the items' frames and the run are gone once it ended
    assert state.nextAction == "charge"


def test_completed_items_are_undone_the_last_completed_first() -> None:
    definition = _load("in parallel")
    state = procflow.start(definition, "wf_1", ORDER, NOW).state
    for number in (2, 3, 1):
        state = _reply(definition, state, "reserved", f"o1/line/{number}")
    failed = procflow.deliver(definition, state, Reply(type="declined", correlationId="o1"), NOW)
    assert _sent(failed) == [("inventory.release", "o1/line/1", {"sku": "a"})]
    state = failed.state
    undone = []
    for _ in range(3):
        wait = state.waits[0]
        undone.append(wait.correlationId)
        state = _reply(definition, state, "released", wait.correlationId)
    assert undone == ["o1/line/1", "o1/line/3", "o1/line/2"]
    assert state.status == "compensated"


def test_a_failed_item_is_tolerated_up_to_the_threshold_then_the_whole_fails() -> None:
    definition = _load("in parallel tolerate 1 failure")
    state = procflow.start(definition, "wf_1", ORDER, NOW).state
    state = _reply(definition, state, "reserved", "o1/line/1")
    state = _reply(definition, state, "out_of_stock", "o1/line/2")
    assert state.status != "failed" and state.each  # one failure: tolerated, item 3 still waits
    failed = procflow.deliver(definition, state, Reply(type="out_of_stock", correlationId="o1/line/3"), NOW)
    assert failed.state.failure is not None
    assert failed.state.failure.reason == "out of stock (2 items of `for each line` failed; it tolerates 1)"
    assert _sent(failed) == [("inventory.release", "o1/line/1", {"sku": "a"})]


def test_a_tolerated_failure_is_in_the_results() -> None:
    definition = _load("tolerate 1 failure")
    state = procflow.start(definition, "wf_1", {"orderId": "o1", "lines": [{"sku": "a"}, {"sku": "b"}]}, NOW).state
    state = _reply(definition, state, "out_of_stock", "o1/line/1")
    state = _reply(definition, state, "reserved", "o1/line/2")
    assert state.data["reservations"] == [
        {"line": {"sku": "a"}, "status": "failed", "failure": "out of stock"},
        {"line": {"sku": "b"}, "status": "completed", "reservation": {}},
    ]


def test_an_empty_list_goes_straight_on_with_no_results() -> None:
    definition = _load("in parallel")
    first = procflow.start(definition, "wf_1", {"orderId": "o1", "lines": []}, NOW)
    assert _sent(first) == [("payment.charge", "o1", {"orderId": "o1", "lines": []})]


def test_a_list_that_is_no_list_at_run_time_fails_the_instance_saying_so() -> None:
    definition = procflow.load_text(LINES.format(mode="").replace("lines: { sku: string }[]", "lines: any"))
    first = procflow.start(definition, "wf_1", {"orderId": "o1", "lines": "abc"}, NOW)
    assert first.state.status == "failed"
    assert first.state.failure is not None and first.state.failure.reason == "`for each line in input.lines` gave a string, not a list"


def test_a_for_each_in_the_middle_of_its_run_goes_on_from_its_stored_json() -> None:
    definition = _load("in parallel at most 2")
    state = procflow.start(definition, "wf_1", ORDER, NOW).state
    state = _reply(definition, state, "reserved", "o1/line/1")
    stored = InstanceState.model_validate_json(state.model_dump_json())
    assert stored.to_json() == state.to_json()
    for number in (2, 3):
        stored = _reply(definition, stored, "reserved", f"o1/line/{number}")
    assert [r["line"]["sku"] for r in stored.data["reservations"]] == ["a", "b", "c"]


@pytest.mark.parametrize("scenario", [s.name for s in procflow.load(ROOT / "processes" / "order_lines.proc").scenarios])
def test_the_sample_order_with_lines_scenarios_pass(scenario: str) -> None:
    definition = procflow.load(ROOT / "processes" / "order_lines.proc")
    chosen = next(s for s in definition.scenarios if s.name == scenario)
    outcome = check_scenario(definition, chosen)
    assert outcome.passed, outcome.differences


def test_a_scenario_reply_for_one_item_changes_only_that_item() -> None:
    definition = procflow.load(ROOT / "processes" / "order_lines.proc")
    result = procflow.simulate(definition, workflow_id="wf_1", scenario="one_line_missing")
    replies = [line.text for line in result.trace if line.kind == "reply"]
    assert replies[:3] == ["<- line_reserved  [item 1]", "<- line_unavailable  [item 2]", "<- line_reserved  [item 3]"]
    shipped = next(d for d in result.dispatches if d.command.commandName == "shipping.create")
    assert [(r["line"]["sku"], r["status"]) for r in shipped.command.data["lines"]] == [
        ("pen", "completed"), ("ink", "failed"), ("pad", "completed"),
    ]


NESTED = """
process nested {
  correlate by input.orderId
  input { orderId: string, boxes: { units: { sku: string }[] }[] }
  participant inventory "Inventory"
  participant audit "Audit"

  parallel both {
    branch pack {
      for each box in input.boxes collect packed {
        for each unit in box.units in parallel collect units {
          step pick {
            send inventory.pick { sku: unit.sku }
            await picked as pick within 1h
            compensate inventory.put_back { sku: unit.sku } awaiting put_back within 1h
          }
        }
      }
    }
    branch log {
      step note {
        send audit.note { orderId: input.orderId }
        await noted within 1h
        nothing to undo "a log line"
      }
    }
  }
  step close {
    send audit.close { boxes: packed }
    await closed within 1h
    on refused fail "refused"
    nothing to undo "the end"
  }
}
"""


def test_a_for_each_inside_another_and_inside_a_parallel_branch() -> None:
    definition = procflow.load_text(NESTED)
    boxes = [{"units": [{"sku": "a"}, {"sku": "b"}]}, {"units": [{"sku": "c"}]}]
    first = procflow.start(definition, "wf_1", {"orderId": "o1", "boxes": boxes}, NOW)
    assert sorted(c for _, c, _ in _sent(first)) == ["o1", "o1/box/1/unit/1", "o1/box/1/unit/2"]
    state = first.state
    for correlation in ("o1/box/1/unit/2", "o1/box/1/unit/1"):
        state = _reply(definition, state, "picked", correlation, {"at": correlation})
    state = _reply(definition, state, "picked", "o1/box/2/unit/1", {"at": "c"})
    state = _reply(definition, state, "noted", "o1")
    assert [[u["pick"]["at"] for u in box["units"]] for box in state.data["packed"]] == [
        ["o1/box/1/unit/1", "o1/box/1/unit/2"], ["c"],
    ]
    failed = procflow.deliver(definition, state, Reply(type="refused", correlationId="o1"), NOW)
    assert _sent(failed) == [("inventory.put_back", "o1/box/2/unit/1", {"sku": "c"})]


def test_a_for_each_runs_to_compensation_through_the_sqlite_store_as_in_memory(tmp_path: Path) -> None:
    from procflow.interpreter.orchestrator import Orchestrator
    from procflow.interpreter.sqlite_store import SqliteStore

    definition = procflow.load(ROOT / "processes" / "order_lines.proc")

    def inventory(command: Any) -> dict[str, Any]:
        if command.commandName == "inventory.reserve":
            return {"type": "line_unavailable" if command.data["sku"] == "s3" else "line_reserved", "data": {"slot": command.data["sku"]}}
        return {"type": "line_released"}

    participants = {
        "inventory": inventory,
        "payment": lambda c: {"type": "payment_authorized" if c.commandName == "payment.authorize" else "payment_voided"},
        "shipping": lambda c: {"type": "shipment_rejected"},
    }
    order = {"orderId": "o1", "amount": 1.0, "lines": [{"sku": f"s{i}", "quantity": 1} for i in range(6)]}
    finals = []
    for store in (None, SqliteStore(tmp_path / "store.sqlite")):
        orchestrator = Orchestrator(definition, store=store, participants=participants, clock=lambda: NOW)
        finals.append(orchestrator.start("wf_1", order))
        if store is not None:
            stored = store.get("wf_1")
            assert stored is not None and stored.state.to_json() == finals[-1].to_json()
            store.close()
    memory, durable = finals
    assert durable.status == memory.status == "compensated"
    assert durable.to_json() == memory.to_json()
    undone = [u.correlationId for u in durable.compensation.undone] if durable.compensation else []
    assert undone == ["o1", "o1/line/6", "o1/line/5", "o1/line/3", "o1/line/2", "o1/line/1"]  # line 4 was missing
