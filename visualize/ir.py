"""The diagram IR: plain data that the DOT and Mermaid printers draw, nothing else.

A flow diagram is nodes, edges and clusters (parallel branches, loops, swimlanes) with an
optional legend; a sequence diagram is lifelines and an ordered list of items (messages,
notes, and the starts, sections and ends of blocks, kept flat so that printing needs no
recursion). `procflow.visualize.flow` and `procflow.visualize.sequence` extract them from a
definition (and optionally a path or an instance state); the printers never look at the
definition again.
"""

from __future__ import annotations

from dataclasses import dataclass

# ---------------------------------------------------------------- flow

FLOW_NODE_KINDS = frozenset(
    {
        "start",  # where an instance begins
        "end",  # where it completes
        "fail",  # where it fails (title: the reason)
        "step",  # sends a command and awaits the reply
        "event",  # awaits an event (no command)
        "timer",  # waits for time to pass
        "xor",  # exclusive gateway
        "fork",  # parallel split
        "join",  # parallel join
        "race",  # event-based gateway
        "catch",  # one arm of a race: a message or timer that may arrive first
        "loop",  # head of a repeat loop
        "until",  # tail of a repeat loop
        "call",  # runs another process
        "undo",  # the compensation command of a step
        "collapsed",  # a parallel block or loop drawn as one shape (`--expand` opens it)
        "link",  # where a folded flow leaves one band and picks up in the next (title: the link's letter)
    }
)

NODE_STATES = ("completed", "current", "failed", "compensated")
"""What an instance overlay says about a node, in the legend's order."""


@dataclass(frozen=True, slots=True)
class Attached:
    """What the swimlane view draws inside a step's box instead of as a shape of its own, as
    BPMN attaches boundary events to an activity: `timeout` (the step fails when its reply
    does not come; `text` is `10m, 2 retries`) or `undo` (its compensation, in the same lane;
    `text` is the command as written, `lines` say when it runs anyway). `id` is the shape it
    stands for, so an overlay's state reaches it."""

    id: str
    kind: str  # timeout | undo
    text: str
    lines: tuple[str, ...] = ()
    state: str | None = None


@dataclass(frozen=True, slots=True)
class FlowNode:
    """A shape of the flow view: `kind` picks the shape, `title` and `lines` its text."""

    id: str
    kind: str
    title: str
    lines: tuple[str, ...] = ()
    state: str | None = None  # one of NODE_STATES, for an instance or path overlay
    note: str | None = None  # overlay text, e.g. "waiting until 2026-03-23T17:00:00Z"
    cluster: str | None = None  # id of the innermost cluster that holds it
    sign: str = ""  # the symbol drawn for gateways and events (×, +, ✉, ◷, ...)
    spine: bool = False  # on the main line (every first choice), which is drawn straight
    attached: tuple[Attached, ...] = ()  # swimlanes: a timeout end and an undo drawn inside a step's box


@dataclass(frozen=True, slots=True)
class FlowEdge:
    """A connection of the flow view; `kind` is the model's edge kind, or `compensation`."""

    source: str
    target: str
    kind: str
    label: str = ""
    taken: bool = False  # on the overlaid instance's or path's way
    spine: bool = False  # a link of the main line (every first choice), drawn straight


@dataclass(frozen=True, slots=True)
class FlowCluster:
    """A group of nodes: a parallel branch, a loop body, or a participant's swimlane."""

    id: str
    kind: str  # branch | loop | lane
    label: str
    parent: str | None = None


@dataclass(frozen=True, slots=True)
class Legend:
    """What an overlay says in words: a heading, lines of facts, and the colour key."""

    heading: str
    lines: tuple[str, ...]
    states: tuple[str, ...] = NODE_STATES


@dataclass(frozen=True, slots=True)
class FlowDiagram:
    """The flow view of one process."""

    name: str
    title: str
    nodes: tuple[FlowNode, ...]
    edges: tuple[FlowEdge, ...]
    clusters: tuple[FlowCluster, ...] = ()
    legend: Legend | None = None


# ---------------------------------------------------------------- sequence


@dataclass(frozen=True, slots=True)
class Lifeline:
    """A column of the sequence view: the orchestrator, a participant, or where events come from."""

    alias: str
    name: str
    participant: str | None = None  # the participant's name in the process; None for the orchestrator


@dataclass(frozen=True, slots=True)
class Message:
    """An arrow between two lifelines.

    `kind`: ``command``, ``reply``, ``failure`` (a failure reply), ``event``, ``undo`` (a
    compensation command) or ``undo_reply``.
    """

    source: str
    target: str
    label: str
    kind: str


@dataclass(frozen=True, slots=True)
class Note:
    """Text over one or more lifelines: a timeout, a retry, a timer, a failure, a status."""

    over: tuple[str, ...]
    text: str
    kind: str = "note"  # note | timeout | timer | fail | status


@dataclass(frozen=True, slots=True)
class BlockStart:
    """A block opens: `alt` (gateway arms, race arms), `par`, `loop`, `call` or `compensation`."""

    kind: str
    label: str


@dataclass(frozen=True, slots=True)
class BlockSection:
    """The next section of the innermost block: `else` of an `alt`, `and` of a `par`."""

    label: str


@dataclass(frozen=True, slots=True)
class BlockEnd:
    """The innermost block closes."""


SequenceItem = Message | Note | BlockStart | BlockSection | BlockEnd


@dataclass(frozen=True, slots=True)
class SequenceDiagram:
    """The sequence view: lifelines left to right, items top to bottom."""

    name: str
    title: str
    lifelines: tuple[Lifeline, ...]
    items: tuple[SequenceItem, ...]


# ---------------------------------------------------------------- labels shared by both views


def words(name: str) -> str:
    """An identifier as words: `reserve_inventory` -> `reserve inventory`."""
    return name.replace("_", " ")


def undo_label(command_name: str) -> str:
    """The words of an undo command: the command as the process wrote it (`payment.void`).

    Rearranged into words (`void payment`) a longer name read wrongly: `travel.cancel_flight`
    became "cancel flight travel"; the arrow already points at the participant's lifeline.
    """
    return command_name


def attached_lines(item: Attached) -> tuple[str, ...]:
    """The words of a row a step's box holds in the swimlane view: `◷ 10m, 2 retries → fails`,
    or the undo command as written and when it runs anyway."""
    if item.kind == "timeout":
        return (f"◷ {item.text or 'timeout'} → fails",)
    return (item.text, *item.lines)


def wait_text(timer: str) -> str:
    """A timer as an instruction: `after 1h` -> `wait 1h`, `until x` -> `wait until x`."""
    return "wait " + timer.removeprefix("after ")
