"""The config loader: a TOML document's tables -> :class:`~mux_core._config.Config`.

:class:`Loader` walks the top-level keys and the ``[[sources]]``, ``[[sinks]]``,
``[[processors]]`` and ``[[discovery]]`` tables; the checks of single keys,
plugin options and errors are its base's (:mod:`mux_core._config.keys`).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from .._run.shard import Shard, parse_shard
from ..errors import ConfigError
from ..retry import RetryPolicy
from ..sink import DEFAULT_BUFFER_BYTES, Sink, sink_member
from .convert import describe_value, unknown_key_message
from .keys import FAILED, Failed, KeyChecks
from .positions import KeyPath, key_lines
from .records import (
    QUALITY_INTERVAL,
    QUALITY_WINDOW,
    Config,
    DiscoveryConfig,
    ProcessorConfig,
    SinkConfig,
    SourceConfig,
)
from .render import _mask, _shown

__all__ = ["Loader"]

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
_SOURCE_KEYS = ("name", "transport", "retry", "lag_field")
_SINK_KEYS = ("type", "name", "overflow", "buffer", "buffer_bytes", "on_error")
_PROCESSOR_KEYS = ("type", "sources")
_DISCOVERY_KEYS = ("type", "name")
_GLOB_CHARS = frozenset("*?[")
_ON_ERROR = ("stop", "drop")
_NO_SOURCES = "no sources; add a [[sources]] table with a name, a transport and its options"
_NO_SINKS = 'no [[sinks]]: add one, e.g. [[sinks]] type = "log"'


class Loader(KeyChecks):
    """Reads one document (``load``) or a discoverer's tables (``load_tables``)."""

    def load(self) -> Config:
        data = self._parse_toml()
        self._lines = key_lines(self._text)
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
        discovery = self._discovery(data)
        # Discovered sources are not known yet: a processor may name one.
        known = None if "discovery" in data else [source.name for source in sources]
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

    def load_tables(
        self, tables: list[dict[str, Any]], retry: RetryPolicy, lines: Mapping[KeyPath, int]
    ) -> tuple[list[SourceConfig], list[ConfigError]]:
        """Validate discovered source tables as ``[[sources]]`` (see parse_source_tables)."""
        self._lines = dict(lines)
        retry_raw = attrs.asdict(retry, recurse=False)
        data = self._substitute({"sources": tables}, ())
        sources = self._sources(data, retry_raw) if tables else []
        errors = sorted(self._errors, key=lambda e: (e.line is None, e.line or 0))
        masked = [
            ConfigError(_mask(e.message, self._secrets), file=e.file, line=e.line, key=e.key)
            for e in errors
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

    # -- tables --------------------------------------------------------------

    def _sources(self, data: dict[str, Any], retry_raw: dict[str, Any]) -> list[SourceConfig]:
        tables = self._array_of_tables(data, "sources")
        if tables is not None and not tables and "discovery" not in data:
            self._fail(("sources",), _NO_SOURCES)
        transports = self._plugins.transports()
        seen: dict[str, int | None] = {}
        sources = []
        for index, table in enumerate(tables or ()):
            path: KeyPath = ("sources", index)
            name = self._name(table, path, "name", seen, "source")
            transport = self._required_str(table, path, "transport")
            merged = {**retry_raw, **self._table(table, (*path, "retry"))}
            retry = self._structure(RetryPolicy, merged, (*path, "retry"))
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
            sources.append(
                SourceConfig(name, transport, options, retry, self._line(path), lag_field)
            )
        return sources

    def _sinks(self, data: dict[str, Any]) -> list[SinkConfig]:
        tables = self._array_of_tables(data, "sinks")
        if tables == [] or "sinks" not in data:
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
            if provided is None or name is None:
                continue
            rest = {k: v for k, v in table.items() if k not in _SINK_KEYS}
            options = self._options(provided, rest, path, _SINK_KEYS)
            if isinstance(options, Failed) or None in (overflow, buffer, buffer_bytes, on_error):
                continue
            assert overflow is not None and buffer is not None and on_error is not None
            assert buffer_bytes is not None
            line = self._line(path)
            sinks.append(
                SinkConfig(name, type_, options, overflow, buffer, on_error, line, buffer_bytes)
            )
        return sinks

    def _discovery(self, data: dict[str, Any]) -> list[DiscoveryConfig]:
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
            if provided is None or name is None:
                continue
            rest = {k: v for k, v in table.items() if k not in _DISCOVERY_KEYS}
            options = self._options(provided, rest, path, _DISCOVERY_KEYS)
            if not isinstance(options, Failed):
                found.append(DiscoveryConfig(name, type_, options, self._line(path)))
        return found

    def _processors(
        self, data: dict[str, Any], source_names: list[str] | None
    ) -> list[ProcessorConfig]:
        tables = self._array_of_tables(data, "processors") or []
        available = self._plugins.processors() if tables else {}
        processors = []
        for index, table in enumerate(tables):
            path: KeyPath = ("processors", index)
            type_ = self._required_str(table, path, "type")
            sources = self._source_globs(table, path, source_names)
            if type_ is None:
                continue
            provided = self._provider("processor type", type_, available, path)
            if provided is None or isinstance(sources, Failed):
                continue
            rest = {k: v for k, v in table.items() if k not in _PROCESSOR_KEYS}
            options = self._options(provided, rest, path, _PROCESSOR_KEYS)
            if isinstance(options, Failed):
                continue
            processors.append(ProcessorConfig(type_, sources, options, self._line(path)))
        return processors

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
            if key == "sources" and "discovery" not in data:
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
