"""Diagrams: golden DOT and Mermaid, SVG drawn by the real `dot`, the lesson's sequence diagram,
instance overlays, and a clear error when Graphviz is missing."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from procflow import visualize
from procflow.dsl import compile_source, load
from procflow.dsl import model as m
from procflow.errors import ProcflowError
from procflow.visualize import DiagramError, GraphvizMissing
from procflow.visualize.ir import (
    BlockEnd,
    BlockStart,
    FlowDiagram,
    Message,
    Note,
    SequenceDiagram,
    words,
)

ROOT = Path(__file__).resolve().parent.parent
ORDER = ROOT / "processes" / "order_fulfillment.proc"
LESSON = ROOT.parent / "shared" / "mission" / "orchestration-lesson.txt"
LESSON_DIAGRAM = """
sequenceDiagram
participant O as Orchestrator
participant I as Inventory
participant P as Payment
participant S as Shipping
O->>I: reserve inventory
I-->>O: inventory reserved
O->>P: authorize payment
P-->>O: payment authorized
O->>S: create shipment
S-->>O: shipment created
"""


def _regen() -> ModuleType:
    """scripts/regen_diagrams.py: the one list of goldens, shared with the tests."""
    spec = importlib.util.spec_from_file_location("regen_diagrams", ROOT / "scripts" / "regen_diagrams.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REGEN = _regen()
CASES = REGEN.golden_cases()
SOURCES: list[Path] = REGEN.sources()
needs_dot = pytest.mark.needs_dot  # skipped, saying why, where dot is missing (tests/conftest.py)


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.strip().splitlines() if line.strip()]


# ---------------------------------------------------------------- goldens


@pytest.mark.parametrize(("golden", "make"), CASES, ids=[path.name for path, _ in CASES])
def test_golden(golden: Path, make: Any) -> None:
    assert golden.exists(), f"{golden.name} is missing: run python scripts/regen_diagrams.py"
    assert make() == golden.read_text(encoding="utf-8"), (
        f"{golden.name} differs: if the change is wanted, run python scripts/regen_diagrams.py and review the diff"
    )


def test_every_process_has_goldens_for_both_views() -> None:
    made = {path.name for path, _ in CASES}
    for source in SOURCES:
        for view in ("flow", "sequence"):
            assert {f"{source.stem}-{view}.dot", f"{source.stem}-{view}.mmd"} <= made


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_output_is_deterministic(source: Path) -> None:
    first = [visualize.render_text(load(source), v, f) for v in ("flow", "sequence") for f in ("dot", "mermaid")]
    again = [visualize.render_text(load(source), v, f) for v in ("flow", "sequence") for f in ("dot", "mermaid")]
    assert first == again


# ---------------------------------------------------------------- the lesson's diagram


def test_happy_path_mermaid_is_the_lessons_diagram() -> None:
    text = visualize.render_text(load(ORDER), "sequence", "mermaid")
    assert _lines(text) == _lines(LESSON_DIAGRAM)
    assert visualize.render_text(load(ORDER), "sequence", "mermaid", path_name="happy") == text
    if LESSON.exists():  # the lesson itself, where the shared folder is beside the repository
        lesson = LESSON.read_text(encoding="utf-8")
        assert "\n".join(_lines(LESSON_DIAGRAM)) in "\n".join(_lines(lesson))


def test_render_prints_the_lessons_diagram_from_the_command_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "procflow", "render", str(ORDER), "--view", "sequence", "--format", "mermaid"],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert _lines(done.stdout) == _lines(LESSON_DIAGRAM)


def test_labels_come_from_the_process_names() -> None:
    text = """
    process renamed {
      participant warehouse "Warehouse"
      step pick_parcel {
        send warehouse.pick
        await parcel_picked
        compensate warehouse.put_back awaiting parcel_returned
      }
      step ship_parcel {
        send warehouse.ship
        await parcel_shipped
        on parcel_lost fail "lost"
      }
    }
    """
    definition = compile_source(text)
    diagram = visualize.extract(definition, "sequence", path_name="ship_parcel.parcel_lost")
    assert isinstance(diagram, SequenceDiagram)
    messages = [(i.source, i.target, i.label, i.kind) for i in diagram.items if isinstance(i, Message)]
    assert messages == [
        ("O", "W", "pick parcel", "command"),
        ("W", "O", "parcel picked", "reply"),
        ("O", "W", "ship parcel", "command"),
        ("W", "O", "parcel lost", "failure"),
        ("O", "W", "warehouse.put_back", "undo"),
        ("W", "O", "parcel returned", "undo_reply"),
    ]


# ---------------------------------------------------------------- other paths and instances


def test_compensation_path_is_the_reverse_sequence() -> None:
    diagram = visualize.extract(load(ORDER), "sequence", path_name="create_shipment.shipment_rejected")
    assert isinstance(diagram, SequenceDiagram)
    items = diagram.items
    tail = [(i.source, i.target, i.label) for i in items if isinstance(i, Message)][-5:]
    assert tail == [
        ("S", "O", "shipment rejected"),
        ("O", "P", "payment.void"),
        ("P", "O", "payment voided"),
        ("O", "I", "inventory.release"),
        ("I", "O", "inventory released"),
    ]
    assert Note(("O",), "failed: shipping refused the order", "fail") in items
    assert BlockStart("compensation", "undo the completed steps, most recent first") in items


def test_timeouts_and_retries_are_notes() -> None:
    diagram = visualize.extract(load(ORDER), "sequence", path_name="reserve_inventory.timeout")
    assert isinstance(diagram, SequenceDiagram)
    assert [(type(i).__name__, getattr(i, "label", getattr(i, "text", ""))) for i in diagram.items] == [
        ("Message", "reserve inventory"),
        ("Note", "timeout 30s: no reply, retry 1 of 2 in 5s"),
        ("Message", "reserve inventory (retry 1)"),
        ("Note", "timeout 30s: no reply, retry 2 of 2 in 5s"),
        ("Message", "reserve inventory (retry 2)"),
        ("Note", "timeout 30s: no reply"),
        ("Note", "failed: reserve_inventory timed out"),
    ]
    mermaid = visualize.render_text(load(ORDER), "sequence", "mermaid", path_name="authorize_payment.timeout")
    assert "Note over O,P: timeout 1h: no reply" in _lines(mermaid)


def test_gateways_parallel_blocks_loops_and_calls_become_blocks() -> None:
    diagram = visualize.extract(load(ROOT / "tests" / "cases" / "diagrams" / "claim_handling.proc"), "sequence")
    assert isinstance(diagram, SequenceDiagram)
    starts = [(i.kind, i.label) for i in diagram.items if isinstance(i, BlockStart)]
    assert starts == [
        ("alt", "input.amount > 1000"),
        ("alt", "on documents received"),
        ("par", "pay"),
        ("alt", 'input.kind is "car"'),
        ("loop", "repeat follow up until feedback_given.score > 3, at most 3 times"),
        ("call", "call archive-claim"),
    ]
    assert sum(isinstance(i, BlockEnd) for i in diagram.items) == len(starts)
    assert [lifeline.alias for lifeline in diagram.lifelines] == ["O", "P", "A", "Pa", "Pr", "Pg", "Ar", "E"]


def test_unknown_path_is_refused_with_a_suggestion() -> None:
    with pytest.raises(DiagramError, match="did you mean `create_shipment.timeout`"):
        visualize.render_text(load(ORDER), "sequence", "mermaid", path_name="create_shipment.timeot")
    with pytest.raises(DiagramError, match="unknown view"):
        visualize.render_text(load(ORDER), "gantt", "dot")
    with pytest.raises(DiagramError, match="unknown format"):
        visualize.render_text(load(ORDER), "flow", "svg")


def _state(name: str) -> dict[str, Any]:
    state: dict[str, Any] = json.loads((ROOT / "tests" / "cases" / "diagrams" / name).read_text(encoding="utf-8"))
    return state


def test_instance_overlay_marks_completed_and_waiting_steps() -> None:
    state = _state("order_fulfillment-waiting.state.json")
    diagram = visualize.extract(load(ORDER), "flow", instance=state)
    assert isinstance(diagram, FlowDiagram)
    marked = {n.id: (n.state, n.note) for n in diagram.nodes if n.state}
    assert marked == {
        "reserve_inventory": ("completed", None),
        "authorize_payment": ("current", "waits until 2026-03-23T17:00:00Z"),
    }
    assert diagram.legend is not None
    assert diagram.legend.heading == "instance wf_401: waiting_for_payment"
    assert "authorize_payment waits for payment_authorized or payment_declined until 2026-03-23T17:00:00Z" in (
        diagram.legend.lines
    )
    taken = {(e.source, e.target) for e in diagram.edges if e.taken}
    assert taken == {("start", "reserve_inventory"), ("reserve_inventory", "authorize_payment")}


def test_instance_overlay_marks_failed_and_compensated_steps() -> None:
    state = _state("order_fulfillment-waiting.state.json")
    state.update(
        status="compensated",
        waits=[],
        completed=[*state["completed"], {**state["completed"][0], "step": "authorize_payment"}],
        failure={"cause": "reply", "reason": "shipping refused the order", "step": "create_shipment", "at": "x"},
        compensation={"pending": [], "undone": [{"step": "authorize_payment", "frame": "main", "commandName": "payment.void"},
                                               {"step": "reserve_inventory", "frame": "main", "commandName": "inventory.release"}],
                      "failed": None},
    )
    diagram = visualize.extract(load(ORDER), "flow", instance=state)
    assert isinstance(diagram, FlowDiagram)
    marked = {n.id: n.state for n in diagram.nodes if n.state}
    assert marked == {
        "reserve_inventory": "compensated",
        "reserve_inventory.undo": "compensated",
        "authorize_payment": "compensated",
        "authorize_payment.undo": "compensated",
        "create_shipment": "failed",
        "create_shipment.shipment_rejected": "failed",
    }


def test_instance_sequence_tells_what_happened() -> None:
    state = _state("order_fulfillment-waiting.state.json")
    diagram = visualize.extract(load(ORDER), "sequence", instance=state)
    assert isinstance(diagram, SequenceDiagram)
    assert [(i.source, i.target, i.label) for i in diagram.items if isinstance(i, Message)] == [
        ("O", "I", "reserve inventory"),
        ("I", "O", "inventory reserved"),
        ("O", "P", "authorize payment"),
    ]
    assert diagram.items[-1] == Note(
        ("O",), "wf_401: waiting_for_payment, waits for payment authorized or payment declined until 2026-03-23T17:00:00Z",
        "status",
    )


# ---------------------------------------------------------------- mermaid safety


def test_mermaid_labels_are_escaped() -> None:
    text = """
    process odd-names {
      participant svc "Service; #1"
      step first { send svc.act
        await done }
      if input.code == "a;b#c" { step second { send svc.act
        await done } }
    }
    """
    definition = compile_source(text)
    sequence = visualize.render_text(definition, "sequence", "mermaid")
    flow = visualize.render_text(definition, "flow", "mermaid")
    for line in _lines(sequence)[1:]:
        assert ";" not in line.replace("#59;", "").replace("#35;", "")
    assert "participant S as Service#59; #35;1" in sequence
    assert 'input.code == #quot;a#59;b#35;c#quot;' in flow


def test_mermaid_ids_avoid_keywords() -> None:
    flow = visualize.render_text(load(ORDER), "flow", "mermaid")
    ids = {m.group(1) for m in re.finditer(r"^\s+(\w+)[(\[{]", flow, re.M)}
    assert "n_end" in ids and "end" not in ids


# ---------------------------------------------------------------- images


def _svg_text(svg: bytes) -> str:
    root = ET.fromstring(svg)
    return " ".join("".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text"))


def _labels(definition: m.ProcessDefinition, view: str) -> list[str]:
    labels = []
    for step in definition.steps:
        if view == "flow" or step.command is not None or step.is_timer:
            labels.append(words(step.name))
    return labels


@needs_dot
@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
@pytest.mark.parametrize("view", ["flow", "sequence"])
def test_every_view_draws_as_svg_with_every_step(source: Path, view: str) -> None:
    definition = load(source)
    text = _svg_text(visualize.render_image(definition, view, "svg"))
    for label in _labels(definition, view):
        assert label in text, f"{label!r} is not in the {view} SVG of {source.name}"


@needs_dot
def test_overlays_swimlanes_and_png_draw() -> None:
    definition = load(ORDER)
    state = _state("order_fulfillment-waiting.state.json")
    svg = visualize.render_image(definition, "flow", "svg", instance=state)
    assert "waits until 2026-03-23T17:00:00Z" in _svg_text(svg)
    lanes = _svg_text(visualize.render_image(definition, "flow", "svg", swimlanes=True))
    assert all(name in lanes for name in ("Inventory", "Payment", "Shipping")) and "Orchestrator" not in lanes
    png = visualize.render_image(definition, "sequence", "png", path_name="create_shipment.shipment_rejected")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


# ---------------------------------------------------------------- Graphviz missing


def test_missing_dot_fails_with_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    definition = load(ORDER)
    with pytest.raises(GraphvizMissing) as raised:
        visualize.render_image(definition, "flow", "svg")
    message = str(raised.value)
    assert isinstance(raised.value, ProcflowError)
    assert "\n" not in message
    assert "apt-get install graphviz" in message and "brew install graphviz" in message
    assert "--format dot and --format mermaid work without it" in message
    assert visualize.render_text(definition, "flow", "dot").startswith("digraph")


def test_missing_dot_on_the_command_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PATH"}
    env["PATH"] = str(tmp_path)
    command = [sys.executable, "-m", "procflow", "render", str(ORDER), "--view", "flow"]
    image = subprocess.run([*command, "--format", "svg", "-o", str(tmp_path / "x.svg")],
                           capture_output=True, text=True, env=env, check=False)
    assert image.returncode == 1
    assert len(image.stderr.strip().splitlines()) == 1
    assert "apt-get install graphviz" in image.stderr
    text = subprocess.run([*command, "--format", "dot"], capture_output=True, text=True, env=env, check=False)
    assert text.returncode == 0 and text.stdout.startswith("digraph")


# ---------------------------------------------------------------- the committed images


def test_committed_images_are_current() -> None:
    stale = [line for line in REGEN.check() if "procflow run" not in line]
    assert stale == [], "run python scripts/regen_diagrams.py"
