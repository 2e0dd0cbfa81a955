"""The syntax tree of a .proc file: what the author wrote, with a span on every node.

The parser builds these (`dsl/transformer.py`); the compiler reads them, and the printer
(`dsl/printer.py`) writes them back as text. Nothing here knows about lark.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from procflow.dsl.diagnostics import Span
from procflow.dsl.expressions import Expr, ObjectExpr


@dataclass(frozen=True, slots=True)
class Name:
    """An identifier as written, with its span."""

    text: str
    span: Span


@dataclass(frozen=True, slots=True)
class Duration:
    """A duration literal such as `30s`, `1h30m` or `2d`."""

    seconds: float
    text: str
    span: Span


@dataclass(frozen=True, slots=True)
class TypeSpec:
    """A field type of an input or payload contract, as JSON Schema."""

    schema: dict[str, Any]
    span: Span


@dataclass(frozen=True, slots=True)
class RecordType:
    """`{ name: type, other?: type }`: an object contract."""

    fields: tuple[tuple[Name, bool, TypeSpec], ...]  # (name, optional, type)
    span: Span

    def to_schema(self) -> dict[str, Any]:
        """The record as a JSON Schema object."""
        props = {name.text: spec.schema for name, _, spec in self.fields}
        required = [name.text for name, optional, _ in self.fields if not optional]
        schema: dict[str, Any] = {"type": "object", "properties": props}
        if required:
            schema["required"] = required
        return schema


@dataclass(frozen=True, slots=True)
class Retry:
    """`retry N backoff D xF`: resend up to N more times, waiting D, then D*F, ..."""

    count: int
    backoff: Duration | None
    factor: float
    span: Span


@dataclass(frozen=True, slots=True)
class ReplyRetry:
    """`retry N backoff D xF max M jitter then`: an error reply resends the step's command."""

    retry: Retry
    max_delay: Duration | None
    jitter: bool
    span: Span


@dataclass(frozen=True, slots=True)
class Timeout:
    """`within D [retry ...]`."""

    duration: Duration
    retry: Retry | None
    span: Span


@dataclass(frozen=True, slots=True)
class Send:
    """`send participant.command { mapping }`."""

    participant: Name
    command: Name
    data: ObjectExpr | None
    span: Span


@dataclass(frozen=True, slots=True)
class Await:
    """`await reply_a, reply_b as bound within D retry ...`."""

    replies: tuple[Name, ...]
    bind: Name | None
    timeout: Timeout | None
    span: Span


@dataclass(frozen=True, slots=True)
class OnReply:
    """`on reply_x [as bound] fail "reason"`: replies that mean the step failed; or
    `on reply_x [as bound] { statements }`: replies that lead to a recovery path instead
    (`handler`; `reason` is then None)."""

    replies: tuple[Name, ...]
    bind: Name | None
    reason: str | None
    span: Span
    handler: tuple[Statement, ...] | None = None
    retry: ReplyRetry | None = None  # `on r retry 3 backoff 10s x2 then ...`: resend first


@dataclass(frozen=True, slots=True)
class Compensate:
    """`compensate participant.command { mapping } awaiting reply within D retry ...`."""

    participant: Name
    command: Name
    data: ObjectExpr | None
    replies: tuple[Name, ...]
    timeout: Timeout | None
    span: Span
    even_on: tuple[Name, ...] = ()  # `... even on timeout, charge_error` (or `failure`: any): also undo the step then
    refused: tuple[Name, ...] = ()  # `... unless cancel_refused`: replies that say the undo cannot be done


@dataclass(frozen=True, slots=True)
class Wait:
    """A timer: `wait D` or `wait until expr`."""

    duration: Duration | None
    until: Expr | None
    span: Span


@dataclass(slots=True)
class Step:
    """`step name { ... }`: send a command and await its reply, or await an event, or a timer."""

    name: Name
    span: Span
    doc: str | None = None
    doc_span: Span | None = None
    status: Name | None = None
    send: Send | None = None
    await_: Await | None = None
    on_replies: list[OnReply] = field(default_factory=list)
    timeout_reason: str | None = None
    timeout_span: Span | None = None
    timeout_handler: tuple[Statement, ...] | None = None  # `on timeout { ... }`: a recovery path
    compensate: Compensate | None = None
    nothing_to_undo: str | None = None  # the reason, "" when none is given
    nothing_to_undo_span: Span | None = None
    wait: Wait | None = None
    duplicates: list[tuple[str, Span]] = field(default_factory=list)  # (item, where) of an item given again
    duplicate_items: list[Any] = field(default_factory=list)  # what each of `duplicates` said, for the printer
    task: Task | None = None  # a human task (`task name by ... { ... }`): the step is its lowering (dsl/tasks.py)


@dataclass(frozen=True, slots=True)
class Assignee:
    """`by "ana"` (a person) or `by group "credit-officers"`: who a human task goes to (any
    expression that gives a text, such as `input.reviewer`)."""

    who: Expr
    group: bool
    span: Span


@dataclass(frozen=True, slots=True)
class Escalation:
    """One line of a task's escalation, taken when the task's current due passes:
    `escalate remind due 1d`, `escalate reassign to group "managers" due 1d`, `escalate fail "…"`."""

    action: str  # "remind", "reassign" or "fail"
    span: Span
    assignee: Assignee | None = None  # reassign: to whom
    due: Duration | None = None  # remind, reassign: the new due, from when it is taken
    reason: str | None = None  # fail: the instance's failure reason


@dataclass(frozen=True, slots=True)
class Task:
    """What `task name by ... { form {...} details {...} due D escalate ... }` said, as written
    (the printer writes it back from here; the compiler reads the lowered step beside it)."""

    assignee: Assignee | None
    form: RecordType | None
    details: ObjectExpr | None
    due: Duration | None
    escalations: tuple[Escalation, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class If:
    """`if c { } else if c { } else { }`."""

    arms: tuple[tuple[Expr, tuple[Statement, ...]], ...]
    otherwise: tuple[Statement, ...] | None
    span: Span


@dataclass(frozen=True, slots=True)
class Case:
    """`case "a", "b" { ... }`."""

    values: tuple[Any, ...]
    body: tuple[Statement, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Switch:
    """`switch expr { case ... default { } }`."""

    subject: Expr
    cases: tuple[Case, ...]
    default: tuple[Statement, ...] | None
    span: Span


@dataclass(frozen=True, slots=True)
class Branch:
    """`branch name { ... }` inside a parallel block."""

    name: Name
    body: tuple[Statement, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Parallel:
    """`parallel [name] { branch a { } branch b { } }`: all branches run; joined when all finish.
    `undo in parallel` (or `undo in reverse`, the default) first says how its completed
    branches are undone when the instance fails. `first of name { branch a { } branch b { } }`
    (`first`): all branches start, the first to finish wins, the others are cancelled and what
    they completed is undone."""

    name: Name | None
    branches: tuple[Branch, ...]
    span: Span
    undo_order: Name | None = None  # `undo in parallel` / `undo in reverse`: the word, where it stands
    first: bool = False


@dataclass(frozen=True, slots=True)
class RaceArm:
    """One way to win a race: messages (`on a, b as x`) or a timer (`on timer 3d`, `on timer at e`)."""

    messages: tuple[Name, ...]
    bind: Name | None
    after: Duration | None
    at: Expr | None
    body: tuple[Statement, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Race:
    """`race name { on ... { } on timer ... { } }`: the first arm to fire wins."""

    name: Name
    arms: tuple[RaceArm, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Repeat:
    """`repeat [name] [max N] { ... } until cond [else { ... }]`."""

    name: Name | None
    max: int | None
    body: tuple[Statement, ...]
    until: Expr
    span: Span
    bound_reached: tuple[Statement, ...] | None = None  # `else { ... }`: runs when `max` rounds ran and `until` never held


@dataclass(frozen=True, slots=True)
class BoundReached:
    """`else { ... }` after a loop's `until` (what the transformer hands to `Repeat`)."""

    body: tuple[Statement, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Call:
    """`call other-process [from "file.proc"] { input mapping } [as name]`."""

    process: Name
    path: str | None
    data: ObjectExpr | None
    bind: Name | None
    span: Span


@dataclass(frozen=True, slots=True)
class ForEach:
    """`for each line in input.lines [in parallel [at most N]] [tolerate N failures] [collect results] { ... }`:
    the body runs once per item of the list, with the item bound to `item`."""

    item: Name
    items: Expr
    body: tuple[Statement, ...]
    span: Span
    parallel: bool = False
    at_most: int | None = None  # `at most N`: how many items run at once (None: all of them)
    at_most_span: Span | None = None
    tolerate: int = 0  # `tolerate N failures`: how many items may fail before the whole fails
    tolerate_span: Span | None = None
    collect: Name | None = None  # `collect results`: the name the list of results is bound to


@dataclass(frozen=True, slots=True)
class Fail:
    """`fail "reason"`: the instance fails and compensates."""

    reason: str
    span: Span


@dataclass(frozen=True, slots=True)
class End:
    """`end`: the instance completes here; `end "cancelled"` completes it with that outcome."""

    span: Span
    outcome: str | None = None


@dataclass(frozen=True, slots=True)
class Set:
    """`set name = expression`: a variable of the process, readable by later conditions and
    mappings (routing data: business computation belongs in a participant)."""

    name: Name
    value: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class Emit:
    """`emit participant.event { mapping }`: a notification that expects no reply."""

    participant: Name
    event: Name
    data: ObjectExpr | None
    span: Span


Statement = Step | If | Switch | Parallel | Race | Repeat | Call | ForEach | Fail | End | Set | Emit


@dataclass(frozen=True, slots=True)
class Contract:
    """`command name { ... }` or `reply name { ... }` inside a participant block."""

    kind: str
    name: Name
    payload: RecordType | None
    span: Span


@dataclass(frozen=True, slots=True)
class Participant:
    """`participant name "Display name" { contracts }`."""

    name: Name
    display: str | None
    contracts: tuple[Contract, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class EventDecl:
    """`event name { payload }`: a message that arrives without a command."""

    name: Name
    payload: RecordType | None
    span: Span


@dataclass(slots=True)
class Process:
    """One `process name { ... }` block."""

    name: Name
    span: Span
    version: int = 1
    title: str | None = None
    doc: str | None = None
    correlate: Expr | None = None
    reply_to: str | None = None
    deadline: Duration | None = None
    deadline_handler: tuple[Statement, ...] | None = None  # `deadline 3d { ... }`: what runs when it passes
    output: ObjectExpr | None = None  # `output { ... }`: what a completed instance returns
    undo_failure: str | None = None  # `on undo failure continue|stop`: what an undo that cannot be confirmed does
    input_record: RecordType | None = None
    input_file: tuple[str, Span] | None = None
    limits: dict[str, tuple[int, Span]] = field(default_factory=dict)
    participants: list[Participant] = field(default_factory=list)
    events: list[EventDecl] = field(default_factory=list)
    body: list[Statement] = field(default_factory=list)
    header_spans: dict[str, Span] = field(default_factory=dict)
    duplicates: list[tuple[str, Span]] = field(default_factory=list)  # (header, where) of a header given again
    duplicate_items: list[Any] = field(default_factory=list)  # what each of `duplicates` said, for the printer


# ---------------------------------------------------------------- scenarios


@dataclass(frozen=True, slots=True)
class WhenRule:
    """`when p.cmd [round R] [attempt N] reply r { data } [after D] [twice]` or `... no reply`."""

    participant: Name
    command: Name
    attempt: int | None
    reply: Name | None  # None: no reply
    data: ObjectExpr | None
    after: Duration | None
    twice: bool
    span: Span
    round: int | None = None  # `round 2`: only in the 2nd round of the loop around the step
    round_span: Span | None = None
    task: bool = False  # written `when task NAME complete { … }` / `when task NAME passes due`
    item: int | None = None  # `for item N`: only for the command sent for the Nth item (from 1) of a for-each


@dataclass(frozen=True, slots=True)
class DeliverRule:
    """`deliver event { data } after D`: an event arrives at a time after the start."""

    event: Name
    data: ObjectExpr | None
    after: Duration
    span: Span


@dataclass(frozen=True, slots=True)
class Expectation:
    """`expect status|completed|commands|compensation|unconfirmed|failure|outcome|output|emitted ...`."""

    kind: str
    value: Any
    span: Span


@dataclass(slots=True)
class Scenario:
    """`scenario name "description" { ... }`."""

    name: Name
    description: str | None
    span: Span
    input: ObjectExpr | None = None
    start_at: tuple[str, Span] | None = None
    rules: list[WhenRule] = field(default_factory=list)
    deliveries: list[DeliverRule] = field(default_factory=list)
    silenced: list[Name] = field(default_factory=list)
    expectations: list[Expectation] = field(default_factory=list)


@dataclass(slots=True)
class SourceFile:
    """A parsed .proc file: the process and its scenarios."""

    process: Process
    scenarios: list[Scenario]
    path: str
    text: str
    pending_scenarios: str | None = None  # scenario text not parsed yet (see parser.parse)
