"""The log of the rows each transition of a wide instance changed, and catching up from it.

A durable store keeps a state's waits, tokens, frames and for-each results, once they are
many, in rows of their own (`stores.item_rows`). Each transition of such an instance also logs
the keys of the rows it wrote or removed (`item_changes`, `logged_changes`), so that a worker
holding an older version of the state (`stores.RecentStates`: another worker wrote since) reads
only what changed instead of every row (`caught_up`). The row stays the one judge: when the
log cannot say it all, the caller reads the row whole.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from pydantic import ValidationError

from procflow.errors import DamagedRecord
from procflow.interpreter.indexed import (
    INDEX_FROM,
    Frames,
    Results,
    StoredFrames,
    StoredTokens,
    StoredWaits,
    Tokens,
    Waits,
    no_results,
)
from procflow.interpreter.records import Record
from procflow.interpreter.state import Frame, InstanceState, Token, Wait
from procflow.interpreter.stores import (
    DAMAGED_HINT,
    EACH_KINDS,
    ITEM_KINDS,
    ItemRows,
    RecentStates,
    decode_for_transition,
    in_rows,
    item_count,
    item_inputs,
    read_stored_json,
    run_in_rows,
)

R = TypeVar("R", bound=Record)


CHANGES_KEPT = 64
"""How many versions back the store logs which rows of `state_items` each transition of a wide
instance wrote or removed (the table `item_changes`): a worker that holds the state of a version
at most this many behind the row's reads only what changed since (`caught_up`)."""

CHANGES_TRIMMED_EVERY = 16
"""The log of an instance is trimmed to `CHANGES_KEPT` versions at every this many (one statement)."""

CLEARED = "*"
"""The key a change is logged under when a transition removed every row of a kind (`ItemRows.cleared`)."""


def logged_changes(rows: ItemRows, version: int) -> list[tuple[int, str, str]]:
    """What a transition of a wide instance logs in `item_changes`: (version, kind, key) of each
    row it wrote or removed, `CLEARED` for a kind removed whole; one row with an empty kind and
    key when it changed none (so a reader can tell a version that changed nothing from one a
    writer did not log)."""
    keys = dict.fromkeys([*((kind, CLEARED) for kind in rows.cleared), *rows.deleted, *((kind, key) for kind, key, _, _ in rows.written)])
    return [(version, kind, key) for kind, key in keys] or [(version, "", "")]


def changes_trimmed(version: int) -> int | None:
    """The versions at or below which a transition to `version` removes the log's entries, when it trims it."""
    return version - CHANGES_KEPT if version % CHANGES_TRIMMED_EVERY == 0 and version > CHANGES_KEPT else None


def catch_up_from(kept: int | None, version: int) -> bool:
    """Whether a state held at version `kept` can be brought up to `version` from the log."""
    return kept is not None and 0 < version - kept <= CHANGES_KEPT


Change = tuple[object, object, object, object, object]
"""A logged change as a store reads it back (`item_changes` joined to `state_items`): (version,
kind, key, the row's JSON now or None when it is gone, what a wait shows)."""


def caught_up(
    held: InstanceState, workflow_id: str, text: object, counts: tuple[int, int, int], items: int, version: int, kept: int,
    changes: Iterable[Change], where: str,
) -> InstanceState | None:
    """`held`, the state of version `kept` a store holds, brought up to the row of version
    `version` (its JSON `text`, its `counts` and its `items`) with the rows of `state_items`
    changed since (`changes`, from the log): what a worker does when another wrote last, at a
    cost that does not grow with the instance's width. The row's JSON is read (it holds no
    waits, tokens or frames kept in rows); those are `held`'s with the changed rows applied.

    None when it cannot, and the caller reads the row whole: a version missing from the log
    (a writer that did not log it), a kind cleared whole or changed in rows `held` keeps in
    its JSON, or a count that does not add up."""
    by_kind: dict[str, dict[str, tuple[object, object]]] = {}
    versions: set[object] = set()
    for logged, kind, key, item, shown in changes:
        versions.add(logged)
        if kind == "":
            continue
        if (kind not in ITEM_KINDS and kind not in EACH_KINDS) or key == CLEARED:
            return None
        by_kind.setdefault(str(kind), {})[str(key)] = (item, shown)
    if len(versions) != version - kept:
        return None
    state = decode_for_transition(workflow_id, text, counts, where, given_input=held.input)
    if not _each_caught_up(state, held, by_kind.get("each-items", {}), by_kind.get("each-results", {}), workflow_id, where):
        return None
    for kind in ITEM_KINDS:
        mine, changed = getattr(held, kind), by_kind.get(kind)
        if not in_rows(mine):
            if changed:
                return None  # (rows of a kind `held` keeps in its JSON)
            continue
        if getattr(state, kind):
            return None  # (the row's JSON holds them again: a clear is logged then, but be sure)
        if changed:
            mine = _applied(mine, changed, workflow_id, where)
            if mine is None:
                return None
        setattr(state, kind, mine)
    if "frames" in by_kind:
        item_inputs(state, [state.frames[key] for key, (item, _) in by_kind["frames"].items() if item is not None])
    return state if item_count(state) == items else None


def held_caught_up(
    recent: RecentStates, workflow_id: str, kept: int | None, text: object, counts: tuple[int, int, int], items: int,
    version: int, changes: Iterable[Change], where: str,
) -> InstanceState | None:
    """The state `recent` holds for `workflow_id` at version `kept`, brought up to the row of
    `version` (`caught_up`) and held from now on as the row's; None, and let go, when it
    cannot be (the caller reads the row whole)."""
    held = recent.held(workflow_id)
    state = None if held is None or held[0] != kept else caught_up(held[1], workflow_id, text, counts, items, version, held[0], changes, where)
    if state is None:
        recent.forget(workflow_id)
    else:
        recent.keep(state, version, read=True)
    return state


def _each_caught_up(
    state: InstanceState, held: InstanceState, items: dict[str, tuple[object, object]], results: dict[str, tuple[object, object]],
    workflow_id: str, where: str,
) -> bool:
    """The for-each runs of `state` (read from the row's JSON) whose items and results are kept
    in rows, given those of `held` with the rows changed since (`items` by run key, `results`
    by `<run key>/<index>`); False when it cannot tell."""
    by_run: dict[str, list[tuple[int, object]]] = {}
    for place, (value, _) in results.items():
        key, _, index = place.rpartition("/")
        if value is None:
            if key in state.each:
                return False  # (a result removed from a run that goes on)
            continue
        if not index.isdigit():
            return False
        by_run.setdefault(key, []).append((int(index), value))
    for key, run in state.each.items():
        mine = held.each.get(key)
        listed = items.get(key)
        if listed is not None and listed[0] is not None:  # a run started since: its items, once
            values = read_stored_json(listed[0], f"the items of a for-each run of instance {workflow_id} in {where}")
            if not isinstance(values, list) or run.items or len(values) < INDEX_FROM:
                return False
            base: Sequence[Any] = no_results(len(values))
            kept_items: tuple[Any, ...] = tuple(values)
        elif mine is not None and run_in_rows(mine):
            if run.items or run.results:
                return False
            base, kept_items = mine.results, mine.items
        else:
            if key in by_run:
                return False  # (results in rows of a run `held` keeps in its JSON)
            continue
        assert isinstance(base, Results)
        for position, text in sorted(by_run.get(key, ()), key=lambda pair: pair[0]):
            if position >= len(base):
                return False
            base = base.with_result(position, read_stored_json(text, f"a result of a for-each run of instance {workflow_id} in {where}"))
        state.each[key] = dataclasses.replace(run, items=kept_items, results=base)
    return True


Kept = Waits | Tokens | Frames | StoredWaits | StoredTokens | StoredFrames
"""Waits, tokens or frames a state keeps in rows: indexed, or as read from the rows."""


def _applied(entries: Kept, changed: dict[str, tuple[object, object]], workflow_id: str, where: str) -> Kept | None:
    """`entries` with the rows `changed` (key -> (JSON or None when gone, what a wait shows))
    applied; None when a key is not what it should be (the row read whole then names it).
    Entries as read from rows (a worker that read the state and has not changed it since)
    are rebuilt as read, which costs their number in plain dict and tuple work, still far
    less than decoding them all again."""
    if not isinstance(entries, Frames | StoredFrames) and not all(key.isdigit() for key in changed):
        return None
    if isinstance(entries, StoredWaits | StoredTokens | StoredFrames):
        return _applied_as_read(entries, changed, workflow_id, where)
    if isinstance(entries, Waits):
        added: list[tuple[int, Wait, str]] = []
        for key, (item, shown) in changed.items():
            if item is not None:
                if not isinstance(shown, str):
                    return None  # (written from a state read without it)
                added.append((int(key), _record(Wait, item, "waits", workflow_id, where), shown))
        try:
            return entries.caught_up((int(key) for key in changed), added)
        except ValueError:  # (a serial kept twice)
            return None
    if isinstance(entries, Tokens):
        tokens = entries
        for key, (item, _) in changed.items():
            if item is None:
                tokens = tokens.removed(int(key))
                continue
            token = _record(Token, item, "tokens", workflow_id, where)
            tokens = tokens.replaced(token) if tokens.get(token.id) is not None else tokens.added(token)
        return tokens.rebased()
    gone = [key for key, (item, _) in changed.items() if item is None]
    own = [(key, _record(Frame, item, "frames", workflow_id, where)) for key, (item, _) in changed.items() if item is not None]
    return entries.changed(gone, own)


def _applied_as_read(
    entries: StoredWaits | StoredTokens | StoredFrames, changed: dict[str, tuple[object, object]], workflow_id: str, where: str
) -> Kept:
    if isinstance(entries, StoredFrames):
        frames = StoredFrames(entries)
        for key, (item, _) in changed.items():
            frames.pop(key, None)
            if item is not None:
                frames[key] = _record(Frame, item, "frames", workflow_id, where)
        return frames
    if isinstance(entries, StoredTokens):
        tokens = {token.id: token for token in entries}
        for key, (item, _) in changed.items():
            tokens.pop(int(key), None)
            if item is not None:
                token = _record(Token, item, "tokens", workflow_id, where)
                tokens[token.id] = token
        return StoredTokens(tokens[token_id] for token_id in sorted(tokens))
    waits = dict(zip(entries.serials, entries, strict=True))
    for key, (item, _) in changed.items():
        waits.pop(int(key), None)
        if item is not None:
            waits[int(key)] = _record(Wait, item, "waits", workflow_id, where)
    serials = sorted(waits)
    return StoredWaits((waits[serial] for serial in serials), serials)


def _record(kind: type[R], text: object, what: str, workflow_id: str, where: str) -> R:
    """One row of `state_items` read back as its record; DamagedRecord when it cannot be."""
    data = read_stored_json(text, f"one of the {what} of instance {workflow_id} in {where}")
    try:
        return kind.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        why = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
        raise DamagedRecord(f"one of the {what} of instance {workflow_id} in {where} is damaged ({why}). {DAMAGED_HINT}") from None
