"""Issue 16, items 3 and 4: `set`, `output { ... }`, the failure's data in an undo, `emit`,
through every stage (parse, validate, run, print, paths, views, scenarios, transports)."""

from __future__ import annotations

import json
import re
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import procflow
from procflow.asyncapi import asyncapi_document
from procflow.cli import main
from procflow.dsl import model as m
from procflow.dsl.parser import parse
from procflow.dsl.paths import enumerate_paths, paths_json, paths_text
from procflow.dsl.printer import format_source
from procflow.dsl.validate import check_source
from procflow.interpreter.messages import Command, Dispatch, Reply
from procflow.interpreter.orchestrator import Orchestrator
from procflow.interpreter.simulate import check_scenario, simulate
from procflow.interpreter.sqlite_store import SqliteStore
from procflow.interpreter.state import SCHEMA_VERSION, InstanceState, migrate_state
from procflow.visualize.flow import flow_diagram
from procflow.visualize.ir import Message
from procflow.visualize.render import render_text
from procflow.visualize.sequence import sequence_diagram

ROOT = Path(__file__).resolve().parent.parent
CREATE_ORDER = ROOT / "processes" / "create_order.proc"
README = (ROOT / "README.md").read_text(encoding="utf-8")
T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)

SHIP = textwrap.dedent("""\
    process ship-order {
      correlate by input.orderId
      input { orderId: string, express?: boolean }
      output { orderId: input.orderId, tracking: shipment.tracking, speed: speed }
      participant shipping "Shipping" {
        reply shipment_created { tracking: string }
        reply shipment_refused { reason: string }
        reply shipment_cancelled
        reply confirmed
        reply confirm_refused { reason: string }
      }
      participant notify "Notifications"

      set speed = "standard"
      if input.express == true {
        set speed = "express"
      }
      step create_shipment {
        send shipping.create { orderId: input.orderId, speed: speed }
        await shipment_created as shipment within 1d
        on shipment_refused fail "shipping refused"
        compensate shipping.cancel { orderId: input.orderId, why: failure.reason, said: failure.data.reason } awaiting shipment_cancelled within 1h
      }
      emit notify.order_shipped { orderId: input.orderId, tracking: shipment.tracking }
      step confirm {
        send shipping.confirm { orderId: input.orderId }
        await confirmed within 1h
        on confirm_refused as refusal fail "confirmation refused"
        nothing to undo "confirming changes nothing"
      }
    }
""")


@pytest.fixture(scope="module")
def ship() -> m.ProcessDefinition:
    return procflow.load_text(SHIP, "ship.proc")


def _run(definition: m.ProcessDefinition, *replies: tuple[str, dict[str, Any]], express: bool = False) -> tuple[InstanceState, list[Dispatch]]:
    transition = procflow.start(definition, "wf_1", {"orderId": "o1", "express": express}, T0)
    state, dispatches = transition.state, list(transition.dispatches)
    for reply_type, data in replies:
        transition = procflow.deliver(definition, state, Reply(type=reply_type, correlationId="o1", data=data), T0)
        state = transition.state
        dispatches += transition.dispatches
    return state, dispatches


# ---------------------------------------------------------------- set


def test_the_example_is_valid() -> None:
    _, found = check_source(SHIP, "ship.proc")
    assert found == []


def test_a_variable_is_read_by_later_conditions_and_mappings(ship: m.ProcessDefinition) -> None:
    state, dispatches = _run(ship, express=True)
    assert state.data == {"speed": "express"}
    assert dispatches[0].command.data == {"orderId": "o1", "speed": "express"}
    state, dispatches = _run(ship)
    assert dispatches[0].command.data == {"orderId": "o1", "speed": "standard"}


def test_a_variable_read_before_it_is_set_or_misspelt_is_an_error() -> None:
    before = SHIP.replace('  set speed = "standard"\n', "")
    _, found = check_source(before, "ship.proc")
    # Read by the output (at the end) and by the step's mapping, where only the `if` may have set it.
    assert [(d.code, d.span.line, d.message) for d in found if d.is_error] == [
        ("E114", 4, "`speed` may not be bound here: only some paths to here bind it (line 15)"),
        ("E114", 18, "`speed` may not be bound here: only some paths to here bind it (line 15)"),
    ]
    _, found = check_source(SHIP.replace("speed: speed }\n  participant", "speed: sped }\n  participant"), "ship.proc")
    assert [(d.code, d.message) for d in found if d.is_error] == [("E113", "unknown variable `sped`; did you mean `speed`?")]


def test_a_variable_that_computes_is_warned_about_as_any_expression_is() -> None:
    computing = SHIP.replace('set speed = "standard"', "set speed = input.a * 2 + input.b * 3 - 1")
    _, found = check_source(computing.replace("input { orderId: string,", "input { orderId: string, a?: number, b?: number,"), "ship.proc")
    assert "W203" in {d.code for d in found}


# ---------------------------------------------------------------- output


def test_a_completed_instance_returns_its_output_and_a_failed_one_none(ship: m.ProcessDefinition) -> None:
    state, _ = _run(ship, ("shipment_created", {"tracking": "T-1"}), ("confirmed", {}))
    assert state.status == "completed"
    assert state.output == {"orderId": "o1", "tracking": "T-1", "speed": "standard"}
    assert state.to_json()["output"] == state.output
    failed, _ = _run(ship, ("shipment_refused", {"reason": "no road"}))
    assert failed.status == "failed" and failed.output is None


def test_run_json_prints_the_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(CREATE_ORDER), "--scenario", "approved", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["state"]["output"] == {"orderId": "ord_1", "ticketId": "tkt_7", "priority": "normal"}
    assert printed["state"]["schemaVersion"] == SCHEMA_VERSION


def test_an_output_that_reads_a_field_the_reply_contract_lacks_is_an_error() -> None:
    _, found = check_source(SHIP.replace("tracking: shipment.tracking, speed", "tracking: shipment.trackingNo, speed"), "ship.proc")
    assert [d.code for d in found if d.is_error] == ["E150"]


def test_a_state_of_schema_2_loads_and_finishes(ship: m.ProcessDefinition) -> None:
    started = procflow.start(ship, "wf_1", {"orderId": "o1"}, T0).state.to_json()
    old = {key: value for key, value in started.items() if key != "output"} | {"schemaVersion": 2}
    state = InstanceState.model_validate(migrate_state(old))
    assert state.schemaVersion == SCHEMA_VERSION and state.output is None
    state = procflow.deliver(ship, state, Reply(type="shipment_created", correlationId="o1", data={"tracking": "T"}), T0).state
    state = procflow.deliver(ship, state, Reply(type="confirmed", correlationId="o1"), T0).state
    assert state.status == "completed" and state.output == {"orderId": "o1", "tracking": "T", "speed": "standard"}


# ---------------------------------------------------------------- the failure's data in an undo


def test_the_undo_carries_the_failure_s_reason_and_payload(ship: m.ProcessDefinition) -> None:
    state, dispatches = _run(ship, ("shipment_created", {"tracking": "T-1"}), ("confirm_refused", {"reason": "address unknown"}))
    assert state.status == "compensating"
    undo = dispatches[-1].command
    assert undo.commandName == "shipping.cancel"
    # In the order written; `said` reads the failure reply's payload.
    assert list(undo.data.items()) == [("orderId", "o1"), ("why", "confirmation refused"), ("said", "address unknown")]
    assert state.failure is not None and state.failure.reply == "confirm_refused"
    assert state.failure.data == {"reason": "address unknown"}


def test_a_timeout_gives_the_undo_a_null_payload(ship: m.ProcessDefinition) -> None:
    state, _ = _run(ship, ("shipment_created", {"tracking": "T-1"}))
    later = procflow.advance(ship, state, datetime(2026, 1, 1, 11, tzinfo=UTC))
    undo = later.dispatches[-1].command
    assert undo.data == {"orderId": "o1", "why": "confirm timed out", "said": None}


def test_failure_outside_an_undo_and_a_misspelt_field_are_errors() -> None:
    outside = SHIP.replace("send shipping.confirm { orderId: input.orderId }", "send shipping.confirm { orderId: failure.reason }")
    _, found = check_source(outside, "ship.proc")
    assert [d.code for d in found if d.is_error] == ["E166"]
    misspelt = SHIP.replace("said: failure.data.reason", "said: failure.dat.reason")
    _, found = check_source(misspelt, "ship.proc")
    assert [(d.code, d.message) for d in found if d.is_error] == [("E167", "`failure` has no field `dat`; did you mean `data`?")]


# ---------------------------------------------------------------- emit


def test_emit_publishes_a_notification_without_reply_to_and_goes_on(ship: m.ProcessDefinition) -> None:
    state, dispatches = _run(ship, ("shipment_created", {"tracking": "T-1"}))
    notification = dispatches[1]
    assert notification.command == Command("notify.order_shipped", "wf_1", "o1", None, {"orderId": "o1", "tracking": "T-1"})
    assert notification.step == "emit:emit_1" and notification.dedupKey == "o1:notify.order_shipped:emit:emit_1#1"
    assert dispatches[2].command.commandName == "shipping.confirm"  # it went on at once
    assert [w.commandName for w in state.waits] == ["shipping.confirm"]  # and waits for no answer to it
    assert "replyTo" not in Command.model_json_schema()["required"]


def test_a_notification_goes_through_the_sqlite_outbox_and_an_answer_to_it_is_dropped(tmp_path: Path, ship: m.ProcessDefinition) -> None:
    heard: list[Command] = []

    def notify(command: Command) -> dict[str, Any]:
        heard.append(command)
        return {"type": "thanks"}  # a participant that answers anyway: nobody waits for it

    def shipping(command: Command) -> dict[str, Any] | None:
        return {"type": "shipment_created", "data": {"tracking": "T-9"}} if command.commandName == "shipping.create" else None

    with SqliteStore(tmp_path / "s.sqlite") as store:
        orchestrator = Orchestrator(ship, store=store, participants={"notify": notify, "shipping": shipping}, clock=lambda: T0)
        orchestrator.start("wf_1", {"orderId": "o1"})
        row = store.get("wf_1")
        assert row is not None and row.state.nextAction == "confirm" and row.state.status == "waiting_for_shipping"
        assert [c.commandName for c in heard] == ["notify.order_shipped"] and heard[0].replyTo is None
        assert store.outbox() == []  # sent, like a command
        assert [e.sent for e in row.state.history][-1][-2:] == ("notify.order_shipped#1", "shipping.confirm#1")


def test_emit_is_checked_as_a_send_is() -> None:
    _, found = check_source(SHIP.replace("emit notify.order_shipped", "emit notfy.order_shipped"), "ship.proc")
    assert [(d.code, d.message) for d in found if d.is_error] == [("E110", "unknown participant `notfy`; did you mean `notify`?")]


def test_paths_list_what_each_path_emits(ship: m.ProcessDefinition) -> None:
    paths = enumerate_paths(ship)
    text = paths_text(paths)
    assert text.splitlines()[0].split() == ["PATH", "OUTCOME", "STEPS", "EMITTED", "COMPENSATION"]
    happy = paths.by_name("happy")
    assert happy.emitted == ["notify.order_shipped"] and happy.commands == ["shipping.create", "shipping.confirm"]
    refused = paths.by_name("create_shipment.shipment_refused")
    assert refused.emitted == []
    assert paths_json(paths)[0]["emitted"] == ["notify.order_shipped"]
    assert "EMITTED" not in paths_text(enumerate_paths(procflow.load(ROOT / "processes" / "order_fulfillment.proc")))


def test_the_flow_view_draws_a_script_task_and_a_message_throw(ship: m.ProcessDefinition) -> None:
    nodes = {n.id: n for n in flow_diagram(ship).nodes}
    assert (nodes["set_1"].kind, nodes["set_1"].title, nodes["set_1"].lines) == ("set", "set speed", ('= "standard"',))
    throw = nodes["emit_1"]
    assert (throw.kind, throw.title, throw.lines, throw.sign) == ("throw", "emit order_shipped", ("to Notifications",), "✉")
    lanes = flow_diagram(ship, swimlanes=True)
    assert next(n for n in lanes.nodes if n.id == "emit_1").cluster == "lane.notify"
    dot = render_text(ship, "flow", "dot")
    line = next(line for line in dot.splitlines() if line.startswith('  "emit_1" ['))
    assert 'shape="doublecircle"' in line and 'fillcolor="#1b2631"' in line and 'fontcolor="#ffffff"' in line  # a filled marker: a throw


def test_the_sequence_view_draws_an_arrow_that_gets_no_answer(ship: m.ProcessDefinition) -> None:
    items = sequence_diagram(ship).items
    messages = [i for i in items if isinstance(i, Message)]
    index = next(i for i, item in enumerate(messages) if item.kind == "notify")
    assert messages[index].label == "emit order shipped" and messages[index].source == "O"
    assert messages[index + 1].kind == "command"  # no reply comes back
    assert "O-)N: emit order shipped" in render_text(ship, "sequence", "mermaid")
    state, _ = _run(ship, ("shipment_created", {"tracking": "T-1"}))
    told = [i for i in sequence_diagram(ship, instance=state.to_json()).items if isinstance(i, Message) and i.kind == "notify"]
    assert [(m_.label, m_.target) for m_ in told] == [("emit order shipped", "N")]


def test_asyncapi_includes_the_notification_without_reply_to(ship: m.ProcessDefinition) -> None:
    document = asyncapi_document(ship)
    message = document["components"]["messages"]["notify_order_shipped"]
    assert message["title"] == "notification notify.order_shipped"
    assert "replyTo" not in message["payload"]["properties"] and "replyTo" not in message["payload"]["required"]
    assert "reply" not in document["operations"]["send_notify_order_shipped"]


# ---------------------------------------------------------------- the printer and scenarios


def test_fmt_prints_the_constructs_back() -> None:
    text = SHIP + textwrap.dedent("""\

        scenario shipped {
          input { orderId: "o1" }
          expect output { tracking: "T" }
          expect emitted notify.order_shipped
        }
    """)
    printed = format_source(parse(text, "ship.proc"))
    assert 'set speed = "express"' in printed and "emit notify.order_shipped { orderId: input.orderId" in printed
    assert "output { orderId: input.orderId, tracking: shipment.tracking, speed: speed }" in printed
    assert 'expect output { tracking: "T" }' in printed and "expect emitted notify.order_shipped" in printed
    assert format_source(parse(printed, "ship.proc")) == printed


def test_scenarios_check_output_and_emitted(ship: m.ProcessDefinition) -> None:
    text = SHIP + textwrap.dedent("""\

        scenario wrong {
          input { orderId: "o1" }
          when shipping.create reply shipment_created { tracking: "T-1" }
          expect output { tracking: "T-2", speed: "standard" }
        }
        scenario refused {
          input { orderId: "o1" }
          when shipping.create reply shipment_refused { reason: "x" }
          expect emitted notify.order_shipped
        }
    """)
    definition = procflow.load_text(text, "ship.proc", scenarios=True)
    wrong, refused = (check_scenario(definition, s) for s in definition.scenarios)
    assert wrong.differences == [
        "line 36: expect output: expected {'tracking': 'T-2', 'speed': 'standard'}, got {'tracking': 'T-1', 'speed': 'standard'}"
    ]
    assert refused.differences == ["line 41: expect emitted: `notify.order_shipped` was not emitted (emitted: nothing)"]
    result = simulate(definition, workflow_id="wf_t", scenario=definition.scenarios[0])
    assert result.emitted == ["notify.order_shipped"] and "notify.order_shipped" not in result.command_names


def test_the_readme_has_a_runnable_example_of_each_construct() -> None:
    section = README.split("### Data: variables, output, failure data, notifications", 1)[1].split("\n### ", 1)[0]
    examples = re.findall(r"```proc\n(.*?)```", section, flags=re.S)
    for construct in ("\n  set ", "\n  output {", "failure.reason", "\n  emit "):
        assert any(construct in example and "\nscenario " in example for example in examples), construct
