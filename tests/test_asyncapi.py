"""`procflow export --format asyncapi` (issue 14, must-show 4): the document of every sample
process validates against the AsyncAPI 3.0 JSON Schema of the npm package @asyncapi/specs
(installed by `make setup` beside the virtualenv, never copied here), and the messages it
declares are exactly the ones the process sends and awaits: every command and reply of every
scenario run is declared, and is valid against the payload schema the document gives it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

import procflow
from procflow.asyncapi import asyncapi_document
from procflow.dsl import model as m
from procflow.interpreter.simulate import check_scenario

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted((ROOT / "processes").glob("*.proc"))
SPECS = Path(sys.prefix) / "npm" / "node_modules" / "@asyncapi" / "specs"


@cache
def validator() -> jsonschema.Draft7Validator:
    path = SPECS / "schemas" / "3.0.0.json"
    if not path.is_file():
        pytest.fail(f"the AsyncAPI JSON Schema is not installed at {path}: run `make setup` (it runs scripts/ensure_asyncapi_specs.sh)")
    schema = json.loads(path.read_text(encoding="utf-8"))
    registry: Registry[Any] = Registry().with_resources(
        (uri, Resource.from_contents(part, default_specification=DRAFT7)) for uri, part in schema["definitions"].items()
    )
    return jsonschema.Draft7Validator(schema, registry=registry)


def test_the_schema_is_the_pinned_npm_package() -> None:
    pinned = next(line for line in (ROOT / "scripts" / "ensure_asyncapi_specs.sh").read_text().splitlines() if line.startswith("SPECS_VERSION="))
    assert json.loads((SPECS / "package.json").read_text())["version"] == pinned.split("=", 1)[1]


def test_the_validator_refuses_a_broken_document() -> None:
    document = asyncapi_document(procflow.load(ROOT / "processes" / "order_fulfillment.proc"))
    assert list(validator().iter_errors(document)) == []
    del document["info"]["version"]
    document["operations"]["send_inventory_reserve"]["action"] = "publish"  # AsyncAPI 2's word, not 3's
    assert len(list(validator().iter_errors(document))) >= 2


def _resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node["$ref"] if isinstance(node, dict) and set(node) == {"$ref"} else node


def _messages(document: dict[str, Any], action: str) -> dict[str, dict[str, Any]]:
    """name -> message object, over the operations of one action (following the refs)."""
    found = {}
    for operation in document["operations"].values():
        if operation["action"] == action:
            for ref in operation["messages"]:
                target = _resolve(document, ref["$ref"])
                message = _resolve(document, target) if isinstance(target, str) else target
                found[message["name"]] = message
    return found


def _declared_in_steps(definition: m.ProcessDefinition) -> tuple[set[str], set[str]]:
    """The commands the steps send (and the notifications `emit` sends) and the replies and events the waits expect."""
    sends, awaits = set(), set()
    for process in definition.processes.values():
        for node in process.in_order:
            if isinstance(node, m.StepNode) and node.command is not None:
                sends.add(node.command.name)
            if isinstance(node, m.StepNode) and node.compensation is not None:
                sends.add(node.compensation.command.name)
                awaits.update(node.compensation.replies + node.compensation.refused)  # what its wait expects
            if isinstance(node, m.EmitNode):  # a notification: sent, never answered
                sends.add(node.message.name)
        for wait in process.waits.values():
            awaits.update(wait.expects)
    return sends, awaits


@pytest.mark.parametrize("path", SAMPLES, ids=[p.stem for p in SAMPLES])
def test_the_document_of_every_sample_validates_and_declares_what_the_process_sends_and_awaits(path: Path) -> None:
    definition = procflow.load(path)
    document = asyncapi_document(definition)
    errors = [f"{'/'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in validator().iter_errors(document)]
    assert errors == []

    sent, received = _messages(document, "send"), _messages(document, "receive")
    sends, awaits = _declared_in_steps(definition)
    assert set(sent) == sends
    assert set(received) == awaits

    # What the scenarios really send and receive is declared, and valid against its payload schema.
    ran = 0
    for scenario in definition.scenarios:
        result = check_scenario(definition, scenario).result
        if result is None:
            continue
        ran += 1
        for dispatch in result.dispatches:
            command = dispatch.command.wire()  # (what the message body carries)
            jsonschema.validate(command, sent[command["commandName"]]["payload"])
        for entry in result.state.history:
            if entry.event in ("reply", "event") and entry.message:
                message = dict(entry.message)
                jsonschema.validate(message, received[message["type"]]["payload"])
    assert ran > 0


def test_export_writes_the_document(tmp_path: Path) -> None:
    out = tmp_path / "order.asyncapi.json"
    done = subprocess.run(
        [str(Path(sys.executable).parent / "procflow"), "export", str(ROOT / "processes" / "order_fulfillment.proc"),
         "--format", "asyncapi", "-o", str(out), "--amqp-prefix", "orders"],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text())
    assert document["asyncapi"] == "3.0.0"
    assert document["channels"]["commands_inventory"]["bindings"]["amqp"]["exchange"]["name"] == "orders.commands"
    assert document["channels"]["replies_workflow-replies"]["address"] == "orders.replies.workflow-replies"
    assert document["operations"]["send_inventory_reserve"]["reply"]["messages"] == [
        {"$ref": "#/channels/replies_workflow-replies/messages/inventory_reserved"},
        {"$ref": "#/channels/replies_workflow-replies/messages/inventory_unavailable"},
    ]
