"""`procflow store check`: the full check of a store, which opening it no longer makes.

Opening a store reads its header and its schema only (a million instances open as fast as
ten). The whole check reads everything, on its own connection that cannot write:

- SQLite: `PRAGMA integrity_check` (every page, every index) and `PRAGMA foreign_key_check`;
- both stores: procflow's own consistency. Every instance's state and history read back as
  the record procflow wrote (strict JSON, a state this procflow reads), with its waits and
  tokens kept in rows of their own when they are many; its row agrees with its state (status,
  process) and holds as many history entries, completions, milestones and such rows as it
  says (the completions and milestones are kept with the history rows); every command in the
  outbox reads back; every pinned definition is a map of file texts; no history, outbox,
  timer or correlation row belongs to an instance the store does not hold.

Rows are read in order with three cursors side by side (instances, their history, their waits
and tokens), so the check holds one instance in memory at a time, whatever the size of the store.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from procflow.errors import StoreError
from procflow.interpreter.sqlite_schema import check_existing, diagnose, read_only_connection
from procflow.interpreter.stores import (
    LOGS,
    LogTexts,
    decode_dispatch,
    decode_state,
    read_stored_json,
    redact,
    sqlite_path,
    store_kind,
)

__all__ = ["CheckReport", "check_store"]

T = TypeVar("T")

KEPT_PROBLEMS = 200
"""How many problems a report keeps word for word (the rest are counted)."""


@dataclass(slots=True)
class CheckReport:
    """What `procflow store check` found: the problems (each a sentence) and what it read."""

    location: str
    kind: str
    problems: list[str] = field(default_factory=list)
    more_problems: int = 0
    pages_damaged: bool = False
    counted: dict[str, int] = field(default_factory=dict)

    @property
    def sound(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems

    def add(self, problem: str) -> None:
        """Keep one problem (counted only, past `KEPT_PROBLEMS`)."""
        if len(self.problems) < KEPT_PROBLEMS:
            self.problems.append(problem)
        else:
            self.more_problems += 1

    def advice(self) -> str:
        """What to do about what was found."""
        if self.pages_damaged:
            where = self.location
            return (
                f"The file itself is damaged: stop the workers on it, restore it from a backup, or save what SQLite can "
                f"read into a new file (`sqlite3 {where} .recover | sqlite3 recovered.sqlite`) and check that one."
            )
        return (
            "The store can be opened and the other instances keep working; a damaged instance is refused when it is "
            "read and left alone by `tick`. Restore the store from a backup, or remove the rows named above if they "
            "are lost."
        )


def check_store(target: str | Path) -> CheckReport:
    """Check the store `target` names (a path, `sqlite:///...` or `postgresql://...`) and
    write nothing to it; StoreError when it cannot be checked at all (missing, foreign, newer)."""
    if store_kind(target) == "postgresql":
        return _check_postgres(str(target))
    return _check_sqlite(sqlite_path(target))


# ---------------------------------------------------------------- SQLite


def _check_sqlite(path: Path) -> CheckReport:
    if not path.is_file():
        raise StoreError(f"there is no store at {path} to check; name it with --store (or PROCFLOW_STORE)")
    report = CheckReport(str(path), "sqlite")
    if check_existing(path) is None:
        return report  # an empty SQLite file: a store not made yet
    connection = read_only_connection(path)
    try:
        try:
            pages = [str(r[0]) for r in connection.execute("PRAGMA integrity_check(100)").fetchall()]
        except sqlite3.DatabaseError as error:
            pages = [str(diagnose(path, error))]
        if pages != ["ok"]:
            report.pages_damaged = True
            for line in pages:
                report.add(f"SQLite integrity_check: {line}")
        try:
            for table, rowid, parent, _ in connection.execute("PRAGMA foreign_key_check").fetchall():
                report.add(f"SQLite foreign_key_check: row {rowid} of {table} points at no row of {parent}")
        except sqlite3.DatabaseError as error:
            report.add(f"SQLite foreign_key_check: {error}")
        try:
            connection.execute("BEGIN")  # one snapshot for every read below
            _consistency(report, _SqliteReader(connection), "", "")
        except sqlite3.DatabaseError as error:
            report.pages_damaged = True
            report.add(f"reading the rows stopped: {diagnose(path, error)}")
    finally:
        connection.close()
    return report


class _SqliteReader:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def rows(self, sql: str) -> Iterator[tuple[Any, ...]]:
        yield from self.connection.execute(sql)


# ---------------------------------------------------------------- PostgreSQL


def _check_postgres(url: str) -> CheckReport:
    import psycopg

    from procflow.interpreter.postgres_store import PostgresStore

    # Opening as the commands do gives the same diagnoses (unreachable, missing database or
    # tables, newer schema) and writes nothing to a store of the current schema.
    PostgresStore(url, create=False).close()
    report = CheckReport(redact(url), "postgresql")
    try:
        with psycopg.connect(url, connect_timeout=10) as connection:
            connection.read_only = True  # the check cannot write, whatever it runs
            with connection.transaction():
                connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")  # one snapshot
                # Ordered as Python orders text (code points), whatever the database's collation.
                _consistency(report, _PostgresReader(connection), "procflow_", ' COLLATE "C"')
    except psycopg.Error as error:
        raise StoreError(f"checking {redact(url)} stopped: {error}; nothing was written. Run the check again.") from None
    return report


class _PostgresReader:
    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.cursors = 0

    def rows(self, sql: str) -> Iterator[tuple[Any, ...]]:
        # A server-side cursor: rows arrive in batches, never the whole table at once.
        self.cursors += 1
        with self.connection.cursor(name=f"procflow_check_{self.cursors}") as cursor:
            cursor.itersize = 2000
            cursor.execute(sql.encode())
            yield from cursor


# ---------------------------------------------------------------- both


class _Reader(Protocol):
    def rows(self, sql: str) -> Iterator[tuple[Any, ...]]: ...


def _consistency(report: CheckReport, reader: _Reader, prefix: str, collate: str) -> None:
    """procflow's own checks, over rows read in order (`prefix`: the stores' table names differ;
    `collate`: what makes the database order ids as Python does, for the merge)."""
    where = report.location
    instances = reader.rows(
        f"SELECT workflow_id, process, status, history_count, completed_count, completed_steps_count, items, state, input "
        f"FROM {prefix}instances ORDER BY workflow_id{collate}"
    )
    history = reader.rows(
        f"SELECT workflow_id, entry, completed, completed_steps FROM {prefix}history ORDER BY workflow_id{collate}, seq"
    )
    state_items = reader.rows(f"SELECT workflow_id, kind, key, item FROM {prefix}state_items ORDER BY workflow_id{collate}, kind, key")
    counted = {"instances": 0, "history entries": 0, "commands": 0, "definitions": 0}
    with_history = _with_history(instances, history, report)
    with_items = _with_history(with_history, state_items, report, "a wait or token row", lambda pair: pair[0][0])
    for ((workflow_id, process, status, history_count, *log_counts, item_count, text, input_text), rows), items in with_items:
        counted["instances"] += 1
        counted["history entries"] += len(rows)
        if len(rows) != int(history_count):
            report.add(f"instance {workflow_id}: its row says {history_count} history entries, the store holds {len(rows)}")
        if len(items) != int(item_count):
            report.add(f"instance {workflow_id}: its row says {item_count} waits and tokens in rows of their own, the store holds {len(items)}")
        entries, logs = [entry for entry, _, _ in rows], [(completed, steps) for _, completed, steps in rows]
        for log, count, held in zip(LOGS, log_counts, _logged(logs), strict=True):
            if held is not None and held != int(count):
                report.add(f"instance {workflow_id}: its row says {count} `{log}` entries, its history rows hold {held}")
        try:
            state = decode_state(str(workflow_id), text, entries, where, logs, items, input_text)
        except StoreError as error:
            report.add(f"instance {workflow_id}: {error}")
            continue
        if state.status != status or state.type != process:
            report.add(
                f"instance {workflow_id}: its row says {process} {status}, its state says {state.type} {state.status}"
            )
    for outbox_id, workflow_id, text in reader.rows(f"SELECT id, workflow_id, dispatch FROM {prefix}outbox ORDER BY id"):
        counted["commands"] += 1
        try:
            decode_dispatch(text, f"{where} (instance {workflow_id}, outbox row {outbox_id})")
        except StoreError as error:
            report.add(str(error))
    for fingerprint, name, sources in reader.rows(f"SELECT fingerprint, name, sources FROM {prefix}definitions ORDER BY fingerprint"):
        counted["definitions"] += 1
        try:
            kept = read_stored_json(sources, f"the pinned text of `{name}` ({fingerprint}) in {where}")
        except StoreError as error:
            report.add(str(error))
            continue
        if not isinstance(kept, dict) or not all(isinstance(v, str) for v in kept.values()):
            report.add(f"the pinned text of `{name}` ({fingerprint}) in {where} is not a map of file texts")
    for table in ("outbox", "timers", "correlations", "item_changes"):  # (history and state_items: in the merge above)
        for workflow_id, count in reader.rows(
            f"SELECT t.workflow_id, count(*) FROM {prefix}{table} t WHERE NOT EXISTS "
            f"(SELECT 1 FROM {prefix}instances i WHERE i.workflow_id = t.workflow_id) GROUP BY t.workflow_id ORDER BY 1"
        ):
            report.add(f"{count} row(s) of {prefix}{table} belong to instance {workflow_id}, which the store does not hold")
    report.counted = counted


def _logged(logs: list[LogTexts]) -> list[int | None]:
    """How many completions and milestones the history rows hold (None for one that cannot be
    read: `decode_state` says what is wrong with it)."""
    counts: list[int | None] = [0, 0]
    for texts in logs:
        for position, text in enumerate(texts):
            if text is None or counts[position] is None:
                continue
            try:
                value = read_stored_json(text, "a log")
            except StoreError:
                value = None
            counts[position] = (counts[position] or 0) + len(value) if isinstance(value, list) else None
    return counts


def _with_history(
    instances: Iterable[T], history: Iterator[tuple[Any, ...]], report: CheckReport, what: str = "a history entry",
    workflow_id_of: Callable[[T], object] = lambda row: row[0],  # type: ignore[index]
) -> Iterator[tuple[T, list[tuple[Any, ...]]]]:
    """Each instance row with its history rows (entry, completed, completed_steps), or with
    other rows of it (`what` they are): a merge of two cursors ordered by workflow id. Rows
    of an instance the store does not hold are reported on the way."""
    pending = next(history, None)
    for row in instances:
        workflow_id = str(workflow_id_of(row))
        rows: list[tuple[Any, ...]] = []
        while pending is not None and pending[0] < workflow_id:
            report.add(f"{what} belongs to instance {pending[0]}, which the store does not hold")
            pending = next(history, None)
        while pending is not None and pending[0] == workflow_id:
            rows.append(tuple(pending[1:]))
            pending = next(history, None)
        yield row, rows
    while pending is not None:
        report.add(f"{what} belongs to instance {pending[0]}, which the store does not hold")
        pending = next(history, None)


_ONE = {"instances": "instance", "history entries": "history entry", "commands": "command", "definitions": "definition"}
"""What `describe` says of one of a kind it counted."""


def describe(report: CheckReport) -> str:
    """The report as an operator reads it (several lines, ending with a line break)."""
    read = ", ".join(f"{count} {_ONE.get(what, what) if count == 1 else what}" for what, count in report.counted.items())
    if report.sound:
        pages = "SQLite integrity_check ok; " if report.kind == "sqlite" else ""
        return f"store {report.location}: sound ({pages}read back {read or 'nothing: an empty store'})\n"
    total = len(report.problems) + report.more_problems
    lines = [f"store {report.location}: {total} problem(s)" + (f" (read back {read})" if read else "")]
    lines += [f"  {problem}" for problem in report.problems]
    if report.more_problems:
        lines.append(f"  ... and {report.more_problems} more")
    lines.append(f"what to do: {report.advice()}")
    return "\n".join(lines) + "\n"


def as_json(report: CheckReport) -> str:
    """The report as one JSON document."""
    return json.dumps(
        {"store": report.location, "sound": report.sound, "problems": report.problems,
         "moreProblems": report.more_problems, "read": report.counted,
         "advice": None if report.sound else report.advice()},
        indent=2,
    )
