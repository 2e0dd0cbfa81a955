"""Printed lines: what the printer (`printer.py`) makes of a syntax tree before it is text.

A `Line` keeps where what it prints stood in the source, for the formatter (`formatter.py`)
to put comments back by; `wrap` breaks a line that is too wide.
"""

from __future__ import annotations

from dataclasses import dataclass

INDENT = "  "
"""One level of indentation."""

Position = tuple[int, int]
"""A 1-based line and column in the source text."""


@dataclass(frozen=True, slots=True)
class Line:
    """One printed line, and where what it prints stood in the source.

    `start` and `end` bound the source text the line prints (`end` only for a line that prints
    a whole node: an item, a header, a statement without a block). A line that starts with a
    word or a brace whose position the tree does not keep (`}` closing a block of statements,
    `default {`) says instead what to look for and after where (`seek`): the first such token
    after that position (no position: just after where the line before it stands), outside
    strings and comments. A blank line has no text.

    An empty block is printed as two lines, `head {` (`joins_next`) and `}`, written as one
    (`head {}`) unless a comment stands between them: so a comment inside an empty block
    stays inside it."""

    indent: str
    text: str
    start: Position | None = None
    end: Position | None = None
    seek: tuple[str, Position | None] | None = None
    joins_next: bool = False

    def __str__(self) -> str:
        return self.indent + self.text if self.text else ""


def joined(first: Line, second: Line) -> Line:
    """`head {` and the `}...` after it as one line, `head {}...`, placed as the second."""
    return Line(first.indent, first.text + second.text, second.start, second.end, second.seek, second.joins_next)


def text_of(lines: list[Line]) -> str:
    """The lines as text, every empty block on one line."""
    out: list[str] = []
    waiting: Line | None = None
    for line in lines:
        if waiting is not None:
            line = joined(waiting, line)
        waiting = line if line.joins_next else None
        if waiting is None:
            out.append(str(line))
    return "\n".join(out) + "\n"


BLANK = Line("", "")
"""The blank line the layout itself puts between parts (headers and statements, blocks)."""


WIDTH = 100
"""Lines longer than this are broken at their first `{ ... }` or `[ ... ]`, an entry a line."""

_PAIRS = {"{": "}", "[": "]", "(": ")"}


def wrap(text: str, indent: str) -> str:
    """`text` (at `indent`) as it fits: when too wide, its first braced or bracketed group
    holds one entry a line, one level deeper, each entry wrapped the same way. Works on the
    printed text, so every construct that prints a mapping, record or list is wrapped alike."""
    if "\n" in text or len(indent) + len(text) <= WIDTH:
        return text
    group = _first_group(text)
    if group is None:
        return text
    opening, closing, commas = group
    inner = indent + INDENT
    cuts = [opening, *commas, closing]
    entries = [text[begin + 1 : end].strip() for begin, end in zip(cuts, cuts[1:], strict=False)]
    body = [inner + wrap(entry + ("," if index < len(entries) - 1 else ""), inner) for index, entry in enumerate(entries)]
    return "\n".join([text[: opening + 1], *body, indent + text[closing:]])


def _first_group(text: str) -> tuple[int, int, list[int]] | None:
    """The first `{`/`[` group outside strings with something inside: where it opens and
    closes, and its own commas (not those of a group inside it)."""
    stack: list[tuple[int, str, list[int]]] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == '"':  # a string: skip to its closing quote (the printer escapes `"` and `\\`)
            index += 1
            while text[index] != '"':
                index += 2 if text[index] == "\\" else 1
        elif char in _PAIRS:
            stack.append((index, char, []))
        elif char in _PAIRS.values() and stack:
            opening, kind, commas = stack.pop()
            if not stack and kind != "(" and text[opening + 1 : index].strip():
                return opening, index, commas
        elif char == "," and stack:
            stack[-1][2].append(index)
        index += 1
    return None
