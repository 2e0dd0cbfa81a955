"""The saga table: every path from start to an end, its commands and its compensation."""

from __future__ import annotations

from pathlib import Path

import pytest

from procflow.dsl import compile_source, load
from procflow.dsl import model as m
from procflow.dsl.diagnostics import Span
from procflow.dsl.paths import (
    HAPPY,
    PathList,
    ProcessPath,
    block_exits,
    default_path,
    enumerate_paths,
    paths_json,
    paths_text,
)

ROOT = Path(__file__).resolve().parent.parent
ORDER = ROOT / "processes" / "order_fulfillment.proc"
CLAIM = ROOT / "tests" / "cases" / "diagrams" / "claim_handling.proc"


@pytest.fixture(scope="module")
def order_paths() -> PathList:
    return enumerate_paths(load(ORDER))


def test_order_process_has_exactly_the_lesson_paths(order_paths: PathList) -> None:
    table = [(p.name, p.outcome, p.compensation) for p in order_paths]
    assert table == [
        ("happy", "completed", []),
        ("reserve_inventory.inventory_unavailable", "failed: out of stock", []),
        ("reserve_inventory.timeout", "failed: reserve_inventory timed out", []),
        ("authorize_payment.payment_declined", "failed: payment declined", ["inventory.release"]),
        ("authorize_payment.timeout", "failed: authorize_payment timed out", ["inventory.release"]),
        ("create_shipment.shipment_rejected", "failed: shipping refused the order", ["payment.void", "inventory.release"]),
        ("create_shipment.timeout", "failed: create_shipment timed out", ["payment.void", "inventory.release"]),
    ]
    assert not order_paths.truncated


def test_order_paths_steps_and_commands(order_paths: PathList) -> None:
    happy = order_paths.by_name("happy")
    assert happy.steps == [
        ("reserve_inventory", "inventory_reserved"),
        ("authorize_payment", "payment_authorized"),
        ("create_shipment", "shipment_created"),
    ]
    assert happy.commands == ["inventory.reserve", "payment.authorize", "shipping.create"]
    rejected = order_paths.by_name("create_shipment.shipment_rejected")
    assert rejected.steps[-1] == ("create_shipment", "shipment_rejected")
    assert rejected.commands == ["inventory.reserve", "payment.authorize", "shipping.create"]
    # `retry 2`: three attempts before the timeout fails the step, as the scenario `inventory_silent` expects.
    silent = order_paths.by_name("reserve_inventory.timeout")
    assert silent.commands == ["inventory.reserve"] * 3
    assert silent.steps == [("reserve_inventory", "timeout")]


def test_paths_agree_with_the_order_scenarios(order_paths: PathList) -> None:
    """Each failure scenario of the sample names its compensation; the path says the same."""
    by_scenario = {
        "payment_declined": "authorize_payment.payment_declined",
        "shipping_rejected": "create_shipment.shipment_rejected",
        "payment_timeout": "authorize_payment.timeout",
        "shipping_timeout": "create_shipment.timeout",
        "out_of_stock": "reserve_inventory.inventory_unavailable",
    }
    definition = load(ORDER)
    for scenario in definition.scenarios:
        if scenario.name not in by_scenario:
            continue
        expected = [e.value for e in scenario.syntax.expectations if e.kind == "compensation"]
        assert [order_paths.by_name(by_scenario[scenario.name]).compensation] == expected, scenario.name


def test_text_table_is_aligned(order_paths: PathList) -> None:
    text = paths_text(order_paths)
    lines = text.splitlines()
    assert lines[0].split() == ["PATH", "OUTCOME", "STEPS", "COMPENSATION"]
    column = lines[0].index("OUTCOME")
    assert all(line[column - 2 : column] == "  " and line[column] != " " for line in lines[1:-1])
    assert lines[-1] == "7 paths"
    assert "payment.void, inventory.release" in lines[6]


def test_json_form(order_paths: PathList) -> None:
    data = paths_json(order_paths)
    assert data[3] == {
        "name": "authorize_payment.payment_declined",
        "outcome": "failed: payment declined",
        "steps": [
            {"step": "reserve_inventory", "outcome": "inventory_reserved"},
            {"step": "authorize_payment", "outcome": "payment_declined"},
        ],
        "commands": ["inventory.reserve", "payment.authorize"],
        "compensation": ["inventory.release"],
        "emitted": [],
    }


# ---------------------------------------------------------------- every construct


@pytest.fixture(scope="module")
def claim_paths() -> PathList:
    return enumerate_paths(load(CLAIM))


def test_gateways_races_and_calls_name_their_paths(claim_paths: PathList) -> None:
    names = [p.name for p in claim_paths]
    assert names[0] == HAPPY
    assert "if input.amount <= 1000" in names  # the else of `if input.amount > 1000`
    assert "paperwork: after 7d" in names  # a race arm
    assert 'input.kind is another value' in names  # a switch's default
    assert "archive-claim: store_file.storage_full" in names  # inside a called process
    assert len(names) == len(set(names))


def test_happy_path_runs_branches_in_order_loops_once_and_inlines_calls(claim_paths: PathList) -> None:
    happy = claim_paths.by_name(HAPPY)
    assert [step for step, _ in happy.steps] == [
        "check_policy", "assess_damage", "paperwork", "acknowledge",
        "reserve_funds", "transfer", "page_garage", "ask_feedback", "store_file",
    ]
    assert happy.completed and happy.compensation == []


def test_failure_in_a_parallel_branch_compensates_what_ran_before_it(claim_paths: PathList) -> None:
    transfer = claim_paths.by_name("transfer.timeout")
    assert transfer.compensation == ["payments.release", "assessor.cancel"]
    # a failure in the called process undoes the caller's steps too, most recent first
    archive = claim_paths.by_name("archive-claim: store_file.storage_full")
    assert archive.compensation == ["payments.release", "assessor.cancel"]
    skipped = claim_paths.by_name("if input.amount <= 1000 / transfer.timeout")
    assert skipped.compensation == ["payments.release"]


def test_paths_are_listed_simplest_first(claim_paths: PathList) -> None:
    deviations = [0 if p.name == HAPPY else p.name.count(" / ") + 1 for p in claim_paths]
    assert deviations == sorted(deviations)


def test_conditions_on_known_replies_prune_impossible_paths() -> None:
    text = """
    process screening {
      participant screen "Screening"
      step screen_customer {
        send screen.check
        await screening_clear, screening_hit within 1h
      }
      if steps.screen_customer.reply == "screening_hit" {
        fail "on a list"
      }
    }
    """
    paths = enumerate_paths(compile_source(text))
    assert [(p.name, p.outcome) for p in paths] == [
        ("happy", "completed"),
        ("screen_customer.screening_hit", "failed: on a list"),
        ("screen_customer.timeout", "failed: screen_customer timed out"),
    ]


def test_a_process_that_fails_on_its_first_choice_has_no_happy_path() -> None:
    text = """
    process refuse-all {
      if input.amount > 0 { fail "always refused" }
    }
    """
    paths = enumerate_paths(compile_source(text))
    assert [p.name for p in paths] == ['fail "always refused"', "if input.amount <= 0"]
    assert default_path(paths).name == "if input.amount <= 0"


def test_block_exits_find_where_arms_meet(claim_paths: PathList) -> None:
    definition = load(CLAIM)
    exits = block_exits(definition)
    assert exits["xor_1"] == "race_1"
    assert exits["race_1"] == "fork_1"
    assert exits["xor_2"] == "join_1"


# ---------------------------------------------------------------- size


def _linear(steps: int) -> m.ProcessDefinition:
    """A process of `steps` steps, each able to fail, built directly (the parser is not under test)."""
    spot = Span(1, 1, 1, 2)
    nodes: dict[str, m.AnyNode] = {"start": m.StartNode("start", spot, "s0")}
    order = ["start"]
    for i in range(steps):
        follow = f"s{i + 1}" if i + 1 < steps else "end"
        fail_id = f"s{i}.refused"
        nodes[fail_id] = m.FailNode(fail_id, Span(i + 2, 5, i + 2, 9), f"refused {i}", "reply", f"s{i}", "refused")
        nodes[f"s{i}"] = m.StepNode(
            f"s{i}", Span(i + 2, 1, i + 2, 30), name=f"s{i}", next=follow,
            command=m.CommandSpec("svc", "act", None, spot), replies=("done",), failures={"refused": fail_id},
            compensation=m.CompensationSpec(m.CommandSpec("svc", "undo", None, spot), (), None, spot),
        )
        order += [f"s{i}", fail_id]
    nodes["end"] = m.EndNode("end", Span(steps + 5, 1, steps + 5, 1))
    order.append("end")
    return m.ProcessDefinition(
        name="long-one", version=1, title=None, doc=None, fingerprint="test", correlate=None, reply_to="r",
        deadline_seconds=None, input_schema=None, participants={}, events={}, nodes=nodes, start="start",
        order=tuple(order), called={}, limits={}, path="<long>",
    )


def test_a_5000_step_process_is_walked_without_recursion_and_capped() -> None:
    """Five times Python's default recursion limit in steps: a walk that recursed per step
    would fail; the list stops at 1,000 paths and says so. (No time limit here: speed is
    for benchmarks to print, not for tests to assert.)"""
    definition = _linear(5_000)
    paths = enumerate_paths(definition)
    assert len(paths) == 1000 and paths.truncated
    assert paths[0].name == HAPPY and len(paths[0].steps) == 5_000
    assert paths[1].name == "s0.refused" and paths[999].name == "s998.refused"
    assert paths[999].compensation == ["svc.undo"] * 998
    assert "(stopped after 1000: the process has more)" in paths_text(paths)


def test_max_paths_caps_the_list() -> None:
    paths = enumerate_paths(_linear(20), max_paths=5)
    assert [p.name for p in paths] == ["happy", "s0.refused", "s1.refused", "s2.refused", "s3.refused"]
    assert paths.truncated
    assert paths_text(paths).splitlines()[-1] == "5 paths (stopped after 5: the process has more)"
    with pytest.raises(ValueError):
        enumerate_paths(_linear(2), max_paths=0)


def test_deeply_nested_gateways() -> None:
    depth = 60
    body = "step leaf { send svc.act\n await done }"
    for level in range(depth):
        body = f"if input.level > {level} {{ {body} }}"
    paths = enumerate_paths(compile_source(f'process deep {{ participant svc "Service"\n {body} }}'))
    assert paths[0].steps == [("leaf", "done")]
    assert len(paths) == depth + 1
    assert all(isinstance(p, ProcessPath) for p in paths)
