"""The tables of the PostgreSQL store: its schema, its migrations, and the checks made before
a database is written to.

A PostgreSQL database is shared with other programs, so every table procflow makes is named
`procflow_*` and lives in the connection's current schema (the first of its `search_path`:
`public` unless the URL says `?options=-csearch_path%3Dname`). `procflow_meta` says whose
tables they are (`application` = `procflow`) and their `schema_version`.

`refused_connection` says why a server refused to connect (unreachable, no such user, wrong
password, no such database), each in its own words. `migrate` runs in one transaction under an advisory lock (two workers opening a new database
at once do not both create it). Before it writes anything it refuses, with a `StoreError`
that says what, where and what to do: a schema that does not exist, `procflow_*` tables that
procflow did not make, and tables of a newer procflow. Older schemas are brought up to date
in order. PostgreSQL's DDL is transactional, so a migration that fails leaves nothing behind.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import psycopg

from procflow.errors import StoreError

APPLICATION = "procflow"
"""What `procflow_meta.application` holds in a procflow store."""

ADVISORY_LOCK = 0x50464C57
"""The advisory lock (the same number as the SQLite store's application id, "PFLW") that
serializes opening, so one migration runs at a time."""

Migration = str | Callable[[psycopg.Connection[tuple[Any, ...]]], None]

MIGRATIONS: tuple[tuple[int, tuple[Migration, ...]], ...] = (
    (
        1,
        (
            "CREATE TABLE procflow_meta (key text PRIMARY KEY, value text NOT NULL)",
            """CREATE TABLE procflow_definitions (
                fingerprint text PRIMARY KEY,
                name text NOT NULL,
                version integer NOT NULL,
                path text NOT NULL,
                sources text NOT NULL
            )""",
            """CREATE TABLE procflow_instances (
                workflow_id text PRIMARY KEY,
                started bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
                process text NOT NULL,
                fingerprint text NOT NULL,
                status text NOT NULL,
                version integer NOT NULL,
                history_count integer NOT NULL,
                updated double precision NOT NULL,
                next_action text,
                timeout_at text,
                updated_at text NOT NULL,
                state text NOT NULL
            )""",
            "CREATE INDEX procflow_instances_by_status ON procflow_instances (status, started)",
            """CREATE TABLE procflow_correlations (
                process text NOT NULL,
                correlation_id text NOT NULL,
                workflow_id text NOT NULL,
                PRIMARY KEY (process, correlation_id, workflow_id)
            )""",
            "CREATE INDEX procflow_correlations_by_key ON procflow_correlations (correlation_id)",
            """CREATE TABLE procflow_history (
                workflow_id text NOT NULL,
                seq integer NOT NULL,
                entry text NOT NULL,
                PRIMARY KEY (workflow_id, seq)
            )""",
            """CREATE TABLE procflow_outbox (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                workflow_id text NOT NULL,
                dedup_key text NOT NULL UNIQUE,
                dispatch text NOT NULL,
                created_at text NOT NULL,
                sent_at text,
                emitted integer NOT NULL DEFAULT 1,
                claimed_by text,
                claimed_until timestamptz
            )""",
            "CREATE INDEX procflow_outbox_unsent ON procflow_outbox (id) WHERE sent_at IS NULL",
            "CREATE INDEX procflow_outbox_by_instance ON procflow_outbox (workflow_id)",
            "CREATE INDEX procflow_outbox_claimed ON procflow_outbox (claimed_by) WHERE claimed_by IS NOT NULL",
            """CREATE TABLE procflow_timers (
                workflow_id text PRIMARY KEY,
                next_due double precision NOT NULL,
                wait_due double precision,
                deadline double precision,
                claimed_by text,
                claimed_until timestamptz
            )""",
            "CREATE INDEX procflow_timers_by_due ON procflow_timers (next_due)",
            "CREATE INDEX procflow_timers_claimed ON procflow_timers (claimed_by) WHERE claimed_by IS NOT NULL",
            # `digest`: the hash of the message body, so that a reused message id with another
            # body can be told from a redelivery (nullable: rows written before it have none).
            """CREATE TABLE procflow_inbox (
                message_id text PRIMARY KEY,
                workflow_id text NOT NULL,
                received_at text NOT NULL,
                digest text
            )""",
        ),
    ),
    (
        # `procflow instances` pages by last change then id (keyset), filtered by status or
        # process, without reading the other rows: one index per way it is asked.
        2,
        (
            "CREATE INDEX procflow_instances_by_change ON procflow_instances (updated, workflow_id)",
            "CREATE INDEX procflow_instances_by_status_change ON procflow_instances (status, updated, workflow_id)",
            "CREATE INDEX procflow_instances_by_process_change ON procflow_instances (process, updated, workflow_id)",
        ),
    ),
    (
        # `/metrics` counts instances and their transitions by process and status: an index
        # that holds all three lets a scrape read the index, not every state (the console).
        3,
        (
            "CREATE INDEX procflow_instances_by_process_status ON procflow_instances (process, status, history_count)",
        ),
    ),
    (
        # A flat durable cost: the completions and milestones of a state (which grow by an
        # entry a step) are kept with the history row of the transition that appended them,
        # so the instance row stays the same size however old the instance is, and the
        # instance row counts them. Rows written before keep theirs in the state JSON (counts
        # 0): read as they are, moved to a history row at their next transition.
        4,
        (
            "ALTER TABLE procflow_instances ADD COLUMN completed_count integer NOT NULL DEFAULT 0",
            "ALTER TABLE procflow_instances ADD COLUMN completed_steps_count integer NOT NULL DEFAULT 0",
            "ALTER TABLE procflow_history ADD COLUMN completed text",
            "ALTER TABLE procflow_history ADD COLUMN completed_steps text",
        ),
    ),
    (
        # A flat durable cost in wide blocks: the waits, tokens and frames of a state with many
        # (a parallel block of a thousand branches, a for-each of a thousand items) are rows of their own, one each, so a
        # transition writes the few it changed instead of the whole list again; the instance
        # row counts them (`items`). A state with few keeps them in its JSON (items 0), as
        # every row written before does.
        5,
        (
            """CREATE TABLE procflow_state_items (
                workflow_id text NOT NULL,
                kind text NOT NULL,
                key text NOT NULL,
                item text NOT NULL,
                PRIMARY KEY (workflow_id, kind, key)
            )""",
            "ALTER TABLE procflow_instances ADD COLUMN items integer NOT NULL DEFAULT 0",
            # The instance's input, which never changes: written with the row, not at every transition
            # (NULL in rows written before: their state JSON holds it).
            "ALTER TABLE procflow_instances ADD COLUMN input text",
        ),
    ),
    (
        # Many workers on one wide instance: each transition logs the keys of the rows of
        # `procflow_state_items` it wrote or removed (`procflow_item_changes`, the last `CHANGES_KEPT` versions of
        # each instance), so a worker that holds an older version of the state reads only what
        # changed since, instead of every row (`item_log.caught_up`). A wait's row also keeps what
        # the wait shows in the status (`shown`), which a worker needs to index it.
        6,
        (
            """CREATE TABLE procflow_item_changes (
                workflow_id text NOT NULL,
                version integer NOT NULL,
                kind text NOT NULL,
                key text NOT NULL,
                PRIMARY KEY (workflow_id, version, kind, key)
            )""",
            "ALTER TABLE procflow_state_items ADD COLUMN shown text",
        ),
    ),
)
"""Schema changes in order: (version, steps). A step is SQL, or a function of the connection
for a backfill (it changes rows only: tables are made by SQL steps). Append a new version;
never edit a released one."""

_CREATE_TABLE = re.compile(r"CREATE TABLE (\w+)", re.I)
_DROP_TABLE = re.compile(r"DROP TABLE (?:IF EXISTS )?(\w+)", re.I)


def current_schema_version() -> int:
    """The store schema this procflow writes."""
    return MIGRATIONS[-1][0]


@cache
def tables_at(version: int) -> frozenset[str]:
    """The tables a store of schema `version` holds (read from the migrations' SQL)."""
    tables: set[str] = set()
    for number, steps in MIGRATIONS:
        if number > version:
            break
        for step in steps:
            if isinstance(step, str):
                tables.update(name.lower() for name in _CREATE_TABLE.findall(step))
                tables.difference_update(name.lower() for name in _DROP_TABLE.findall(step))
    return frozenset(tables)


def our_tables(connection: psycopg.Connection[tuple[Any, ...]]) -> set[str]:
    """The `procflow_*` tables of the current schema."""
    # pg_class itself, not the pg_tables view (which joins more catalogs): opening runs this
    # every time, and it was the slowest statement of an open.
    rows = connection.execute(
        "SELECT relname FROM pg_class WHERE relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema()) "
        "AND relkind IN ('r', 'p') AND relname LIKE 'procflow\\_%'"
    ).fetchall()
    return {str(name) for (name,) in rows}


def migrate(connection: psycopg.Connection[tuple[Any, ...]], where: str, create: bool) -> int:
    """Check the tables, then bring them to the current version, in one transaction (rolled
    back, with nothing written, on any refusal). Returns the schema version found."""
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK,))
        [(schema,)] = connection.execute("SELECT current_schema()").fetchall()
        if schema is None:
            [(search_path,)] = connection.execute("SHOW search_path").fetchall()
            raise StoreError(
                f"{where}: none of the schemas its search_path names ({search_path}) exists, so procflow has nowhere "
                "to keep its tables. Nothing was written. Create the schema (CREATE SCHEMA name) or name an existing "
                "one in the URL (?options=-csearch_path%3Dname)."
            )
        tables = our_tables(connection)
        if "procflow_meta" not in tables:
            if tables:
                raise foreign(where, str(schema), tables)
            if not create:
                raise StoreError(
                    f"there is no procflow store in {where} (schema {schema}); start an instance first "
                    f"(`procflow start ... --store {where}`)"
                )
            found = 0
        else:
            meta = {str(k): str(v) for k, v in connection.execute("SELECT key, value FROM procflow_meta").fetchall()}
            version_text = meta.get("schema_version", "")
            if meta.get("application") != APPLICATION or not version_text.isdigit():
                raise foreign(where, str(schema), tables)
            found = int(version_text)
            if found > current_schema_version():
                raise newer(where, found)
            unknown = tables - tables_at(found)
            if unknown:
                raise StoreError(
                    f"{where} (schema {schema}) holds tables a procflow store of schema {found} does not have "
                    f"({', '.join(sorted(unknown))}): another program made them. Nothing was written; give procflow a "
                    "schema of its own (?options=-csearch_path%3Dname) or remove those tables."
                )
        target = current_schema_version()
        for number, steps in MIGRATIONS:
            if number > found:
                for step in steps:
                    if isinstance(step, str):
                        connection.execute(step.encode())
                    else:
                        step(connection)
        if found < target:
            connection.execute(
                "INSERT INTO procflow_meta (key, value) VALUES ('application', %s), ('schema_version', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (APPLICATION, str(target)),
            )
    return found


def foreign(where: str, schema: str, tables: set[str]) -> StoreError:
    """The refusal of `procflow_*` tables that procflow did not make."""
    listed = ", ".join(sorted(tables)[:8]) + (", ..." if len(tables) > 8 else "")
    return StoreError(
        f"{where} (schema {schema}) holds tables named like procflow's ({listed}) that are not a procflow store: "
        "procflow_meta is missing or does not say `application = procflow`. procflow leaves them alone: nothing was "
        "written. Give procflow a schema of its own (?options=-csearch_path%3Dname) or another database."
    )


def newer(where: str, version: int) -> StoreError:
    """The refusal of a store written by a newer procflow."""
    return StoreError(
        f"{where} is a procflow store of schema version {version}, written by a newer procflow; this one reads up to "
        f"version {current_schema_version()}. Nothing was written to it. Upgrade procflow to use this store."
    )


def refused_connection(error: psycopg.OperationalError, url: str, where: str) -> StoreError:
    """Why libpq refused to connect, in words, with what to do (`where`: the URL without its password)."""
    text = str(error)
    parts = urlsplit(url)
    host = parts.hostname or "the local socket"
    port = parts.port or 5432
    database = (parts.path or "/").lstrip("/") or parts.username or "(the user's name)"
    user = parts.username or "(the login name)"
    if "does not exist" in text and 'database "' in text:
        return StoreError(
            f"the PostgreSQL server at {host}:{port} has no database `{database}` ({where}). Nothing was "
            f"written. Create it (`createdb -h {host} -p {port} {database}`) or name an existing database in the URL."
        )
    if "password authentication failed" in text or "no password supplied" in text:
        return StoreError(
            f"the PostgreSQL server at {host}:{port} refused the password of user `{user}` ({where}). "
            "Nothing was written. Check the password in the URL (or in ~/.pgpass / PGPASSWORD)."
        )
    if 'role "' in text and "does not exist" in text:
        return StoreError(
            f"the PostgreSQL server at {host}:{port} has no user `{user}` ({where}). Nothing was written. "
            "Name an existing user in the URL (postgresql://USER@host/database) or create it (CREATE ROLE)."
        )
    if "no pg_hba.conf entry" in text or "permission denied" in text:
        return StoreError(
            f"the PostgreSQL server at {host}:{port} does not let user `{user}` into database `{database}` "
            f"({where}): {first_line(text)}. Nothing was written. Ask its administrator for access."
        )
    return StoreError(
        f"cannot reach the PostgreSQL server at {host}:{port} ({where}): {first_line(text)}. Nothing was "
        f"written. Check that the server runs (`pg_isready -h {host} -p {port}`) and that the host and port in "
        "--store (or PROCFLOW_STORE) are right."
    )


def first_line(text: str) -> str:
    """The first line of a driver's message, its runs of spaces made one."""
    return " ".join(text.strip().splitlines()[0].split()) if text.strip() else text
