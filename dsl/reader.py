"""The fast reader: `grammar.lark` read by hand-written recursive descent.

Lark reads a 5,000-step process in about seven seconds: its lexer and LALR driver cost 20 to
30 µs a token in pure Python, and it builds a tree that is then walked again. This reader
takes one regular expression match a token and builds the syntax nodes as it goes, through
the same builders as the Lark transformer (`build.py`), about ten times faster.

It does not explain mistakes. On anything it does not accept it raises `Unreadable`, and
`parser.parse` reads the text again with Lark, whose errors point at the text and say in
words what was expected. So the grammar file stays the one definition of the language, and
Lark the reference: `tests/test_reader.py` checks on every sample, on generated processes and
on random mutations that whatever this reader accepts, Lark accepts as the same tree.

Keywords are not reserved, as with Lark's contextual lexer: a word is a keyword only where
the grammar allows that keyword, and a name wherever a name may stand (`send shop.status`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NoReturn

from procflow.dsl import build
from procflow.dsl import expressions as ex
from procflow.dsl import syntax as sx
from procflow.dsl.diagnostics import Span

MAX_NESTING = 64
"""Brackets and blocks nested deeper than this are refused (`parser.MAX_NESTING` is this one)."""

# White space and comments, then one token: a word, a symbol, a string, a duration, a number,
# or the end of the text. Terminals as in grammar.lark (DURATION before NUMBER: its priority).
# `findall` splits the whole text at C speed; a character no terminal matches is skipped by it,
# which the reader notices at the end (the offsets no longer add up to the text's length).
_TOKENS = re.compile(
    r"""((?:[ \t\f\r\n]+|\#[^\n]*)*)
    ([A-Za-z_][A-Za-z0-9_]*
      |==|!=|<=|>=|[-<>+*/%{}()\[\].,:?|]
      |\"\"\"(?:.|\n)*?\"\"\"|"(?:[^"\\\n]|\\.)*"
      |(?:[0-9]+(?:ms|s|m|h|d|w))+(?![A-Za-z0-9_])
      |[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?
      |\Z)""",
    re.VERBOSE,
)
_KIND = {c: "W" for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_"}
_KIND.update({c: "O" for c in "=!<>-+*/%{}()[].,:?|"})
_KIND.update({c: "N" for c in "0123456789"})
_KIND['"'] = "S"
_PROCESS_NAME = re.compile(r"[a-z][a-z0-9_]*(-[a-z0-9_]+)+")
_FACTOR = re.compile(r"x[0-9]+(\.[0-9]+)?")
_COMPARE = frozenset({"==", "!=", "<=", ">=", "<", ">"})
_LITERAL_WORDS = {"true": True, "false": False, "null": None}
_TYPES = frozenset({"string", "number", "integer", "boolean", "object", "array", "any"})
_STATEMENTS = frozenset({"step", "if", "switch", "parallel", "race", "repeat", "call", "fail", "end"})
_new_span = tuple.__new__
"""`_new_span(Span, (line, column, end_line, end_column))` builds a span without the named
tuple's Python-level `__new__`: half the cost, and the reader builds one for every name."""


class Unreadable(Exception):
    """The fast reader does not accept this text; read it with Lark for the diagnostic."""


def read(text: str) -> tuple[sx.Process, list[sx.Scenario]]:
    """A process file (`start` in the grammar) -> its process and scenarios."""
    reader = _Reader(text)
    process = reader.process()
    scenarios = reader.scenarios()
    return process, scenarios


def read_scenarios(text: str) -> list[sx.Scenario]:
    """Scenario blocks only (`scenarios` in the grammar)."""
    return _Reader(text).scenarios()


class _Reader:
    """One pass over the tokens. The token ahead is `kind`/`value`, from offset `start` to `pos`,
    on line `line` (which begins at offset `line_start`); `last_end` is the offset where the
    last token taken ended (its line and column are worked out only when a span needs them)."""

    __slots__ = ("text", "tokens", "i", "kind", "value", "start", "pos", "line", "line_start", "depth", "last_end")

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _TOKENS.findall(text)
        self.i = -1
        self.line = 1
        self.line_start = 0
        self.depth = 0
        self.kind = self.value = ""
        self.start = self.pos = 0
        self._take()  # the first token becomes the token ahead
        self.last_end = 0

    # ---------------------------------------------------------------- tokens

    def _take(self) -> str:
        """Take the token ahead; the next one becomes the token ahead."""
        value: str = self.value
        kind = self.kind
        if kind == "O":
            if value in "({[":
                self.depth += 1
                if self.depth > MAX_NESTING:
                    _give_up()
            elif value in ")}]" and self.depth:
                self.depth -= 1
        elif kind == "E":
            _give_up()
        elif kind == "S" and "\n" in value:  # a doc string over several lines
            self.line += value.count("\n")
            self.line_start = self.start + value.rfind("\n") + 1
        pos = self.pos
        self.last_end = pos
        self.i = i = self.i + 1
        space, ahead = self.tokens[i]
        if space:
            if "\n" in space:
                self.line += space.count("\n")
                self.line_start = pos + space.rfind("\n") + 1
            pos += len(space)
        self.start = pos
        self.pos = pos + len(ahead)
        self.value = ahead
        if ahead:
            kind = _KIND[ahead[0]]
            self.kind = "D" if kind == "N" and ahead[-1] in "smhdw" else kind
        elif self.pos == len(self.text):
            self.kind = "E"
        else:
            _give_up()  # findall skipped a character no terminal matches
        return value

    def _here(self) -> tuple[int, int]:
        """Where the token ahead begins."""
        return (self.line, self.start - self.line_start + 1)

    def _token_span(self) -> Span:
        line = self.line
        column = self.start - self.line_start + 1
        value = self.value
        if self.kind == "S" and "\n" in value:
            return _new_span(Span, (line, column, line + value.count("\n"), len(value) - value.rfind("\n")))
        return _new_span(Span, (line, column, line, column + len(value)))

    def _span_from(self, start: tuple[int, int]) -> Span:
        """From `start` to the end of the last token taken."""
        end = self.last_end
        line_start = self.line_start
        if end >= line_start:  # on the line of the token ahead
            return _new_span(Span, (start[0], start[1], self.line, end - line_start + 1))
        text = self.text
        line = self.line - text.count("\n", end, line_start)
        return _new_span(Span, (start[0], start[1], line, end - text.rfind("\n", 0, end)))

    def _at(self, word: str) -> bool:
        return self.kind == "W" and self.value == word

    def _at_op(self, op: str) -> bool:
        return self.kind == "O" and self.value == op

    def _keyword(self, word: str) -> None:
        if self.kind != "W" or self.value != word:
            _give_up()
        self._take()

    def _op(self, op: str) -> None:
        if self.kind != "O" or self.value != op:
            _give_up()
        self._take()

    def _token(self, kind: str) -> tuple[str, Span]:
        if self.kind != kind:
            _give_up()
        span = self._token_span()
        return self._take(), span

    def _name(self) -> sx.Name:
        if self.kind != "W":
            _give_up()
        line = self.line
        column = self.start - self.line_start + 1
        span = _new_span(Span, (line, column, line, column + len(self.value)))
        return sx.Name(self._take(), span)

    def _names(self) -> tuple[sx.Name, ...]:
        names = [self._name()]
        while self.kind == "O" and self.value == ",":
            self._take()
            names.append(self._name())
        return tuple(names)

    def _string(self) -> str:
        if self.kind != "S":
            _give_up()
        return build.string(self._take())

    def _duration(self) -> sx.Duration:
        text, span = self._token("D")
        return build.duration(text, span)

    def _integer(self, what: str) -> int:
        text, span = self._token("N")
        return build.integer(text, span, what)

    def _relex(self, pattern: re.Pattern[str]) -> str | None:
        """The word ahead read again with a terminal that may run past it (`x1.5`, `kyc-check`).

        The tokens it covers are passed over; if it ends inside a token, the reader gives up."""
        m = pattern.match(self.text, self.start)
        if m is None:
            return None
        end = m.end()
        last_end = end
        while self.pos < end:
            self._take()
        if self.pos != end:
            _give_up()
        self._take()
        self.last_end = last_end
        return m.group()

    # ---------------------------------------------------------------- process

    def process(self) -> sx.Process:
        start = self._here()
        self._keyword("process")
        name = self._process_name()
        self._op("{")
        items: list[Any] = []
        while not (self.kind == "O" and self.value == "}"):
            items.append(self._process_item())
        self._take()
        return build.process(name, self._span_from(start), items)

    def _process_name(self) -> sx.Name:
        if self.kind != "W":
            _give_up()
        start = self._here()
        text = self._relex(_PROCESS_NAME)
        if text is None:
            return self._name()
        return sx.Name(text, self._span_from(start))

    def _process_item(self) -> Any:
        if self.kind != "W":
            _give_up()
        word = self.value
        if word in _STATEMENTS:
            return self._statement()
        start = self._here()
        self._take()
        if word == "participant":
            return self._participant(start)
        if word == "event":
            name = self._name()
            payload = self._record_type() if self._at_op("{") else None
            return sx.EventDecl(name, payload, self._span_from(start))
        if word == "limit":
            name = self._name()
            return ("limit", name.text, self._integer("a limit"), name.span)
        if word == "version":
            value: Any = self._integer("a version")
        elif word in ("title", "doc"):
            value = self._string()
        elif word == "correlate":
            self._keyword("by")
            value = self._expr()
        elif word == "reply":
            self._keyword("to")
            value = self._string()
            word = "reply_to"
        elif word == "deadline":
            value = self._duration()
        elif word == "input":
            if self._at("from"):
                self._take()
                span = self._token_span()
                return ("header", "input_file", self._string(), span)
            value = self._record_type()
            word = "input_record"
        else:
            _give_up()
        return ("header", word, value, self._span_from(start))

    def _participant(self, start: tuple[int, int]) -> sx.Participant:
        name = self._name()
        display = self._string() if self.kind == "S" else None
        contracts: list[sx.Contract] = []
        if self._at_op("{"):
            self._take()
            while not self._at_op("}"):
                if self.kind != "W" or self.value not in ("command", "reply"):
                    _give_up()
                item_line = self._here()
                kind = self._take()
                item_name = self._name()
                payload = self._record_type() if self._at_op("{") else None
                contracts.append(sx.Contract(kind, item_name, payload, self._span_from(item_line)))
            self._take()
        return sx.Participant(name, display, tuple(contracts), self._span_from(start))

    # ---------------------------------------------------------------- types

    def _record_type(self) -> sx.RecordType:
        start = self._here()
        self._op("{")
        fields: list[tuple[sx.Name, bool, sx.TypeSpec]] = []
        while not self._at_op("}"):
            if self.kind == "S":
                span = self._token_span()
                field = sx.Name(self._string(), span)
            else:
                field = self._name()
            optional = self._at_op("?")
            if optional:
                self._take()
            self._op(":")
            fields.append((field, optional, self._type_expr()))
            if not self._at_op(","):
                break
            self._take()
        self._op("}")
        return build.record_type(tuple(fields), self._span_from(start))

    def _type_expr(self) -> sx.TypeSpec:
        start = self._here()
        if self.kind == "S":
            values = [self._string()]
            while self._at_op("|"):
                self._take()
                values.append(self._string())
            return build.enum_type(values, self._span_from(start))
        if self.kind == "W" and self.value in _TYPES:
            span = self._token_span()
            atom = build.type_name(self._take(), span)
        else:
            record = self._record_type()
            atom = sx.TypeSpec(record.to_schema(), record.span)
        if self._at_op("["):
            self._take()
            self._op("]")
            return build.array_type(atom, self._span_from(start))
        return atom

    # ---------------------------------------------------------------- statements

    def _block(self) -> tuple[Any, ...]:
        self._op("{")
        body = []
        while not (self.kind == "O" and self.value == "}"):
            body.append(self._statement())
        self._take()
        return tuple(body)

    def _statement(self) -> Any:
        if self.kind != "W":
            _give_up()
        word = self.value
        start = self._here()
        self._take()
        if word == "step":
            return self._step(start)
        if word == "if":
            return self._if(start)
        if word == "switch":
            return self._switch(start)
        if word == "parallel":
            name = self._name() if self.kind == "W" else None
            self._op("{")
            branches = [self._branch()]
            while not self._at_op("}"):
                branches.append(self._branch())
            self._take()
            return sx.Parallel(name, tuple(branches), self._span_from(start))
        if word == "race":
            return self._race(start)
        if word == "repeat":
            return self._repeat(start)
        if word == "call":
            process = self._process_name()
            path = None
            if self._at("from"):
                self._take()
                path = self._string()
            data = self._mapping() if self._at_op("{") else None
            bind = self._binding()
            return sx.Call(process, path, data, bind, self._span_from(start))
        if word == "fail":
            return sx.Fail(self._string(), self._span_from(start))
        if word == "end":
            return sx.End(self._span_from(start))
        _give_up()

    def _binding(self) -> sx.Name | None:
        if self.kind == "W" and self.value == "as":
            self._take()
            return self._name()
        return None

    def _step(self, start: tuple[int, int]) -> sx.Step:
        name = self._name()
        self._op("{")
        items: list[Any] = []
        while not (self.kind == "O" and self.value == "}"):
            items.append(self._step_item())
        self._take()
        return build.step(name, self._span_from(start), items)

    def _step_item(self) -> Any:
        if self.kind != "W":
            _give_up()
        word = self.value
        start = self._here()
        self._take()
        if word == "send":
            participant = self._name()
            self._op(".")
            command = self._name()
            data = self._mapping() if self._at_op("{") else None
            return sx.Send(participant, command, data, self._span_from(start))
        if word == "await":
            names = self._names()
            bind = self._binding()
            timeout = self._timeout()
            return sx.Await(names, bind, timeout, self._span_from(start))
        if word == "on":
            if self._at("timeout"):
                self._take()
                self._keyword("fail")
                reason = self._string()
                return ("on_timeout", reason, self._span_from(start))
            names = self._names()
            bind = self._binding()
            self._keyword("fail")
            reason = self._string()
            return sx.OnReply(names, bind, reason, self._span_from(start))
        if word == "compensate":
            participant = self._name()
            self._op(".")
            command = self._name()
            data = self._mapping() if self._at_op("{") else None
            replies: tuple[sx.Name, ...] = ()
            if self._at("awaiting"):
                self._take()
                replies = self._names()
            timeout = self._timeout()
            return sx.Compensate(participant, command, data, replies, timeout, self._span_from(start))
        if word == "status":
            return ("status", self._name())
        if word == "doc":
            return ("header", "doc", self._string(), self._span_from(start))
        if word == "nothing":
            self._keyword("to")
            self._keyword("undo")
            reason = self._string() if self.kind == "S" else ""
            return ("nothing_to_undo", reason, self._span_from(start))
        if word == "wait":
            if self._at("until"):
                self._take()
                return sx.Wait(None, self._expr(), self._span_from(start))
            return sx.Wait(self._duration(), None, self._span_from(start))
        _give_up()

    def _timeout(self) -> sx.Timeout | None:
        if not (self.kind == "W" and self.value == "within"):
            return None
        start = self._here()
        self._take()
        duration = self._duration()
        retry = None
        if self._at("retry"):
            retry_line = self._here()
            self._take()
            count = self._integer("a retry count")
            backoff = None
            factor = 1.0
            if self._at("backoff"):
                self._take()
                backoff = self._duration()
                if self.kind == "W" and self.value[0] == "x":
                    text = self._relex(_FACTOR)
                    if text is not None:
                        factor = float(text[1:])
            retry = sx.Retry(count, backoff, factor, self._span_from(retry_line))
        return sx.Timeout(duration, retry, self._span_from(start))

    def _if(self, start: tuple[int, int]) -> sx.If:
        arms = [(self._expr(), self._block())]
        otherwise = None
        while self._at("else"):
            self._take()
            if self._at("if"):
                self._take()
                arms.append((self._expr(), self._block()))
            else:
                otherwise = self._block()
                break
        return sx.If(tuple(arms), otherwise, self._span_from(start))

    def _switch(self, start: tuple[int, int]) -> sx.Switch:
        subject = self._expr()
        self._op("{")
        cases = []
        while self._at("case"):
            case_line = self._here()
            self._take()
            values = [self._literal_value()]
            while self._at_op(","):
                self._take()
                values.append(self._literal_value())
            cases.append(sx.Case(tuple(values), self._block(), self._span_from(case_line)))
        if not cases:
            _give_up()
        default = None
        if self._at("default"):
            self._take()
            default = self._block()
        self._op("}")
        return sx.Switch(subject, tuple(cases), default, self._span_from(start))

    def _literal_value(self) -> Any:
        kind = self.kind
        if kind == "N":
            return build.number(self._take())
        if kind == "S":
            return self._string()
        if kind == "W" and self.value in _LITERAL_WORDS:
            return _LITERAL_WORDS[self._take()]
        _give_up()

    def _branch(self) -> sx.Branch:
        start = self._here()
        self._keyword("branch")
        name = self._name()
        return sx.Branch(name, self._block(), self._span_from(start))

    def _race(self, start: tuple[int, int]) -> sx.Race:
        name = self._name()
        self._op("{")
        arms = [self._race_arm()]
        while not self._at_op("}"):
            arms.append(self._race_arm())
        self._take()
        return sx.Race(name, tuple(arms), self._span_from(start))

    def _race_arm(self) -> sx.RaceArm:
        start = self._here()
        self._keyword("on")
        if self._at("timer"):
            self._take()
            if self._at("at"):
                self._take()
                at = self._expr()
                return sx.RaceArm((), None, None, at, self._block(), self._span_from(start))
            after = self._duration()
            return sx.RaceArm((), None, after, None, self._block(), self._span_from(start))
        names = self._names()
        bind = self._binding()
        return sx.RaceArm(names, bind, None, None, self._block(), self._span_from(start))

    def _repeat(self, start: tuple[int, int]) -> sx.Repeat:
        name = None
        if self.kind == "W" and self.value != "max":
            name = self._name()
        bound = None
        if self._at("max"):
            self._take()
            bound = self._integer("a loop bound")
        body = self._block()
        self._keyword("until")
        until = self._expr()
        return sx.Repeat(name, bound, body, until, self._span_from(start))

    # ---------------------------------------------------------------- scenarios

    def scenarios(self) -> list[sx.Scenario]:
        result = []
        while self._at("scenario"):
            result.append(self._scenario())
        if self.kind != "E":
            _give_up()
        return result

    def _scenario(self) -> sx.Scenario:
        start = self._here()
        self._take()
        name = self._name()
        description = self._string() if self.kind == "S" else None
        self._op("{")
        items: list[Any] = []
        while not self._at_op("}"):
            items.append(self._scenario_item())
        self._take()
        return build.scenario(name, description, self._span_from(start), items)

    def _scenario_item(self) -> Any:
        if self.kind != "W":
            _give_up()
        word = self.value
        start = self._here()
        self._take()
        if word == "input":
            return self._mapping()
        if word == "start":
            self._keyword("at")
            return ("start", self._string(), self._span_from(start))
        if word == "when":
            return self._when(start)
        if word == "deliver":
            event = self._name()
            data = self._mapping() if self._at_op("{") else None
            self._keyword("after")
            return sx.DeliverRule(event, data, self._duration(), self._span_from(start))
        if word == "no":
            self._keyword("event")
            return ("silence", list(self._names()))
        if word == "expect":
            return self._expect(start)
        _give_up()

    def _when(self, start: tuple[int, int]) -> sx.WhenRule:
        participant = self._name()
        self._op(".")
        command = self._name()
        attempt = None
        if self._at("attempt"):
            self._take()
            attempt = self._integer("an attempt")
        if self._at("no"):
            self._take()
            self._keyword("reply")
            return sx.WhenRule(participant, command, attempt, None, None, None, False, self._span_from(start))
        self._keyword("reply")
        reply = self._name()
        data = self._mapping() if self._at_op("{") else None
        after = None
        twice = False
        while self.kind == "W":
            if self.value == "after":
                self._take()
                after = self._duration()
            elif self.value == "twice":
                self._take()
                twice = True
            else:
                break
        return sx.WhenRule(participant, command, attempt, reply, data, after, twice, self._span_from(start))

    def _expect(self, start: tuple[int, int]) -> sx.Expectation:
        if self.kind != "W":
            _give_up()
        what = self._take()
        if what == "status":
            value: Any = self._name().text
        elif what == "failure":
            value = self._string()
        elif what in ("completed", "commands", "compensation"):
            self._op("[")
            value = []
            if not self._at_op("]"):
                value.append(self._command_ref(what))
                while self._at_op(","):
                    self._take()
                    value.append(self._command_ref(what))
            self._op("]")
        else:
            _give_up()
        return sx.Expectation(what, value, self._span_from(start))

    def _command_ref(self, what: str) -> str:
        first = self._name().text
        if what == "completed":
            return first
        self._op(".")
        return f"{first}.{self._name().text}"

    # ---------------------------------------------------------------- expressions

    def _expr(self) -> ex.Expr:
        return self._chain("or", self._and)

    def _and(self) -> ex.Expr:
        return self._chain("and", self._not)

    def _chain(self, op: str, operand: Callable[[], ex.Expr]) -> ex.Expr:
        """`operand (op operand)*`, left to right (`or` over `and`, `and` over `not`)."""
        left = operand()
        if not (self.kind == "W" and self.value == op):
            return left
        items = [left]
        while self.kind == "W" and self.value == op:
            self._take()
            items.append(operand())
        return build.chain(items, op)

    def _not(self) -> ex.Expr:
        if self.kind == "W" and self.value == "not":
            start = self._here()
            self._take()
            operand = self._not()
            return ex.Unary(self._span_from(start), "not", operand)
        return self._comparison()

    def _comparison(self) -> ex.Expr:
        start = self._here()
        left = self._sum()
        kind, value = self.kind, self.value
        if kind == "O" and value in _COMPARE:
            op = value
        elif kind == "W" and value == "in":
            op = "in"
        elif kind == "W" and value == "not":
            self._take()
            if not self._at("in"):
                _give_up()
            op = "not in"
        else:
            return left
        self._take()
        right = self._sum()
        return ex.Binary(self._span_from(start), op, left, right)

    def _sum(self) -> ex.Expr:
        start = self._here()
        left = self._product()
        while self.kind == "O" and (self.value == "+" or self.value == "-"):
            op = self._take()
            right = self._product()
            left = ex.Binary(self._span_from(start), op, left, right)
        return left

    def _product(self) -> ex.Expr:
        start = self._here()
        left = self._unary()
        while self.kind == "O" and self.value in ("*", "/", "%"):
            op = self._take()
            right = self._unary()
            left = ex.Binary(self._span_from(start), op, left, right)
        return left

    def _unary(self) -> ex.Expr:
        if self.kind == "O" and self.value == "-":
            start = self._here()
            self._take()
            operand = self._unary()
            return ex.Unary(self._span_from(start), "-", operand)
        start = self._here()
        node = self._atom()
        while self.kind == "O":
            if self.value == ".":
                self._take()
                name = self._name().text
                node = ex.Field(self._span_from(start), node, name)
            elif self.value == "[":
                self._take()
                key = self._expr()
                self._op("]")
                node = ex.Index(self._span_from(start), node, key)
            else:
                break
        return node

    def _atom(self) -> ex.Expr:
        kind = self.kind
        if kind == "W":
            start = self._here()
            span = self._token_span()
            word = self._take()
            if word in _LITERAL_WORDS:
                return ex.Literal(span, _LITERAL_WORDS[word])
            if not (self.kind == "O" and self.value == "("):
                return ex.Var(span, word)
            self._take()
            args = self._expr_list(")")
            return build.func_call(word, span, args, self._span_from(start))
        if kind == "N":
            span = self._token_span()
            return ex.Literal(span, build.number(self._take()))
        if kind == "S":
            span = self._token_span()
            return ex.Literal(span, self._string())
        if kind == "O":
            if self.value == "(":
                self._take()
                inner = self._expr()
                self._op(")")
                return inner
            if self.value == "[":
                start = self._here()
                self._take()
                items = self._expr_list("]")
                return ex.ListExpr(self._span_from(start), tuple(items))
            if self.value == "{":
                return self._mapping()
        _give_up()

    def _expr_list(self, close: str) -> list[ex.Expr]:
        """`expr ("," expr)*` up to and including `close` (no trailing comma)."""
        items: list[ex.Expr] = []
        if not self._at_op(close):
            items.append(self._expr())
            while self._at_op(","):
                self._take()
                items.append(self._expr())
        self._op(close)
        return items

    def _mapping(self) -> ex.ObjectExpr:
        start = self._here()
        self._op("{")
        pairs: list[tuple[str, ex.Expr, Span]] = []
        while not (self.kind == "O" and self.value == "}"):
            span = self._token_span()
            if self.kind == "W":
                key = self._take()
            elif self.kind == "S":
                key = self._string()
            else:
                _give_up()
            self._op(":")
            pairs.append((key, self._expr(), span))
            if not (self.kind == "O" and self.value == ","):
                break
            self._take()
        self._op("}")
        return build.mapping(pairs, self._span_from(start))


def _give_up() -> NoReturn:
    raise Unreadable
