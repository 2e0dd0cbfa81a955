"""The waits, tokens and frames of a state with many, indexed (`interpreter/indexed.py`): they
read, find and order exactly as the tuples and dicts they stand for, every state keeps its
own however its successors change, and an engine run with everything indexed leaves the same
record as one with nothing indexed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import procflow
from procflow.interpreter import frames as working_frames
from procflow.interpreter import indexed
from procflow.interpreter.indexed import (
    LISTED,
    Tokens,
    Waits,
    first_due,
    listed_status,
    listed_steps,
    matching,
)
from procflow.interpreter.messages import Reply
from procflow.interpreter.simulate import simulate
from procflow.interpreter.state import ROOT, Token, Wait, iso_epoch

from .order_helpers import FOR_EACH
from .test_engine_properties import SAMPLES

NOW = datetime(2026, 3, 23, 16, 0, tzinfo=UTC)
STEPS = ("pick", "pack", "ship", "bill")
FRAMES = (ROOT, "main:each#1/1", "main:each#1/2")
TYPES = ("done", "failed", "late")


def _part(wait: Wait) -> str:
    return f"waiting_for_{wait.step}er"


_waits = st.builds(
    lambda token, step, frame, kind, expects, corr, due: Wait(
        token, step, f"n_{step}", frame, kind, expects, corr, since="2026-03-23T16:00:00Z",
        timeoutAt=iso_epoch(NOW.timestamp() + due) if due is not None else None,
    ),
    token=st.integers(0, 6),
    step=st.sampled_from(STEPS),
    frame=st.sampled_from(FRAMES),
    kind=st.sampled_from(["reply", "compensation"]),
    expects=st.lists(st.sampled_from(TYPES), max_size=2, unique=True).map(tuple),
    corr=st.sampled_from(["o1", "o1/line/1"]),
    due=st.none() | st.sampled_from([60, 3600, 86_400]),
)


def _tally_order(names: list[str]) -> list[str]:
    """Names in the order each began to be waited on (a name that stops and waits again goes last)."""
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return list(counts)


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(st.tuples(st.booleans(), _waits, st.integers(0, 50)), max_size=60))
def test_indexed_waits_read_find_and_order_as_their_tuple(steps: list[tuple[bool, Wait, int]]) -> None:
    waits = Waits()
    model: list[Wait] = []
    began: dict[str, int] = {}  # status part -> how many of the model's waits show it, in the order they began
    steps_began: dict[str, int] = {}
    kept: list[tuple[Waits, list[Wait]]] = []
    for park, wait, pick in steps:
        if park or not model:
            waits = waits.parked(wait, _part(wait))
            model.append(wait)
            for tally, name in ((began, _part(wait)), (steps_began, wait.step)):
                tally[name] = tally.get(name, 0) + 1
        else:
            gone = model.pop(pick % len(model))
            waits = waits.unparked(gone)
            for tally, name in ((began, _part(gone)), (steps_began, gone.step)):
                tally[name] -= 1
                if not tally[name]:
                    del tally[name]
        kept.append((waits, list(model)))
        assert list(waits) == model and len(waits) == len(model)
        assert all(a is b for a, b in zip(waits, model, strict=True))
        if model:
            assert waits[0] is model[0]
            assert waits.status() == listed_status(list(began)[: max(1, len(began) if len(began) <= LISTED else 1)], len(began))
            assert waits.next_action() == listed_steps(list(steps_began)[: len(steps_began) if len(steps_began) <= LISTED else 1], len(steps_began))
        for reply in TYPES:
            for corr in ("o1", "o1/line/1"):
                assert matching(waits, reply, corr) is matching(tuple(model), reply, corr)
        assert first_due(waits) is first_due(tuple(model))
        for frame in FRAMES[1:]:
            assert waits.of_frame(frame) == [w for w in model if w.frame == frame]
    for older, what in kept:  # every state still sees its own waits
        assert list(older) == what


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.tuples(st.sampled_from(["add", "move", "remove"]), st.integers(0, 40), st.sampled_from(FRAMES)), max_size=60))
def test_indexed_tokens_read_and_find_as_their_tuple(steps: list[tuple[str, int, str]]) -> None:
    tokens = Tokens.of(())
    model: dict[int, Token] = {}
    began, start = tokens, len(steps) // 2  # (what a store writes is counted from a transition's start)
    next_id = 1
    for position, (action, pick, frame) in enumerate(steps):
        if position == start:
            began, tokens = tokens, tokens.rebased()
        if action == "add" or not model:
            token = Token(next_id, "n", frame)
            next_id += 1
            tokens, model[token.id] = tokens.added(token), token
        elif action == "move":
            token_id = sorted(model)[pick % len(model)]
            token = Token(token_id, "m", frame)
            tokens, model[token_id] = tokens.replaced(token), token
        else:
            token_id = sorted(model)[pick % len(model)]
            tokens = tokens.removed(token_id)
            del model[token_id]
        assert list(tokens) == [model[i] for i in sorted(model)]
        for each in FRAMES[1:]:
            assert sorted(tokens.ids_in(each)) == sorted(i for i, t in model.items() if t.frame == each)
        # What changed since the transition began, from its record of what it touched, is what
        # comparing every token says.
        gone, changed = tokens.changes_since(began)
        assert (gone, changed) == Tokens(tokens._tokens, tokens._frames).changes_since(began)
        # Built at once (what a transition does with tokens read from a store): the same index.
        at_once = Tokens.of(tuple(tokens))
        assert list(at_once) == list(tokens)
        assert all(at_once.ids_in(each) == tokens.ids_in(each) for each in FRAMES[1:])
        gone, changed = at_once.changes_since(tokens)
        assert gone == [] and [t.id for t in changed] == []


def _everything_indexed(monkeypatch: pytest.MonkeyPatch, threshold: int) -> None:
    monkeypatch.setattr(indexed, "INDEX_FROM", threshold)
    monkeypatch.setattr(working_frames, "INDEX_FROM", threshold)


def _scenario_runs() -> list[Any]:
    runs = []
    for path in SAMPLES:
        definition = procflow.load(path)
        runs += [pytest.param(path, s.name, id=f"{path.stem}:{s.name}") for s in definition.scenarios]
    return runs


@pytest.mark.parametrize(("path", "scenario"), _scenario_runs())
def test_every_sample_scenario_leaves_the_same_record_with_everything_indexed(
    path: Any, scenario: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    definition = procflow.load(path)
    plain = simulate(definition, workflow_id="wf_1", scenario=scenario)
    _everything_indexed(monkeypatch, 2)  # two waits, tokens or frames and more are indexed
    indexed_run = simulate(definition, workflow_id="wf_1", scenario=scenario)
    assert indexed_run.state.to_json() == plain.state.to_json()
    assert [d.dedupKey for d in indexed_run.dispatches] == [d.dedupKey for d in plain.dispatches]
    assert [str(line) for line in indexed_run.trace] == [str(line) for line in plain.trace]


WIDE = """
process wide {
  participant worker
  parallel fan {
%s
  }
}
"""



def _wide_run(branches: int) -> list[dict[str, Any]]:
    text = WIDE % "\n".join(f"    branch b_{i} {{ step s_{i} {{ send worker.do_{i} await done_{i} within {i + 1}h }} }}" for i in range(branches))
    definition = procflow.load_text(text)
    state = procflow.start(definition, "wf_1", {}, NOW).state
    records = [state.to_json()]
    for i in reversed(range(0, branches, 2)):  # half answer, last first; the rest time out in turn
        state = procflow.deliver(definition, state, Reply(type=f"done_{i}", correlationId="wf_1"), NOW).state
        records.append(state.to_json())
    for hours in range(1, branches + 2, 3):
        state = procflow.advance(definition, state, datetime.fromtimestamp(NOW.timestamp() + hours * 3600, UTC)).state
        records.append(state.to_json())
    return records


def _for_each_run(items: int, fail: bool) -> list[dict[str, Any]]:
    definition = procflow.load_text(FOR_EACH)
    first = procflow.start(definition, "wf_1", {"orderId": "o1", "lines": [{"sku": f"s{i}"} for i in range(items)]}, NOW)
    state, records = first.state, [first.state.to_json()]
    for command in reversed(first.commands):
        state = procflow.deliver(definition, state, Reply(type="reserved", correlationId=command.correlationId), NOW).state
        records.append(state.to_json())
    state = procflow.deliver(definition, state, Reply(type="declined" if fail else "charged", correlationId="o1"), NOW).state
    records.append(state.to_json())
    while state.waits:
        state = procflow.deliver(definition, state, Reply(type="released", correlationId=state.waits[0].correlationId), NOW).state
        records.append(state.to_json())
    return records


FIRST_OF = """
process wide-first {
  participant worker
  first of quotes {
%s
  }
  step accept {
    send worker.accept
    await accepted within 1h
  }
}
"""


def _first_of_run(branches: int) -> list[dict[str, Any]]:
    """Every branch asks and is undone when it loses; branch 7 answers first, then some losers
    answer late, the undos are confirmed, and the winner's next step completes."""
    text = FIRST_OF % "\n".join(
        f"    branch b_{i} {{ step s_{i} {{ send worker.ask_{i} await quoted_{i} within 1h "
        f"compensate worker.withdraw_{i} awaiting withdrawn_{i} within 1h }} }}"
        for i in range(branches)
    )
    definition = procflow.load_text(text)
    state = procflow.start(definition, "wf_1", {}, NOW).state
    records = [state.to_json()]
    for reply in ["quoted_3", "quoted_7", "quoted_5", *[f"withdrawn_{i}" for i in (3,)], "accepted"]:
        try:
            state = procflow.deliver(definition, state, Reply(type=reply, correlationId="wf_1"), NOW).state
        except procflow.MessageRefused as refused:
            records.append({"refused": str(refused)})
            continue
        records.append(state.to_json())
    return records


@pytest.mark.parametrize(
    "run",
    [lambda: _wide_run(40), lambda: _for_each_run(40, False), lambda: _for_each_run(40, True), lambda: _first_of_run(40)],
    ids=["parallel", "for-each", "for-each-undone", "first-of"],
)
def test_a_wide_block_leaves_the_same_record_indexed_or_not(run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    indexed_records = run()
    _everything_indexed(monkeypatch, 1_000_000)  # nothing indexed: the tuples and dicts of old
    assert indexed_records == run()


def test_a_wide_block_names_its_first_waits_and_counts_the_rest() -> None:
    records = _wide_run(40)
    assert records[0]["status"] == "waiting_for_worker"  # (one participant: one status part)
    assert records[0]["nextAction"] == "s_0 and 39 more"
    assert records[-1]["status"] in ("completed", "timed_out", "failed")
    four = procflow.load_text(WIDE % "\n".join(f"    branch b_{i} {{ step s_{i} {{ send worker.do_{i} await done_{i} }} }}" for i in range(4)))
    assert procflow.start(four, "wf_1", {}, NOW).state.nextAction == "s_0, s_1, s_2, s_3"


@settings(max_examples=200, deadline=None)
@given(waits=st.lists(_waits, max_size=40), gone=st.lists(st.integers(0, 40), max_size=10))
def test_waits_indexed_at_once_are_those_parked_one_by_one(waits: list[Wait], gone: list[int]) -> None:
    one_by_one = Waits()
    for wait in waits:
        one_by_one = one_by_one.parked(wait, _part(wait))
    at_once = Waits.of(waits, _part)
    for pick in gone:  # and they go on alike
        if waits:
            wait = waits[pick % len(waits)]
            one_by_one, at_once = one_by_one.unparked(wait), at_once.unparked(wait)
    assert list(at_once) == list(one_by_one)
    if len(at_once):
        assert at_once.status() == one_by_one.status() and at_once.next_action() == one_by_one.next_action()
        assert at_once[0] is one_by_one[0]
    assert first_due(at_once) is first_due(one_by_one)
    for reply in TYPES:
        assert matching(at_once, reply, "o1") is matching(one_by_one, reply, "o1")
    for frame in FRAMES[1:]:
        assert at_once.of_frame(frame) == one_by_one.of_frame(frame)
