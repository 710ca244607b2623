"""The small condition language of ``filter`` (``where = "loss > 10 and step >= 100"``).

No ``eval``: a hand-written recursive-descent parser turns the text into a
tree of closures, once, when the config is loaded. The grammar::

    condition  := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | primary
    primary    := "(" condition ")" | operand [op operand]
    op         := "==" | "!=" | "<" | "<=" | ">" | ">="
    operand    := field | number | string | "true" | "false" | "null"
    field      := name ("." name)*        name = [A-Za-z_][A-Za-z0-9_]*
    string     := "..." | '...'           (backslash escapes \\" \\' \\\\)

Meaning, chosen so that a condition never raises on odd data:

* a field is a key of the event's JSON object payload; ``a.b`` looks inside
  a nested object. A missing field is ``null``.
* numbers compare with numbers (ints and floats alike; ``NaN`` compares
  false with everything, as in IEEE 754), strings with strings (``<`` is
  code-point order), booleans and ``null`` only with ``==`` / ``!=``;
  comparing values of different types is false (``!=`` true).
* an operand alone is true when the field is present and not ``null``,
  ``false``, ``0`` or ``""``.
* an event whose payload is not a JSON object has every field ``null``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

__all__ = ["Condition", "parse_condition"]

_TOKEN = re.compile(
    r"""
    \s*(?:
      (?P<number>-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
    | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<op>==|!=|<=|>=|<|>)
    | (?P<paren>[()])
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
    | (?P<bad>\S)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "true", "false", "null"}
_MISSING: Any = None

Getter = Callable[[tuple[Any, ...]], Any]
Test = Callable[[tuple[Any, ...]], bool]


class Condition:
    """A parsed condition: ``fields`` it reads (top-level keys) and ``test(values)``.

    ``values`` is the tuple of the top-level ``fields``' values, in order
    (what :class:`mux_core.FieldReader` returns).
    """

    def __init__(self, text: str, fields: tuple[str, ...], test: Test) -> None:
        self.text = text
        self.fields = fields
        self.test = test

    def __repr__(self) -> str:
        return f"Condition({self.text!r})"


def parse_condition(text: str) -> Condition:
    """Parse ``text``; raise ValueError naming the column of the first problem."""
    parser = _Parser(text)
    test = parser.parse()
    return Condition(text, tuple(parser.fields), test)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []
        for match in _TOKEN.finditer(text):
            kind = match.lastgroup
            if kind is None:
                continue
            value = match.group(kind)
            column = match.start(kind) + 1
            if kind == "bad":
                raise ValueError(f"unexpected {value!r} at column {column} of {text!r}")
            if (kind == "name" and value in _KEYWORDS) or kind == "paren":
                kind = value
            self.tokens.append((kind, value, column))
        self.pos = 0
        #: Top-level field names read, in first-use order.
        self.fields: list[str] = []

    # -- tokens --------------------------------------------------------------

    def _peek(self) -> str | None:
        return self.tokens[self.pos][0] if self.pos < len(self.tokens) else None

    def _take(self) -> tuple[str, str, int]:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def _error(self, expected: str) -> ValueError:
        if self.pos < len(self.tokens):
            _, value, column = self.tokens[self.pos]
            return ValueError(
                f"expected {expected} at column {column} of {self.text!r}, got {value!r}"
            )
        return ValueError(f"expected {expected} at the end of {self.text!r}")

    # -- grammar -------------------------------------------------------------

    def parse(self) -> Test:
        if not self.tokens:
            raise ValueError("empty condition; write e.g. 'loss > 10'")
        test = self._or()
        if self.pos != len(self.tokens):
            raise self._error("'and', 'or' or the end")
        return test

    def _or(self) -> Test:
        tests = [self._and()]
        while self._peek() == "or":
            self._take()
            tests.append(self._and())
        if len(tests) == 1:
            return tests[0]
        return lambda values: any(test(values) for test in tests)

    def _and(self) -> Test:
        tests = [self._not()]
        while self._peek() == "and":
            self._take()
            tests.append(self._not())
        if len(tests) == 1:
            return tests[0]
        return lambda values: all(test(values) for test in tests)

    def _not(self) -> Test:
        if self._peek() == "not":
            self._take()
            inner = self._not()
            return lambda values: not inner(values)
        return self._primary()

    def _primary(self) -> Test:
        if self._peek() == "(":
            self._take()
            test = self._or()
            if self._peek() != ")":
                raise self._error("')'")
            self._take()
            return test
        left = self._operand()
        if self._peek() != "op":
            return lambda values: _truthy(left(values))
        _, op, _ = self._take()
        right = self._operand()
        compare = _COMPARISONS[op]
        return lambda values: compare(left(values), right(values))

    def _operand(self) -> Getter:
        kind = self._peek()
        if kind is None:
            raise self._error("a field, a number or a string")
        if kind == "number":
            constant: Any = _number(self._take()[1])
        elif kind == "string":
            constant = _unquote(self._take()[1])
        elif kind in ("true", "false", "null"):
            self._take()
            constant = {"true": True, "false": False, "null": None}[kind]
        elif kind == "name":
            return self._field(self._take()[1])
        else:
            raise self._error("a field, a number or a string")
        return lambda _values: constant

    def _field(self, dotted: str) -> Getter:
        top, *rest = dotted.split(".")
        if top not in self.fields:
            self.fields.append(top)
        index = self.fields.index(top)
        if not rest:
            return lambda values: values[index]

        def nested(values: tuple[Any, ...]) -> Any:
            value = values[index]
            for key in rest:
                if type(value) is not dict:
                    return _MISSING
                value = value.get(key)
            return value

        return nested


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text[1:-1])


def _kind(value: Any) -> str:
    kind = type(value)
    if kind is bool:
        return "bool"
    if kind is int or kind is float:
        return "number"
    if kind is str:
        return "string"
    if value is None:
        return "null"
    return "other"


def _truthy(value: Any) -> bool:
    return value is not None and value is not False and value != 0 and value != ""


def _eq(left: Any, right: Any) -> bool:
    kind = _kind(left)
    return kind == _kind(right) and kind != "other" and bool(left == right)


def _ne(left: Any, right: Any) -> bool:
    return not _eq(left, right)


def _ordered(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def compare(left: Any, right: Any) -> bool:
        kind = _kind(left)
        return kind == _kind(right) and kind in ("number", "string") and op(left, right)

    return compare


_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "==": _eq,
    "!=": _ne,
    "<": _ordered(lambda a, b: a < b),
    "<=": _ordered(lambda a, b: a <= b),
    ">": _ordered(lambda a, b: a > b),
    ">=": _ordered(lambda a, b: a >= b),
}
