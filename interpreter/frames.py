"""The frames one transition works on (see `WorkingFrames`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from immutables import Map

from procflow.interpreter.indexed import INDEX_FROM, Frames
from procflow.interpreter.state import EMPTY, ROOT, Frame, FrameView


class WorkingFrames(dict[str, FrameView]):
    """The frames a transition works on: the main one (the working state itself), and the
    frames of called processes and of for-each items, each copied from the stored state the
    first time the transition reads it. So a transition copies the frames it touches, not all
    of them (a for-each over a thousand items keeps a thousand frames)."""

    __slots__ = ("stored", "removed")

    def __init__(self, main: FrameView, stored: Mapping[str, Frame]) -> None:
        super().__init__()
        self[ROOT] = main
        self.stored = stored
        self.removed: set[str] = set()

    def __missing__(self, key: str) -> FrameView:
        if key in self.removed:
            raise KeyError(key)
        own = dataclasses.replace(self.stored[key])
        self[key] = own
        return own

    def find(self, key: str) -> FrameView | None:
        """The frame `key`, or None when there is none."""
        try:
            return self[key]
        except KeyError:
            return None

    def process_of(self, key: str) -> str:
        """The process the frame `key` runs (read, not copied)."""
        frame = self.get(key)
        return (frame if frame is not None else self.stored[key]).process

    def remove(self, key: str) -> None:
        """The frame `key` is gone (a for-each item that ended)."""
        self.pop(key, None)
        self.removed.add(key)

    @property
    def changed(self) -> bool:
        """True when the transition read, added or removed a frame besides the main one."""
        return len(self) > 1 or bool(self.removed)

    def written(self) -> Mapping[str, Frame]:
        """The frames of the new state: the stored ones but those removed, with this run's own.
        Many frames (a for-each's items) are kept in a persistent map, which the next state
        shares but for the frames this run changed (`indexed.Frames`); a few in a dict."""
        stored = self.stored
        own = [(key, frame) for key, frame in self.items() if isinstance(frame, Frame)]
        # Indexed from INDEX_FROM on, and a big dict read from a store is indexed once (see `indexed.INDEX_FROM`).
        if not isinstance(stored, dict) or len(stored) + len(own) >= INDEX_FROM:
            frames = (stored if isinstance(stored, Frames) else Frames(Map(stored))).changed(self.removed, own)
            if len(frames) >= INDEX_FROM // 2:
                return frames
            return dict(frames.items()) or EMPTY
        out = dict(stored)
        for key in self.removed:
            out.pop(key, None)
        out.update(own)
        return out or EMPTY
