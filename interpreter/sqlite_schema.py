"""The file format of the SQLite store: its schema, its migrations, the checks made
before a file is opened for writing, and what each SQLite failure means to an operator.

A procflow store carries `PRAGMA application_id` = `APPLICATION_ID` and a `meta` table with
its `schema_version`. `check_existing` opens a file read-only (`mode=ro`) and refuses, with
a `StoreError` that says what, where and what to do, a file that is not SQLite, an SQLite
database of another program (another application id, or tables a store of its schema does
not have), a store of a newer schema, or one whose first pages are damaged; it writes nothing
(but when a crash interrupted a transaction, SQLite's own undo of it, which a read-only
connection cannot do). These checks read the header and the schema only, never the whole
file: the full check is `procflow store check` (`procflow.interpreter.store_check`).
`migrate` then brings an older schema up to date, in order, in one `BEGIN IMMEDIATE`
transaction; a store of the current schema is opened without any write.

`diagnose` turns an SQLite error into the operator's words by its result code: a read-only
file, a full disk, a lock held too long, an I/O error and a damaged file each get their own
message and advice (a read-only file or a full disk is never called damaged).
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Callable
from functools import cache
from pathlib import Path

from procflow.errors import StoreError, StoreUnavailable

APPLICATION_ID = 0x50464C57
"""`PRAGMA application_id` of a procflow store ("PFLW"): tells our files from other programs'."""

SQLITE_HEADER = b"SQLite format 3\x00"
BUSY_TIMEOUT_SECONDS = 30.0
"""How long a writer waits for another process's write transaction before giving up."""

Migration = str | Callable[[sqlite3.Connection], None]

MIGRATIONS: tuple[tuple[int, tuple[Migration, ...]], ...] = (
    (
        1,
        (
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
            """CREATE TABLE definitions (
                fingerprint TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                version INTEGER NOT NULL,
                path TEXT NOT NULL,
                sources TEXT NOT NULL
            ) WITHOUT ROWID""",
            """CREATE TABLE instances (
                workflow_id TEXT PRIMARY KEY,
                process TEXT NOT NULL,
                fingerprint TEXT NOT NULL,
                status TEXT NOT NULL,
                version INTEGER NOT NULL,
                history_count INTEGER NOT NULL,
                updated REAL NOT NULL,
                state TEXT NOT NULL
            )""",
            "CREATE INDEX instances_by_status ON instances (status)",
            """CREATE TABLE correlations (
                process TEXT NOT NULL,
                correlation_id TEXT NOT NULL,
                workflow_id TEXT NOT NULL,
                PRIMARY KEY (process, correlation_id, workflow_id)
            ) WITHOUT ROWID""",
            "CREATE INDEX correlations_by_key ON correlations (correlation_id)",
            """CREATE TABLE history (
                workflow_id TEXT NOT NULL,
                seq INTEGER NOT NULL,
                entry TEXT NOT NULL,
                PRIMARY KEY (workflow_id, seq)
            ) WITHOUT ROWID""",
            """CREATE TABLE outbox (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                workflow_id TEXT NOT NULL,
                dedup_key TEXT NOT NULL UNIQUE,
                dispatch TEXT NOT NULL,
                created_at TEXT NOT NULL,
                sent_at TEXT,
                emitted INTEGER NOT NULL DEFAULT 1
            )""",
            "CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL",
            "CREATE INDEX outbox_by_instance ON outbox (workflow_id)",
            """CREATE TABLE timers (
                workflow_id TEXT PRIMARY KEY,
                next_due REAL NOT NULL,
                wait_due REAL,
                deadline REAL
            ) WITHOUT ROWID""",
            "CREATE INDEX timers_by_due ON timers (next_due)",
            """CREATE TABLE inbox (
                message_id TEXT PRIMARY KEY,
                workflow_id TEXT NOT NULL,
                received_at TEXT NOT NULL
            ) WITHOUT ROWID""",
        ),
    ),
    (
        2,
        (
            # The digest of each applied message: a message id reused for another message is
            # refused, not dropped as a duplicate. Rows written before it have none (NULL).
            "ALTER TABLE inbox ADD COLUMN digest TEXT",
        ),
    ),
    (
        # Many workers on one file: a worker claims the commands it sends and the timers it
        # fires until a lease runs out (seconds since the epoch), so no two send one command.
        3,
        (
            "ALTER TABLE outbox ADD COLUMN claimed_by TEXT",
            "ALTER TABLE outbox ADD COLUMN claimed_until REAL",
            "ALTER TABLE timers ADD COLUMN claimed_by TEXT",
            "ALTER TABLE timers ADD COLUMN claimed_until REAL",
            "CREATE INDEX outbox_claimed ON outbox (claimed_by) WHERE claimed_by IS NOT NULL",
            "CREATE INDEX timers_claimed ON timers (claimed_by) WHERE claimed_by IS NOT NULL",
        ),
    ),
    (
        # `procflow instances` pages by last change then id (keyset), filtered by status or
        # process, without reading the other rows: one index per way it is asked.
        4,
        (
            "CREATE INDEX instances_by_change ON instances (updated, workflow_id)",
            "CREATE INDEX instances_by_status_change ON instances (status, updated, workflow_id)",
            "CREATE INDEX instances_by_process_change ON instances (process, updated, workflow_id)",
            "DROP INDEX instances_by_status",
        ),
    ),
    (
        # `/metrics` counts instances and their transitions by process and status: an index
        # that holds all three lets a scrape read the index, not every state (the console).
        5,
        (
            "CREATE INDEX instances_by_process_status ON instances (process, status, history_count)",
        ),
    ),
    (
        # A flat durable cost: the completions and milestones of a state (which grow by an
        # entry a step) are kept with the history row of the transition that appended them,
        # so the instance row stays the same size however old the instance is, and the
        # instance row counts them. Rows written before keep theirs in the state JSON (counts
        # 0): read as they are, moved to a history row at their next transition.
        6,
        (
            "ALTER TABLE instances ADD COLUMN completed_count INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE instances ADD COLUMN completed_steps_count INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE history ADD COLUMN completed TEXT",
            "ALTER TABLE history ADD COLUMN completed_steps TEXT",
        ),
    ),
    (
        # A flat durable cost in wide blocks: the waits, tokens and frames of a state with many
        # (a parallel block of a thousand branches, a for-each of a thousand items) are rows of their own, one each, so a
        # transition writes the few it changed instead of the whole list again; the instance
        # row counts them (`items`). A state with few keeps them in its JSON (items 0), as
        # every row written before does.
        7,
        (
            """CREATE TABLE state_items (
                workflow_id TEXT NOT NULL,
                kind TEXT NOT NULL,
                key TEXT NOT NULL,
                item TEXT NOT NULL,
                PRIMARY KEY (workflow_id, kind, key)
            ) WITHOUT ROWID""",
            "ALTER TABLE instances ADD COLUMN items INTEGER NOT NULL DEFAULT 0",
            # The instance's input, which never changes: written with the row, not at every transition
            # (NULL in rows written before: their state JSON holds it).
            "ALTER TABLE instances ADD COLUMN input TEXT",
        ),
    ),
    (
        # Many workers on one wide instance: each transition logs the keys of the rows of
        # `state_items` it wrote or removed (`item_changes`, the last `CHANGES_KEPT` versions of
        # each instance), so a worker that holds an older version of the state reads only what
        # changed since, instead of every row (`item_log.caught_up`). A wait's row also keeps what
        # the wait shows in the status (`shown`), which a worker needs to index it.
        8,
        (
            """CREATE TABLE item_changes (
                workflow_id TEXT NOT NULL,
                version INTEGER NOT NULL,
                kind TEXT NOT NULL,
                key TEXT NOT NULL,
                PRIMARY KEY (workflow_id, version, kind, key)
            ) WITHOUT ROWID""",
            "ALTER TABLE state_items ADD COLUMN shown TEXT",
        ),
    ),
)
"""Schema changes in order: (version, steps). A step is SQL, or a function of the connection
for a backfill (it changes rows only: tables are made by SQL steps). Append a new version;
never edit a released one."""


def current_schema_version() -> int:
    """The store schema this procflow writes."""
    return MIGRATIONS[-1][0]


@cache
def tables_at(version: int) -> frozenset[str]:
    """The tables a store of schema `version` holds (found by running the migrations in memory)."""
    connection = sqlite3.connect(":memory:")
    try:
        for number, steps in MIGRATIONS:
            if number > version:
                break
            for step in steps:
                if isinstance(step, str):
                    connection.execute(step)
        return frozenset(user_tables(connection))
    finally:
        connection.close()


def run_step(connection: sqlite3.Connection, step: Migration) -> None:
    """Apply one migration step."""
    if isinstance(step, str):
        connection.execute(step)
    else:
        step(connection)


def user_tables(connection: sqlite3.Connection) -> set[str]:
    """The tables of the database, without SQLite's own."""
    rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {str(name) for (name,) in rows if not str(name).startswith("sqlite_")}


def migrate(connection: sqlite3.Connection, path: Path) -> None:
    """Bring the schema to the current version, in order, in one write transaction."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        # Checked again under the write lock: another process may have created the file meanwhile.
        application_id = int(connection.execute("PRAGMA application_id").fetchone()[0])
        tables = user_tables(connection)
        if application_id != APPLICATION_ID and tables:
            raise foreign(path, application_id, tables)
        version = schema_version(connection) if "meta" in tables else 0
        target = current_schema_version()
        if version > target:
            raise newer(path, version)
        for number, steps in MIGRATIONS:
            if number > version:
                for step in steps:
                    run_step(connection, step)
        if version < target:
            connection.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(target),),
            )
            connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        connection.execute("COMMIT")
    except BaseException:
        rollback(connection)
        raise


def check_existing(path: Path, verify: bool = False) -> int | None:
    """Read-only checks of a file we are about to open for writing; StoreError when refused.
    Returns the file's schema version (None for an empty SQLite file, ours to set up).
    `verify` adds `PRAGMA quick_check`, which reads the whole file."""
    try:
        with path.open("rb") as file:
            header = file.read(len(SQLITE_HEADER))
    except OSError as error:
        raise StoreError(
            f"cannot read the store {path}: {error.strerror or error}. Nothing was written; check its permissions."
        ) from None
    if header != SQLITE_HEADER:
        raise StoreError(
            f"{path} is not a procflow store: it is not an SQLite database (it starts with {header[:16]!r}), so it is "
            "corrupt or another kind of file. Nothing was written to it. Point --store (or PROCFLOW_STORE) at a "
            "procflow store, or at a new file name to create one."
        )
    try:
        return _check_read_only(path, verify)
    except _Interrupted:
        _finish_interrupted(path)
        return _check_read_only(path, verify)


class _Interrupted(Exception):
    """A crash interrupted a transaction on the file; a read-only connection cannot undo it."""


_INTERRUPTED = frozenset({"SQLITE_READONLY_ROLLBACK", "SQLITE_READONLY_RECOVERY"})
"""What a read-only connection answers when a crash left a hot rollback journal or a WAL
whose index must be rebuilt."""


def _finish_interrupted(path: Path) -> None:
    """Let SQLite undo a transaction a crash interrupted, as the first connection that may write
    does on its first read (any SQLite client would). That restores the file to what was
    committed; it changes nothing that was."""
    try:
        connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS)
        try:
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            connection.close()
    except sqlite3.DatabaseError as error:
        raise diagnose(path, error) from None


def read_only_connection(path: Path) -> sqlite3.Connection:
    """A connection that cannot write to the file (`mode=ro`): for checks; StoreError when it cannot open."""
    try:
        return sqlite3.connect(path.absolute().as_uri() + "?mode=ro", uri=True, timeout=BUSY_TIMEOUT_SECONDS)
    except sqlite3.Error as error:
        raise StoreError(f"cannot open the store {path} to check it: {error}. Nothing was written.") from None


def _check_read_only(path: Path, verify: bool) -> int | None:
    connection = read_only_connection(path)
    try:
        application_id = int(connection.execute("PRAGMA application_id").fetchone()[0])
        tables = user_tables(connection)
        if application_id != APPLICATION_ID:
            if application_id == 0 and not tables:
                return None  # an empty SQLite file: ours to set up
            raise foreign(path, application_id, tables)
        if "meta" not in tables:
            raise StoreError(
                f"{path} carries procflow's application id but has no `meta` table: it is damaged or was not "
                "written by procflow. Nothing was written to it; restore it from a backup or use another file."
            )
        version = schema_version(connection)
        if version > current_schema_version():
            raise newer(path, version)
        unknown = tables - tables_at(version)
        if unknown:
            raise StoreError(
                f"{path} holds tables a procflow store of schema {version} does not have ({', '.join(sorted(unknown))}): "
                "another program wrote to it. Nothing was written to it; use another file for procflow."
            )
        if verify:
            problems = [str(r[0]) for r in connection.execute("PRAGMA quick_check(5)").fetchall()]
            if problems != ["ok"]:
                raise damaged(path, sqlite3.DatabaseError("; ".join(problems)))
        return version
    except sqlite3.DatabaseError as error:
        if getattr(error, "sqlite_errorname", "") in _INTERRUPTED:
            raise _Interrupted from None
        raise diagnose(path, error) from None
    finally:
        connection.close()


def rollback(connection: sqlite3.Connection) -> None:
    """Undo the open transaction, if SQLite has not undone it already (it does on some errors)."""
    if connection.in_transaction:
        try:
            connection.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the error being raised says more than this one


def schema_version(connection: sqlite3.Connection) -> int:
    """The store schema version in `meta` (a DatabaseError when it has none)."""
    row = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None or not str(row[0]).isdigit():
        raise sqlite3.DatabaseError("the meta table has no schema_version")
    return int(row[0])


def foreign(path: Path, application_id: int, tables: set[str]) -> StoreError:
    """The refusal of a database that another program wrote."""
    listed = ", ".join(sorted(tables)[:8]) + (", ..." if len(tables) > 8 else "")
    return StoreError(
        f"{path} is an SQLite database of another program (application id {application_id:#x}, not procflow's "
        f"{APPLICATION_ID:#x}; tables: {listed or 'none'}). procflow leaves it alone: nothing was written to it. "
        "Give --store (or PROCFLOW_STORE) another file name."
    )


def newer(path: Path, version: int) -> StoreError:
    """The refusal of a store written by a newer procflow."""
    return StoreError(
        f"{path} is a procflow store of schema version {version}, written by a newer procflow; this one reads up to "
        f"version {current_schema_version()}. Nothing was written to it. Upgrade procflow to use this store."
    )


def damaged(path: Path, error: sqlite3.DatabaseError) -> StoreError:
    """The refusal of a store SQLite cannot read."""
    return StoreError(
        f"the store {path} is damaged ({error}); nothing was written to it. Restore it from a backup, or try "
        f"`sqlite3 {path} .recover` into a new file. `procflow store check` lists what is wrong."
    )


def diagnose(path: Path, error: sqlite3.Error) -> StoreError:
    """What an SQLite error means to an operator, by its result code (`sqlite_errorname`), with
    what to do. Only a file SQLite finds corrupt is called damaged: a read-only file or a full
    disk must never send anyone to their backups."""
    code = str(getattr(error, "sqlite_errorname", "") or "")
    if code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return StoreUnavailable(
            f"the store {path} stayed locked by another process for {BUSY_TIMEOUT_SECONDS:.0f}s; nothing was written. "
            "Try again, or stop the process that holds it (`fuser` names it)."
        )
    if code.startswith("SQLITE_READONLY"):
        return StoreError(
            f"the store {path} is read-only: the file, its folder or its filesystem refuses writes ({error}). "
            "Nothing was written and nothing is lost. Make it writable (check `ls -l`, `lsattr` and the mount) or point "
            "--store at a copy in a writable place."
        )
    if code == "SQLITE_FULL":
        return StoreError(
            f"the disk holding the store {path} is full ({error}); this change was not written, and everything written "
            "before it is kept. Free some space (or move the store to a larger disk), then run the command again."
        )
    if code.startswith("SQLITE_IOERR") or code == "SQLITE_CANTOPEN":
        return StoreError(
            f"the system could not read or write the store {path} ({code}: {error}); nothing more was written. Check "
            "that the file and its folder are still there and that the disk works (`dmesg`), then run the command again."
        )
    if code in ("SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_CORRUPT_INDEX", "SQLITE_CORRUPT_SEQUENCE") or not code:
        return damaged(path, sqlite3.DatabaseError(str(error)))
    return StoreError(f"SQLite refused to use the store {path} ({code}: {error}); nothing was written.")


FileIdentity = tuple[int, int]
"""(st_dev, st_ino): which file a path named when the store opened it."""


def identity(path: Path) -> FileIdentity:
    """The identity of the file at `path` now (OSError when there is none)."""
    status = os.stat(path)
    return status.st_dev, status.st_ino


def check_same_file(path: Path, opened: FileIdentity) -> None:
    """StoreError when the file at `path` is no longer the one opened: deleted, or replaced (a
    restore, a copy moved over it). Writing on would go to a file nobody will read again."""
    try:
        now = identity(path)
    except OSError as error:
        if error.errno != errno.ENOENT:
            raise StoreError(f"cannot look at the store {path}: {error.strerror or error}. Nothing more was written.") from None
        raise StoreError(
            f"the store {path} was deleted while procflow had it open; procflow stops so as not to write to a file "
            "nobody will read again. Nothing more was written. Restore the file from a backup (or put it back), "
            "then start again."
        ) from None
    if now != opened:
        raise StoreError(
            f"the store {path} was replaced by another file while procflow had it open; procflow stops so as not to "
            "write to the old one. Nothing more was written. Start again to work on the file now at that path."
        )
