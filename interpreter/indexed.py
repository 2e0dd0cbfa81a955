"""The waits and the tokens of a state, kept so that a transition touches only its own.

A state with a few waits keeps them as a tuple, and the engine looks through it. A state with
many (a parallel block of a thousand branches, a for-each over a thousand items in parallel)
keeps them as `Waits`, from the transition that parks the `INDEX_FROM`th on: a transition
then finds the wait a reply is for, the earliest due, and the steps and statuses waiting
without walking the others, and parks or removes a wait at a cost that does not grow with
their number. Tokens likewise (`Tokens`, by id), and frames (`Frames`, by id). They read
like the tuples and dicts they stand for (waits in the order they were parked, tokens in the
order they were made) and compare equal to them; a state writes them as JSON.

Successive states share them as they share their logs (`log.py`), but by structure rather
than by length: each index is a persistent map (`immutables.Map`, a hash array mapped trie,
the structure behind Python's own `contextvars`), so the next state's index is the previous
one with a few paths copied, and the previous state still sees its own. The earliest of a
group (the first wait due, the step waited on longest) is kept as a head that only moves
forward, past what has left; the small groups (the waits of one reply and correlation id,
of one frame) and the distinct due times are tuples changed by slicing.

A wait is removed by identity (the engine removes the very object it found): it is looked for
among the waits of its place (its token, frame and node), which is one wait but for a
compensation's undos sent in parallel, one per step undone.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar, overload

from immutables import Map

from procflow.interpreter.state import ROOT, Frame, Token, Wait

K = TypeVar("K")
T = TypeVar("T")

INDEX_FROM = 16
"""The waits (or tokens, or frames) of a state are indexed from the transition that brings
them to this many on; below half of it, they are a tuple again (a short tuple costs less to
keep and to look through than an index). Waits or tokens that are many already when a
transition begins, as a tuple, were read from a store: the first transition that changes them
indexes them, once (the store hands the state it wrote back to the instance's next transition,
index included: `stores.RecentStates`), and the store keeps each of them in a row of its own
from then on (`stores.item_rows`)."""

_UNSET = object()
"""A result no item has set (a set result may be None)."""

Part = Callable[[Wait], str]
"""What a wait shows in its instance's status (`waiting_for_payment`), worked out when it is parked."""


LISTED = 4
"""How many steps (or statuses) waiting an instance's `nextAction` (or `status`) names; when
more wait, it names the first and counts the others (`waiting_for_pick_and_999_more`)."""


def _grown(groups: Map[K, tuple[int, ...]], key: K, serial: int) -> Map[K, tuple[int, ...]]:
    """`groups` with `serial` in the group `key`, kept in order (a new wait's serial goes last;
    a token that moves into a frame may go anywhere)."""
    group = groups.get(key, ())
    if not group or group[-1] < serial:
        return groups.set(key, (*group, serial))
    at = bisect.bisect_left(group, serial)
    return groups.set(key, (*group[:at], serial, *group[at:]))


def _shrunk(groups: Map[K, tuple[int, ...]], key: K, serial: int) -> Map[K, tuple[int, ...]]:
    """`groups` without `serial` in the group `key` (and without the group once empty)."""
    group = groups[key]
    if len(group) == 1:
        return groups.delete(key)
    at = bisect.bisect_left(group, serial)
    return groups.set(key, group[:at] + group[at + 1 :])


def _next_head(members: Map[int, T], head: int) -> int:
    """The lowest of `members` (not empty), none of which is below `head`. The head of a queue
    only moves forward, so along the states of an instance each serial is stepped over once."""
    while head not in members:
        head += 1
    return head


class _Queue:
    """Serials in the order they came, the earliest of them at hand (`head`)."""

    __slots__ = ("members", "head")

    def __init__(self, members: Map[int, None], head: int) -> None:
        self.members = members
        self.head = head

    def added(self, serial: int) -> _Queue:
        """With `serial`, the newest of all."""
        return _Queue(self.members.set(serial, None), self.head if self.members else serial)

    def removed(self, serial: int) -> _Queue | None:
        """Without `serial` (None once empty)."""
        members = self.members.delete(serial)
        if not members:
            return None
        return _Queue(members, _next_head(members, self.head) if serial == self.head else self.head)


class _Tally:
    """Names (steps, statuses) with how many waits show each, in the order each began to be
    waited on: what `nextAction` and `status` name, kept as each wait comes and goes."""

    __slots__ = ("counts", "order", "head")

    def __init__(self, counts: Map[str, tuple[int, int]], order: Map[int, str], head: int) -> None:
        self.counts = counts  # name -> (waits showing it, the serial of the wait it began with)
        self.order = order  # that serial -> name
        self.head = head  # the lowest serial in `order`

    @classmethod
    def of(cls, groups: dict[str, list[int]]) -> _Tally:
        """The tally of waits whose serials, by name, are `groups` (none empty)."""
        order = {serials[0]: name for name, serials in groups.items()}
        return cls(Map({name: (len(serials), serials[0]) for name, serials in groups.items()}), Map(order), min(order, default=0))

    def added(self, name: str, serial: int) -> _Tally:
        counted = self.counts.get(name)
        if counted is not None:
            return _Tally(self.counts.set(name, (counted[0] + 1, counted[1])), self.order, self.head)
        return _Tally(self.counts.set(name, (1, serial)), self.order.set(serial, name), self.head if self.order else serial)

    def removed(self, name: str) -> _Tally:
        count, since = self.counts[name]
        if count > 1:
            return _Tally(self.counts.set(name, (count - 1, since)), self.order, self.head)
        order = self.order.delete(since)
        head = _next_head(order, self.head) if order and since == self.head else self.head
        return _Tally(self.counts.delete(name), order, head)

    def names(self) -> tuple[str, ...]:
        """The names in order when they are `LISTED` or fewer; else the first alone."""
        order = self.order
        if len(order) > LISTED:
            return (order[self.head],)
        return tuple(name for _, name in sorted(order.items()))

    def __len__(self) -> int:
        return len(self.order)


_NO_TALLY = _Tally(Map(), Map(), 0)

STATUS_PREFIX = "waiting_for_"
"""What the parts of a status lose when several are joined (`waiting_for_a_and_b`)."""


def listed_status(parts: Sequence[str], count: int) -> str:
    """The status of an instance whose waits show `count` parts, of which `parts` are the first
    (all of them when `LISTED` or fewer)."""
    if count == 1:
        return parts[0]
    if count > LISTED:
        return f"{STATUS_PREFIX}{parts[0].removeprefix(STATUS_PREFIX)}_and_{count - 1}_more"
    return STATUS_PREFIX + "_and_".join(p.removeprefix(STATUS_PREFIX) for p in parts)


def listed_steps(steps: Sequence[str], count: int) -> str:
    """`nextAction` of an instance that waits on `count` steps, of which `steps` are the first."""
    return f"{steps[0]} and {count - 1} more" if count > LISTED else ", ".join(steps)


class _TupleLike(Sequence[T]):
    """A sequence that stands for a tuple: equal to a tuple (or another of its kind) with the
    same entries, unhashable as a state's values are, shown as the tuple."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _TupleLike | tuple):
            return len(other) == len(self) and all(a is b or a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(tuple(self))


class Waits(_TupleLike[Wait]):
    """The waits of a state with many, in the order they were parked, indexed (see the module doc)."""

    __slots__ = ("_waits", "_places", "_next", "_head", "_messages", "_frames", "_times", "_due", "_steps", "_parts", "space")

    def __init__(self) -> None:
        # Whose serials these are: the waits parked into (or out of) one index share its serials,
        # and a durable store keeps each wait under its serial (an index built again from a tuple
        # numbers anew; one built from waits read from their rows keeps theirs: `StoredWaits`).
        self.space = object()
        self._waits: Map[int, tuple[Wait, str]] = Map()  # serial -> (wait, what it shows in the status); a serial grows with each wait parked
        self._places: Map[tuple[int, str, str], tuple[int, ...]] = Map()  # (token, frame, node) -> serials
        self._next = 0
        self._head = 0  # the lowest serial in `_waits`
        self._messages: Map[tuple[str, str], tuple[int, ...]] = Map()  # (a reply it expects, correlationId) -> serials
        self._frames: Map[str, tuple[int, ...]] = Map()  # frame (but the main one) -> serials
        self._times: tuple[float, ...] = ()  # the distinct due times, earliest first
        self._due: Map[float, _Queue] = Map()  # due time -> the serials due then
        self._steps = _NO_TALLY
        self._parts = _NO_TALLY

    @classmethod
    def of(cls, waits: Iterable[Wait], part: Part) -> Waits:
        """The waits `waits`, in order, indexed: what parking them one by one gives, built at
        once (a durable store hands the engine a state's waits as a tuple, read anew for every
        transition, and the index is built from it whenever a transition parks a wait). Waits
        a store read from rows of their own (`StoredWaits`) keep the serials they were kept
        under, and their space: the store then writes only what a transition changed."""
        numbered: Iterable[tuple[int, Wait]]
        if isinstance(waits, StoredWaits):
            numbered, space = zip(waits.serials, waits, strict=True), waits.space
        else:
            numbered, space = enumerate(waits), None
        entries: dict[int, tuple[Wait, str]] = {}
        places: dict[tuple[int, str, str], tuple[int, ...]] = {}
        messages: dict[tuple[str, str], tuple[int, ...]] = {}
        frames: dict[str, tuple[int, ...]] = {}
        due: dict[float, list[int]] = {}
        steps: dict[str, list[int]] = {}
        parts: dict[str, list[int]] = {}
        for serial, wait in numbered:
            shown = part(wait)
            entries[serial] = (wait, shown)
            place = (wait.token, wait.frame, wait.node)
            places[place] = (*places.get(place, ()), serial)
            for expected in wait.expects:
                key = (expected, wait.correlationId)
                messages[key] = (*messages.get(key, ()), serial)
            if wait.frame != ROOT:
                frames[wait.frame] = (*frames.get(wait.frame, ()), serial)
            at = wait.due
            if at is not None:
                due.setdefault(at, []).append(serial)
            steps.setdefault(wait.step, []).append(serial)
            parts.setdefault(shown, []).append(serial)
        out = cls()
        if space is not None:
            out.space = space
        if not entries:
            return out
        out._waits, out._places, out._messages, out._frames = Map(entries), Map(places), Map(messages), Map(frames)
        out._next, out._head = max(entries) + 1, min(entries)
        out._times = tuple(sorted(due))
        out._due = Map({at: _Queue(Map(dict.fromkeys(serials)), serials[0]) for at, serials in due.items()})
        out._steps, out._parts = _Tally.of(steps), _Tally.of(parts)
        return out

    def _copy(self) -> Waits:
        out = Waits.__new__(Waits)
        out._waits, out._places, out._next, out._head = self._waits, self._places, self._next, self._head
        out._messages, out._frames, out._times, out._due = self._messages, self._frames, self._times, self._due
        out._steps, out._parts, out.space = self._steps, self._parts, self.space
        return out

    def serials(self) -> frozenset[int]:
        """The serials of the waits (a wait keeps its serial while it waits; see `space`)."""
        return frozenset(self._waits.keys())

    def by_serial(self, serial: int) -> Wait:
        """The wait of serial `serial`."""
        return self._waits[serial][0]

    def shown(self, serial: int) -> str:
        """What the wait of serial `serial` shows in the instance's status."""
        return self._waits[serial][1]

    def parked(self, wait: Wait, part: str) -> Waits:
        """These waits and `wait` after them; `part` is what it shows in the status."""
        return self._parked(wait, part, self._next)

    def _parked(self, wait: Wait, part: str, serial: int) -> Waits:
        # (`serial` is above every serial here: the index's order is the order of its serials)
        out = self._copy()
        out._next = serial + 1
        if not self._waits:
            out._head = serial
        out._waits = self._waits.set(serial, (wait, part))
        out._places = _grown(self._places, (wait.token, wait.frame, wait.node), serial)
        messages = self._messages
        for expected in wait.expects:
            messages = _grown(messages, (expected, wait.correlationId), serial)
        out._messages = messages
        if wait.frame != ROOT:
            out._frames = _grown(self._frames, wait.frame, serial)
        due = wait.due
        if due is not None:
            queue = self._due.get(due)
            if queue is None:
                at = bisect.bisect_left(self._times, due)
                out._times = (*self._times[:at], due, *self._times[at:])
                queue = _Queue(Map(), serial)
            out._due = self._due.set(due, queue.added(serial))
        out._steps = self._steps.added(wait.step, serial)
        out._parts = self._parts.added(part, serial)
        return out

    def unparked(self, wait: Wait) -> Waits:
        """These waits without `wait` (this very object); as they are when it is not here."""
        place = (wait.token, wait.frame, wait.node)
        serial = next((s for s in self._places.get(place, ()) if self._waits[s][0] is wait), None)
        return self if serial is None else self._unparked(serial)

    def _unparked(self, serial: int) -> Waits:
        wait, part = self._waits[serial]
        place = (wait.token, wait.frame, wait.node)
        out = self._copy()
        out._waits = waits = self._waits.delete(serial)
        if waits and serial == self._head:
            out._head = _next_head(waits, serial)
        out._places = _shrunk(self._places, place, serial)
        messages = self._messages
        for expected in wait.expects:
            messages = _shrunk(messages, (expected, wait.correlationId), serial)
        out._messages = messages
        if wait.frame != ROOT:
            out._frames = _shrunk(self._frames, wait.frame, serial)
        due = wait.due
        if due is not None:
            queue = self._due[due].removed(serial)
            if queue is None:
                out._due = self._due.delete(due)
                at = bisect.bisect_left(self._times, due)
                out._times = self._times[:at] + self._times[at + 1 :]
            else:
                out._due = self._due.set(due, queue)
        out._steps = self._steps.removed(wait.step)
        out._parts = self._parts.removed(part)
        return out

    def caught_up(self, removed: Iterable[int], added: Iterable[tuple[int, Wait, str]]) -> Waits:
        """These waits as another writer left them: without the serials `removed`, with the
        waits `added` (serial, wait, what it shows), in the space of these (a durable store
        brings the state it holds up to the row's version: `item_log.caught_up`). Each serial
        added is above every serial kept: serials only grow along an instance's versions,
        whoever parks the wait (`StoredWaits`)."""
        out = self
        for serial in removed:
            if serial in out._waits:
                out = out._unparked(serial)
        for serial, wait, part in sorted(added, key=lambda entry: entry[0]):
            if serial in out._waits:
                raise ValueError(f"wait serial {serial} is kept already")
            out = out._parked(wait, part, serial)
        return out

    # ---------------------------------------------------------------- what the engine asks
    def matching(self, reply_type: str, correlation_id: str) -> Wait | None:
        """The earliest wait that expects `reply_type` under `correlation_id`, or None."""
        group = self._messages.get((reply_type, correlation_id))
        return self._waits[group[0]][0] if group else None

    def of_frame(self, frame: str) -> list[Wait]:
        """The waits of tokens in `frame` (not the main one), in order."""
        assert frame != ROOT, "the main frame's waits are not indexed by frame"
        return [self._waits[serial][0] for serial in self._frames.get(frame, ())]

    def first_due(self) -> Wait | None:
        """The wait due first (the earliest parked of those due first), or None when none has a time."""
        return self._waits[self._due[self._times[0]].head][0] if self._times else None

    def status(self) -> str:
        """What the waits show as the instance's status (see `listed_status`)."""
        return listed_status(self._parts.names(), len(self._parts))

    def next_action(self) -> str:
        """The steps waiting, as `nextAction` names them (see `listed_steps`)."""
        return listed_steps(self._steps.names(), len(self._steps))

    # ---------------------------------------------------------------- a sequence
    def __len__(self) -> int:
        return len(self._waits)

    @overload
    def __getitem__(self, index: int) -> Wait: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[Wait, ...]: ...

    def __getitem__(self, index: int | slice) -> Wait | tuple[Wait, ...]:
        if index == 0 and self._waits:
            return self._waits[self._head][0]
        return tuple(self)[index]

    def __iter__(self) -> Iterator[Wait]:
        waits = self._waits
        return (waits[serial][0] for serial in sorted(waits.keys()))


class StoredWaits(tuple[Wait, ...]):
    """Many waits as a durable store reads them back from rows of their own, in order: a tuple
    (the engine reads it as one) that knows the serial each was kept under (ascending) and
    shares their space. The index a transition builds from it (`Waits.of`) keeps both, so the
    store writes only the waits that transition changed, whoever wrote the rows before; left
    as they were read, they stay in their rows."""

    serials: tuple[int, ...]
    space: object

    def __new__(cls, waits: Iterable[Wait], serials: Iterable[int]) -> StoredWaits:
        out = super().__new__(cls, waits)
        out.serials = tuple(serials)
        out.space = object()
        return out


class StoredTokens(tuple[Token, ...]):
    """Many tokens as a durable store reads them back from rows of their own (see `StoredWaits`)."""


class StoredFrames(dict[str, Frame]):
    """Many frames as a durable store reads them back from rows of their own (see `StoredWaits`)."""


class Tokens(_TupleLike[Token]):
    """The tokens of a state with many, by id (which is also the order they were made in),
    with the ids of the tokens of each frame but the main one."""

    __slots__ = ("_tokens", "_frames", "_base", "_touched")

    def __init__(
        self, tokens: Map[int, Token], frames: Map[str, tuple[int, ...]], base: Map[int, Token] | None = None,
        touched: tuple[int, object] | None = None,
    ) -> None:
        self._tokens = tokens
        self._frames = frames
        # The tokens a transition began with (`rebased`) and the ids it added, replaced or
        # removed since, newest first (a chain: a step costs the same however many came
        # before): a store writes those (`changes_since`) instead of comparing every token.
        self._base = base
        self._touched = touched

    @classmethod
    def of(cls, tokens: Iterable[Token]) -> Tokens:
        """The tokens `tokens` (in the order of their ids), indexed: what adding them one by one
        gives, built at once."""
        by_id: dict[int, Token] = {}
        frames: dict[str, list[int]] = {}
        for token in tokens:
            by_id[token.id] = token
            if token.frame != ROOT:
                frames.setdefault(token.frame, []).append(token.id)
        return cls(Map(by_id), Map({frame: tuple(sorted(ids)) for frame, ids in frames.items()}))

    def rebased(self) -> Tokens:
        """These tokens, as a transition begins with them (what it changes is counted from here)."""
        return Tokens(self._tokens, self._frames, self._tokens, None)

    def _with(self, tokens: Map[int, Token], frames: Map[str, tuple[int, ...]], token_id: int) -> Tokens:
        return Tokens(tokens, frames, self._base, (token_id, self._touched))

    def get(self, token_id: int) -> Token | None:
        """The token `token_id`, or None."""
        return self._tokens.get(token_id)

    def added(self, token: Token) -> Tokens:
        """These tokens and `token` (a new id)."""
        frames = self._frames if token.frame == ROOT else _grown(self._frames, token.frame, token.id)
        return self._with(self._tokens.set(token.id, token), frames, token.id)

    def replaced(self, token: Token) -> Tokens:
        """These tokens with `token` in place of the one with its id (which may have been in another frame)."""
        old = self._tokens[token.id]
        frames = self._frames
        if old.frame != token.frame:
            if old.frame != ROOT:
                frames = _shrunk(frames, old.frame, token.id)
            if token.frame != ROOT:
                frames = _grown(frames, token.frame, token.id)
        return self._with(self._tokens.set(token.id, token), frames, token.id)

    def removed(self, token_id: int) -> Tokens:
        """These tokens without the one `token_id` (as they are when it is not here)."""
        old = self._tokens.get(token_id)
        if old is None:
            return self
        frames = self._frames if old.frame == ROOT else _shrunk(self._frames, old.frame, token_id)
        return self._with(self._tokens.delete(token_id), frames, token_id)

    def changes_since(self, before: Tokens) -> tuple[list[int], list[Token]]:
        """What changed from `before` to these tokens: the ids gone, and the tokens new or
        replaced (compared by identity: a token the engine did not touch is the same object).
        When these began as `before` (`rebased`), only the ids touched since are looked at."""
        tokens, old = self._tokens, before._tokens
        if self._base is old:
            ids: dict[int, None] = {}
            link = self._touched
            while link is not None:
                token_id, link = link  # type: ignore[assignment]
                ids[token_id] = None
            keys: Iterable[int] = ids
        else:
            keys = itertools.chain(old.keys(), tokens.keys())
        gone: list[int] = []
        changed: list[Token] = []
        for token_id in sorted(set(keys)):
            token = tokens.get(token_id)
            if token is None:
                if token_id in old:
                    gone.append(token_id)
            elif old.get(token_id) is not token:
                changed.append(token)
        return gone, changed

    def ids_in(self, frame: str) -> tuple[int, ...]:
        """The ids of the tokens in `frame` (not the main one)."""
        assert frame != ROOT, "the main frame's tokens are not indexed by frame"
        return self._frames.get(frame, ())

    def __len__(self) -> int:
        return len(self._tokens)

    @overload
    def __getitem__(self, index: int) -> Token: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[Token, ...]: ...

    def __getitem__(self, index: int | slice) -> Token | tuple[Token, ...]:
        return tuple(self)[index]

    def __iter__(self) -> Iterator[Token]:
        tokens = self._tokens
        return (tokens[token_id] for token_id in sorted(tokens.keys()))


class Frames(Mapping[str, Frame]):
    """The frames of a state with many (a for-each's items), by id, in a persistent map: the
    next state's are these with the frames its transition changed (`WorkingFrames.written`).
    Reads and compares like the dict it stands for; a state writes it as a JSON object."""

    __slots__ = ("_frames", "_base", "_touched")

    def __init__(self, frames: Map[str, Frame], base: Map[str, Frame] | None = None, touched: tuple[str, ...] = ()) -> None:
        self._frames = frames
        # What `changed` made these from: the frames before and the ids it removed or set (a
        # store writes those, `changes_since`, instead of comparing every frame).
        self._base = base
        self._touched = touched

    def changed(self, removed: Iterable[str], own: Iterable[tuple[str, Frame]]) -> Frames:
        """These frames without those `removed`, with those `own` added or in place."""
        touched: list[str] = []
        with self._frames.mutate() as changing:
            for key in removed:
                changing.pop(key, None)
                touched.append(key)
            for key, frame in own:
                changing[key] = frame
                touched.append(key)
            frames = changing.finish()
        return Frames(frames, self._frames, tuple(touched))

    def changes_since(self, before: Frames) -> tuple[list[str], list[tuple[str, Frame]]]:
        """What changed from `before` to these frames: the ids gone, and the frames new or
        replaced (by identity: a transition copies a frame it reads, so those count too)."""
        frames, old = self._frames, before._frames
        keys: Iterable[str] = dict.fromkeys(self._touched) if self._base is old else itertools.chain(old.keys(), frames.keys())
        gone: list[str] = []
        changed: list[tuple[str, Frame]] = []
        for key in dict.fromkeys(keys):
            frame = frames.get(key)
            if frame is None:
                if key in old:
                    gone.append(key)
            elif old.get(key) is not frame:
                changed.append((key, frame))
        return gone, changed

    def __getitem__(self, key: str) -> Frame:
        return self._frames[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._frames.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._frames

    def __iter__(self) -> Iterator[str]:
        return iter(self._frames)

    def __len__(self) -> int:
        return len(self._frames)

    def __repr__(self) -> str:
        return repr(dict(self._frames.items()))


class Results(_TupleLike[Any]):
    """The results of a for-each's items, by index (None until an item ends), for a for-each
    over many: an item's end sets its own in a persistent map, where a tuple would be copied
    whole. Reads and compares like the tuple it stands for; a state writes it as a JSON array."""

    __slots__ = ("_values", "_length", "_base", "_touched")

    def __init__(self, values: Map[int, Any], length: int, base: Map[int, Any] | None = None, touched: int | None = None) -> None:
        self._values = values
        self._length = length
        # What `with_result` made these from: the results before and the index it set (a store
        # writes that one, `changes_since`, instead of comparing every result).
        self._base = base
        self._touched = touched

    @classmethod
    def of(cls, results: Sequence[Any]) -> Results:
        """The results `results` (a tuple read from a store), indexed."""
        return cls(Map({index: value for index, value in enumerate(results) if value is not None}), len(results))

    def with_result(self, index: int, value: Any) -> Results:
        """These results with `value` at `index`."""
        return Results(self._values.set(index, value), self._length, self._values, index)

    def set_count(self) -> int:
        """How many items have ended (have a result)."""
        return len(self._values)

    def set_results(self) -> list[tuple[int, Any]]:
        """(index, result) of every item that has ended, in order."""
        return sorted(self._values.items(), key=lambda pair: pair[0])

    def changes_since(self, before: Results) -> list[tuple[int, Any]]:
        """(index, result) of the results set since `before` (the same for-each's)."""
        values, old = self._values, before._values
        if self._base is old and self._touched is not None:
            indexes: Iterable[int] = (self._touched,)
        else:
            indexes = values.keys()
        return [(index, values[index]) for index in indexes if index in values and old.get(index, _UNSET) is not values[index]]

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[Any, ...]: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return tuple(self)[index]
        position = index + self._length if index < 0 else index
        if not 0 <= position < self._length:
            raise IndexError("results index out of range")
        return self._values.get(position)

    def __iter__(self) -> Iterator[Any]:
        values = self._values
        return (values.get(index) for index in range(self._length))


def no_results(count: int) -> Sequence[Any]:
    """The results of a for-each over `count` items before any ends (indexed when many)."""
    return (None,) * count if count < INDEX_FROM else Results(Map(), count)


def with_result(results: Sequence[Any], index: int, value: Any) -> Sequence[Any]:
    """`results` with `value` at `index` (many read from a store as a tuple: indexed once, see `INDEX_FROM`)."""
    if isinstance(results, tuple):
        if len(results) < INDEX_FROM:
            return (*results[:index], value, *results[index + 1 :])
        results = Results.of(results)
    assert isinstance(results, Results)
    return results.with_result(index, value)


# ---------------------------------------------------------------- a tuple or an index: the engine's calls
# (Each asks first whether it has a tuple: asking whether an object is an instance of a
# `Sequence` subclass goes through the ABC machinery, ten times the cost, on every step of
# every instance.)


def parked(waits: Sequence[Wait], wait: Wait, part: Part) -> Sequence[Wait]:
    """`waits` with `wait` after them (indexed once they are many)."""
    if isinstance(waits, tuple):
        return (*waits, wait) if len(waits) + 1 < INDEX_FROM else Waits.of(itertools.chain(waits, (wait,)), part)
    assert isinstance(waits, Waits)
    return waits.parked(wait, part(wait))


def unparked(waits: Sequence[Wait], wait: Wait, part: Part) -> Sequence[Wait]:
    """`waits` without `wait` (this very object); a tuple again once they are few."""
    if isinstance(waits, tuple):
        if len(waits) == 1:  # (the usual case: one step waits)
            return () if waits[0] is wait else waits
        if len(waits) < INDEX_FROM:
            return tuple(w for w in waits if w is not wait)
        waits = Waits.of(waits, part)  # many, read from a store: indexed once (see INDEX_FROM)
    assert isinstance(waits, Waits)
    out = waits.unparked(wait)
    return tuple(out) if len(out) < INDEX_FROM // 2 else out


def matching(waits: Sequence[Wait], reply_type: str, correlation_id: str) -> Wait | None:
    """The earliest wait that expects `reply_type` under `correlation_id`, or None."""
    if isinstance(waits, tuple):
        wait: Wait
        for wait in waits:
            if reply_type in wait.expects and wait.correlationId == correlation_id:
                return wait
        return None
    assert isinstance(waits, Waits)
    return waits.matching(reply_type, correlation_id)


def kept_waits(waits: Sequence[Wait], keep: Callable[[Wait], bool], part: Part) -> Sequence[Wait]:
    """The waits `keep` keeps (the losers of a `first of` go at once): indexed anew when they
    were and stay many."""
    kept = tuple(w for w in waits if keep(w))
    return Waits.of(kept, part) if not isinstance(waits, tuple) and len(kept) >= INDEX_FROM // 2 else kept


def waits_of_frame(waits: Sequence[Wait], frame: str) -> list[Wait]:
    """The waits of tokens in `frame` (not the main one), in order."""
    if isinstance(waits, tuple):
        return [w for w in waits if w.frame == frame]
    assert isinstance(waits, Waits)
    return waits.of_frame(frame)


def first_due(waits: Sequence[Wait]) -> Wait | None:
    """The wait due first (the earliest parked of those due first), or None when none has a time."""
    if isinstance(waits, tuple):
        best: Wait | None = None
        best_due = 0.0
        for wait in waits:
            due = wait.due
            if due is not None and (best is None or due < best_due):
                best, best_due = wait, due
        return best
    assert isinstance(waits, Waits)
    return waits.first_due()


def earliest_due(waits: Sequence[Wait]) -> float | None:
    """The earliest due time of the waits (seconds since the epoch), or None."""
    wait = first_due(waits)
    return wait.due if wait is not None else None


def status_of(waits: Sequence[Wait], part: Part) -> str:
    """The status of an instance with these waits (at least one): what each shows, each once,
    in the order they began to be waited on; `waiting_for_a_and_b` when several
    (`listed_status`)."""
    if isinstance(waits, tuple):
        parts = tuple(dict.fromkeys(part(w) for w in waits))
        return listed_status(parts, len(parts))
    assert isinstance(waits, Waits)
    return waits.status()


def next_action_of(waits: Sequence[Wait]) -> str:
    """`nextAction` of an instance with these waits (at least one): the steps waiting, each
    once, in the order they began to be waited on (`listed_steps`)."""
    if isinstance(waits, tuple):
        steps = tuple(dict.fromkeys(w.step for w in waits))
        return listed_steps(steps, len(steps))
    assert isinstance(waits, Waits)
    return waits.next_action()


def token_of(tokens: Sequence[Token], token_id: int) -> Token | None:
    """The token `token_id`, or None."""
    if isinstance(tokens, tuple):
        token: Token
        for token in tokens:
            if token.id == token_id:
                return token
        return None
    assert isinstance(tokens, Tokens)
    return tokens.get(token_id)


def with_token(tokens: Sequence[Token], token: Token) -> Sequence[Token]:
    """`tokens` with `token` in place of the one with its id."""
    if isinstance(tokens, tuple):
        if len(tokens) < INDEX_FROM:
            return (token,) if len(tokens) == 1 else tuple(token if t.id == token.id else t for t in tokens)
        tokens = Tokens.of(tokens)  # many, read from a store: indexed once (see INDEX_FROM)
    assert isinstance(tokens, Tokens)
    return tokens.replaced(token)


def with_new_token(tokens: Sequence[Token], token: Token) -> Sequence[Token]:
    """`tokens` and `token` (a new id, the highest) after them."""
    if isinstance(tokens, tuple):
        return (*tokens, token) if len(tokens) + 1 < INDEX_FROM else Tokens.of(itertools.chain(tokens, (token,)))
    assert isinstance(tokens, Tokens)
    return tokens.added(token)


def without_token(tokens: Sequence[Token], token_id: int) -> Sequence[Token]:
    """`tokens` without the one `token_id`; a tuple again once they are few."""
    if isinstance(tokens, tuple):
        if len(tokens) < INDEX_FROM:
            return tuple(t for t in tokens if t.id != token_id)
        tokens = Tokens.of(tokens)  # many, read from a store: indexed once (see INDEX_FROM)
    assert isinstance(tokens, Tokens)
    out = tokens.removed(token_id)
    return tuple(out) if len(out) < INDEX_FROM // 2 else out


def kept_tokens(tokens: Sequence[Token], keep: Callable[[Token], bool]) -> Sequence[Token]:
    """The tokens `keep` keeps: indexed anew when they were and stay many."""
    kept = tuple(t for t in tokens if keep(t))
    return Tokens.of(kept) if not isinstance(tokens, tuple) and len(kept) >= INDEX_FROM // 2 else kept


def without_frame_tokens(tokens: Sequence[Token], frame: str) -> Sequence[Token]:
    """`tokens` without those in `frame` (not the main one)."""
    if isinstance(tokens, tuple):
        return tuple(t for t in tokens if t.frame != frame)
    assert isinstance(tokens, Tokens)
    out = tokens
    for token_id in tokens.ids_in(frame):
        out = out.removed(token_id)
    return tuple(out) if len(out) < INDEX_FROM // 2 else out
