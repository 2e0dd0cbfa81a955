"""Issue 17, one class of hostile input at a time, each built from the inputs the issue lists:
tracebacks, silent wrong data, files, sizes, ids and terminals, time, messages, the front
door. Every refusal is a worded `ProcflowError` and leaves what is stored as it was.

(The limits on `.proc` text, durations and `repeat max` are checked where the text is parsed,
and tested with the parser.)
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import procflow
from procflow.cli import main
from procflow.dsl.validate import check_file
from procflow.errors import (
    DamagedRecord,
    InputError,
    InstantError,
    MessageRefused,
    ProcflowError,
    StoreError,
)
from procflow.interpreter.memory_store import InMemoryStore, Store
from procflow.interpreter.orchestrator import Orchestrator
from procflow.interpreter.sqlite_store import SqliteStore
from procflow.interpreter.state import shell
from procflow.limits import ID_LENGTH, INPUT_BYTES, MESSAGE_BYTES, NESTING

ROOT = Path(__file__).resolve().parent.parent
ORDER_PATH = ROOT / "processes" / "order_fulfillment.proc"
ORDER = procflow.load(ORDER_PATH)
T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)
T0_TEXT = "2026-01-01T09:00:00Z"
INPUT = {"orderId": "ord_1", "amount": 10.0}


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(tmp_path / "store.sqlite") as store:
        yield store


def orchestrator(store: Store | None = None, clock: Clock | None = None) -> Orchestrator:
    """The order process started as wf_1 (ord_1), waiting for the inventory."""
    orchestrator = Orchestrator(ORDER, store=store or InMemoryStore(), participants={}, clock=clock or Clock())
    orchestrator.start("wf_1", dict(INPUT))
    return orchestrator


def stored(store: Store, workflow_id: str = "wf_1") -> tuple[int, str] | None:
    row = store.get(workflow_id)
    return None if row is None else (row.version, row.state.model_dump_json())


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


def cli(*argv: str | bytes, cwd: Path = ROOT, **options: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "procflow", *argv], cwd=cwd, capture_output=True, timeout=120, **options)


def started_store(capsys: pytest.CaptureFixture[str], path: Path) -> Path:
    code, _, err = run(capsys, "start", str(ORDER_PATH), "--input", json.dumps(INPUT), "--workflow-id", "wf_1",
                       "--store", str(path), "--now", T0_TEXT)
    assert code == 0, err
    return path


def rows(path: Path) -> list[tuple[Any, ...]]:
    with SqliteStore(path, create=False) as store:
        return [(s.workflow_id, s.version, s.status) for s in store.summaries()] + [("outbox", len(store.outbox(10_000)))]


# ---------------------------------------------------------------- tracebacks


def test_a_message_nested_100000_deep_is_refused_in_words_everywhere(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    deep_text = '{"type": "inventory_reserved", "correlationId": "ord_1", "data": {"x": ' + "[" * 100_000 + "]" * 100_000 + "}}"
    store_path = started_store(capsys, tmp_path / "s.sqlite")
    before = rows(store_path)
    code, _, err = run(capsys, "deliver", "--store", str(store_path), "--message", deep_text, "--now", T0_TEXT)
    assert code == 1 and f"more than {NESTING.value} deep" in err and "`nesting` limit" in err
    (tmp_path / "deep.json").write_text(deep_text, encoding="utf-8")
    code, _, err = run(capsys, "deliver", "--store", str(store_path), "--message", f"@{tmp_path / 'deep.json'}", "--now", T0_TEXT)
    assert code == 1 and "`nesting` limit" in err
    assert rows(store_path) == before
    # The same through the API, as a Python value a hundred thousand levels deep (and one that contains itself).
    orch = orchestrator()
    kept = stored(orch.store)
    cyclic: dict[str, Any] = {}
    cyclic["again"] = cyclic
    for data in ({"x": nested(100_000)}, cyclic):
        with pytest.raises(MessageRefused, match="`nesting` limit"):
            orch.deliver({"type": "inventory_reserved", "correlationId": "ord_1", "data": data})
        with pytest.raises(MessageRefused, match="`nesting` limit"):
            procflow.deliver(ORDER, orch.state("wf_1"), procflow.Reply(type="inventory_reserved", correlationId="ord_1", data=data), T0)
    assert stored(orch.store) == kept


def test_a_message_500_deep_is_refused_before_any_serializer_sees_it(sqlite_store: SqliteStore) -> None:
    orch = orchestrator(sqlite_store)
    kept = stored(sqlite_store)
    with pytest.raises(MessageRefused, match="more than 64 deep"):
        orch.deliver(procflow.Reply(type="inventory_reserved", correlationId="ord_1", data={"x": nested(500)}))
    assert stored(sqlite_store) == kept
    # 63 levels inside the message's `data` (64 with the message itself) are within the limit.
    # The message is level 1, its `data` level 2: 61 lists and an object inside it reach the limit.
    deepest = {"type": "inventory_reserved", "correlationId": "ord_1", "data": {"x": nested(NESTING.value - 3, {})}}
    assert orch.deliver(deepest).status == "waiting_for_payment"


def test_a_message_file_or_argument_that_is_not_utf8_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store_path = started_store(capsys, tmp_path / "s.sqlite")
    before = rows(store_path)
    bad = b'{"type": "inventory_reserved", "correlationId": "ord_1", "data": {"note": "caf\xe9"}}'
    (tmp_path / "latin1.json").write_bytes(bad)
    code, _, err = run(capsys, "deliver", "--store", str(store_path), "--message", f"@{tmp_path / 'latin1.json'}", "--now", T0_TEXT)
    assert code == 1 and "is not valid UTF-8 (byte 0xe9" in err
    # As an argument: the bytes reach Python as a lone surrogate (how it keeps an undecodable byte).
    done = cli(b"deliver", b"--store", str(store_path).encode(), b"--message", bad, b"--now", T0_TEXT.encode())
    assert done.returncode == 1 and b"is not valid UTF-8 (byte 0xe9" in done.stderr and b"Traceback" not in done.stderr
    assert rows(store_path) == before


def test_a_lone_surrogate_in_a_message_or_an_input_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store_path = started_store(capsys, tmp_path / "s.sqlite")
    before = rows(store_path)
    message = '{"type": "inventory_reserved", "correlationId": "ord_1", "data": {"note": "\\udcff"}}'
    code, _, err = run(capsys, "deliver", "--store", str(store_path), "--message", message, "--now", T0_TEXT)
    assert code == 1 and "lone surrogate (U+DCFF)" in err
    code, _, err = run(capsys, "start", str(ORDER_PATH), "--input", '{"orderId": "ord_2", "amount": 1, "note": "\\ud800"}',
                       "--workflow-id", "wf_2", "--store", str(store_path), "--now", T0_TEXT)
    assert code == 1 and "lone surrogate (U+D800)" in err
    assert rows(store_path) == before
    orch = orchestrator()
    with pytest.raises(MessageRefused, match="lone surrogate"):
        orch.deliver({"type": "inventory_reserved", "correlationId": "ord_1", "data": {"note": "\udcff"}})
    with pytest.raises(InputError, match="lone surrogate"):
        orch.start("wf_2", {"orderId": "ord_2", "amount": 1.0, "note": "\udcff"})
    assert orch.store.get("wf_2") is None


def test_tick_at_the_last_instant_of_year_9999_is_a_worded_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store_path = started_store(capsys, tmp_path / "s.sqlite")
    before = rows(store_path)
    code, _, err = run(capsys, "tick", "--store", str(store_path), "--now", "9999-12-31T23:59:59.999999Z")
    assert code == 2 and "instant_year_max" in err
    code, _, err = run(capsys, "run", str(ORDER_PATH), "--input", json.dumps(INPUT), "--now", "9999-12-31T23:59:59.999999Z")
    assert code == 2 and "instant_year_max" in err
    assert rows(store_path) == before
    orch = orchestrator()
    state = orch.state("wf_1")
    for late in (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), datetime(9500, 1, 1, tzinfo=UTC)):
        with pytest.raises(InstantError, match="instant_year_max"):
            orch.tick(late)
        with pytest.raises(InstantError):
            procflow.advance(ORDER, state, late)
    with pytest.raises(InstantError, match="instant_year_min"):
        procflow.start(ORDER, "wf_9", dict(INPUT), datetime(1969, 12, 31, tzinfo=UTC))


@pytest.mark.parametrize("moment", ["9999-12-31T23:59:59.999999Z", "1900-01-01T00:00:00Z"])
def test_a_scenario_starting_at_an_instant_out_of_range_is_refused_at_its_line(moment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "far.proc"
    path.write_text(
        'process far {\n  participant svc "Service"\n  step ask { send svc.go {} await done within 1m }\n}\n'
        f'scenario far {{\n  start at "{moment}"\n  expect status completed\n}}\n',
        encoding="utf-8",
    )
    code, out, err = run(capsys, "validate", str(path))
    assert code == 1 and "far.proc:6:12: error[E011]" in out + err and "instant_year_" in out + err
    code, out, err = run(capsys, "test", str(path))
    assert code == 1 and "E011" in out + err and "Traceback" not in out + err


def test_a_wait_until_an_instant_no_datetime_can_hold_fails_the_instance_in_words() -> None:
    definition = procflow.load_text("process p {\n  input { startsAt: string }\n  step until_start { wait until input.startsAt }\n}\n")
    transition = procflow.start(definition, "wf_1", {"startsAt": "9999-12-31T23:59:59.999999Z"}, T0)
    assert transition.state.status == "failed" and transition.state.failure is not None
    assert "`wait until` of `until_start`" in transition.state.failure.reason


def test_a_library_user_catching_procflow_error_catches_everything(sqlite_store: SqliteStore) -> None:
    """No pydantic serialization error, TypeError or RecursionError gets past `except ProcflowError`."""
    orch = orchestrator(sqlite_store)
    kept = stored(sqlite_store)
    hostile: list[Any] = [
        {"x": object()}, {"x": {1, 2}}, {"x": b"bytes"}, {"x": datetime.now(UTC)}, {1: "int key"},
        {"x": nested(500)}, {"x": float("nan")}, {"x": 10**400},
    ]
    for data in hostile:
        with pytest.raises(ProcflowError):
            orch.deliver(procflow.Reply(type="inventory_reserved", correlationId="ord_1", data=data))
        with pytest.raises(ProcflowError):
            orch.start("wf_new", {"orderId": "ord_new", "amount": 1.0, "extra": data})
    with pytest.raises(ProcflowError):
        orch.deliver(["not", "a", "mapping"])  # type: ignore[arg-type]
    assert stored(sqlite_store) == kept and sqlite_store.get("wf_new") is None


# ---------------------------------------------------------------- silent wrong data


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
def test_nan_infinity_and_overflowing_numbers_are_refused_not_stored_as_null(
    token: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store_path = started_store(capsys, tmp_path / "s.sqlite")
    before = rows(store_path)
    message = '{"type": "inventory_reserved", "correlationId": "ord_1", "data": {"reservationId": "r", "qty": ' + token + "}}"
    code, _, err = run(capsys, "deliver", "--store", str(store_path), "--message", message, "--now", T0_TEXT)
    assert code == 1 and ("not a JSON number" in err or "overflows to infinity" in err)
    code, _, err = run(capsys, "start", str(ORDER_PATH), "--input", '{"orderId": "ord_2", "amount": ' + token + "}",
                       "--workflow-id", "wf_2", "--store", str(store_path), "--now", T0_TEXT)
    assert code == 1 and ("not a JSON number" in err or "overflows to infinity" in err)
    assert rows(store_path) == before


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinity_given_to_the_api_are_refused(number: float) -> None:
    orch = orchestrator()
    kept = stored(orch.store)
    with pytest.raises(MessageRefused, match="JSON cannot hold"):
        orch.deliver({"type": "inventory_reserved", "correlationId": "ord_1", "data": {"qty": number}})
    with pytest.raises(InputError, match="JSON cannot hold"):
        orch.start("wf_2", {"orderId": "ord_2", "amount": number})
    with pytest.raises(InputError):
        procflow.start(ORDER, "wf_2", {"orderId": "ord_2", "amount": number}, T0)
    assert stored(orch.store) == kept and orch.store.get("wf_2") is None


# ---------------------------------------------------------------- files


def _process_reading(folder: Path, where: str) -> Path:
    path = folder / "reader.proc"
    path.write_text(
        f'process reader {{\n  input from "{where}"\n  participant svc "Service"\n'
        "  step ask {\n    send svc.go {}\n    await done within 1m\n  }\n}\n",
        encoding="utf-8",
    )
    return path


def _input_error(path: Path) -> str:
    definition, diagnostics, _ = check_file(path)
    assert definition is None
    [diagnostic] = [d for d in diagnostics if d.is_error]
    assert diagnostic.code == "E123"
    return diagnostic.message


def test_input_from_a_device_or_a_pipe_is_refused_at_once(tmp_path: Path) -> None:
    assert "outside the folder of the process" in _input_error(_process_reading(tmp_path, "/dev/zero"))
    os.mkfifo(tmp_path / "pipe.json")  # inside the folder, but nobody writes to it: opening must not wait
    assert "not a regular file" in _input_error(_process_reading(tmp_path, "pipe.json"))
    (tmp_path / "folder.json").mkdir()
    assert "not a regular file" in _input_error(_process_reading(tmp_path, "folder.json"))


@pytest.mark.parametrize("where", ["/etc/passwd", "../../x.json", "../outside.json"])
def test_input_from_outside_the_process_folder_is_refused(where: str, tmp_path: Path) -> None:
    folder = tmp_path / "a" / "b"
    folder.mkdir(parents=True)
    (tmp_path / "a" / "outside.json").write_text('{"type": "object"}', encoding="utf-8")
    (tmp_path / "x.json").write_text('{"type": "object"}', encoding="utf-8")
    assert "outside the folder of the process" in _input_error(_process_reading(folder, where))


def test_a_symlink_out_of_the_folder_is_refused_and_one_inside_is_followed(tmp_path: Path) -> None:
    folder = tmp_path / "proc"
    folder.mkdir()
    (tmp_path / "secret.json").write_text('{"type": "object"}', encoding="utf-8")
    (folder / "schema.json").write_text('{"type": "object", "required": ["orderId"]}', encoding="utf-8")
    (folder / "out.json").symlink_to(tmp_path / "secret.json")
    (folder / "in.json").symlink_to(folder / "schema.json")
    assert "outside the folder of the process" in _input_error(_process_reading(folder, "out.json"))
    definition, diagnostics, _ = check_file(_process_reading(folder, "in.json"))
    assert definition is not None and definition.input_schema == {"type": "object", "required": ["orderId"]}


def test_a_file_larger_than_file_bytes_or_a_call_outside_the_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "proc"
    folder.mkdir()
    (folder / "big.json").write_text('{"type": "object", "description": "' + "x" * (1 << 20) + '"}', encoding="utf-8")
    assert "larger than the `file_bytes` limit" in _input_error(_process_reading(folder, "big.json"))
    (tmp_path / "kyc_check.proc").write_text((ROOT / "processes" / "kyc_check.proc").read_text(encoding="utf-8"), encoding="utf-8")
    caller = folder / "caller.proc"
    caller.write_text(
        'process caller {\n  input { customerId: string }\n  call kyc-check from "../kyc_check.proc" { customerId: input.customerId } as kyc\n}\n',
        encoding="utf-8",
    )
    _, diagnostics, _ = check_file(caller)
    [error] = [d for d in diagnostics if d.is_error]
    assert error.code == "E121" and "outside the folder of the process" in error.message


def test_a_proc_file_that_is_a_device_is_read_no_further_than_the_source_limit(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "validate", "/dev/zero")
    assert code == 1 and "E001" in out


# ---------------------------------------------------------------- sizes


def test_an_input_a_reply_or_a_workflow_id_over_its_limit_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    orch = orchestrator()
    kept = stored(orch.store)
    big = "x" * (MESSAGE_BYTES.value + 1)
    with pytest.raises(MessageRefused, match="`message_bytes` limit"):
        orch.deliver({"type": "inventory_reserved", "correlationId": "ord_1", "data": {"blob": big}})
    with pytest.raises(InputError, match="`input_bytes` limit"):
        orch.start("wf_2", {"orderId": "ord_2", "amount": 1.0, "blob": "x" * (INPUT_BYTES.value + 1)})
    with pytest.raises(InputError, match="`id_length` limit"):
        orch.start("w" * (ID_LENGTH.value + 1), dict(INPUT, orderId="ord_2"))
    with pytest.raises(MessageRefused, match="`id_length` limit"):
        orch.deliver({"type": "inventory_reserved", "correlationId": "ord_1", "messageId": "m" * (ID_LENGTH.value + 1)})
    assert stored(orch.store) == kept and len(orch.store.instances()) == 1
    # From a file: read no further than one byte past the limit.
    store_path = started_store(capsys, tmp_path / "s.sqlite")
    (tmp_path / "big.json").write_text(json.dumps({"type": "inventory_reserved", "correlationId": "ord_1", "data": {"blob": big}}))
    code, _, err = run(capsys, "deliver", "--store", str(store_path), "--message", f"@{tmp_path / 'big.json'}", "--now", T0_TEXT)
    assert code == 1 and "`message_bytes` limit" in err
    code, _, err = run(capsys, "deliver", "--store", str(store_path), "--message", "@/dev/zero", "--now", T0_TEXT)
    assert code == 1 and "`message_bytes` limit" in err


# ---------------------------------------------------------------- ids and terminals


@pytest.mark.parametrize("workflow_id", ["", "a\nb", "wf\x1b[31mred", "wf\u202eevil", "wf\t1"])
def test_an_empty_workflow_id_or_one_with_control_characters_is_refused(
    workflow_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store_path = started_store(capsys, tmp_path / "s.sqlite")
    before = rows(store_path)
    code, _, err = run(capsys, "start", str(ORDER_PATH), "--input", json.dumps(dict(INPUT, orderId="ord_2")),
                       "--workflow-id", workflow_id, "--store", str(store_path), "--now", T0_TEXT)
    assert code == 1 and "the workflow id" in err
    assert "\x1b" not in err and "\u202e" not in err and err.count("\n") == 1
    assert rows(store_path) == before
    with pytest.raises(InputError, match="the workflow id"):
        procflow.start(ORDER, workflow_id, dict(INPUT), T0)


@pytest.mark.parametrize("field", ["correlationId", "messageId", "workflowId", "type"])
def test_a_message_id_with_control_characters_is_refused_and_not_echoed_raw(field: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    store_path = started_store(capsys, tmp_path / "s.sqlite")
    message = {"type": "inventory_reserved", "correlationId": "ord_1", field: "x\n\x1b[2J forged"}
    code, _, err = run(capsys, "deliver", "--store", str(store_path), "--message", json.dumps(message), "--now", T0_TEXT)
    assert code == 1 and f"`{field}`" in err and "\x1b" not in err and err.count("\n") == 1


def _forge(store: SqliteStore, workflow_id: str, process_status: str) -> None:
    """An instance whose id and status hold control characters, as an older procflow (or another
    writer of the file) could have stored it."""
    state = shell(procflow.start(ORDER, "wf_ok", dict(INPUT, orderId="ord_forged"), T0).state)
    state.workflowId = workflow_id
    state.status = process_status
    store.save(state, None, [])


def test_instances_and_inspect_escape_what_the_store_holds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.sqlite"
    started_store(capsys, path)
    forged = "wf_2\nwf_fake  order-fulfillment  completed"
    with SqliteStore(path) as store:
        _forge(store, forged, "waiting\x1b[31m")
    code, out, _ = run(capsys, "instances", "--store", str(path))
    assert code == 0 and "\x1b" not in out
    assert len(out.splitlines()) == 3  # the header and two instances: no forged row
    assert "wf_2\\nwf_fake" in out and "waiting\\x1b[31m" in out
    code, out, _ = run(capsys, "inspect", forged, "--store", str(path))
    assert code == 0 and "\x1b" not in out and "workflowId      wf_2\\nwf_fake" in out
    code, out, _ = run(capsys, "instances", "--store", str(path), "--json")
    assert [row["workflowId"] for row in json.loads(out)] == ["wf_1", forged]  # JSON carries it exactly, escaped


# ---------------------------------------------------------------- time


def test_a_reply_stamped_before_the_instance_started_is_applied_at_its_last_instant() -> None:
    started = procflow.start(ORDER, "wf_1", dict(INPUT), T0)
    early = T0 - timedelta(hours=1)
    done = procflow.deliver(ORDER, started.state, procflow.Reply(type="inventory_reserved", correlationId="ord_1"), early)
    assert done.state.status == "waiting_for_payment"
    stamps = [entry.at for entry in done.state.history]
    assert stamps == sorted(stamps) and done.state.updatedAt == started.state.updatedAt == "2026-01-01T09:00:00Z"
    assert done.state.completed[-1].at == "2026-01-01T09:00:00Z"
    ticked = procflow.advance(ORDER, done.state, early - timedelta(days=1))  # a tick from the past changes nothing
    assert ticked.outcome == "idle" and ticked.state is done.state


def test_a_reply_after_its_steps_timeout_is_late_whether_or_not_a_tick_happened() -> None:
    reserve = procflow.start(ORDER, "wf_1", dict(INPUT), T0).state
    reserved = procflow.deliver(ORDER, reserve, procflow.Reply(type="inventory_reserved", correlationId="ord_1"), T0).state
    after_the_hour = T0 + timedelta(hours=1, seconds=30)  # the payment's hour is over, the undo's minute not yet
    late = procflow.Reply(type="payment_authorized", correlationId="ord_1", messageId="m-late")
    without_tick = procflow.deliver(ORDER, reserved, late, after_the_hour)
    tick = procflow.advance(ORDER, reserved, T0 + timedelta(hours=1, seconds=1))
    with_tick = procflow.deliver(ORDER, tick.state, late, after_the_hour)
    for transition in (without_tick, with_tick):
        state = transition.state
        assert transition.outcome == "late" and state.status == "compensating"
        assert state.failure is not None and state.failure.reason == "authorize_payment timed out"
        assert "payment_authorized" not in state.completedSteps
        assert [(r.type, r.action) for r in state.lateReplies] == [("payment_authorized", "compensated")]
        assert [u.commandName for u in state.compensation.pending] == ["inventory.release", "payment.void"]  # type: ignore[union-attr]
    assert [d.dedupKey for d in without_tick.dispatches] == ["ord_1:inventory.release:undo:reserve_inventory#1"]
    assert [d.dedupKey for d in tick.dispatches + with_tick.dispatches] == [d.dedupKey for d in without_tick.dispatches]
    assert without_tick.note is not None and without_tick.note.startswith("first, what was due: `authorize_payment` got no reply")


# ---------------------------------------------------------------- messages


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_message_id_reused_for_another_message_is_refused(kind: str, tmp_path: Path) -> None:
    store: Store = InMemoryStore() if kind == "memory" else SqliteStore(tmp_path / "s.sqlite")
    orch = orchestrator(store)
    first = {"type": "inventory_reserved", "correlationId": "ord_1", "messageId": "m-1", "data": {"reservationId": "r-1"}}
    assert orch.receive(first).outcome == "applied"
    kept = stored(store)
    assert orch.receive(dict(first)).outcome == "duplicate"  # the same message again: silent
    assert orch.receive({"data": {"reservationId": "r-1"}, "messageId": "m-1", "correlationId": "ord_1", "type": "inventory_reserved"}).outcome == "duplicate"
    assert orch.receive(dict(first, workflowId="wf_1")).outcome == "duplicate"  # addressed more exactly, still the same message
    with pytest.raises(MessageRefused, match="`m-1` was already used for another message"):
        orch.receive(dict(first, data={"reservationId": "r-2"}))
    with pytest.raises(MessageRefused, match="already used for another message"):
        orch.receive({"type": "payment_authorized", "correlationId": "ord_1", "messageId": "m-1"})
    assert stored(store) == kept


def test_a_message_applied_before_digests_were_kept_stays_a_duplicate(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with SqliteStore(path) as store:
        orch = orchestrator(store)
        orch.receive({"type": "inventory_reserved", "correlationId": "ord_1", "messageId": "m-1"})
    raw = sqlite3.connect(path)
    raw.execute("UPDATE inbox SET digest = NULL")  # as schema 1 wrote it
    raw.commit()
    raw.close()
    with SqliteStore(path) as store:
        orch = Orchestrator(ORDER, store=store, participants={}, clock=Clock())
        assert orch.receive({"type": "payment_authorized", "correlationId": "ord_1", "messageId": "m-1"}).outcome == "duplicate"


def test_a_damaged_row_is_a_worded_store_error_and_nothing_else_is_lost(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.sqlite"
    with SqliteStore(path) as store:
        orch = orchestrator(store)
        orch.start("wf_2", dict(INPUT, orderId="ord_2"))
    raw = sqlite3.connect(path)
    raw.execute("UPDATE instances SET state = ? WHERE workflow_id = 'wf_1'", ('{"workflowId": NaN, ' + "[" * 10_000,))
    raw.commit()
    raw.close()
    with SqliteStore(path) as store:
        with pytest.raises(DamagedRecord, match="instance wf_1"):
            store.get("wf_1")
        assert isinstance(DamagedRecord("x"), StoreError)
        orch = Orchestrator(ORDER, store=store, participants={}, clock=Clock())
        changed = orch.tick(T0 + timedelta(minutes=5))
        assert [s.workflowId for s in changed] == ["wf_2"] and "wf_1" in orch.damaged
    code, out, _ = run(capsys, "instances", "--store", str(path))
    assert code == 0 and "(damaged record)" in out and "wf_2" in out
    code, _, err = run(capsys, "inspect", "wf_1", "--store", str(path))
    assert code == 1 and "damaged" in err


def test_a_worker_leaves_a_damaged_instance_alone_and_finishes_the_others(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A command of a damaged instance brings a reply the worker cannot apply: the worker says so
    # once, counts the command sent (no resending it at every round) and goes on with the
    # others. It used to stop with exit 1 at that reply, and again at every restart.
    path = tmp_path / "s.sqlite"
    for i in (1, 2, 3):
        code, _, err = run(capsys, "start", str(ROOT / "processes" / "order_fulfillment.proc"), "--input",
                           json.dumps({"orderId": f"ord_{i}", "amount": 1.0}), "--workflow-id", f"wf_{i}",
                           "--store", str(path), "--now", "2026-01-01T09:00:00Z")
        assert code == 0, err
    raw = sqlite3.connect(path)
    raw.execute("UPDATE instances SET state = '{\"broken\": ' WHERE workflow_id = 'wf_2'")
    raw.commit()
    raw.close()
    worker = ["worker", "--once", "--participants", "demo", "--store", str(path), "--now", "2026-01-01T09:00:00Z"]
    code, _, err = run(capsys, *worker)
    assert code == 0, err
    [warning] = [line for line in err.splitlines() if "warning" in line]
    assert warning.startswith("procflow: warning: wf_2 was left as it is: the state of instance wf_2") and "not valid JSON" in warning
    with SqliteStore(path) as store:
        assert {s.workflow_id: s.status for s in store.summaries()} == {
            "wf_1": "completed", "wf_2": "waiting_for_inventory", "wf_3": "completed"}
        assert store.outbox() == []  # its command went out once, and is not sent again
    code, _, err = run(capsys, *worker)
    assert code == 0 and "warning" not in err, err


# ---------------------------------------------------------------- the front door


def test_a_closed_pipe_ends_quietly() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "procflow", "schema", "state"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()  # `| head` that read nothing: every write meets a closed pipe
        errors = process.stderr.read()
        assert process.wait(timeout=120) == 141
    assert errors == b"", errors  # no `error: Broken pipe`, no traceback, nothing


def test_version() -> None:
    done = cli("--version")
    assert done.returncode == 0 and done.stdout.decode().strip() == f"procflow {procflow.__version__}"


def test_make_test_passes_without_graphviz(tmp_path: Path) -> None:
    """Image tests skip, saying why, on a machine without `dot`: run them with a PATH that has
    no `dot` on it (the Python running the tests only)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(sys.executable, bin_dir / "python")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = str(bin_dir)
    pytest_args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs"]
    images = subprocess.run(
        [*pytest_args, "-m", "needs_dot", "tests/test_visualize.py"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=600
    )
    assert images.returncode == 0, images.stdout + images.stderr
    assert "SKIPPED [" in images.stdout and "Graphviz's dot is not installed, so images cannot be drawn" in images.stdout
    assert set(images.stdout.split("\n", 1)[0].strip().split()[0]) == {"s"}  # every image test skipped, none failed
    demo = subprocess.run(
        [*pytest_args, "tests/test_cli_foundation.py::test_demo_runs_the_main_job"],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=600,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr


def test_a_timeout_retry_count_over_the_loop_bound_is_refused_at_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Was: `within 1ms retry 99999999` stayed within the `duration` limit, so it was accepted,
    # and `procflow paths` hung building a list of a hundred million sends.
    path = tmp_path / "retries.proc"
    path.write_text('process p {\n  participant shop "Shop"\n  step a { send shop.x await ok within 1ms retry 99999999 }\n}\n', encoding="utf-8")
    for command in ("validate", "paths"):
        code, out, err = run(capsys, command, str(path))
        assert code == 1 and "retries.proc:3:44: error[E010]: a retry count of 99999999" in out + err, command
    path.write_text(path.read_text(encoding="utf-8").replace("99999999", "10000"), encoding="utf-8")
    code, out, err = run(capsys, "paths", str(path))
    assert code == 0 and "E010" not in out + err
