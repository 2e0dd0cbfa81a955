"""Message ids: the bare state remembers the last `SEEN_WINDOW`; the store's inbox remembers them all."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

import procflow
from procflow.interpreter.memory_store import InMemoryStore, Store
from procflow.interpreter.messages import Reply
from procflow.interpreter.orchestrator import Orchestrator
from procflow.interpreter.sqlite_store import SqliteStore
from procflow.interpreter.state import SEEN_WINDOW, InstanceState

NOW = datetime(2026, 3, 23, 16, 0, tzinfo=UTC)
MESSAGES = SEEN_WINDOW + 36

TALLY = procflow.load_text(
    """
process tally {
  correlate by input.id
  input { id: string }
  event tick
  event stop
  repeat count max 1000 {
    step listen { await tick, stop }
  } until steps.listen.reply == "stop"
}
"""
)


def tick(number: int) -> Reply:
    return Reply(type="tick", correlationId="t_1", messageId=f"m{number}")


def ticked(count: int) -> InstanceState:
    state = procflow.start(TALLY, "wf_1", {"id": "t_1"}, NOW).state
    for number in range(count):
        state = procflow.deliver(TALLY, state, tick(number), NOW).state
    return state


def test_the_bare_state_keeps_the_last_ids_only() -> None:
    state = ticked(MESSAGES)
    assert state.seenMessageIds == tuple(f"m{n}" for n in range(MESSAGES - SEEN_WINDOW, MESSAGES))
    # A duplicate within the window is recognised by the engine alone, and changes nothing.
    again = procflow.deliver(TALLY, state, tick(MESSAGES - SEEN_WINDOW), NOW)
    assert again.outcome == "duplicate" and again.state is state
    # One older than the window is not: a bare engine takes it for a new tick (the store's
    # inbox is what recognises it, below).
    assert procflow.deliver(TALLY, state, tick(0), NOW).outcome == "applied"


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_the_store_recognises_a_duplicate_beyond_the_window(kind: str, tmp_path: Path) -> None:
    store: Store = InMemoryStore() if kind == "memory" else SqliteStore(tmp_path / "store.sqlite")
    orchestrator = Orchestrator(TALLY, store=store, clock=lambda: NOW, auto_dispatch=False, compile_pinned=procflow.load_text)
    orchestrator.start("wf_1", {"id": "t_1"})
    for number in range(MESSAGES):
        assert orchestrator.receive(tick(number)).outcome == "applied"
    before = store.get("wf_1")
    assert before is not None and "m0" not in before.state.seenMessageIds
    again = orchestrator.receive(tick(0))
    assert again.outcome == "duplicate" and again.dispatches == []
    after = store.get("wf_1")
    assert after is not None and after.version == before.version and after.state == before.state
    if isinstance(store, SqliteStore):
        store.close()
