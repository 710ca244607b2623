"""The config loader: a TOML document -> :class:`~mux_core._config.Config`.

:class:`Loader` reads the text (``${VAR}`` references expanded), walks the
top-level keys and the ``[[sources]]``, ``[[sinks]]``, ``[[processors]]`` and
``[[discovery]]`` tables, checks each single key and each plugin's options
(cattrs), and records every error with its line; all of them are raised at
once, sorted by line, secrets masked.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from cattrs.errors import ForbiddenExtraKeysError

from .._plugins import PluginManager, Provided
from ..errors import ConfigError
from ..options import Bound, at_least_one, is_secret
from ..retry import RetryPolicy
from ..sink import DEFAULT_BUFFER_BYTES, Overflow, Sink, sink_member
from .convert import (
    WrongValue,
    blame_field,
    describe_value,
    expected,
    leaf_errors,
    make_converter,
    unknown_key_message,
)
from .positions import KeyPath, key_lines, line_of, toml_error_position
from .records import (
    QUALITY_INTERVAL,
    QUALITY_WINDOW,
    Config,
    DiscoveryConfig,
    DiscoveryPolicy,
    ProcessorConfig,
    SinkConfig,
    SourceConfig,
    name_problem,
)
from .render import (
    _format_key,
    _shown,
    _strings,
    _url_password,
    mask,
    secret_texts,
)
from .shard import Shard, parse_shard

__all__ = ["Loader", "Parsed"]

_TOP_KEYS = (
    "retry",
    "sources",
    "sinks",
    "processors",
    "shard",
    "state_dir",
    "quality_interval",
    "quality_window",
    "discovery",
)
_SOURCE_KEYS = ("name", "transport", "retry", "lag_field", "stale_after")
_SINK_KEYS = ("type", "name", "overflow", "buffer", "buffer_bytes", "on_error", "history")
_PROCESSOR_KEYS = ("type", "sources")
_POLICY_KEYS = tuple(field.name for field in attrs.fields(DiscoveryPolicy))
_DISCOVERY_KEYS = ("type", "name", *_POLICY_KEYS)
_GLOB_CHARS = frozenset("*?[")
_ON_ERROR = ("stop", "drop")
_NO_SOURCES = "no sources; add a [[sources]] table with a name, a transport and its options"
_NO_SINKS = 'no [[sinks]]: add one, e.g. [[sinks]] type = "log"'

_REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{")
_CONVERTER = make_converter()
#: Counts the loader reads itself; the message follows the key's path.
_AT_LEAST_ONE = at_least_one(named=False)
_RECORDS = at_least_one(note="records", named=False)

#: A ``check()`` message that starts with its key: ``url: ...``, ``headers.Accept: ...``.
_KEYED_MESSAGE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\.[^:\s]+)?): (.+)", re.DOTALL)


_SECRET_FIELDS: dict[type[Any], tuple[tuple[str, bool], ...]] = {}
_NO_SECRETS: frozenset[str] = frozenset()


def _secret_fields(options_cls: type[Any]) -> tuple[tuple[str, bool], ...]:
    """Each option of a class with whether it is a secret (asked once per class,
    not per table: 100,000 sources)."""
    found = _SECRET_FIELDS.get(options_cls)
    if found is None:
        fields = attrs.fields(options_cls)
        found = _SECRET_FIELDS[options_cls] = tuple((f.name, is_secret(f)) for f in fields)
    return found


def _own_history(cls: Any, table: dict[str, Any]) -> bool:
    """Whether the table's ``history`` is the sink type's own option rather than the
    recordings to feed first: a plugin whose Options has a ``history`` field keeps
    a value that cannot be a path (a number) for itself."""
    options = getattr(cls, "Options", None)
    if options is None or not attrs.has(options) or "history" not in table:
        return False
    value = table["history"]
    own = "history" in attrs.fields_dict(options)
    return own and not isinstance(value, str | list)


@attrs.frozen
class Parsed:
    """A config file as read: its TOML tables before any ``${VAR}`` is expanded,
    and the line of each key. What a ``--workers`` parent hands each worker
    (its own sources' tables), so that no worker parses the whole file again."""

    data: dict[str, Any]
    lines: Mapping[KeyPath, int]


class _Lines(Mapping[KeyPath, int]):
    """The line of each key of a file's text, found on first use.

    Only an error needs a key's line, and finding them all is a second
    scan of the text (a quarter of loading 100,000 sources): a config
    that loads cleanly never pays for it.
    """

    def __init__(self, text: str) -> None:
        self._text = text
        self._found: dict[KeyPath, int] | None = None

    def _lines(self) -> dict[KeyPath, int]:
        if self._found is None:
            self._found = key_lines(self._text)
        return self._found

    def __getitem__(self, key: KeyPath) -> int:
        return self._lines()[key]

    def __iter__(self) -> Iterator[KeyPath]:
        return iter(self._lines())

    def __len__(self) -> int:
        return len(self._lines())


class Failed:
    """Marks a value that could not be built (its errors are already recorded)."""


FAILED = Failed()


class Loader:
    """Reads one document (``load``) or one table a discoverer found (``load_table``)."""

    def __init__(
        self,
        text: str,
        path: str,
        plugins: PluginManager,
        environ: Mapping[str, str],
        *,
        replay: bool = False,
        only: Callable[[str], bool] | None = None,
        parsed: Parsed | None = None,
        on_parsed: Callable[[Parsed], None] | None = None,
    ) -> None:
        #: The document already read (``text`` is then not parsed), and who
        #: wants the one read here.
        self._parsed = parsed
        self._on_parsed = on_parsed
        #: A config for ``mux replay``: its sources come from the recording, so
        #: ``[[sources]]`` may be left out and processors may name any source.
        self._replay = replay
        #: Which sources to validate and keep (by name; None: all); the names of
        #: the others still count as known (a processor may name them).
        self._only = only
        self._skipped: list[str] = []
        self._text = text
        self._path = path
        self._plugins = plugins
        self._environ = environ
        self._lines: Mapping[KeyPath, int] = {}
        self._errors: list[ConfigError] = []
        self._secrets: set[str] = set()
        #: Each secret with the key it was found under, for a source's own secrets.
        self._secrets_at: dict[KeyPath, list[str]] = {}
        #: The values of secret options by key: an error about one of these keys
        #: is masked with them whatever their length.
        self._secret_keys: dict[KeyPath, tuple[str, ...]] = {}
        #: Keys holding an unset ``${VAR}``: their value is made up, so errors
        #: about it (an empty URL, ...) would point away from the real one.
        self._unset: set[KeyPath] = set()

    def load(self) -> Config:
        if self._parsed is None:
            data = self._parse_toml()
            self._lines = _Lines(self._text)
            if self._on_parsed is not None:
                self._on_parsed(Parsed(data, self._lines))
        else:
            data, self._lines = self._parsed.data, self._parsed.lines
        data = self._substitute(data, ())
        for key in data:
            if key not in _TOP_KEYS:
                self._fail((key,), unknown_key_message(key, _TOP_KEYS))
        retry_raw = self._table(data, ("retry",))
        retry = self._structure(RetryPolicy, retry_raw, ("retry",))
        if isinstance(retry, Failed):
            retry, retry_raw = RetryPolicy(), {}
        sources = self._sources(data, retry_raw)
        sinks = self._sinks(data)
        discovery = self._discovery(data, retry_raw)
        # Discovered sources are not known yet: a processor may name one (and in a
        # replay, those of the recording).
        known = (
            None
            if "discovery" in data or self._replay
            else [*(source.name for source in sources), *self._skipped]
        )
        processors = self._processors(data, known)
        shard = self._shard(data)
        state_dir = self._state_dir(data)
        quality_interval = self._seconds(data, "quality_interval", QUALITY_INTERVAL, zero=True)
        quality_window = self._seconds(data, "quality_window", QUALITY_WINDOW, zero=False)
        self._raise_errors()
        return Config(
            path=self._path,
            name=Path(self._path).stem,
            retry=retry,
            sources=tuple(sources),
            sinks=tuple(sinks),
            secrets=frozenset(self._secrets),
            processors=tuple(processors),
            shard=shard,
            state_dir=state_dir,
            quality_interval=quality_interval,
            quality_window=quality_window,
            discovery=tuple(discovery),
        )

    def load_table(
        self, table: dict[str, Any], lines: Mapping[KeyPath, int], retry_raw: dict[str, Any]
    ) -> tuple[list[SourceConfig], list[ConfigError]]:
        """Validate one discovered table as ``sources[0]``, taken as it is: it is data,
        so no ``${VAR}`` is expanded (mux_core._config.discovered screens it first)."""
        self._lines = dict(lines)
        sources = self._sources({"sources": [table]}, retry_raw)
        masked = [
            ConfigError(mask(e.message, self._secrets), file=e.file, line=e.line, key=e.key)
            for e in self._errors
        ]
        return sources, masked

    def _seconds(self, data: dict[str, Any], key: str, default: float, *, zero: bool) -> float:
        """A top-level duration in seconds (``zero``: 0 allowed, meaning off)."""
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self._fail((key,), f"expected a number of seconds, got {describe_value(value)}")
            return default
        if not (value >= 0 if zero else value > 0) or value == float("inf"):
            bound = ">= 0 (0 = off)" if zero else "> 0"
            self._fail((key,), f"must be a finite number of seconds {bound}, got {value!r}")
            return default
        return float(value)

    def _state_dir(self, data: dict[str, Any]) -> str | None:
        value = data.get("state_dir")
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self._fail(("state_dir",), f"expected a directory path, got {describe_value(value)}")
            return None
        return value

    def _shard(self, data: dict[str, Any]) -> Shard | None:
        if "shard" not in data:
            return None
        try:
            return parse_shard(data["shard"])
        except ValueError as exc:
            self._fail(("shard",), str(exc))
            return None

    # -- text ----------------------------------------------------------------

    def _parse_toml(self) -> dict[str, Any]:
        try:
            return tomllib.loads(self._text)
        except tomllib.TOMLDecodeError as exc:
            reason, line = toml_error_position(str(exc))
            if line is None:  # at the end of the file, or nowhere said: the last line
                line = self._text.count("\n") + 1
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
                self._add_secret(path, value)
            return value

        return _REFERENCE.sub(replace, text)

    # -- tables --------------------------------------------------------------

    def _sources(self, data: dict[str, Any], retry_raw: dict[str, Any]) -> list[SourceConfig]:
        tables = self._array_of_tables(data, "sources")
        if tables is not None and not tables and "discovery" not in data and not self._replay:
            self._fail(("sources",), _NO_SOURCES)
        transports = self._plugins.transports()
        seen: dict[str, int | None] = {}
        sources = []
        shared_retry: RetryPolicy | None = None
        for index, table in enumerate(tables or ()):
            path: KeyPath = ("sources", index)
            name = self._name(table, path, "name", seen, "source")
            if name is not None and self._only is not None and not self._only(name):
                self._skipped.append(name)  # not ours: whoever runs it validates it
                continue
            transport = self._required_str(table, path, "transport")
            own_retry = self._table(table, (*path, "retry"))
            if own_retry or shared_retry is None:
                merged = {**retry_raw, **own_retry}
                retry = self._structure(RetryPolicy, merged, (*path, "retry"))
                if not own_retry and not isinstance(retry, Failed):
                    shared_retry = retry  # frozen: one for every source without its own
            else:
                retry = shared_retry
            options: Any = FAILED
            if transport is not None:
                provided = self._provider("transport", transport, transports, path)
                if provided is not None:
                    rest = {k: v for k, v in table.items() if k not in _SOURCE_KEYS}
                    options = self._options(provided, rest, path, _SOURCE_KEYS)
            if (
                name is None
                or transport is None
                or isinstance(retry, Failed)
                or isinstance(options, Failed)
            ):
                continue
            lag_field = self._lag_field(table, path)
            stale_after = self._stale_after(table, path)
            own = self._secrets_at.get(path)
            # One empty set for every source without secrets (an empty frozenset is 216 bytes).
            secrets = frozenset(own) if own else _NO_SECRETS
            sources.append(
                SourceConfig(
                    name,
                    transport,
                    options,
                    retry,
                    self._line(path),
                    lag_field,
                    stale_after,
                    secrets,
                )
            )
        return sources

    def _sinks(self, data: dict[str, Any]) -> list[SinkConfig]:
        tables = self._array_of_tables(data, "sinks")
        if (tables == [] or "sinks" not in data) and not self._replay:
            # Records with nowhere to go: a run would watch and throw them away.
            # At `sinks = []`, else at the end of the file, where a table goes.
            end = self._text.rstrip().count("\n") + 1
            at = self._line(("sinks",)) or end
            self._errors.append(ConfigError(_NO_SINKS, file=self._path, line=at, key="sinks"))
        tables = tables or []
        available = self._plugins.sinks() if tables else {}
        seen: dict[str, int | None] = {}
        sinks = []
        for index, table in enumerate(tables):
            path: KeyPath = ("sinks", index)
            type_ = self._required_str(table, path, "type")
            if type_ is None:
                continue
            provided = self._provider("sink type", type_, available, path)
            name = self._name(table, path, "name", seen, "sink", default=type_)
            cls = provided.cls if provided is not None else Sink
            overflow = self._overflow(table, path, sink_member(cls, "default_overflow"))
            buffer = self._buffer(table, path, sink_member(cls, "default_buffer"))
            buffer_bytes = self._positive_int(table, path, "buffer_bytes", DEFAULT_BUFFER_BYTES)
            on_error = self._choice(
                table, path, "on_error", _ON_ERROR, str(sink_member(cls, "default_on_error"))
            )
            own = _own_history(cls, table)
            history = () if own else self._history(table, path)
            if provided is None or name is None:
                continue
            rest = {
                k: v for k, v in table.items() if k not in _SINK_KEYS or (own and k == "history")
            }
            options = self._options(provided, rest, path, _SINK_KEYS)
            if isinstance(options, Failed) or None in (overflow, buffer, buffer_bytes, on_error):
                continue
            if isinstance(history, Failed):
                continue
            assert overflow is not None and buffer is not None and on_error is not None
            assert buffer_bytes is not None
            line = self._line(path)
            sinks.append(
                SinkConfig(
                    name, type_, options, overflow, buffer, on_error, line, buffer_bytes, history
                )
            )
        return sinks

    def _history(self, table: dict[str, Any], path: KeyPath) -> tuple[str, ...] | Failed:
        """A sink's ``history``: a path or glob, or an array of them (``()``: none)."""
        value = table.get("history", ())
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple) or not all(
            isinstance(item, str) and item.strip() for item in value
        ):
            self._fail(
                (*path, "history"),
                "expected a recording's path or glob, or an array of them "
                f'(history = "runs/train.jsonl"), got {describe_value(value)}',
            )
            return FAILED
        return tuple(value)

    def _discovery(self, data: dict[str, Any], retry_raw: dict[str, Any]) -> list[DiscoveryConfig]:
        from .discovered import url_secrets  # (it imports this module)

        tables = self._array_of_tables(data, "discovery") or []
        available = self._plugins.discoverers() if tables else {}
        seen: dict[str, int | None] = {}
        found = []
        for index, table in enumerate(tables):
            path: KeyPath = ("discovery", index)
            type_ = self._required_str(table, path, "type")
            if type_ is None:
                continue
            provided = self._provider("discovery type", type_, available, path)
            name = self._name(table, path, "name", seen, "discovery", default=type_)
            policy = self._discovery_policy(table, path, retry_raw)
            if provided is None or name is None:
                continue
            rest = {k: v for k, v in table.items() if k not in _DISCOVERY_KEYS}
            options = self._options(provided, rest, path, _DISCOVERY_KEYS)
            if not isinstance(options, Failed) and policy is not None:
                for text in url_secrets(options):
                    self._add_secret(path, text)
                found.append(DiscoveryConfig(name, type_, options, self._line(path), policy))
        return found

    def _discovery_policy(
        self, table: dict[str, Any], path: KeyPath, retry_raw: dict[str, Any]
    ) -> DiscoveryPolicy | None:
        """The keys every ``[[discovery]]`` table has: what its sources may be."""
        from .discovered import policy_problems, policy_secrets  # (it imports this module)

        raw = {key: table[key] for key in _POLICY_KEYS if key in table}
        policy = self._structure(DiscoveryPolicy, raw, path)
        failed = isinstance(policy, Failed)
        if isinstance(policy, Failed):
            # Its other keys are still checked: every mistake is reported at once.
            raw = {key: value for key, value in raw.items() if _builds(DiscoveryPolicy, key, value)}
            policy = _CONVERTER.structure(raw, DiscoveryPolicy)
        for key, message in policy_problems(policy, raw, self._plugins.transports()):
            self._fail((*path, *key), message)
            failed = True
        retry = policy.defaults.get("retry")
        if isinstance(retry, dict):
            merged = {**retry_raw, **retry}
            failed |= isinstance(
                self._structure(RetryPolicy, merged, (*path, "defaults", "retry")), Failed
            )
        # The defaults are the config's: their secrets are masked like any option's.
        for text in policy_secrets(policy, self._plugins.transports()):
            self._add_secret(path, text)
        return None if failed else policy

    def load_processors(
        self, tables: Sequence[tuple[KeyPath, dict[str, Any]]], lines: Mapping[KeyPath, int]
    ) -> list[ProcessorConfig]:
        """Validate processor tables written elsewhere than ``[[processors]]``, each at its
        own key path (a ``mux test`` file's ``tests[0].processors[1]``); raises ConfigError."""
        self._lines = dict(lines)
        processors = []
        for path, table in tables:
            processor = self._processor(table, path, None)
            if processor is not None:
                processors.append(processor)
        self._raise_errors()
        return processors

    def _processors(
        self, data: dict[str, Any], source_names: list[str] | None
    ) -> list[ProcessorConfig]:
        tables = self._array_of_tables(data, "processors") or []
        processors = []
        for index, table in enumerate(tables):
            processor = self._processor(table, ("processors", index), source_names)
            if processor is not None:
                processors.append(processor)
        return processors

    def _processor(
        self, table: dict[str, Any], path: KeyPath, source_names: list[str] | None
    ) -> ProcessorConfig | None:
        type_ = self._required_str(table, path, "type")
        sources = self._source_globs(table, path, source_names)
        if type_ is None:
            return None
        provided = self._provider("processor type", type_, self._plugins.processors(), path)
        if provided is None or isinstance(sources, Failed):
            return None
        rest = {k: v for k, v in table.items() if k not in _PROCESSOR_KEYS}
        options = self._options(provided, rest, path, _PROCESSOR_KEYS)
        if isinstance(options, Failed):
            return None
        return ProcessorConfig(type_, sources, options, self._line(path))

    def _source_globs(
        self, table: dict[str, Any], path: KeyPath, source_names: list[str] | None
    ) -> tuple[str, ...] | Failed | None:
        """The ``sources`` globs (None = all), or FAILED after recording an error."""
        if "sources" not in table:
            return None
        value = table["sources"]
        key = (*path, "sources")
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self._fail(key, f"expected an array of source names or globs, got {_shown(value)}")
            return FAILED
        if source_names is None:  # discovered sources are not known yet
            return tuple(value)
        for pattern in value:
            # A plain name (no glob characters) that names no source is a typo.
            if not _GLOB_CHARS & set(pattern) and pattern not in source_names:
                close = difflib.get_close_matches(pattern, source_names, n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}? " if close else ""
                known = ", ".join(repr(n) for n in source_names) or "none"
                self._fail(key, f"no source named {pattern!r}; {hint}sources: {known}")
                return FAILED
        return tuple(value)

    def _array_of_tables(self, data: dict[str, Any], key: str) -> list[dict[str, Any]] | None:
        value = data.get(key)
        if value is None:
            if key == "sources" and "discovery" not in data and not self._replay:
                self._fail((key,), _NO_SOURCES)
            return None
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            got = describe_value(value)
            self._fail((key,), f"expected an array of tables ([[{key}]]), got {got}")
            return None
        return value

    def _table(self, data: dict[str, Any], path: KeyPath) -> dict[str, Any]:
        value = data.get(str(path[-1]), {})
        if not isinstance(value, dict):
            self._fail(path, f"expected a table, got {describe_value(value)}")
            return {}
        return value

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

    def _stale_after(self, table: dict[str, Any], path: KeyPath) -> float | None:
        if "stale_after" not in table:
            return None
        value = table["stale_after"]
        if isinstance(value, bool) or not isinstance(value, int | float):
            self._fail(
                (*path, "stale_after"),
                f"expected a number of seconds, got {describe_value(value)}",
            )
            return None
        if not value > 0 or value == float("inf"):
            self._fail(
                (*path, "stale_after"),
                f"must be a finite number of seconds > 0, got {value!r}; leave it out to "
                "learn it from the source's own rhythm",
            )
            return None
        return float(value)

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
        problem = name_problem(name)
        if problem is not None:
            self._fail((*path, key), f"the {kind} name {name[:60]!r} {problem}")
            return None
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
        # Known before any message about them is built: a validator or check()
        # quoting a secret value is masked like everything else.
        self._note_secrets(options_cls, raw, path)
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
            except ExceptionGroup as group:
                problems, others = group.split(ValueError)
                if others is not None or problems is None:
                    raise  # not a problem with the options: a bug of the plugin's
                for problem in _leaves(problems):
                    self._fail_check(options_cls, path, str(problem))
                return FAILED
        self._collect_secrets(options, path)
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

    def _note_secrets(self, options_cls: type[Any], raw: dict[str, Any], path: KeyPath) -> None:
        """The secrets of a table as written, before it is structured and checked."""
        for name, secret in _secret_fields(options_cls):
            if name not in raw:
                continue
            value = raw[name]
            if secret:
                texts = tuple(secret_texts(value))
                self._secret_keys[(*path, name)] = texts
                for text in texts:
                    self._add_secret(path, text)
            for text in _strings(value):
                password = _url_password(text)
                if password:
                    self._add_secret(path, password)

    def _collect_secrets(self, options: Any, path: KeyPath) -> None:
        for name, secret in _secret_fields(type(options)):
            for text in _strings(getattr(options, name)):
                if secret and text:
                    self._add_secret(path, text)
                password = _url_password(text)
                if password:
                    self._add_secret(path, password)

    def _add_secret(self, path: KeyPath, text: str) -> None:
        self._secrets.add(text)
        self._secrets_at.setdefault(path[:2], []).append(text)

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
        for key, texts in self._secret_keys.items():
            if path[: len(key)] == key:
                message = mask(message, (), words=texts)
        self._errors.append(
            ConfigError(message, file=self._path, line=self._line(path), key=_format_key(path))
        )

    def _raise_errors(self) -> None:
        if not self._errors:
            return
        errors = sorted(self._errors, key=lambda e: (e.line is None, e.line or 0))
        first, rest = errors[0], errors[1:]
        message = mask(first.message, self._secrets)
        message += "".join("\n" + mask(str(error), self._secrets) for error in rest)
        raise ConfigError(message, file=self._path, line=first.line, key=first.key)


def _leaves(group: BaseExceptionGroup[ValueError]) -> list[ValueError]:
    """The problems of a ``check()``'s exception group, nested groups flattened."""
    found: list[ValueError] = []
    for member in group.exceptions:
        if isinstance(member, BaseExceptionGroup):
            found += _leaves(member)
        else:
            found.append(member)
    return found


def _builds(cls: type[Any], key: str, value: Any) -> bool:
    """Whether ``cls`` builds from ``{key: value}`` alone (every other key defaulted)."""
    try:
        _CONVERTER.structure({key: value}, cls)
    except Exception:
        return False
    return True


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
