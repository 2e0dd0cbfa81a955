"""The SQLite store (issue 6): transactions, optimistic concurrency, inbox, outbox, timers,
pinned definitions, migrations, and refusing files that are not ours (without writing to them)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

import procflow
from procflow.dsl.model import ProcessDefinition
from procflow.errors import ProcflowError, StoreError
from procflow.interpreter import sqlite_schema
from procflow.interpreter.memory_store import Store, pinned_definition
from procflow.interpreter.orchestrator import Orchestrator
from procflow.interpreter.sqlite_store import APPLICATION_ID, SqliteStore, current_schema_version
from procflow.interpreter.state import SCHEMA_VERSION
from procflow.interpreter.store_check import check_store
from procflow.operator_cli import DemoTransport

sys.path.insert(0, str(Path(__file__).resolve().parent))
from order_helpers import ORDER, ROOT, T0, Clock  # noqa: E402

RACE_WORKER = ROOT / "tests" / "workers" / "race_worker.py"


@pytest.fixture(scope="module")
def order() -> ProcessDefinition:
    return procflow.load(ORDER)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(tmp_path / "store.sqlite") as opened:
        yield opened


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def started(store: Store, order: ProcessDefinition, workflow_id: str = "wf_1", order_id: str = "ord_1") -> Orchestrator:
    orchestrator = Orchestrator(order, store=store, clock=Clock(), auto_dispatch=False, compile_pinned=procflow.load_text)
    orchestrator.start(workflow_id, {"orderId": order_id, "amount": 10.0})
    return orchestrator


# ---------------------------------------------------------------- the file


def test_a_new_store_is_wal_with_our_application_id(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite"
    SqliteStore(path).close()
    connection = sqlite3.connect(path)
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(current_schema_version())
    finally:
        connection.close()


def test_history_entries_are_rows_of_their_own(store: SqliteStore, order: ProcessDefinition) -> None:
    # (The store contract, tests/test_store_contract.py, checks what any store keeps; this is how SQLite keeps it.)
    orchestrator = started(store, order)
    orchestrator.receive({"type": "inventory_reserved", "correlationId": "ord_1", "messageId": "m1"})
    raw = sqlite3.connect(store.path)
    try:
        assert json.loads(raw.execute("SELECT state FROM instances").fetchone()[0])["history"] == []
        assert raw.execute("SELECT count(*) FROM history").fetchone()[0] == 2
    finally:
        raw.close()


def test_timers_are_rows_and_due_is_an_index_lookup(store: SqliteStore, order: ProcessDefinition) -> None:
    started(store, order)
    assert store.due(T0 + timedelta(seconds=30)) == ["wf_1"]
    raw = sqlite3.connect(store.path)
    try:
        plan = " ".join(str(r) for r in raw.execute("EXPLAIN QUERY PLAN SELECT workflow_id FROM timers WHERE next_due <= 1 ORDER BY next_due, workflow_id"))
    finally:
        raw.close()
    assert "timers_by_due" in plan


# ---------------------------------------------------------------- pinned definitions


def test_pinning_keeps_called_processes_and_input_contracts() -> None:
    for path in sorted((ROOT / "processes").glob("*.proc")):
        try:
            definition = procflow.load(path)
        except ProcflowError:
            continue
        pinned = pinned_definition(definition)
        assert set(pinned.sources) >= {definition.path} | {c.path for c in definition.called.values()}
        from procflow.interpreter.memory_store import compile_pinned_definition

        assert compile_pinned_definition(pinned, procflow.load_text).fingerprint == definition.fingerprint


# ---------------------------------------------------------------- refusing files, never writing to them


def _refused(path: Path, *fragments: str) -> None:
    before = sha(path)
    siblings = {p.name for p in path.parent.iterdir()}
    with pytest.raises(StoreError) as refused:
        SqliteStore(path)
    message = str(refused.value)
    for fragment in fragments:
        assert fragment in message, message
    assert str(path) in message and "nothing was written" in message.lower()
    assert sha(path) == before
    assert not any(name.endswith("-journal") for name in {p.name for p in path.parent.iterdir()} - siblings)


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite"
    path.write_bytes(b"these are my notes, not a database\n" * 20)
    _refused(path, "not an SQLite database")


def test_a_corrupted_store_is_refused(tmp_path: Path, order: ProcessDefinition) -> None:
    path = tmp_path / "store.sqlite"
    with SqliteStore(path) as store:
        for i in range(40):
            started(store, order, f"wf_{i}", f"ord_{i}")
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 4 * page
    data[2 * page : 4 * page] = bytes(range(256)) * (2 * page // 256)  # two pages of the tables overwritten
    path.write_bytes(bytes(data))
    before = sha(path)
    # Opening reads the header and the schema only; the damage is met when the rows are read.
    with pytest.raises(StoreError) as refused, SqliteStore(path) as store:
        store.instances()
    assert "is damaged" in str(refused.value) and "nothing was written" in str(refused.value)
    assert sha(path) == before
    report = check_store(path)  # `procflow store check` finds it without anything being asked of the rows
    assert report.pages_damaged and report.problems[0].startswith("SQLite integrity_check")
    assert sha(path) == before


def test_a_truncated_store_is_refused(tmp_path: Path, order: ProcessDefinition) -> None:
    path = tmp_path / "store.sqlite"
    with SqliteStore(path) as store:
        for i in range(40):
            started(store, order, f"wf_{i}", f"ord_{i}")
    path.write_bytes(path.read_bytes()[: 3 * 4096 + 100])
    _refused(path, "is damaged")


def test_a_database_of_another_program_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    connection.execute("INSERT INTO customers (name) VALUES ('Ada')")
    connection.commit()
    connection.close()
    _refused(path, "another program", "customers")


def test_a_database_with_our_id_but_foreign_tables_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    SqliteStore(path).close()
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE extra (x)")
    connection.commit()
    connection.close()
    _refused(path, f"tables a procflow store of schema {current_schema_version()} does not have (extra)")


def test_a_store_of_a_newer_schema_is_refused(tmp_path: Path, order: ProcessDefinition) -> None:
    path = tmp_path / "store.sqlite"
    with SqliteStore(path) as store:
        started(store, order)
    connection = sqlite3.connect(path)
    connection.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(current_schema_version() + 1),))
    connection.commit()
    connection.close()
    _refused(path, f"schema version {current_schema_version() + 1}", "newer procflow", "Upgrade procflow")


def test_an_instance_written_under_state_schema_1_runs_on(store: SqliteStore, order: ProcessDefinition) -> None:
    orchestrator = started(store, order, "wf_401", "ord_441")
    old = json.loads((ROOT / "tests" / "cases" / "state_v1_waiting.json").read_text(encoding="utf-8"))
    entries = old.pop("history")
    old.update(status="waiting_for_inventory", completedSteps=[], completed=[], nextAction="reserve_inventory",
               timeoutAt="2026-01-01T09:00:30Z", startedAt="2026-01-01T09:00:00Z", updatedAt="2026-01-01T09:00:00Z",
               waits=[{**old["waits"][0], "step": "reserve_inventory", "node": "reserve_inventory", "expects": ["inventory_reserved", "inventory_unavailable"],
                       "commandName": "inventory.reserve", "since": "2026-01-01T09:00:00Z", "timeoutAt": "2026-01-01T09:00:30Z", "due": 1767258030.0}],
               tokens=[{**old["tokens"][0], "node": "reserve_inventory"}], seq=1)
    old["input"]["amount"] = old["frames"]["main"]["input"]["amount"] = 10.0
    raw = sqlite3.connect(store.path)
    raw.execute("UPDATE instances SET state = ? WHERE workflow_id = 'wf_401'", (json.dumps({**old, "history": []}),))
    raw.execute("UPDATE history SET entry = ? WHERE workflow_id = 'wf_401' AND seq = 1", (json.dumps({**entries[0], "at": "2026-01-01T09:00:00Z"}),))
    raw.commit()
    raw.close()
    row = store.get("wf_401")
    assert row is not None and row.state.schemaVersion == SCHEMA_VERSION and row.state.data == {} and row.state.frames == {}
    assert row.state.history[0].status == "waiting_for_inventory" and row.state.waits[0].due == 1767258030.0
    state = orchestrator.deliver({"type": "inventory_reserved", "correlationId": "ord_441"})
    assert state.status == "waiting_for_payment" and state.schemaVersion == SCHEMA_VERSION
    assert [e.status for e in state.history] == ["waiting_for_inventory", "waiting_for_payment"]


def test_a_store_whose_writer_was_killed_mid_transaction_opens(tmp_path: Path, order: ProcessDefinition) -> None:
    # A crash inside a transaction of a rollback-journal file (how a store was being created
    # before it was WAL from the start) leaves a hot journal that a read-only connection
    # cannot undo: that is an interrupted transaction for SQLite to undo, not damage.
    path = tmp_path / "store.sqlite"
    with SqliteStore(path) as store:
        started(store, order)
    killed = subprocess.run([sys.executable, "-c", (
        "import os, signal, sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "c.execute('PRAGMA journal_mode = DELETE')\n"
        "c.execute('PRAGMA cache_size = 5')\n"  # a small cache spills changed pages to the file
        "c.execute('BEGIN IMMEDIATE')\n"
        "c.execute(\"UPDATE instances SET status = 'half-written'\")\n"
        "c.execute('CREATE TABLE spill (x)')\n"
        "c.executemany('INSERT INTO spill VALUES (?)', [(b'x' * 2000,)] * 500)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    ), str(path)], timeout=60)
    assert killed.returncode == -9 and Path(str(path) + "-journal").exists()
    read_only = sqlite3.connect(path.absolute().as_uri() + "?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        read_only.execute("PRAGMA application_id").fetchone()
    read_only.close()
    with SqliteStore(path) as store:
        row = store.get("wf_1")
        assert row is not None and row.state.status == "waiting_for_inventory"
        assert sorted(sqlite_schema.user_tables(store._connection)) == sorted(sqlite_schema.tables_at(current_schema_version()))  # type: ignore[arg-type]


def test_an_empty_file_becomes_a_store(tmp_path: Path) -> None:
    path = tmp_path / "empty.sqlite"
    path.touch()
    SqliteStore(path).close()
    with SqliteStore(path) as store:
        assert store.schema_version == current_schema_version()


def test_read_only_commands_do_not_create_a_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="there is no store at"):
        SqliteStore(tmp_path / "missing.sqlite", create=False)
    assert not (tmp_path / "missing.sqlite").exists()
    with pytest.raises(StoreError, match="does not exist"):
        SqliteStore(tmp_path / "no" / "such" / "folder.sqlite")


# ---------------------------------------------------------------- migrations
# (Migrations in order, and a failing one, are in the store contract: tests/test_store_contract.py.)


def test_a_store_of_schema_1_gains_the_claims_of_schema_2(tmp_path: Path, order: ProcessDefinition) -> None:
    path = tmp_path / "old.sqlite"
    connection = sqlite3.connect(path, isolation_level=None)
    for step in dict(sqlite_schema.MIGRATIONS)[1]:
        sqlite_schema.run_step(connection, step)
    connection.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    connection.close()
    with SqliteStore(path) as store:
        assert store.schema_version == current_schema_version() >= 2
        started(store, order)
        [(outbox_id, _)] = store.claim_outbox("worker-a")
        assert store.claim_outbox("worker-b") == []
        store.mark_sent(outbox_id)
        assert store.outbox() == []


# ---------------------------------------------------------------- two processes, one file


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(RACE_WORKER), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_two_processes_never_both_apply_a_transition_to_one_version(tmp_path: Path, order: ProcessDefinition) -> None:
    path = tmp_path / "store.sqlite"
    with SqliteStore(path) as store:
        started(store, order)
    holders = [_spawn("hold", str(path), "wf_1") for _ in range(2)]

    def say(line: str) -> None:
        for holder in holders:
            assert holder.stdin is not None
            holder.stdin.write(line + "\n")
            holder.stdin.flush()

    def hear() -> list[str]:
        heard = []
        for holder in holders:
            assert holder.stdout is not None
            heard.append(holder.stdout.readline().strip())
        return sorted(heard)

    try:
        # Timeout, retry, timeout, retry, timed out: five transitions of one instance, each
        # computed by both processes from the same version and saved at the same moment.
        for version in range(1, 6):
            assert hear() == [f"read {version}"] * 2
            say("go")
            assert hear() == ["conflict", f"saved {version + 1}"]
            say("next")
    finally:
        for holder in holders:
            holder.kill()
            holder.communicate()
    with SqliteStore(path) as store:
        row = store.get("wf_1")
        assert row is not None and row.version == 6 and [e.seq for e in row.state.history] == list(range(1, 7))
        assert row.state.status == "timed_out"


def test_two_workers_on_one_store_apply_each_version_once(tmp_path: Path, order: ProcessDefinition) -> None:
    path = tmp_path / "store.sqlite"
    with SqliteStore(path) as store:
        orchestrator = Orchestrator(order, store=store, clock=Clock(), auto_dispatch=False)
        for i in range(30):
            orchestrator.start(f"wf_{i:02d}", {"orderId": f"ord_{i}", "amount": 1.0})
    log = tmp_path / "saves.log"
    workers = [_spawn("work", str(path), str(log), T0.isoformat()) for _ in range(2)]
    try:
        for process in workers:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready"
        for process in workers:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        for process in workers:
            _, errors = process.communicate(timeout=120)
            assert process.returncode == 0, errors
    finally:
        for process in workers:
            if process.poll() is None:
                process.kill()
                process.communicate()
    saves = [tuple(line.split()) for line in log.read_text(encoding="utf-8").splitlines()]
    applied = [(wid, int(before)) for wid, before, _, _ in saves]
    assert len(applied) == len(set(applied)), "a version was applied twice"
    print(f"\ntwo workers: saves per process {sorted(Counter(pid for *_, pid in saves).values())}")
    with SqliteStore(path) as store:
        for state in store.instances():
            assert state.status == "completed"
            assert [e.event for e in state.history] == ["started", "reply", "reply", "reply"]
            assert sorted(v for wid, v in applied if wid == state.workflowId) == [1, 2, 3]


def test_a_transition_of_a_worker_that_sends_its_own_commands_commits_once(tmp_path: Path, order: ProcessDefinition) -> None:
    """The happy path of the order process on one worker: four transitions (a start and three
    replies), four commits: each command is born claimed by the worker and its sent mark rides
    along with its reply's transition."""
    commits: list[int] = []

    class Counting(SqliteStore):
        def _commit(self, connection: sqlite3.Connection) -> None:
            commits.append(1)
            super()._commit(connection)

    with Counting(tmp_path / "store.sqlite") as store:
        orchestrator = Orchestrator(order, store=store, clock=Clock(), transport=DemoTransport([order]))
        orchestrator.start("wf_warm", {"orderId": "warm", "amount": 1.0})  # pins the definition (a commit of its own, once)
        commits.clear()
        state = orchestrator.start("wf_1", {"orderId": "ord_1", "amount": 10.0})
        assert state.status == "completed" and len(state.history) == 4
        assert len(commits) == 4
        assert store.outbox() == []
