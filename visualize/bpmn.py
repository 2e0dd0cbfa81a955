"""A process as BPMN 2.0 XML with its diagram (`procflow export FILE --format bpmn`).

One collaboration: the orchestrator's pool holds the process, and each participant is a
black-box pool that the commands go to and the replies come from, as message flows. The
flow view's IR gives the elements and, laid out by Graphviz (`bpmn_layout`), their places.
The mapping, and what BPMN cannot say (written as `documentation` on the element), is the
table in docs/decisions.md ("BPMN export"). Output is deterministic: the same definition
gives the same bytes.

Why one module of about 530 lines: it writes one XML document, whose elements refer to each
other by id (flows to nodes, shapes to elements, message flows to pools); its layout and its
wording already live apart (`bpmn_layout.py`, `bpmn_words.py`).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from procflow import __version__
from procflow.dsl import model as m
from procflow.dsl.paths import duration_text
from procflow.dsl.tasks import PARTICIPANT as TASK_PARTICIPANT
from procflow.visualize import bpmn_layout as lay
from procflow.visualize.bpmn_words import (
    process_doc,
    source_text,
    step_doc,
    task_due_seconds,
    task_words,
    wait_words,
)
from procflow.visualize.flow import flow_diagram
from procflow.visualize.ir import FlowDiagram, FlowEdge, FlowNode, words

MODEL = "http://www.omg.org/spec/BPMN/20100524/MODEL"
BPMNDI = "http://www.omg.org/spec/BPMN/20100524/DI"
DC = "http://www.omg.org/spec/DD/20100524/DC"
DI = "http://www.omg.org/spec/DD/20100524/DI"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
for _prefix, _uri in (("bpmn", MODEL), ("bpmndi", BPMNDI), ("dc", DC), ("di", DI), ("xsi", XSI)):
    ET.register_namespace(_prefix, _uri)

EXPRESSION_LANGUAGE = "https://procflow.dev/expressions"
"""Conditions are procflow expressions (README, "Expressions"), not XPath or FEEL."""

POOL_BAND = 30.0  # the pool's name is written in a band on its left
PARTICIPANT_HEIGHT = 60.0
PARTICIPANT_GAP = 30.0


def _tag(name: str) -> str:
    return f"{{{MODEL}}}{name}"


def iso_duration(seconds: float) -> str:
    """Seconds as an ISO 8601 duration, as BPMN timers want: 90 -> `PT1M30S`, 86400 -> `P1D`."""
    millis = round(seconds * 1000)
    days, millis = divmod(millis, 86_400_000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    text = "P" + (f"{days}D" if days else "")
    clock = (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
    if millis:
        clock += f"{millis // 1000}.{millis % 1000:03d}S".replace(".000S", "S")
    if clock or not days:
        text += "T" + (clock or "0S")
    return text


def _safe(text: str) -> str:
    """An XML id (NCName) made of the text: other characters become `_`."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", text)
    return name if re.match(r"[A-Za-z_]", name) else "_" + name


@dataclass
class _Export:
    """What is being built: the XML elements, and the shapes and edges of the diagram."""

    definition: m.ProcessDefinition
    diagram: FlowDiagram
    root: ET.Element
    process: ET.Element
    collaboration: ET.Element
    offset: tuple[float, float]
    pool_of: dict[str, lay.Box]
    shapes: list[tuple[str, lay.Box]] = field(default_factory=list)
    edges: list[tuple[str, list[tuple[float, float]]]] = field(default_factory=list)
    flows: list[ET.Element] = field(default_factory=list)  # sequence flows, after the nodes
    associations: list[ET.Element] = field(default_factory=list)
    messages: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    ids: set[str] = field(default_factory=set)
    participant_ids: dict[str, str] = field(default_factory=dict)
    entry: dict[str, str] = field(default_factory=dict)  # flow node -> element its flows arrive at
    exit: dict[str, str] = field(default_factory=dict)  # flow node -> element its `next` leaves
    boundary: dict[tuple[str, str], tuple[str, lay.Box]] = field(default_factory=dict)

    def new_id(self, text: str) -> str:
        """A unique id made of the text."""
        base = _safe(text)
        candidate, count = base, 1
        while candidate in self.ids:
            count += 1
            candidate = f"{base}_{count}"
        self.ids.add(candidate)
        return candidate

    def place(self, box: lay.Box) -> lay.Box:
        """A box of the layout moved into the orchestrator's pool."""
        return lay.Box(box.x + self.offset[0], box.y + self.offset[1], box.width, box.height)

    def point(self, point: tuple[float, float]) -> tuple[float, float]:
        """A point of the layout moved into the orchestrator's pool."""
        return (point[0] + self.offset[0], point[1] + self.offset[1])

    def message(self, name: str) -> str:
        """The id of the `message` named so, declared once at the top."""
        if name not in self.messages:
            self.messages[name] = self.new_id(f"message_{name}")
        return self.messages[name]

    def error(self, reason: str) -> str:
        """The id of the `error` a failure end throws, declared once at the top."""
        if reason not in self.errors:
            self.errors[reason] = self.new_id("error_" + reason[:40])
        return self.errors[reason]

    def element(self, tag: str, name: str | None, doc: list[str], **attrs: str) -> ET.Element:
        """A flow element of the process (documentation first, as the schema orders it)."""
        node = ET.SubElement(self.process, _tag(tag), {"id": attrs.pop("id"), **({"name": name} if name else {}), **attrs})
        _document(node, doc)
        return node

    def shape(self, element_id: str, box: lay.Box) -> None:
        """A shape of the diagram for an element."""
        self.shapes.append((element_id, box))

    def flow(self, source: str, target: str, points: list[tuple[float, float]], name: str = "") -> ET.Element:
        """A sequence flow with its route."""
        flow_id = self.new_id(f"flow_{source}_{target}")
        attrs = {"id": flow_id, **({"name": name} if name else {}), "sourceRef": source, "targetRef": target}
        element = ET.Element(_tag("sequenceFlow"), attrs)
        self.flows.append(element)
        self.edges.append((flow_id, points))
        return element

    def message_flow(self, source: str, target: str, message: str, points: list[tuple[float, float]]) -> None:
        """A message flow between the orchestrator's elements and a participant's pool."""
        flow_id = self.new_id(f"messageFlow_{source}_{target}")
        ET.SubElement(
            self.collaboration,
            _tag("messageFlow"),
            {"id": flow_id, "sourceRef": source, "targetRef": target, "messageRef": self.message(message)},
        )
        self.edges.append((flow_id, points))


def _document(element: ET.Element, lines: list[str]) -> None:
    text = "\n".join(line for line in lines if line)
    if text:
        ET.SubElement(element, _tag("documentation")).text = text


def _timer(parent: ET.Element, seconds: float | None, instant: str | None) -> None:
    timer = ET.SubElement(parent, _tag("timerEventDefinition"))
    if seconds is not None:
        ET.SubElement(timer, _tag("timeDuration"), {f"{{{XSI}}}type": "bpmn:tFormalExpression"}).text = iso_duration(seconds)
    else:
        attrs = {f"{{{XSI}}}type": "bpmn:tFormalExpression", "language": EXPRESSION_LANGUAGE}
        ET.SubElement(timer, _tag("timeDate"), attrs).text = instant or ""


# ---------------------------------------------------------------- flow nodes


def _boundary_kinds(node: m.StepNode) -> list[tuple[str, str]]:
    """(kind, what) of a receive task's boundary events, left to right."""
    kinds = [("success", reply) for reply in node.replies[1:]]
    kinds += [("failure", reply) for reply in node.failures]
    if node.timeout_fail is not None:
        kinds.append(("timeout", "timeout"))
    if node.compensation is not None:
        kinds.append(("compensation", "compensation"))
    return kinds


def _to_pool(box: lay.Box, pool: lay.Box) -> list[tuple[float, float]]:
    """A message flow's route: straight up from the shape's top to the participant's pool."""
    x = box.x + box.width / 2
    return [(x, box.y), (x, pool.y + pool.height)]


def _step(export: _Export, flow_node: FlowNode, node: m.StepNode, box: lay.Box) -> None:
    definition = export.definition
    kinds = _boundary_kinds(node)
    safe = _safe(node.id)
    receive_x = box.x
    is_task = node.task is not None  # a human task: one BPMN user task, no send and receive pair
    if node.command is not None and not is_task:
        send_id = export.new_id(f"send_{safe}")
        export.element("sendTask", words(node.name), step_doc(definition, node), id=send_id,
                       messageRef=export.message(node.command.name))
        send_box = lay.Box(box.x, box.y, lay.TASK_WIDTH, lay.TASK_HEIGHT)
        export.shape(send_id, send_box)
        export.entry[node.id] = send_id
        receive_x = box.x + lay.TASK_WIDTH + lay.TASK_GAP
        pool = export.pool_of.get(node.command.participant)
        if pool is not None:
            export.message_flow(send_id, export.participant_ids[node.command.participant], node.command.name,
                                _to_pool(send_box, pool))
    awaited = " or ".join(node.replies) or "an event"
    receive_id = export.new_id(f"task_{safe}" if is_task else f"receive_{safe}")
    receive_doc = [] if node.command is not None and not is_task else step_doc(definition, node)
    if len(node.replies) > 1:
        receive_doc.append(f"Completes on any of: {', '.join(node.replies)} (the others as message boundary events).")
    receive_name = f"await {awaited}" if node.command is not None and not is_task else words(node.name)
    attrs = {"messageRef": export.message(node.replies[0])} if node.replies and not is_task else {}
    export.element("userTask" if is_task else "receiveTask", receive_name, receive_doc, id=receive_id, **attrs)
    receive_box = lay.Box(receive_x, box.y, lay.receive_width(len(kinds)), lay.TASK_HEIGHT)
    export.shape(receive_id, receive_box)
    export.entry.setdefault(node.id, receive_id)
    export.exit[node.id] = receive_id
    if node.command is not None and not is_task:
        export.flow(export.entry[node.id], receive_id, [(box.x + lay.TASK_WIDTH, box.y + lay.TASK_HEIGHT / 2),
                                                        (receive_x, box.y + lay.TASK_HEIGHT / 2)])
        pool = export.pool_of.get(node.command.participant)
        if pool is not None and node.replies:
            export.message_flow(export.participant_ids[node.command.participant], receive_id, node.replies[0],
                                list(reversed(_to_pool(receive_box, pool))))
    for index, (kind, what) in enumerate(kinds):
        centre_x = receive_x + lay.BOUNDARY_PITCH * (index + 1)
        event_box = lay.Box(centre_x - lay.EVENT / 2, box.y + lay.TASK_HEIGHT - lay.EVENT / 2, lay.EVENT, lay.EVENT)
        event_id = export.new_id(f"{kind}_{safe}_{what}" if kind in ("success", "failure") else f"{kind}_{safe}")
        doc: list[str] = []
        if kind == "timeout":
            doc.append(task_words(node) if is_task else wait_words(node.timeout))
        timeout = (duration_text(task_due_seconds(node)) if is_task else node.timeout.text) if node.timeout else "timeout"
        name = {"success": what, "failure": what, "timeout": timeout,
                "compensation": ""}[kind]
        event = export.element("boundaryEvent", name or None, doc, id=event_id, attachedToRef=receive_id)
        if kind in ("success", "failure"):
            ET.SubElement(event, _tag("messageEventDefinition"), {"messageRef": export.message(what)})
            pool = export.pool_of.get(node.command.participant) if node.command else None
            if pool is not None and node.command is not None:
                export.message_flow(export.participant_ids[node.command.participant], event_id, what,
                                    list(reversed(_to_pool(event_box, pool))))
        elif kind == "timeout":
            _timer(event, task_due_seconds(node) if is_task else node.timeout.seconds if node.timeout else 0.0, None)
        else:
            ET.SubElement(event, _tag("compensateEventDefinition"))
        export.shape(event_id, event_box)
        export.boundary[(node.id, f"{kind}:{what}")] = (event_id, event_box)


def _undo(export: _Export, flow_node: FlowNode, node: m.StepNode, box: lay.Box) -> None:
    assert node.compensation is not None
    undo = node.compensation
    doc = [f"Undoes step `{node.name}` when a later step fails: sends `{undo.command.name}`"
           + (f" and awaits {' or '.join(undo.replies)}" if undo.replies else "")
           + (f"; {wait_words(undo.timeout)}" if undo.timeout else "") + ".",
           "When the undo cannot complete the instance is `compensation_failed` until an operator retries it."]
    written = source_text(export.definition, undo.span)
    doc.append(f"As written: `{written}`" if written else "")
    undo_id = export.new_id(f"undo_{_safe(node.id)}")
    export.element("sendTask", flow_node.title, doc, id=undo_id, isForCompensation="true",
                   messageRef=export.message(undo.command.name))
    export.shape(undo_id, box)
    export.entry[flow_node.id] = export.exit[flow_node.id] = undo_id
    pool = export.pool_of.get(undo.command.participant)
    if pool is not None:
        export.message_flow(undo_id, export.participant_ids[undo.command.participant], undo.command.name,
                            _to_pool(box, pool))


def _fail(export: _Export, node: m.FailNode, box: lay.Box, compensates: bool) -> None:
    doc = [f"The instance fails ({node.reason})"
           + (" after the completed steps are undone, in reverse order (the compensation throw before it)."
              if compensates else ".")]
    end_box = box
    if compensates:
        throw_id = export.new_id(f"compensate_{_safe(node.id)}")
        throw = export.element("intermediateThrowEvent", "undo completed steps", [], id=throw_id)
        ET.SubElement(throw, _tag("compensateEventDefinition"))
        throw_box = lay.Box(box.x, box.y, lay.EVENT, lay.EVENT)
        export.shape(throw_id, throw_box)
        end_box = lay.Box(box.x + box.width - lay.EVENT, box.y, lay.EVENT, lay.EVENT)
        export.entry[node.id] = throw_id
    end_id = export.new_id(f"fail_{_safe(node.id)}")
    end = export.element("endEvent", node.reason, doc, id=end_id)
    ET.SubElement(end, _tag("errorEventDefinition"), {"errorRef": export.error(node.reason)})
    export.shape(end_id, end_box)
    export.entry.setdefault(node.id, end_id)
    if compensates:
        y = box.y + lay.EVENT / 2
        export.flow(export.entry[node.id], end_id, [(box.x + lay.EVENT, y), (end_box.x, y)])


def _in_branch(diagram: FlowDiagram, node: FlowNode) -> bool:
    """Whether the node is inside a parallel branch (at any depth)."""
    clusters = {cluster.id: cluster for cluster in diagram.clusters}
    current = clusters.get(node.cluster) if node.cluster else None
    while current is not None:
        if current.kind == "branch":
            return True
        current = clusters.get(current.parent) if current.parent else None
    return False


_GATEWAYS = {"xor": "exclusiveGateway", "loop": "exclusiveGateway", "until": "exclusiveGateway",
             "fork": "parallelGateway", "join": "parallelGateway", "race": "eventBasedGateway",
             # A for-each's head and gather: BPMN's multi-instance marker sits on an activity, which
             # the flow view does not draw around the block; an inclusive gateway (one or more ways
             # run) is the nearest gateway SpiffWorkflow reads.
             "each": "inclusiveGateway", "gather": "inclusiveGateway"}


def _node(export: _Export, flow_node: FlowNode, box: lay.Box, compensates: bool) -> None:
    """The BPMN elements of one flow node, placed in its box."""
    definition = export.definition
    base = flow_node.id.removesuffix(".undo").split(".arm")[0]
    node = definition.nodes.get(flow_node.id) or definition.nodes[base]
    element_id = ""
    match flow_node.kind:
        case "start":
            element_id = export.new_id("start")
            export.element("startEvent", "start", process_doc(definition)[:1], id=element_id)
        case "end":
            element_id = export.new_id(f"end_{_safe(flow_node.id)}")
            said = "procflow `end`: the whole instance completes here."
            if isinstance(node, m.EndNode) and node.timed_out:
                said = "The end of the deadline handler: the instance is `timed_out`, nothing undone."
            elif isinstance(node, m.EndNode) and node.outcome is not None:
                said = f'procflow `end "{node.outcome}"`: the whole instance completes here with that outcome.'
            end = export.element("endEvent", flow_node.title, [said], id=element_id)
            if _in_branch(export.diagram, flow_node):
                # `end` in a parallel branch completes the whole instance: BPMN's terminate end.
                ET.SubElement(end, _tag("terminateEventDefinition"))
        case "fail":
            assert isinstance(node, m.FailNode)
            _fail(export, node, box, compensates)
            return
        case "step" | "event":
            assert isinstance(node, m.StepNode)
            _step(export, flow_node, node, box)
            return
        case "undo":
            assert isinstance(node, m.StepNode)
            _undo(export, flow_node, node, box)
            return
        case "timer":
            assert isinstance(node, m.StepNode)
            element_id = export.new_id(f"timer_{_safe(flow_node.id)}")
            event = export.element("intermediateCatchEvent", flow_node.title, step_doc(definition, node), id=element_id)
            _timer(event, node.timer_seconds, node.timer_until.text if node.timer_until else None)
        case "catch":
            assert isinstance(node, m.RaceNode)
            arm = node.arms[int(flow_node.id.rsplit(".arm", 1)[1]) - 1]
            element_id = export.new_id(f"catch_{_safe(flow_node.id)}")
            doc = [f"Any of {', '.join(arm.messages)} ends this wait." if len(arm.messages) > 1 else "",
                   f"The message's data is bound as `{arm.bind}`." if arm.bind else ""]
            event = export.element("intermediateCatchEvent", flow_node.title, doc, id=element_id)
            if arm.messages:
                ET.SubElement(event, _tag("messageEventDefinition"), {"messageRef": export.message(arm.messages[0])})
            else:
                _timer(event, arm.timer_seconds, arm.timer_at.text if arm.timer_at else None)
        case "set":
            assert isinstance(node, m.SetNode)
            element_id = export.new_id(f"set_{_safe(flow_node.id)}")
            doc = [f"procflow `set {node.name} = {node.value.text}`: the orchestrator keeps a variable (no participant is asked)."]
            export.element("scriptTask", flow_node.title, doc, id=element_id)
        case "throw":
            assert isinstance(node, m.EmitNode)
            element_id = export.new_id(f"emit_{_safe(flow_node.id)}")
            doc = [f"procflow `emit {node.message.name}`: a notification published through the outbox; nobody answers it."]
            event = export.element("intermediateThrowEvent", flow_node.title, doc, id=element_id)
            ET.SubElement(event, _tag("messageEventDefinition"), {"messageRef": export.message(node.message.name)})
        case "call":
            assert isinstance(node, m.CallNode)
            element_id = export.new_id(f"call_{_safe(flow_node.id)}")
            doc = [f"Runs process `{node.process}` in the same instance (export it from its own file); "
                   "its completed steps join this process's compensation."
                   + (f" Its result is bound as `{node.bind}`." if node.bind else "")]
            export.element("callActivity", flow_node.title, doc, id=element_id, calledElement=_safe(node.process))
        case kind:
            doc = []
            if isinstance(node, m.LoopNode):
                doc.append(f"repeat {node.name}" + (f": at most {node.max} rounds, then it leaves as if `until` held"
                                                    if node.max is not None else ""))
            if isinstance(node, m.RaceNode):
                doc.append(f"race {node.name}: the first message or timer to arrive wins.")
            gateway = _GATEWAYS[kind]
            if isinstance(node, m.JoinNode) and node.first:
                doc.append(f"first of {node.name}: the first branch to arrive goes on; the others are cancelled "
                           "and what they completed is undone, most recent first.")
                gateway = "complexGateway"
            element_id = export.new_id(f"{kind}_{_safe(flow_node.id)}")
            export.element(gateway, getattr(node, "name", "") or None, doc, id=element_id)
    export.shape(element_id, box)
    export.entry[flow_node.id] = export.exit[flow_node.id] = element_id


# ---------------------------------------------------------------- sequence flows


def _condition(node: m.AnyNode, edge: FlowEdge, arm_index: int) -> str | None:
    if isinstance(node, m.XorNode) and edge.kind == "arm":
        arm = node.arms[arm_index]
        if arm.condition is not None:
            return arm.condition.text
        subject = node.subject.text if node.subject else "value"
        return f"{subject} in {json.dumps(list(arm.values))}"
    if isinstance(node, m.UntilNode) and edge.kind == "exit":
        return node.until.text
    if isinstance(node, m.UntilNode) and edge.kind == "bound":
        return f"not ({node.until.text}) and the loop ran its max rounds"
    return None


def _connect(export: _Export, diagram: FlowDiagram, routes: dict[int, list[tuple[float, float]]]) -> None:
    definition = export.definition
    arm_counter: dict[str, int] = {}
    for index, edge in enumerate(diagram.edges):
        points = [export.point(p) for p in routes.get(index, [])]
        node = definition.nodes.get(edge.source)
        if edge.kind == "compensation":
            event_id, event_box = export.boundary[(edge.source, "compensation:compensation")]
            handler = export.entry[edge.target]
            association_id = export.new_id(f"association_{event_id}")
            export.associations.append(ET.Element(_tag("association"), {
                "id": association_id, "associationDirection": "One", "sourceRef": event_id, "targetRef": handler}))
            handler_box = dict(export.shapes)[handler]
            start = (event_box.x + event_box.width / 2, event_box.y + event_box.height)
            end_y = handler_box.y if handler_box.y > start[1] else handler_box.y + handler_box.height
            export.edges.append((association_id, [start, (handler_box.x + handler_box.width / 2, end_y)]))
            continue
        source = export.exit.get(edge.source, export.entry.get(edge.source, ""))
        if edge.kind == "deadline":
            source, points = _deadline_start(export, edge.target), []
        if edge.kind in ("failure", "timeout"):
            key = f"failure:{edge.label}" if edge.kind == "failure" else "timeout:timeout"
            source, event_box = export.boundary[(edge.source, key)]
            points = [(event_box.x + event_box.width / 2, event_box.y + event_box.height), *points[1:]]
        target = export.entry[edge.target]
        arm = arm_counter.get(edge.source, 0)
        if edge.kind == "arm":
            arm_counter[edge.source] = arm + 1
        name = edge.label if edge.kind in ("arm", "default", "exit", "back", "message", "timer") else ""
        if edge.kind == "next" and isinstance(node, m.XorNode | m.UntilNode):
            name = edge.label
        flow = export.flow(source, target, points if len(points) >= 2 else _straight(export, source, target), name)
        condition = _condition(node, edge, arm) if node is not None else None
        if condition is not None:
            ET.SubElement(flow, _tag("conditionExpression"),
                          {f"{{{XSI}}}type": "bpmn:tFormalExpression", "language": EXPRESSION_LANGUAGE}).text = condition
        if edge.kind in ("default", "back"):
            gateway = export.process.find(f"*[@id='{source}']")
            if gateway is not None:
                gateway.set("default", flow.get("id", ""))
        if edge.kind == "next" and isinstance(node, m.StepNode):
            for reply in node.replies[1:]:
                event_id, event_box = export.boundary[(edge.source, f"success:{reply}")]
                bottom = (event_box.x + event_box.width / 2, event_box.y + event_box.height)
                export.flow(event_id, target, [bottom, points[-1] if points else bottom], reply)


def _deadline_start(export: _Export, handler: str) -> str:
    """The deadline handler starts from a timer start event of its own, beside the process's
    start (BPMN's interrupting timer event subprocess, drawn flat)."""
    definition = export.definition
    event_id = export.new_id("deadline_start")
    doc = ["The instance's deadline: when it passes, every wait is abandoned and this path runs; "
           "at its end the instance is `timed_out`, nothing undone (an interrupting timer event subprocess)."]
    event = export.element("startEvent", "deadline", doc, id=event_id)
    _timer(event, definition.deadline_seconds or 0.0, None)
    target_box = dict(export.shapes)[export.entry[handler]]
    box = lay.Box(target_box.x - 2 * lay.EVENT, target_box.y + target_box.height / 2 - lay.EVENT / 2, lay.EVENT, lay.EVENT)
    export.shape(event_id, box)
    return event_id


def _straight(export: _Export, source: str, target: str) -> list[tuple[float, float]]:
    boxes = dict(export.shapes)
    return [boxes[source].centre, boxes[target].centre]


# ---------------------------------------------------------------- the document


def _diagram(export: _Export, pools: list[tuple[str, lay.Box]]) -> None:
    diagram = ET.SubElement(export.root, f"{{{BPMNDI}}}BPMNDiagram", {"id": "diagram"})
    plane = ET.SubElement(diagram, f"{{{BPMNDI}}}BPMNPlane", {"id": "plane", "bpmnElement": export.collaboration.get("id", "")})
    for element_id, box in pools:
        shape = ET.SubElement(plane, f"{{{BPMNDI}}}BPMNShape", {"id": f"{element_id}_di", "bpmnElement": element_id,
                                                               "isHorizontal": "true"})
        _bounds(shape, box)
    for element_id, box in export.shapes:
        shape = ET.SubElement(plane, f"{{{BPMNDI}}}BPMNShape", {"id": f"{element_id}_di", "bpmnElement": element_id})
        _bounds(shape, box)
    for element_id, points in export.edges:
        edge = ET.SubElement(plane, f"{{{BPMNDI}}}BPMNEdge", {"id": f"{element_id}_di", "bpmnElement": element_id})
        for x, y in points:
            ET.SubElement(edge, f"{{{DI}}}waypoint", {"x": f"{x:g}", "y": f"{y:g}"})


def _bounds(shape: ET.Element, box: lay.Box) -> None:
    ET.SubElement(shape, f"{{{DC}}}Bounds", {"x": f"{round(box.x, 1):g}", "y": f"{round(box.y, 1):g}",
                                             "width": f"{round(box.width, 1):g}", "height": f"{round(box.height, 1):g}"})


def bpmn_xml(definition: m.ProcessDefinition) -> str:
    """The process as BPMN 2.0 XML with its diagram (shapes and edges laid out by Graphviz)."""
    diagram = flow_diagram(definition, expand=True, share_ends=False, boundary_events=False)  # every node the model has
    compensates = any(isinstance(n, m.StepNode) and n.compensation for n in definition.nodes.values())
    sizes: dict[str, tuple[float, float]] = {}
    for flow_node in diagram.nodes:
        record = definition.nodes.get(flow_node.id)
        events = len(_boundary_kinds(record)) if isinstance(record, m.StepNode) else 0
        sizes[flow_node.id] = lay.node_size(flow_node, events, compensates)
    layout = lay.layout(diagram, sizes)

    process_id = _safe(definition.name)
    root = ET.Element(_tag("definitions"), {
        "id": f"definitions_{process_id}", "targetNamespace": f"https://procflow.dev/processes/{definition.name}",
        "exporter": "procflow", "exporterVersion": __version__})
    # The task list human tasks are commanded to is no pool: a user task exchanges no messages.
    used = [p for p in definition.participants.values() if not (p.name == TASK_PARTICIPANT and any(n.task for n in definition.steps))]
    participants_top = len(used) * (PARTICIPANT_HEIGHT + PARTICIPANT_GAP)
    width = layout.width + POOL_BAND
    pool_of = {p.name: lay.Box(0, i * (PARTICIPANT_HEIGHT + PARTICIPANT_GAP), width, PARTICIPANT_HEIGHT)
               for i, p in enumerate(used)}
    collaboration = ET.Element(_tag("collaboration"), {"id": f"collaboration_{process_id}"})
    process = ET.Element(_tag("process"), {"id": process_id, "name": definition.title or definition.name,
                                           "isExecutable": "true"})
    _document(process, process_doc(definition))
    export = _Export(definition, diagram, root, process, collaboration, (POOL_BAND, participants_top), pool_of)
    export.ids.update({process_id, collaboration.get("id", ""), "diagram", "plane", root.get("id", "")})
    orchestrator_id = export.new_id(f"pool_{process_id}")
    ET.SubElement(collaboration, _tag("participant"), {"id": orchestrator_id, "name": definition.title or definition.name,
                                                       "processRef": process_id})
    pools = [(orchestrator_id, lay.Box(0, participants_top, width, layout.height))]
    for participant in used:
        participant_id = export.new_id(f"participant_{_safe(participant.name)}")
        export.participant_ids[participant.name] = participant_id
        ET.SubElement(collaboration, _tag("participant"), {"id": participant_id, "name": participant.display})
        pools.append((participant_id, pool_of[participant.name]))
    for flow_node in diagram.nodes:
        _node(export, flow_node, export.place(layout.boxes[flow_node.id]), compensates)
    _connect(export, diagram, layout.routes)
    process.extend(export.flows)
    process.extend(export.associations)
    for name, message_id in sorted(export.messages.items(), key=lambda item: item[1]):
        ET.SubElement(root, _tag("message"), {"id": message_id, "name": name})
    for reason, error_id in sorted(export.errors.items(), key=lambda item: item[1]):
        ET.SubElement(root, _tag("error"), {"id": error_id, "name": reason, "errorCode": reason})
    root.append(collaboration)
    root.append(process)
    _diagram(export, pools)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
