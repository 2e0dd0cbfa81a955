"""Every limit on what enters procflow, in one table.

Text, messages, inputs, ids and files are checked against these where they come in (the
parser, the strict JSON reader, the engine's entry points, the command line); a breach is a
worded `ProcflowError` that names the limit and its value. The README's table of limits is
checked against this one by a test, so the two cannot drift apart.

A limit that a process may lower or raise for itself says so in `change`; the others are
fixed by what the engine can represent or what keeps one bad message from hurting a worker.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limit:
    """One limit: its name, its value, the unit, what it bounds, and how to change it."""

    name: str
    value: int
    unit: str
    bounds: str
    change: str = "fixed"


SOURCE_BYTES = Limit("source_bytes", 8 * 1024 * 1024, "bytes", "size of one .proc file")
NESTING = Limit("nesting", 64, "levels", "brackets and blocks nested in a .proc file, and objects and lists nested in a JSON message or input")
STRING_LITERAL = Limit("string_literal", 64 * 1024, "characters", "one string literal in a .proc file")
NUMBER_LITERAL = Limit("number_literal", 40, "characters", "one number literal in a .proc file, and one number in a JSON message or input")
DURATION = Limit("duration", 100 * 366 * 24 * 3600, "seconds", "one duration (`within`, `backoff`, `wait`, `deadline`, timers), about 100 years")
INSTANT_YEAR_MIN = Limit("instant_year_min", 1970, "year", "earliest instant accepted (`start at`, `--now`, a message's time)")
INSTANT_YEAR_MAX = Limit("instant_year_max", 9000, "year", "latest instant accepted; with `duration` every due time stays representable")
LOOP_BOUND = Limit("loop_bound", 10_000, "rounds", "the `max` of a `repeat` loop, and a `retry` count")
MESSAGE_BYTES = Limit("message_bytes", 1024 * 1024, "bytes", "one reply or event, as JSON")
INPUT_BYTES = Limit("input_bytes", 1024 * 1024, "bytes", "one instance's input, as JSON")
ID_LENGTH = Limit("id_length", 200, "characters", "a workflow id, a correlation id, a message id or a message's type (none may be empty or hold a control character)")
FILE_BYTES = Limit("file_bytes", 1024 * 1024, "bytes", "a file read by `input from` or `call ... from`")
STATE_BYTES = Limit("state_bytes", 64 * 1024 * 1024, "bytes", "a state record read from a file (`render --instance STATE.json`)")

LIMITS: tuple[Limit, ...] = (
    SOURCE_BYTES,
    NESTING,
    STRING_LITERAL,
    NUMBER_LITERAL,
    DURATION,
    INSTANT_YEAR_MIN,
    INSTANT_YEAR_MAX,
    LOOP_BOUND,
    MESSAGE_BYTES,
    INPUT_BYTES,
    ID_LENGTH,
    FILE_BYTES,
    STATE_BYTES,
)
"""The table, in the order the README lists it."""
