"""`procflow fmt`: a .proc text in its one canonical layout, its comments kept where they were.

The printer (`printer.py`) lays the syntax tree out as lines, each remembering where what it
prints stood in the source. The grammar ignores comments, so they are found here in the text
(outside strings, as the grammar's `COMMENT` and `STRING` read them) and each goes back beside
the line that prints what it stood beside:

- a comment on a line of its own goes before the line that prints the node it stands inside
  (a mapping written over several lines, for one), else before the line that prints the
  first node after it, indented as that line (one level deeper before a closing `}`);
- a comment after code goes at the end of the line that prints the code before it (a second
  one there goes on its own line above it, since a line holds one comment);
- comments after the last block stay at the end.

One blank line the author left between two lines is kept (never at the top of a block or
before its `}`); more become one. The layout is idempotent: formatting its own output changes
nothing (tested on every sample and fixture).
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

from procflow.dsl import syntax as sx
from procflow.dsl.lines import INDENT, Line, Position, joined
from procflow.dsl.parser import parse
from procflow.dsl.printer import layout_source

__all__ = ["format_text", "format_tree"]

# A string, a comment, a word or any other character that is not space: the grammar's
# STRING and COMMENT first, so nothing inside them is taken for code.
_TOKEN = re.compile(r'"""[\s\S]*?"""|"[^"\\\n]*+(?:\\.[^"\\\n]*+)*+"|#[^\n]*|[A-Za-z_][A-Za-z0-9_]*|\S')


@dataclass(frozen=True, slots=True)
class Comment:
    """A comment of the source: where it starts, its text, and whether code precedes it on its line."""

    position: Position
    text: str
    after_code: bool


@dataclass(slots=True)
class _Placed:
    """A printed line with the source position it stands for, and the comments it takes."""

    line: Line
    start: Position | None
    before: list[Comment] = field(default_factory=list)
    after: list[Comment] = field(default_factory=list)


class _Text:
    """The source text, read for its tokens outside strings and comments, its comments and its blank lines."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.line_starts = [0] + [match.end() for match in re.finditer("\n", text)]
        self.tokens = [(match.start(), match.group()) for match in _TOKEN.finditer(text)]
        self.blank_lines = {number for number, line in enumerate(text.split("\n"), start=1) if not line.strip()}

    def position(self, offset: int) -> Position:
        line = bisect.bisect_right(self.line_starts, offset)
        return line, offset - self.line_starts[line - 1] + 1

    def offset(self, position: Position) -> int:
        line, column = position
        return self.line_starts[line - 1] + column - 1

    def comments(self) -> list[Comment]:
        found = []
        for offset, token in self.tokens:
            if token.startswith("#"):
                line_start = self.line_starts[bisect.bisect_right(self.line_starts, offset) - 1]
                after_code = bool(self.text[line_start:offset].strip())
                found.append(Comment(self.position(offset), token.rstrip(), after_code))
        return found

    def seek(self, word: str, after: Position) -> Position | None:
        """Where the first token `word` at or after `after` stands (strings and comments aside)."""
        start = self.offset(after)
        index = bisect.bisect_left(self.tokens, (start, ""))
        for offset, token in self.tokens[index:]:
            if token == word:
                return self.position(offset)
        return None


def format_text(text: str, path: str = "<text>") -> str:
    """Process text in its canonical layout, comments kept; a `SourceError` when it does not parse."""
    return format_tree(parse(text, path), text)


def format_tree(source: sx.SourceFile, text: str) -> str:
    """A parsed file (parsed with its scenarios) in its canonical layout, with the comments of
    `text`, the text it was parsed from."""
    reading = _Text(text)
    placed: list[_Placed] = []
    previous: Position | None = None
    for line in layout_source(source):
        start = line.start
        if start is None and line.seek is not None:
            word, after = line.seek
            if after is None and previous is not None:  # just after the line before
                after = (previous[0], previous[1] + 1)
            start = reading.seek(word, after) if after is not None else None
        placed.append(_Placed(line, start))
        previous = start or previous
    at_end = _attach(reading.comments(), placed)
    return _write(placed, at_end, reading.blank_lines)


def _attach(comments: list[Comment], placed: list[_Placed]) -> list[Comment]:
    """Give each comment to the line it goes beside; the comments after every line come back.

    Lines print disjoint parts of the source, so the line a comment stands in or after is
    the one that starts last before it (found by bisection: a file may hold thousands)."""
    anchored = sorted(((item.start, item) for item in placed if item.start is not None), key=lambda pair: pair[0])
    starts = [start for start, _ in anchored]
    at_end: list[Comment] = []
    for comment in comments:
        spot = comment.position
        after = bisect.bisect_right(starts, spot)  # the lines before it are anchored[:after]
        before_it = anchored[after - 1][1] if after else None
        if before_it is not None and before_it.line.end is not None and spot < before_it.line.end:
            (before_it.after if comment.after_code else before_it.before).append(comment)  # inside what it prints
        elif comment.after_code:
            (before_it.after if before_it is not None else anchored[0][1].before).append(comment)
        elif after < len(anchored):
            anchored[after][1].before.append(comment)
        else:
            at_end.append(comment)
    for item in placed:
        if len(item.after) > 1:  # a line holds one comment after its code: the others go above it
            item.before += item.after[1:]
            del item.after[1:]
    return at_end


def _write(placed: list[_Placed], at_end: list[Comment], blank_lines: set[int]) -> str:
    out: list[str] = []

    def blank_before(source_line: int | None, closing: bool) -> None:
        """Keep a blank line the author left before this line, where a blank line may stand."""
        if source_line is not None and source_line - 1 in blank_lines and not closing:
            if out and out[-1] and not out[-1].endswith("{"):
                out.append("")

    waiting: Line | None = None  # an empty block's head, written with the `}` after it
    for number, item in enumerate(placed):
        line = item.line
        if not line.text:  # the layout's own blank line
            if out and out[-1]:
                out.append("")
            continue
        closing = line.text.startswith("}")
        comment_indent = line.indent + INDENT if closing else line.indent
        for comment in sorted(item.before, key=lambda c: c.position):
            blank_before(comment.position[0], closing)
            out.append(comment_indent + comment.text)
        if waiting is not None:
            line, waiting = joined(waiting, line), None
        else:
            blank_before(item.start[0] if item.start else None, closing)
        following = placed[number + 1] if number + 1 < len(placed) else None
        if line.joins_next and not item.after and following is not None and not following.before:
            waiting = line  # nothing stands inside the empty block: `head {}`
            continue
        text = str(line)
        out.append(text + "  " + item.after[0].text if item.after else text)
    for comment in at_end:
        blank_before(comment.position[0], False)
        out.append(comment.text)
    return "\n".join(out) + "\n"
