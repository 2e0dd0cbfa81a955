"""The operator's store (issue 13): opening reads no more than the header and the schema,
`procflow store check` reads the rest, `procflow instances` pages in SQL, and each way a
store can fail gets its own diagnosis (issue 13, must-show 5).

Every failure below is made for real, never simulated by raising the error ourselves: a file
made immutable with `chattr +i` (the tests run as root, who ignores file modes, but not the
immutable flag), a full tmpfs mounted for the test, another connection holding the write
lock, bytes overwritten in the file, a file deleted or replaced under a running worker, and
a PostgreSQL server of the test's own that asks for a password (the shared one trusts every
local connection). The other PostgreSQL diagnoses (unreachable server: a port nothing
listens on; missing database; unknown user) are in tests/test_postgres_store.py.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import procflow
from procflow.cli import main
from procflow.errors import StoreError
from procflow.interpreter import sqlite_schema, sqlite_store
from procflow.interpreter.orchestrator import Orchestrator
from procflow.interpreter.sqlite_store import SqliteStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from order_helpers import ORDER, ROOT, Clock  # noqa: E402

PAGE = 4096


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_line_error(code: int, err: str, *fragments: str) -> str:
    """The command failed as an operator expects: exit 1, one line, no traceback, the words."""
    assert code == 1, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def fill(store: object, count: int, prefix: str = "wf") -> None:
    orchestrator = Orchestrator(procflow.load(ORDER), store=store, clock=Clock(), auto_dispatch=False)  # type: ignore[arg-type]
    for i in range(count):
        orchestrator.start(f"{prefix}_{i:04d}", {"orderId": f"ord_{prefix}_{i}", "amount": 10.0})


def start_argv(store: Path | str, workflow_id: str = "wf_new") -> list[str]:
    return ["start", str(ORDER), "--input", json.dumps({"orderId": f"ord_{workflow_id}", "amount": 1.0}),
            "--workflow-id", workflow_id, "--store", str(store), "--now", "2026-01-01T09:00:00Z"]


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    path = tmp_path / "store.sqlite"
    with SqliteStore(path) as store:
        fill(store, 60)
    return path


# ---------------------------------------------------------------- opening, and the full check


def test_opening_reads_the_schema_not_the_whole_file_and_store_check_reads_the_rest(
    filled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    size = filled.stat().st_size
    assert size > 12 * PAGE
    data = bytearray(filled.read_bytes())
    data[size - 2 * PAGE : size] = b"\xa5" * (2 * PAGE)  # the last two pages (rows), not the schema
    filled.write_bytes(bytes(data))
    before = sha(filled)
    with SqliteStore(filled) as store:  # opening does not notice: it reads the header and schema only
        assert store.schema_version == sqlite_schema.current_schema_version()
    code, out, err = run(capsys, "store", "check", "--store", str(filled))
    assert code == 1 and err == "", err
    lines = out.splitlines()
    assert lines[0].startswith(f"store {filled}: ") and "problem(s)" in lines[0]
    assert any("SQLite integrity_check" in line for line in lines[1:-1]), out
    assert lines[-1].startswith("what to do: The file itself is damaged") and ".recover" in lines[-1]
    assert sha(filled) == before


def test_store_check_says_a_sound_store_is_sound_and_writes_nothing(filled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = sha(filled)
    code, out, err = run(capsys, "store", "check", "--store", f"sqlite:///{filled}")
    assert (code, err) == (0, "")
    assert out == (
        f"store {filled}: sound (SQLite integrity_check ok; read back 60 instances, 60 history entries, "
        "60 commands, 1 definition)\n"
    )
    code, out, _ = run(capsys, "store", "check", "--store", str(filled), "--json")
    assert code == 0 and json.loads(out)["sound"] is True and json.loads(out)["read"]["instances"] == 60
    assert sha(filled) == before


def test_store_check_names_each_inconsistent_record_on_sqlite(filled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    connection = sqlite3.connect(filled)
    connection.execute("UPDATE instances SET state = '{\"status\": ' WHERE workflow_id = 'wf_0003'")
    connection.execute("UPDATE instances SET status = 'completed' WHERE workflow_id = 'wf_0005'")
    connection.execute("UPDATE instances SET history_count = 7 WHERE workflow_id = 'wf_0007'")
    connection.execute("INSERT INTO history (workflow_id, seq, entry) VALUES ('wf_gone', 0, '{}')")
    connection.execute("UPDATE outbox SET dispatch = 'not json' WHERE workflow_id = 'wf_0009'")
    connection.commit()
    connection.close()
    before = sha(filled)
    code, out, _ = run(capsys, "store", "check", "--store", str(filled))
    assert code == 1
    assert out.splitlines()[0].startswith(f"store {filled}: 5 problem(s)")
    for fragment in (
        "instance wf_0003: the state of instance wf_0003", "is not valid JSON",
        "instance wf_0005: its row says order-fulfillment completed, its state says order-fulfillment waiting_for_inventory",
        "instance wf_0007: its row says 7 history entries, the store holds 1",
        "a history entry belongs to instance wf_gone, which the store does not hold",
        "a command in the outbox of", "outbox row",
    ):
        assert fragment in out, (fragment, out)
    assert out.splitlines()[-1].startswith("what to do: The store can be opened and the other instances keep working")
    assert sha(filled) == before


def test_store_check_reads_the_completions_and_milestones_kept_with_the_history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "store.sqlite"
    with SqliteStore(path) as store:
        orchestrator = Orchestrator(procflow.load(ORDER), store=store, clock=Clock(), auto_dispatch=False)
        for workflow_id in ("wf_1", "wf_2"):
            orchestrator.start(workflow_id, {"orderId": f"ord_{workflow_id}", "amount": 10.0})
            for reply in ("inventory_reserved", "payment_authorized"):
                orchestrator.receive({"type": reply, "correlationId": f"ord_{workflow_id}", "workflowId": workflow_id})
    code, out, _ = run(capsys, "store", "check", "--store", str(path))
    assert code == 0 and "sound" in out, out
    connection = sqlite3.connect(path)
    connection.execute("UPDATE history SET completed_steps = NULL WHERE workflow_id = 'wf_1' AND seq = 3")
    connection.execute("UPDATE history SET completed = '[{\"step\": 1}]' WHERE workflow_id = 'wf_2' AND seq = 2")
    connection.execute("INSERT INTO history (workflow_id, seq, entry, completed_steps) VALUES ('wf_gone', 1, '{}', '[\"x\"]')")
    connection.commit()
    connection.close()
    before = sha(path)
    code, out, _ = run(capsys, "store", "check", "--store", str(path))
    assert code == 1 and out.splitlines()[0].startswith(f"store {path}: 3 problem(s)"), out
    for fragment in (
        "instance wf_1: its row says 2 `completedSteps` entries, its history rows hold 1",
        "instance wf_2: the state of instance wf_2", "(completed.0.step: ",
        "a history entry belongs to instance wf_gone, which the store does not hold",
    ):
        assert fragment in out, (fragment, out)
    assert sha(path) == before


def test_store_check_reads_the_waits_and_tokens_kept_in_rows_of_their_own(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "store.sqlite"
    branches = "\n".join(f"    branch b_{i} {{ step s_{i} {{ send worker.do_{i} await done_{i} within 1d }} }}" for i in range(20))
    wide = procflow.load_text(f"process wide {{\n  participant worker\n  parallel fan {{\n{branches}\n  }}\n}}\n")
    with SqliteStore(path) as store:
        orchestrator = Orchestrator(wide, store=store, clock=Clock(), auto_dispatch=False, compile_pinned=procflow.load_text)
        for workflow_id in ("wf_1", "wf_2"):
            orchestrator.start(workflow_id, {})
            orchestrator.receive({"type": "done_4", "correlationId": workflow_id})
    code, out, _ = run(capsys, "store", "check", "--store", str(path))
    assert code == 0 and "sound" in out, out
    connection = sqlite3.connect(path)
    connection.execute("DELETE FROM state_items WHERE workflow_id = 'wf_1' AND kind = 'waits' AND key = '7'")
    connection.execute("UPDATE state_items SET item = '{\"id\": \"x\"}' WHERE workflow_id = 'wf_2' AND kind = 'tokens' AND key = '5'")
    connection.execute("INSERT INTO state_items (workflow_id, kind, key, item) VALUES ('wf_gone', 'waits', 1, '{}')")
    connection.commit()
    connection.close()
    before = sha(path)
    code, out, _ = run(capsys, "store", "check", "--store", str(path))
    assert code == 1 and out.splitlines()[0].startswith(f"store {path}: 3 problem(s)"), out
    for fragment in (
        "instance wf_1: its row says 38 waits and tokens in rows of their own, the store holds 37",
        "instance wf_2: the state of instance wf_2", "(tokens.",
        "a wait or token row belongs to instance wf_gone, which the store does not hold",
    ):
        assert fragment in out, (fragment, out)
    assert sha(path) == before


def test_store_check_names_each_inconsistent_record_on_postgresql(postgres_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with procflow.interpreter.stores.open_store(postgres_url) as store:
        fill(store, 5)
    code, out, _ = run(capsys, "store", "check", "--store", postgres_url)
    assert code == 0 and "sound (read back 5 instances, 5 history entries, 5 commands, 1 definition)" in out
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute("UPDATE procflow_instances SET state = '[1, 2' WHERE workflow_id = 'wf_0001'")
        connection.execute("INSERT INTO procflow_timers (workflow_id, next_due) VALUES ('wf_gone', 1)")
        connection.execute("INSERT INTO procflow_item_changes (workflow_id, version, kind, key) VALUES ('wf_gone', 2, 'waits', '7')")
    code, out, _ = run(capsys, "store", "check", "--store", postgres_url)
    assert code == 1 and "3 problem(s)" in out.splitlines()[0]
    assert "instance wf_0001: the state of instance wf_0001" in out
    assert "1 row(s) of procflow_timers belong to instance wf_gone, which the store does not hold" in out
    assert "1 row(s) of procflow_item_changes belong to instance wf_gone, which the store does not hold" in out


def test_store_check_of_a_store_that_is_not_there_or_not_ours_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "store", "check", "--store", str(tmp_path / "none.sqlite"))
    one_line_error(code, err, "there is no store at")
    notes = tmp_path / "notes.sqlite"
    notes.write_bytes(b"my notes " * 100)
    code, _, err = run(capsys, "store", "check", "--store", str(notes))
    one_line_error(code, err, "is not a procflow store")
    assert not (tmp_path / "none.sqlite").exists()


# ---------------------------------------------------------------- paging on the command line


def test_instances_come_a_page_at_a_time_with_the_cursor_of_the_next(filled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "instances", "--store", str(filled))
    lines = out.splitlines()
    assert code == 0 and len(lines) == 1 + 50 + 1 and lines[0].startswith("WORKFLOW")
    assert lines[1].startswith("wf_0000 ") and lines[50].startswith("wf_0049 ")
    assert lines[-1] == "next page: --after 1767258000.0:wf_0049"
    code, out, _ = run(capsys, "instances", "--store", str(filled), "--after", "1767258000.0:wf_0049")
    assert [line.split()[0] for line in out.splitlines()[1:]] == [f"wf_{i:04d}" for i in range(50, 60)]  # no next page
    code, out, _ = run(capsys, "instances", "--store", str(filled), "--limit", "2", "--json", "--status", "waiting_for_inventory")
    rows = json.loads(out)
    assert [r["workflowId"] for r in rows] == ["wf_0000", "wf_0001"] and rows[1]["cursor"] == "1767258000.0:wf_0001"
    code, out, _ = run(capsys, "instances", "--store", str(filled), "--process", "another")
    assert out == "no instances with process another\n"
    code, out, _ = run(capsys, "instances", "--store", str(filled), "--counts")
    assert out == "waiting_for_inventory  60\nin all                 60\n"
    code, _, err = run(capsys, "instances", "--store", str(filled), "--after", "wf_0049")
    one_line_error(code, err, "is not a cursor `procflow instances` printed")
    code, _, err = run(capsys, "instances", "--store", str(filled), "--limit", "0")
    assert code == 2 and "not a page size from 1 to 10000" in err


def test_tick_with_nothing_due_and_a_page_are_index_searches(filled: Path) -> None:
    connection = sqlite3.connect(filled)
    try:
        def plan(sql: str, *args: object) -> str:
            return " ".join(str(row[-1]) for row in connection.execute("EXPLAIN QUERY PLAN " + sql, args))

        tick = plan(
            "SELECT workflow_id FROM timers WHERE next_due <= ? AND (claimed_until IS NULL OR claimed_until < ?) "
            "ORDER BY next_due, workflow_id LIMIT 20", 0.0, 0.0,
        )
        assert "SEARCH timers USING INDEX timers_by_due (next_due<?)" in tick, tick
        page = plan("SELECT workflow_id FROM instances WHERE status = ? AND (updated, workflow_id) > (?, ?) "
                    "ORDER BY updated, workflow_id LIMIT 50", "x", 0.0, "")
        assert "SEARCH instances USING COVERING INDEX instances_by_status_change" in page and "TEMP B-TREE" not in page, page
        assert "USING COVERING INDEX" in plan("SELECT status, count(*) FROM instances GROUP BY status")
    finally:
        connection.close()


# ---------------------------------------------------------------- diagnoses, made for real


def immutable(path: Path, on: bool) -> None:
    done = subprocess.run(["chattr", "+i" if on else "-i", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, f"chattr cannot make {path} immutable here: {done.stderr}"


def test_a_read_only_file_is_called_read_only_and_nothing_is_written(filled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = sha(filled)
    immutable(filled, True)
    try:
        code, _, err = run(capsys, *start_argv(filled))
        message = one_line_error(code, err, f"the store {filled} is read-only", "nothing is lost", "lsattr")
        assert "damaged" not in message and "backup" not in message
        code, out, _ = run(capsys, "instances", "--store", str(filled), "--limit", "1")  # reading still works
        assert code == 0 and "wf_0000" in out
    finally:
        immutable(filled, False)
    assert sha(filled) == before


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs of its own: a disk that fills up for real."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True)
    assert done.returncode == 0, f"cannot mount a tmpfs for the disk-full test: {done.stderr}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_disk_is_called_full_and_what_was_written_is_kept(tiny_disk: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tiny_disk / "store.sqlite"
    kept = 0
    with SqliteStore(path) as store, pytest.raises(StoreError) as full:
        orchestrator = Orchestrator(procflow.load(ORDER), store=store, clock=Clock(), auto_dispatch=False)
        for kept in range(10_000):  # noqa: B007 - `kept` counts the instances written before the disk filled
            orchestrator.start(f"wf_{kept}", {"orderId": f"ord_{kept}", "amount": 10.0})
    assert f"the disk holding the store {path} is full" in str(full.value) and "damaged" not in str(full.value)
    assert kept > 5
    code, _, err = run(capsys, *start_argv(path))
    one_line_error(code, err, "is full", "Free some space", "everything written before it is kept")
    with SqliteStore(path, create=False) as store:
        assert store.status_counts() == {"waiting_for_inventory": kept}


def test_sqlite_full_at_its_page_limit_is_called_full(filled: Path) -> None:
    with SqliteStore(filled) as store:
        connection = store._db()
        [(pages,)] = connection.execute("PRAGMA page_count").fetchall()
        connection.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own limit: SQLITE_FULL for real
        with pytest.raises(StoreError, match="is full"):
            fill(store, 200, "more")
        assert store.status_counts()["waiting_for_inventory"] >= 60


def test_a_store_locked_too_long_is_called_locked(filled: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_SECONDS", 0.2)
    monkeypatch.setattr(sqlite_schema, "BUSY_TIMEOUT_SECONDS", 0.2)
    holder = sqlite3.connect(filled, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process's write transaction that does not end
        before = sha(filled)
        code, _, err = run(capsys, *start_argv(filled))
        message = one_line_error(code, err, f"the store {filled} stayed locked by another process", "Try again")
        assert "damaged" not in message
        assert sha(filled) == before
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    code, _, err = run(capsys, *start_argv(filled))
    assert code == 0, err


def test_a_damaged_file_is_called_damaged(filled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = bytearray(filled.read_bytes())
    data[100:PAGE] = b"\x00" * (PAGE - 100)  # the schema itself (sqlite_master, on page 1) overwritten
    filled.write_bytes(bytes(data))
    before = sha(filled)
    code, _, err = run(capsys, "instances", "--store", str(filled))
    one_line_error(code, err, f"{filled}", "damaged", "backup")
    assert sha(filled) == before


WORKER = [sys.executable, "-m", "procflow", "worker", "--interval", "0.05"]


def running_worker(path: Path) -> subprocess.Popen[str]:
    """A worker that has opened the store: it printed the first of the queued commands."""
    worker = subprocess.Popen([*WORKER, "--store", str(path)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert worker.stdout is not None and worker.stdout.readline().startswith('{"dedupKey"'), worker.communicate()
    time.sleep(0.3)  # it sent the rest and goes round, idle
    assert worker.poll() is None, worker.communicate()
    return worker


def stopped(worker: subprocess.Popen[str]) -> str:
    try:
        _, err = worker.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        raise AssertionError("the worker went on with its store gone") from None
    assert worker.returncode == 1, err
    # (a worker reports each busy round on standard error: on a slow machine its first round
    # may end after it was seen to start; what matters is the one error line that follows)
    said = "\n".join(line for line in err.splitlines() if not line.startswith("worker "))
    return one_line_error(1, said)


def test_a_worker_whose_store_is_deleted_stops_with_an_error(filled: Path) -> None:
    shutil.copy(filled, filled.with_name("keep.sqlite"))
    worker = running_worker(filled)
    filled.unlink()
    message = stopped(worker)
    assert f"the store {filled} was deleted while procflow had it open" in message, message
    assert not filled.exists()  # nothing was made in its place


def test_a_worker_whose_store_is_replaced_stops_without_writing_to_either(filled: Path, tmp_path: Path) -> None:
    restored = tmp_path / "restored.sqlite"
    shutil.copy(filled, restored)
    worker = running_worker(filled)
    os.replace(restored, filled)  # an operator restores a backup over it
    after = sha(filled)
    message = stopped(worker)
    assert f"the store {filled} was replaced by another file" in message, message
    assert sha(filled) == after


# ---------------------------------------------------------------- a wrong password, on a server of our own


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class OwnServer:
    """A PostgreSQL cluster of a test's own (initdb, scram-sha-256, user `owner`, password
    `secret`) on a free port: the shared server is left alone, and this one may be stopped."""

    def __init__(self) -> None:
        binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        assert binaries, "initdb is not installed (the postgresql package): these tests need it"
        self.bin_dir = Path(binaries[-1]).parent
        self.folder = Path(tempfile.mkdtemp(prefix="procflow-pg-"))  # not under pytest's root-only folder: postgres must enter it
        self.data, self.port = self.folder / "data", free_port()
        self.address = f"127.0.0.1:{self.port}"
        password = self.folder / "password"
        password.write_text("secret\n")
        shutil.chown(self.folder, "postgres")
        shutil.chown(password, "postgres")
        self._as_postgres("initdb", "-D", str(self.data), "-U", "owner", "--auth=scram-sha-256", f"--pwfile={password}", "-N")

    def _as_postgres(self, program: str, *argv: str) -> None:
        done = subprocess.run(["runuser", "-u", "postgres", "--", str(self.bin_dir / program), *argv],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr

    def start(self) -> None:
        self._as_postgres("pg_ctl", "-D", str(self.data), "-w", "-l", str(self.folder / "log"),
                          "-o", f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self) -> None:
        """As a crash or a failover does: at once, every connection dropped."""
        if (self.data / "postmaster.pid").exists():
            self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def own_server() -> Iterator[OwnServer]:
    """A PostgreSQL server of the test's own, running; stopped and removed afterwards."""
    server = OwnServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def password_server(own_server: OwnServer) -> str:
    """The address of a server that asks user `owner` for the password `secret`."""
    return own_server.address


@pytest.mark.slow
def test_a_wrong_password_is_called_a_wrong_password_and_never_printed(password_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    wrong = f"postgresql://owner:hunter2@{password_server}/postgres"
    for argv in (["instances", "--store", wrong], start_argv(wrong), ["store", "check", "--store", wrong]):
        code, out, err = run(capsys, *argv)
        one_line_error(code, err, f"the PostgreSQL server at {password_server} refused the password of user `owner`",
                       "Nothing was written", "Check the password")
        assert "hunter2" not in err + out and "owner:***@" in err
    right = f"postgresql://owner:secret@{password_server}/postgres"
    code, _, err = run(capsys, *start_argv(right))
    assert code == 0, err
    with psycopg.connect(right) as connection:
        assert connection.execute("SELECT count(*) FROM procflow_instances").fetchall() == [(1,)]


@pytest.mark.slow
def test_a_worker_whose_server_restarts_waits_and_goes_on(own_server: OwnServer, capsys: pytest.CaptureFixture[str]) -> None:
    # A database restart or failover drops every connection. The worker says so, waits
    # (doubling, at most 5 s) and goes on once the server answers again, as the RabbitMQ worker
    # does when the broker goes; it used to stop with exit 1 and wait for a supervisor.
    url = f"postgresql://owner:secret@{own_server.address}/postgres"
    code, _, err = run(capsys, *start_argv(url, "wf_before"))
    assert code == 0, err
    worker = subprocess.Popen([*WORKER, "--participants", "demo", "--store", url, "--now", "2026-01-01T09:00:00Z"],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def statuses() -> dict[str, str]:
        with procflow.interpreter.stores.open_store(url, create=False) as store:
            return {s.workflow_id: s.status for s in store.summaries()}

    def until(expected: dict[str, str]) -> None:
        deadline = time.monotonic() + 60
        while statuses() != expected:
            assert worker.poll() is None, worker.communicate()
            assert time.monotonic() < deadline, statuses()
            time.sleep(0.1)

    try:
        until({"wf_before": "completed"})
        own_server.stop()
        time.sleep(3)  # the worker's rounds meet a server that is gone
        assert worker.poll() is None, worker.communicate()
        own_server.start()
        code, _, err = run(capsys, *start_argv(url, "wf_after"))
        assert code == 0, err
        until({"wf_before": "completed", "wf_after": "completed"})
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, err
    assert "Trying again in 0.5 s." in err and "Traceback" not in err, err
    # One line of procflow's own a failed attempt, not the pool's log of each reconnection.
    assert "error connecting in" not in err and "discarding closed connection" not in err, err
