"""The compiled definition is a networkx graph, and the engine walks it.

The engine finds the next node through the graph's edges, not through a record's fields: a copy
of a definition whose graph has one edge rewired runs where the graph says. `procflow graph`
prints that same graph. Every node's kind is one of `NODE_KINDS`.
"""

from __future__ import annotations

import json
import typing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import networkx as nx
import pytest

import procflow
from procflow.cli import main
from procflow.dsl import model as m
from procflow.interpreter import transition
from procflow.interpreter.messages import Reply

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted((ROOT / "processes").glob("*.proc"))
NOW = datetime(2026, 3, 23, 16, 0, tzinfo=UTC)

THREE_STEPS = """
process three-steps {
  correlate by input.id
  input { id: string, amount: number }
  participant shop "Shop"
  step first {
    send shop.one { id: input.id }
    await one_done within 1h
    on one_refused fail "refused"
  }
  if input.amount > 100 {
    step big { send shop.big { id: input.id } await big_done }
  } else {
    step small { send shop.small { id: input.id } await small_done }
  }
  step last { send shop.last { id: input.id } await last_done }
}
"""


def rewired(definition: m.ProcessDefinition, source: str, key: str, target: str) -> m.ProcessDefinition:
    """A copy of `definition` whose way `key` out of `source` leads to `target` (records unchanged)."""
    graph = nx.MultiDiGraph(definition.graph)  # a thawed copy
    attrs = graph.edges[source, definition.follow(source, key), key]
    graph.remove_edge(source, definition.follow(source, key), key=key)
    graph.add_edge(source, target, key=key, **attrs)
    return replace(definition, graph=nx.freeze(graph))


def waiting_at(state: procflow.InstanceState) -> list[str]:
    return [wait.node for wait in state.waits]


def test_the_engine_takes_a_steps_next_edge_not_its_record() -> None:
    definition = procflow.load_text(THREE_STEPS)
    changed = rewired(definition, "first", "next", "last")
    first = changed.step("first")
    assert first.next == "xor_1" and changed.follow("first", "next") == "last"  # the record still says xor_1
    started = procflow.start(changed, "wf_1", {"id": "a", "amount": 5}, NOW)
    moved = procflow.deliver(changed, started.state, Reply(type="one_done", correlationId="a"), NOW)
    assert waiting_at(moved.state) == ["last"] and [c.commandName for c in moved.commands] == ["shop.last"]
    # the definition as compiled goes through the gateway
    plain = procflow.deliver(definition, started.state, Reply(type="one_done", correlationId="a"), NOW)
    assert waiting_at(plain.state) == ["small"]


def test_the_engine_takes_the_gateway_arm_the_graph_gives() -> None:
    definition = procflow.load_text(THREE_STEPS)
    changed = rewired(definition, "xor_1", "arm:0", "last")
    started = procflow.start(changed, "wf_1", {"id": "a", "amount": 500}, NOW)
    moved = procflow.deliver(changed, started.state, Reply(type="one_done", correlationId="a"), NOW)
    assert waiting_at(moved.state) == ["last"]


def test_a_failure_reply_and_a_timeout_follow_their_edges() -> None:
    definition = procflow.load_text(THREE_STEPS)
    changed = rewired(rewired(definition, "first", "failure:one_refused", "big"), "first", "timeout", "small")
    started = procflow.start(changed, "wf_1", {"id": "a", "amount": 5}, NOW)
    refused = procflow.deliver(changed, started.state, Reply(type="one_refused", correlationId="a"), NOW)
    assert refused.state.failure is None and waiting_at(refused.state) == ["big"]
    timed_out = procflow.advance(changed, started.state, NOW + timedelta(hours=2))
    assert timed_out.state.failure is None and waiting_at(timed_out.state) == ["small"]
    as_compiled = procflow.advance(definition, started.state, NOW + timedelta(hours=2))
    assert as_compiled.state.failure is not None and as_compiled.state.failure.reason == "first timed out"


def test_the_engine_module_walks_a_networkx_graph() -> None:
    assert transition.nx is nx
    definition = procflow.load_text(THREE_STEPS)
    assert isinstance(definition.graph, nx.MultiDiGraph) and nx.is_frozen(definition.graph)
    assert definition.ways_out("first") == (
        m.Way("xor_1", "next", "one_done", "next"),
        m.Way("first.one_refused", "failure", "one_refused", "failure:one_refused"),
        m.Way("first.timeout", "timeout", "timeout", "timeout"),
    )
    with pytest.raises(KeyError):
        definition.follow("last", "timeout")


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_procflow_graph_prints_the_definitions_graph(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    definition = procflow.load(path)
    assert main(["graph", str(path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    graph = definition.graph
    nodes = {node["id"]: {k: v for k, v in node.items() if k != "id"} for node in printed["nodes"]}
    assert list(nodes) == list(graph.nodes)
    for node_id, attrs in graph.nodes(data=True):
        assert nodes[node_id] == {k: v for k, v in attrs.items() if k not in ("record", "line")}
    edges = [(e["source"], e["target"], e["key"], e["kind"], e["label"]) for e in printed["edges"]]
    assert edges == [(u, v, k, d["kind"], d["label"]) for u, v, k, d in graph.edges(keys=True, data=True)]
    back = nx.node_link_graph(printed, edges="edges")
    assert nx.utils.edges_equal(back.edges(keys=True), graph.edges(keys=True))


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_every_node_has_a_kind_of_the_one_table(path: Path) -> None:
    for process in procflow.load(path).processes.values():
        for node_id, attrs in process.graph.nodes(data=True):
            record = attrs["record"]
            assert m.NODE_KINDS[attrs["kind"]] is type(record) and record is process.nodes[node_id]


def test_the_table_of_node_kinds_names_every_record() -> None:
    assert set(typing.get_args(m.AnyNode)) == set(m.NODE_KINDS.values())
    assert all(record.kind == kind and record.__doc__ for kind, record in m.NODE_KINDS.items())


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_the_compiled_graph_is_what_the_records_say(path: Path) -> None:
    """While the records keep their targets, the graph the compiler builds agrees with them."""
    for process in procflow.load(path).processes.values():
        drawn = m.graph_from_records(process.name, process.in_order)
        assert list(drawn.nodes(data=True)) == list(process.graph.nodes(data=True))
        assert list(drawn.edges(keys=True, data=True)) == list(process.graph.edges(keys=True, data=True))


def test_a_definition_built_by_hand_gets_its_graph_from_its_records() -> None:
    compiled = procflow.load_text(THREE_STEPS)
    by_hand = replace(compiled, graph=nx.MultiDiGraph())
    assert list(by_hand.graph.edges(keys=True)) == list(compiled.graph.edges(keys=True))
