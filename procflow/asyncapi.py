"""A process's messages as an AsyncAPI 3.0 document: `procflow export FILE --format asyncapi`.

What it describes is what the AMQP transport (`procflow.interpreter.amqp`) puts on the wire,
so a team that owns a participant, in any language, can generate its side from it:

- one channel per participant that receives commands: address `<participant>.{command}` on
  the topic exchange `<prefix>.commands` (AMQP binding `is: routingKey`);
- one channel per `reply to` of the process (and of the processes it calls): the durable
  queue `<prefix>.replies.<replyTo>` (AMQP binding `is: queue`);
- a `send` operation per command, persistent and mandatory, whose `reply` names the replies
  that answer it and says the reply goes where the AMQP `reply_to` property points;
- a `receive` operation per reply channel with every reply and event the process awaits,
  acknowledged by the receiver;
- one message per command, reply and event: the command is the lesson's five fields, a reply
  the reply envelope; `data` is the participant's declared contract, else any object (in a
  command, an optional field may be null: see `optional_may_be_null`).

`asyncapi_document(definition)` gives the document as a dict, `asyncapi_text` as JSON text
(AsyncAPI accepts JSON as well as YAML; JSON needs no other library).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from procflow.dsl import model as m
from procflow.interpreter.amqp_topology import DEFAULT_PREFIX, Topology

BINDING_VERSION = "0.3.0"
_KEY = re.compile(r"[^A-Za-z0-9_-]")


def _key(text: str) -> str:
    """A name AsyncAPI accepts as a key of its maps (letters, digits, `_` and `-`)."""
    return _KEY.sub("_", text)


@dataclass(slots=True)
class Messages:
    """What a process sends and awaits, gathered from its steps (and those of the processes it calls)."""

    commands: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    """commandName -> the schema of its data (None: any object)."""
    answers: dict[str, list[str]] = field(default_factory=dict)
    """commandName -> the replies that answer it (successes, then failures)."""
    awaited: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    """reply channel (`reply to`) -> reply or event name -> [] (ordered, no repeats)."""
    schemas: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    """reply or event name -> the schema of its data (None: any object)."""
    notifications: set[str] = field(default_factory=set)
    """The commandNames of `commands` that are notifications (`emit`): sent with no `replyTo`, never answered."""


def _add(names: list[str], more: tuple[str, ...] | list[str]) -> None:
    for name in more:
        if name not in names:
            names.append(name)


def messages_of(definition: m.ProcessDefinition) -> Messages:
    """The commands a process sends and the replies and events it awaits, per reply channel."""
    found = Messages()
    for process in definition.processes.values():
        for participant in process.participants.values():
            for reply, schema in participant.replies.items():
                found.schemas.setdefault(reply, schema)
        for event, schema in process.events.items():
            found.schemas.setdefault(event, schema)
        awaited = found.awaited.setdefault(process.reply_to, {})
        for node in process.in_order:
            if isinstance(node, m.StepNode):
                replies = list(node.replies) + [r for r in node.failure_replies if r not in node.replies]
                if node.command is not None:
                    spec = node.command
                    found.commands.setdefault(spec.name, process.participants[spec.participant].commands.get(spec.command))
                    _add(found.answers.setdefault(spec.name, []), replies)
                if node.compensation is not None:
                    undo = node.compensation.command
                    found.commands.setdefault(undo.name, process.participants[undo.participant].commands.get(undo.command))
                    answers = node.compensation.replies + node.compensation.refused  # (a refusal answers it too)
                    _add(found.answers.setdefault(undo.name, []), answers)
                    _add_awaited(awaited, answers)
                _add_awaited(awaited, replies)
            elif isinstance(node, m.RaceNode):
                _add_awaited(awaited, [name for arm in node.arms for name in arm.messages])
            elif isinstance(node, m.EmitNode):
                spec = node.message
                told = process.participants.get(spec.participant)
                found.commands.setdefault(spec.name, told.commands.get(spec.command) if told is not None else None)
                found.notifications.add(spec.name)
    for name in found.commands:
        found.answers.setdefault(name, [])
    return found


def _add_awaited(awaited: dict[str, list[str]], names: tuple[str, ...] | list[str]) -> None:
    for name in names:
        awaited.setdefault(name, [])


def _data(schema: dict[str, Any] | None) -> dict[str, Any]:
    if schema is None:
        return {"type": "object", "description": "the payload (no contract declared)"}
    return schema


def optional_may_be_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A command contract as the wire carries it: a mapping gives `null` for a field its
    source lacks (`document: input.document` with no document in the input), so an optional
    field (one not `required`) may be null; nested objects and array items alike."""
    result = dict(schema)
    properties = schema.get("properties")
    if isinstance(properties, dict):
        required = set(schema.get("required", ()))
        result["properties"] = {
            name: optional_may_be_null(part) if name in required else {"anyOf": [optional_may_be_null(part), {"type": "null"}]}
            for name, part in properties.items()
        }
    items = schema.get("items")
    if isinstance(items, dict):
        result["items"] = optional_may_be_null(items)
    return result


def _notification_message(name: str, schema: dict[str, Any] | None) -> dict[str, Any]:
    """An `emit`: a command's fields but `replyTo`, which it has none of (nobody answers it)."""
    message = _command_message(name, schema, "")
    payload = message["payload"]
    payload["required"] = [key for key in payload["required"] if key != "replyTo"]
    del payload["properties"]["replyTo"]
    return {**message, "title": f"notification {name}"}


def _command_message(name: str, schema: dict[str, Any] | None, reply_to: str) -> dict[str, Any]:
    return {
        "name": name,
        "title": f"command {name}",
        "contentType": "application/json",
        "correlationId": {"location": "$message.payload#/correlationId"},
        "payload": {
            "type": "object",
            "required": ["commandName", "workflowId", "correlationId", "replyTo", "data"],
            "additionalProperties": False,
            "properties": {
                "commandName": {"type": "string", "const": name},
                "workflowId": {"type": "string", "description": "the instance that sent it"},
                "correlationId": {"type": "string", "description": "the process's business key; quote it in the reply"},
                "replyTo": {"type": "string", "const": reply_to, "description": "the channel the reply goes to"},
                "data": _data(None if schema is None else optional_may_be_null(schema)),
            },
        },
        "bindings": {"amqp": {"messageType": name, "bindingVersion": BINDING_VERSION}},
    }


def _reply_message(name: str, schema: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "name": name,
        "title": f"reply or event {name}",
        "contentType": "application/json",
        "correlationId": {"location": "$message.payload#/correlationId"},
        "payload": {
            "type": "object",
            "required": ["type", "correlationId"],
            "additionalProperties": False,
            "properties": {
                "type": {"type": "string", "const": name},
                "correlationId": {"type": "string", "description": "the business key the command carried"},
                "workflowId": {"type": "string", "description": "the instance, when the sender knows it"},
                "messageId": {"type": "string", "description": "unique per message; the same id again is a duplicate (else the AMQP message_id)"},
                "data": _data(schema),
            },
        },
        "bindings": {"amqp": {"messageType": name, "bindingVersion": BINDING_VERSION}},
    }


def asyncapi_document(definition: m.ProcessDefinition, prefix: str = DEFAULT_PREFIX) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of a process's channels, operations and messages."""
    topology = Topology(prefix)
    found = messages_of(definition)
    components: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    reply_channel_of: dict[str, str] = {}
    for reply_to, awaited in found.awaited.items():
        if not awaited:
            continue
        channel = f"replies_{_key(reply_to)}"
        reply_channel_of.update(dict.fromkeys(awaited, channel))
        for name in awaited:
            components[_key(name)] = _reply_message(name, found.schemas.get(name))
        queue = topology.reply_queue(reply_to)
        channels[channel] = {
            "address": queue,
            "title": f"replies on `{reply_to}`",
            "description": f"The `reply to` channel: participants answer here (the AMQP `reply_to` of each command is `{queue}`).",
            "messages": {_key(n): {"$ref": f"#/components/messages/{_key(n)}"} for n in awaited},
            "bindings": {"amqp": {
                "is": "queue",
                "queue": {"name": queue, "durable": True, "exclusive": False, "autoDelete": False, "vhost": "/"},
                "bindingVersion": BINDING_VERSION,
            }},
        }
        operations[f"receive_{_key(reply_to)}"] = {
            "action": "receive",
            "title": f"receive the replies and events on `{reply_to}`",
            "description": "Acked only after the transition they cause is committed; one that can never apply goes to "
                           f"`{topology.dead_letters}` with the reason in the header `x-procflow-reason`.",
            "channel": {"$ref": f"#/channels/{channel}"},
            "messages": [{"$ref": f"#/channels/{channel}/messages/{_key(n)}"} for n in awaited],
            "bindings": {"amqp": {"ack": True, "bindingVersion": BINDING_VERSION}},
        }
    reply_to_of = {name: process.reply_to for process in definition.processes.values() for name in _sent_by(process)}
    by_participant: dict[str, list[str]] = {}
    for name in found.commands:
        by_participant.setdefault(name.split(".", 1)[0], []).append(name)
    for participant, names in by_participant.items():
        channel = f"commands_{_key(participant)}"
        channels[channel] = {
            "address": f"{participant}.{{command}}",
            "title": f"commands to {participant}",
            "description": f"Published to the topic exchange `{topology.commands_exchange}`; the participant's queue "
                           f"`{topology.participant_queue(participant)}` is bound with `{participant}.*`.",
            "parameters": {"command": {"enum": [n.split(".", 1)[1] for n in names], "description": "the command, after the participant's name"}},
            "messages": {_key(n): {"$ref": f"#/components/messages/{_key(n)}"} for n in names},
            "bindings": {"amqp": {
                "is": "routingKey",
                "exchange": {"name": topology.commands_exchange, "type": "topic", "durable": True, "autoDelete": False, "vhost": "/"},
                "bindingVersion": BINDING_VERSION,
            }},
        }
        for name in names:
            if name in found.notifications:
                components[_key(name)] = _notification_message(name, found.commands[name])
            else:
                components[_key(name)] = _command_message(name, found.commands[name], reply_to_of[name])
            operation: dict[str, Any] = {
                "action": "send",
                "title": f"send {name}",
                "description": "Persistent, mandatory, confirmed by the broker; AMQP properties: `message_id` (the dedup key: "
                               "the same key again is the same command), `correlation_id`, `reply_to`, `content_type`."
                               + (" A notification (`emit`): no `reply_to`, and nobody answers it." if name in found.notifications else ""),
                "channel": {"$ref": f"#/channels/{channel}"},
                "messages": [{"$ref": f"#/channels/{channel}/messages/{_key(name)}"}],
                "bindings": {"amqp": {"deliveryMode": 2, "mandatory": True, "bindingVersion": BINDING_VERSION}},
            }
            answers = found.answers[name]
            if answers:
                reply_channel = reply_channel_of[answers[0]]
                operation["reply"] = {
                    "address": {"location": "$message.header#/reply_to", "description": "the AMQP `reply_to` property"},
                    "channel": {"$ref": f"#/channels/{reply_channel}"},
                    "messages": [{"$ref": f"#/channels/{reply_channel}/messages/{_key(a)}"} for a in answers],
                }
            operations[f"send_{_key(name)}"] = operation
    description = definition.doc or ""
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": definition.title or definition.name,
            "version": str(definition.version),
            "description": (description + "\n\n" if description else "")
            + f"The commands and replies of the process `{definition.name}` over AMQP (procflow's RabbitMQ transport).",
        },
        "defaultContentType": "application/json",
        "servers": {"rabbitmq": {"host": "localhost:5672", "protocol": "amqp", "protocolVersion": "0.9.1"}},
        "channels": channels,
        "operations": operations,
        "components": {"messages": components},
    }


def _sent_by(process: m.ProcessDefinition) -> list[str]:
    names = []
    for node in process.steps:
        if node.command is not None:
            names.append(node.command.name)
        if node.compensation is not None:
            names.append(node.compensation.command.name)
    return names


def asyncapi_text(definition: m.ProcessDefinition, prefix: str = DEFAULT_PREFIX) -> str:
    """The AsyncAPI 3.0 document as JSON text (what `procflow export --format asyncapi` writes)."""
    return json.dumps(asyncapi_document(definition, prefix), indent=2) + "\n"
