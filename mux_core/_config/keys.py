"""What the config loader checks key by key: environment references, single values,
plugin options (cattrs), and errors with their line. :class:`KeyChecks` is the base
of :class:`mux_core._config.loader.Loader`, which walks the tables."""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Mapping
from typing import Any

import attrs
from cattrs.errors import ForbiddenExtraKeysError

from .._plugins import PluginManager, Provided
from ..errors import ConfigError
from ..options import Bound, at_least_one
from ..sink import Overflow
from .convert import (
    WrongValue,
    blame_field,
    describe_value,
    expected,
    leaf_errors,
    make_converter,
    unknown_key_message,
)
from .positions import KeyPath, line_of
from .render import (
    _format_key,
    _is_secret_field,
    _mask,
    _strings,
    _url_password,
)

__all__ = ["FAILED", "Failed", "KeyChecks"]

_REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{")
_TOML_POSITION = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)")
_CONVERTER = make_converter()
#: Counts the loader reads itself; the message follows the key's path.
_AT_LEAST_ONE = at_least_one(named=False)
_RECORDS = at_least_one(note="records", named=False)

#: A ``check()`` message that starts with its key: ``url: ...``, ``headers.Accept: ...``.
_KEYED_MESSAGE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\.[^:\s]+)?): (.+)", re.DOTALL)


class Failed:
    """Marks a value that could not be built (its errors are already recorded)."""


FAILED = Failed()


class KeyChecks:
    def __init__(
        self, text: str, path: str, plugins: PluginManager, environ: Mapping[str, str]
    ) -> None:
        self._text = text
        self._path = path
        self._plugins = plugins
        self._environ = environ
        self._lines: dict[KeyPath, int] = {}
        self._errors: list[ConfigError] = []
        self._secrets: set[str] = set()
        #: Keys holding an unset ``${VAR}``: their value is made up, so errors
        #: about it (an empty URL, ...) would point away from the real one.
        self._unset: set[KeyPath] = set()

    # -- text ----------------------------------------------------------------

    def _parse_toml(self) -> dict[str, Any]:
        try:
            return tomllib.loads(self._text)
        except tomllib.TOMLDecodeError as exc:
            reason = str(exc)
            match = _TOML_POSITION.search(reason)
            line = self._text.count("\n") + 1
            if match:
                reason = reason[: match.start()]
                if match.group(1):
                    line = int(match.group(1))
                    reason += f" at column {match.group(2)}"
                else:
                    reason += " at the end of the file"
            raise ConfigError(f"invalid TOML: {reason}", file=self._path, line=line) from None

    def _substitute(self, value: Any, path: KeyPath) -> Any:
        if isinstance(value, str):
            return self._expand(value, path) if "$" in value else value
        if isinstance(value, list):
            return [self._substitute(item, (*path, index)) for index, item in enumerate(value)]
        if isinstance(value, dict):
            return {key: self._substitute(item, (*path, key)) for key, item in value.items()}
        return value

    def _expand(self, text: str, path: KeyPath) -> str:
        def replace(match: re.Match[str]) -> str:
            token, name, default = match.group(0), match.group(1), match.group(2)
            if token == "$${":
                return "${"
            if name is None:
                self._fail(
                    path,
                    "invalid ${...} reference; write ${NAME} or ${NAME:-default} "
                    "(or $${ for a literal ${)",
                )
                return token
            value = self._environ.get(name)
            if default is not None and not value:
                return default
            if value is None:
                self._record(
                    path,
                    f"environment variable {name!r} is not set; set it or write "
                    f"${{{name}:-default}}",
                )
                self._unset.add(path)
                return ""
            if value:
                self._secrets.add(value)
            return value

        return _REFERENCE.sub(replace, text)

    # -- single keys -----------------------------------------------------------

    def _lag_field(self, table: dict[str, Any], path: KeyPath) -> str | None:
        if "lag_field" not in table:
            return None
        value = table["lag_field"]
        if not isinstance(value, str) or not value:
            self._fail(
                (*path, "lag_field"),
                "expected the name of a timestamp field of the payload, "
                f"got {describe_value(value)}",
            )
            return None
        return value

    def _required_str(self, table: dict[str, Any], path: KeyPath, key: str) -> str | None:
        if key not in table:
            self._fail((*path, key), f"missing required key {key!r} (a string)")
            return None
        value = table[key]
        if not isinstance(value, str):
            self._fail((*path, key), f"expected a string, got {describe_value(value)}")
            return None
        if not value:
            self._fail((*path, key), "must not be empty")
            return None
        return value

    def _name(
        self,
        table: dict[str, Any],
        path: KeyPath,
        key: str,
        seen: dict[str, int | None],
        kind: str,
        *,
        default: str | None = None,
    ) -> str | None:
        name = default if key not in table else None
        if name is None:
            name = self._required_str(table, path, key)
        if name is None:
            return None
        line = self._line((*path, key))
        if name in seen:
            first = seen[name]
            where = f"line {first}" if first is not None else "another table"
            fix = "give each a distinct name" if key in table else "add a distinct `name` key"
            message = f"duplicate {kind} name {name!r}, already used at {where}; {fix}"
            self._fail((*path, key), message)
            return None
        seen[name] = line
        return name

    def _overflow(self, table: dict[str, Any], path: KeyPath, default: Any) -> Overflow | None:
        allowed = [policy.value for policy in Overflow]
        if "overflow" not in table:
            try:
                return Overflow(str(default))
            except ValueError:
                return Overflow.BLOCK
        value = table["overflow"]
        if isinstance(value, str) and value in allowed:
            return Overflow(value)
        shown = repr(value) if isinstance(value, str) else describe_value(value)
        choices = ", ".join(repr(policy) for policy in allowed)
        message = f"unknown overflow policy {shown}; expected one of {choices}"
        self._fail((*path, "overflow"), message)
        return None

    def _buffer(self, table: dict[str, Any], path: KeyPath, default: int) -> int | None:
        return self._positive_int(table, path, "buffer", default, _RECORDS)

    def _positive_int(
        self,
        table: dict[str, Any],
        path: KeyPath,
        key: str,
        default: int,
        bound: Bound = _AT_LEAST_ONE,
    ) -> int | None:
        """The integer ``table[key]`` (``default`` when absent): ``bound`` says how low."""
        value = table.get(key, default)
        if type(value) is not int:
            self._fail((*path, key), f"expected an integer, got {describe_value(value)}")
            return None
        problem = bound.problem(value)
        if problem is not None:
            self._fail((*path, key), problem)
            return None
        return value

    def _choice(
        self, table: dict[str, Any], path: KeyPath, key: str, allowed: tuple[str, ...], default: str
    ) -> str | None:
        value = table.get(key, default)
        if isinstance(value, str) and value in allowed:
            return value
        choices = ", ".join(repr(choice) for choice in allowed)
        self._fail((*path, key), f"expected one of {choices}, got {describe_value(value)}")
        return None

    # -- plugins -------------------------------------------------------------

    def _provider(
        self, kind: str, name: str, available: Mapping[str, Provided], path: KeyPath
    ) -> Provided | None:
        key = (*path, "transport" if kind == "transport" else "type")
        if name in available:
            return available[name]
        failure = self._plugins.failure_for(kind.split()[0], name)
        if failure is not None:
            self._fail(
                key,
                f"{kind} {name!r} is provided by plugin {failure.plugin!r}, "
                f"which failed to load: {failure.error}",
            )
            return None
        installed = ", ".join(repr(n) for n in sorted(available)) or "none"
        close = difflib.get_close_matches(name, list(available), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        self._fail(key, f"unknown {kind} {name!r}; {hint}installed: {installed}")
        return None

    def _options(
        self, provided: Provided, raw: dict[str, Any], path: KeyPath, reserved: tuple[str, ...]
    ) -> Any:
        options_cls = getattr(provided.cls, "Options", None)
        if "check" in provided.cls.__dict__:
            # check() belongs on Options (the contract of every component kind);
            # one left on the class would silently never run.
            self._fail(
                path,
                f"plugin {provided.plugin!r}: {provided.cls.__name__}.check is never called; "
                f"define it on {provided.cls.__name__}.Options (a bug in the plugin)",
            )
            return FAILED
        if options_cls is None:
            for key in raw:
                self._fail((*path, key), unknown_key_message(key, reserved))
            return None if not raw else FAILED
        if not attrs.has(options_cls):
            self._fail(
                path,
                f"plugin {provided.plugin!r}: {provided.cls.__name__}.Options is not an attrs "
                "class (a bug in the plugin)",
            )
            return FAILED
        options = self._structure(options_cls, raw, path, reserved)
        if isinstance(options, Failed):
            return options
        if any(unset[: len(path)] == path for unset in self._unset):
            return FAILED  # check() would judge a value made up for the unset variable
        check = getattr(options_cls, "check", None)
        if check is not None:
            try:
                check(options)
            except ValueError as exc:
                self._fail_check(options_cls, path, str(exc))
                return FAILED
        self._collect_secrets(options)
        return options

    # -- structuring -----------------------------------------------------------

    def _structure(
        self, cls: type[Any], raw: dict[str, Any], path: KeyPath, reserved: tuple[str, ...] = ()
    ) -> Any:
        try:
            return _CONVERTER.structure(raw, cls)
        except Exception as exc:
            leaves = list(leaf_errors(exc, path))
            # Validators run only once every key is known and well typed: run
            # each on its own, so an out-of-range value is reported together
            # with an unknown key in the same table, not after it is fixed.
            blamed = {str(leaf[len(path)]) for leaf, _ in leaves if len(leaf) > len(path)}
            alone = _validators_alone(cls, raw, blamed)
            for leaf_path, error in leaves:
                if leaf_path == path and alone:
                    continue  # a validator's error: each failing key is reported below
                self._leaf_error(cls, raw, path, leaf_path, error, reserved)
            for key, message in alone:
                self._fail((*path, key), message)
            return FAILED

    def _leaf_error(
        self,
        cls: type[Any],
        raw: dict[str, Any],
        path: KeyPath,
        leaf_path: KeyPath,
        error: BaseException,
        reserved: tuple[str, ...],
    ) -> None:
        if isinstance(error, ForbiddenExtraKeysError):
            allowed = [field.name for field in attrs.fields(cls)] + list(reserved)
            self._fail(leaf_path, unknown_key_message(str(leaf_path[-1]), allowed))
        elif isinstance(error, WrongValue):
            self._fail(leaf_path, str(error))
        elif isinstance(error, KeyError) and leaf_path != path:
            field = attrs.fields_dict(cls).get(str(leaf_path[-1]))
            kind = f" ({expected(field.type)})" if field is not None else ""
            self._fail(leaf_path, f"missing required key {leaf_path[-1]!r}{kind}")
        elif leaf_path == path:
            key, message = blame_field(_CONVERTER, cls, raw, error)
            self._fail(path if key is None else (*path, key), message)
        else:
            self._fail(leaf_path, f"{type(error).__name__}: {error}")

    def _collect_secrets(self, options: Any) -> None:
        for field in attrs.fields(type(options)):
            value = getattr(options, field.name)
            secret = _is_secret_field(field.name)
            for text in _strings(value):
                if secret and text:
                    self._secrets.add(text)
                password = _url_password(text)
                if password:
                    self._secrets.add(password)

    # -- errors ----------------------------------------------------------------

    def _line(self, path: KeyPath) -> int | None:
        return line_of(self._lines, path)

    def _fail_check(self, options_cls: type[Any], path: KeyPath, message: str) -> None:
        """A ``check()`` error, at its key's line when the message starts with the key."""
        match = _KEYED_MESSAGE.fullmatch(message)
        if match is None or match.group(1) not in attrs.fields_dict(options_cls):
            self._fail(path, message)
            return
        sub = tuple(filter(None, match.group(2).split(".")))
        self._fail((*path, match.group(1), *sub), match.group(3))

    def _fail(self, path: KeyPath, message: str) -> None:
        if any(path[: len(unset)] == unset for unset in self._unset):
            return  # the unset variable is the error to show, not what it left behind
        self._record(path, message)

    def _record(self, path: KeyPath, message: str) -> None:
        self._errors.append(
            ConfigError(message, file=self._path, line=self._line(path), key=_format_key(path))
        )

    def _raise_errors(self) -> None:
        if not self._errors:
            return
        errors = sorted(self._errors, key=lambda e: (e.line is None, e.line or 0))
        first, rest = errors[0], errors[1:]
        message = _mask(first.message, self._secrets)
        message += "".join("\n" + _mask(str(error), self._secrets) for error in rest)
        raise ConfigError(message, file=self._path, line=first.line, key=first.key)


def _validators_alone(cls: type[Any], raw: dict[str, Any], skip: set[str]) -> list[tuple[str, str]]:
    """``(key, message)`` for each field of ``raw`` whose own validator rejects it.

    Keys in ``skip`` (already reported) and values of the wrong type are left
    out; a validator that needs the other fields (it reads ``instance``) is
    skipped -- its check runs once the table builds.
    """
    try:
        attrs.resolve_types(cls)
    except Exception:
        return []
    failures = []
    for field in attrs.fields(cls):
        if field.name in skip or field.name not in raw or field.validator is None:
            continue
        try:
            value = _CONVERTER.structure(raw[field.name], field.type)
            field.validator(None, field, value)
        except ValueError as exc:
            failures.append((field.name, str(exc)))
        except Exception:
            continue
    return failures
