"""`first of name { branch a { ... } branch b { ... } }`: every branch starts, the first to
reach the join wins. The others are cancelled at that moment: their tokens stop, their waits
are dropped (a command still awaiting its reply is abandoned, so a late success is undone and
a late failure recorded, as after any step that gave up), and the steps they completed in
this run of the block are undone, most recent first, each undo awaited (with its timeout and
retries) before the next. The winner's token waits at the join until the last undo is
confirmed (`InstanceState.cancels`, which keeps the record of every block won), then goes on with `name.winner` bound to the winner's
branch. An undo that cannot be confirmed fails the instance, whose compensation starts with
the losers' undos still to do (and leaves the ones the block took over: `undos_taken`).

How a run of the block is told apart: each branch's token carries `<fork key>=<branch>` in its
`forks` (the fork key is `<frame>:<fork node>#<seq>`, as for `parallel`), and the fork key's
entry in `joins` holds how many steps had completed when the block began. A completion after
that, in the block's frame (or a frame called from it), made by a step of a losing branch,
is the losers' (which branch a step belongs to is a fact of the graph: `Members`).
"""

from __future__ import annotations

import dataclasses

import networkx as nx

from procflow.dsl import model as m
from procflow.interpreter.compensation import Compensating
from procflow.interpreter.indexed import kept_tokens, kept_waits
from procflow.interpreter.state import (
    EMPTY,
    Cancel,
    Compensation,
    Token,
    UndoCommand,
    Wait,
)
from procflow.interpreter.transition import without


class Members:
    """Which branch of a `first of` block each node of a definition belongs to (worked out
    once per definition, on first use: `ProcessDefinition.worked_out`)."""

    __slots__ = ("definition", "_of")

    def __init__(self, definition: m.ProcessDefinition) -> None:
        self.definition = definition
        self._of: dict[str, dict[str, str]] = {}

    def of(self, fork_id: str) -> dict[str, str]:
        """node id -> the branch of the block `fork_id` it belongs to (nodes outside: absent)."""
        found = self._of.get(fork_id)
        if found is None:
            found = self._of[fork_id] = self._walk(fork_id)
        return found

    def _walk(self, fork_id: str) -> dict[str, str]:
        definition = self.definition
        graph: nx.MultiDiGraph = definition.graph
        join: str = graph.nodes[fork_id]["join"]
        node = definition.nodes[fork_id]
        assert isinstance(node, m.ForkNode)
        found: dict[str, str] = {}
        for branch in node.branch_names:
            work = [definition.follow(fork_id, f"branch:{branch}")]
            while work:
                current = work.pop()
                if current == join or current in found:
                    continue
                found[current] = branch
                work.extend(way.target for way in definition.ways_out(current))
        return found


def members_of(definition: m.ProcessDefinition) -> Members:
    """The branch membership of a definition's `first of` blocks (kept with the definition)."""
    return definition.worked_out(Members, Members)


def undo_key(undo: UndoCommand) -> tuple[str, str, str]:
    """What tells one undo of a run apart: its frame, its step and the round it completed in."""
    return undo.frame, undo.step, undo.round


def fork_key_of(entry: str) -> tuple[str, str]:
    """(fork key, branch) of a token's `forks` entry: `key=branch` in a `first of` block, the
    bare key (and no branch) in a `parallel` one."""
    key, mark, branch = entry.rpartition("=")
    return (key, branch) if mark else (entry, "")


def _inside(forks: tuple[str, ...], prefix: str) -> tuple[str, ...]:
    """The entries of a token's `forks` for blocks inside the one whose entries start with
    `prefix` (those after its entry: the blocks around it are left alone)."""
    index = next((i for i, entry in enumerate(forks) if entry.startswith(prefix)), len(forks))
    return forks[index + 1 :]


class FirstOf(Compensating):
    """The first of a block's branches to arrive wins; the others are cancelled and undone."""

    __slots__ = ()

    def first_fork(self, token: Token, node: m.ForkNode, definition: m.ProcessDefinition) -> None:
        """Every branch starts, each token marked with its branch (see the module doc)."""
        fork_key = f"{token.frame}:{node.id}#{self._next_seq()}"
        self.state.joins = {**self.state.joins, fork_key: len(self.state.completed)}
        self._remove_token(token)
        for branch in node.branch_names:
            first = definition.follow(node.id, f"branch:{branch}")
            child = Token(self._next_seq(), first, token.frame, token.loops, (*token.forks, f"{fork_key}={branch}"))
            self._add_token(child)
            self.ready.append(child)

    def first_arrived(self, token: Token, node: m.JoinNode, definition: m.ProcessDefinition) -> bool:
        """The winner reached the join: cancel the others, bind `name.winner`, and start undoing
        what the losers completed. True when the token may go on at once (nothing to undo)."""
        fork_key, winner = fork_key_of(token.forks[-1])
        token.forks = token.forks[:-1]
        began = self.state.joins.get(fork_key, len(self.state.completed))
        self.state.joins = without(self.state.joins, fork_key)
        frame = self.frames[token.frame]
        self._bind(frame, node.name, {"winner": winner})
        fork_id: str = definition.graph.nodes[node.id]["fork"]
        undos, attempts = self._cancel_losers(token, fork_key, winner)
        undos += self._losers_undos(began, token.frame, members_of(definition).of(fork_id), winner)
        if not undos:
            return True
        self.state.cancels = (*self.state.cancels, Cancel(block=node.name, fork=fork_key, token=token.id, winner=winner, pending=undos, attempts=attempts))
        return self._next_cancel_undo(len(self.state.cancels) - 1)

    def _cancel_losers(self, winner_token: Token, fork_key: str, winner: str) -> tuple[tuple[UndoCommand, ...], int]:
        """Stop every token of the block but the winner's: drop their waits (abandoning a command
        that awaits its reply) and the joins and `first of` undos of blocks inside them. Returns
        the undos those inner blocks had not finished (and the attempts of the one in flight)."""
        prefix = fork_key + "="
        state = self.state
        losers = {t.id for t in state.tokens if t.id != winner_token.id and any(f.startswith(prefix) for f in t.forks)}
        if not losers:
            return (), 0
        inner_keys = {fork_key_of(f)[0] for t in state.tokens if t.id in losers for f in _inside(t.forks, prefix)}
        for wait in state.waits:
            if wait.token in losers and wait.kind in ("reply", "backoff") and wait.commandName:
                self._abandon(wait)
        state.waits = kept_waits(state.waits, lambda w: w.token not in losers, self._status_part)
        state.tokens = kept_tokens(state.tokens, lambda t: t.id not in losers)
        self.ready = [t for t in self.ready if t.id not in losers]
        state.joins = {k: v for k, v in state.joins.items() if k not in inner_keys} or EMPTY
        inner = tuple(c for c in state.cancels if c.token in losers and c.pending and not c.handedOver)
        state.cancels = tuple(dataclasses.replace(c, handedOver=True) if c in inner else c for c in state.cancels)
        # (The first inner undo is sent again first: its attempts go on from where they were.)
        return tuple(undo for c in inner for undo in c.pending), inner[0].attempts if inner else 0

    def _losers_undos(self, began: int, frame_id: str, members: dict[str, str], winner: str) -> tuple[UndoCommand, ...]:
        """The undos of the steps the losing branches completed since the block began, most
        recent first (those an inner block's cancel took over already left out). A completion
        keeps its undo: the cancel's record says it is done here, so a later failure leaves it
        (`undos_taken`); the completions a store has written are never rewritten."""
        completed = self.state.completed
        taken = self.undos_taken()
        found: list[UndoCommand] = []
        for index in range(began, len(completed)):
            undo = completed[index].undo
            if undo is None or (taken and undo_key(undo) in taken):
                continue
            node_id = self._node_in_frame(undo.frame, undo.step, frame_id)
            if node_id is None or members.get(node_id, winner) == winner:
                continue
            found.append(undo)
        return tuple(reversed(found))

    def _node_in_frame(self, completion_frame: str, step: str, frame_id: str) -> str | None:
        """The node of `frame_id` a completion was made under: its step, when made in that
        frame, or the call that (directly or not) started the frame it was made in."""
        node_id = step
        current = completion_frame
        while current != frame_id:
            frame = self.frames.get(current)
            if frame is None or frame.parent is None or frame.call is None:
                return None
            node_id, current = frame.call, frame.parent
        return node_id

    # ---------------------------------------------------------------- the losers' undos
    def _cancel_at(self, token_id: int) -> int:
        """The index of the cancel under way whose winner is the token `token_id`."""
        return next(i for i, c in enumerate(self.state.cancels) if c.token == token_id and c.pending and not c.handedOver)

    def _replace_cancel(self, index: int, cancel: Cancel) -> None:
        cancels = self.state.cancels
        self.state.cancels = (*cancels[:index], cancel, *cancels[index + 1 :])

    def _next_cancel_undo(self, index: int) -> bool:
        """Send the next undo of the cancel at `index` and wait for its confirmation; True when
        none is left (the cancel is over: its winner goes on past the join)."""
        cancel = self.state.cancels[index]
        while cancel.pending:
            undo = cancel.pending[0]
            attempt = cancel.attempts + 1
            cancel = dataclasses.replace(cancel, attempts=attempt)
            self._replace_cancel(index, cancel)
            self._send_undo(undo, attempt)
            spec = self._undo_spec(undo)
            if spec is not None and spec.replies:
                token = self._token(cancel.token)
                self._park(
                    Wait(
                        cancel.token, f"undo:{undo.step}", token.node, token.frame, "cancel", tuple(spec.replies), undo.correlationId,
                        commandName=undo.commandName, attempt=attempt, since=self.now_at, timeoutAt=self._due_or_none(spec.timeout),
                    )
                )
                return False
            cancel = dataclasses.replace(cancel, pending=cancel.pending[1:], undone=(*cancel.undone, undo), attempts=0)
            self._replace_cancel(index, cancel)
        return True

    def _winner_goes_on(self, token_id: int) -> None:
        token = self._token(token_id)
        definition = self._definition(self.frames[token.frame].process)
        token.node = definition.follow(token.node, "next")
        self.run(token)

    def cancel_confirmed(self, wait: Wait) -> None:
        """The undo in flight of a cancel is confirmed: on to the next."""
        index = self._cancel_at(wait.token)
        cancel = self.state.cancels[index]
        self._replace_cancel(index, dataclasses.replace(cancel, pending=cancel.pending[1:], undone=(*cancel.undone, cancel.pending[0]), attempts=0))
        if self._next_cancel_undo(index):
            self._winner_goes_on(cancel.token)

    def cancel_timed_out(self, wait: Wait) -> None:
        """The undo in flight got no confirmation in time: sent again (after its backoff) while
        it has retries left, else the instance fails and compensates, the losers' undos first."""
        index = self._cancel_at(wait.token)
        cancel = self.state.cancels[index]
        undo = cancel.pending[0]
        spec = self._undo_spec(undo)
        timeout = spec.timeout if spec else None
        if wait.kind == "cancel" and timeout is not None and cancel.attempts <= timeout.retries:
            delay = timeout.backoff_before(cancel.attempts + 1)
            if delay > 0:
                self._park(dataclasses.replace(wait, kind="cancel_backoff", since=self.now_at, timeoutAt=self._due(delay)))
                return
        elif wait.kind != "cancel_backoff":
            self.fail("timeout", f"the undo `{undo.commandName}` of `{undo.step}`, which lost `first of {cancel.block}`, got no reply", undo.step)
            return
        attempt = cancel.attempts + 1
        self._replace_cancel(index, dataclasses.replace(cancel, attempts=attempt))
        self._send_undo(undo, attempt)
        self._park(dataclasses.replace(wait, kind="cancel", attempt=attempt, since=self.now_at, timeoutAt=self._due_or_none(timeout)))

    # ---------------------------------------------------------------- when the instance ends first
    def cancelled_undos(self) -> tuple[tuple[UndoCommand, ...], dict[str, int]]:
        """Hand over the undos of every cancel under way (the one in flight first), with the
        attempts already sent of each in flight: a failure's compensation does them."""
        if not self.state.cancels:  # (most instances: no `first of` block was won)
            return (), EMPTY
        undos: tuple[UndoCommand, ...] = ()
        attempts: dict[str, int] = {}
        under_way = [c for c in self.state.cancels if c.pending and not c.handedOver]
        for cancel in reversed(under_way):  # the latest block's first
            if cancel.attempts:
                undo = cancel.pending[0]
                attempts[f"{undo.frame}:{undo.step}{undo.round}"] = cancel.attempts
            undos += cancel.pending
        if under_way:
            self.state.cancels = tuple(dataclasses.replace(c, handedOver=True) if c in under_way else c for c in self.state.cancels)
        return undos, attempts

    def undos_taken(self) -> frozenset[tuple[str, str, str]]:
        """The undos (`undo_key`) that `first of` blocks took over from their losers' completions."""
        cancels = self.state.cancels
        if not cancels:
            return frozenset()
        return frozenset(undo_key(u) for c in cancels for u in (*c.undone, *c.pending))

    def complete(self, outcome: str | None = None, timed_out: bool = False) -> None:
        """As `Compensating.complete`; the losers' undos not done yet are still done, after."""
        undos, attempts = self.cancelled_undos()
        super().complete(outcome, timed_out)
        self._undo_later(undos, attempts)

    def deadline_passed(self, reason: str) -> None:
        """As `Compensating.deadline_passed`; with a deadline handler, the losers' undos not done
        yet are still done, beside it (without one, the failure's compensation does them)."""
        if self.definition.outcomes(self.definition.start).get("deadline") is None:
            super().deadline_passed(reason)
            return
        undos, attempts = self.cancelled_undos()
        super().deadline_passed(reason)
        self._undo_later(undos, attempts)

    def _undo_later(self, undos: tuple[UndoCommand, ...], attempts: dict[str, int]) -> None:
        """Undo `undos` as a late success is undone: through the compensation record, the
        instance's status settling back once they are confirmed."""
        if not undos:
            return
        comp = self.state.compensation
        if comp is None:
            comp = Compensation(pending=(), undone=(), failed=None, settledStatus=None, attempts=EMPTY, roundStart=1)
            self.state.compensation = comp
        comp.settledStatus = self.state.status
        comp.pending = (*undos, *comp.pending)
        comp.attempts = {**comp.attempts, **attempts}
        self._next_undo()
