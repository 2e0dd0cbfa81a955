"""The embedded durable store: one SQLite file, one transaction per transition.

::

    meta         key -> value: `schema_version` (and the file carries PRAGMA application_id)
    definitions  fingerprint -> the text of a pinned definition (every file it read)
    instances    workflow_id -> state JSON (without history, completions and milestones, and
                 without its waits and tokens when they are many), version, status, process, and
                 how many history entries, completions, milestones and `state_items` it has
    state_items  (workflow_id, kind, key) -> one wait (under its serial) or token (under its id)
                 of a state with many: a transition writes those it changed (`stores.item_rows`)
    correlations (process, correlationId, workflow_id): routes replies by business key
    history      (workflow_id, seq) -> one history entry as JSON, and what its transition appended
                 to the state's `completed` and `completedSteps` (JSON arrays, or NULL): read
                 back for inspection (`get`) or for a transition that reads them (`load(whole=True)`)
    outbox       commands to send, one row per dedupKey (unique), sent_at once the transport took it;
                 ids are never reused (AUTOINCREMENT), so a worker marking an id sent cannot hit a newer row;
                 claimed_by/claimed_until while a worker sends it
    timers       workflow_id -> the earliest moment it acts by itself (waits and deadline), indexed;
                 claimed like the outbox
    inbox        message_id -> the instance it was applied to and the digest of the message: a
                 redelivered reply is a no-op, another message under a used id is refused

The file is WAL-journaled; every write transaction opens with `BEGIN IMMEDIATE`, so two
processes on one file queue for the write lock instead of failing half way. `save` checks
the inbox, bumps the instance's version only if it is still the one the caller read
(optimistic concurrency: `ConcurrencyError` otherwise), and writes the history, outbox,
timer and inbox rows in the same transaction: a crash keeps all of a transition or none.

Many workers on one file share the outbox and the timers by claims: a worker takes a batch
of rows that nobody holds (or whose lease ran out) in one `BEGIN IMMEDIATE` transaction and
marks them `claimed_by` itself `claimed_until` a lease runs out (this machine's clock); the
write lock makes the claim atomic, and a worker that dies loses its claims with its lease.

Opening checks the file read-only first (is it SQLite, is it ours, is its schema one we
know) and writes nothing to a file it refuses: `StoreError` says what is wrong, where, and
what to do. These checks read the header and the schema, never the whole file (the full
check is `procflow store check`), and a store of the current schema is opened without a
write. Older schemas are migrated, in order, in one transaction
(`procflow.interpreter.sqlite_schema` holds the schema, the migrations and those checks).
Every write first checks that the path still names the file opened (its device and inode),
and so do reads, at most every `READ_CHECK_SECONDS`: a store deleted or replaced under a
running worker, busy or idle, stops it instead of being written on.

Why one module of about 630 lines: it is one class, the store interface on SQLite; its
schema, migrations and opening checks are already `sqlite_schema.py`, and the JSON text
both stores keep is `stores.py`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from procflow.errors import ConcurrencyError, DamagedRecord, DuplicateMessage, StoreError
from procflow.interpreter.item_log import (
    catch_up_from,
    changes_trimmed,
    held_caught_up,
    logged_changes,
)
from procflow.interpreter.memory_store import (
    HELD_LEASE_LEFT,
    LEASE_SECONDS,
    PAGE_LIMIT,
    PageCursor,
    PinnedDefinition,
    Stored,
    new_correlations,
)
from procflow.interpreter.messages import Dispatch
from procflow.interpreter.sqlite_schema import (
    APPLICATION_ID,
    BUSY_TIMEOUT_SECONDS,
    check_existing,
    check_same_file,
    current_schema_version,
    diagnose,
    identity,
    migrate,
    rollback,
)
from procflow.interpreter.state import (
    InstanceState,
    parse_instant,
)
from procflow.interpreter.stores import (
    RECENT_STATES,
    HistoryRow,
    InstanceSummary,
    ItemRows,
    LogTexts,
    OutboxEntry,
    RecentStates,
    StoreGauges,
    decode_dispatch,
    decode_for_transition,
    decode_state,
    encode_dispatch,
    encode_input,
    encode_state,
    history_rows,
    item_count,
    item_rows,
    page_query,
    read_stored_json,
    timer_of,
)

__all__ = ["APPLICATION_ID", "InstanceSummary", "OutboxEntry", "SqliteStore", "Synchronous", "current_schema_version"]


Synchronous = Literal["FULL", "NORMAL"]

READ_CHECK_SECONDS = 0.05
"""How often a read checks that the path still names the file opened (a write always does):
a transition reads three times and writes once, and each check is a `stat`."""


class SqliteStore:
    """The durable store in one SQLite file (see the module docstring for the tables).

    `synchronous="FULL"` syncs the WAL at every commit (a committed transition survives a
    power cut); `"NORMAL"` syncs at checkpoints only (it survives a crash of the process, not
    of the machine). `create=False` refuses to make a new file (for read-only commands);
    `verify=True` adds a `PRAGMA quick_check` at open, which reads the whole file (off by
    default: `procflow store check` does the full check when an operator asks). `recent`:
    how many instances' last written states it keeps to hand back to their next transition
    without decoding them (`RecentStates`; 0 keeps none).
    """

    def __init__(
        self, path: str | Path, synchronous: Synchronous = "FULL", *, create: bool = True, verify: bool = False,
        recent: int = RECENT_STATES,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise StoreError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
        self.path = Path(path)
        self.synchronous = synchronous
        self._connection: sqlite3.Connection | None = None
        self._checked_at = float("-inf")  # when `_db` last found the path naming the file opened
        self._recent = RecentStates(recent)
        self._connection = self._open(create, verify)
        try:
            self._identity = identity(self.path)
        except OSError as error:
            self.close()
            raise StoreError(f"cannot look at the store {self.path}: {error.strerror or error}") from None

    # ---------------------------------------------------------------- opening
    def _open(self, create: bool, verify: bool) -> sqlite3.Connection:
        where = str(self.path)
        if self.path.is_dir():
            raise StoreError(f"{where} is a folder, not a store file; give --store a file path (e.g. {where}/procflow.sqlite)")
        exists = self.path.exists() and self.path.stat().st_size > 0
        found = None
        if exists:
            found = check_existing(self.path, verify)
        elif not create:
            raise StoreError(f"there is no store at {where}; start an instance first (`procflow start ... --store {where}`)")
        elif not self.path.parent.is_dir():
            raise StoreError(f"cannot create the store {where}: the folder {self.path.parent} does not exist")
        try:
            connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
        except sqlite3.Error as error:
            raise StoreError(f"cannot open the store {where}: {error}") from None
        try:
            if not exists:
                # A new file is WAL from its first transaction: a crash while the schema is being
                # made leaves a WAL, which the read-only check of the next open can read.
                connection.execute("PRAGMA journal_mode = WAL")
            if found != current_schema_version():
                # The schema first: it checks the file again under the write lock before it writes.
                migrate(connection, self.path)
                connection.execute("PRAGMA journal_mode = WAL")
            connection.execute(f"PRAGMA synchronous = {self.synchronous}")
        except sqlite3.DatabaseError as error:
            connection.close()
            raise diagnose(self.path, error) from None
        except BaseException:
            connection.close()
            raise
        return connection

    @property
    def location(self) -> str:
        """The file's path."""
        return str(self.path)

    def close(self) -> None:
        """Close the file (a closed store cannot be used again)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        """The schema version of the open file."""
        [(value,)] = self._rows("SELECT value FROM meta WHERE key = 'schema_version'")
        return int(value)

    # ---------------------------------------------------------------- transactions
    def _db(self, writing: bool = False) -> sqlite3.Connection:
        if self._connection is None:
            raise StoreError(f"the store {self.path} is closed")
        now = time.monotonic()
        if writing or now - self._checked_at > READ_CHECK_SECONDS:
            check_same_file(self.path, self._identity)  # one stat: a deleted or replaced file is never written on
            self._checked_at = now
        return self._connection

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """One SELECT: a statement on its own is its own read transaction (no BEGIN needed)."""
        try:
            return self._db().execute(sql, args).fetchall()
        except sqlite3.DatabaseError as error:
            raise self._error(error) from None
        except _UNBINDABLE as error:
            raise self._unbindable(error) from None

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One consistent snapshot for several SELECTs (WAL readers never wait for the writer)."""
        connection = self._db()
        try:
            connection.execute("BEGIN")
            try:
                yield connection
            finally:
                connection.execute("COMMIT")
        except sqlite3.DatabaseError as error:
            raise self._error(error) from None
        except _UNBINDABLE as error:
            raise self._unbindable(error) from None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: `BEGIN IMMEDIATE` takes the write lock first, so what is read
        inside cannot change before the commit; anything raised rolls it all back."""
        connection = self._db(writing=True)
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
                self._commit(connection)
            except BaseException:
                rollback(connection)
                raise
        except sqlite3.DatabaseError as error:
            raise self._error(error) from None
        except _UNBINDABLE as error:
            raise self._unbindable(error) from None

    def _commit(self, connection: sqlite3.Connection) -> None:
        # Its own method so a profile shows what the commit (the fsync with FULL) costs.
        connection.execute("COMMIT")

    def _unbindable(self, error: Exception) -> StoreError:
        return StoreError(
            f"a value given to the store {self.path} cannot be kept in SQLite ({type(error).__name__}: {error}); "
            "nothing was read or written. Ids are text without control characters (see procflow.ids)."
        )

    def _error(self, error: sqlite3.DatabaseError) -> StoreError:
        if isinstance(error, sqlite3.ProgrammingError):  # a value SQLite cannot bind: the caller's, not the file's
            return self._unbindable(error)
        return diagnose(self.path, error)

    # ---------------------------------------------------------------- the Store protocol
    def get(self, workflow_id: str) -> Stored | None:
        """The whole instance (state with its history, completions and milestones, and version), or None."""
        with self._read() as connection:
            row = connection.execute("SELECT state, version, items, input FROM instances WHERE workflow_id = ?", (workflow_id,)).fetchone()
            if row is None:
                return None
            history = connection.execute(
                "SELECT entry, completed, completed_steps FROM history WHERE workflow_id = ? ORDER BY seq", (workflow_id,)
            ).fetchall()
            items = self._items(connection, workflow_id) if row[2] else []
        return Stored(
            self._decode(workflow_id, row[0], [e for e, _, _ in history], [(c, s) for _, c, s in history], items, row[3]), int(row[1])
        )

    def load(self, workflow_id: str, *, whole: bool = False) -> Stored | None:
        """The instance as a transition needs it, or None: without reading its history,
        completions and milestones (`Tail`s of as many entries as the row counts); `whole`
        reads the completions and milestones too (a transition that read them: `NotLoaded`)."""
        # The state's JSON only when the state this store holds (`RecentStates`) is not the row's version.
        query = (
            "SELECT CASE WHEN version = ? THEN NULL ELSE state END, version, history_count, completed_count, "
            "completed_steps_count, items, CASE WHEN version = ? THEN NULL ELSE input END FROM instances WHERE workflow_id = ?"
        )
        kept = None if whole else self._recent.version(workflow_id)
        mine = -1 if kept is None else kept
        args = (mine, mine, workflow_id)
        logs = None
        items: list[Any] = []
        changes: list[Any] | None = None
        rows = [] if whole else self._rows(query, args)  # one statement: its own snapshot
        if whole or (rows and rows[0][0] is not None and rows[0][5]):
            with self._read() as connection:  # one snapshot for all
                rows = connection.execute(query, args).fetchall()
                if whole:
                    logs = connection.execute(
                        "SELECT completed, completed_steps FROM history WHERE workflow_id = ? "
                        "AND (completed IS NOT NULL OR completed_steps IS NOT NULL) ORDER BY seq",
                        (workflow_id,),
                    ).fetchall()
                if rows and rows[0][0] is not None and rows[0][5]:
                    if catch_up_from(kept, int(rows[0][1])):  # what changed since the state held here
                        changes = connection.execute(
                            "SELECT c.version, c.kind, c.key, s.item, s.shown FROM item_changes c LEFT JOIN state_items s "
                            "ON s.workflow_id = c.workflow_id AND s.kind = c.kind AND s.key = c.key "
                            "WHERE c.workflow_id = ? AND c.version > ?",
                            (workflow_id, kept),
                        ).fetchall()
                    else:
                        items = self._items(connection, workflow_id)
        if not rows:
            return None
        text, version, *numbers = rows[0][:5]
        counts = (int(numbers[0]), int(numbers[1]), int(numbers[2]))
        if text is None:
            state = self._recent.state(workflow_id, int(version), counts)
            if state is not None:
                return Stored(state, int(version))
            self._recent.forget(workflow_id)  # replaced by another thread meanwhile: read the row's JSON
            return self.load(workflow_id, whole=whole)
        if changes is not None:
            state_now = held_caught_up(self._recent, workflow_id, kept, text, counts, int(rows[0][5]), int(version), changes, str(self.path))
            if state_now is None:  # (the log cannot say it all: read every row)
                return self.load(workflow_id, whole=whole)
            return Stored(state_now, int(version))
        state = self._decode_for_transition(workflow_id, text, counts, logs, items, rows[0][6])
        if not whole:  # (kept: the instance's next transition, here, starts from it without reading it again)
            self._recent.keep(state, int(version), read=True)
        return Stored(state, int(version))

    def find(self, process: str | None, correlation_id: str) -> list[str]:
        """Instances (of `process`, or of any) with a frame that correlates by `correlation_id`."""
        if process is None:
            rows = self._rows(
                "SELECT DISTINCT c.workflow_id FROM correlations c JOIN instances i USING (workflow_id) "
                "WHERE c.correlation_id = ? ORDER BY i.rowid",
                (correlation_id,),
            )
        else:
            rows = self._rows(
                "SELECT c.workflow_id FROM correlations c JOIN instances i USING (workflow_id) "
                "WHERE c.process = ? AND c.correlation_id = ? ORDER BY i.rowid",
                (process, correlation_id),
            )
        return [str(r[0]) for r in rows]

    def save(
        self,
        state: InstanceState,
        expected_version: int | None,
        dispatches: list[Dispatch],
        message_id: str | None = None,
        message_digest: str | None = None,
        sent: Sequence[int] = (),
        claim_for: str | None = None,
    ) -> int:
        """Write one transition in one transaction: instance row (version checked), new history
        entries, outbox rows (claimed by `claim_for` when given), the timer row, correlations,
        the inbox entry (with the digest of the message) and the "sent" marks of the commands
        `sent`."""
        workflow_id = state.workflowId
        # Encoded before the write lock is taken, so the lock is held for SQL only.
        state_json = self._encode(state)
        queued = [(d, self._encode_dispatch(d)) for d in dispatches]
        item_total = item_count(state)
        # The state the row holds, when this store has it: a transition writes what changed since.
        before = self._recent.written(workflow_id, expected_version) if expected_version is not None else None
        with self._write() as connection:
            if message_id is not None:
                # First, as on PostgreSQL: a message id the inbox holds ends the write here.
                inserted = connection.execute(
                    "INSERT INTO inbox (message_id, workflow_id, received_at, digest) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (message_id) DO NOTHING",
                    (message_id, workflow_id, state.updatedAt, message_digest),
                )
                if inserted.rowcount != 1:
                    raise DuplicateMessage(f"message {message_id} was already applied")
            updated = parse_instant(state.updatedAt).timestamp()
            counts = (len(state.history), len(state.completed), len(state.completedSteps))
            if expected_version is None:
                version, stored, had_items = 1, (0, 0, 0), False
                inserted = connection.execute(
                    "INSERT INTO instances (workflow_id, process, fingerprint, status, version, history_count, "
                    "completed_count, completed_steps_count, updated, items, input, state) "
                    "VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (workflow_id) DO NOTHING",
                    (workflow_id, state.type, state.definition.fingerprint, state.status, *counts, updated, item_total, encode_input(state),
                     state_json),
                )
                if inserted.rowcount != 1:
                    raise ConcurrencyError(f"instance {workflow_id} already exists")
            else:
                row = connection.execute(
                    "SELECT version, history_count, completed_count, completed_steps_count, items, input IS NULL FROM instances "
                    "WHERE workflow_id = ?",
                    (workflow_id,),
                ).fetchone()
                if row is None or int(row[0]) != expected_version:
                    raise ConcurrencyError(f"instance {workflow_id} changed since version {expected_version}")
                version, stored, had_items = expected_version + 1, (int(row[1]), int(row[2]), int(row[3])), bool(row[4])
                changed = connection.execute(
                    "UPDATE instances SET status = ?, fingerprint = ?, version = ?, history_count = ?, completed_count = ?, "
                    "completed_steps_count = ?, updated = ?, items = ?, state = ? WHERE workflow_id = ? AND version = ?",
                    (state.status, state.definition.fingerprint, version, *counts, updated, item_total, state_json,
                     workflow_id, expected_version),
                )
                if changed.rowcount != 1:
                    raise ConcurrencyError(f"instance {workflow_id} changed since version {expected_version}")
                if row[5]:  # a row written before the input had a column: its JSON held it until now
                    connection.execute("UPDATE instances SET input = ? WHERE workflow_id = ?", (encode_input(state), workflow_id))
            self._write_items(connection, workflow_id, version, item_rows(state, before, had_items), had_items or item_total > 0)
            self._insert(
                connection, "INSERT INTO history (workflow_id, seq, entry, completed, completed_steps) VALUES (?, ?, ?, ?, ?)",
                [(workflow_id, *row) for row in self._encode_history(state, stored)],
            )
            if expected_version is None or state.frames:  # an instance's own key never changes
                self._insert(
                    connection, "INSERT INTO correlations (process, correlation_id, workflow_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                    [(state.type, c, workflow_id) for c in new_correlations(state, before)],
                )
            claim = (claim_for, time.time() + LEASE_SECONDS) if claim_for is not None else (None, None)
            for dispatch, text in queued:
                self._enqueue(connection, workflow_id, dispatch, text, state.updatedAt, claim)
            self._set_timer(connection, state)
            if sent:
                self._mark(connection, sent)
        self._recent.keep(state, version)  # committed
        return version

    @classmethod
    def _write_items(cls, connection: sqlite3.Connection, workflow_id: str, version: int, rows: ItemRows, wide: bool) -> None:
        """The waits and tokens a transition changed, in rows of their own (`stores.item_rows`),
        and, for a `wide` instance (rows before or after), which ones in the log (`logged_changes`)."""
        if wide:
            cls._insert(
                connection, "INSERT INTO item_changes (workflow_id, version, kind, key) VALUES (?, ?, ?, ?)",
                [(workflow_id, *change) for change in logged_changes(rows, version)],
            )
        trimmed = changes_trimmed(version)
        if trimmed is not None:
            connection.execute("DELETE FROM item_changes WHERE workflow_id = ? AND version <= ?", (workflow_id, trimmed))
        if rows.empty:
            return
        for kind in rows.cleared:
            connection.execute("DELETE FROM state_items WHERE workflow_id = ? AND kind = ?", (workflow_id, kind))
        cls._insert(
            connection, "DELETE FROM state_items WHERE workflow_id = ? AND kind = ? AND key = ?",
            [(workflow_id, kind, key) for kind, key in rows.deleted],
        )
        cls._insert(
            connection, "INSERT INTO state_items (workflow_id, kind, key, item, shown) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (workflow_id, kind, key) DO UPDATE SET item = excluded.item, shown = excluded.shown",
            [(workflow_id, *item) for item in rows.written],
        )

    @staticmethod
    def _items(connection: sqlite3.Connection, workflow_id: str) -> list[Any]:
        """An instance's rows of `state_items`, in order."""
        return connection.execute(
            "SELECT kind, key, item FROM state_items WHERE workflow_id = ? ORDER BY kind, key", (workflow_id,)
        ).fetchall()

    @staticmethod
    def _insert(connection: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """Rows into a table: one statement for one row (the usual case), none for none."""
        if len(rows) == 1:
            connection.execute(sql, rows[0])
        elif rows:
            connection.executemany(sql, rows)

    def _enqueue(
        self, connection: sqlite3.Connection, workflow_id: str, dispatch: Dispatch, text: str, at: str,
        claim: tuple[str | None, float | None],
    ) -> None:
        inserted = connection.execute(
            "INSERT INTO outbox (workflow_id, dedup_key, dispatch, created_at, claimed_by, claimed_until) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (dedup_key) DO NOTHING",
            (workflow_id, dispatch.dedupKey, text, at, *claim),
        )
        if inserted.rowcount == 1:
            return
        owner, emitted = connection.execute(
            "SELECT workflow_id, emitted FROM outbox WHERE dedup_key = ?", (dispatch.dedupKey,)
        ).fetchone()
        if owner != workflow_id:
            raise StoreError(
                f"instance {workflow_id} would send `{dispatch.command.commandName}` under the dedup key "
                f"{dispatch.dedupKey}, which instance {owner} already used: participants would drop it as a "
                f"duplicate. The correlationId `{dispatch.command.correlationId}` must belong to one instance; "
                "nothing was written."
            )
        # The same instance asks for the same key again (a step run again by a loop): send it
        # again, after what is queued now, and count how often it was asked for.
        connection.execute("DELETE FROM outbox WHERE dedup_key = ?", (dispatch.dedupKey,))
        connection.execute(
            "INSERT INTO outbox (workflow_id, dedup_key, dispatch, created_at, emitted, claimed_by, claimed_until) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (workflow_id, dispatch.dedupKey, text, at, int(emitted) + 1, *claim),
        )

    @staticmethod
    def _set_timer(connection: sqlite3.Connection, state: InstanceState) -> None:
        timer = timer_of(state)
        if timer is None:
            connection.execute("DELETE FROM timers WHERE workflow_id = ?", (state.workflowId,))
            return
        # A new moment is a new timer: whoever claimed the old one no longer holds it.
        connection.execute(
            "INSERT INTO timers (workflow_id, next_due, wait_due, deadline) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (workflow_id) DO UPDATE SET next_due = excluded.next_due, "
            "wait_due = excluded.wait_due, deadline = excluded.deadline, claimed_by = NULL, claimed_until = NULL",
            (state.workflowId, *timer),
        )

    def due(self, now: datetime) -> list[str]:
        """Instances with a timer (timeout, backoff, timer step, deadline) due at or before `now`."""
        rows = self._rows("SELECT workflow_id FROM timers WHERE next_due <= ? ORDER BY next_due, workflow_id", (now.timestamp(),))
        return [str(r[0]) for r in rows]

    def claim_due(self, now: datetime, worker: str, limit: int = 100, lease: float = LEASE_SECONDS) -> list[str]:
        """Instances with a timer due at or before `now` that no other worker holds, now held by
        `worker` for `lease` seconds (until the instance's next save sets its timer anew)."""
        if not self._rows(  # a read first, as in `claim_outbox`
            "SELECT 1 FROM timers WHERE next_due <= ? AND (claimed_until IS NULL OR claimed_until < ?) LIMIT 1",
            (now.timestamp(), time.time()),
        ):
            return []
        with self._write() as connection:
            rows = connection.execute(
                "UPDATE timers SET claimed_by = ?, claimed_until = ? WHERE workflow_id IN ("
                "SELECT workflow_id FROM timers WHERE next_due <= ? AND (claimed_until IS NULL OR claimed_until < ?) "
                "ORDER BY next_due, workflow_id LIMIT ?) RETURNING workflow_id, next_due",
                (worker, time.time() + lease, now.timestamp(), time.time(), limit),
            ).fetchall()
        return [str(w) for w, _ in sorted(rows, key=lambda row: (row[1], row[0]))]

    def next_due(self) -> float | None:
        """The earliest timer of the store (seconds since the epoch), or None."""
        [row] = self._rows("SELECT min(next_due) FROM timers")
        return None if row[0] is None else float(row[0])

    def outbox(self, limit: int = 100) -> list[tuple[int, Dispatch]]:
        """Commands not yet marked sent, oldest first."""
        rows = self._rows("SELECT id, dispatch FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT ?", (limit,))
        return [(int(i), self._decode_dispatch(text)) for i, text in rows]

    def claim_outbox(self, worker: str, limit: int = 100, lease: float = LEASE_SECONDS) -> list[tuple[int, Dispatch]]:
        """Unsent commands that no other worker holds (or whose lease ran out; `worker`'s own,
        their lease renewed), oldest first, now held by `worker` for `lease` seconds."""
        # A read first: when nothing is there to claim (an idle worker, the end of a pump), no
        # write lock is taken and nothing is committed.
        free = "sent_at IS NULL AND (claimed_until IS NULL OR claimed_until < ? OR claimed_by = ?)"
        if not self._rows(f"SELECT 1 FROM outbox WHERE {free} LIMIT 1", (time.time(), worker)):
            return []
        with self._write() as connection:
            rows = connection.execute(
                f"UPDATE outbox SET claimed_by = ?, claimed_until = ? WHERE id IN (SELECT id FROM outbox WHERE {free} "
                "ORDER BY id LIMIT ?) RETURNING id, dispatch",
                (worker, time.time() + lease, time.time(), worker, limit),
            ).fetchall()
        return sorted((int(i), self._decode_dispatch(text)) for i, text in rows)

    def held_outbox(self, worker: str, limit: int = 100) -> list[tuple[int, Dispatch]]:
        """Unsent commands `worker` holds with `HELD_LEASE_LEFT` of their lease left, oldest
        first: a read, no write."""
        rows = self._rows(
            "SELECT id, dispatch FROM outbox WHERE claimed_by = ? AND sent_at IS NULL AND claimed_until >= ? ORDER BY id LIMIT ?",
            (worker, time.time() + HELD_LEASE_LEFT, limit),
        )
        return [(int(i), self._decode_dispatch(text)) for i, text in rows]

    def mark_sent(self, *outbox_ids: int) -> None:
        """The transport took the commands (one small transaction for all); their claims end with it."""
        if outbox_ids:
            with self._write() as connection:
                self._mark(connection, outbox_ids)

    @staticmethod
    def _mark(connection: sqlite3.Connection, outbox_ids: Sequence[int]) -> None:
        at = _now_text()
        connection.executemany(
            "UPDATE outbox SET sent_at = ?, claimed_by = NULL, claimed_until = NULL WHERE id = ? AND sent_at IS NULL",
            [(at, i) for i in outbox_ids],
        )

    def wait_for_work(self, timeout: float) -> None:
        """Sleep `timeout` seconds: SQLite tells no other process of a write, so workers poll."""
        time.sleep(timeout)

    def release(self, worker: str, outbox_ids: Iterable[int] = (), workflow_ids: Iterable[str] = ()) -> None:
        """Give up `worker`'s claims on these commands and timers (it could not finish them)."""
        ids, workflows = list(outbox_ids), list(workflow_ids)
        with self._write() as connection:
            connection.executemany(
                "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL WHERE id = ? AND claimed_by = ? AND sent_at IS NULL",
                [(i, worker) for i in ids],
            )
            connection.executemany(
                "UPDATE timers SET claimed_by = NULL, claimed_until = NULL WHERE workflow_id = ? AND claimed_by = ?",
                [(w, worker) for w in workflows],
            )

    def release_all(self, worker: str) -> None:
        """Give up every claim held in `worker`'s name (a worker restarted under the same name
        takes back what its previous run held, without waiting for the lease)."""
        with self._write() as connection:
            connection.execute(
                "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = ?", (worker,)
            )
            connection.execute(
                "UPDATE timers SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = ?", (worker,)
            )

    def seen(self, message_id: str) -> bool:
        """True when the inbox holds the message id."""
        return bool(self._rows("SELECT 1 FROM inbox WHERE message_id = ?", (message_id,)))

    def digest_of(self, message_id: str) -> str | None:
        """The digest of the message applied under this id (None when none was, or when it was
        applied before the store kept digests)."""
        rows = self._rows("SELECT digest FROM inbox WHERE message_id = ?", (message_id,))
        return str(rows[0][0]) if rows and rows[0][0] is not None else None

    def instances(self, status: str | None = None) -> list[InstanceState]:
        """Every instance (or those with `status`), in the order they started."""
        where, args = ("WHERE status = ?", (status,)) if status is not None else ("", ())
        with self._read() as connection:
            rows = connection.execute(f"SELECT workflow_id, state, items, input FROM instances {where} ORDER BY rowid", args).fetchall()
            entries: dict[str, list[str]] = {}
            logs: dict[str, list[LogTexts]] = {}
            for workflow_id, entry, completed, steps in connection.execute(
                "SELECT workflow_id, entry, completed, completed_steps FROM history ORDER BY workflow_id, seq"
            ):
                entries.setdefault(workflow_id, []).append(entry)
                logs.setdefault(workflow_id, []).append((completed, steps))
            items = {wid: self._items(connection, wid) for wid, _, count, _ in rows if count}
        return [
            self._decode(wid, text, entries.get(wid, []), logs.get(wid, ()), items.get(wid, ()), input_text)
            for wid, text, _, input_text in rows
        ]

    def pin(self, pinned: PinnedDefinition) -> None:
        """Keep the text of a definition, once per fingerprint."""
        with self._write() as connection:
            connection.execute(
                "INSERT INTO definitions (fingerprint, name, version, path, sources) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (fingerprint) DO NOTHING",
                (pinned.fingerprint, pinned.name, pinned.version, pinned.path, json.dumps(dict(pinned.sources))),
            )

    def pinned(self, fingerprint: str) -> PinnedDefinition | None:
        """The kept text of a definition, or None."""
        rows = self._rows("SELECT name, version, path, sources FROM definitions WHERE fingerprint = ?", (fingerprint,))
        if not rows:
            return None
        row = rows[0]
        sources = self._json(row[3], f"the pinned text of `{row[0]}` ({fingerprint})")
        if not isinstance(sources, dict) or not all(isinstance(v, str) for v in sources.values()):
            raise DamagedRecord(f"the pinned text of `{row[0]}` ({fingerprint}) in {self.path} is damaged: not a map of file texts")
        return PinnedDefinition(str(row[0]), int(row[1]), fingerprint, str(row[2]), sources)

    # ---------------------------------------------------------------- for operators
    def pinned_definitions(self) -> list[PinnedDefinition]:
        """Every definition the store keeps."""
        rows = self._rows("SELECT fingerprint FROM definitions ORDER BY name, version")
        found = [self.pinned(str(fp)) for (fp,) in rows]
        return [p for p in found if p is not None]

    def summaries(self, status: str | None = None) -> list[InstanceSummary]:
        """One line per instance (or per instance with `status`), in the order they started."""
        where, args = ("WHERE status = ?", (status,)) if status is not None else ("", ())
        rows = self._rows(
            f"SELECT workflow_id, process, status, version, state, updated FROM instances {where} ORDER BY rowid", args
        )
        return self._summaries(rows)

    def instance_page(
        self, limit: int = PAGE_LIMIT, after: PageCursor | None = None, status: str | None = None, process: str | None = None,
        *, text: str | None = None, newest_first: bool = False,
    ) -> list[InstanceSummary]:
        """Up to `limit` instances ordered by last change then id, after `after`: one range of an index."""
        tail, args = page_query("instances", limit, after, status, process, "?", text, newest_first, "correlations")
        return self._summaries(self._rows(f"SELECT workflow_id, process, status, version, state, updated {tail}", args))

    def status_counts(self, process: str | None = None) -> dict[str, int]:
        """How many instances (of `process`) have each status: one GROUP BY over an index."""
        where, args = ("WHERE process = ?", (process,)) if process is not None else ("", ())
        rows = self._rows(f"SELECT status, count(*) FROM instances {where} GROUP BY status ORDER BY status", args)
        return {str(status): int(count) for status, count in rows}

    def _summaries(self, rows: list[Any]) -> list[InstanceSummary]:
        out = []
        for workflow_id, process, row_status, version, text, updated in rows:
            try:
                data = self._json(text, f"instance {workflow_id}")
            except DamagedRecord:
                data = None
            if not isinstance(data, dict):  # one damaged row is listed as such; the others as they are
                data = {"nextAction": "(damaged record)"}
            out.append(
                InstanceSummary(
                    str(workflow_id), str(process), str(row_status), int(version),
                    data.get("nextAction"), data.get("timeoutAt"), str(data.get("updatedAt", "")), float(updated),
                )
            )
        return out

    def gauges(self, now: float) -> StoreGauges:
        """Counts for `/metrics`; `now` (seconds since the epoch) decides which timers are due."""
        grouped = self._rows("SELECT process, status, count(*), sum(history_count) FROM instances GROUP BY process, status")
        [(unsent, oldest)] = self._rows("SELECT count(*), min(created_at) FROM outbox WHERE sent_at IS NULL")
        [(due,)] = self._rows("SELECT count(*) FROM timers WHERE next_due <= ?", (now,))
        return StoreGauges.from_rows(grouped, unsent, oldest, due)

    def counts_by_definition(self) -> dict[str, int]:
        """How many instances run each pinned definition (by fingerprint)."""
        return {str(fp): int(n) for fp, n in self._rows("SELECT fingerprint, count(*) FROM instances GROUP BY fingerprint")}

    def outbox_of(self, workflow_id: str) -> list[OutboxEntry]:
        """The commands an instance asked for, sent or not, in order."""
        rows = self._rows(
            "SELECT id, dispatch, created_at, sent_at, emitted FROM outbox WHERE workflow_id = ? ORDER BY id", (workflow_id,)
        )
        return [OutboxEntry(int(i), self._decode_dispatch(d), str(c), s, int(e)) for i, d, c, s, e in rows]

    def version_of(self, workflow_id: str) -> int | None:
        """The stored version of an instance, or None."""
        rows = self._rows("SELECT version FROM instances WHERE workflow_id = ?", (workflow_id,))
        return int(rows[0][0]) if rows else None

    # ---------------------------------------------------------------- encoding
    # Small methods of their own so a benchmark or a profile can tell JSON time from SQL time;
    # the text is the same in every store (`procflow.interpreter.stores`).
    @staticmethod
    def _encode_history(state: InstanceState, stored: tuple[int, int, int]) -> list[HistoryRow]:
        return history_rows(state, stored)

    @staticmethod
    def _encode_dispatch(dispatch: Dispatch) -> str:
        return encode_dispatch(dispatch)

    def _decode_dispatch(self, text: str) -> Dispatch:
        return decode_dispatch(text, str(self.path))

    @staticmethod
    def _encode(state: InstanceState) -> str:
        return encode_state(state)

    def _json(self, text: object, what: str) -> Any:
        """A stored JSON text read back strictly (`procflow.strict_json`); DamagedRecord when it is not."""
        return read_stored_json(text, f"{what} in {self.path}")

    def _decode(
        self, workflow_id: str, text: str, entries: Sequence[str], logs: Iterable[LogTexts] = (), items: Iterable[Any] = (),
        input_text: object = None,
    ) -> InstanceState:
        return decode_state(workflow_id, text, entries, str(self.path), logs, items, input_text)

    def _decode_for_transition(
        self, workflow_id: str, text: str, counts: tuple[int, int, int], logs: Iterable[LogTexts] | None, items: Iterable[Any],
        input_text: object,
    ) -> InstanceState:
        return decode_for_transition(workflow_id, text, counts, str(self.path), logs, items, input_text)


_UNBINDABLE = (UnicodeEncodeError, OverflowError, sqlite3.InterfaceError)
"""What SQLite raises for a value it cannot bind (a lone surrogate, an integer past 64 bits)."""


def _now_text() -> str:
    # When the transport took a command: shown to operators, never used in a decision.
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
