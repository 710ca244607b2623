"""Strict TOML -> attrs structuring for the config loader, with readable errors.

cattrs alone is lenient the Python way (``int("3")``, a string is an iterable
of characters); a config file is better served by TOML's own types: an int
key rejects ``3.0``, ``"3"`` and ``true``; a float key takes ``3`` or
``3.5``; a list key wants an array. The hooks here raise :class:`WrongValue`
with the message the user reads, and :func:`leaf_errors` walks cattrs'
exception tree back to the key path of each problem.
"""

from __future__ import annotations

import datetime
import difflib
import json
from collections.abc import Iterator, Sequence
from typing import Any, Literal, Union, get_args, get_origin

import attrs
import cattrs
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)

from .positions import KeyPath

__all__ = [
    "WrongValue",
    "blame_field",
    "describe_value",
    "expected",
    "leaf_errors",
    "make_converter",
    "unknown_key_message",
]


class WrongValue(ValueError):
    """A TOML value of the wrong type or outside the allowed set."""


def make_converter() -> cattrs.Converter:
    """A converter that forbids unknown keys and keeps TOML types strict."""
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)

    def scalar(value: Any, cls: Any) -> Any:
        if _accepts(cls, value):
            return float(value) if cls is float else value
        raise WrongValue(f"expected {expected(cls)}, got {describe_value(value)}")

    for cls in (int, float, str, bool):
        converter.register_structure_hook(cls, scalar)

    def literal(value: Any, cls: Any) -> Any:
        allowed = get_args(cls)
        if any(type(value) is type(choice) and value == choice for choice in allowed):
            return value
        raise WrongValue(f"expected {expected(cls)}, got {describe_value(value)}")

    def array(value: Any, cls: Any) -> list[Any]:
        if not isinstance(value, list):
            raise WrongValue(f"expected {expected(cls)}, got {describe_value(value)}")
        (item_type,) = get_args(cls) or (Any,)
        items, errors = [], []
        for index, item in enumerate(value):
            try:
                items.append(converter.structure(item, item_type))
            except Exception as exc:
                exc.add_note(IterableValidationNote(f"@ index {index}", index, item_type))
                errors.append(exc)
        if errors:
            raise IterableValidationError("while structuring an array", errors, cls)
        return items

    def table(value: Any, cls: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise WrongValue(f"expected {expected(cls)}, got {describe_value(value)}")
        _, value_type = get_args(cls) or (str, Any)
        result, errors = {}, []
        for key, item in value.items():
            try:
                result[key] = converter.structure(item, value_type)
            except Exception as exc:
                exc.add_note(IterableValidationNote(f"@ key {key!r}", key, value_type))
                errors.append(exc)
        if errors:
            raise IterableValidationError("while structuring a table", errors, cls)
        return result

    converter.register_structure_hook_func(_is_literal, literal)
    converter.register_structure_hook_func(_is_array, array)
    converter.register_structure_hook_func(_is_table, table)
    return converter


def _is_literal(cls: Any) -> bool:
    return get_origin(cls) is Literal


def _is_array(cls: Any) -> bool:
    return get_origin(cls) in (list, Sequence)


def _is_table(cls: Any) -> bool:
    return get_origin(cls) is dict


def _accepts(cls: Any, value: Any) -> bool:
    if cls is float:
        return type(value) in (int, float)
    return type(value) is cls


def expected(cls: Any) -> str:
    """What a field of type ``cls`` wants, in TOML words."""
    origin = get_origin(cls)
    args = get_args(cls)
    if cls is bool:
        return "true or false"
    if cls is int:
        return "an integer"
    if cls is float:
        return "a number"
    if cls is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(_toml_literal(choice) for choice in args)
    if origin in (list, Sequence):
        return f"an array of {_plural(args[0])}" if args else "an array"
    if origin is dict:
        return f"a table of {_plural(args[1])}" if len(args) == 2 else "a table"
    if origin is Union or type(cls).__name__ == "UnionType":
        return " or ".join(expected(arg) for arg in args if arg is not type(None))
    return getattr(cls, "__name__", str(cls))


def _plural(cls: Any) -> str:
    words = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}
    return words.get(cls, expected(cls))


def _toml_literal(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def describe_value(value: Any) -> str:
    """``a string "fast"``, ``an integer 3``, ``a table``: how TOML calls a value."""
    if isinstance(value, bool):
        return f"a boolean {_toml_literal(value)}"
    if isinstance(value, int):
        return f"an integer {value}"
    if isinstance(value, float):
        return f"a float {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f"a string {json.dumps(shown)}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime.date | datetime.time):
        return f"a date/time {value.isoformat()}"
    return type(value).__name__


def unknown_key_message(key: str, allowed: Sequence[str]) -> str:
    """``unknown key 'intervall'; did you mean 'interval'?`` (or the valid keys)."""
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        return f"unknown key {key!r}; did you mean {close[0]!r}?"
    valid = ", ".join(sorted(allowed)) or "none"
    return f"unknown key {key!r}; valid keys here: {valid}"


def leaf_errors(exc: BaseException, path: KeyPath) -> Iterator[tuple[KeyPath, BaseException]]:
    """Every non-group exception in a cattrs error tree, with its key path."""
    if isinstance(exc, ClassValidationError):
        with_notes, others = exc.group_exceptions()
        for sub, note in with_notes:
            yield from leaf_errors(sub, (*path, note.name))
        for sub in others:
            yield from leaf_errors(sub, path)
    elif isinstance(exc, IterableValidationError):
        item_notes, others = exc.group_exceptions()
        for sub, item_note in item_notes:
            yield from leaf_errors(sub, (*path, item_note.index))
        for sub in others:
            yield from leaf_errors(sub, path)
    elif isinstance(exc, BaseExceptionGroup):
        for member in exc.exceptions:
            yield from leaf_errors(member, path)
    elif isinstance(exc, ForbiddenExtraKeysError):
        for key in sorted(exc.extra_fields):
            yield (*path, key), exc
    else:
        yield path, exc


def blame_field(
    converter: cattrs.Converter, cls: type[Any], data: dict[str, Any], error: BaseException
) -> tuple[str | None, str]:
    """Which key made ``cls(**data)`` raise ``error``, and the message to show.

    attrs runs validators inside ``__init__``, so cattrs reports their
    ValueError for the class as a whole; re-running each field's validator on
    its own finds the key to point at. Cross-field checks stay on the table.
    """
    for field in attrs.fields(cls):
        if field.name not in data or field.validator is None:
            continue
        try:
            value = converter.structure(data[field.name], field.type)
            field.validator(None, field, value)
        except ValueError as exc:
            return field.name, str(exc)
        except Exception:
            continue
    return None, str(error) or type(error).__name__
