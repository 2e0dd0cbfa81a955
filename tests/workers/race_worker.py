"""Worker processes for the two-writers tests of `tests/test_sqlite_store.py`.

    race_worker.py hold STORE WORKFLOW_ID        rounds of: read the instance, say `read V`, wait
                                                 for `go` on stdin, save the timer transition
                                                 computed from version V: `saved V+1` or `conflict`
    race_worker.py work STORE LOG NOW            a worker loop with yes-saying participants until
                                                 every instance is finished; every save that
                                                 succeeded is appended to LOG as `WID FROM TO`
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from procflow.dsl.compiler import compile_source
from procflow.errors import ConcurrencyError
from procflow.interpreter import engine
from procflow.interpreter.memory_store import compile_pinned_definition
from procflow.interpreter.messages import Dispatch
from procflow.interpreter.orchestrator import Orchestrator, worker
from procflow.interpreter.sqlite_store import SqliteStore
from procflow.interpreter.state import TERMINAL, InstanceState, from_epoch, parse_instant
from procflow.operator_cli import DemoTransport


class LoggedStore(SqliteStore):
    """Appends `WID FROM TO` for each save that committed."""

    log_fd: int

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
        version = super().save(state, expected_version, dispatches, message_id, message_digest, sent, claim_for)
        os.write(self.log_fd, f"{state.workflowId} {expected_version or 0} {version} {os.getpid()}\n".encode())
        return version


def hold(path: str, workflow_id: str) -> int:
    """Rounds of: read the instance, compute its next timer transition, say `read V`, wait
    for `go`, save it from version V, say `saved V+1` or `conflict`. `stop` ends."""
    with SqliteStore(path) as store:
        definition = None
        while True:
            row = store.get(workflow_id)
            assert row is not None
            if definition is None:
                pinned = store.pinned(row.state.definition.fingerprint)
                assert pinned is not None
                definition = compile_pinned_definition(pinned, compile_source)
            due = store.next_due()
            if due is None:
                return 0  # it has finished
            transition = engine.advance(definition, row.state, from_epoch(due))
            assert transition.outcome == "applied"
            print(f"read {row.version}", flush=True)
            if sys.stdin.readline().strip() != "go":
                return 0
            try:
                version = store.save(transition.state, row.version, transition.dispatches)
            except ConcurrencyError:
                print("conflict", flush=True)
            else:
                print(f"saved {version}", flush=True)
            if sys.stdin.readline().strip() != "next":
                return 0


def work(path: str, log: str, now: str) -> int:
    moment = parse_instant(now)
    store = LoggedStore(path, "NORMAL")
    store.log_fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        compiled = [compile_pinned_definition(p, compile_source) for p in store.pinned_definitions()]
        orchestrator = Orchestrator(
            compiled, store=store, transport=DemoTransport(compiled), clock=lambda: moment, compile_pinned=compile_source
        )
        print("ready", flush=True)
        sys.stdin.readline()  # start together
        for _ in range(10_000):
            worker(orchestrator, once=True)
            if all(s.status in TERMINAL for s in store.summaries()):
                break
    finally:
        os.close(store.log_fd)
        store.close()
    return 0


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    sys.exit(hold(*rest) if mode == "hold" else work(*rest))
