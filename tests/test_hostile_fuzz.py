"""Issue 17, must show 1: messages and inputs drawn by hypothesis to hurt (NaN and infinities,
nesting far past the limit and values that contain themselves, lone surrogates, numbers too
long or too large, objects JSON cannot hold, random bytes, JSON mangled) go through the
engine (`deliver`, `start`), the `Orchestrator` over the SQLite store, and the command line.
Each is accepted or refused in words (a `ProcflowError`, exit 1 or 2): never another
exception, never a traceback, and after every refusal the stored instance is what it was.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import procflow
from procflow.cli import main
from procflow.errors import MessageRefused, ProcflowError
from procflow.interpreter.orchestrator import Orchestrator
from procflow.interpreter.sqlite_store import SqliteStore
from procflow.limits import MESSAGE_BYTES
from procflow.strict_json import loads

ROOT = Path(__file__).resolve().parent.parent
ORDER_PATH = ROOT / "processes" / "order_fulfillment.proc"
ORDER = procflow.load(ORDER_PATH)
T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)
FUZZ = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)

# ---------------------------------------------------------------- what hurts

SURROGATES = st.sampled_from(["\udcff", "\ud800", "a\udfffb", "\ud83d", "\ude00x"])
CONTROL = st.sampled_from(["", "\n", "\x1b[31m", "\x00", "\u202e", "\u2028"])
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e308]))
INTEGERS = st.one_of(st.integers(-(10**12), 10**12), st.integers(-(10**80), 10**80), st.sampled_from([10**39, 10**40, -(10**40)]))
TEXTS = st.one_of(st.text(max_size=12), SURROGATES, st.builds(lambda a, b: a + b, st.text(max_size=4), CONTROL))
JSON_LEAVES = st.one_of(st.none(), st.booleans(), INTEGERS, FLOATS, TEXTS)
NOT_JSON = st.sampled_from([object(), {1, 2}, b"bytes", datetime(2026, 1, 1), complex(1, 2), range(3)])


def _wrap(value: Any, depth: int, as_list: bool) -> Any:
    for _ in range(depth):
        value = [value] if as_list else {"k": value}
    return value


def _cyclic() -> dict[str, Any]:
    loop: dict[str, Any] = {"a": 1}
    loop["self"] = loop
    return loop


def _values(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    tree = st.recursive(
        leaves,
        lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=6), SURROGATES), inner, max_size=4)),
        max_leaves=16,
    )
    deep = st.builds(_wrap, tree, st.integers(0, 300), st.booleans())
    return st.one_of(tree, deep)


PYTHON_VALUES = _values(st.one_of(JSON_LEAVES, NOT_JSON, st.builds(_cyclic)))
JSON_VALUES = _values(JSON_LEAVES)  # what `json.dumps` can write (NaN and surrogates included)

REPLY_TYPES = st.one_of(
    st.sampled_from(["inventory_reserved", "inventory_unavailable", "payment_authorized", "shipment_created", "unknown"]),
    TEXTS,
)


@st.composite
def messages(draw: st.DrawFn, correlation: str) -> Any:
    """A message for the instance that correlates by `correlation`, hostile somewhere (or not)."""
    message: dict[Any, Any] = {
        "type": draw(REPLY_TYPES),
        "correlationId": draw(st.one_of(st.just(correlation), TEXTS)),
        "data": draw(st.one_of(st.dictionaries(st.text(max_size=6), PYTHON_VALUES, max_size=3), PYTHON_VALUES)),
    }
    if draw(st.booleans()):
        message["messageId"] = draw(st.one_of(st.text(min_size=1, max_size=8), TEXTS, INTEGERS))
    if draw(st.booleans()):
        message[draw(st.sampled_from(["workflowId", "extra", 7]))] = draw(PYTHON_VALUES)
    return message


def _mangle(text: str, at: int, noise: str) -> str:
    at %= len(text) + 1
    return text[:at] + noise + text[at:]


@st.composite
def message_texts(draw: st.DrawFn, correlation: str) -> str | bytes:
    """JSON text (or bytes) of a message: NaN and Infinity tokens, escapes of lone surrogates,
    numbers of many digits, brackets deeper than any limit, random bytes, mangled JSON."""
    body = {"type": draw(REPLY_TYPES), "correlationId": correlation, "data": {"v": draw(JSON_VALUES)}}
    text = json.dumps(body)  # writes NaN, Infinity and `\udcff` escapes as they are
    kind = draw(st.sampled_from(["plain", "number", "deep", "bytes", "mangled", "utf8"]))
    if kind == "number":
        digits = draw(st.sampled_from(["9" * 41, "1" * 5000, "1e999", "-1e999", "1" * 100_000, "0." + "1" * 60]))
        return text.replace('"v": ', f'"v": {digits}, "w": ', 1)
    if kind == "deep":
        depth = draw(st.sampled_from([65, 500, 100_000]))
        return text.replace('"v": ', f'"v": {"[" * depth}{"]" * depth}, "w": ', 1)
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "mangled":
        noise = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "\\udcff", '"', "{", "]", "\x00", ",", "1e999"]))
        return _mangle(text, draw(st.integers(0, 10_000)), noise)
    if kind == "utf8":
        return text.encode("utf-8") + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b""]))
    return text


# ---------------------------------------------------------------- where it goes


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqliteStore]:
    with SqliteStore(tmp_path_factory.mktemp("fuzz") / "store.sqlite", synchronous="NORMAL") as opened:
        yield opened


_ids = itertools.count(1)


def _fresh(store: SqliteStore) -> tuple[Orchestrator, str, str]:
    """A new instance (waiting for the inventory) in the shared store."""
    number = next(_ids)
    orchestrator = Orchestrator(ORDER, store=store, participants={}, clock=lambda: T0)
    orchestrator.start(f"wf_{number}", {"orderId": f"ord_{number}", "amount": 1.0})
    return orchestrator, f"wf_{number}", f"ord_{number}"


def _snapshot(store: SqliteStore, workflow_id: str) -> tuple[Any, ...]:
    row = store.get(workflow_id)
    assert row is not None
    return (row.version, row.state.model_dump_json(), len(store.outbox(100_000)), len(store.summaries()))


@FUZZ
@given(data=st.data())
@example(data=None)
def test_fuzzed_messages_through_the_orchestrator_are_applied_or_refused_in_words(store: SqliteStore, data: Any) -> None:
    orchestrator, workflow_id, correlation = _fresh(store)
    if data is None:  # the issue's own: a message nested a hundred thousand levels deep
        message: Any = {"type": "inventory_reserved", "correlationId": correlation, "data": {"x": _wrap(1, 100_000, True)}}
    else:
        message = data.draw(messages(correlation))
    before = _snapshot(store, workflow_id)
    try:
        orchestrator.deliver(message)
    except ProcflowError as refused:
        assert str(refused)
        assert _snapshot(store, workflow_id) == before


@FUZZ
@given(data=st.data())
def test_fuzzed_message_texts_are_read_strictly_then_applied_or_refused(store: SqliteStore, data: Any) -> None:
    orchestrator, workflow_id, correlation = _fresh(store)
    text = data.draw(message_texts(correlation))
    before = _snapshot(store, workflow_id)
    try:
        orchestrator.deliver(loads(text, what="the message", limit=MESSAGE_BYTES, refuse=MessageRefused))
    except ProcflowError as refused:
        assert str(refused)
        assert _snapshot(store, workflow_id) == before


@FUZZ
@given(value=PYTHON_VALUES, workflow_id=st.one_of(st.just("ok"), TEXTS, INTEGERS))
def test_fuzzed_inputs_and_ids_start_an_instance_or_are_refused_in_words(store: SqliteStore, value: Any, workflow_id: Any) -> None:
    number = next(_ids)
    orchestrator = Orchestrator(ORDER, store=store, participants={}, clock=lambda: T0)
    wid = f"wf_{number}" if workflow_id == "ok" else workflow_id
    count = len(store.summaries())
    try:
        orchestrator.start(wid, {"orderId": f"ord_{number}", "amount": 1.0, "extra": value})
    except ProcflowError as refused:
        assert str(refused)
        assert len(store.summaries()) == count
    try:
        procflow.start(ORDER, "wf_pure", value, T0)  # the input itself, whatever it is
    except ProcflowError:
        pass


@FUZZ
@given(data=st.data())
def test_fuzzed_messages_through_the_pure_engine_never_change_the_state_given(data: Any) -> None:
    state = procflow.start(ORDER, "wf_1", {"orderId": "ord_1", "amount": 1.0}, T0).state
    frozen = state.model_dump_json()
    message = data.draw(messages("ord_1"))
    payload = message["data"] if isinstance(message["data"], dict) else {"v": message["data"]}
    reply_type = message["type"] if isinstance(message["type"], str) else "x"
    correlation = message["correlationId"] if isinstance(message["correlationId"], str) else "ord_1"
    try:
        procflow.deliver(ORDER, state, procflow.Reply(type=reply_type, correlationId=correlation, data=payload), T0)
    except ProcflowError as refused:
        assert str(refused)
    assert state.model_dump_json() == frozen


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_fuzzed_messages_on_the_command_line_give_one_worded_line(
    data: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.mktemp("cli")
    store_path = folder / "s.sqlite"
    assert main(["start", str(ORDER_PATH), "--input", '{"orderId": "ord_1", "amount": 1}', "--workflow-id", "wf_1",
                 "--store", str(store_path), "--now", "2026-01-01T09:00:00Z"]) == 0
    with SqliteStore(store_path, create=False) as store:
        before = _snapshot(store, "wf_1")
    text = data.draw(message_texts("ord_1"))
    if isinstance(text, bytes) or data.draw(st.booleans()):  # as a file, or as the argument itself
        (folder / "message.json").write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
        argument = f"@{folder / 'message.json'}"
    else:
        argument = text.replace("\x00", "")  # an argument cannot hold NUL
    code = main(["deliver", "--message", argument, "--store", str(store_path), "--now", "2026-01-01T09:00:01Z"])
    assert code in (0, 1)
    if code == 1:
        with SqliteStore(store_path, create=False) as store:
            assert _snapshot(store, "wf_1") == before


def test_the_command_line_output_of_a_refusal_is_one_escaped_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store_path = tmp_path / "s.sqlite"
    assert main(["start", str(ORDER_PATH), "--input", '{"orderId": "ord_1", "amount": 1}', "--workflow-id", "wf_1",
                 "--store", str(store_path), "--now", "2026-01-01T09:00:00Z"]) == 0
    capsys.readouterr()
    code = main(["deliver", "--message", '{"type": "x\\n\\u001b[2J", "correlationId": "ord_1", "data": {"v": NaN}}',
                 "--store", str(store_path)])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and err.startswith("procflow: error: ")
