"""The TOML config file -> validated, frozen attrs records, before any I/O.

Every problem is a :class:`~mux_core.errors.ConfigError` whose ``str()`` is
``FILE:LINE: key: why`` -- the line is found by re-scanning the text
(:mod:`mux_core._config.positions`), the key is a path like
``sources[1].interval`` (indices count from 0). All problems of a file are
reported at once, sorted by line, one per line of the message.

Environment variables: ``${NAME}`` is replaced by the variable's value in
every string value of the file (also inside arrays and inline tables) --
never in what a discoverer finds, which is data; an unset variable
is an error at that key. ``${NAME:-default}`` uses ``default`` when the
variable is unset or empty (the shell's meaning; the default cannot contain
``}``). ``$${`` writes a literal ``${``; a lone ``$`` needs no escape.

Secrets: :attr:`Config.secrets` holds the strings to mask wherever the
config or its values are shown -- values taken from the environment, every
``headers`` value, values of options whose name says secret (``password``,
``token``, ``secret``, ``api_key``, ``credential``) and the password of a URL
(``http://user:pass@host``). :func:`render_config` applies them.

Where it lives: the records in :mod:`mux_core._config.records`, the walk over
the tables and the checks of single keys and plugin options in
:mod:`mux_core._config.loader`, the tables discoverers find (held to what
their ``[[discovery]]`` table allows) in :mod:`mux_core._config.discovered`,
rendering and masking in :mod:`mux_core._config.render`; this module is the
entry point.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from .._plugins import PluginManager
from ..errors import ConfigError
from ..retry import RetryPolicy
from .discovered import Discovered, Problem, load_discovered
from .loader import Loader, Parsed
from .positions import KeyPath
from .records import (
    Config,
    DiscoveryConfig,
    DiscoveryPolicy,
    ProcessorConfig,
    SinkConfig,
    SourceConfig,
)
from .render import render_config

__all__ = [
    "Config",
    "Discovered",
    "DiscoveryConfig",
    "DiscoveryPolicy",
    "Parsed",
    "Problem",
    "ProcessorConfig",
    "SinkConfig",
    "SourceConfig",
    "load_config",
    "parse_config",
    "parse_processor_tables",
    "parse_source_tables",
    "render_config",
]


def load_config(
    path: str | os.PathLike[str],
    plugins: PluginManager,
    *,
    environ: Mapping[str, str] | None = None,
    replay: bool = False,
    only: Callable[[str], bool] | None = None,
    parsed: Parsed | None = None,
    on_parsed: Callable[[Parsed], None] | None = None,
) -> Config:
    """Read and validate the config file at ``path``; raise ConfigError if wrong.

    ``replay``: a config for ``mux replay``, whose sources come from the
    recording: it may have no ``[[sources]]``, and its processors may name
    sources it does not list. ``only``: validate and keep only the sources
    whose name it accepts (a worker of ``--workers``: the parent validated the
    whole file; each worker builds its share of 100,000 sources, not all).
    ``parsed``: the file as already read (its tables and key lines; the file
    is not read again) -- a worker's, from its parent; ``on_parsed`` is
    given the file as read here (the parent keeps it for its workers).
    """
    shown = os.fspath(path)
    environ = os.environ if environ is None else environ
    if parsed is not None:
        loader = Loader("", shown, plugins, environ, replay=replay, only=only, parsed=parsed)
        return loader.load()
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError("no such file; create it or pass another path", file=shown) from None
    except IsADirectoryError:
        raise ConfigError("is a directory; pass the config file itself", file=shown) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", file=shown) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError("not UTF-8 text", file=shown, line=line) from None
    loader = Loader(text, shown, plugins, environ, replay=replay, only=only, on_parsed=on_parsed)
    return loader.load()


def parse_config(
    text: str,
    *,
    path: str,
    plugins: PluginManager,
    environ: Mapping[str, str] | None = None,
    replay: bool = False,
    only: Callable[[str], bool] | None = None,
) -> Config:
    """Validate config ``text`` (``path`` is only used in messages and names;
    ``replay`` and ``only`` as for :func:`load_config`)."""
    environ = os.environ if environ is None else environ
    return Loader(text, path, plugins, environ, replay=replay, only=only).load()


def parse_processor_tables(
    tables: Sequence[tuple[KeyPath, dict[str, Any]]],
    *,
    path: str,
    lines: Mapping[KeyPath, int],
    plugins: PluginManager,
) -> list[ProcessorConfig]:
    """Validate processor tables written elsewhere than ``[[processors]]`` in the file
    ``path``, each at its own key path (a ``mux test`` file's ``tests[0].processors[1]``),
    as a replay config's (any source name); ``lines`` where their keys are. Raises
    ConfigError (``FILE:LINE: tests[0].processors[1].seconds: why``). No ``${VAR}``
    is expanded."""
    return Loader("", path, plugins, {}, replay=True).load_processors(tables, lines)


def parse_source_tables(
    tables: list[dict[str, Any]],
    *,
    origin: str,
    retry: RetryPolicy,
    plugins: PluginManager,
    lines: Mapping[KeyPath, int] | None = None,
    policy: DiscoveryPolicy | None = None,
    limit: int | None = None,
    secrets: Collection[str] = (),
) -> Discovered:
    """Validate source tables found while running (a discoverer's) as ``[[sources]]``.

    ``tables`` are the ``sources`` of one document at ``origin`` (a file, a
    URL), ``lines`` where their keys are (paths ``("sources", i, key)``),
    ``retry`` the run's ``[retry]``, ``policy`` what their ``[[discovery]]``
    table allows. They are data: nothing is substituted (see
    :mod:`mux_core._config.discovered`). At most ``limit`` sources are kept
    (default: the policy's ``max_sources``); each table left out is one
    :class:`~mux_core._config.discovered.Problem`, its error reading
    ``ORIGIN:LINE: sources[i].key: why`` with ``secrets`` masked.
    """
    policy = DiscoveryPolicy() if policy is None else policy
    return load_discovered(
        tables,
        origin=origin,
        policy=policy,
        retry=retry,
        plugins=plugins,
        lines=lines or {},
        limit=policy.max_sources if limit is None else limit,
        secrets=secrets,
    )
