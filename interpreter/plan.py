"""What the engine works out once per definition instead of on every transition.

A `Plan` belongs to one compiled definition (definitions are immutable): the reference an
instance pins, the called processes by name, and per step what every wait on it needs (the
replies it expects, its command's name, the status an instance waiting there shows). Also the
small immutable values many states share: the `sent` texts of history entries and the tokens
of parked instances. Nothing here depends on an instance.
"""

from __future__ import annotations

from dataclasses import dataclass

from procflow.dsl import expressions as ex
from procflow.dsl import model as m
from procflow.interpreter.messages import Dispatch
from procflow.interpreter.state import EMPTY, DefinitionRef, Token


@dataclass(frozen=True, slots=True)
class StepPlan:
    """What a wait on one step needs, worked out once."""

    expects: tuple[str, ...]
    command_name: str | None
    status: str
    is_timer: bool


class Plan:
    """The per-definition caches of the engine (see the module doc)."""

    __slots__ = ("definition", "ref", "payload_schemas", "correlation_field", "root_status", "_processes", "_steps", "_races", "_fields")

    def __init__(self, definition: m.ProcessDefinition) -> None:
        self.definition = definition
        self.ref = DefinitionRef(name=definition.name, version=definition.version, fingerprint=definition.fingerprint)
        self.payload_schemas = _declares_payload_schemas(definition)
        """False when neither the process nor one it calls declares a reply or event payload schema."""
        correlate = definition.correlate
        self.correlation_field = _input_field(correlate.expr) if correlate is not None else None
        """The input field the correlation key is (`correlate by input.orderId`), else None."""
        self.root_status: dict[str, str] = {}
        """node id -> the status of an instance waiting there (steps and races of the main process)."""
        self._processes: dict[str, m.ProcessDefinition] = {definition.name: definition}
        self._steps: dict[int, StepPlan] = {}
        self._races: dict[int, str] = {}
        self._fields: dict[int, InputFields | None] = {}

    def process(self, name: str) -> m.ProcessDefinition:
        """This definition or one it calls, by name."""
        found = self._processes.get(name)
        if found is None:
            found = self._processes[name] = self.definition.definition_of(name)
        return found

    def step(self, node: m.StepNode) -> StepPlan:
        """The plan of a step node of this definition (or of one it calls)."""
        plan = self._steps.get(id(node))
        if plan is None:
            expects = tuple(node.replies) + tuple(r for r in node.failures if r not in node.replies)
            if node.status:
                status = node.status
            elif node.command is not None:
                status = f"waiting_for_{node.command.participant}"
            elif node.is_timer:
                status = f"waiting_for_{node.name}"
            else:
                status = f"waiting_for_{node.replies[0] if node.replies else node.name}"
            plan = self._steps[id(node)] = StepPlan(expects, node.command.name if node.command else None, status, node.is_timer)
        return plan

    def input_fields(self, mapping: m.Mapping_) -> InputFields | None:
        """For a mapping that only copies fields of the input (`{ orderId: input.orderId }`, the
        usual command payload): its (key, input field) pairs, so the engine builds the payload
        as `{key: input.get(field)}`, which is what evaluating it gives. None for any other."""
        found = self._fields.get(id(mapping), _UNKNOWN)
        if found is _UNKNOWN:
            found = self._fields[id(mapping)] = _input_fields(mapping.expr)
        return found

    def race_status(self, node: m.RaceNode) -> str:
        """The status of an instance waiting in a race."""
        status = self._races.get(id(node))
        if status is None:
            status = self._races[id(node)] = node.status or f"waiting_for_{node.name}"
        return status


InputFields = tuple[tuple[str, str], ...]
_UNKNOWN: InputFields = (("", ""),)  # not worked out yet (a marker never returned)


def _input_field(expr: ex.Expr) -> str | None:
    if isinstance(expr, ex.Field) and isinstance(expr.base, ex.Var) and expr.base.name == "input":
        return expr.name
    return None


def _input_fields(expr: ex.ObjectExpr) -> InputFields | None:
    count, depth = ex.measure(expr)
    if count > ex.MAX_NODES or depth > ex.MAX_DEPTH:
        return None  # refused when evaluated (E106): leave it to the evaluator
    pairs = []
    for key, value in expr.pairs:
        field = _input_field(value)
        if field is None:
            return None
        pairs.append((key, field))
    return tuple(pairs)


def _declares_payload_schemas(definition: m.ProcessDefinition) -> bool:
    stack = [definition]
    while stack:
        process = stack.pop()
        if any(v is not None for v in process.events.values()) or any(
            v is not None for p in process.participants.values() for v in p.replies.values()
        ):
            return True
        stack.extend(process.called.values())
    return False


_PLANS: dict[int, Plan] = {}


def plan_of(definition: m.ProcessDefinition) -> Plan:
    """The plan of a definition (built on first use; the plan keeps its definition alive, so
    the id it is filed under cannot be reused while it is filed)."""
    plan = _PLANS.get(id(definition))
    if plan is None or plan.definition is not definition:
        if len(_PLANS) > 256:
            _PLANS.clear()
        plan = _PLANS[id(definition)] = Plan(definition)
    return plan


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


def resting(tokens: tuple[Token, ...]) -> tuple[Token, ...]:
    """The tokens of a stored state. A token with no loop counters and no open forks is the
    same value in every instance parked at its node, so those instances share one (and, when
    it is their only token, one tuple of it): the engine copies a token before it moves it,
    so a shared one is never changed. Other tokens are kept as they are."""
    if len(tokens) == 1:
        return _resting(tokens[0]) or tokens
    return tuple((_resting(t) or (t,))[0] for t in tokens)


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
