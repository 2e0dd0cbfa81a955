"""Strict JSON: the one reader of every message, input and state that enters procflow.

`loads` reads JSON text or bytes; `check_value` checks a Python value handed to the API (an
input dict, a reply's data) by the same rules:

- the bytes are valid UTF-8, and no string holds a lone surrogate (not even as a `\\udcff`
  escape): such text cannot be written back as UTF-8 and breaks every consumer downstream;
- no `NaN`, `Infinity` or `-Infinity`, and no number that overflows to infinity (`1e999`):
  JSON has no such values, and they would be stored and sent on as `null`;
- no number longer than the `number_literal` limit;
- objects and lists nested at most `nesting` deep, checked before parsing (a message a
  hundred thousand levels deep is refused in a scan, never by a `RecursionError`);
- the size within the limit the caller names (`message_bytes`, `input_bytes`, ...);
- no key twice in one object (readers disagree on which value wins);
- for Python values: only what JSON has (dicts with string keys, lists and tuples, strings,
  finite numbers, booleans, None).

A breach raises the error class the caller gives (`MessageRefused` for a message,
`InputError` for an input, `DamagedRecord` for a stored record), worded with the limit.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections.abc import Mapping
from typing import Any, NoReturn

from procflow.errors import ProcflowError
from procflow.limits import NESTING, NUMBER_LITERAL, Limit

__all__ = ["check_value", "digest", "limit_text", "loads", "shown"]

Refuse = type[ProcflowError]

_SURROGATE = re.compile("[\ud800-\udfff]")
# A JSON string (skipped whole, escapes included) or a bracket: what the depth scan looks at.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_NESTING_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_CONSTANTS = {"NaN": "NaN", "Infinity": "Infinity", "-Infinity": "-Infinity"}
_INT_BOUND = 10**NUMBER_LITERAL.value


def limit_text(limit: Limit) -> str:
    """How a refusal names a limit: `the `nesting` limit (64 levels)`, and how to change it
    when it can be changed."""
    text = f"the `{limit.name}` limit ({limit.value:,} {limit.unit})"
    return text if limit.change == "fixed" else f"{text}; {limit.change}"


def shown(value: str, width: int = 40) -> str:
    """A value quoted in a refusal: control characters escaped, long values cut."""
    text = value if len(value) <= width else value[:width] + "..."
    return json.dumps(text)[1:-1]


class _Refused(Exception):
    """Raised from inside the JSON parser's hooks; turned into the caller's error class."""


def _constant(name: str) -> NoReturn:
    raise _Refused(f"holds `{_CONSTANTS.get(name, name)}`, which is not a JSON number (JSON has no NaN or infinity)")


def _float(text: str) -> float:
    if len(text) > NUMBER_LITERAL.value:
        raise _Refused(f"holds a number of {len(text):,} characters, more than {limit_text(NUMBER_LITERAL)}")
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"holds the number {shown(text)}, which is too large: it overflows to infinity")
    return value


def _int(text: str) -> int:
    if len(text) > NUMBER_LITERAL.value:
        raise _Refused(f"holds a number of {len(text):,} characters, more than {limit_text(NUMBER_LITERAL)}")
    return int(text)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Refused(f"holds the key `{shown(key)}` twice in one object")
            seen.add(key)
    return found


_DECODER = json.JSONDecoder(parse_constant=_constant, parse_float=_float, parse_int=_int, object_pairs_hook=_object)
"""The strict reader, made once: `json.loads` with hooks builds a new decoder at every call,
which cost a store a fifth of the time it took to read a state row back."""


def _too_deep(text: str, depth: int) -> bool:
    """True when objects and lists nest more than `depth` deep (a scan, no parsing): the
    strings dropped (a bracket inside one does not nest), the brackets kept, and the deepest
    level is the largest running sum of +1 per opening and -1 per closing one. Done by `re`
    and `itertools` rather than a loop over every string and bracket: a store reads its
    rows back with this at every transition, and a long row holds thousands of strings."""
    if text.count("[") + text.count("{") <= depth:
        return False
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(itertools.accumulate(map(_NESTING_STEP.__getitem__, brackets)), default=0) > depth


def _surrogate_problem(text: str, raw: bool) -> str | None:
    """What a lone surrogate in `text` means: in raw text (`raw`), most likely a byte that was
    not UTF-8 (Python keeps those as U+DC80..U+DCFF in arguments and file names); in a value,
    a lone surrogate, which no UTF-8 text can hold."""
    if text.isascii():  # (a scan in C, a hundred times faster than the search: most text is ASCII)
        return None
    found = _SURROGATE.search(text)
    if found is None:
        return None
    char = ord(found.group())
    if raw and 0xDC80 <= char <= 0xDCFF:
        return f"is not valid UTF-8 (byte 0x{char - 0xDC00:02x} at character {found.start() + 1})"
    return f"holds a lone surrogate (U+{char:04X}), which is not text: it cannot be written as UTF-8"


def loads(
    data: bytes | str,
    *,
    what: str,
    limit: Limit | None,
    refuse: Refuse = ProcflowError,
    depth: int = NESTING.value,
) -> Any:
    """Strict JSON text (or UTF-8 bytes) -> its value; `refuse(reason)` when it breaks a rule.
    `limit` bounds the size (None: a store reading back what it wrote)."""
    size = len(data) if isinstance(data, bytes) else None
    if limit is not None and size is not None and size > limit.value:
        raise refuse(f"{what} is {size:,} bytes, more than {limit_text(limit)}")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise refuse(f"{what} is not valid UTF-8 (byte 0x{data[error.start]:02x} at byte {error.start + 1})") from None
    else:
        text = data
        problem = _surrogate_problem(text, raw=True)
        if problem:
            raise refuse(f"{what} {problem}")
        # Counted as UTF-8 (a character is up to 4 bytes): only long texts need the encoding.
        if limit is not None and len(text) * 4 > limit.value and len(text.encode("utf-8")) > limit.value:
            raise refuse(f"{what} is {len(text.encode('utf-8')):,} bytes, more than {limit_text(limit)}")
    if _too_deep(text, depth):
        raise refuse(f"{what} nests objects and lists more than {depth} deep, {limit_text(NESTING)}")
    try:
        value = _DECODER.decode(text)
    except _Refused as refused:
        raise refuse(f"{what} {refused}") from None
    except json.JSONDecodeError as error:
        raise refuse(f"{what} is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}") from None
    if "\\u" in text:  # an escape may spell a lone surrogate that the text itself does not hold
        problem = _value_problem(value, depth, None)
        if problem:
            raise refuse(f"{what} {problem}")
    return value


def check_value(
    value: Any,
    *,
    what: str,
    limit: Limit,
    refuse: Refuse = ProcflowError,
    depth: int = NESTING.value,
    level: int = 1,
) -> None:
    """Check a Python value by the rules of `loads` (`refuse(reason)` when it breaks one).
    `level` is how deep the value sits in the document it belongs to (a message's `data` is
    at level 2): the depth is counted from the document."""
    problem = _value_problem(value, depth, limit, level)
    if problem:
        raise refuse(f"{what} {problem}")


def _value_problem(value: Any, depth: int, limit: Limit | None, level: int = 1) -> str | None:
    """What is wrong with a value as strict JSON, or None. Walks without recursion, so a
    value nested (or cyclic) beyond any depth is refused, never a RecursionError."""
    # The size of the compact JSON text, bounded from above as the walk goes (a string costs at
    # most 6 bytes a character, escaped); written out only when the bound passes the limit.
    bound = 0
    stack: list[tuple[Any, int]] = [(value, level)]
    while stack:
        item, level = stack.pop()
        kind = item.__class__
        if kind is str or isinstance(item, str):
            if not item.isascii() and _SURROGATE.search(item):  # (ASCII text holds no surrogate)
                return _surrogate_problem(item, raw=False)
            bound += 6 * len(item) + 3
        elif kind is bool or item is None:
            bound += 5
        elif kind is int or isinstance(item, int):
            text = str(item) if -_INT_BOUND < item < _INT_BOUND else ""
            if not text or len(text) > NUMBER_LITERAL.value:
                return f"holds an integer longer than {limit_text(NUMBER_LITERAL)}"
            bound += len(text) + 1
        elif kind is float or isinstance(item, float):
            if not math.isfinite(item):
                return f"holds the number {item!r}, which JSON cannot hold (no NaN or infinity)"
            bound += 26
        elif kind is dict or isinstance(item, Mapping):  # (a dict first: asking an ABC costs more)
            if level > depth:
                return f"nests objects and lists more than {depth} deep, {limit_text(NESTING)}"
            for key, inner in item.items():
                if not isinstance(key, str):
                    return f"has the key {shown(repr(key))}, not a string (JSON keys are strings)"
                if not key.isascii() and _SURROGATE.search(key):
                    return _surrogate_problem(key, raw=False)
                bound += 6 * len(key) + 3
                stack.append((inner, level + 1))
            bound += 2
        elif isinstance(item, list | tuple):
            if level > depth:
                return f"nests objects and lists more than {depth} deep, {limit_text(NESTING)}"
            stack.extend((inner, level + 1) for inner in item)
            bound += 2
        else:
            return f"holds a value of type `{kind.__name__}`, which JSON cannot hold"
    if limit is not None and bound > limit.value:
        size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        if size > limit.value:
            return f"is {size:,} bytes as JSON, more than {limit_text(limit)}"
    return None


def digest(value: Any) -> str:
    """A digest of a JSON value that does not depend on the order of keys: two messages with
    the same digest say the same thing."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
