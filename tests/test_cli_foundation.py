"""The command-line contract, exercised as a user runs it: in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from procflow import __version__

ROOT = Path(__file__).resolve().parent.parent
ORDER = ROOT / "processes" / "order_fulfillment.proc"
LESSON = ROOT.parent / "shared" / "mission" / "orchestration-lesson.txt"


def procflow(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "procflow", *args], capture_output=True, text=True, cwd=cwd or ROOT, timeout=120
    )


def test_run_stop_at_prints_the_lessons_state_and_command() -> None:
    result = procflow(
        "run", str(ORDER),
        "--input", '{"orderId": "ord_441", "amount": 180.0}',
        "--workflow-id", "wf_401", "--now", "2026-03-23T16:00:00Z",
        "--stop-at", "authorize_payment", "--json",
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    state = document["state"]
    assert {key: state[key] for key in ("workflowId", "type", "status", "completedSteps", "nextAction", "timeoutAt")} == {
        "workflowId": "wf_401",
        "type": "order-fulfillment",
        "status": "waiting_for_payment",
        "completedSteps": ["inventory_reserved"],
        "nextAction": "authorize_payment",
        "timeoutAt": "2026-03-23T17:00:00Z",
    }
    # The lesson's six fields come first, in the lesson's order.
    assert list(state)[:6] == ["workflowId", "type", "status", "completedSteps", "nextAction", "timeoutAt"]
    payments = [c for c in document["commands"] if c["commandName"] == "payment.authorize"]
    assert payments == [
        {
            "commandName": "payment.authorize",
            "workflowId": "wf_401",
            "correlationId": "ord_441",
            "replyTo": "workflow-replies",
            "data": {"orderId": "ord_441", "amount": 180.0},
        }
    ]
    assert document["history"] == state["history"] and len(document["history"]) == 2


def test_run_prints_a_readable_trace_of_a_compensating_path() -> None:
    result = procflow("run", str(ORDER), "--scenario", "shipping_rejected", "--workflow-id", "wf_9")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    sends = [line.split("-> ")[1].split(" ")[0] for line in lines if "  send " in line]
    assert sends == ["inventory.reserve", "payment.authorize", "shipping.create", "payment.void", "inventory.release"]
    assert "status          compensated" in lines
    assert "compensation    payment.void -> inventory.release" in lines


LESSON_COPY = ROOT / "tests" / "cases" / "lesson-sequence.mmd"


def _lesson_sequence() -> list[str]:
    """The lesson's diagram, from a verbatim copy (the lesson itself lives outside the repo)."""
    copy = [line.strip() for line in LESSON_COPY.read_text(encoding="utf-8").splitlines()]
    if LESSON.exists():
        text = LESSON.read_text(encoding="utf-8").splitlines()
        begin = text.index("sequenceDiagram")
        assert [line.strip() for line in text[begin : begin + 11]] == copy
    return copy


def test_sequence_view_is_the_lessons_diagram() -> None:
    result = procflow("render", str(ORDER), "--view", "sequence", "--format", "mermaid")
    assert result.returncode == 0, result.stderr
    printed = [" ".join(line.split()) for line in result.stdout.splitlines() if line.strip()]
    assert printed == [" ".join(line.split()) for line in _lesson_sequence()]


@pytest.mark.parametrize(("name", "starts"), [("flow.png", b"\x89PNG"), ("flow.svg", b"<?xml"), ("flow.mmd", b"flowchart"), ("flow.gv", b"digraph")])
def test_render_writes_what_the_output_file_is_named_for(tmp_path: Path, name: str, starts: bytes) -> None:
    result = procflow("render", str(ORDER), "-o", str(tmp_path / name))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / name).read_bytes().lstrip().startswith(starts)


def test_validate_exit_codes(tmp_path: Path) -> None:
    good = procflow("validate", str(ORDER))
    assert good.returncode == 0, good.stdout + good.stderr
    bad = tmp_path / "bad.proc"
    bad.write_text(ORDER.read_text(encoding="utf-8").replace("send payment.authorize", "send paymnt.authorize"), encoding="utf-8")
    result = procflow("validate", str(ORDER), str(bad))
    assert result.returncode == 1
    assert f"{bad}:23:10: error[E110]: unknown participant `paymnt`; did you mean `payment`?" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    usage = procflow("validate")
    assert usage.returncode == 2
    assert procflow("validate", "--format", "xml", str(ORDER)).returncode == 2


def test_bad_inputs_give_one_clear_message(tmp_path: Path) -> None:
    cases = [
        ("run", str(ORDER), "--input", "{not json", "--workflow-id", "w"),
        ("run", str(ORDER), "--input", '{"orderId": 5}', "--workflow-id", "w"),
        ("run", str(ORDER), "--input", "{}", "--now", "yesterday"),
        ("run", str(ORDER), "--input", "{}", "--stop-at", "no_such_step"),
        ("run", str(tmp_path / "missing.proc"), "--input", "{}"),
    ]
    for args in cases:
        result = procflow(*args)
        assert result.returncode in (1, 2), args
        assert "Traceback" not in result.stderr, result.stderr
        assert result.stderr.strip(), args
    missing_amount = procflow("run", str(ORDER), "--input", '{"orderId": "o"}')
    assert "the input breaks the contract of `order-fulfillment`: \"amount\" is a required property" in missing_amount.stderr


def test_demo_runs_the_main_job(tmp_path: Path) -> None:
    result = procflow("demo", "--out", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stderr
    assert "status          completed" in result.stdout
    assert "compensation    payment.void -> inventory.release" in result.stdout
    written = sorted(p.name for p in (tmp_path / "demo").iterdir())
    assert "order_fulfillment-flow.dot" in written and "order_fulfillment-sequence.mmd" in written
    if shutil.which("dot") is None:  # images are optional: the demo says it skipped them
        assert "images skipped: Graphviz's `dot` program is not installed" in result.stdout
    else:
        assert "order_fulfillment-flow.svg" in written and "order_fulfillment-sequence.svg" in written


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git to copy the tracked tree")
def test_wheel_installs_in_a_clean_venv_and_works_outside_the_tree(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stderr
    wheel = next(dist.glob("procflow-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "procflow/py.typed" in names, "the wheel carries its types (PEP 561)"
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names), "the wheel carries its license"
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(wheel)], capture_output=True, text=True, timeout=600
    )
    assert install.returncode == 0, install.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(ORDER, elsewhere / "order.proc")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    check = subprocess.run(
        [str(env_dir / "bin" / "procflow"), "validate", "order.proc"], capture_output=True, text=True, cwd=elsewhere, env=env, timeout=120
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "1 file(s) valid" in check.stdout
    where = subprocess.run(
        [str(python), "-c", "import procflow, procflow.dsl.grammar as g; print(procflow.__file__); print(len(g.grammar_text()))"],
        capture_output=True, text=True, cwd=elsewhere, env=env, timeout=120,
    )
    assert str(env_dir) in where.stdout and str(ROOT) not in where.stdout
    # From the repository's root, its `procflow/` folder comes first on sys.path and shadows the
    # installed package: `python -m procflow` still finds its subpackages there.
    from_root = subprocess.run(
        [str(python), "-m", "procflow", "validate", "processes/order_fulfillment.proc"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=120,
    )
    assert from_root.returncode == 0 and "1 file(s) valid" in from_root.stdout, from_root.stdout + from_root.stderr
    version = subprocess.run([str(python), "-m", "procflow", "--version"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert version.returncode == 0 and version.stdout.strip() == f"procflow {__version__}", version.stderr
