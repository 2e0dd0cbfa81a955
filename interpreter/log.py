"""An append-only sequence that the successive states of an instance share.

A state's history, its completions and its milestones grow by an entry a step and are never
changed. As tuples, a step would copy them whole (a step at the 10,000th step cost four times
one at the first, and a 50,000-step process took 50 s instead of 3); as a `Log`, a step
appends to a list the states share, each state seeing its first `len` entries.

A durable store does not read an instance's history back to make its next transition (that
would cost more the older the instance is): it hands the engine a `Tail`, which knows how
many entries the store holds and keeps only those appended since. The engine needs no more:
it numbers the next entry and appends it; the store writes what follows the stored ones.
The completions and the milestones are handed over so too. A transition that does read them
(a compensation starts, an expression reads `steps`, an unexpected reply is checked against
the completed steps) meets `NotLoaded`, and the runtime makes it again from the whole record
(`Store.load(..., whole=True)`): the engine stays a pure function of the state it is given.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import TypeVar, overload

T = TypeVar("T")

LOG_FROM = 16
"""A growing sequence of this many entries or more is a `Log`; a shorter one is a tuple (a
short tuple costs less to keep and to read than a log)."""


class Log(Sequence[T]):
    """An append-only sequence that the successive states of an instance share.

    A state's log is its first `len` entries of a list the states share: the next state's log
    appends to that list and is one entry longer, so a step costs the same at the 50,000th
    step as at the first. The entries a state sees never change. When the list already holds
    more than this log (another transition from the same state appended first), the next log
    starts a list of its own. Reads like a tuple, compares equal to a tuple with the same
    entries; a state writes it as a JSON array."""

    __slots__ = ("_items", "_length")

    def __init__(self, items: list[T], length: int) -> None:
        self._items = items
        self._length = length

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[T, ...]: ...

    def __getitem__(self, index: int | slice) -> T | tuple[T, ...]:
        if isinstance(index, slice):
            start, stop, step = index.indices(self._length)
            return tuple(self._items[start:stop:step])
        position = index + self._length if index < 0 else index
        if not 0 <= position < self._length:
            raise IndexError("log index out of range")
        return self._items[position]

    def __iter__(self) -> Iterator[T]:
        return itertools.islice(self._items, self._length)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Log | tuple):
            return len(other) == self._length and all(a is b or a == b for a, b in zip(self, other, strict=False))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(tuple(self))

    def appended(self, item: T) -> Log[T]:
        """This log with `item` after its entries."""
        items, length = self._items, self._length
        if len(items) == length:
            items.append(item)
            if items[length] is item:  # nobody appended to the list meanwhile
                return Log(items, length + 1)
        own = items[:length]
        own.append(item)
        return Log(own, length + 1)


class NotLoaded(LookupError):
    """An entry of a `Tail` that the store holds was read: the transition needs the whole
    record (the orchestrator then reads it, `Store.load(..., whole=True)`, and decides again)."""


class Tail(Sequence[T]):
    """A sequence whose first `stored` entries are kept elsewhere (in a store) and were not
    read: only its length and the entries appended since are here. Reading one of the stored
    entries raises `NotLoaded`: whoever needs them asks the store for the whole record."""

    __slots__ = ("_new", "stored")

    def __init__(self, stored: int, new: tuple[T, ...] = ()) -> None:
        self.stored = stored
        self._new = new

    def __len__(self) -> int:
        return self.stored + len(self._new)

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[T, ...]: ...

    def __getitem__(self, index: int | slice) -> T | tuple[T, ...]:
        length = len(self)
        if isinstance(index, slice):
            start, stop, step = index.indices(length)
            if start < self.stored and start < stop:
                raise NotLoaded(f"entries {start} to {self.stored - 1} are in the store, not read")
            return self._new[start - self.stored : stop - self.stored : step] if start < stop else ()
        position = index + length if index < 0 else index
        if not 0 <= position < length:
            raise IndexError("tail index out of range")
        if position < self.stored:
            raise NotLoaded(f"entry {position} is in the store, not read")
        return self._new[position - self.stored]

    def __iter__(self) -> Iterator[T]:
        if self.stored:
            raise NotLoaded(f"the first {self.stored} entries are in the store, not read")
        return iter(self._new)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Tail):
            return self.stored == other.stored and self._new == other._new
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Tail({self.stored}, {self._new!r})"

    def appended(self, item: T) -> Tail[T]:
        """This tail with `item` after its entries."""
        return Tail(self.stored, (*self._new, item))


def appended(entries: Sequence[T], item: T) -> Sequence[T]:
    """`entries` with `item` after them: a tuple while short, then a `Log` (a `Tail` stays one)."""
    if isinstance(entries, tuple):  # (first: asking whether a tuple is a `Log`, an abstract `Sequence`, costs ten times this)
        return (*entries, item) if len(entries) + 1 < LOG_FROM else Log([*entries, item], len(entries) + 1)
    if isinstance(entries, Log | Tail):
        return entries.appended(item)
    return appended(tuple(entries), item)
