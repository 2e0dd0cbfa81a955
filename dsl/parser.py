"""Text -> syntax tree. The only module that imports lark; callers never see a lark type.

Errors come out as `SourceError` holding `Diagnostic`s that point at the text and say, in
words, what was expected there.
"""

from __future__ import annotations

import difflib
import gc
import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from importlib import resources
from typing import Any

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import (
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)

from procflow.dsl import build, reader
from procflow.dsl import expressions as ex
from procflow.dsl import syntax as sx
from procflow.dsl.diagnostics import Diagnostic, Span
from procflow.errors import SourceError

MAX_SOURCE_BYTES = 64 * 1024 * 1024
"""A file larger than this is refused before it is parsed."""
MAX_NESTING = reader.MAX_NESTING
"""Brackets and blocks nested deeper than this are refused before parsing."""


@lru_cache(maxsize=1)
def grammar_text() -> str:
    """The grammar, read from the installed package."""
    return resources.files("procflow.dsl").joinpath("grammar.lark").read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def _parser() -> Lark:
    return Lark(grammar_text(), parser="lalr", propagate_positions=True, maybe_placeholders=False, start=["start", "scenarios"])


def build_parser(strict: bool = False) -> Lark:
    """A fresh parser; with `strict=True` any grammar conflict or terminal collision raises."""
    return Lark(grammar_text(), parser="lalr", propagate_positions=True, strict=strict, start=["start", "scenarios"])


# ---------------------------------------------------------------- spans


def _span_of(item: Any) -> Span:
    if isinstance(item, Token):
        end_line = item.end_line if item.end_line is not None else item.line
        end_col = item.end_column if item.end_column is not None else (item.column or 1) + len(item)
        return Span(item.line or 1, item.column or 1, end_line or 1, end_col)
    meta = item.meta
    if getattr(meta, "empty", True):
        return Span(1, 1, 1, 1)
    return Span(meta.line, meta.column, meta.end_line, meta.end_column)


def _kids(tree: Tree[Any]) -> list[Any]:
    """The children of a rule: tokens and the syntax nodes the rules below already built."""
    return tree.children


def _name(token: Token) -> sx.Name:
    return sx.Name(str(token), _span_of(token))


def _string(token: Token) -> str:
    return build.string(str(token))


def _integer(token: Token, what: str) -> int:
    return build.integer(str(token), _span_of(token), what)


def _duration(token: Token) -> sx.Duration:
    return build.duration(str(token), _span_of(token))


# ---------------------------------------------------------------- tree -> syntax


@v_args(meta=False, inline=False)
class _ToSyntax(Transformer[Token, Any]):
    """Builds `procflow.dsl.syntax` nodes; every method receives the children of one rule.

    `reader.py` reads the same grammar by recursive descent; both build through `build.py`."""

    # ---- expressions
    def literal(self, children: list[Token]) -> ex.Expr:
        (tok,) = children
        span = _span_of(tok)
        if tok.type == "NUMBER":
            return ex.Literal(span, build.number(str(tok)))
        if tok.type == "STRING":
            return ex.Literal(span, _string(tok))
        return ex.Literal(span, {"true": True, "false": False, "null": None}[str(tok)])

    @v_args(tree=True)
    def var(self, tree: Tree[Token]) -> ex.Expr:
        (tok,) = _kids(tree)
        assert isinstance(tok, Token)
        return ex.Var(_span_of(tok), str(tok))

    @v_args(tree=True)
    def field(self, tree: Tree[Any]) -> ex.Expr:
        base, name = _kids(tree)
        return ex.Field(_span_of(tree), base, str(name))

    @v_args(tree=True)
    def index(self, tree: Tree[Any]) -> ex.Expr:
        base, key = _kids(tree)
        return ex.Index(_span_of(tree), base, key)

    @v_args(tree=True)
    def not_op(self, tree: Tree[Any]) -> ex.Expr:
        return ex.Unary(_span_of(tree), "not", _kids(tree)[0])

    @v_args(tree=True)
    def negate(self, tree: Tree[Any]) -> ex.Expr:
        return ex.Unary(_span_of(tree), "-", _kids(tree)[0])

    @v_args(tree=True)
    def binary(self, tree: Tree[Any]) -> ex.Expr:
        left, op, right = _kids(tree)
        return ex.Binary(_span_of(tree), str(op), left, right)

    compare = binary

    @v_args(tree=True)
    def member(self, tree: Tree[Any]) -> ex.Expr:
        left, right = _kids(tree)
        return ex.Binary(_span_of(tree), "in", left, right)

    @v_args(tree=True)
    def not_member(self, tree: Tree[Any]) -> ex.Expr:
        left, right = _kids(tree)
        return ex.Binary(_span_of(tree), "not in", left, right)

    def or_expr(self, children: list[ex.Expr]) -> ex.Expr:
        return build.chain(children, "or")

    def and_expr(self, children: list[ex.Expr]) -> ex.Expr:
        return build.chain(children, "and")

    @v_args(tree=True)
    def func(self, tree: Tree[Any]) -> ex.Expr:
        name, *args = _kids(tree)
        return build.func_call(str(name), _span_of(name), [a for a in args if a is not None], _span_of(tree))

    @v_args(tree=True)
    def list_expr(self, tree: Tree[Any]) -> ex.Expr:
        return ex.ListExpr(_span_of(tree), tuple(c for c in _kids(tree) if c is not None))

    @v_args(tree=True)
    def mapping(self, tree: Tree[Any]) -> ex.ObjectExpr:
        return build.mapping([c for c in _kids(tree) if c is not None], _span_of(tree))

    def pair(self, children: list[Any]) -> tuple[str, ex.Expr, Span]:
        key, value = children
        text = _string(key) if key.type == "STRING" else str(key)
        return (text, value, _span_of(key))

    # ---- types
    @v_args(tree=True)
    def record_type(self, tree: Tree[Any]) -> sx.RecordType:
        return build.record_type(tuple(c for c in _kids(tree) if c is not None), _span_of(tree))

    def field_type(self, children: list[Any]) -> tuple[sx.Name, bool, sx.TypeSpec]:
        return (children[0], len(children) == 3, children[-1])

    def field_name(self, children: list[Token]) -> sx.Name:
        (tok,) = children
        text = _string(tok) if tok.type == "STRING" else str(tok)
        return sx.Name(text, _span_of(tok))

    @v_args(tree=True)
    def type_atom(self, tree: Tree[Any]) -> sx.TypeSpec:
        (inner,) = _kids(tree)
        if isinstance(inner, sx.RecordType):
            return sx.TypeSpec(inner.to_schema(), inner.span)
        return inner  # type: ignore[no-any-return]

    @v_args(tree=True)
    def type_name(self, tree: Tree[Any]) -> sx.TypeSpec:
        (tok,) = _kids(tree)
        return build.type_name(str(tok), _span_of(tok))

    @v_args(tree=True)
    def enum_type(self, tree: Tree[Any]) -> sx.TypeSpec:
        return build.enum_type([_string(t) for t in _kids(tree)], _span_of(tree))

    @v_args(tree=True)
    def array_type(self, tree: Tree[Any]) -> sx.TypeSpec:
        (item,) = _kids(tree)
        return build.array_type(item, _span_of(tree))

    # ---- process header
    def process_name(self, children: list[Token]) -> sx.Name:
        return _name(children[0])

    @v_args(tree=True)
    def process(self, tree: Tree[Any]) -> sx.Process:
        name, *items = _kids(tree)
        return build.process(name, _span_of(tree), items)

    @v_args(tree=True)
    def version(self, tree: Tree[Any]) -> tuple[Any, ...]:
        return ("header", "version", _integer(_kids(tree)[0], "a version"), _span_of(tree))

    @v_args(tree=True)
    def title(self, tree: Tree[Any]) -> tuple[Any, ...]:
        return ("header", "title", _string(_kids(tree)[0]), _span_of(tree))

    @v_args(tree=True)
    def doc(self, tree: Tree[Any]) -> tuple[Any, ...]:
        return ("header", "doc", _string(_kids(tree)[0]), _span_of(tree))

    @v_args(tree=True)
    def correlate(self, tree: Tree[Any]) -> tuple[Any, ...]:
        return ("header", "correlate", _kids(tree)[0], _span_of(tree))

    @v_args(tree=True)
    def reply_channel(self, tree: Tree[Any]) -> tuple[Any, ...]:
        return ("header", "reply_to", _string(_kids(tree)[0]), _span_of(tree))

    @v_args(tree=True)
    def deadline(self, tree: Tree[Any]) -> tuple[Any, ...]:
        return ("header", "deadline", _duration(_kids(tree)[0]), _span_of(tree))

    @v_args(tree=True)
    def input_decl(self, tree: Tree[Any]) -> tuple[Any, ...]:
        (inner,) = _kids(tree)
        if isinstance(inner, sx.RecordType):
            return ("header", "input_record", inner, _span_of(tree))
        return ("header", "input_file", _string(inner), _span_of(inner))

    @v_args(tree=True)
    def limit(self, tree: Tree[Any]) -> tuple[Any, ...]:
        name, value = _kids(tree)
        return ("limit", str(name), _integer(value, "a limit"), _span_of(name))

    @v_args(tree=True)
    def participant(self, tree: Tree[Any]) -> sx.Participant:
        name, *rest = _kids(tree)
        display = None
        contracts: tuple[sx.Contract, ...] = ()
        for item in rest:
            if isinstance(item, Token):
                display = _string(item)
            else:
                contracts = item
        return sx.Participant(_name(name), display, contracts, _span_of(tree))

    def participant_body(self, children: list[sx.Contract]) -> tuple[sx.Contract, ...]:
        return tuple(children)

    @v_args(tree=True)
    def contract_item(self, tree: Tree[Any]) -> sx.Contract:
        kind, name, *payload = _kids(tree)
        return sx.Contract(kind, _name(name), payload[0] if payload else None, _span_of(tree))

    def contract_kind(self, children: list[Token]) -> str:
        return str(children[0])

    @v_args(tree=True)
    def event_decl(self, tree: Tree[Any]) -> sx.EventDecl:
        name, *payload = _kids(tree)
        return sx.EventDecl(_name(name), payload[0] if payload else None, _span_of(tree))

    # ---- steps
    @v_args(tree=True)
    def step(self, tree: Tree[Any]) -> sx.Step:
        name, *items = _kids(tree)
        return build.step(_name(name), _span_of(tree), items)

    @v_args(tree=True)
    def nothing_to_undo(self, tree: Tree[Any]) -> tuple[str, str, Span]:
        kids = _kids(tree)
        return ("nothing_to_undo", _string(kids[0]) if kids else "", _span_of(tree))

    def status(self, children: list[Token]) -> tuple[str, sx.Name]:
        return ("status", _name(children[0]))

    @v_args(tree=True)
    def send(self, tree: Tree[Any]) -> sx.Send:
        participant, command, *data = _kids(tree)
        return sx.Send(_name(participant), _name(command), data[0] if data else None, _span_of(tree))

    def binding(self, children: list[Token]) -> sx.Name:
        return _name(children[0])

    @v_args(tree=True)
    def await_(self, tree: Tree[Any]) -> sx.Await:
        names = tuple(_name(c) for c in _kids(tree) if isinstance(c, Token))
        bind = next((c for c in _kids(tree) if isinstance(c, sx.Name)), None)
        timeout = next((c for c in _kids(tree) if isinstance(c, sx.Timeout)), None)
        return sx.Await(names, bind, timeout, _span_of(tree))

    @v_args(tree=True)
    def timeout(self, tree: Tree[Any]) -> sx.Timeout:
        duration, *retry = _kids(tree)
        return sx.Timeout(_duration(duration), retry[0] if retry else None, _span_of(tree))

    @v_args(tree=True)
    def retry(self, tree: Tree[Any]) -> sx.Retry:
        count, *rest = _kids(tree)
        backoff = _duration(rest[0]) if rest else None
        factor = float(str(rest[1])[1:]) if len(rest) > 1 else 1.0
        return sx.Retry(_integer(count, "a retry count"), backoff, factor, _span_of(tree))

    @v_args(tree=True)
    def on_reply(self, tree: Tree[Any]) -> sx.OnReply:
        names = tuple(_name(c) for c in _kids(tree) if isinstance(c, Token) and c.type == "NAME")
        bind = next((c for c in _kids(tree) if isinstance(c, sx.Name)), None)
        reason = next(c for c in _kids(tree) if isinstance(c, Token) and c.type == "STRING")
        return sx.OnReply(names, bind, _string(reason), _span_of(tree))

    @v_args(tree=True)
    def on_timeout(self, tree: Tree[Any]) -> tuple[str, str, Span]:
        return ("on_timeout", _kids(tree)[0], _span_of(tree))

    def timeout_action(self, children: list[Token]) -> str:
        return _string(children[0])

    @v_args(tree=True)
    def compensate(self, tree: Tree[Any]) -> sx.Compensate:
        participant, command, *rest = _kids(tree)
        data = next((c for c in rest if isinstance(c, ex.ObjectExpr)), None)
        replies = tuple(_name(c) for c in rest if isinstance(c, Token))
        timeout = next((c for c in rest if isinstance(c, sx.Timeout)), None)
        return sx.Compensate(_name(participant), _name(command), data, replies, timeout, _span_of(tree))

    @v_args(tree=True)
    def wait_for(self, tree: Tree[Any]) -> sx.Wait:
        return sx.Wait(_duration(_kids(tree)[0]), None, _span_of(tree))

    @v_args(tree=True)
    def wait_until(self, tree: Tree[Any]) -> sx.Wait:
        return sx.Wait(None, _kids(tree)[0], _span_of(tree))

    # ---- control flow
    def block(self, children: list[Any]) -> tuple[Any, ...]:
        return tuple(children)

    @v_args(tree=True)
    def if_stmt(self, tree: Tree[Any]) -> sx.If:
        cond, body, *rest = _kids(tree)
        arms = [(cond, body)]
        otherwise = None
        for item in rest:
            if item[0] == "elif":
                arms.append((item[1], item[2]))
            else:
                otherwise = item[1]
        return sx.If(tuple(arms), otherwise, _span_of(tree))

    def elif_clause(self, children: list[Any]) -> tuple[Any, ...]:
        return ("elif", children[0], children[1])

    def else_clause(self, children: list[Any]) -> tuple[Any, ...]:
        return ("else", children[0])

    @v_args(tree=True)
    def switch_stmt(self, tree: Tree[Any]) -> sx.Switch:
        subject, *clauses = _kids(tree)
        cases = tuple(c for c in clauses if isinstance(c, sx.Case))
        default = next((c[1] for c in clauses if isinstance(c, tuple)), None)
        return sx.Switch(subject, cases, default, _span_of(tree))

    @v_args(tree=True)
    def case_clause(self, tree: Tree[Any]) -> sx.Case:
        *values, body = _kids(tree)
        return sx.Case(tuple(v.value for v in values), body, _span_of(tree))

    def default_clause(self, children: list[Any]) -> tuple[Any, ...]:
        return ("default", children[0])

    @v_args(tree=True)
    def parallel(self, tree: Tree[Any]) -> sx.Parallel:
        name = next((_name(c) for c in _kids(tree) if isinstance(c, Token)), None)
        branches = tuple(c for c in _kids(tree) if isinstance(c, sx.Branch))
        return sx.Parallel(name, branches, _span_of(tree))

    @v_args(tree=True)
    def branch(self, tree: Tree[Any]) -> sx.Branch:
        name, body = _kids(tree)
        return sx.Branch(_name(name), body, _span_of(tree))

    @v_args(tree=True)
    def race(self, tree: Tree[Any]) -> sx.Race:
        name, *arms = _kids(tree)
        return sx.Race(_name(name), tuple(arms), _span_of(tree))

    @v_args(tree=True)
    def race_message(self, tree: Tree[Any]) -> sx.RaceArm:
        names = tuple(_name(c) for c in _kids(tree) if isinstance(c, Token))
        bind = next((c for c in _kids(tree) if isinstance(c, sx.Name)), None)
        body = _kids(tree)[-1]
        return sx.RaceArm(names, bind, None, None, body, _span_of(tree))

    @v_args(tree=True)
    def race_after(self, tree: Tree[Any]) -> sx.RaceArm:
        duration, body = _kids(tree)
        return sx.RaceArm((), None, _duration(duration), None, body, _span_of(tree))

    @v_args(tree=True)
    def race_at(self, tree: Tree[Any]) -> sx.RaceArm:
        at, body = _kids(tree)
        return sx.RaceArm((), None, None, at, body, _span_of(tree))

    @v_args(tree=True)
    def repeat(self, tree: Tree[Any]) -> sx.Repeat:
        name = None
        bound = None
        body: tuple[Any, ...] = ()
        until = None
        for child in _kids(tree):
            if isinstance(child, Token) and child.type == "NAME":
                name = _name(child)
            elif isinstance(child, Token) and child.type == "NUMBER":
                bound = _integer(child, "a loop bound")
            elif isinstance(child, tuple):
                body = child
            else:
                until = child
        assert until is not None
        return sx.Repeat(name, bound, body, until, _span_of(tree))

    @v_args(tree=True)
    def call(self, tree: Tree[Any]) -> sx.Call:
        process, *rest = _kids(tree)
        path = next((_string(c) for c in rest if isinstance(c, Token)), None)
        data = next((c for c in rest if isinstance(c, ex.ObjectExpr)), None)
        bind = next((c for c in rest if isinstance(c, sx.Name)), None)
        return sx.Call(process, path, data, bind, _span_of(tree))

    @v_args(tree=True)
    def fail_stmt(self, tree: Tree[Any]) -> sx.Fail:
        return sx.Fail(_string(_kids(tree)[0]), _span_of(tree))

    @v_args(tree=True)
    def end_stmt(self, tree: Tree[Any]) -> sx.End:
        return sx.End(_span_of(tree))

    # ---- scenarios
    @v_args(tree=True)
    def scenario(self, tree: Tree[Any]) -> sx.Scenario:
        name, *items = _kids(tree)
        description = None
        if items and isinstance(items[0], Token):
            description = _string(items.pop(0))
        return build.scenario(_name(name), description, _span_of(tree), items)

    def scenario_input(self, children: list[Any]) -> ex.ObjectExpr:
        return children[0]  # type: ignore[no-any-return]

    @v_args(tree=True)
    def scenario_start(self, tree: Tree[Any]) -> tuple[Any, ...]:
        return ("start", _string(_kids(tree)[0]), _span_of(tree))

    @v_args(tree=True)
    def when_rule(self, tree: Tree[Any]) -> sx.WhenRule:
        participant, command, *rest = _kids(tree)
        attempt = next((c for c in rest if isinstance(c, int)), None)
        reaction = rest[-1]
        return sx.WhenRule(
            _name(participant),
            _name(command),
            attempt,
            reaction["reply"],
            reaction["data"],
            reaction["after"],
            reaction["twice"],
            _span_of(tree),
        )

    def attempt(self, children: list[Token]) -> int:
        return _integer(children[0], "an attempt")

    def react_reply(self, children: list[Any]) -> dict[str, Any]:
        name, *rest = children
        out: dict[str, Any] = {"reply": _name(name), "data": None, "after": None, "twice": False}
        for item in rest:
            if isinstance(item, ex.ObjectExpr):
                out["data"] = item
            elif item == "twice":
                out["twice"] = True
            else:
                out["after"] = item
        return out

    def react_silent(self, children: list[Any]) -> dict[str, Any]:
        return {"reply": None, "data": None, "after": None, "twice": False}

    def reply_after(self, children: list[Token]) -> sx.Duration:
        return _duration(children[0])

    def reply_twice(self, children: list[Any]) -> str:
        return "twice"

    @v_args(tree=True)
    def event_rule(self, tree: Tree[Any]) -> sx.DeliverRule:
        name, *rest = _kids(tree)
        data = next((c for c in rest if isinstance(c, ex.ObjectExpr)), None)
        return sx.DeliverRule(_name(name), data, _duration(rest[-1]), _span_of(tree))

    def silence(self, children: list[Token]) -> tuple[str, list[sx.Name]]:
        return ("silence", [_name(c) for c in children])

    def command_ref(self, children: list[Token]) -> str:
        return f"{children[0]}.{children[1]}"

    @v_args(tree=True)
    def expect_status(self, tree: Tree[Any]) -> sx.Expectation:
        return sx.Expectation("status", str(_kids(tree)[0]), _span_of(tree))

    @v_args(tree=True)
    def expect_completed(self, tree: Tree[Any]) -> sx.Expectation:
        return sx.Expectation("completed", [str(c) for c in _kids(tree) if c is not None], _span_of(tree))

    @v_args(tree=True)
    def expect_commands(self, tree: Tree[Any]) -> sx.Expectation:
        return sx.Expectation("commands", [c for c in _kids(tree) if c is not None], _span_of(tree))

    @v_args(tree=True)
    def expect_compensation(self, tree: Tree[Any]) -> sx.Expectation:
        return sx.Expectation("compensation", [c for c in _kids(tree) if c is not None], _span_of(tree))

    @v_args(tree=True)
    def expect_failure(self, tree: Tree[Any]) -> sx.Expectation:
        return sx.Expectation("failure", _string(_kids(tree)[0]), _span_of(tree))

    def scenarios(self, children: list[Any]) -> list[sx.Scenario]:
        return list(children)

    def start(self, children: list[Any]) -> tuple[sx.Process, list[sx.Scenario]]:
        process, *scenarios = children
        return process, scenarios


# ---------------------------------------------------------------- errors in words

_TOKEN_WORDS = {
    "NAME": "a name",
    "PROCESS_NAME": "a process name",
    "STRING": "a string in double quotes",
    "NUMBER": "a number",
    "DURATION": "a duration such as 30s, 5m, 1h or 2d",
    "FACTOR": "a backoff factor such as x2",
    "COMP_OP": "a comparison (==, !=, <, <=, >, >=)",
    "ADD_OP": "`+` or `-`",
    "MUL_OP": "`*`, `/` or `%`",
    "OPTIONAL": "`?`",
    "WS": "white space",
    "COMMENT": "a comment",
    "$END": "the end of the file",
}

KEYWORDS = (
    "process version title doc correlate by reply to deadline input from limit participant command "
    "event step status send await nothing undo as within retry backoff on timeout fail compensate awaiting wait "
    "until if else switch case default parallel branch race timer at repeat max call end scenario "
    "start when attempt no after twice deliver expect completed commands compensation failure "
    "string number integer boolean object array any true false null and or not in"
).split()

# Long lists of expected tokens are summarised by what they have in common. Members are the
# keyword or symbol itself, or the kind of token (NAME, NUMBER, ...); `needs` must be present.
_GROUPS: tuple[tuple[str, frozenset[str], int, str | None], ...] = (
    ("a statement (`step`, `if`, `parallel`, …)",
     frozenset({"step", "if", "switch", "parallel", "race", "repeat", "call", "fail", "end"}), 3, None),
    ("a process item (`participant`, `input`, `event`, …)",
     frozenset({"version", "title", "doc", "correlate", "reply", "deadline", "input", "limit", "participant", "event"}), 3, None),
    ("a step item (`send`, `await`, `compensate`, …)",
     frozenset({"send", "await", "on", "compensate", "nothing", "wait", "status", "doc"}), 3, None),
    ("a scenario item (`input`, `when`, `expect`, …)",
     frozenset({"input", "start", "when", "deliver", "no", "expect"}), 3, None),
    ("a type (`string`, `number`, `boolean`, …)",
     frozenset({"string", "number", "integer", "boolean", "object", "array", "any"}), 3, None),
    ("a value (a name, number, string, list or object)",
     frozenset({"NAME", "NUMBER", "STRING", "(", "-", "[", "{", "true", "false", "null", "not"}), 4, "NAME"),
    ("an operator", frozenset({"COMP_OP", "ADD_OP", "MUL_OP", "and", "or", "in", "not", ".", "["}), 4, None),
)

_STEP_ITEMS = frozenset({"send", "await", "compensate", "nothing", "wait", "status", "on"})


@lru_cache(maxsize=1)
def _literal_terminals() -> dict[str, str]:
    parser = _parser()
    out: dict[str, str] = {}
    for term in parser.terminals:
        if type(term.pattern).__name__ == "PatternStr":
            out[term.name] = term.pattern.value
    return out


def describe_token(name: str) -> str:
    """A token kind in words, never a lark terminal name."""
    if name in _TOKEN_WORDS:
        return _TOKEN_WORDS[name]
    literal = _literal_terminals().get(name)
    if literal is not None:
        return f"`{literal}`"
    return "a token"


def _expected_words(expected: set[str]) -> str:
    """What was expected, in words: groups first, then kinds of tokens, then keywords."""
    literals = _literal_terminals()
    left = {literals.get(name, name) for name in expected}
    grouped: list[str] = []
    for words, members, at_least, needs in _GROUPS:
        present = left & members
        if len(present) >= at_least and (needs is None or needs in present):
            grouped.append(words)
            left -= present
    described = sorted({_TOKEN_WORDS.get(key, f"`{key}`") for key in left})
    keywords = [w for w in described if w.startswith("`")]
    kinds = [w for w in described if not w.startswith("`")]
    ordered = grouped + kinds + keywords
    if len(ordered) > 10:
        ordered = ordered[:9] + ["…"]
    if not ordered:
        return "something else"
    if len(ordered) == 1:
        return ordered[0]
    return ", ".join(ordered[:-1]) + " or " + ordered[-1]


def _token_text(token: Token) -> str:
    if token.type == "$END":
        return "the end of the file"
    text = str(token)
    if len(text) > 30:
        text = text[:27] + "..."
    return f"`{text}`"


def _hint_for(token: Token, expected: set[str]) -> str | None:
    """A suggestion for the most common ways to get a token wrong."""
    text = str(token)
    if text in ("elif", "elsif", "elseif") and "ELSE" in expected:
        return "write `else if`"
    if text in _STEP_ITEMS and "STEP" in expected:
        return f"`{text}` belongs inside a step: `step name {{ {text} ... }}`"
    if token.type == "NAME":
        allowed = [_literal_terminals().get(e) for e in expected]
        words = [w for w in allowed if w and w.isalpha()]
        guess = difflib.get_close_matches(text, words, n=1, cutoff=0.6) or [w for w in words if w == text.lower()]
        if guess:
            return f"did you mean `{guess[0]}`?"
    if token.type in ("NAME", "STRING", "NUMBER") and "COMMA" in expected and "NAME" not in expected:
        return f"a `,` may be missing before {_token_text(token)}"
    if token.type == "NAME" and "STRING" in expected and "NAME" not in expected:
        return f'a text value is written in double quotes: "{text}"'
    if token.type == "STRING" and ("NAME" in expected or "PROCESS_NAME" in expected):
        return "names are written without quotes"
    if token.type == "NUMBER" and "DURATION" in expected:
        if "." in text:
            return "durations are whole numbers with a unit: `90m`, not `1.5h`"
        return f"give a unit: `{text}s`, `{text}m`, `{text}h` or `{text}d`"
    if text == "-" and not expected & {"ADD_OP", "MINUS"}:
        return "names use letters, digits and `_`; only process names may contain `-`"
    if text == "/" and "MUL_OP" not in expected:
        return "comments start with `#`"
    if text == "|" and "VBAR" not in expected:
        return "write `or`"
    return None


_CHARACTER_HINTS = {
    "'": 'strings use double quotes: "like this"',
    "-": "names use letters, digits and `_`; only process names may contain `-`",
    "&": "write `and`",
    "!": "write `not`, or `!=` to compare",
    ";": "no `;` is needed: a line ends an item",
    '"': "this string is not closed on its line; a string on several lines uses three quotes",
}


def _character_hint(char: str, expected: set[str]) -> str | None:
    if char.isalpha() and not char.isascii():
        return "names use the letters a-z and A-Z, digits and `_`"
    if char == "=":
        return "a field is written `name: value`" if "COLON" in expected else "to compare, write `==`"
    return _CHARACTER_HINTS.get(char)


def _syntax_diagnostic(error: UnexpectedInput, text: str, path: str) -> Diagnostic:
    """A lark error as one diagnostic in words: where, what was found, what was expected."""
    if isinstance(error, UnexpectedToken):
        token = error.token
        expected = _accepted(error)
        if token.type == "$END":
            line, column = _end_position(text)
            span = Span(line, column, line, column + 1)
            return Diagnostic(
                "E004",
                "error",
                f"the file ends too early; expected {_expected_words(expected)}",
                span,
                "a `}` may be missing" if "RBRACE" in expected else None,
                path,
            )
        span = _span_of(token)
        return Diagnostic(
            "E003",
            "error",
            f"unexpected {_token_text(token)}; expected {_expected_words(expected)}",
            span,
            _hint_for(token, expected),
            path,
        )
    if isinstance(error, UnexpectedCharacters):
        line, column = error.line, error.column
        position = error.pos_in_stream or 0
        char = error.char if hasattr(error, "char") else text[position]
        expected = _accepted_at(text, position) or set(error.allowed or ())
        shown = repr(char)[1:-1] if not char.isprintable() else char
        want = f"; expected {_expected_words(expected)}" if expected else ""
        return Diagnostic(
            "E002", "error", f"unexpected character `{shown}`{want}", Span(line, column, line, column + 1),
            _character_hint(char, expected), path,
        )
    if isinstance(error, UnexpectedEOF):
        line, column = _end_position(text)
        return Diagnostic(
            "E004",
            "error",
            f"the file ends too early; expected {_expected_words(set(error.expected))}",
            Span(line, column, line, column + 1),
            None,
            path,
        )
    return Diagnostic("E003", "error", "the text cannot be parsed here", Span(1, 1, 1, 2), None, path)


def _accepted_at(text: str, position: int) -> set[str] | None:
    """The tokens the grammar accepts at `position` (the lexer's list for a bad character is wider)."""
    try:
        interactive = _parser().parse_interactive(text[:position], start="start")
        interactive.exhaust_lexer()
        accepted: set[str] = interactive.accepts()  # type: ignore[no-untyped-call]
        return accepted - {"$END"}
    except Exception:  # noqa: BLE001 - the text before the position does not parse: use lark's list
        return None


def _accepted(error: UnexpectedToken) -> set[str]:
    """The tokens truly acceptable where the error happened (LALR's lookahead set is wider)."""
    expected = set(error.expected)
    interactive = getattr(error, "interactive_parser", None)
    if interactive is not None:
        try:
            precise = set(interactive.accepts())
        except Exception:  # noqa: BLE001 - fall back to lark's own list
            return expected
        if precise:
            return precise
    return expected


def _end_position(text: str) -> tuple[int, int]:
    lines = text.split("\n")
    return len(lines), len(lines[-1]) + 1


_SKIP_FOR_DEPTH = re.compile(r'"""(?:.|\n)*?"""|"(?:[^"\\\n]|\\.)*"|#[^\n]*')


_BRACKET = re.compile(r"[(){}\[\]]")


def _check_nesting(text: str, path: str) -> None:
    """Refuse brackets nested deeper than MAX_NESTING before parsing (strings and comments aside)."""
    depth = 0
    stripped = _SKIP_FOR_DEPTH.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
    for match in _BRACKET.finditer(stripped):
        if match.group() in "({[":
            depth += 1
            if depth > MAX_NESTING:
                position = match.start()
                line = stripped.count("\n", 0, position) + 1
                column = position - (stripped.rfind("\n", 0, position) + 1) + 1
                raise SourceError(
                    [
                        Diagnostic(
                            "E005",
                            "error",
                            f"brackets and blocks are nested more than {MAX_NESTING} deep",
                            Span(line, column, line, column + 1),
                            "split the process into called processes or flatten the expression",
                            path,
                        )
                    ],
                    text,
                )
        else:
            depth = max(0, depth - 1)


def decode_source(data: bytes, path: str) -> str:
    """Bytes of a .proc file -> text, or a `SourceError` saying why the file is not text."""
    if len(data) > MAX_SOURCE_BYTES:
        raise SourceError(
            [Diagnostic("E001", "error", f"the file is larger than {MAX_SOURCE_BYTES // (1024 * 1024)} MiB", Span(1, 1, 1, 2), None, path)]
        )
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


@contextmanager
def collection_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a large tree is built or walked.

    Parsing, compiling and validating allocate many small objects that reference counting
    frees; the cyclic collector would scan all of them again and again, which costs more
    than the work itself on a large process (and grows with it). Nested use is fine.

    On the way out, what was built is moved to the oldest generation (`gc.freeze()` then
    `gc.unfreeze()`, both constant time) before the collector is enabled again. Otherwise the
    first young collection after the pause walks every object built during it (a fifth of a
    second after a 5,000-step process), only to find that they are all alive: a definition
    lives as long as the service. They are still collected with the oldest generation. When
    the host has frozen objects of its own (`gc.freeze()` before forking workers), this step
    is skipped: unfreezing would thaw them too.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            if gc.get_freeze_count() == 0:  # never thaw what the host froze itself (a pre-fork server)
                gc.freeze()
                gc.unfreeze()
            gc.enable()


def parse(text: str, path: str = "<text>", scenarios: bool = True) -> sx.SourceFile:
    """Parse process text into its syntax tree, or raise `SourceError` with one diagnostic.

    With `scenarios=False` the scenario blocks after the process are not parsed now: the
    returned file keeps their text (`pending_scenarios`) for `parse_scenarios`, so a service
    that only runs the process does not pay for its tests."""
    with collection_paused():
        if not scenarios:
            cut = _scenarios_start(text)
            if cut is not None:
                source = _parse(text[:cut], path)
                source.text = text
                source.pending_scenarios = re.sub(r"[^\n]", " ", text[:cut]) + text[cut:]
                return source
        return _parse(text, path)


def parse_scenarios(source: sx.SourceFile) -> list[sx.Scenario]:
    """The scenarios of a file parsed with `scenarios=False` (its own, if it has none pending)."""
    if source.pending_scenarios is None:
        return source.scenarios
    text = source.pending_scenarios
    try:
        return reader.read_scenarios(text)
    except (reader.Unreadable, build.BadLiteral, RecursionError):
        pass  # read it again with Lark, which says what is wrong
    result: list[sx.Scenario] = _lark_read(text, source.path, "scenarios", source.text)
    return result


def _scenarios_start(text: str) -> int | None:
    """Where the scenario blocks begin: just after the `}` that closes the process block."""
    stripped = _SKIP_FOR_DEPTH.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
    depth = 0
    for match in _BRACKET.finditer(stripped):
        if match.group() in "({[":
            depth += 1
        elif depth > 0:
            depth -= 1
            if depth == 0:
                rest = stripped[match.end() :]
                return match.end() if rest.strip() else None
    return None


def _parse(text: str, path: str) -> sx.SourceFile:
    if not text.strip():
        raise SourceError(
            [Diagnostic("E004", "error", "the file is empty; expected `process`", Span(1, 1, 1, 2), "start with `process name { ... }`", path)],
            text,
        )
    try:
        process, scenarios = reader.read(text)
    except (reader.Unreadable, build.BadLiteral, RecursionError):
        process, scenarios = read_with_lark(text, path)  # slower, and says what is wrong
    return sx.SourceFile(process, scenarios, path, text)


def read_with_lark(text: str, path: str = "<text>") -> tuple[sx.Process, list[sx.Scenario]]:
    """The process and scenarios of a file, read by Lark: the reference reading of the
    grammar, and the one that explains mistakes (`SourceError`). `parse` uses it only for
    text the fast reader (`reader.py`) does not accept."""
    _check_nesting(text, path)
    process, scenarios = _lark_read(text, path, "start", text)
    return process, scenarios


def _lark_read(text: str, path: str, start: str, shown: str) -> Any:
    """Lark's reading of `text` from the grammar rule `start`; a mistake becomes a
    `SourceError` over `shown` (the file's own text, which `text` may blank in part)."""
    try:
        tree = _parser().parse(text, start=start)
    except UnexpectedInput as error:
        raise SourceError([_syntax_diagnostic(error, text, path)], shown) from None
    try:
        return _ToSyntax().transform(tree)
    except RecursionError:
        raise SourceError([_too_deep(tree, path)], shown) from None
    except VisitError as error:
        inner = error.orig_exc
        if isinstance(inner, build.BadLiteral):
            raise SourceError([Diagnostic(inner.code, "error", inner.message, inner.span, inner.hint, path)], shown) from None
        if isinstance(inner, RecursionError):
            raise SourceError([_too_deep(tree, path)], shown) from None
        raise inner from None


def _too_deep(tree: Tree[Token], path: str) -> Diagnostic:
    """E005 for text whose tree is too deep to build (a very long chain such as `a + a + ...`)."""
    deepest: tuple[int, Any] = (0, tree)
    stack: list[tuple[Any, int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, Tree):
            if depth > deepest[0] and not getattr(node.meta, "empty", True):
                deepest = (depth, node)
            stack.extend((child, depth + 1) for child in node.children)
    outer = deepest[1]
    span = _span_of(outer)
    return Diagnostic(
        "E005",
        "error",
        f"this text is nested too deeply to read (more than {deepest[0]} levels)",
        Span(span.line, span.column, span.line, span.column + 1),
        "split long chains of operators or field accesses; compute such values in a participant",
        path,
    )
