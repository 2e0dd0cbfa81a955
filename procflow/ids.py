"""What an id may be: a workflow id, a correlation id, a message id, a message's type.

An id is shown to operators (`procflow instances`, `inspect`, errors), written into the
store's keys and quoted in every command: so it is a non-empty string of at most `id_length`
characters with no control character (a newline in an id forged a row of `procflow
instances`; an ANSI escape reached the operator's terminal raw), no line or paragraph
separator, no bidirectional override and no lone surrogate.
"""

from __future__ import annotations

import re

from procflow.errors import ProcflowError
from procflow.limits import ID_LENGTH
from procflow.strict_json import limit_text, shown

__all__ = ["UNPRINTABLE", "check_id", "id_problem", "is_id"]

UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
"""Characters that would move the cursor, start an escape sequence, break a line, reorder
the text around them, or cannot be written as UTF-8."""


def is_id(value: object) -> bool:
    """True when `value` is a valid id (the quick test; `id_problem` says what is wrong).
    An ASCII id, the usual one, is asked `isprintable`: the ASCII characters it refuses are
    exactly the ASCII characters of `UNPRINTABLE` (U+0000 to U+001F and U+007F)."""
    if not isinstance(value, str) or not 0 < len(value) <= ID_LENGTH.value:
        return False
    if value.isascii():
        return value.isprintable()
    return UNPRINTABLE.search(value) is None


def id_problem(value: object) -> str | None:
    """What is wrong with `value` as an id, or None."""
    if not isinstance(value, str):
        return f"must be a string, not {type(value).__name__}"
    if not value:
        return "must not be empty"
    if len(value) > ID_LENGTH.value:
        return f"is {len(value):,} characters long, more than {limit_text(ID_LENGTH)}"
    bad = UNPRINTABLE.search(value)
    if bad is not None:
        return (
            f"`{shown(value)}` holds the control character U+{ord(bad.group()):04X} at character {bad.start() + 1}: "
            "an id may not hold control characters, line breaks or escapes"
        )
    return None


def check_id(value: object, what: str, refuse: type[ProcflowError] = ProcflowError) -> None:
    """Refuse (`refuse(reason)`) a value that is not a valid id; `what` names it (e.g. "the workflow id")."""
    if is_id(value):
        return  # the usual case, at the cost of one search
    problem = id_problem(value)
    if problem:
        raise refuse(f"{what} {problem}")
