"""A worker process for tests/test_many_workers.py.

    claim_worker.py STORE LOG NOW    a `procflow worker` loop on the store STORE (a path or a URL), at
                                     the fixed moment NOW, with in-process participants that say yes
                                     to everything and append `DEDUPKEY PID` to LOG for every command
                                     they receive; it stops when every instance is finished
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable

from procflow.dsl import model as m
from procflow.dsl.compiler import compile_source
from procflow.interpreter.memory_store import compile_pinned_definition
from procflow.interpreter.messages import Dispatch
from procflow.interpreter.orchestrator import Orchestrator, worker
from procflow.interpreter.state import TERMINAL, parse_instant
from procflow.interpreter.stores import open_store
from procflow.operator_cli import DemoTransport


class RecordingTransport(DemoTransport):
    """Says yes, and writes down each command it receives (one `write` of one line: appends
    from several processes do not mix)."""

    def __init__(self, definitions: Iterable[m.ProcessDefinition], log_fd: int) -> None:
        super().__init__(definitions)
        self.log_fd = log_fd

    def send(self, dispatch: Dispatch) -> None:
        os.write(self.log_fd, f"{dispatch.dedupKey} {os.getpid()}\n".encode())
        super().send(dispatch)


def main(store_url: str, log: str, now: str) -> int:
    moment = parse_instant(now)
    log_fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        with open_store(store_url) as store:
            compiled = [compile_pinned_definition(p, compile_source) for p in store.pinned_definitions()]
            orchestrator = Orchestrator(
                compiled, store=store, transport=RecordingTransport(compiled, log_fd), clock=lambda: moment,
                compile_pinned=compile_source,
            )
            print("ready", flush=True)
            sys.stdin.readline()  # start together
            give_up = time.monotonic() + 300
            while time.monotonic() < give_up:
                worker(orchestrator, once=True)
                if all(s.status in TERMINAL for s in store.summaries()):
                    return 0
                time.sleep(0.01)
            print("gave up: instances still running after 300 s", file=sys.stderr)
            return 1
    finally:
        os.close(log_fd)


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
