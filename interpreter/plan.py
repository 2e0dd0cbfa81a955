"""What the engine works out once per definition instead of on every transition.

A `Plan` belongs to one compiled definition and is kept with it (`plan_of`): the reference an
instance pins, the state every new instance starts from, and the status an instance waiting at
each node of the main process shows. What is a fact of the definition itself (the processes it
calls, the replies a wait expects, a payload copied from the input) the definition keeps as its
own cached properties. Also here: the small immutable values many states share, the `sent`
texts of history entries and the tokens of parked instances. Nothing here depends on an instance.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from procflow.dsl import model as m
from procflow.interpreter.indexed import Tokens
from procflow.interpreter.messages import Dispatch
from procflow.interpreter.state import EMPTY, SCHEMA_VERSION, DefinitionRef, InstanceState, Token


@dataclass(frozen=True, slots=True)
class StepPlan:
    """What a wait on one step needs."""

    expects: tuple[str, ...]
    command_name: str | None
    status: str
    is_timer: bool


class Plan:
    """The engine's view of one definition, made once (see the module doc)."""

    __slots__ = ("definition", "ref", "blank", "payload_schemas", "root_status", "frame_status")

    def __init__(self, definition: m.ProcessDefinition) -> None:
        self.definition = definition
        self.ref = DefinitionRef(name=definition.name, version=definition.version, fingerprint=definition.fingerprint)
        self.blank = InstanceState(
            workflowId="", type=definition.name, status="running", completedSteps=(), nextAction=None, timeoutAt=None,
            schemaVersion=SCHEMA_VERSION, definition=self.ref, correlationId="", startedAt="", updatedAt="",
            deadlineAt=None, input=EMPTY, seq=1,
        )
        """A new instance before it has an id, input or start time: the fields every new
        instance starts with (`engine.start` copies it and fills in its own)."""
        self.payload_schemas = any(p.declares_payload_schemas for p in definition.processes.values())
        """False when neither the process nor one it calls declares a reply or event payload schema."""
        self.root_status: dict[str, str] = {}
        """node id -> the status of an instance waiting there (steps and races of the main process)."""
        self.frame_status: dict[tuple[str, str], str] = {}
        """(process, node id) -> the same, for waits in other frames (called processes, for-each items)."""

    @property
    def correlation_field(self) -> str | None:
        """The input field the correlation key is (`correlate by input.orderId`), else None."""
        return self.definition.correlation_field

    def process(self, name: str) -> m.ProcessDefinition:
        """This definition or one it calls, by name."""
        return self.definition.processes[name]

    def step(self, node: m.StepNode) -> StepPlan:
        """What a wait on a step node of this definition (or of one it calls) needs."""
        expects = node.replies + tuple(r for r in node.failure_replies if r not in node.replies)
        return StepPlan(expects, node.command.name if node.command else None, waiting_status(node), node.is_timer)

    def input_fields(self, mapping: m.Mapping_) -> InputFields | None:
        """For a mapping that only copies fields of the input (`{ orderId: input.orderId }`, the
        usual command payload): its (key, input field) pairs, so the engine builds the payload
        as `{key: input.get(field)}`, which is what evaluating it gives. None for any other."""
        return mapping.copies_input

    def race_status(self, node: m.RaceNode) -> str:
        """The status of an instance waiting in a race."""
        return waiting_status(node)


InputFields = tuple[tuple[str, str], ...]


def waiting_status(node: m.StepNode | m.RaceNode) -> str:
    """The status an instance waiting at a step or a race shows: the one the process declares,
    else `waiting_for_<participant>` (a step that commands), `waiting_for_<step>` (a timer, a
    human task),
    `waiting_for_<first awaited event>`, or `waiting_for_<race>`."""
    if node.status:
        return node.status
    if isinstance(node, m.RaceNode):
        return f"waiting_for_{node.name}"
    if node.command is not None and node.task is None:
        return f"waiting_for_{node.command.participant}"
    if node.is_timer or node.task is not None:
        return f"waiting_for_{node.name}"
    return f"waiting_for_{node.replies[0] if node.replies else node.name}"


def plan_of(definition: m.ProcessDefinition) -> Plan:
    """The plan of a definition (made on first use and kept with the definition)."""
    return definition.worked_out(Plan, Plan)


_SENT: dict[tuple[str, int], tuple[str, ...]] = {}


def sent_texts(dispatches: list[Dispatch]) -> tuple[str, ...]:
    """A history entry's `sent`: `commandName#attempt` per dispatch. The usual single send is
    a shared tuple of one shared text (bounded cache), not a new pair of objects per entry."""
    if not dispatches:
        return ()
    if len(dispatches) == 1:
        key = (dispatches[0].command.commandName, dispatches[0].attempt)
        found = _SENT.get(key)
        if found is None:
            if len(_SENT) > 4096:
                _SENT.clear()
            found = _SENT[key] = (f"{key[0]}#{key[1]}",)
        return found
    return tuple(f"{d.command.commandName}#{d.attempt}" for d in dispatches)


_RESTING: dict[tuple[int, str, str], tuple[Token]] = {}


def resting(tokens: Sequence[Token], moved: Collection[int]) -> Sequence[Token]:
    """The tokens of a stored state, once the tokens `moved` have moved. A token with no loop
    counters and no open forks is the same value in every instance parked at its node, so
    those instances share one (and, when it is their only token, one tuple of it): the engine
    copies a token before it moves it, so a shared one is never changed. Other tokens are
    kept as they are. Only the tokens that moved are looked at (the others already rest)."""
    if isinstance(tokens, tuple):  # (first: asking whether it is a `Tokens`, an abstract `Sequence`, costs ten times this)
        if len(tokens) == 1:
            return _resting(tokens[0]) or tokens
        return tuple((_resting(t) or (t,))[0] for t in tokens)
    assert isinstance(tokens, Tokens)
    for token_id in moved:
        token = tokens.get(token_id)
        shared = _resting(token) if token is not None else None
        if shared is not None:
            tokens = tokens.replaced(shared[0])
    return tokens


def _resting(token: Token) -> tuple[Token] | None:
    if token.loops or token.forks:
        return None
    key = (token.id, token.node, token.frame)
    found = _RESTING.get(key)
    if found is None:
        if len(_RESTING) > 4096:
            _RESTING.clear()
        found = _RESTING[key] = (Token(id=token.id, node=token.node, frame=token.frame, loops=EMPTY, forks=()),)
    return found
