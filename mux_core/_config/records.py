"""The validated config, as frozen attrs records (built by mux_core._config.loader)."""

from __future__ import annotations

import fnmatch
from typing import Any

import attrs

from ..options import at_least_one
from ..retry import RetryPolicy
from ..sink import DEFAULT_BUFFER_BYTES, Overflow
from .shard import Shard

__all__ = [
    "Config",
    "DiscoveryConfig",
    "DiscoveryPolicy",
    "ProcessorConfig",
    "SinkConfig",
    "SourceConfig",
    "name_problem",
]

#: ``quality_interval`` / ``quality_window`` when not written.
QUALITY_INTERVAL = 60.0
QUALITY_WINDOW = 3600.0
_AT_LEAST_ONE = at_least_one(named=False)
#: The longest name of a source (or sink, or discoverer): it is in every record and log line.
MAX_NAME_LENGTH = 200
#: ``max_sources`` by default: the most sources one ``[[discovery]]`` table may add.
MAX_DISCOVERED_SOURCES = 1000


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a source (or a sink, a discoverer), or None.

    A name is in every record and every log line: it must be printable --
    no control characters (a newline would forge a log line, an ANSI
    escape repaint the terminal), no invisible format characters (a
    right-to-left override) -- and at most :data:`MAX_NAME_LENGTH` characters.
    """
    if len(name) > MAX_NAME_LENGTH:
        return f"is {len(name)} characters long; at most {MAX_NAME_LENGTH} are allowed"
    if not name.isprintable():
        bad = next(char for char in name if not char.isprintable())
        return (
            f"holds the unprintable character U+{ord(bad):04X}; use letters, digits, "
            "spaces and punctuation"
        )
    return None


@attrs.frozen
class SourceConfig:
    """One ``[[sources]]`` table, validated."""

    name: str
    transport: str
    #: An instance of the transport class's ``Options``.
    options: Any
    #: The top-level ``[retry]`` with this source's ``retry`` table merged over it.
    retry: RetryPolicy
    #: Line of the ``[[sources]]`` header.
    line: int | None
    #: ``lag_field``: the payload field holding the time an event was made, for
    #: the lag figures of its ``quality`` records (see mux_core._run.quality); None = no lag.
    lag_field: str | None = None
    #: ``stale_after``: seconds without an event after which the connected source
    #: is stale (mux_core.views.StaleWatch); None = learned from its own rhythm.
    stale_after: float | None = None
    #: The secrets of this table (its secret options' values, URL passwords,
    #: ``${VAR}`` values): masked in what the source reports (status details).
    #: Not compared: they follow from the options, which are.
    secrets: frozenset[str] = attrs.field(default=frozenset(), eq=False, repr=False)


@attrs.frozen
class SinkConfig:
    """One ``[[sinks]]`` table, validated."""

    #: The ``name`` key, by default the type; unique among sinks.
    name: str
    type: str
    #: An instance of the sink class's ``Options``.
    options: Any
    overflow: Overflow
    #: Capacity of the sink's channel, in records.
    buffer: int
    #: ``"stop"`` the run or ``"drop"`` the sink when it fails.
    on_error: str
    line: int | None
    #: Capacity of the sink's channel in payload bytes (an estimate), besides records.
    buffer_bytes: int = DEFAULT_BUFFER_BYTES
    #: ``history``: recordings (paths or globs, as written) fed to the sink before
    #: any live record, so a view opened mid-run shows the whole run.
    history: tuple[str, ...] = ()


@attrs.frozen
class ProcessorConfig:
    """One ``[[processors]]`` table, validated."""

    type: str
    #: The ``sources`` globs it applies to; None = every source.
    sources: tuple[str, ...] | None
    #: An instance of the processor class's ``Options``.
    options: Any
    line: int | None

    def applies_to(self, source: str) -> bool:
        """Whether this processor runs on ``source`` (``sources`` globs; default all)."""
        if self.sources is None:
            return True
        return any(fnmatch.fnmatchcase(source, pattern) for pattern in self.sources)


def _default_transports() -> list[str]:
    return ["sse", "ws", "rest"]


def _default_hosts() -> list[str]:
    return ["127.0.0.1", "localhost", "::1"]


def _default_options() -> list[str]:
    return ["url", "lag_field", "decode", "items", "id_field", "event_field"]


@attrs.frozen(kw_only=True)
class DiscoveryPolicy:
    """What the sources a ``[[discovery]]`` table finds may be: the keys every
    discoverer's table has (see mux_core._config.discovered, docs/security.md)."""

    #: Transports a discovered source may use; others are left out with a warning.
    allow_transports: list[str] = attrs.field(factory=_default_transports)
    #: Globs of the hosts a discovered source's URLs may name (`"*.internal"`, `"10.0.*"`);
    #: `["*"]` allows any host.
    allow_hosts: list[str] = attrs.field(factory=_default_hosts)
    #: Options a discovered source may set, besides `name`, `transport` and `retry`.
    allow_options: list[str] = attrs.field(factory=_default_options)
    #: Keys every discovered source gets, as if written in its table (headers, credentials,
    #: `retry`, ...): the config's, so `${VAR}` works here and nowhere in what is discovered.
    defaults: dict[str, Any] = attrs.field(factory=dict)
    #: The most sources this discoverer may add; the rest are left out, reported once.
    max_sources: int = attrs.field(default=MAX_DISCOVERED_SOURCES, validator=_AT_LEAST_ONE)
    #: Whether a discovered source may set `verify = false` (not check TLS certificates).
    allow_insecure: bool = False


@attrs.frozen
class DiscoveryConfig:
    """One ``[[discovery]]`` table, validated."""

    #: The ``name`` key, by default the type; unique among discoverers.
    name: str
    type: str
    #: An instance of the discoverer class's ``Options``.
    options: Any
    line: int | None
    #: What the sources it finds may be.
    policy: DiscoveryPolicy = attrs.field(factory=DiscoveryPolicy)


@attrs.frozen
class Config:
    """A whole config file, validated against the installed plugins."""

    #: The path as given.
    path: str
    #: The file's stem, e.g. ``"monitor"``.
    name: str
    retry: RetryPolicy
    sources: tuple[SourceConfig, ...]
    sinks: tuple[SinkConfig, ...]
    #: Strings to mask whenever the config or its values are printed.
    secrets: frozenset[str]
    #: The ``[[processors]]`` tables, in file order.
    processors: tuple[ProcessorConfig, ...] = ()
    #: ``shard = "I/N"``: run only the sources of shard I of N (see mux_core._config.shard);
    #: ``mux run --shard`` overrides it.
    shard: Shard | None = None
    #: ``state_dir``: where each source's resume state is kept across runs
    #: (see mux_core._run.state); ``mux run --state`` overrides it. None = memory only.
    state_dir: str | None = None
    #: Seconds between ``quality`` records per source; 0 = none.
    quality_interval: float = QUALITY_INTERVAL
    #: Seconds of the past that a ``quality`` record's windowed figures cover.
    quality_window: float = QUALITY_WINDOW
    #: The ``[[discovery]]`` tables: where more sources come from while running.
    discovery: tuple[DiscoveryConfig, ...] = ()
