"""What the engine works out once per definition gives what working it out each time gives."""

from __future__ import annotations

from pathlib import Path

import pytest

import procflow
from procflow.dsl import model as m
from procflow.interpreter.plan import plan_of
from procflow.interpreter.simulate import scenario_input
from procflow.interpreter.state import Frame, InstanceState
from procflow.interpreter.transition import Scope

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted((ROOT / "processes").glob("*.proc"))


def _mappings(definition: m.ProcessDefinition) -> list[m.Mapping_]:
    found = []
    for node in definition.nodes.values():
        if isinstance(node, m.StepNode):
            for spec in (node.command, node.compensation.command if node.compensation else None):
                if spec is not None and spec.data is not None:
                    found.append(spec.data)
        if isinstance(node, m.CallNode) and node.data is not None:
            found.append(node.data)
    for child in definition.called.values():
        found.extend(_mappings(child))
    return found


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_a_payload_copied_from_the_input_is_what_evaluating_it_gives(path: Path) -> None:
    definition = procflow.load(path)
    plan = plan_of(definition)
    inputs = [scenario_input(s) for s in definition.scenarios] + [{}, {"unrelated": [1, 2]}]
    for mapping in _mappings(definition):
        fields = plan.input_fields(mapping)
        if fields is None:
            continue
        for data in inputs:
            frame = Frame(process=definition.name, input=data, correlationId="c")
            state = InstanceState.model_validate({
                "workflowId": "w", "type": definition.name, "status": "running", "completedSteps": [], "nextAction": None,
                "timeoutAt": None, "definition": plan.ref.model_dump(), "correlationId": "c", "startedAt": "x",
                "updatedAt": "x", "input": data,
            })
            assert {key: data.get(name) for key, name in fields} == mapping.evaluate(Scope(frame, "main", state))


def test_the_order_process_payloads_are_copied_from_the_input() -> None:
    definition = procflow.load(ROOT / "processes" / "order_fulfillment.proc")
    plan = plan_of(definition)
    found = [plan.input_fields(mapping) for mapping in _mappings(definition)]
    assert len(found) == 5 and set(found) == {(("orderId", "orderId"),), (("orderId", "orderId"), ("amount", "amount"))}


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_a_correlation_key_read_from_the_input_is_what_evaluating_it_gives(path: Path) -> None:
    definition = procflow.load(path)
    field = plan_of(definition).correlation_field
    if definition.correlate is None or field is None:
        return
    for data in [scenario_input(s) for s in definition.scenarios] + [{}, {field: 7}, {field: None}]:
        assert data.get(field) == definition.correlate.evaluate({"input": data, "steps": {}})
