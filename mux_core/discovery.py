"""Discovery: sources that appear and disappear while mux runs.

A ``[[discovery]]`` table names a discoverer type registered by a plugin
(``mux_register_discovery``)::

    [[discovery]]
    type = "files"
    paths = ["runs/*/mux-endpoints.toml"]

A discoverer class looks like::

    class FilesDiscovery:
        Options = FilesOptions                 # an attrs class: the table's keys

        def __init__(self, options: FilesOptions, context: DiscoveryContext) -> None: ...

        async def run(self) -> None:           # until cancelled
            while True:
                documents = [...]              # what it finds now
                await self.context.update(documents)
                await trio.sleep(self.options.interval)

Each :meth:`DiscoveryContext.update` hands over the *whole* current set, as
:class:`SourceDocument`\\ s (one per file, one per HTTP answer, ...); the
engine validates every table as a ``[[sources]]`` table (errors name the
document and its line) and compares the set with the running sources, with
the rules of a reload: new names start, missing ones stop, changed ones
restart (resume state kept when the transport is the same), unchanged ones
are not touched. A discoverer never starts or stops anything itself
(Prometheus's file_sd and http_sd work the same way).

A discovered table is data, not config: no ``${VAR}`` is expanded in it,
and the ``[[discovery]]`` table says what it may be -- its transports,
hosts and options, how many sources, how fast they retry (see
docs/security.md). A table outside that is left out with a warning (one
line per update, counting them), as is one named like a ``[[sources]]``
table or like a source of another document (the first one keeps the name).
:func:`read_source_document` reads the TOML or JSON a trainer writes next to
its checkpoints.
"""

from __future__ import annotations

import json
import logging
import re
import tomllib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from .errors import ConfigError
from .retry import RetryPolicy

if TYPE_CHECKING:  # the config loader is imported when a document is read, not by mux --help
    from ._config.positions import KeyPath

__all__ = ["Discoverer", "DiscoveryContext", "SourceDocument", "read_source_document"]

_log = logging.getLogger("mux.discovery")

_LOOKS_JSON = re.compile(r"\s*(\{|\[\s*[{\]])")
_TOO_DEEP = "arrays or tables nested too deeply"


@attrs.frozen
class SourceDocument:
    """The source tables of one document a discoverer found (a file, an HTTP answer)."""

    #: Where they came from, for messages: a path, a URL.
    origin: str
    #: Each like a ``[[sources]]`` table: ``name``, ``transport``, the transport's options.
    tables: tuple[dict[str, Any], ...]
    #: Lines of their keys in the document, by path ``("sources", i, key)``; may be empty.
    lines: Mapping[KeyPath, int] = attrs.field(factory=dict)


class Discoverer:
    """The base of a discoverer plugin class; register it with ``register("files", cls)``.

    Required: ``Options`` and :meth:`run`. A discoverer never starts or stops
    a source itself: it hands over the whole current set, and the engine
    compares it with what runs. Inheriting from :class:`Discoverer` is
    optional: the core needs only these members.
    """

    #: An attrs class whose fields are the keys of a ``[[discovery]]`` table
    #: (besides ``type`` and ``name``); it may define a classmethod
    #: ``check(options)`` raising ``ValueError``, reported at the table's line.
    Options: ClassVar[type[Any]]

    def __init__(self, options: Any, context: DiscoveryContext) -> None:
        #: The validated ``Options`` instance.
        self.options = options
        #: Where found sets go (:meth:`DiscoveryContext.update`) and problems are told.
        self.context = context

    async def run(self) -> None:
        """Find sources and ``await self.context.update(documents)`` with each new
        whole set, until cancelled; required. Keep going through a server's
        failures (report them with ``context.report``): returning or raising
        ends this discoverer for the rest of the run."""
        raise NotImplementedError(f"{type(self).__name__} must define run()")


class DiscoveryContext:
    """What a discoverer gets from the engine."""

    def __init__(
        self,
        *,
        name: str,
        retry: RetryPolicy,
        update: Callable[[Sequence[SourceDocument]], Awaitable[None]],
        mask: Callable[[str], str] | None = None,
    ) -> None:
        #: The ``name`` of the ``[[discovery]]`` table (its type by default).
        self.name = name
        #: The run's ``[retry]`` policy, for a discoverer that polls a server.
        self.retry = retry
        self._update = update
        # The run's secrets masking (a URL's password, ${VAR} values): a
        # problem often quotes the discoverer's URL.
        self._mask = mask or str
        self._reported: set[str] = set()

    async def update(self, documents: Sequence[SourceDocument]) -> None:
        """Replace the sources this discoverer found with these (the whole current set)."""
        await self._update(documents)

    def report(self, problem: str) -> None:
        """Log a problem once (until :meth:`forget`); a discoverer calls it on every poll.

        Secrets in it (a URL's password, the config's ``${VAR}`` values) are
        shown as ``***``: quote your URL freely.
        """
        if problem not in self._reported:
            self._reported.add(problem)
            _log.error("discovery %r: %s", self.name, self._mask(problem))

    def forget(self, problem: str) -> None:
        """The problem went away: report it again if it comes back."""
        self._reported.discard(problem)


def read_source_document(data: bytes, origin: str) -> SourceDocument:
    """The source tables of a small TOML or JSON endpoint file.

    TOML: ``[[sources]]`` tables, or one source's keys at the top level.
    JSON (``origin`` ends in ``.json``; else when the text starts with ``{``,
    ``[{`` or ``[]``): an object with a ``sources`` array, an array of source tables,
    or one source's object. Raises :class:`ConfigError` naming ``origin``
    and the line for a document that does not parse -- nested too deeply
    or holding a number of thousands of digits included: the text is
    someone else's, nothing in it may escape as another exception.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError("not UTF-8 text", file=origin, line=line) from None
    if origin.endswith(".toml"):
        return _toml_document(text, origin)
    if origin.endswith(".json") or _LOOKS_JSON.match(text):
        return _json_document(text, origin)
    return _toml_document(text, origin)


def _toml_document(text: str, origin: str) -> SourceDocument:
    from ._config.positions import key_lines, toml_error_position

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        reason, line = toml_error_position(str(exc))
        raise ConfigError(f"invalid TOML: {reason}", file=origin, line=line) from None
    except RecursionError:
        raise ConfigError(f"invalid TOML: {_TOO_DEEP}", file=origin) from None
    except ValueError as exc:  # an integer of thousands of digits
        raise ConfigError(f"invalid TOML: {_plain(exc)}", file=origin) from None
    lines = key_lines(text)
    if "sources" in data:
        tables = data["sources"]
        if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
            raise ConfigError(
                "expected [[sources]] tables", file=origin, line=lines.get(("sources",))
            )
        return SourceDocument(origin, tuple(tables), lines)
    # One source's keys at the top level: its keys are ("sources", 0, key).
    moved = {("sources", 0, *path): line for path, line in lines.items()}
    moved[("sources", 0)] = 1
    return SourceDocument(origin, (data,) if data else (), moved)


def _json_document(text: str, origin: str) -> SourceDocument:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid JSON: {exc.msg}", file=origin, line=exc.lineno) from None
    except RecursionError:
        raise ConfigError(f"invalid JSON: {_TOO_DEEP}", file=origin) from None
    except ValueError as exc:  # an integer of thousands of digits
        raise ConfigError(f"invalid JSON: {_plain(exc)}", file=origin) from None
    if isinstance(data, dict) and "sources" in data:
        data = data["sources"]
    elif isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(t, dict) for t in data):
        raise ConfigError(
            "expected an array of source objects, or an object with a 'sources' array",
            file=origin,
        )
    return SourceDocument(origin, tuple(data))


def _plain(exc: ValueError) -> str:
    """Python's words for an over-long integer, shorter (its limit is an implementation's)."""
    text = str(exc)
    return "a number with too many digits" if "digits" in text else text[:200]
