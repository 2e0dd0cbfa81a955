"""The text of a .proc file before it is parsed: decoding its bytes, the checks on its size
and nesting, and where its scenarios begin.

These run before Lark sees the text, so a file over a limit is refused without being read
token by token. Nothing here imports lark.
"""

from __future__ import annotations

import re

from procflow.dsl.diagnostics import Diagnostic, Span
from procflow.errors import SourceError
from procflow.limits import NESTING, SOURCE_BYTES

# Strings and comments, whose brackets do not count: the grammar's STRING and COMMENT
# (possessive, like the grammar's, so a long string costs no memory to skip).
_TEXT = re.compile(r'"""[\s\S]*?"""|"[^"\\\n]*+(?:\\.[^"\\\n]*+)*+"|#[^\n]*')
_BRACKETS_OUTSIDE_TEXT = re.compile(_TEXT.pattern + r"|[(){}\[\]]")


def _position(text: str, offset: int) -> tuple[int, int]:
    """The 1-based line and column of an offset in the text."""
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def decode_source(data: bytes, path: str) -> str:
    """Bytes of a .proc file -> text, or a `SourceError` saying why the file is not text."""
    if len(data) > SOURCE_BYTES.value:
        raise SourceError([_too_large(path)])
    if b"\x00" in data:
        raise SourceError(
            [Diagnostic("E001", "error", "the file holds binary data (a NUL byte), not process text", Span(1, 1, 1, 2), "is this the right file?", path)]
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        before = data[: error.start]
        line = before.count(b"\n") + 1
        column = error.start - (before.rfind(b"\n") + 1) + 1
        raise SourceError(
            [
                Diagnostic(
                    "E001",
                    "error",
                    f"the file is not valid UTF-8 (byte 0x{data[error.start]:02x})",
                    Span(line, column, line, column + 1),
                    "save the file as UTF-8",
                    path,
                )
            ]
        ) from None
    return text.removeprefix("\ufeff")


def check_size(text: str, path: str) -> None:
    """Refuse text longer than the `source_bytes` limit (in UTF-8) before anything reads it."""
    limit = SOURCE_BYTES.value
    if len(text) > limit:  # every character takes at least one byte
        raise SourceError([_too_large(path)])
    if len(text) * 4 > limit:  # only then can the encoded text be over the limit
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > limit:
            raise SourceError([_too_large(path)])


def _too_large(path: str) -> Diagnostic:
    return Diagnostic(
        "E001",
        "error",
        # A file is read no further than one byte past the limit, so its full size is not known.
        f"the file is over the `{SOURCE_BYTES.name}` limit of {SOURCE_BYTES.value} bytes",
        Span(1, 1, 1, 2),
        "split the process into called processes",
        path,
    )


def check_nesting(text: str, path: str) -> None:
    """Refuse brackets and blocks nested deeper than the `nesting` limit (strings and comments aside)."""
    depth = 0
    for match in _BRACKETS_OUTSIDE_TEXT.finditer(text):
        bracket = match.group()
        if len(bracket) != 1:
            continue  # a string or a comment
        if bracket in "({[":
            depth += 1
            if depth > NESTING.value:
                line, column = _position(text, match.start())
                raise SourceError(
                    [
                        Diagnostic(
                            "E005",
                            "error",
                            f"brackets and blocks are nested more than {NESTING.value} deep (the `{NESTING.name}` limit)",
                            Span(line, column, line, column + 1),
                            "split the process into called processes or flatten the expression",
                            path,
                        )
                    ],
                    text,
                )
        else:
            depth = max(0, depth - 1)


def scenarios_start(text: str) -> int | None:
    """Where the scenario blocks begin: just after the `}` that closes the process block
    (None when nothing but space and comments follows it, or the block is not closed)."""
    depth = 0
    for match in _BRACKETS_OUTSIDE_TEXT.finditer(text):
        bracket = match.group()
        if len(bracket) != 1:
            continue
        if bracket in "({[":
            depth += 1
        elif depth > 0:
            depth -= 1
            if depth == 0:
                rest = match.end()
                return rest if _has_more_than_comments(text[rest:]) else None
    return None


def _has_more_than_comments(text: str) -> bool:
    """Anything but space and comments (a string alone is not a scenario: it is refused with the process)."""
    return bool(_TEXT.sub("", text).strip())


def blank_before(text: str, offset: int) -> str:
    """The text from `offset` on, preceded by blank lines and spaces in place of what comes
    before it, so that positions in it are positions in the whole text."""
    lines_before = text.count("\n", 0, offset)
    column = offset - (text.rfind("\n", 0, offset) + 1)
    return "\n" * lines_before + " " * column + text[offset:]
