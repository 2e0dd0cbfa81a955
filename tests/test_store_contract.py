"""One contract, every store: what the runtime's `Store` protocol promises, checked on the
in-memory, SQLite and PostgreSQL stores alike; and what the durable ones promise besides
(reopening, operators' reads, versioned schemas and their migrations).

What only one store does (SQLite's file checks, PostgreSQL's diagnoses) is tested beside it,
in tests/test_sqlite_store.py and tests/test_postgres_store.py.
"""

from __future__ import annotations

import dataclasses
import json
import random
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

import procflow
from procflow.dsl.model import ProcessDefinition
from procflow.errors import (
    ConcurrencyError,
    DuplicateMessage,
    InputError,
    MessageRefused,
    ProcflowError,
    StoreError,
)
from procflow.interpreter import (
    engine,
    item_log,
    postgres_schema,
    postgres_store,
    sqlite_schema,
)
from procflow.interpreter.memory_store import HELD_LEASE_LEFT, InMemoryStore, Store, parse_cursor
from procflow.interpreter.messages import Dispatch, Reply
from procflow.interpreter.orchestrator import Orchestrator, worker
from procflow.interpreter.postgres_store import PostgresStore
from procflow.interpreter.sqlite_store import SqliteStore
from procflow.interpreter.stores import DurableStore, ItemRows
from procflow.operator_cli import DemoTransport

sys.path.insert(0, str(Path(__file__).resolve().parent))
from order_helpers import FOR_EACH, ORDER, ROOT, T0, Clock, yes  # noqa: E402

# ---------------------------------------------------------------- the stores under test


@dataclass
class Backend:
    """One kind of store: how to open it (again) and how to reach its database around it."""

    kind: str
    opener: Callable[[bool], Store]
    raw: Callable[[str, tuple[Any, ...]], list[Any]] = lambda sql, args: []
    prefix: str = ""
    opened: list[Store] = field(default_factory=list)

    def open(self, create: bool = True) -> Any:
        store = self.opener(create)
        self.opened.append(store)
        return store

    def table(self, name: str) -> str:
        return self.prefix + name

    def close(self) -> None:
        for store in self.opened:
            close = getattr(store, "close", None)
            if close is not None:
                close()


def _sqlite_raw(path: Path) -> Callable[[str, tuple[Any, ...]], list[Any]]:
    def raw(sql: str, args: tuple[Any, ...]) -> list[Any]:
        connection = sqlite3.connect(path)
        try:
            rows = connection.execute(sql.replace("%s", "?"), args).fetchall()
            connection.commit()
            return rows
        finally:
            connection.close()

    return raw


def _postgres_raw(url: str) -> Callable[[str, tuple[Any, ...]], list[Any]]:
    def raw(sql: str, args: tuple[Any, ...]) -> list[Any]:
        with psycopg.connect(url, autocommit=True) as connection:
            cursor = connection.execute(sql.encode(), args)
            return cursor.fetchall() if cursor.description else []

    return raw


def _backend(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if kind == "memory":
        memory = InMemoryStore()
        return Backend(kind, lambda create: memory)
    if kind == "sqlite":
        path = tmp_path / "store.sqlite"
        return Backend(kind, lambda create: SqliteStore(path, create=create), _sqlite_raw(path))
    url: str = request.getfixturevalue("postgres_url")
    return Backend(kind, lambda create: PostgresStore(url, create=create), _postgres_raw(url), "procflow_")


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    opened = _backend(request.param, request, tmp_path)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture(params=["sqlite", "postgres"])
def durable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    opened = _backend(request.param, request, tmp_path)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def store(backend: Backend) -> Any:
    return backend.open()


@pytest.fixture(scope="module")
def order() -> ProcessDefinition:
    return procflow.load(ORDER)


def started(store: Store, order: ProcessDefinition, workflow_id: str = "wf_1", order_id: str = "ord_1") -> Orchestrator:
    orchestrator = Orchestrator(order, store=store, clock=Clock(), auto_dispatch=False, compile_pinned=procflow.load_text)
    orchestrator.start(workflow_id, {"orderId": order_id, "amount": 10.0})
    return orchestrator


# ---------------------------------------------------------------- the Store protocol, on every store


def test_state_and_history_round_trip(store: Store, order: ProcessDefinition) -> None:
    orchestrator = started(store, order)
    applied = orchestrator.receive({"type": "inventory_reserved", "correlationId": "ord_1", "messageId": "m1"})
    row = store.get("wf_1")
    assert row is not None and row.version == 2
    # The transition's state carries the entry it appended (on a durable store, not the ones before).
    assert dataclasses.replace(row.state, history=()) == dataclasses.replace(applied.state, history=())
    assert len(applied.state.history) == 2 and applied.state.history[-1] == row.state.history[-1]
    assert [e.event for e in row.state.history] == ["started", "reply"]
    assert row.state.status == "waiting_for_payment"
    assert store.get("nobody") is None
    assert store.find("order-fulfillment", "ord_1") == ["wf_1"] == store.find(None, "ord_1")
    assert store.find("another-process", "ord_1") == [] and store.find(None, "ord_2") == []
    assert [s.workflowId for s in store.instances("waiting_for_payment")] == ["wf_1"]
    assert store.instances("completed") == []


def _without_logs(state: procflow.InstanceState) -> procflow.InstanceState:
    return dataclasses.replace(state, history=(), completed=(), completedSteps=())


def test_a_transition_reads_the_state_without_its_history_and_appends_to_it(store: Store, order: ProcessDefinition) -> None:
    orchestrator = started(store, order)
    orchestrator.receive({"type": "inventory_reserved", "correlationId": "ord_1", "messageId": "m1"})
    whole, loaded = store.get("wf_1"), store.load("wf_1")
    assert whole is not None and loaded is not None and loaded.version == whole.version == 2
    # The same state, but a durable store hands over its history, completions and milestones
    # as lengths only (their entries stay in the store); `whole=True` reads the last two.
    assert _without_logs(loaded.state) == _without_logs(whole.state)
    assert len(loaded.state.history) == 2
    assert len(loaded.state.completed) == len(whole.state.completed) == 1
    assert len(loaded.state.completedSteps) == len(whole.state.completedSteps) == 1
    complete = store.load("wf_1", whole=True)
    assert complete is not None and complete.version == 2 and len(complete.state.history) == 2
    assert tuple(complete.state.completed) == tuple(whole.state.completed)
    assert tuple(complete.state.completedSteps) == tuple(whole.state.completedSteps) == ("inventory_reserved",)
    # A transition made from the loaded state numbers its entry after the stored ones, and the
    # store keeps the whole history in order.
    transition = engine.deliver(order, loaded.state, Reply(type="payment_authorized", correlationId="ord_1"), T0)
    store.save(transition.state, loaded.version, transition.dispatches)
    again = store.get("wf_1")
    assert again is not None
    assert [(e.seq, e.event) for e in again.state.history] == [(1, "started"), (2, "reply"), (3, "reply")]
    assert again.state.completedSteps == ("inventory_reserved", "payment_authorized")
    assert [(c.step, c.outcome) for c in again.state.completed] == [
        ("reserve_inventory", "inventory_reserved"), ("authorize_payment", "payment_authorized"),
    ]
    assert again.state.status == "waiting_for_shipping" and store.load("nobody") is None


def test_a_transition_that_reads_the_completed_steps_is_made_from_the_whole_record(store: Store, order: ProcessDefinition) -> None:
    # Two steps done, then the shipment is refused: the compensation undoes both, in reverse
    # order, although a transition starts from a state whose completions stay in the store.
    orchestrator = started(store, order)
    for n, reply in enumerate(("inventory_reserved", "payment_authorized", "shipment_rejected")):
        orchestrator.receive({"type": reply, "correlationId": "ord_1", "messageId": f"m{n}"})
    row = store.get("wf_1")
    assert row is not None and row.state.status == "compensating"
    assert [u.commandName for u in row.state.compensation.pending] == ["payment.void", "inventory.release"]  # type: ignore[union-attr]
    assert [d.command.commandName for _, d in store.outbox()][-1:] == ["payment.void"]
    # A reply already handled is told apart from one nobody waits for (it reads the completions too).
    duplicate = orchestrator.receive({"type": "inventory_reserved", "correlationId": "ord_1", "messageId": "m9"})
    assert duplicate.outcome == "duplicate"
    with pytest.raises(MessageRefused, match="does not expect `payment_declined`"):
        orchestrator.receive({"type": "payment_declined", "correlationId": "ord_1", "messageId": "m10"})
    again = store.get("wf_1")
    assert again is not None and again.version == row.version  # neither changed it


def test_a_message_id_reused_for_another_message_is_refused_and_changes_nothing(store: Store, order: ProcessDefinition) -> None:
    orchestrator = started(store, order)
    first = {"type": "inventory_reserved", "correlationId": "ord_1", "messageId": "m-1", "data": {"reservationId": "r-1"}}
    assert orchestrator.receive(first).outcome == "applied"
    assert store.digest_of("m-1") is not None and store.digest_of("m-2") is None
    before, outbox = store.get("wf_1"), store.outbox()
    assert orchestrator.receive(dict(first, workflowId="wf_1")).outcome == "duplicate"  # the same message
    with pytest.raises(MessageRefused, match="`m-1` was already used for another message"):
        orchestrator.receive(dict(first, data={"reservationId": "r-2"}))
    assert store.get("wf_1") == before and store.outbox() == outbox


def test_instances_come_in_the_order_they_started(store: Store, order: ProcessDefinition) -> None:
    for i in (3, 1, 2):
        started(store, order, f"wf_{i}", f"ord_{i}")
    assert [s.workflowId for s in store.instances()] == ["wf_3", "wf_1", "wf_2"]
    assert all(len(s.history) == 1 for s in store.instances())


def test_instances_are_paged_by_last_change_then_id_and_filtered(store: Store, order: ProcessDefinition) -> None:
    clock = Clock()
    orchestrator = Orchestrator(order, store=store, clock=clock, auto_dispatch=False, compile_pinned=procflow.load_text)
    # wf_a and wf_b start at the same moment (the id breaks the tie); wf_c later; then wf_a moves on.
    for workflow_id, seconds in (("wf_b", 0), ("wf_a", 0), ("wf_c", 5)):
        clock.moment = T0 + timedelta(seconds=seconds)
        orchestrator.start(workflow_id, {"orderId": f"ord_{workflow_id}", "amount": 10.0})
    clock.moment = T0 + timedelta(seconds=9)
    orchestrator.receive({"type": "inventory_reserved", "correlationId": "ord_wf_a", "messageId": "m1"})

    page = store.instance_page(10)
    assert [s.workflow_id for s in page] == ["wf_b", "wf_c", "wf_a"]
    assert [s.updated_at for s in page] == ["2026-01-01T09:00:00Z", "2026-01-01T09:00:05Z", "2026-01-01T09:00:09Z"]
    assert (page[2].status, page[2].next_action, page[2].version) == ("waiting_for_payment", "authorize_payment", 2)
    first = store.instance_page(2)
    assert [s.workflow_id for s in first] == ["wf_b", "wf_c"]
    rest = store.instance_page(2, parse_cursor(first[-1].cursor))
    assert [s.workflow_id for s in rest] == ["wf_a"] and store.instance_page(2, parse_cursor(rest[-1].cursor)) == []
    assert [s.workflow_id for s in store.instance_page(10, status="waiting_for_inventory")] == ["wf_b", "wf_c"]
    assert [s.workflow_id for s in store.instance_page(1, parse_cursor(first[0].cursor), "waiting_for_inventory")] == ["wf_c"]
    assert [s.workflow_id for s in store.instance_page(10, process="order-fulfillment")] == ["wf_b", "wf_c", "wf_a"]
    assert store.instance_page(10, process="another-process") == []
    assert store.instance_page(10, status="waiting_for_payment", process="order-fulfillment") == [page[2]]
    assert store.status_counts() == {"waiting_for_inventory": 2, "waiting_for_payment": 1}
    assert store.status_counts("order-fulfillment") == store.status_counts() and store.status_counts("other") == {}
    # The console's order: most recently changed first, and its text filter (id or correlation key).
    newest = store.instance_page(2, newest_first=True)
    assert [s.workflow_id for s in newest] == ["wf_a", "wf_c"]
    assert [s.workflow_id for s in store.instance_page(2, parse_cursor(newest[-1].cursor), newest_first=True)] == ["wf_b"]
    assert [s.workflow_id for s in store.instance_page(10, text="ord_wf_c", newest_first=True)] == ["wf_c"]
    assert [s.workflow_id for s in store.instance_page(10, text="wf_b")] == ["wf_b"]
    assert store.instance_page(10, text="nobody") == []


def test_a_cursor_not_printed_by_procflow_is_refused_in_words() -> None:
    for text in ("", "wf_1", "1.5", "1.5:", "nan:wf_1", "inf:wf_1", "soon:wf_1"):
        with pytest.raises(InputError, match="is not a cursor `procflow instances` printed"):
            parse_cursor(text)
    assert parse_cursor("1767258000.25:wf:with:colons") == (1767258000.25, "wf:with:colons")


def test_a_stale_version_is_refused_and_changes_nothing(backend: Backend, order: ProcessDefinition) -> None:
    first, second = backend.open(), backend.open()
    started(first, order)
    row_a, row_b = first.get("wf_1"), second.get("wf_1")
    assert row_a is not None and row_b is not None
    late = T0 + timedelta(seconds=31)
    step_a = engine.advance(order, row_a.state, late)
    step_b = engine.advance(order, row_b.state, late)
    assert first.save(step_a.state, row_a.version, step_a.dispatches) == 2
    outbox = first.outbox()
    with pytest.raises(ConcurrencyError):
        second.save(step_b.state, row_b.version, step_b.dispatches)
    again = second.get("wf_1")
    assert again is not None and again.version == 2 and len(again.state.history) == 2
    with pytest.raises(ConcurrencyError):
        second.save(step_b.state, None, [])  # it exists already
    assert second.outbox() == outbox  # the loser wrote nothing


def test_a_redelivered_reply_is_a_no_op(store: Store, order: ProcessDefinition) -> None:
    orchestrator = started(store, order)
    reply = {"type": "inventory_reserved", "correlationId": "ord_1", "messageId": "m-7"}
    assert orchestrator.receive(reply).outcome == "applied"
    before, outbox = store.get("wf_1"), store.outbox()
    again = orchestrator.receive(reply)
    assert again.outcome == "duplicate" and again.dispatches == []
    assert store.get("wf_1") == before and store.outbox() == outbox
    assert store.seen("m-7") and not store.seen("m-8")
    # The inbox check sits inside the transaction too: a writer that did not look first is refused.
    assert before is not None
    with pytest.raises(DuplicateMessage):
        store.save(before.state, before.version, [], "m-7")
    assert store.get("wf_1") == before


def test_the_outbox_is_sent_at_least_once_and_marked_after(store: Store, order: ProcessDefinition) -> None:
    orchestrator = started(store, order)
    [(outbox_id, dispatch)] = store.outbox()
    assert dispatch.dedupKey == "ord_1:inventory.reserve:reserve_inventory#1"

    class Refusing:
        def send(self, dispatch: Dispatch) -> None:
            raise ConnectionError("broker down")

    orchestrator.transport = Refusing()
    with pytest.raises(ConnectionError):
        orchestrator.pump()
    assert store.outbox() == [(outbox_id, dispatch)]  # not taken: still to send
    orchestrator.transport = procflow.InProcessTransport({"inventory": yes, "payment": yes, "shipping": yes})
    orchestrator.pump()
    assert store.outbox() == []
    assert orchestrator.state("wf_1").status == "completed"
    sent = orchestrator.transport.sent  # type: ignore[attr-defined]
    assert [d.command.commandName for d in sent] == ["inventory.reserve", "payment.authorize", "shipping.create"]


def test_a_due_timer_is_found_at_its_moment(store: Store, order: ProcessDefinition) -> None:
    started(store, order)
    assert store.due(T0 + timedelta(seconds=29)) == []
    assert store.due(T0 + timedelta(seconds=30)) == ["wf_1"]
    assert store.next_due() == (T0 + timedelta(seconds=30)).timestamp()  # type: ignore[attr-defined]


def test_a_timer_that_fires_late_or_twice_changes_nothing_it_should_not(store: Store, order: ProcessDefinition) -> None:
    orchestrator = started(store, order)
    orchestrator.receive({"type": "inventory_reserved", "correlationId": "ord_1", "messageId": "m1"})
    # The payment's hour has passed, the undo's minute not yet (each timer fires when it was due,
    # so a tick days later would also see the undo go unanswered).
    much_later = T0 + timedelta(hours=1, seconds=30)
    [changed] = orchestrator.tick(much_later)
    assert changed.status == "compensating" and changed.failure is not None
    assert changed.failure.reason == "authorize_payment timed out"
    before, outbox = store.get("wf_1"), store.outbox()
    assert orchestrator.tick(much_later) == []  # twice: nothing
    assert store.get("wf_1") == before and store.outbox() == outbox
    assert [d.command.commandName for _, d in outbox] == ["inventory.reserve", "payment.authorize", "inventory.release"]


def test_terminal_instances_leave_no_timer(store: Store, order: ProcessDefinition) -> None:
    orchestrator = Orchestrator(order, store=store, participants={"inventory": yes, "payment": yes, "shipping": yes}, clock=Clock())
    assert orchestrator.start("wf_1", {"orderId": "ord_1", "amount": 1.0}).status == "completed"
    assert store.next_due() is None and store.due(T0 + timedelta(days=365)) == []  # type: ignore[attr-defined]


def test_a_worker_round_dispatches_and_fires(store: Store, order: ProcessDefinition) -> None:
    orchestrator = Orchestrator(order, store=store, transport=DemoTransport([order]), clock=Clock(), auto_dispatch=False)
    orchestrator.start("wf_1", {"orderId": "ord_1", "amount": 1.0})
    assert worker(orchestrator, once=True) == 1
    assert orchestrator.state("wf_1").status == "completed"


def test_a_definition_is_pinned_once(store: Store, order: ProcessDefinition) -> None:
    assert store.pinned(order.fingerprint) is None
    started(store, order)
    kept = store.pinned(order.fingerprint)
    assert kept is not None and kept.name == "order-fulfillment" and kept.version == order.version
    assert kept.sources[kept.path] == order.source
    store.pin(kept)  # again: nothing changes
    assert store.pinned(order.fingerprint) == kept


def test_a_changed_definition_is_refused_or_the_pinned_one_runs(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "order_fulfillment.proc"
    path.write_text(ORDER.read_text(encoding="utf-8"), encoding="utf-8")
    original = procflow.load(path)
    started(store, original)
    path.write_text(path.read_text(encoding="utf-8").replace("within 1h", "within 2h").replace("version 1", "version 2"), encoding="utf-8")
    changed = procflow.load(path)
    assert changed.fingerprint != original.fingerprint
    reply = {"type": "inventory_reserved", "correlationId": "ord_1"}
    with pytest.raises(ProcflowError) as refused:
        Orchestrator(changed, store=store, clock=Clock()).receive(reply)
    text = str(refused.value)
    assert "started with `order-fulfillment` version 1" in text and "version 2" in text and "compile_pinned" in text
    assert store.get("wf_1").version == 1  # type: ignore[union-attr]
    pinned = Orchestrator(changed, store=store, clock=Clock(), compile_pinned=procflow.load_text, auto_dispatch=False)
    state = pinned.deliver(reply)
    assert state.status == "waiting_for_payment" and state.timeoutAt == "2026-01-01T10:00:00Z"  # the pinned hour


# ---------------------------------------------------------------- claims: many workers, each command once


def test_a_claimed_command_is_left_to_its_worker(store: Store, order: ProcessDefinition) -> None:
    started(store, order, "wf_1", "ord_1")
    started(store, order, "wf_2", "ord_2")
    first = store.claim_outbox("worker-a", limit=1)
    assert [d.command.workflowId for _, d in first] == ["wf_1"]
    second = store.claim_outbox("worker-b")
    assert [d.command.workflowId for _, d in second] == ["wf_2"]
    assert store.claim_outbox("worker-c") == []
    assert len(store.outbox()) == 2  # claimed is not sent
    store.mark_sent(first[0][0])
    store.mark_sent(second[0][0])
    assert store.outbox() == [] and store.claim_outbox("worker-c") == []


def test_commands_a_worker_queues_are_born_claimed_by_it(store: Store, order: ProcessDefinition) -> None:
    """A worker that will send what its transition queues holds it from the transition's own
    commit: no other worker can take it, and it needs no claim of its own."""
    started(store, order, "wf_1", "ord_1")  # queued for any worker
    sender = Orchestrator(order, store=store, clock=Clock(), auto_dispatch=True, worker_id="sender", transport=DemoTransport([]))
    transition = engine.start(order, "wf_2", {"orderId": "ord_2", "amount": 1.0}, T0)
    store.save(transition.state, None, transition.dispatches, claim_for=sender.worker_id)
    assert [d.command.workflowId for _, d in store.held_outbox("sender")] == ["wf_2"]
    assert store.held_outbox("another") == []
    taken = store.claim_outbox("another")
    assert [d.command.workflowId for _, d in taken] == ["wf_1"]  # not the one born claimed
    assert len(store.outbox()) == 2
    held = store.held_outbox("sender")
    store.mark_sent(held[0][0])
    assert store.held_outbox("sender") == [] and [d.command.workflowId for _, d in store.outbox()] == ["wf_1"]


def test_a_claim_whose_lease_ran_out_is_taken_by_another_worker(store: Store, order: ProcessDefinition) -> None:
    started(store, order)
    [(outbox_id, _)] = store.claim_outbox("dies", lease=0.2)
    assert store.claim_outbox("waits") == []
    time.sleep(0.3)
    [(again, _)] = store.claim_outbox("takes over")
    assert again == outbox_id
    assert store.claim_outbox("dies") == []  # the one that died does not get it back


def test_a_worker_takes_back_its_own_commands_when_their_lease_runs_short(store: Store, order: ProcessDefinition) -> None:
    # `held_outbox` hands back a command only while at least half a lease is left; with less,
    # the worker's own `claim_outbox` takes it again and renews the lease (`Orchestrator.pump`
    # reads a slow batch again this way). No other worker may take it meanwhile.
    started(store, order, "wf_1", "ord_1")
    started(store, order, "wf_2", "ord_2")
    claimed = store.claim_outbox("slow", lease=HELD_LEASE_LEFT - 5)  # less than half a lease left
    assert len(claimed) == 2
    assert store.held_outbox("slow") == []
    assert store.claim_outbox("another") == []
    assert store.claim_outbox("slow") == claimed  # the same commands, in order, for a whole lease now
    assert store.held_outbox("slow") == claimed
    assert store.claim_outbox("another") == []


def test_a_worker_restarted_under_its_name_takes_back_its_claims_at_once(backend: Backend, order: ProcessDefinition) -> None:
    store = backend.open()
    started(store, order)
    moment = T0 + timedelta(seconds=30)
    [(outbox_id, _)] = store.claim_outbox("worker-1")
    assert store.claim_due(moment, "worker-1") == ["wf_1"]
    # worker-1 dies holding both; it comes back under the same name, another worker beside it.
    other = Orchestrator(order, store=backend.open(), clock=Clock(moment), auto_dispatch=False, worker_id="worker-2")
    assert other.tick(moment) == [] and other.store.claim_outbox("worker-2") == []
    again = Orchestrator(order, store=backend.open(), clock=Clock(moment), auto_dispatch=False, worker_id="worker-1")
    [fired] = again.tick(moment)
    assert fired.workflowId == "wf_1"
    assert [i for i, _ in store.claim_outbox("worker-1")][:1] == [outbox_id]


def test_a_released_claim_can_be_taken_at_once(store: Store, order: ProcessDefinition) -> None:
    started(store, order)
    [(outbox_id, _)] = store.claim_outbox("gives up")
    store.release("someone else", outbox_ids=[outbox_id])  # only the holder can release it
    assert store.claim_outbox("other") == []
    store.release("gives up", outbox_ids=[outbox_id])
    assert [i for i, _ in store.claim_outbox("other")] == [outbox_id]


def test_a_due_timer_is_claimed_by_one_worker(store: Store, order: ProcessDefinition) -> None:
    started(store, order, "wf_1", "ord_1")
    started(store, order, "wf_2", "ord_2")
    moment = T0 + timedelta(seconds=30)
    assert store.claim_due(T0, "worker-a") == []  # nothing due yet
    assert store.claim_due(moment, "worker-a", limit=1) == ["wf_1"]
    assert store.claim_due(moment, "worker-b") == ["wf_2"]
    assert store.claim_due(moment, "worker-c") == []
    assert store.due(moment) == ["wf_1", "wf_2"]  # claimed is still due
    store.release("worker-b", workflow_ids=["wf_2"])
    assert store.claim_due(moment, "worker-c") == ["wf_2"]


def test_a_saved_transition_frees_the_timer_it_replaced(store: Store, order: ProcessDefinition) -> None:
    started(store, order)
    moment = T0 + timedelta(seconds=30)
    assert store.claim_due(moment, "worker-a") == ["wf_1"]
    row = store.get("wf_1")
    assert row is not None
    retried = engine.advance(order, row.state, moment)  # timeout: retry after a backoff
    store.save(retried.state, row.version, retried.dispatches)
    later = T0 + timedelta(days=1)
    assert store.claim_due(later, "worker-b") == ["wf_1"]  # the new timer is nobody's yet


def test_two_orchestrators_tick_each_due_timer_once(backend: Backend, order: ProcessDefinition) -> None:
    one, two = backend.open(), backend.open()
    for i in range(5):
        started(one, order, f"wf_{i}", f"ord_{i}")
    moment = T0 + timedelta(seconds=30)
    first = Orchestrator(order, store=one, clock=Clock(moment), auto_dispatch=False, worker_id="one")
    second = Orchestrator(order, store=two, clock=Clock(moment), auto_dispatch=False, worker_id="two")
    first.store.claim_due(moment, "one", limit=2)  # `one` holds two of them
    fired = [s.workflowId for s in second.tick(moment)]
    assert sorted(fired) == ["wf_2", "wf_3", "wf_4"]
    assert second.tick(moment) == []  # fired: their next timers are later
    first.store.release("one", workflow_ids=["wf_0", "wf_1"])
    assert sorted(s.workflowId for s in first.tick(moment)) == ["wf_0", "wf_1"]


# ---------------------------------------------------------------- what the durable stores add


def test_a_business_key_belongs_to_one_instance(durable: Backend, order: ProcessDefinition) -> None:
    store = durable.open()
    started(store, order, "wf_1", "ord_1")
    with pytest.raises(StoreError, match=r"dedup key ord_1:inventory.reserve:reserve_inventory#1, which instance wf_1 already used"):
        started(store, order, "wf_2", "ord_1")
    assert store.get("wf_2") is None and len(store.outbox()) == 1


def test_the_same_instance_asking_for_a_key_again_sends_it_again(durable: Backend, order: ProcessDefinition) -> None:
    store = durable.open()
    started(store, order)
    row = store.get("wf_1")
    assert row is not None
    [(first_id, dispatch)] = store.outbox()
    store.mark_sent(first_id)
    store.save(row.state, row.version, [dispatch])
    [entry] = store.outbox_of("wf_1")
    assert entry.emitted == 2 and entry.sent_at is None and entry.id > first_id


def test_operators_read_summaries_commands_and_versions(durable: Backend, order: ProcessDefinition) -> None:
    store: DurableStore = durable.open()
    orchestrator = started(store, order, "wf_1", "ord_1")
    orchestrator.transport = procflow.InProcessTransport({"inventory": yes, "payment": yes, "shipping": yes})
    orchestrator.pump()
    started(store, order, "wf_2", "ord_2")
    [done] = store.summaries("completed")
    assert (done.workflow_id, done.process, done.status, done.version) == ("wf_1", "order-fulfillment", "completed", 4)
    [waiting] = store.summaries("waiting_for_inventory")
    assert waiting.next_action == "reserve_inventory" and waiting.timeout_at == "2026-01-01T09:00:30Z"
    assert waiting.updated_at == "2026-01-01T09:00:00Z"
    assert [s.workflow_id for s in store.summaries()] == ["wf_1", "wf_2"]
    entries = store.outbox_of("wf_1")
    assert [e.dispatch.command.commandName for e in entries] == ["inventory.reserve", "payment.authorize", "shipping.create"]
    assert all(e.sent_at and e.emitted == 1 and e.created_at == "2026-01-01T09:00:00Z" for e in entries)
    assert store.version_of("wf_1") == 4 and store.version_of("nobody") is None
    assert [p.fingerprint for p in store.pinned_definitions()] == [order.fingerprint]


def test_a_store_opened_again_holds_what_was_written(durable: Backend, order: ProcessDefinition) -> None:
    store = durable.open()
    orchestrator = started(store, order)
    orchestrator.receive({"type": "inventory_reserved", "correlationId": "ord_1", "messageId": "m1"})
    before = store.get("wf_1")
    store.close()
    with durable.open(create=False) as again:
        assert again.get("wf_1") == before and again.seen("m1")
        assert again.pinned(order.fingerprint) is not None
        assert [d.dedupKey for _, d in again.outbox()] == [
            "ord_1:inventory.reserve:reserve_inventory#1", "ord_1:payment.authorize:authorize_payment#1",
        ]
        assert again.location == store.location


def test_a_closed_store_says_so(durable: Backend) -> None:
    store = durable.open()
    store.close()
    with pytest.raises(StoreError, match="is closed"):
        store.get("wf_1")
    store.close()  # twice: nothing


def test_a_read_only_command_does_not_create_a_store(durable: Backend) -> None:
    with pytest.raises(StoreError, match="there is no (procflow )?store"):
        durable.open(create=False)
    store = durable.open()  # now it is made
    store.close()
    durable.open(create=False).close()


def test_an_instance_of_a_newer_state_schema_is_refused(durable: Backend, order: ProcessDefinition) -> None:
    store = durable.open()
    started(store, order)
    state = json.loads(durable.raw(f"SELECT state FROM {durable.table('instances')}", ())[0][0])
    durable.raw(f"UPDATE {durable.table('instances')} SET state = %s", (json.dumps({**state, "schemaVersion": 99}),))
    with pytest.raises(StoreError, match="state schema 99, newer than this procflow reads"):
        store.get("wf_1")


# ---------------------------------------------------------------- versioned schemas


def _schema_of(backend: Backend) -> Any:
    return sqlite_schema if backend.kind == "sqlite" else postgres_schema


def _set_schema_version(backend: Backend, version: int) -> None:
    backend.raw(f"UPDATE {backend.table('meta')} SET value = %s WHERE key = 'schema_version'", (str(version),))


def test_a_new_store_has_the_current_schema(durable: Backend) -> None:
    store = durable.open()
    assert store.schema_version == _schema_of(durable).current_schema_version()


def test_a_store_of_a_newer_schema_is_refused(durable: Backend, order: ProcessDefinition) -> None:
    store = durable.open()
    started(store, order)
    store.close()
    newer = _schema_of(durable).current_schema_version() + 1
    _set_schema_version(durable, newer)
    with pytest.raises(StoreError) as refused:
        durable.open()
    message = str(refused.value)
    assert f"schema version {newer}" in message and "newer procflow" in message and "Upgrade procflow" in message
    assert "Nothing was written" in message
    assert durable.raw(f"SELECT value FROM {durable.table('meta')} WHERE key = 'schema_version'", ()) == [(str(newer),)]


def test_migrations_run_in_order_and_keep_the_data(durable: Backend, order: ProcessDefinition, monkeypatch: pytest.MonkeyPatch) -> None:
    store = durable.open()
    started(store, order)
    store.close()
    schema = _schema_of(durable)
    current = schema.current_schema_version()
    ran: list[int] = []
    notes, instances = durable.table("notes"), durable.table("instances")

    def backfill(connection: Any) -> None:
        ran.append(current + 2)
        connection.execute(f"UPDATE {notes} SET text = 'backfilled'".encode() if durable.kind == "postgres" else f"UPDATE {notes} SET text = 'backfilled'")

    later = (
        *schema.MIGRATIONS,
        (current + 1, (f"CREATE TABLE {notes} (workflow_id TEXT PRIMARY KEY, text TEXT)", f"INSERT INTO {notes} SELECT workflow_id, '' FROM {instances}")),
        (current + 2, (backfill,)),
    )
    monkeypatch.setattr(schema, "MIGRATIONS", later)
    schema.tables_at.cache_clear()
    try:
        with durable.open() as migrated:
            assert migrated.schema_version == current + 2 and ran == [current + 2]
            row = migrated.get("wf_1")
            assert row is not None and row.state.status == "waiting_for_inventory"
        assert durable.raw(f"SELECT text FROM {notes}", ()) == [("backfilled",)]
        with durable.open():  # already current: nothing runs again
            assert ran == [current + 2]
    finally:
        schema.tables_at.cache_clear()


def test_a_failing_migration_leaves_the_store_as_it_was(durable: Backend, order: ProcessDefinition, monkeypatch: pytest.MonkeyPatch) -> None:
    store = durable.open()
    started(store, order)
    store.close()
    schema = _schema_of(durable)
    current = schema.current_schema_version()
    later = (*schema.MIGRATIONS, (current + 1, (f"CREATE TABLE {durable.table('notes')} (x TEXT)", "THIS IS NOT SQL")))
    monkeypatch.setattr(schema, "MIGRATIONS", later)
    schema.tables_at.cache_clear()
    try:
        with pytest.raises(StoreError):
            durable.open()
    finally:
        schema.tables_at.cache_clear()
    monkeypatch.undo()
    with durable.open() as again:
        assert again.schema_version == current and again.version_of("wf_1") == 1
    names = (
        durable.raw("SELECT name FROM sqlite_master WHERE type = 'table'", ()) if durable.kind == "sqlite"
        else durable.raw("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()", ())
    )
    assert durable.table("notes") not in {n for (n,) in names}


def test_a_store_written_before_the_logs_had_rows_opens_and_finishes_its_instances(
    durable: Backend, order: ProcessDefinition, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before store schema 6 (SQLite) / 4 (PostgreSQL) an instance row held its completions and
    # milestones in its state JSON, and before 7 / 5 its input. Such a row is read as it is, and
    # its next transition moves them to rows and a column of their own.
    schema = _schema_of(durable)
    memory = InMemoryStore()
    orchestrator = Orchestrator(order, store=memory, clock=Clock(), auto_dispatch=False)
    orchestrator.start("wf_1", {"orderId": "ord_1", "amount": 10.0})
    for reply in ("inventory_reserved", "payment_authorized"):
        orchestrator.receive({"type": reply, "correlationId": "ord_1"})
    before = orchestrator.state("wf_1")
    assert len(before.completed) == len(before.completedSteps) == 2
    with monkeypatch.context() as older:
        older.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:-1])
        schema.tables_at.cache_clear()
        durable.open().close()
        schema.tables_at.cache_clear()
    old_json = dataclasses.replace(before, history=()).model_dump_json()  # what the store wrote then
    columns = "workflow_id, process, fingerprint, status, version, history_count, updated, state"
    values: tuple[Any, ...] = ("wf_1", before.type, before.definition.fingerprint, before.status, 3, 3, 1.0, old_json)
    if durable.kind == "postgres":
        columns += ", updated_at"
        values += (before.updatedAt,)
    durable.raw(f"INSERT INTO {durable.table('instances')} ({columns}) VALUES ({', '.join(['%s'] * len(values))})", values)
    for entry in before.history:
        durable.raw(f"INSERT INTO {durable.table('history')} (workflow_id, seq, entry) VALUES (%s, %s, %s)",
                    ("wf_1", entry.seq, entry.model_dump_json()))
    durable.raw(f"INSERT INTO {durable.table('correlations')} (process, correlation_id, workflow_id) VALUES (%s, %s, %s)",
                (before.type, "ord_1", "wf_1"))
    store = durable.open()
    assert store.schema_version == schema.current_schema_version()
    kept = store.get("wf_1")
    assert kept is not None and kept.version == 3 and kept.state == before
    loaded = store.load("wf_1")
    assert loaded is not None and tuple(loaded.state.completedSteps) == ("inventory_reserved", "payment_authorized")
    durable_orchestrator = Orchestrator(order, store=store, clock=Clock(), auto_dispatch=False)
    durable_orchestrator.receive({"type": "shipment_created", "correlationId": "ord_1"})
    after = store.get("wf_1")
    assert after is not None and after.state.status == "completed"
    assert after.state.completedSteps == ("inventory_reserved", "payment_authorized", "shipment_created")
    assert [c.step for c in after.state.completed] == ["reserve_inventory", "authorize_payment", "create_shipment"]
    [(text, kept_input)] = durable.raw(f"SELECT state, input FROM {durable.table('instances')}", ())
    assert json.loads(text)["completedSteps"] == [] and json.loads(text)["completed"] == []
    # Its input too moved out of the JSON, into the column a row written now has from the start.
    assert json.loads(text)["input"] == {} and json.loads(kept_input) == {"orderId": "ord_1", "amount": 10.0}
    # All of them kept with the history row of the transition that moved them.
    assert durable.raw(f"SELECT seq, completed_steps FROM {durable.table('history')} WHERE completed_steps IS NOT NULL", ()) == [
        (4, '["inventory_reserved","payment_authorized","shipment_created"]'),
    ]


def test_the_same_state_is_kept_as_the_same_text_in_both_stores(tmp_path: Path, postgres_url: str, order: ProcessDefinition) -> None:
    with SqliteStore(tmp_path / "store.sqlite") as lite, PostgresStore(postgres_url) as pg:
        for store in (lite, pg):
            started(store, order).receive(Reply(type="inventory_reserved", correlationId="ord_1", messageId="m1"))
        assert lite.get("wf_1") == pg.get("wf_1")
    state_lite = _sqlite_raw(tmp_path / "store.sqlite")("SELECT state FROM instances", ())
    state_pg = _postgres_raw(postgres_url)("SELECT state FROM procflow_instances", ())
    assert state_lite == state_pg


# ---------------------------------------------------------------- the states a store keeps in memory


def _without_memory(durable: Backend, request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """The same store as `durable`'s, opened with no state kept in memory: every load decodes the row."""
    if durable.kind == "sqlite":
        store: Any = SqliteStore(tmp_path / "store.sqlite", recent=0)
    else:
        store = PostgresStore(request.getfixturevalue("postgres_url"), recent=0)
    durable.opened.append(store)
    return store


def _same_as_the_row(store: Any, decoding: Any, workflow_id: str) -> Any:
    kept, read = store.load(workflow_id), decoding.load(workflow_id)
    assert kept is not None and read is not None and kept.version == read.version
    assert _without_logs(kept.state) == _without_logs(read.state)
    for log in ("history", "completed", "completedSteps"):
        assert len(getattr(kept.state, log)) == len(getattr(read.state, log)), log
    return kept


def test_a_state_handed_back_from_memory_is_the_row_and_follows_other_writers(
    durable: Backend, order: ProcessDefinition, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # A worker's store hands the state it wrote back to the instance's next transition without
    # decoding the row again; what it hands back must be what the row holds, and a row that
    # another worker moved since must be read anew.
    store = durable.open()
    decoding = _without_memory(durable, request, tmp_path)
    mine = started(store, order)
    other = Orchestrator(order, store=decoding, clock=Clock(), auto_dispatch=False, compile_pinned=procflow.load_text)
    _same_as_the_row(store, decoding, "wf_1")
    mine.receive({"type": "inventory_reserved", "correlationId": "ord_1", "messageId": "m1"})
    _same_as_the_row(store, decoding, "wf_1")
    other.receive({"type": "payment_authorized", "correlationId": "ord_1", "messageId": "m2"})  # another worker
    row = _same_as_the_row(store, decoding, "wf_1")
    assert row.version == 3 and row.state.status == "waiting_for_shipping"
    mine.receive({"type": "shipment_created", "correlationId": "ord_1", "messageId": "m3"})
    whole = store.get("wf_1")
    assert whole is not None and whole.version == 4 and whole.state.status == "completed"
    assert [(e.seq, e.event) for e in whole.state.history] == [(1, "started"), (2, "reply"), (3, "reply"), (4, "reply")]
    assert whole.state.completedSteps == ("inventory_reserved", "payment_authorized", "shipment_created")


def test_a_write_that_failed_leaves_the_state_in_memory_as_the_row(
    durable: Backend, order: ProcessDefinition, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    store = durable.open()
    decoding = _without_memory(durable, request, tmp_path)
    started(store, order)
    before = store.load("wf_1")
    assert before is not None
    step = engine.deliver(order, before.state, Reply(type="inventory_reserved", correlationId="ord_1"), T0)
    # Its command's dedup key is another instance's: the whole transaction is refused.
    taken = dataclasses.replace(step.dispatches[0], dedupKey="ord_2:inventory.reserve:reserve_inventory#1")
    started(store, order, "wf_2", "ord_2")
    with pytest.raises(StoreError, match="already used"):
        store.save(step.state, before.version, [taken])
    row = _same_as_the_row(store, decoding, "wf_1")
    assert row.version == 1 and row.state.status == "waiting_for_inventory"
    with pytest.raises(ConcurrencyError):  # a stale write changes nothing either
        store.save(step.state, 0, step.dispatches)
    assert _same_as_the_row(store, decoding, "wf_1").version == 1


def _wide(branches: int) -> ProcessDefinition:
    lines = ["process wide {", "  participant worker", "  parallel fan {"]
    lines += [f"    branch b_{i} {{ step step_{i} {{ send worker.do_{i} await done_{i} within 1d }} }}" for i in range(branches)]
    lines += ["  }", "}"]
    return procflow.load_text("\n".join(lines))


def test_a_wide_block_leaves_the_same_record_with_its_states_kept_in_memory_or_not(
    durable: Backend, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # Forty branches: the state a transition is handed back keeps the engine's indexes of its
    # waits and tokens (a decoded row's are tuples); every step must still leave the same record.
    wide = _wide(40)
    store = durable.open()
    decoding = _without_memory(durable, request, tmp_path)
    runs = {}
    for name, where in (("kept", store), ("decoded", decoding)):
        orchestrator = Orchestrator(wide, store=where, clock=Clock(), auto_dispatch=False, compile_pinned=procflow.load_text)
        orchestrator.start(f"wf_{name}", {})
        runs[name] = orchestrator
    for i in reversed(range(40)):
        for name, orchestrator in runs.items():
            orchestrator.receive({"type": f"done_{i}", "correlationId": f"wf_{name}"})
        kept, decoded = store.get("wf_kept"), decoding.get("wf_decoded")
        assert kept is not None and decoded is not None and kept.version == decoded.version
        assert kept.state.status == decoded.state.status and kept.state.nextAction == decoded.state.nextAction
        assert kept.state.tokens == decoded.state.tokens
        # (each instance's waits carry its own correlation id: its workflow id)
        assert [dataclasses.replace(w, correlationId="") for w in kept.state.waits] == [
            dataclasses.replace(w, correlationId="") for w in decoded.state.waits
        ]
        assert [e.status for e in kept.state.history] == [e.status for e in decoded.state.history]
    assert kept.state.status == "completed"


# ---------------------------------------------------------------- the waits and tokens of a wide block, in rows of their own


def _item_rows(durable: Backend, workflow_id: str) -> dict[str, int]:
    rows = durable.raw(f"SELECT kind, count(*) FROM {durable.table('state_items')} WHERE workflow_id = %s GROUP BY kind", (workflow_id,))
    return {str(kind): int(count) for kind, count in rows}


def _head(durable: Backend, workflow_id: str) -> tuple[int, dict[str, Any]]:
    [(items, text)] = durable.raw(f"SELECT items, state FROM {durable.table('instances')} WHERE workflow_id = %s", (workflow_id,))
    return int(items), json.loads(text)


def test_the_waits_and_tokens_of_a_wide_block_are_rows_a_transition_changes_one_by_one(durable: Backend) -> None:
    # Forty branches wait: each wait and each token is a row of its own, the instance row's
    # JSON holds neither, and a reply removes its wait's row instead of writing the list again.
    store = durable.open()
    orchestrator = Orchestrator(_wide(40), store=store, clock=Clock(), auto_dispatch=False, compile_pinned=procflow.load_text)
    orchestrator.start("wf_1", {})
    assert _item_rows(durable, "wf_1") == {"waits": 40, "tokens": 40}
    items, head = _head(durable, "wf_1")
    assert items == 80 and head["waits"] == [] and head["tokens"] == []
    written = {}
    for i in range(30):
        orchestrator.receive({"type": f"done_{i}", "correlationId": "wf_1"})
        rows = _item_rows(durable, "wf_1")
        assert rows["waits"] == 39 - i and _head(durable, "wf_1")[0] == sum(rows.values())
        written[i] = rows
    # Ten left: still indexed (below eight they are a tuple again); then seven, kept in the JSON.
    for i in range(30, 33):
        orchestrator.receive({"type": f"done_{i}", "correlationId": "wf_1"})
    items, head = _head(durable, "wf_1")
    assert items == 0 and _item_rows(durable, "wf_1") == {} and len(head["waits"]) == 7
    for i in range(33, 40):
        orchestrator.receive({"type": f"done_{i}", "correlationId": "wf_1"})
    final = store.get("wf_1")
    assert final is not None and final.state.status == "completed" and final.state.waits == ()


def test_a_wide_block_read_anew_at_every_transition_leaves_the_record_of_one_run_in_memory(
    durable: Backend, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # Every transition from a store object that kept nothing (another worker's, or a restart):
    # the waits and tokens are read from their rows, indexed once, and written whole again.
    wide = _wide(24)
    memory = Orchestrator(wide, store=InMemoryStore(), clock=Clock(), auto_dispatch=False)
    memory.start("wf_1", {})
    store = durable.open()
    Orchestrator(wide, store=store, clock=Clock(), auto_dispatch=False, compile_pinned=procflow.load_text).start("wf_1", {})
    for i in (5, 0, 23, 11, 12, 1, 2, 3, 4, 6, 7, 8, 9, 10, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22):
        fresh = _without_memory(durable, request, tmp_path)
        Orchestrator(wide, store=fresh, clock=Clock(), auto_dispatch=False, compile_pinned=procflow.load_text).receive(
            {"type": f"done_{i}", "correlationId": "wf_1"}
        )
        memory.receive({"type": f"done_{i}", "correlationId": "wf_1"})
        fresh.close()
        kept, expected = store.get("wf_1"), memory.store.get("wf_1")
        assert kept is not None and expected is not None
        assert kept.state.to_json() == expected.state.to_json(), i
    assert kept.state.status == "completed"


def test_a_worker_with_many_wide_instances_keeps_no_more_than_the_weight_allowed(durable: Backend) -> None:
    # A count of instances alone would let a worker hold 64 states of ten thousand branches
    # (some 700 MB); the states kept weigh at most `RecentStates.weight` in all, the least
    # recently used let go first, and every instance still leaves the record of one run.
    wide = _wide(30)  # a started state weighs 61: itself, 30 waits, 30 tokens
    memory = Orchestrator(wide, store=InMemoryStore(), clock=Clock(), auto_dispatch=False)
    store = durable.open()
    kept = store._recent
    kept.weight = 150  # two such states, not three
    orchestrator = Orchestrator(wide, store=store, clock=Clock(), auto_dispatch=False, compile_pinned=procflow.load_text)
    instances = [f"wf_{n}" for n in range(4)]
    for workflow_id in instances:
        orchestrator.start(workflow_id, {})
        memory.start(workflow_id, {})
        assert kept.held_weight <= 150
    assert [kept.version(w) for w in instances] == [None, None, 1, 1]  # the two started last
    for i in range(30):
        for workflow_id in instances:  # each reply to the instance held least recently: read from its rows
            orchestrator.receive({"type": f"done_{i}", "correlationId": workflow_id})
            memory.receive({"type": f"done_{i}", "correlationId": workflow_id})
            assert kept.held_weight <= 150
            assert kept.version(workflow_id) == 2 + i  # the instance just written is kept
    for workflow_id in instances:
        _same_record(store, memory, workflow_id, workflow_id)
        assert memory.store.get(workflow_id).state.status == "completed"  # type: ignore[union-attr]


def test_a_state_heavier_than_the_weight_allowed_is_still_kept_alone(durable: Backend) -> None:
    # The latest transition's state is kept whatever it weighs: a worker answering one very wide
    # block still skips decoding the row it just wrote.
    wide = _wide(30)
    store = durable.open()
    kept = store._recent
    kept.weight = 10
    orchestrator = Orchestrator(wide, store=store, clock=Clock(), auto_dispatch=False, compile_pinned=procflow.load_text)
    orchestrator.start("wf_1", {})
    orchestrator.start("wf_2", {})
    assert (kept.version("wf_1"), kept.version("wf_2"), kept.held_weight) == (None, 1, 61)
    orchestrator.receive({"type": "done_0", "correlationId": "wf_1"})
    assert (kept.version("wf_1"), kept.version("wf_2"), kept.held_weight) == (2, None, 59)  # (one wait and one token fewer)
    kept.forget("wf_1")
    assert kept.held_weight == 0


# ---------------------------------------------------------------- workers taking turns on one wide instance


def _worker(durable: Backend, store: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[ItemRows]]:
    """Another store object on `store`'s database (another worker's), keeping states in memory,
    and the item rows each of its transitions writes."""
    other: Any = SqliteStore(store.path) if durable.kind == "sqlite" else PostgresStore(store.url)
    durable.opened.append(other)
    written: list[ItemRows] = []
    write = other._write_items

    def spied(connection: Any, workflow_id: str, version: int, rows: ItemRows, wide: bool) -> None:
        written.append(rows)
        write(connection, workflow_id, version, rows, wide)

    monkeypatch.setattr(other, "_write_items", spied)
    return other, written


def _catch_ups(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each attempt to bring a held state up to the row from the log did (False: the
    store read every row instead)."""
    outcomes: list[bool] = []
    catch_up = item_log.caught_up

    def spied(*args: Any, **kwargs: Any) -> Any:
        state = catch_up(*args, **kwargs)
        outcomes.append(state is not None)
        return state

    monkeypatch.setattr(item_log, "caught_up", spied)
    return outcomes


def _same_record(store: Any, memory: Orchestrator, workflow_id: str, step: object) -> None:
    kept, expected = store.get(workflow_id), memory.store.get(workflow_id)
    assert kept is not None and expected is not None
    assert kept.state.to_json() == expected.state.to_json(), step


def test_workers_taking_turns_on_a_wide_block_read_and_write_only_what_changed(
    durable: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three workers answer the replies of one 40-branch block in a random order, each after
    # another's write: a worker brings the state it holds up to the row from the log of what
    # changed (never reading the forty waits again), writes only the rows its transition
    # changed, and every step leaves the record of one run in memory.
    wide = _wide(40)
    memory = Orchestrator(wide, store=InMemoryStore(), clock=Clock(), auto_dispatch=False)
    memory.start("wf_1", {})
    store = durable.open()
    outcomes = _catch_ups(monkeypatch)
    workers = [(store, [])] + [_worker(durable, store, monkeypatch) for _ in range(2)]
    orchestrators = [
        Orchestrator(wide, store=where, clock=Clock(), auto_dispatch=False, compile_pinned=procflow.load_text) for where, _ in workers
    ]
    orchestrators[0].start("wf_1", {})
    rng = random.Random(13)
    replies = rng.sample(range(40), 40)
    turns = [rng.randrange(3) for _ in replies]
    for n, (i, turn) in enumerate(zip(replies, turns, strict=True)):
        orchestrators[turn].receive({"type": f"done_{i}", "correlationId": "wf_1"})
        memory.receive({"type": f"done_{i}", "correlationId": "wf_1"})
        _same_record(store, memory, "wf_1", (n, i, turn))
        if n == 29:  # ten branches still wait (indexed): no worker wrote a kind whole
            assert all(not rows.cleared and len(rows.written) + len(rows.deleted) <= 3 for _, written in workers[1:] for rows in written)
    assert store.get("wf_1").state.status == "completed"
    # Every turn after another worker's write is a catch-up, but a worker's first (it holds
    # nothing yet: it reads every row) and those after the waits are few again (kept in the JSON).
    expected, seen, last = 0, {0}, 0
    for n, turn in enumerate(turns):
        expected += turn != last and turn in seen and 40 - n >= 8
        seen.add(turn)
        last = turn
    assert outcomes == [True] * expected and expected > 15


def test_three_workers_at_once_on_one_wide_block_apply_every_reply_once(durable: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    # Three threads, each a worker with its own store object, answer a 60-branch block at the
    # same time, twenty replies each: their writes race (a lost race is read again, caught up
    # from the log, and decided again), and in the end every reply is applied once.
    wide = _wide(60)
    store = durable.open()
    Orchestrator(wide, store=store, clock=Clock(), auto_dispatch=False, compile_pinned=procflow.load_text).start("wf_1", {})
    outcomes = _catch_ups(monkeypatch)
    failures: list[BaseException] = []

    def answer(replies: range) -> None:
        # (a store object per thread, opened and closed in it: SQLite's connections stay in theirs)
        try:
            with SqliteStore(store.path) if durable.kind == "sqlite" else PostgresStore(store.url) as own:
                worker = Orchestrator(wide, store=own, clock=Clock(), auto_dispatch=False, compile_pinned=procflow.load_text)
                for i in replies:
                    worker.receive({"type": f"done_{i}", "correlationId": "wf_1", "messageId": f"m{i}"})
        except BaseException as error:  # (reported below, not lost in the thread)
            failures.append(error)

    threads = [threading.Thread(target=answer, args=(range(n, 60, 3),)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []
    final = store.get("wf_1")
    assert final is not None and final.state.status == "completed" and final.version == 61
    assert sorted(final.state.completedSteps) == sorted(f"done_{i}" for i in range(60))
    assert sorted(e.message["type"] for e in final.state.history if e.message is not None) == sorted(f"done_{i}" for i in range(60))
    # (how many catch-ups depends on how the threads interleave; none needs the row read whole,
    # not even one that lost a race and holds the state as it read it)
    assert False not in outcomes, outcomes


def _two_workers(
    durable: Backend, monkeypatch: pytest.MonkeyPatch, branches: int
) -> tuple[Orchestrator, Any, Orchestrator, Orchestrator, list[bool]]:
    """A block of `branches` started in memory and, by the first of two workers, on `durable`;
    the workers, and whether each catch-up did (`_catch_ups`)."""
    wide = _wide(branches)
    memory = Orchestrator(wide, store=InMemoryStore(), clock=Clock(), auto_dispatch=False)
    memory.start("wf_1", {})
    store = durable.open()
    other, _ = _worker(durable, store, monkeypatch)
    outcomes = _catch_ups(monkeypatch)
    one, two = (Orchestrator(wide, store=s, clock=Clock(), auto_dispatch=False, compile_pinned=procflow.load_text) for s in (store, other))
    one.start("wf_1", {})
    return memory, store, one, two, outcomes


def test_a_wide_instance_written_before_the_log_is_taken_up_after_the_upgrade(durable: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    # A store of the schema before the log (no `item_changes`, no `shown` on the rows) with a
    # 30-branch instance waiting: this procflow migrates it on open, and two workers taking
    # turns on it end where a run in memory ends, catching up once each holds a state.
    wide = _wide(30)
    memory = Orchestrator(wide, store=InMemoryStore(), clock=Clock(), auto_dispatch=False)
    memory.start("wf_1", {})
    with durable.open() as before:
        Orchestrator(wide, store=before, clock=Clock(), auto_dispatch=False, compile_pinned=procflow.load_text).start("wf_1", {})
    previous = _schema_of(durable).current_schema_version() - 1
    durable.raw(f"DROP TABLE {durable.table('item_changes')}", ())
    durable.raw(f"ALTER TABLE {durable.table('state_items')} DROP COLUMN shown", ())
    durable.raw(f"UPDATE {durable.table('meta')} SET value = %s WHERE key = 'schema_version'", (str(previous),))
    store = durable.open()
    assert store.schema_version == previous + 1
    other, _ = _worker(durable, store, monkeypatch)
    outcomes = _catch_ups(monkeypatch)
    one, two = (Orchestrator(wide, store=s, clock=Clock(), auto_dispatch=False, compile_pinned=procflow.load_text) for s in (store, other))
    for i in range(30):
        (one if i % 2 else two).receive({"type": f"done_{i}", "correlationId": "wf_1"})
        memory.receive({"type": f"done_{i}", "correlationId": "wf_1"})
        _same_record(store, memory, "wf_1", i)
    assert outcomes.count(True) >= 15, outcomes


def test_a_version_missing_from_the_log_makes_a_worker_read_every_row(durable: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    # A writer that did not log its changes (a worker of an older procflow during an upgrade):
    # the worker behind it cannot trust the log, reads the rows whole, and goes on right.
    memory, store, one, two, outcomes = _two_workers(durable, monkeypatch, 30)
    for n, (worker_, i) in enumerate([(two, 0), (one, 1), (two, 2), (one, 3), (two, 4)]):
        if n == 3:
            durable.raw(f"DELETE FROM {durable.table('item_changes')} WHERE workflow_id = 'wf_1' AND version = 4", ())
        worker_.receive({"type": f"done_{i}", "correlationId": "wf_1"})
        memory.receive({"type": f"done_{i}", "correlationId": "wf_1"})
        _same_record(store, memory, "wf_1", i)
    assert outcomes == [True, True, False, True]


def test_a_damaged_row_a_worker_catches_up_with_is_named_and_changes_nothing(durable: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each branch two steps: a reply moves its branch's token on and parks a new wait (rows written).
    lines = ["process wide {", "  participant worker", "  parallel fan {"]
    lines += [f"    branch b_{i} {{ step a_{i} {{ send worker.a_{i} await a_done_{i} }} step b_{i} {{ send worker.b_{i} await b_done_{i} }} }}" for i in range(20)]
    wide = procflow.load_text("\n".join([*lines, "  }", "}"]))
    store = durable.open()
    other, _ = _worker(durable, store, monkeypatch)
    one, two = (Orchestrator(wide, store=s, clock=Clock(), auto_dispatch=False, compile_pinned=procflow.load_text) for s in (store, other))
    one.start("wf_1", {})
    two.receive({"type": "a_done_0", "correlationId": "wf_1"})
    one.receive({"type": "a_done_1", "correlationId": "wf_1"})  # (its rows changed: what the second worker reads next)
    [(key,)] = durable.raw(
        f"SELECT c.key FROM {durable.table('item_changes')} c JOIN {durable.table('state_items')} s ON s.workflow_id = c.workflow_id "
        "AND s.kind = c.kind AND s.key = c.key WHERE c.workflow_id = 'wf_1' AND c.version = 3 AND c.kind = 'tokens'", ()
    )
    durable.raw(f"UPDATE {durable.table('state_items')} SET item = '{{\"id\": ' WHERE workflow_id = 'wf_1' AND kind = 'tokens' AND key = %s", (key,))
    with pytest.raises(StoreError, match=r"one of the tokens of instance wf_1 in .* is not valid JSON"):
        two.receive({"type": "a_done_2", "correlationId": "wf_1"})
    assert store.version_of("wf_1") == 3


def test_the_log_of_changes_keeps_the_last_versions_only(durable: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    # Trimmed as it goes (here to 8 versions, every 4): a worker further behind reads every row.
    for module in (item_log, postgres_store):
        monkeypatch.setattr(module, "CHANGES_KEPT", 8)
    monkeypatch.setattr(item_log, "CHANGES_TRIMMED_EVERY", 4)
    memory, store, one, two, outcomes = _two_workers(durable, monkeypatch, 40)
    two.receive({"type": "done_0", "correlationId": "wf_1"})  # (read whole: holds version 2 from now on)
    memory.receive({"type": "done_0", "correlationId": "wf_1"})
    for i in range(1, 20):
        one.receive({"type": f"done_{i}", "correlationId": "wf_1"})
        memory.receive({"type": f"done_{i}", "correlationId": "wf_1"})
    versions = durable.raw(f"SELECT DISTINCT version FROM {durable.table('item_changes')} WHERE workflow_id = 'wf_1'", ())
    assert 8 <= len(versions) <= 12 and min(int(v) for v, in versions) > 20 - 12
    two.receive({"type": "done_20", "correlationId": "wf_1"})  # 19 versions behind: read whole
    memory.receive({"type": "done_20", "correlationId": "wf_1"})
    _same_record(store, memory, "wf_1", 20)
    assert outcomes == [True]  # (the first worker, after the second's one write; the second, too far behind, did not try)


def test_a_damaged_input_column_is_named_and_changes_nothing(durable: Backend, order: ProcessDefinition) -> None:
    store = durable.open()
    started(store, order)
    store.close()
    durable.raw(f"UPDATE {durable.table('instances')} SET input = '{{\"orderId\": ' WHERE workflow_id = 'wf_1'", ())
    with durable.open() as again:
        for read in (again.load, again.get):
            with pytest.raises(StoreError, match=r"the input of instance wf_1 in .* is not valid JSON"):
                read("wf_1")
        assert again.version_of("wf_1") == 1


def test_a_damaged_wait_row_is_named_and_changes_nothing(durable: Backend) -> None:
    store = durable.open()
    Orchestrator(_wide(20), store=store, clock=Clock(), auto_dispatch=False, compile_pinned=procflow.load_text).start("wf_1", {})
    store.close()
    durable.raw(f"UPDATE {durable.table('state_items')} SET item = '{{\"token\": ' WHERE workflow_id = 'wf_1' AND kind = 'waits' AND key = '3'", ())
    with durable.open() as again:
        with pytest.raises(StoreError, match=r"one of the waits of instance wf_1 in .* is not valid JSON"):
            again.load("wf_1")
        assert again.version_of("wf_1") == 1


# ---------------------------------------------------------------- a for-each over many items, durable



def _lines(count: int) -> dict[str, Any]:
    return {"orderId": "o1", "lines": [{"sku": f"s{i}"} for i in range(count)]}


def test_a_for_each_item_frame_is_kept_without_the_input_it_shares(durable: Backend) -> None:
    # Each item's frame reads the instance's input; kept in every frame, forty lines were kept
    # forty-one times (a thousand: a 12 MB state). The store keeps it once, and gives it back
    # to every frame, the same object, when it reads the state.
    definition = procflow.load_text(FOR_EACH)
    store = durable.open()
    orchestrator = Orchestrator(definition, store=store, clock=Clock(), auto_dispatch=False, compile_pinned=procflow.load_text)
    orchestrator.start("wf_1", _lines(40))
    orchestrator.receive({"type": "reserved", "correlationId": "o1/line/3"})
    kept = [text for (text,) in durable.raw(f"SELECT item FROM {durable.table('state_items')} WHERE kind = 'frames'", ())]
    assert len(kept) == 39 and all(json.loads(text)["input"] == {} for text in kept)
    items, head = _head(durable, "wf_1")
    # 39 items running (a frame, a token and a wait each), the run's list of items and the
    # one result so far, each a row of its own; the row's JSON holds the input once.
    assert _item_rows(durable, "wf_1") == {"frames": 39, "tokens": 39, "waits": 39, "each-items": 1, "each-results": 1}
    assert items == 119 and head["frames"] == {} and head["input"] == {}
    # The input itself is kept once, in a column written with the row (it never changes).
    [(kept_input,)] = durable.raw(f"SELECT input FROM {durable.table('instances')} WHERE workflow_id = 'wf_1'", ())
    assert json.loads(kept_input) == _lines(40)
    [run] = head["each"].values()
    assert run["items"] == [] and run["results"] == [] and run["done"] == 1
    store.close()
    with durable.open() as again:
        row = again.get("wf_1")
        assert row is not None and len(row.state.frames) == 39
        assert all(frame.input is row.state.input for frame in row.state.frames.values())
        assert again.find(None, "o1/line/40") == ["wf_1"] and again.find(None, "o1/line/3") == ["wf_1"]


@pytest.mark.parametrize("charge", ["charged", "declined"])
def test_a_wide_for_each_read_anew_at_every_transition_leaves_the_record_of_one_run_in_memory(
    durable: Backend, request: pytest.FixtureRequest, tmp_path: Path, charge: str
) -> None:
    # Twenty items, each transition made by a store object that kept nothing: frames, tokens
    # and waits read from their rows and written whole again; then declined, every line is
    # released. The same record as in memory at every step.
    definition = procflow.load_text(FOR_EACH)
    memory = Orchestrator(definition, store=InMemoryStore(), clock=Clock(), auto_dispatch=False)
    memory.start("wf_1", _lines(20))
    store = durable.open()
    Orchestrator(definition, store=store, clock=Clock(), auto_dispatch=False, compile_pinned=procflow.load_text).start("wf_1", _lines(20))
    replies = [("reserved", f"o1/line/{n}") for n in (7, 1, 20, *range(2, 7), *range(8, 20))] + [(charge, "o1")]
    while replies or memory.state("wf_1").waits:
        # (the undos, one by one, each answered under the correlation id it was sent with)
        reply, correlation = replies.pop(0) if replies else ("released", memory.state("wf_1").waits[0].correlationId)
        fresh = _without_memory(durable, request, tmp_path)
        message = {"type": reply, "correlationId": correlation}
        Orchestrator(definition, store=fresh, clock=Clock(), auto_dispatch=False, compile_pinned=procflow.load_text).receive(message)
        memory.receive(message)
        fresh.close()
        kept, expected = store.get("wf_1"), memory.store.get("wf_1")
        assert kept is not None and expected is not None
        assert kept.state.to_json() == expected.state.to_json(), (reply, correlation)
    assert kept.state.status == ("completed" if charge == "charged" else "compensated")
    assert store.find(None, "o1/line/20") == ["wf_1"]  # a durable store routes an item's key for good


@pytest.mark.parametrize("charge", ["charged", "declined"])
def test_workers_taking_turns_on_a_wide_for_each_leave_the_record_of_one_run(
    durable: Backend, monkeypatch: pytest.MonkeyPatch, charge: str
) -> None:
    # Twenty items answered by three workers in turn, then the charge (or its refusal and every
    # line's release): each worker brings its state up from the log, for-each results included.
    definition = procflow.load_text(FOR_EACH)
    memory = Orchestrator(definition, store=InMemoryStore(), clock=Clock(), auto_dispatch=False)
    memory.start("wf_1", _lines(20))
    store = durable.open()
    outcomes = _catch_ups(monkeypatch)
    workers = [store, _worker(durable, store, monkeypatch)[0], _worker(durable, store, monkeypatch)[0]]
    orchestrators = [
        Orchestrator(definition, store=where, clock=Clock(), auto_dispatch=False, compile_pinned=procflow.load_text) for where in workers
    ]
    orchestrators[0].start("wf_1", _lines(20))
    rng = random.Random(5)
    replies = [("reserved", f"o1/line/{n}") for n in rng.sample(range(1, 21), 20)] + [(charge, "o1")]
    while replies or memory.state("wf_1").waits:
        reply, correlation = replies.pop(0) if replies else ("released", memory.state("wf_1").waits[0].correlationId)
        message = {"type": reply, "correlationId": correlation}
        orchestrators[rng.randrange(3)].receive(message)
        memory.receive(message)
        _same_record(store, memory, "wf_1", (reply, correlation))
    assert store.get("wf_1").state.status == ("completed" if charge == "charged" else "compensated")
    # (once the items are few, a transition moves them back into the row's JSON: a worker
    # behind it reads the row whole, once)
    assert outcomes.count(True) >= 5 and outcomes.count(False) <= 1, outcomes


@pytest.mark.parametrize(
    ("last", "at_once", "turns"),
    [("shipment_created", 10, False), ("shipment_rejected", 10, False), ("shipment_created", 20, False),
     ("shipment_rejected", 10, True), ("shipment_created", 20, True)],
)
def test_an_order_of_thirty_lines_some_transitions_read_anew_leaves_the_record_of_one_run_in_memory(
    durable: Backend, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, last: str, at_once: int,
    turns: bool,
) -> None:
    # The sample order of many lines, thirty of them, ten at a time: each reservation's data is
    # its line's result (kept in a row of its own), items start as others end (their frames and
    # business keys are added by later transitions), one line is missing (tolerated), then the
    # shipment is created or refused (every reserved line released). Every fourth transition is
    # made by a store object that kept nothing, the others by one that keeps its states; or
    # (`turns`) three workers that keep their states take turns at random, each catching up.
    # (twenty at a time: more than INDEX_FROM frames, so the frames are rows too, and the
    # business keys of the items that start later are added by the transitions that start them)
    text = (ROOT / "processes" / "order_lines.proc").read_text().replace("in parallel at most 10", f"in parallel at most {at_once}")
    definition = procflow.load_text(text)
    order = {"orderId": "o9", "amount": 10.0, "lines": [{"sku": f"s{i}", "quantity": 1 + i % 3} for i in range(30)]}
    memory = Orchestrator(definition, store=InMemoryStore(), clock=Clock(), auto_dispatch=False)
    memory.start("wf_1", order)
    store = durable.open()
    keeping = Orchestrator(definition, store=store, clock=Clock(), auto_dispatch=False, compile_pinned=procflow.load_text)
    keeping.start("wf_1", order)
    others = [
        Orchestrator(definition, store=_worker(durable, store, monkeypatch)[0], clock=Clock(), auto_dispatch=False,
                     compile_pinned=procflow.load_text)
        for _ in range(2 if turns else 0)
    ]
    outcomes = _catch_ups(monkeypatch)
    rng = random.Random(3)
    for step in range(200):
        waits = memory.state("wf_1").waits
        if not waits:
            break
        wait = waits[-1] if step % 3 else waits[0]
        reply = {
            "reserve_line": "line_unavailable" if wait.correlationId == "o9/line/13" else "line_reserved",
            "authorize_payment": "payment_authorized", "create_shipment": last,
        }.get(wait.step, wait.expects[0])
        message = {"type": reply, "correlationId": wait.correlationId, "data": {"n": step}}
        if turns:
            rng.choice([keeping, *others]).receive(message)
        elif step % 4:  # (mostly the store that keeps its states: the items that start later are answered by it too)
            keeping.receive(message)
        else:
            fresh = _without_memory(durable, request, tmp_path)
            Orchestrator(definition, store=fresh, clock=Clock(), auto_dispatch=False, compile_pinned=procflow.load_text).receive(message)
            fresh.close()
        memory.receive(message)
        kept, expected = store.get("wf_1"), memory.store.get("wf_1")
        assert kept is not None and expected is not None
        assert kept.state.to_json() == expected.state.to_json(), (step, reply)
    final = memory.state("wf_1")
    assert final.status == ("completed" if last == "shipment_created" else "compensated"), final.status
    assert store.find("order-lines", "o9/line/30") == ["wf_1"]
    assert not turns or (outcomes.count(True) >= 15 and outcomes.count(False) <= 2), outcomes
    if last == "shipment_created":
        assert final.data["reservations"][0]["reservation"] == {"n": 0} and len(final.data["reservations"]) == 30


def test_an_items_undo_is_routed_by_the_items_key_after_the_for_each_ended(backend: Backend) -> None:
    # The payment is declined after every line was reserved: each line's release is sent under
    # the line's own key, and its reply comes back under it, when the items' frames are gone.
    definition = procflow.load_text(FOR_EACH)
    store = backend.open()
    orchestrator = Orchestrator(definition, store=store, clock=Clock(), auto_dispatch=False, compile_pinned=procflow.load_text)
    orchestrator.start("wf_1", _lines(3))
    orchestrator.start("wf_2", {"orderId": "o2", "lines": [{"sku": "x"}]})
    for n in (1, 2, 3):
        orchestrator.receive({"type": "reserved", "correlationId": f"o1/line/{n}"})
    orchestrator.receive({"type": "declined", "correlationId": "o1"})
    assert orchestrator.state("wf_1").frames == {}
    for n in (3, 2, 1):
        assert store.find(None, f"o1/line/{n}") == ["wf_1"] == store.find("lines", f"o1/line/{n}")
        orchestrator.receive({"type": "released", "correlationId": f"o1/line/{n}"})
    assert orchestrator.state("wf_1").status == "compensated"
    assert store.find(None, "o2/line/1") == ["wf_2"] and store.find("another", "o2/line/1") == []
