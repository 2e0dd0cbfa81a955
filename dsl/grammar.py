"""The grammar as a Lark parser: `grammar.lark` read once from the package and built LALR,
with words always read whole and the transformer run as each rule is reduced.

Lark's contextual lexer leaves keywords unreserved: in each state of the parser it matches
only the terminals that may come next, and a word that is a keyword allowed there is that
keyword, so `send shop.status` and `{ input: 1 }` read as names. But where no name may come
next, only the keywords, each of which matches its text anywhere, even at the start of a
longer word: `stepone` was read as `step one`, and `processp{` as `process p {`. Here the
lexer matches `NAME` in every state (`WholeWords`), so a word is always read whole:
`stepone` is a name, and where a name may not come it is refused with a located error.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from importlib import resources
from typing import Any

from lark import Lark, Token
from lark.lark import PostLex
from lark.lexer import PatternStr

from procflow.dsl.transformer import ToSyntax


class WholeWords(PostLex):
    """Lark's hook for what follows the lexer, used only for `always_accept`: the lexer
    matches `NAME` in every parser state, and a `NAME` whose text is a keyword allowed in that
    state becomes the keyword (Lark does this for every terminal that is a literal word)."""

    always_accept = ("NAME",)

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        """The tokens, unchanged."""
        return stream


OPTIONS: dict[str, Any] = {
    "parser": "lalr",
    "lexer": "contextual",
    "start": ["start", "scenarios"],
    "postlex": WholeWords(),
    # Keywords and punctuation reach the transformer, which takes a rule's span from its first
    # and last token (a transformer run during parsing is not given Lark's `meta`).
    "keep_all_tokens": True,
    "maybe_placeholders": False,
}
"""How the grammar is built, the same for the reading parser and the strict check."""


@lru_cache(maxsize=1)
def grammar_text() -> str:
    """The grammar, read from the installed package."""
    return resources.files("procflow.dsl").joinpath("grammar.lark").read_text(encoding="utf-8")


def build_parser(strict: bool = False) -> Lark:
    """A new parser of the grammar that builds Lark trees; with `strict=True` any grammar
    conflict or terminal collision raises (a test builds it so)."""
    return Lark(grammar_text(), strict=strict, **OPTIONS)


@lru_cache(maxsize=1)
def reading_parser() -> Lark:
    """The parser `parse` uses, built once: it returns syntax nodes (`transformer.ToSyntax`),
    never a Lark tree."""
    return Lark(grammar_text(), transformer=ToSyntax(), **OPTIONS)


def literal_texts(parser: Lark) -> dict[str, str]:
    """Terminal name -> the text it stands for, for keywords and punctuation (`STEP` -> `step`,
    `LBRACE` -> `{`); terminals that stand for a kind of token (`NAME`) are left out."""
    return {terminal.name: terminal.pattern.value for terminal in parser.terminals if isinstance(terminal.pattern, PatternStr)}


@lru_cache(maxsize=1)
def keywords() -> frozenset[str]:
    """Every keyword of the language (`process`, `step`, `not`, ...)."""
    return frozenset(text for text in literal_texts(reading_parser()).values() if text.isidentifier())
