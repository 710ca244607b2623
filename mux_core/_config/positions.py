"""Where each key of a TOML document is written: key path -> line number.

``tomllib`` returns plain dicts without positions, yet a config error must
name its line. This scanner reads the same text a second time, only far
enough to know where every table header, key and array element starts. It
runs after ``tomllib`` accepted the document, so it may assume valid TOML;
on anything it does not understand it stops and returns what it has (a
missing entry just makes the caller fall back to the enclosing table).

A path is a tuple of keys and array indices, e.g. ``("sources", 1, "url")``
for the ``url`` key of the second ``[[sources]]`` table.

Where a document ``tomllib`` refused is wrong, :func:`toml_error_position`
reads from its message (the config loader and discovered documents alike).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping

__all__ = ["KeyPath", "key_lines", "line_of", "toml_error_position"]

KeyPath = tuple[str | int, ...]

_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_SCALAR_END = frozenset(",]}#\n")
#: How tomllib ends the message of a TOMLDecodeError.
_TOML_POSITION = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)")


def key_lines(text: str) -> dict[KeyPath, int]:
    """Map every key path written in ``text`` to its 1-based line.

    Table headers map to the header's line; ``[[a]]`` maps ``("a",)`` to the
    first header and ``("a", n)`` to the n-th one. Implicit parents of dotted
    keys map to the first line that mentions them.
    """
    scanner = _Scanner(text)
    try:
        scanner.scan()
    except (IndexError, ValueError, tomllib.TOMLDecodeError):
        pass
    return scanner.lines


def line_of(lines: Mapping[KeyPath, int], path: KeyPath) -> int | None:
    """The line of ``path``, else of its nearest written ancestor, else None."""
    for end in range(len(path), 0, -1):
        line = lines.get(path[:end])
        if line is not None:
            return line
    return None


def toml_error_position(message: str) -> tuple[str, int | None]:
    """A ``tomllib.TOMLDecodeError`` message -> (why, in words; the line it names).

    ``"... (at line 4, column 9)"`` gives ``("... at column 9", 4)``;
    ``"... (at end of document)"`` gives ``("... at the end of the file", None)``;
    a message without a position is returned as it is, with None.
    """
    match = _TOML_POSITION.search(message)
    if match is None:
        return message, None
    reason = message[: match.start()]
    if match.group(1) is None:
        return reason + " at the end of the file", None
    return reason + f" at column {match.group(2)}", int(match.group(1))


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.lines: dict[KeyPath, int] = {}
        self._table: KeyPath = ()
        self._array_tables: dict[KeyPath, int] = {}

    # -- document level ------------------------------------------------------

    def scan(self) -> None:
        text = self.text
        while True:
            self._skip_space(newlines=True)
            if self.pos >= len(text):
                return
            start = self.pos
            if text[self.pos] == "[":
                self._header()
            else:
                self._key_value(self._table)
            if self.pos == start:  # never loop on something unexpected
                raise ValueError("scanner made no progress")

    def _header(self) -> None:
        line = self.line
        array = self.text.startswith("[[", self.pos)
        self.pos += 2 if array else 1
        keys = self._dotted_key()
        self.pos += 2 if array else 1
        if array:
            parent = self._resolve(keys[:-1], line)
            table_path = (*parent, keys[-1])
            self.lines.setdefault(table_path, line)
            count = self._array_tables.get(table_path, 0) + 1
            self._array_tables[table_path] = count
            path: KeyPath = (*table_path, count - 1)
        else:
            path = self._resolve(keys, line)
        self.lines[path] = line
        self._table = path

    def _resolve(self, keys: list[str], line: int) -> KeyPath:
        """A header's path: array-of-tables parents continue their last element."""
        path: KeyPath = ()
        for key in keys:
            path = (*path, key)
            self.lines.setdefault(path, line)
            count = self._array_tables.get(path)
            if count:
                path = (*path, count - 1)
        return path

    def _key_value(self, base: KeyPath) -> None:
        line = self.line
        keys = self._dotted_key()
        path = base
        for key in keys:
            path = (*path, key)
            self.lines.setdefault(path, line)
        self.lines[path] = line
        self._skip_space()
        self.pos += 1  # "="
        self._skip_space()
        self._value(path)

    # -- keys -------------------------------------------------------------------

    def _dotted_key(self) -> list[str]:
        keys = []
        while True:
            self._skip_space()
            keys.append(self._simple_key())
            self._skip_space()
            if self.pos < len(self.text) and self.text[self.pos] == ".":
                self.pos += 1
                continue
            return keys

    def _simple_key(self) -> str:
        text = self.text
        char = text[self.pos]
        if char in "\"'":
            start = self.pos
            self._single_line_string(char)
            # tomllib decodes the escapes exactly as the document means them.
            return str(tomllib.loads("k = " + text[start : self.pos])["k"])
        start = self.pos
        while self.pos < len(text) and text[self.pos] in _BARE:
            self.pos += 1
        if self.pos == start:
            raise ValueError(f"unexpected {char!r}")
        return text[start : self.pos]

    # -- values -----------------------------------------------------------------

    def _value(self, path: KeyPath) -> None:
        text = self.text
        char = text[self.pos]
        if text.startswith('"""', self.pos) or text.startswith("'''", self.pos):
            self._multi_line_string(text[self.pos : self.pos + 3])
        elif char in "\"'":
            self._single_line_string(char)
        elif char == "[":
            self._array(path)
        elif char == "{":
            self._inline_table(path)
        else:
            while self.pos < len(text) and text[self.pos] not in _SCALAR_END:
                self.pos += 1

    def _array(self, path: KeyPath) -> None:
        self.pos += 1
        index = 0
        while True:
            self._skip_space(newlines=True)
            if self.text[self.pos] == "]":
                self.pos += 1
                return
            element = (*path, index)
            self.lines[element] = self.line
            self._value(element)
            self._skip_space(newlines=True)
            if self.text[self.pos] == ",":
                self.pos += 1
                index += 1

    def _inline_table(self, path: KeyPath) -> None:
        self.pos += 1
        while True:
            self._skip_space(newlines=True)
            char = self.text[self.pos]
            if char == "}":
                self.pos += 1
                return
            if char == ",":
                self.pos += 1
                continue
            self._key_value(path)

    def _single_line_string(self, quote: str) -> None:
        text = self.text
        self.pos += 1
        while text[self.pos] != quote:
            if quote == '"' and text[self.pos] == "\\":
                self.pos += 1
            self.pos += 1
        self.pos += 1

    def _multi_line_string(self, delimiter: str) -> None:
        text = self.text
        self.pos += 3
        while not text.startswith(delimiter, self.pos):
            char = text[self.pos]
            if char == "\\" and delimiter == '"""':
                self.pos += 1
                char = text[self.pos]
            if char == "\n":
                self.line += 1
            self.pos += 1
        self.pos += 3
        # Up to two quotes right before the delimiter belong to the content.
        for _ in range(2):
            if self.pos < len(text) and text[self.pos] == delimiter[0]:
                self.pos += 1

    # -- blanks ------------------------------------------------------------------

    def _skip_space(self, *, newlines: bool = False) -> None:
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char in " \t\r":
                self.pos += 1
            elif char == "\n" and newlines:
                self.line += 1
                self.pos += 1
            elif char == "#":
                while self.pos < len(text) and text[self.pos] != "\n":
                    self.pos += 1
            else:
                return
