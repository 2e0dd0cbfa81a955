"""Text for the operator's terminal: names, ids and messages with their control characters
escaped, so what an instance or a message carries can neither forge a line of output nor
send an escape sequence to the terminal.

Every line the command line prints for people goes through `printable`; JSON output
(`--json`) escapes control characters by itself.
"""

from __future__ import annotations

import re

__all__ = ["printable", "printable_lines"]

# As `procflow.ids.UNPRINTABLE`, but a tab is kept: it moves the cursor on its line only.
_ESCAPED = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` on one line, its control characters escaped (`\\n`, `\\x1b`, `\\u202e`)."""
    if _ESCAPED.search(text) is None:
        return text
    return _ESCAPED.sub(_escape, text)


def printable_lines(text: str) -> str:
    """Each line of `text` made printable; the line breaks between them kept."""
    return "\n".join(printable(line) for line in text.split("\n"))
