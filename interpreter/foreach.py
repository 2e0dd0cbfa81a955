"""For each item of a list: the body runs once per item, each item in a frame of its own.

A for-each's run (`EachRun`, in the state's `each` under its run key) keeps the items, how
many have started, run, ended and failed, and each item's result by index. An item runs in a
frame whose data is the enclosing frame's plus the item under its name, and whose
correlation id is the enclosing one's with `/<item name>/<n>` after it (`ord_1/line/2`): the
participant that answers for item 2 answers under that id, so its reply finds that item's
wait, and what the item completes is undone, in reverse, with the rest when the instance
fails. An item that reaches a fail end fails the instance, unless the for-each tolerates one
more failed item (`tolerate N failures`): then only the item ends, its result saying so.

Items start in order, as many at once as the for-each allows (one after another unless `in
parallel`; `at most N`); when one ends, the next starts. When the last ends, the results are
bound to the `collect` name in the enclosing frame and the process goes on after the block.
Each step here touches the item's own records and counters: none walks the other items.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from procflow.dsl import model as m
from procflow.interpreter.compensation import Compensating
from procflow.interpreter.indexed import (
    no_results,
    waits_of_frame,
    with_result,
    without_frame_tokens,
)
from procflow.interpreter.state import EMPTY, EachRun, Frame, FrameView, Token
from procflow.interpreter.transition import Failed, without


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an object" if isinstance(value, dict) else type(value).__name__


class Iterating(Compensating):
    """The for-each: starting items, ending them, failing one when that is tolerated."""

    __slots__ = ()

    def enter_each(self, token: Token, node: m.EachNode, frame: FrameView, definition: m.ProcessDefinition) -> bool:
        """A for-each begins: its items start, as many at once as it allows. True when the
        token goes on at once (an empty list: the results are empty)."""
        items = self._eval(node.items, frame, "the list of `{0.name} in {0.items.text}`", node)
        if not isinstance(items, list):
            raise Failed("error", f"`{node.name} in {node.items.text}` gave {_kind(items)}, not a list", None)
        gather = node.gather
        if not items:
            if node.collect:
                self._bind(frame, node.collect, [])
            token.node = definition.follow(gather, "next")
            return True
        key = f"{token.frame}:{node.id}#{self._next_seq()}"
        run = EachRun(
            node=node.id, frame=token.frame, items=tuple(items), results=no_results(len(items)), loops=token.loops,
            forks=token.forks,
        )
        self._remove_token(token)
        at_once = node.concurrency or len(items)
        for _ in range(min(at_once, len(items))):
            run = self._start_item(key, run, node, frame, definition)
        self._keep(key, run)
        return False

    def _keep(self, key: str, run: EachRun | None) -> None:
        each = self.state.each
        self.state.each = {**each, key: run} if run is not None else without(each, key)

    def _start_item(self, key: str, run: EachRun, node: m.EachNode, parent: FrameView, definition: m.ProcessDefinition) -> EachRun:
        """The next item starts: its frame, and a token at the body's first node."""
        index = run.started
        number = index + 1
        frame_id = f"{key}/{number}"
        self.frames[frame_id] = Frame(
            process=parent.process, input=parent.input, data={**parent.data, node.item: run.items[index]},
            correlationId=f"{parent.correlationId}/{node.item}/{number}", parent=run.frame, call=node.id, forEach=key, item=index,
        )
        child = Token(id=self._next_seq(), node=definition.follow(node.id, "body"), frame=frame_id, loops=run.loops, forks=run.forks)
        self._add_token(child)
        self.ready.append(child)
        return dataclasses.replace(run, started=number, running=run.running + 1)

    def item_done(self, token: Token, frame: FrameView) -> None:
        """The item's token reached the gather: its result is what the body bound."""
        key, index = frame.forEach, frame.item
        assert key is not None and index is not None
        run = self.state.each[key]
        node = self._definition(frame.process).nodes[run.node]
        assert isinstance(node, m.EachNode)
        data = frame.data
        result = {node.item: run.items[index], "status": "completed"}
        result.update((name, data[name]) for name in node.binds if name in data)
        self._remove_token(token)
        self._end_item(key, run, node, index, result, failed=False)

    def item_failed(self, token: Token, frame: FrameView, reason: str) -> bool:
        """The item reached a fail end: it ends failed when the for-each tolerates one more
        failed item (its other tokens and waits are given up), else the instance fails."""
        key, index = frame.forEach, frame.item
        assert key is not None and index is not None
        run = self.state.each[key]
        node = self._definition(frame.process).nodes[run.node]
        assert isinstance(node, m.EachNode)
        if run.failed >= node.tolerate:
            if node.tolerate:
                raise Failed(
                    "fail", f"{reason} ({run.failed + 1} items of `{node.name}` failed; it tolerates {node.tolerate})", None
                )
            return False
        frame_id = f"{key}/{index + 1}"
        for wait in waits_of_frame(self.state.waits, frame_id):
            if wait.kind in ("reply", "backoff") and wait.commandName:
                self._abandon(wait)
            self._unpark(wait)
        self.state.tokens = without_frame_tokens(self.state.tokens, frame_id)
        self.ready = [t for t in self.ready if t.frame != frame_id]
        result = {node.item: run.items[index], "status": "failed", "failure": reason}
        self._end_item(key, run, node, index, result, failed=True)
        return True

    def _end_item(self, key: str, run: EachRun, node: m.EachNode, index: int, result: dict[str, Any], failed: bool) -> None:
        """Record the item's result; start the next item, or, after the last, go on."""
        self.frames.remove(f"{key}/{index + 1}")
        run = dataclasses.replace(
            run, running=run.running - 1, done=run.done + 1, failed=run.failed + failed, results=with_result(run.results, index, result),
        )
        parent = self.frames[run.frame]
        definition = self._definition(parent.process)
        if run.started < len(run.items):
            self._keep(key, self._start_item(key, run, node, parent, definition))
            return
        if run.running:
            self._keep(key, run)
            return
        self._keep(key, None)
        if node.collect:
            self._bind(parent, node.collect, list(run.results))
        after = definition.follow(node.gather, "next")
        token = Token(id=self._next_seq(), node=after, frame=run.frame, loops=run.loops or EMPTY, forks=run.forks)
        self._add_token(token)
        self.ready.append(token)
