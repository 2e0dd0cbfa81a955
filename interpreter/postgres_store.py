"""The store beyond one machine: PostgreSQL, one transaction per transition, many workers.

::

    procflow_meta          key -> value: `application` = procflow, `schema_version`
    procflow_definitions   fingerprint -> the text of a pinned definition (every file it read)
    procflow_instances     workflow_id -> state JSON (without history, completions and milestones),
                           version, status, process, how many history entries, completions and
                           milestones it has, and what `procflow instances` shows (next action,
                           timeout, updated)
    procflow_state_items   (workflow_id, kind, key) -> one wait or token of a state with many (its
                           JSON then holds neither): a transition writes those it changed
    procflow_correlations  (process, correlationId, workflow_id): routes replies by business key
    procflow_history       (workflow_id, seq) -> one history entry as JSON, and what its transition
                           appended to the state's `completed` and `completedSteps` (JSON arrays, or NULL)
    procflow_outbox        commands to send, one row per dedupKey (unique), sent_at once the transport
                           took it, claimed_by/claimed_until while a worker sends it
    procflow_timers        workflow_id -> the earliest moment it acts by itself, claimed like the outbox
    procflow_inbox         message_id -> the instance it was applied to (and the body's digest)

The same tables, the same JSON text and the same meaning as the SQLite store
(`procflow.interpreter.sqlite_store`); the contract suite runs against both. `save` writes
the inbox entry first (a second writer of the same message id waits on it, then is refused
as a duplicate), then moves the instance row from the version the caller read to the next
(`ConcurrencyError` when another writer moved it first), then the history, outbox, timer and
correlation rows: one transaction, all or nothing.

Many workers share the outbox and the timers by claims: a worker takes a batch of rows with
`FOR UPDATE SKIP LOCKED` (two workers never wait for, nor take, the same rows) and marks them
claimed until a lease runs out (`claimed_until`, the server's clock). A worker that dies
loses its claims when the lease runs out; another takes them then. A row lock is not held
while a command is sent: the replies it brings are applied in other transactions, which may
need that very row (a step run again by a loop sends the same dedup key again).

Connections come from a `psycopg_pool.ConnectionPool` (autocommit; a write is an explicit
transaction). Opening connects once by itself first, so that an unreachable server, an
unknown user, a missing database, a missing schema, foreign tables or a newer schema each get
their own message (`StoreError`: what, where, what to do) before anything is written.

A transition reads the instance row alone (`load`: the history, completions and milestones
stay in their tables), and a save that queues a command no worker holds yet, or sets a timer
that is already due, sends `NOTIFY "procflow_work:<schema>"`, which wakes the workers waiting in
`wait_for_work` (LISTEN on a connection of their own).

Why one module of about 600 lines: it is one class, the store interface on PostgreSQL; its
schema and migrations are already `postgres_schema.py`, the JSON text both stores keep is
`stores.py`, and the full check is `store_check.py`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
import psycopg_pool
from psycopg import errors as pg_errors
from psycopg import sql

from procflow.errors import ConcurrencyError, DuplicateMessage, StoreError, StoreUnavailable
from procflow.interpreter.item_log import (
    CHANGES_KEPT,
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
from procflow.interpreter.postgres_schema import (
    current_schema_version,
    first_line,
    migrate,
    refused_connection,
)
from procflow.interpreter.state import InstanceState, parse_instant
from procflow.interpreter.stores import (
    RECENT_STATES,
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
    redact,
    timer_of,
)

__all__ = ["PostgresStore", "current_schema_version"]

CONNECT_TIMEOUT_SECONDS = 10
"""How long opening waits for the server to answer."""

NOTIFY_CHANNEL = "procflow_work"  # and the store's schema: `procflow_work:orders`


def notify_channel(schema: str) -> sql.Identifier:
    """The channel a store's workers wake on: one per schema, so that two stores in one
    database (a schema each) do not wake each other's workers for work they cannot see.
    PostgreSQL keeps 63 bytes of an identifier."""
    return sql.Identifier(f"{NOTIFY_CHANNEL}:{schema}"[:63])
"""What a transition that queued work for any worker notifies (database-wide: stores in other
schemas of the same database wake each other too, which costs a look, nothing more)."""

POOL_TIMEOUT_SECONDS = 30.0
"""How long a transition waits for a pooled connection (the server may be restarting)."""

Connection = psycopg.Connection[tuple[Any, ...]]


class PostgresStore:
    """The durable store in a PostgreSQL database (see the module docstring for the tables).

    `url` is a libpq URL (`postgresql://user:password@host:port/database`, with libpq's
    options, e.g. `?options=-csearch_path%3Dorders` for a schema of its own). `create=False`
    refuses to make the tables (for read-only commands). `pool_size` bounds the connections
    one store holds; a worker uses one at a time. `recent`: how many instances' last written
    states it keeps to hand back to their next transition without decoding them
    (`RecentStates`; 0 keeps none).
    """

    def __init__(self, url: str, *, create: bool = True, pool_size: int = 4, recent: int = RECENT_STATES) -> None:
        self.url = url
        self._recent = RecentStates(recent)
        self._pool: psycopg_pool.ConnectionPool[Connection] | None = None
        self._listener: Connection | None = None
        self._channel = notify_channel(self._open_checked(create))
        self._pool = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=max(1, pool_size),
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_SECONDS, "fallback_application_name": "procflow"},
            timeout=POOL_TIMEOUT_SECONDS,
            name="procflow",
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_SECONDS)
        except psycopg_pool.PoolTimeout:
            self._pool.close()
            self._pool = None
            raise StoreError(f"cannot connect to {self.location}: the server stopped answering while the store opened") from None

    @property
    def location(self) -> str:
        """The URL, without its password."""
        return redact(self.url)

    # ---------------------------------------------------------------- opening
    def _open_checked(self, create: bool) -> str:
        """Connect once by itself: a refusal here says exactly why (the pool would only time out).
        Returns the schema the store's tables are in."""
        try:
            connection = psycopg.connect(
                self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS, fallback_application_name="procflow"
            )
        except psycopg.OperationalError as error:
            raise refused_connection(error, self.url, self.location) from None
        except psycopg.ProgrammingError as error:  # a URL libpq cannot read
            raise StoreError(f"--store {self.location} is not a PostgreSQL URL libpq can read ({error})") from None
        try:
            migrate(connection, self.location, create)
            row = connection.execute("SELECT current_schema()").fetchone()
            return str(row[0]) if row is not None and row[0] is not None else "public"
        except psycopg.Error as error:
            raise self._error(error) from None
        finally:
            connection.close()

    def close(self) -> None:
        """Close the pool's connections (a closed store cannot be used again)."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        """The schema version of the store's tables."""
        [(value,)] = self._rows("SELECT value FROM procflow_meta WHERE key = 'schema_version'")
        return int(value)

    # ---------------------------------------------------------------- transactions
    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        """A pooled connection (autocommit: each statement alone is its own transaction);
        PostgreSQL's errors come out as StoreError (ConcurrencyError for a lost race)."""
        if self._pool is None:
            raise StoreError(f"the store {self.location} is closed")
        try:
            with self._pool.connection() as connection:
                yield connection
        except psycopg_pool.PoolTimeout:
            raise StoreUnavailable(
                f"no connection to {self.location} within {POOL_TIMEOUT_SECONDS:.0f}s: the server is unreachable or "
                "every connection of the pool is busy. Nothing more was written; try again when the server answers."
            ) from None
        except psycopg.Error as error:
            raise self._error(error) from None

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One write transaction; anything raised inside rolls all of it back."""
        with self._connection() as connection, connection.transaction():
            yield connection

    def _rows(self, sql: Any, args: Sequence[Any] = ()) -> list[Any]:
        with self._connection() as connection:
            return connection.execute(sql, args).fetchall()

    def _error(self, error: psycopg.Error) -> StoreError:
        if isinstance(error, pg_errors.SerializationFailure | pg_errors.DeadlockDetected):
            return ConcurrencyError(f"another writer got in the way ({first_line(str(error))}); nothing was written")
        if isinstance(error, pg_errors.InsufficientPrivilege):
            return StoreError(
                f"the user of {self.location} may not do this ({first_line(str(error))}); nothing was written. "
                "Grant it the rights on procflow's tables (or on the schema, to create them)."
            )
        if isinstance(error, pg_errors.ReadOnlySqlTransaction):
            return StoreError(
                f"{self.location} is read-only (a standby, or default_transaction_read_only); nothing was written. "
                "Point --store at the primary server."
            )
        if isinstance(error, psycopg.OperationalError):
            return StoreUnavailable(
                f"lost the connection to {self.location} ({first_line(str(error))}). A transition in flight was either "
                "committed whole or not at all; running the command again is safe (versions and the inbox keep it from "
                "applying twice)."
            )
        return StoreError(f"the PostgreSQL store {self.location} refused a statement: {first_line(str(error))}")

    # ---------------------------------------------------------------- the Store protocol
    def get(self, workflow_id: str) -> Stored | None:
        """The whole instance (state with its history, completions and milestones, and
        version), or None: one statement, one snapshot."""
        rows = self._rows(
            f"SELECT i.state, i.version, {_HISTORY}, {_ITEMS_OF}, i.input FROM procflow_instances i "
            "LEFT JOIN procflow_history h ON h.workflow_id = i.workflow_id WHERE i.workflow_id = %s GROUP BY i.workflow_id",
            (workflow_id,),
        )
        if not rows:
            return None
        state, version, entries, completed, steps, items, input_text = rows[0]
        return Stored(
            decode_state(workflow_id, state, entries or [], self.location, _logs(completed, steps), items or (), input_text),
            int(version),
        )

    def load(self, workflow_id: str, *, whole: bool = False) -> Stored | None:
        """The instance as a transition needs it, or None: without reading its history,
        completions and milestones (`Tail`s of as many entries as the row counts); `whole`
        reads the completions and milestones too (a transition that read them: `NotLoaded`)."""
        kept = None if whole else self._recent.version(workflow_id)
        # The state's JSON only when the state this store holds (`RecentStates`) is not the row's
        # version; its rows of `state_items` only when that state cannot be brought up to the
        # row's from the log (`caught_up`), and then what the log says changed instead.
        mine, newest = (-1, -1) if kept is None else (kept, kept + CHANGES_KEPT)
        catch_up = "version > %s AND version <= %s"
        rows = self._rows(
            "SELECT CASE WHEN version = %s THEN NULL ELSE state END, version, history_count, completed_count, completed_steps_count, "
            f"CASE WHEN version = %s OR items = 0 OR ({catch_up}) THEN NULL ELSE {_ITEMS_OF} END, "
            f"CASE WHEN version = %s THEN NULL ELSE input END, items, CASE WHEN items > 0 AND {catch_up} THEN {_CHANGES_OF} END"
            + (f", {_LOGS_OF}" if whole else "") + " FROM procflow_instances i WHERE workflow_id = %s",
            (mine, mine, mine, newest, mine, mine, newest, mine, workflow_id),
        )
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
        if rows[0][7] and catch_up_from(kept, int(version)):
            changes = [(int(v), k, key, item, shown) for v, k, key, item, shown in rows[0][8] or ()]
            state_now = held_caught_up(self._recent, workflow_id, kept, text, counts, int(rows[0][7]), int(version), changes, self.location)
            if state_now is None:  # (the log cannot say it all: read every row)
                return self.load(workflow_id, whole=whole)
            return Stored(state_now, int(version))
        logs = [(c, s) for c, s in rows[0][9] or ()] if whole else None
        items = rows[0][5] or ()
        state = decode_for_transition(workflow_id, text, counts, self.location, logs, items, rows[0][6])
        if not whole:  # (kept: the instance's next transition, here, starts from it without reading it again)
            self._recent.keep(state, int(version), read=True)
        return Stored(state, int(version))

    def find(self, process: str | None, correlation_id: str) -> list[str]:
        """Instances (of `process`, or of any) with a frame that correlates by `correlation_id`."""
        if process is None:
            rows = self._rows(
                "SELECT c.workflow_id FROM procflow_correlations c JOIN procflow_instances i USING (workflow_id) "
                "WHERE c.correlation_id = %s GROUP BY c.workflow_id ORDER BY min(i.started)",
                (correlation_id,),
            )
        else:
            rows = self._rows(
                "SELECT c.workflow_id FROM procflow_correlations c JOIN procflow_instances i USING (workflow_id) "
                "WHERE c.process = %s AND c.correlation_id = %s ORDER BY i.started",
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
        """Write one transition in one transaction: inbox entry (with the digest of the
        message), instance row (version checked), new history entries, outbox rows (claimed by
        `claim_for` when given), the timer row, correlations and the "sent" marks of the
        commands `sent`."""
        workflow_id = state.workflowId
        state_json = encode_state(state)
        queued = [(d, encode_dispatch(d)) for d in dispatches]
        updated = parse_instant(state.updatedAt).timestamp()
        row_values = (
            state.status, state.definition.fingerprint, len(state.history), len(state.completed), len(state.completedSteps),
            updated, state.nextAction, state.timeoutAt, state.updatedAt, item_count(state), state_json,
        )
        # The state the row holds, when this store has it: a transition writes what changed since.
        before = self._recent.written(workflow_id, expected_version) if expected_version is not None else None
        # Pipelined: the statements go out together and their results come back at three
        # points (the instance row moved, the outbox rows written, the commit), not one round
        # trip each: a worker waits for the server three times a transition, not ten.
        with self._connection() as connection, connection.pipeline() as pipeline, connection.transaction():
            inbox = None
            if message_id is not None:
                # First: a concurrent writer of the same message id waits here for this one.
                inbox = connection.execute(
                    "INSERT INTO procflow_inbox (message_id, workflow_id, received_at, digest) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (message_id) DO NOTHING",
                    (message_id, workflow_id, state.updatedAt, message_digest),
                )
            if expected_version is None:
                version = 1
                row = connection.execute(
                    "INSERT INTO procflow_instances (workflow_id, process, version, status, fingerprint, history_count, "
                    "completed_count, completed_steps_count, updated, next_action, timeout_at, updated_at, items, state, input) "
                    "VALUES (%s, %s, 1, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (workflow_id) DO NOTHING "
                    "RETURNING 0, 0, 0, 0, false",
                    (workflow_id, state.type, *row_values, encode_input(state)),
                )
            else:
                version = expected_version + 1
                # The CTE reads the row under its lock: a writer that got there first makes it match nothing.
                row = connection.execute(
                    "WITH before AS (SELECT history_count, completed_count, completed_steps_count, items, input IS NULL AS no_input "
                    "FROM procflow_instances "
                    "WHERE workflow_id = %s AND version = %s FOR UPDATE) "
                    "UPDATE procflow_instances SET status = %s, fingerprint = %s, history_count = %s, completed_count = %s, "
                    "completed_steps_count = %s, updated = %s, next_action = %s, timeout_at = %s, updated_at = %s, items = %s, "
                    "state = %s, version = %s FROM before WHERE procflow_instances.workflow_id = %s "
                    "RETURNING before.history_count, before.completed_count, before.completed_steps_count, before.items, "
                    "before.no_input",
                    (workflow_id, expected_version, *row_values, version, workflow_id),
                )
            pipeline.sync()
            if inbox is not None and inbox.rowcount != 1:
                raise DuplicateMessage(f"message {message_id} was already applied")
            moved = row.fetchall()
            if len(moved) != 1:
                raise ConcurrencyError(
                    f"instance {workflow_id} already exists" if expected_version is None
                    else f"instance {workflow_id} changed since version {expected_version}"
                )
            stored = (int(moved[0][0]), int(moved[0][1]), int(moved[0][2]))
            if moved[0][4]:  # a row written before the input had a column: its JSON held it until now
                connection.execute("UPDATE procflow_instances SET input = %s WHERE workflow_id = %s", (encode_input(state), workflow_id))
            rows = item_rows(state, before, bool(moved[0][3]))
            self._write_items(connection, workflow_id, version, rows, bool(moved[0][3]) or item_count(state) > 0)
            with connection.cursor() as cursor:
                history = history_rows(state, stored)
                if len(history) == 1:  # the usual case: one statement, not a batch
                    cursor.execute(_INSERT_HISTORY, (workflow_id, *history[0]))
                else:
                    cursor.executemany(_INSERT_HISTORY, [(workflow_id, *row) for row in history])
                correlations = new_correlations(state, before) if expected_version is None or state.frames else []
                if correlations:  # (an instance's own key never changes)
                    cursor.executemany(
                        "INSERT INTO procflow_correlations (process, correlation_id, workflow_id) VALUES (%s, %s, %s) "
                        "ON CONFLICT DO NOTHING",
                        [(state.type, c, workflow_id) for c in correlations],
                    )
            for position, (dispatch, text) in enumerate(queued):
                inserted = self._enqueue(connection, workflow_id, dispatch.dedupKey, text, state.updatedAt, claim_for)
                if position + 1 < len(queued):  # (several: each in its turn, so they keep their order)
                    pipeline.sync()
                    self._enqueued(connection, inserted, workflow_id, dispatch, text, state.updatedAt, claim_for)
            due = self._set_timer(connection, state)
            if (queued and claim_for is None) or (due is not None and due <= updated):
                # Delivered at the commit, to the workers waiting in `wait_for_work`: only for
                # work another worker may have to do now. PostgreSQL makes the commits of
                # notifying transactions wait for each other (one lock for the database, held
                # through the commit's flush), so notifying at every transition would make
                # many workers commit one at a time. Commands born claimed are this worker's
                # own; a timer not yet due wakes nobody usefully (a waiting worker would find
                # nothing due and wait again): the next poll finds it.
                connection.execute(sql.SQL("NOTIFY {}").format(self._channel))
            self._mark(connection, sent)
            if queued:
                pipeline.sync()
                dispatch, text = queued[-1]
                self._enqueued(connection, inserted, workflow_id, dispatch, text, state.updatedAt, claim_for)
        self._recent.keep(state, version)  # committed
        return version

    @staticmethod
    def _write_items(connection: Connection, workflow_id: str, version: int, rows: ItemRows, wide: bool) -> None:
        """The waits and tokens a transition changed, in rows of their own (`stores.item_rows`),
        and, for a `wide` instance (rows before or after), which ones in the log (`logged_changes`)."""
        if wide:
            with connection.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO procflow_item_changes (workflow_id, version, kind, key) VALUES (%s, %s, %s, %s)",
                    [(workflow_id, *change) for change in logged_changes(rows, version)],
                )
        trimmed = changes_trimmed(version)
        if trimmed is not None:
            connection.execute("DELETE FROM procflow_item_changes WHERE workflow_id = %s AND version <= %s", (workflow_id, trimmed))
        if rows.empty:
            return
        with connection.cursor() as cursor:
            for kind in rows.cleared:
                cursor.execute("DELETE FROM procflow_state_items WHERE workflow_id = %s AND kind = %s", (workflow_id, kind))
            if rows.deleted:
                cursor.executemany(
                    "DELETE FROM procflow_state_items WHERE workflow_id = %s AND kind = %s AND key = %s",
                    [(workflow_id, kind, key) for kind, key in rows.deleted],
                )
            if rows.written:
                cursor.executemany(
                    "INSERT INTO procflow_state_items (workflow_id, kind, key, item, shown) VALUES (%s, %s, %s, %s, %s) "
                    "ON CONFLICT (workflow_id, kind, key) DO UPDATE SET item = excluded.item, shown = excluded.shown",
                    [(workflow_id, *item) for item in rows.written],
                )

    @staticmethod
    def _enqueue(
        connection: Connection, workflow_id: str, dedup_key: str, text: str, at: str, claim_for: str | None, emitted: int = 1
    ) -> psycopg.Cursor[tuple[Any, ...]]:
        """Queue one command (claimed by `claim_for` for a lease when given); the cursor tells
        whether its dedup key was free (`_enqueued`)."""
        return connection.execute(
            "INSERT INTO procflow_outbox (workflow_id, dedup_key, dispatch, created_at, emitted, claimed_by, claimed_until) "
            "VALUES (%s, %s, %s, %s, %s, %s, CASE WHEN %s::text IS NULL THEN NULL "
            "ELSE clock_timestamp() + make_interval(secs => %s) END) ON CONFLICT (dedup_key) DO NOTHING",
            (workflow_id, dedup_key, text, at, emitted, claim_for, claim_for, LEASE_SECONDS),
        )

    def _enqueued(
        self, connection: Connection, inserted: psycopg.Cursor[tuple[Any, ...]], workflow_id: str, dispatch: Dispatch,
        text: str, at: str, claim_for: str | None,
    ) -> None:
        """After `_enqueue` (its result received): when the dedup key was taken, queue the
        command again as the same instance's, or refuse another instance's key."""
        if inserted.rowcount == 1:
            return
        [(owner, emitted)] = connection.execute(
            "SELECT workflow_id, emitted FROM procflow_outbox WHERE dedup_key = %s FOR UPDATE", (dispatch.dedupKey,)
        ).fetchall()
        if owner != workflow_id:
            raise StoreError(
                f"instance {workflow_id} would send `{dispatch.command.commandName}` under the dedup key "
                f"{dispatch.dedupKey}, which instance {owner} already used: participants would drop it as a "
                f"duplicate. The correlationId `{dispatch.command.correlationId}` must belong to one instance; "
                "nothing was written."
            )
        # The same instance asks for the same key again (a step run again by a loop): send it
        # again, after what is queued now (a new id), and count how often it was asked for.
        connection.execute("DELETE FROM procflow_outbox WHERE dedup_key = %s", (dispatch.dedupKey,))
        self._enqueue(connection, workflow_id, dispatch.dedupKey, text, at, claim_for, int(emitted) + 1)

    @staticmethod
    def _set_timer(connection: Connection, state: InstanceState) -> float | None:
        """Write the instance's timer row; when it has one, the moment it is due (seconds since the epoch)."""
        timer = timer_of(state)
        if timer is None:
            connection.execute("DELETE FROM procflow_timers WHERE workflow_id = %s", (state.workflowId,))
            return None
        # A new moment is a new timer: whoever claimed the old one no longer holds it.
        connection.execute(
            "INSERT INTO procflow_timers (workflow_id, next_due, wait_due, deadline) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (workflow_id) DO UPDATE SET next_due = excluded.next_due, wait_due = excluded.wait_due, "
            "deadline = excluded.deadline, claimed_by = NULL, claimed_until = NULL",
            (state.workflowId, *timer),
        )
        return timer[0]

    def wait_for_work(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for a transition that queued a command no worker holds,
        or set a timer already due (LISTEN/NOTIFY on a connection of its own, outside the pool). Listening starts at the
        first call and goes on between calls, so a notice sent while the worker was busy
        ends the next wait at once."""
        listener = self._listener
        if listener is None:
            try:
                listener = psycopg.connect(
                    self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS, fallback_application_name="procflow"
                )
                listener.execute(sql.SQL("LISTEN {}").format(self._channel))
            except psycopg.Error as error:
                raise self._error(error) from None
            self._listener = listener
        try:
            for _ in listener.notifies(timeout=timeout, stop_after=1):
                pass
        except psycopg.Error as error:
            self._listener = None
            listener.close()
            raise self._error(error) from None

    def due(self, now: datetime) -> list[str]:
        """Instances with a timer (timeout, backoff, timer step, deadline) due at or before `now`."""
        rows = self._rows(
            "SELECT workflow_id FROM procflow_timers WHERE next_due <= %s ORDER BY next_due, workflow_id", (now.timestamp(),)
        )
        return [str(r[0]) for r in rows]

    def claim_due(self, now: datetime, worker: str, limit: int = 100, lease: float = LEASE_SECONDS) -> list[str]:
        """Instances with a timer due at or before `now` that no other worker holds, now held by
        `worker` for `lease` seconds (until the instance's next save replaces the timer)."""
        # One statement is one transaction (autocommit): no BEGIN and COMMIT round trips.
        with self._connection() as connection:
            rows = connection.execute(
                "UPDATE procflow_timers SET claimed_by = %s, claimed_until = clock_timestamp() + make_interval(secs => %s) "
                "WHERE workflow_id IN (SELECT workflow_id FROM procflow_timers WHERE next_due <= %s "
                "AND (claimed_until IS NULL OR claimed_until < clock_timestamp()) "
                "ORDER BY next_due, workflow_id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING workflow_id, next_due",
                (worker, lease, now.timestamp(), limit),
            ).fetchall()
        return [str(w) for w, _ in sorted(rows, key=lambda row: (row[1], row[0]))]

    def next_due(self) -> float | None:
        """The earliest timer of the store (seconds since the epoch), or None."""
        [row] = self._rows("SELECT min(next_due) FROM procflow_timers")
        return None if row[0] is None else float(row[0])

    def outbox(self, limit: int = 100) -> list[tuple[int, Dispatch]]:
        """Commands not yet marked sent, oldest first (claimed or not)."""
        rows = self._rows("SELECT id, dispatch FROM procflow_outbox WHERE sent_at IS NULL ORDER BY id LIMIT %s", (limit,))
        return [(int(i), decode_dispatch(text, self.location)) for i, text in rows]

    def claim_outbox(self, worker: str, limit: int = 100, lease: float = LEASE_SECONDS) -> list[tuple[int, Dispatch]]:
        """Unsent commands that no other worker holds (`worker`'s own too, their lease renewed),
        oldest first, now held by `worker` for `lease` seconds: the rows are locked only while
        they are claimed (SKIP LOCKED: a second worker takes the next ones instead of waiting)."""
        # One statement is one transaction (autocommit): no BEGIN and COMMIT round trips.
        with self._connection() as connection:
            rows = connection.execute(
                "UPDATE procflow_outbox SET claimed_by = %s, claimed_until = clock_timestamp() + make_interval(secs => %s) "
                "WHERE id IN (SELECT id FROM procflow_outbox WHERE sent_at IS NULL "
                "AND (claimed_until IS NULL OR claimed_until < clock_timestamp() OR claimed_by = %s) "
                "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id, dispatch",
                (worker, lease, worker, limit),
            ).fetchall()
        return sorted((int(i), decode_dispatch(text, self.location)) for i, text in rows)

    def held_outbox(self, worker: str, limit: int = 100) -> list[tuple[int, Dispatch]]:
        """Unsent commands `worker` holds with `HELD_LEASE_LEFT` of their lease left, oldest
        first: a read, no write."""
        rows = self._rows(
            "SELECT id, dispatch FROM procflow_outbox WHERE claimed_by = %s AND sent_at IS NULL "
            "AND claimed_until >= clock_timestamp() + make_interval(secs => %s) ORDER BY id LIMIT %s",
            (worker, HELD_LEASE_LEFT, limit),
        )
        return [(int(i), decode_dispatch(text, self.location)) for i, text in rows]

    def mark_sent(self, *outbox_ids: int) -> None:
        """The transport took the commands (one small transaction for all); their claims end with it."""
        if outbox_ids:
            with self._connection() as connection:  # one statement: its own transaction
                self._mark(connection, outbox_ids)

    @staticmethod
    def _mark(connection: Connection, outbox_ids: Sequence[int]) -> None:
        if outbox_ids:
            connection.execute(
                "UPDATE procflow_outbox SET sent_at = %s, claimed_by = NULL, claimed_until = NULL "
                "WHERE id = ANY(%s) AND sent_at IS NULL",
                (_now_text(), list(outbox_ids)),
            )

    def release(self, worker: str, outbox_ids: Iterable[int] = (), workflow_ids: Iterable[str] = ()) -> None:
        """Give up `worker`'s claims on these commands and timers (it could not finish them)."""
        ids, workflows = list(outbox_ids), list(workflow_ids)
        with self._write() as connection:
            if ids:
                connection.execute(
                    "UPDATE procflow_outbox SET claimed_by = NULL, claimed_until = NULL "
                    "WHERE id = ANY(%s) AND claimed_by = %s AND sent_at IS NULL",
                    (ids, worker),
                )
            if workflows:
                connection.execute(
                    "UPDATE procflow_timers SET claimed_by = NULL, claimed_until = NULL "
                    "WHERE workflow_id = ANY(%s) AND claimed_by = %s",
                    (workflows, worker),
                )

    def release_all(self, worker: str) -> None:
        """Give up every claim held in `worker`'s name (a worker restarted under the same name
        takes back what its previous run held, without waiting for the lease)."""
        with self._write() as connection:
            connection.execute(
                "UPDATE procflow_outbox SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = %s", (worker,)
            )
            connection.execute(
                "UPDATE procflow_timers SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = %s", (worker,)
            )

    def seen(self, message_id: str) -> bool:
        """True when the inbox holds the message id."""
        return bool(self._rows("SELECT 1 FROM procflow_inbox WHERE message_id = %s", (message_id,)))

    def digest_of(self, message_id: str) -> str | None:
        """The digest of the message applied under this id (None when none was)."""
        rows = self._rows("SELECT digest FROM procflow_inbox WHERE message_id = %s", (message_id,))
        return str(rows[0][0]) if rows and rows[0][0] is not None else None

    def instances(self, status: str | None = None) -> list[InstanceState]:
        """Every instance (or those with `status`), in the order they started."""
        rows = self._rows(
            f"SELECT i.workflow_id, i.state, {_HISTORY}, {_ITEMS_OF}, i.input FROM procflow_instances i "
            "LEFT JOIN procflow_history h ON h.workflow_id = i.workflow_id "
            "WHERE %s::text IS NULL OR i.status = %s GROUP BY i.workflow_id ORDER BY min(i.started)",
            (status, status),
        )
        return [
            decode_state(str(wid), text, entries or [], self.location, _logs(completed, steps), items or (), input_text)
            for wid, text, entries, completed, steps, items, input_text in rows
        ]

    def pin(self, pinned: PinnedDefinition) -> None:
        """Keep the text of a definition, once per fingerprint."""
        with self._write() as connection:
            connection.execute(
                "INSERT INTO procflow_definitions (fingerprint, name, version, path, sources) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (fingerprint) DO NOTHING",
                (pinned.fingerprint, pinned.name, pinned.version, pinned.path, json.dumps(dict(pinned.sources))),
            )

    def pinned(self, fingerprint: str) -> PinnedDefinition | None:
        """The kept text of a definition, or None."""
        rows = self._rows(
            "SELECT name, version, path, sources FROM procflow_definitions WHERE fingerprint = %s", (fingerprint,)
        )
        if not rows:
            return None
        name, version, path, sources = rows[0]
        return PinnedDefinition(str(name), int(version), fingerprint, str(path), json.loads(sources))

    # ---------------------------------------------------------------- for operators
    def pinned_definitions(self) -> list[PinnedDefinition]:
        """Every definition the store keeps."""
        rows = self._rows(
            "SELECT fingerprint, name, version, path, sources FROM procflow_definitions ORDER BY name, version, fingerprint"
        )
        return [PinnedDefinition(str(n), int(v), str(fp), str(p), json.loads(s)) for fp, n, v, p, s in rows]

    def summaries(self, status: str | None = None) -> list[InstanceSummary]:
        """One line per instance (or per instance with `status`), in the order they started."""
        rows = self._rows(
            "SELECT workflow_id, process, status, version, next_action, timeout_at, updated_at, updated "
            "FROM procflow_instances WHERE %s::text IS NULL OR status = %s ORDER BY started",
            (status, status),
        )
        return self._summaries(rows)

    def instance_page(
        self, limit: int = PAGE_LIMIT, after: PageCursor | None = None, status: str | None = None, process: str | None = None,
        *, text: str | None = None, newest_first: bool = False,
    ) -> list[InstanceSummary]:
        """Up to `limit` instances ordered by last change then id, after `after`: one range of an index."""
        tail, args = page_query("procflow_instances", limit, after, status, process, "%s", text, newest_first, "procflow_correlations")
        return self._summaries(self._rows(
            f"SELECT workflow_id, process, status, version, next_action, timeout_at, updated_at, updated {tail}", args
        ))

    def status_counts(self, process: str | None = None) -> dict[str, int]:
        """How many instances (of `process`) have each status: one GROUP BY."""
        rows = self._rows(
            "SELECT status, count(*) FROM procflow_instances WHERE %s::text IS NULL OR process = %s "
            "GROUP BY status ORDER BY status",
            (process, process),
        )
        return {str(status): int(count) for status, count in rows}

    @staticmethod
    def _summaries(rows: list[Any]) -> list[InstanceSummary]:
        return [
            InstanceSummary(str(w), str(p), str(s), int(v), n, t, str(u), float(c)) for w, p, s, v, n, t, u, c in rows
        ]

    def gauges(self, now: float) -> StoreGauges:
        """Counts for `/metrics`; `now` (seconds since the epoch) decides which timers are due."""
        grouped = self._rows("SELECT process, status, count(*), sum(history_count) FROM procflow_instances GROUP BY process, status")
        [(unsent, oldest)] = self._rows("SELECT count(*), min(created_at) FROM procflow_outbox WHERE sent_at IS NULL")
        [(due,)] = self._rows("SELECT count(*) FROM procflow_timers WHERE next_due <= %s", (now,))
        return StoreGauges.from_rows(grouped, unsent, oldest, due)

    def counts_by_definition(self) -> dict[str, int]:
        """How many instances run each pinned definition (by fingerprint)."""
        return {str(fp): int(n) for fp, n in self._rows("SELECT fingerprint, count(*) FROM procflow_instances GROUP BY fingerprint")}

    def outbox_of(self, workflow_id: str) -> list[OutboxEntry]:
        """The commands an instance asked for, sent or not, in order."""
        rows = self._rows(
            "SELECT id, dispatch, created_at, sent_at, emitted FROM procflow_outbox WHERE workflow_id = %s ORDER BY id",
            (workflow_id,),
        )
        return [OutboxEntry(int(i), decode_dispatch(d, self.location), str(c), s, int(e)) for i, d, c, s, e in rows]

    def version_of(self, workflow_id: str) -> int | None:
        """The stored version of an instance, or None."""
        rows = self._rows("SELECT version FROM procflow_instances WHERE workflow_id = %s", (workflow_id,))
        return int(rows[0][0]) if rows else None


_INSERT_HISTORY = (
    "INSERT INTO procflow_history (workflow_id, seq, entry, completed, completed_steps) VALUES (%s, %s, %s, %s, %s)"
)

_HISTORY = ", ".join(
    f"array_agg(h.{column} ORDER BY h.seq) FILTER (WHERE h.seq IS NOT NULL)" for column in ("entry", "completed", "completed_steps")
)
"""An instance's history rows (`h`, joined to it), in order, as three arrays: the entries and
what each transition appended to the completions and to the milestones."""

_ITEMS_OF = (
    "(SELECT array_agg(ARRAY[s.kind, s.key, s.item] ORDER BY s.kind, s.key) FROM procflow_state_items s "
    "WHERE s.workflow_id = i.workflow_id)"
)
"""A subquery (of an instance row `i`): its rows of `procflow_state_items` (its waits and tokens
when they are many), in order, as (kind, key, item) triples."""

_CHANGES_OF = (
    "(SELECT array_agg(ARRAY[c.version::text, c.kind, c.key, s.item, s.shown]) FROM procflow_item_changes c "
    "LEFT JOIN procflow_state_items s ON s.workflow_id = c.workflow_id AND s.kind = c.kind AND s.key = c.key "
    "WHERE c.workflow_id = i.workflow_id AND c.version > %s)"
)
"""A subquery (of an instance row `i`): the rows of `procflow_state_items` its transitions since
a version wrote or removed, by the log (`item_log.logged_changes`), as (version, kind, key, item
now or NULL, shown), one per logged change."""

_LOGS_OF = (
    "(SELECT array_agg(ARRAY[h.completed, h.completed_steps] ORDER BY h.seq) FROM procflow_history h "
    "WHERE h.workflow_id = i.workflow_id AND (h.completed IS NOT NULL OR h.completed_steps IS NOT NULL))"
)
"""A subquery (of an instance row `i`): what its transitions appended to its completions and
milestones, in order, as (completed, completed_steps) pairs."""


def _logs(completed: Sequence[str | None] | None, steps: Sequence[str | None] | None) -> list[LogTexts]:
    return list(zip(completed or (), steps or (), strict=True))


def _now_text() -> str:
    # When the transport took a command: shown to operators, never used in a decision.
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
