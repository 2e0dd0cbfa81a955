"""What only the PostgreSQL store does (issue 13): chosen by URL, each failure to reach or use
a database diagnosed in its own words (exit 1 from the command line, nothing written), claims
that skip locked rows, and the operator's commands end to end on `postgresql://`.

What every store does is in tests/test_store_contract.py.
"""

from __future__ import annotations

import json
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

import procflow
from procflow.cli import main
from procflow.errors import StoreError
from procflow.interpreter.messages import Dispatch
from procflow.interpreter.orchestrator import Orchestrator, worker
from procflow.interpreter.postgres_schema import current_schema_version
from procflow.interpreter.postgres_store import PostgresStore
from procflow.interpreter.sqlite_store import SqliteStore
from procflow.interpreter.stores import open_store, redact, sqlite_path, store_kind
from procflow.operator_cli import DemoTransport

ROOT = Path(__file__).resolve().parent.parent
ORDER = str(ROOT / "processes" / "order_fulfillment.proc")
T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)
POSTGRES_IN_README = "postgresql://postgres@127.0.0.1:5432/test"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (just released by the kernel)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def tables(url: str) -> set[str]:
    with psycopg.connect(url, autocommit=True) as connection:
        rows = connection.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()").fetchall()
    return {str(name) for (name,) in rows}


def started(store: procflow.interpreter.stores.DurableStore, workflow_id: str = "wf_1") -> None:
    orchestrator = Orchestrator(procflow.load(ORDER), store=store, clock=lambda: T0, auto_dispatch=False)
    orchestrator.start(workflow_id, {"orderId": f"ord_{workflow_id}", "amount": 10.0})


# ---------------------------------------------------------------- choosing a store by URL


def test_a_path_or_sqlite_url_is_sqlite_and_postgresql_urls_are_postgres(tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert store_kind("procflow.sqlite") == store_kind("/var/lib/x.db") == store_kind("sqlite:///x.sqlite") == "sqlite"
    assert store_kind("postgresql://u@h/db") == store_kind("postgres://u@h/db") == store_kind("PostgreSQL://h/db") == "postgresql"
    assert sqlite_path("sqlite:///orders.sqlite") == Path("orders.sqlite")
    assert sqlite_path("sqlite:////srv/orders.sqlite") == Path("/srv/orders.sqlite")
    monkeypatch.chdir(tmp_path)
    with open_store("sqlite:///relative.sqlite") as lite:
        assert isinstance(lite, SqliteStore)
    with open_store(f"sqlite:///{tmp_path}/absolute.sqlite") as lite:
        assert isinstance(lite, SqliteStore)
    with open_store(tmp_path / "plain.sqlite") as lite:
        assert isinstance(lite, SqliteStore)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["absolute.sqlite", "plain.sqlite", "relative.sqlite"]
    with open_store(postgres_url) as pg:
        assert isinstance(pg, PostgresStore) and pg.location == postgres_url
    with open_store(postgres_url.replace("postgresql://", "postgres://", 1)) as pg:
        assert isinstance(pg, PostgresStore)


def test_other_urls_are_refused_with_the_ones_that_work() -> None:
    with pytest.raises(StoreError, match=r"SQLite .* or in PostgreSQL .*, not in `mysql://`"):
        open_store("mysql://root:secret@db/orders")
    with pytest.raises(StoreError, match="three slashes"):
        open_store("sqlite://host/orders.sqlite")


def test_a_password_is_never_printed() -> None:
    assert redact("postgresql://ops:s3cret@db.example:5433/orders?sslmode=require") == (
        "postgresql://ops:***@db.example:5433/orders?sslmode=require"
    )
    assert redact("postgresql://ops@db/orders") == "postgresql://ops@db/orders"
    assert redact("/plain/path.sqlite") == "/plain/path.sqlite"
    port = closed_port()
    with pytest.raises(StoreError) as refused:
        open_store(f"postgresql://ops:s3cret@127.0.0.1:{port}/test")
    assert "s3cret" not in str(refused.value) and "ops:***@" in str(refused.value)


# ---------------------------------------------------------------- each failure in its own words


def test_an_unreachable_server_is_named_with_how_to_check_it(capsys: pytest.CaptureFixture[str]) -> None:
    port = closed_port()
    url = f"postgresql://postgres@127.0.0.1:{port}/test"
    with pytest.raises(StoreError) as refused:
        open_store(url)
    message = str(refused.value)
    assert f"cannot reach the PostgreSQL server at 127.0.0.1:{port}" in message
    assert "Connection refused" in message and f"pg_isready -h 127.0.0.1 -p {port}" in message
    assert "Nothing was written" in message
    code, out, err = run(capsys, "instances", "--store", url)
    assert code == 1 and out == "" and err.count("\n") == 1
    assert err.startswith("procflow: error: cannot reach the PostgreSQL server") and "Traceback" not in err


def test_a_missing_database_is_named_with_how_to_create_it(capsys: pytest.CaptureFixture[str], postgres_server: str) -> None:
    url = postgres_server.rsplit("/", 1)[0] + "/procflow_no_such_database"
    with pytest.raises(StoreError) as refused:
        open_store(url)
    message = str(refused.value)
    assert "has no database `procflow_no_such_database`" in message
    assert "createdb -h 127.0.0.1 -p 5432 procflow_no_such_database" in message and "Nothing was written" in message
    code, _, err = run(capsys, "tick", "--store", url)
    assert code == 1 and "has no database" in err


def test_an_unknown_user_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql://procflow_no_such_user@127.0.0.1:5432/test"
    with pytest.raises(StoreError, match="has no user `procflow_no_such_user`"):
        open_store(url)
    code, _, err = run(capsys, "instances", "--store", url)
    assert code == 1 and "has no user" in err


def test_a_missing_schema_is_named(postgres_url: str) -> None:
    url = postgres_url + "_missing"
    with pytest.raises(StoreError, match=r"none of the schemas its search_path names .* exists.*CREATE SCHEMA"):
        open_store(url)


def test_a_store_of_a_newer_schema_is_refused_on_the_command_line(postgres_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with open_store(postgres_url) as store:
        started(store)
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute("UPDATE procflow_meta SET value = %s WHERE key = 'schema_version'", (str(current_schema_version() + 1),))
    before = tables(postgres_url)
    code, out, err = run(capsys, "deliver", "--store", postgres_url, "--message", '{"type": "inventory_reserved", "correlationId": "ord_wf_1"}')
    assert code == 1 and out == ""
    assert f"schema version {current_schema_version() + 1}, written by a newer procflow" in err and "Upgrade procflow" in err
    assert tables(postgres_url) == before
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        assert connection.execute("SELECT version FROM procflow_instances").fetchall() == [(1,)]


def test_tables_procflow_did_not_make_are_left_alone(postgres_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute("CREATE TABLE procflow_instances (id serial PRIMARY KEY, customer text)")
        connection.execute("INSERT INTO procflow_instances (customer) VALUES ('Ada')")
    code, out, err = run(capsys, "start", ORDER, "--input", '{"orderId": "o", "amount": 1}', "--workflow-id", "wf_1", "--store", postgres_url)
    assert code == 1 and out == ""
    assert "holds tables named like procflow's (procflow_instances) that are not a procflow store" in err
    assert "nothing was written" in err
    assert tables(postgres_url) == {"procflow_instances"}
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        # A meta table that does not say it is procflow's is not ours either.
        connection.execute("CREATE TABLE procflow_meta (key text PRIMARY KEY, value text NOT NULL)")
        connection.execute("INSERT INTO procflow_meta VALUES ('schema_version', '1')")
    with pytest.raises(StoreError, match="that are not a procflow store"):
        open_store(postgres_url)
    assert tables(postgres_url) == {"procflow_instances", "procflow_meta"}


def test_a_table_a_store_of_its_schema_does_not_have_is_refused(postgres_url: str) -> None:
    open_store(postgres_url).close()
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute("CREATE TABLE procflow_extra (x int)")
    with pytest.raises(StoreError, match=rf"tables a procflow store of schema {current_schema_version()} does not have \(procflow_extra\)"):
        open_store(postgres_url)


def test_other_tables_beside_the_store_are_fine(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute("CREATE TABLE customers (id serial PRIMARY KEY, name text)")
    with open_store(postgres_url) as store:
        started(store)
    assert "customers" in tables(postgres_url)


def test_a_connection_lost_mid_run_is_a_store_error_and_the_next_call_reconnects(postgres_url: str, postgres_server: str) -> None:
    with PostgresStore(postgres_url, pool_size=1) as store:
        started(store)
        [(pid,)] = store._rows("SELECT pg_backend_pid()")
        with psycopg.connect(postgres_server, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(StoreError, match="lost the connection to .*running the command again is safe"):
            store.get("wf_1")
        row = store.get("wf_1")  # the pool let the broken connection go and made a new one
        assert row is not None and row.version == 1


# ---------------------------------------------------------------- many openers, many claimers


def test_stores_opened_at_once_on_an_empty_schema_all_open(postgres_url: str) -> None:
    opened: list[PostgresStore] = []
    failures: list[BaseException] = []

    def open_one() -> None:
        try:
            opened.append(PostgresStore(postgres_url))
        except BaseException as error:  # pragma: no cover - reported below
            failures.append(error)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert failures == [] and len(opened) == 4
        assert {s.schema_version for s in opened} == {current_schema_version()}
    finally:
        for store in opened:
            store.close()


def test_a_claim_skips_rows_another_claim_has_locked(postgres_url: str) -> None:
    with PostgresStore(postgres_url) as store:
        started(store, "wf_1")
        started(store, "wf_2")
        [(first_id, _), (second_id, _)] = store.outbox()
        with psycopg.connect(postgres_url) as holder:
            # Another worker's claim in flight: its transaction holds the first row.
            holder.execute("SELECT id FROM procflow_outbox WHERE id = %s FOR UPDATE", (first_id,))
            got: list[list[int]] = []
            claimer = threading.Thread(target=lambda: got.append([i for i, _ in store.claim_outbox("worker-b")]))
            claimer.start()
            claimer.join(10)
            assert not claimer.is_alive(), "the claim waited for the locked row instead of skipping it"
            holder.rollback()
        assert got == [[second_id]]


# ---------------------------------------------------------------- the operator's commands on postgresql://


def test_the_operator_commands_run_on_postgresql(postgres_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROCFLOW_STORE", postgres_url)
    now = "2026-01-01T09:00:00Z"
    code, out, err = run(capsys, "start", ORDER, "--input", '{"orderId": "ord_1", "amount": 5}', "--workflow-id", "wf_1", "--now", now)
    assert code == 0, err
    assert "queued: inventory.reserve#1" in out
    code, out, err = run(capsys, "deliver", "--message", '{"type": "inventory_reserved", "correlationId": "ord_1", "messageId": "m1"}', "--now", now)
    assert code == 0 and "waiting_for_inventory -> waiting_for_payment" in out, err
    code, out, _ = run(capsys, "deliver", "--message", '{"type": "inventory_reserved", "correlationId": "ord_1", "messageId": "m1"}', "--now", now)
    assert code == 0 and out.startswith("duplicate:")
    late = (T0 + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    code, out, _ = run(capsys, "tick", "--now", late)
    assert code == 0 and "wf_1:" in out
    code, out, _ = run(capsys, "instances", "--json")
    [row] = json.loads(out)
    assert row["workflowId"] == "wf_1" and row["version"] >= 3
    code, out, err = run(capsys, "worker", "--once", "--participants", "demo", "--now", late)
    assert code == 0, err
    code, out, _ = run(capsys, "inspect", "wf_1")
    assert code == 0 and "workflowId      wf_1" in out and "history" in out
    code, out, _ = run(capsys, "inspect", "wf_404")
    assert code == 1


def test_procflow_render_reads_an_instance_from_postgresql(postgres_url: str) -> None:
    with open_store(postgres_url) as store:
        started(store)
    done = subprocess.run(
        [sys.executable, "-m", "procflow", "render", ORDER, "--format", "mermaid", "--store", postgres_url, "--instance", "wf_1"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "reserve_inventory" in done.stdout


def test_the_readme_store_example_runs(postgres_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Choosing a store", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    monkeypatch.chdir(ROOT)
    lines = block.strip().splitlines()
    name, _, url = lines[0].removeprefix("export ").partition("=")
    assert name == "PROCFLOW_STORE" and url == POSTGRES_IN_README
    monkeypatch.setenv(name, postgres_url)  # the same server, in a schema of the test's own
    for line in lines[1:]:
        argv = shlex.split(line)
        assert argv[0] == "procflow"
        code, out, err = run(capsys, *argv[1:])
        assert code == 0, (line, err)
    assert "wf_pg_1" in out and "completed" in out


def test_a_named_worker_restarted_takes_back_what_it_held(postgres_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with open_store(postgres_url) as store:
        started(store)
        [(outbox_id, _)] = store.claim_outbox("orders-worker-1")  # then it died
    code, out, err = run(capsys, "worker", "--once", "--participants", "demo", "--store", postgres_url, "--now", "2026-01-01T09:00:00Z")
    assert code == 0 and "1 instance(s) not finished" in err  # another worker waits for the lease
    code, out, err = run(capsys, "worker", "--once", "--participants", "demo", "--store", postgres_url,
                         "--now", "2026-01-01T09:00:00Z", "--worker-id", "orders-worker-1")
    assert code == 0 and "0 instance(s) not finished" in err, err
    with open_store(postgres_url) as store:
        assert store.outbox() == [] and store.outbox_of("wf_1")[0].id == outbox_id


def test_a_store_in_another_schema_does_not_wake_a_waiting_worker(new_postgres_url: Callable[[], str]) -> None:
    """Two stores in one database, a schema each: work queued in one does not end the wait of
    a worker on the other (it would find nothing and wait again), while work queued in its
    own store does."""
    order = procflow.load(ORDER)
    with open_store(new_postgres_url()) as mine, open_store(new_postgres_url()) as theirs:
        assert isinstance(mine, PostgresStore)
        mine.wait_for_work(0)  # begins listening
        Orchestrator(order, store=theirs, clock=lambda: T0, auto_dispatch=False).start("wf_theirs", {"orderId": "o1", "amount": 5.0})
        began = time.monotonic()
        mine.wait_for_work(1.5)
        assert time.monotonic() - began >= 1.4, "a command queued in another schema woke this store's worker"
        Orchestrator(order, store=mine, clock=lambda: T0, auto_dispatch=False).start("wf_mine", {"orderId": "o2", "amount": 5.0})
        began = time.monotonic()
        mine.wait_for_work(30)
        assert time.monotonic() - began < 10, "a command queued in the worker's own store did not wake it"


def test_a_waiting_worker_wakes_when_another_process_queues_a_command(postgres_url: str) -> None:
    """LISTEN/NOTIFY: a worker that found nothing to do and waits for a whole minute takes a
    command another process queued within a few seconds of it being queued, not a minute later."""
    order = procflow.load(ORDER)
    sent: list[str] = []
    woke = threading.Event()

    class Recording(DemoTransport):
        def send(self, dispatch: Dispatch) -> None:
            sent.append(dispatch.command.commandName)
            woke.set()

    interval = 60.0
    with open_store(postgres_url) as worker_store, open_store(postgres_url) as other_store:
        waiting = Orchestrator(order, store=worker_store, transport=Recording([order]), clock=lambda: T0, auto_dispatch=False)
        rounds: list[int] = []
        thread = threading.Thread(target=lambda: rounds.append(worker(waiting, interval=interval, rounds=2)), daemon=True)
        thread.start()
        # The first round finds nothing and waits; another process then starts an instance.
        deadline = time.monotonic() + 10
        while worker_store._listener is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert worker_store._listener is not None, "the worker never began to wait"
        queued_at = time.monotonic()
        Orchestrator(order, store=other_store, clock=lambda: T0, auto_dispatch=False).start(
            "wf_wake", {"orderId": "ord_wake", "amount": 5.0}
        )
        assert woke.wait(interval / 4), f"the worker did not take the command within {interval / 4:.0f}s of a {interval:.0f}s wait"
        took = time.monotonic() - queued_at
        thread.join(timeout=interval / 4)
        assert not thread.is_alive() and rounds == [2]
    assert sent == ["inventory.reserve"]
    print(f"\nthe waiting worker took the command {1000 * took:.0f} ms after it was queued (its poll interval: {interval:.0f} s)")
