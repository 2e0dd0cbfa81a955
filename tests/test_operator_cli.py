"""The operator's command line over a store (issue 6): start, deliver, tick, instances,
inspect, retry, worker, and `render --instance ID --store PATH`. Bad input prints one clear
line, exits non-zero, shows no traceback and loses nothing stored."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

import procflow
from procflow.cli import main
from procflow.interpreter.orchestrator import Orchestrator
from procflow.interpreter.sqlite_store import SqliteStore
from procflow.interpreter.stores import RECENT_STATES, open_store

ROOT = Path(__file__).resolve().parent.parent
ORDER = str(ROOT / "processes" / "order_fulfillment.proc")
T0 = "2026-01-01T09:00:00Z"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def cli(*argv: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "procflow", *argv], cwd=cwd, capture_output=True, text=True, timeout=120,
        env={**os.environ, **(env or {})},
    )


def start(capsys: pytest.CaptureFixture[str], store: Path, workflow_id: str = "wf_1", order_id: str = "ord_1") -> str:
    code, out, err = run(capsys, "start", ORDER, "--input", json.dumps({"orderId": order_id, "amount": 10.0}),
                         "--workflow-id", workflow_id, "--store", str(store), "--now", T0)
    assert code == 0, err
    return out


def deliver(capsys: pytest.CaptureFixture[str], store: Path, message: dict[str, object], now: str = T0) -> tuple[int, str, str]:
    return run(capsys, "deliver", "--store", str(store), "--message", json.dumps(message), "--now", now)


def snapshot(store: Path) -> list[tuple[str, int, str]]:
    with SqliteStore(store, create=False) as opened:
        rows = [(s.workflow_id, s.version, s.status) for s in opened.summaries()]
        return rows + [("outbox", len(opened.outbox(10_000)), "")]


def test_start_twice_sends_nothing_new(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "s.sqlite"
    out = start(capsys, store)
    assert "started wf_1" in out and "queued: inventory.reserve#1" in out
    before = snapshot(store)
    out = start(capsys, store)
    assert "already exists" in out and "nothing new was sent" in out
    assert snapshot(store) == before


def test_an_instance_runs_to_the_end_by_hand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "s.sqlite"
    start(capsys, store)
    for reply in ("inventory_reserved", "payment_authorized", "shipment_created"):
        code, out, err = deliver(capsys, store, {"type": reply, "correlationId": "ord_1", "messageId": f"m-{reply}"})
        assert code == 0, err
        assert out.startswith(f"applied: `{reply}` -> wf_1")
    code, out, _ = deliver(capsys, store, {"type": "shipment_created", "correlationId": "ord_1", "messageId": "m-shipment_created"})
    assert code == 0 and out.startswith("duplicate:") and "unchanged (completed)" in out
    code, out, _ = run(capsys, "instances", "--store", str(store), "--json")
    [row] = json.loads(out)
    assert row["status"] == "completed" and row["version"] == 4


def test_bad_input_prints_one_line_and_loses_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "s.sqlite"
    start(capsys, store)
    before = snapshot(store)
    cases = [
        (["deliver", "--store", str(store), "--message", '{"type": '], "--message is not valid JSON"),
        (["deliver", "--store", str(store), "--message", '{"tipe": "x"}'], "not a valid reply"),
        (["deliver", "--store", str(store), "--message", '{"type": "shipment_created", "correlationId": "ord_1"}'],
         "does not expect `shipment_created`"),
        (["deliver", "--store", str(store), "--message", '{"type": "x", "correlationId": "nobody"}'], "no instance correlates by `nobody`"),
        (["deliver", "--store", str(store), "--message", "@" + str(tmp_path / "missing.json")], "cannot read the --message file"),
        (["inspect", "wf_404", "--store", str(store)], "no instance wf_404"),
        (["retry", "wf_404", "--store", str(store)], "no instance wf_404"),
        (["retry", "wf_1", "--store", str(store)], "still running"),
        (["start", ORDER, "--input", "[1, 2]", "--workflow-id", "wf_9", "--store", str(store)], "--input must be a JSON object"),
        (["start", ORDER, "--input", '{"orderId": 5}', "--workflow-id", "wf_9", "--store", str(store)], "breaks the contract"),
        (["start", ORDER, "--input", '{"orderId": "ord_1", "amount": 1}', "--workflow-id", "wf_9", "--store", str(store)],
         "must belong to one instance"),
        (["instances", "--store", str(tmp_path / "nothing.sqlite")], "there is no store at"),
    ]
    for argv, expected in cases:
        code, out, err = run(capsys, *argv)
        assert code == 1, (argv, out, err)
        assert expected in err, (argv, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert snapshot(store) == before
    assert not (tmp_path / "nothing.sqlite").exists()
    code, _, err = run(capsys, "tick", "--store", str(store), "--now", "tomorrow")
    assert code == 2 and "not an ISO-8601 instant" in err


def test_a_corrupt_store_is_refused_and_left_as_it_is(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "procflow.sqlite"
    store.write_bytes(b"\x00garbage" * 1000)
    digest = hashlib.sha256(store.read_bytes()).hexdigest()
    done = cli("instances", cwd=tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("procflow: error: procflow.sqlite is not a procflow store: it is not an SQLite database")
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1
    monkeypatch.chdir(tmp_path)
    for argv in (["inspect", "wf_1"], ["tick"], ["worker", "--once"], ["start", ORDER, "--input", "{}", "--workflow-id", "x"],
                 ["deliver", "--message", '{"type": "x", "correlationId": "y"}']):
        code, _, err = run(capsys, *argv)
        assert code == 1 and "not an SQLite database" in err, (argv, err)
    assert hashlib.sha256(store.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["procflow.sqlite"]


def test_the_store_path_comes_from_the_environment(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROCFLOW_STORE", str(tmp_path / "env.sqlite"))
    code, out, err = run(capsys, "start", ORDER, "--input", '{"orderId": "o", "amount": 1}', "--workflow-id", "wf_e")
    assert code == 0, err
    assert (tmp_path / "env.sqlite").exists()
    monkeypatch.delenv("PROCFLOW_STORE")
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "start", ORDER, "--input", '{"orderId": "o", "amount": 1}', "--workflow-id", "wf_d")
    assert code == 0 and (tmp_path / "procflow.sqlite").exists()


def test_tick_fires_timeouts_and_retry_resumes_a_failed_compensation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "s.sqlite"
    start(capsys, store)
    deliver(capsys, store, {"type": "inventory_reserved", "correlationId": "ord_1"})
    deliver(capsys, store, {"type": "payment_authorized", "correlationId": "ord_1"})
    code, out, _ = deliver(capsys, store, {"type": "shipment_rejected", "correlationId": "ord_1"})
    assert "-> compensating" in out and "queued: payment.void#1" in out
    code, out, _ = run(capsys, "tick", "--store", str(store), "--now", "2026-01-01T09:00:59Z")
    assert out == "no timer was due\n"
    # payment.void is never confirmed: 1m, retried 3 times, then compensation_failed.
    for minute in range(1, 5):
        code, out, _ = run(capsys, "tick", "--store", str(store), "--now", f"2026-01-01T09:0{minute}:00Z")
        assert code == 0 and out.startswith("wf_1: ")
    assert out.rstrip().endswith("compensation_failed")
    code, out, _ = run(capsys, "instances", "--store", str(store), "--status", "compensation_failed")
    assert "wf_1" in out and "undo_authorize_payment" in out
    code, out, err = run(capsys, "retry", "wf_1", "--store", str(store), "--now", "2026-01-01T10:00:00Z")
    assert code == 0, err
    assert "compensation_failed -> compensating" in out and "payment.void#5" in out
    deliver(capsys, store, {"type": "payment_voided", "correlationId": "ord_1"}, "2026-01-01T10:00:10Z")
    code, out, _ = deliver(capsys, store, {"type": "inventory_released", "correlationId": "ord_1"}, "2026-01-01T10:00:20Z")
    assert out.rstrip().endswith("compensating -> compensated") or "-> compensated" in out
    code, _, err = run(capsys, "retry", "wf_1", "--store", str(store))
    assert code == 1 and "is compensated" in err and "cannot be retried" in err


def test_a_failed_instance_cannot_be_retried(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "s.sqlite"
    start(capsys, store)
    deliver(capsys, store, {"type": "inventory_unavailable", "correlationId": "ord_1"})
    code, _, err = run(capsys, "retry", "wf_1", "--store", str(store))
    assert code == 1
    assert err.strip() == (
        "procflow: error: instance wf_1 is failed (out of stock); it cannot be retried: only a compensation_failed "
        "instance has work an operator can resume. Start a new instance to try again."
    )


def test_the_demo_worker_finishes_what_was_started(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "s.sqlite"
    for i in range(3):
        start(capsys, store, f"wf_{i}", f"ord_{i}")
    code, _, err = run(capsys, "worker", "--once", "--participants", "demo", "--store", str(store), "--now", T0)
    assert code == 0, err
    code, out, _ = run(capsys, "instances", "--store", str(store), "--json")
    assert [r["status"] for r in json.loads(out)] == ["completed"] * 3
    code, out, _ = run(capsys, "worker", "--once", "--store", str(store), "--now", T0)
    assert code == 0 and out == ""  # nothing left to send


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_worker_stopped_with_sigterm_ends_with_the_batch_in_hand_and_holds_nothing(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest
) -> None:
    # A service manager (systemd, Kubernetes) stops a worker with SIGTERM, at a deploy for one.
    # The worker finishes the batch in hand (sends and marks it, applies the replies), claims
    # nothing more, gives back what it holds and exits 0: another worker takes the rest at once,
    # not after a lease. Here the signal comes early in a backlog of 1,200 commands.
    store = str(tmp_path / "s.sqlite") if kind == "sqlite" else request.getfixturevalue("postgres_url")
    orders = 400
    with open_store(store) as opened:  # (as `procflow start` does, without a process per order)
        starter = Orchestrator(procflow.load(ORDER), store=opened, clock=lambda: datetime.fromisoformat(T0), auto_dispatch=False)
        for i in range(orders):
            starter.start(f"wf_{i}", {"orderId": f"ord_{i}", "amount": 10.0})
    worker = subprocess.Popen(
        [sys.executable, "-m", "procflow", "worker", "--participants", "demo", "--store", store, "--now", T0, "--interval", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        with open_store(store, create=False) as opened:
            deadline = time.monotonic() + 60
            while all(s.version == 1 for s in opened.summaries()):  # not in its loop yet: no handler either
                assert worker.poll() is None and time.monotonic() < deadline, worker.communicate()
                time.sleep(0.01)
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, err
    assert err.splitlines()[-1] == "worker: stopped by SIGTERM once the batch in hand was done: nothing half done, no claim held"
    assert "Traceback" not in err
    with open_store(store, create=False) as opened:
        counts = opened.status_counts()
        assert counts.get("completed", 0) < orders, "the round ran to the end: the signal was not heard in it"
        unsent = opened.outbox(10_000)
        assert len(unsent) == sum(counts.values()) - counts.get("completed", 0)  # one command a waiting order, none lost
        # Nothing held: another worker takes every unsent command at once.
        assert sorted(i for i, _ in opened.claim_outbox("next-worker", 10_000)) == sorted(i for i, _ in unsent)
    code, _, err = run(capsys, "worker", "--once", "--participants", "demo", "--store", store, "--now", T0, "--worker-id", "next-worker")
    assert code == 0, err
    with open_store(store, create=False) as opened:
        assert opened.status_counts() == {"completed": orders}


def test_a_worker_keeps_as_many_recent_states_as_it_is_told(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "s.sqlite"
    start(capsys, store)
    kept: list[int] = []
    opened = SqliteStore.__init__

    def spied(self: SqliteStore, *args: object, **kwargs: object) -> None:
        opened(self, *args, **kwargs)  # type: ignore[arg-type]
        kept.append(self._recent.size)

    monkeypatch.setattr(SqliteStore, "__init__", spied)
    for given, expected in ((["--recent", "0"], 0), (["--recent", "500"], 500), ([], RECENT_STATES)):
        code, _, err = run(capsys, "worker", "--once", "--participants", "demo", "--store", str(store), "--now", T0, *given)
        assert code == 0, err
        assert kept.pop() == expected
    code, _, err = run(capsys, "worker", "--once", "--store", str(store), "--recent", "-3")
    assert code == 2 and "not a count (0 or more): `-3`" in err
    with pytest.raises(SystemExit):
        main(["worker", "--help"])
    assert f"(default {RECENT_STATES};" in " ".join(capsys.readouterr().out.split())


def test_the_print_worker_hands_commands_over_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "s.sqlite"
    start(capsys, store)
    code, out, _ = run(capsys, "worker", "--once", "--store", str(store), "--now", T0)
    [line] = out.splitlines()
    command = json.loads(line)
    assert command["commandName"] == "inventory.reserve" and command["dedupKey"] == "ord_1:inventory.reserve:reserve_inventory#1"
    code, out, _ = run(capsys, "worker", "--once", "--store", str(store), "--now", T0)
    assert out == ""  # marked sent: not printed again


def test_inspect_reads_the_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "s.sqlite"
    start(capsys, store)
    deliver(capsys, store, {"type": "inventory_reserved", "correlationId": "ord_1", "messageId": "m1"}, "2026-01-01T09:00:05Z")
    done = cli("inspect", "wf_1", "--store", str(store), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:6] == [
        "workflowId      wf_1",
        lines[1],
        "status          waiting_for_payment",
        "completedSteps  inventory_reserved",
        "nextAction      authorize_payment",
        "timeoutAt       2026-01-01T10:00:05Z",
    ]
    assert lines[1].startswith("type            order-fulfillment  (version 1, sha256:")
    assert "ord_1:payment.authorize:authorize_payment#1  [queued]" in done.stdout
    history = lines[lines.index("history") + 1 :]
    assert history[0].split()[:3] == ["1", T0, "started"]
    assert history[1].split()[:4] == ["2", "2026-01-01T09:00:05Z", "reply", "inventory_reserved"]
    done = cli("inspect", "wf_1", "--json", "--store", str(store), cwd=tmp_path)
    document = json.loads(done.stdout)
    assert document["version"] == 2 and document["state"]["status"] == "waiting_for_payment"
    assert [e["event"] for e in document["state"]["history"]] == ["started", "reply"]
    assert [e["dispatch"]["dedupKey"] for e in document["outbox"]] == [
        "ord_1:inventory.reserve:reserve_inventory#1", "ord_1:payment.authorize:authorize_payment#1",
    ]


def test_render_draws_an_instance_from_the_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "s.sqlite"
    start(capsys, store)
    deliver(capsys, store, {"type": "inventory_reserved", "correlationId": "ord_1"})
    done = cli("render", ORDER, "--instance", "wf_1", "--store", str(store), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith('digraph "order-fulfillment"') and "instance wf_1: waiting_for_payment" in done.stdout
    code, out, err = run(capsys, "render", ORDER, "--instance", "wf_1", "--store", str(store), "--view", "sequence", "--format", "mermaid")
    assert code == 0 and out.startswith("sequenceDiagram"), err
    done = cli("render", ORDER, "--instance", "wf_9", "--store", str(store), cwd=tmp_path)
    assert done.returncode == 1 and "no instance wf_9" in done.stderr and "Traceback" not in done.stderr


def test_a_changed_file_never_changes_a_running_instance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "order.proc"
    path.write_text(Path(ORDER).read_text(encoding="utf-8"), encoding="utf-8")
    store = tmp_path / "s.sqlite"
    code, _, err = run(capsys, "start", str(path), "--input", '{"orderId": "ord_1", "amount": 1}', "--workflow-id", "wf_1",
                       "--store", str(store), "--now", T0)
    assert code == 0, err
    path.write_text(path.read_text(encoding="utf-8").replace("within 1h", "within 5m").replace("version 1", "version 2"), encoding="utf-8")
    code, out, _ = run(capsys, "start", str(path), "--input", '{"orderId": "ord_1", "amount": 1}', "--workflow-id", "wf_1",
                       "--store", str(store))
    assert "already exists" in out and "pinned in the store" in out and "is now version 2" in out
    code, out, err = deliver(capsys, store, {"type": "inventory_reserved", "correlationId": "ord_1"})
    assert code == 0, err
    code, out, _ = run(capsys, "inspect", "wf_1", "--store", str(store), "--json")
    assert json.loads(out)["state"]["timeoutAt"] == "2026-01-01T10:00:00Z"  # the pinned hour, not the file's 5m
    done = cli("render", str(path), "--instance", "wf_1", "--store", str(store), cwd=tmp_path)
    assert done.returncode == 0 and "drawing the version it runs" in done.stderr
