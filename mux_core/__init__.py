"""mux: watch live data streams as a pure client.

The public API, re-exported: what a plugin or an embedding program may rely
on (``docs/architecture.md`` maps where each piece lives). Plugin authors
need :func:`hookimpl` and ``Register``, the records, the session exceptions,
the component contracts (:class:`Transport` and its :class:`Session`,
:class:`Sink` and its :class:`SinkContext`, :class:`Processor`,
:class:`Discoverer`); embedders need :func:`load_config`,
:class:`PluginManager` and :class:`Engine`. The public submodules add detail
for the few who need it: :mod:`mux_core.http` (the HTTP/1.1 client the
built-in transports share), :mod:`mux_core.payload`, :mod:`mux_core.views`
(value, age and rate formatting for views), :mod:`mux_core.options`
(validators for plugin options) and :mod:`mux_core.testing` (fake servers and
one-session runs for plugin tests). Everything under a leading
underscore is the machinery and may change without notice.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._config import Config, load_config, parse_config
    from ._plugins import PluginManager
    from ._run.engine import Engine, RunResult
    from .discovery import Discoverer, DiscoveryContext, SourceDocument, read_source_document
    from .errors import (
        ConfigError,
        Disconnected,
        Ended,
        Failed,
        MuxError,
        PluginError,
        ServerUnavailable,
        SessionError,
        describe_connection_error,
    )
    from .hookspecs import Register, hookimpl
    from .processor import FieldReader, Processor, ProcessorContext
    from .records import (
        Alert,
        Batch,
        Event,
        Quality,
        Record,
        RecordDecodeError,
        Severity,
        State,
        Status,
        decode_jsonl,
        encode_jsonl,
        open_recording,
        record_to_dict,
    )
    from .retry import RetryPolicy
    from .sink import Overflow, ReplayControl, Sink, SinkContext, SourceInfo
    from .transport import RawEvent, ResumeState, Session, SharedResources, Transport

    __version__: str

__all__ = [
    "Alert",
    "Batch",
    "Config",
    "ConfigError",
    "Disconnected",
    "Discoverer",
    "DiscoveryContext",
    "Ended",
    "Engine",
    "Event",
    "Failed",
    "FieldReader",
    "MuxError",
    "Overflow",
    "PluginError",
    "PluginManager",
    "Processor",
    "ProcessorContext",
    "Quality",
    "RawEvent",
    "Record",
    "RecordDecodeError",
    "Register",
    "ReplayControl",
    "ResumeState",
    "RetryPolicy",
    "RunResult",
    "ServerUnavailable",
    "Session",
    "SessionError",
    "Severity",
    "SharedResources",
    "Sink",
    "SinkContext",
    "SourceDocument",
    "SourceInfo",
    "State",
    "Status",
    "Transport",
    "__version__",
    "decode_jsonl",
    "describe_connection_error",
    "encode_jsonl",
    "hookimpl",
    "load_config",
    "open_recording",
    "parse_config",
    "read_source_document",
    "record_to_dict",
]


#: Where each public name lives: ``import mux_core`` imports none of them, so a
#: plugin's ``from mux_core import hookimpl`` (and ``mux --help``) pays only
#: for the modules it names, not for the engine, trio or httpx.
_HOMES = {
    "._config": ("Config", "load_config", "parse_config"),
    "._plugins": ("PluginManager",),
    "._run.engine": ("Engine", "RunResult"),
    ".discovery": ("Discoverer", "DiscoveryContext", "SourceDocument", "read_source_document"),
    ".errors": (
        "ConfigError",
        "Disconnected",
        "Ended",
        "Failed",
        "MuxError",
        "PluginError",
        "ServerUnavailable",
        "SessionError",
        "describe_connection_error",
    ),
    ".hookspecs": ("Register", "hookimpl"),
    ".processor": ("FieldReader", "Processor", "ProcessorContext"),
    ".records": (
        "Alert",
        "Batch",
        "Event",
        "Quality",
        "Record",
        "RecordDecodeError",
        "Severity",
        "State",
        "Status",
        "decode_jsonl",
        "encode_jsonl",
        "open_recording",
        "record_to_dict",
    ),
    ".retry": ("RetryPolicy",),
    ".sink": ("Overflow", "ReplayControl", "Sink", "SinkContext", "SourceInfo"),
    ".transport": ("RawEvent", "ResumeState", "Session", "SharedResources", "Transport"),
}
_HOME = {name: module for module, names in _HOMES.items() for name in names}


def _resolve(name: str) -> Any:
    """A public name, imported from its module on first use (then a plain attribute)."""
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("mux")  # reads the installed metadata: once, then kept
        except PackageNotFoundError:
            found = "0+unknown"
        globals()[name] = found
        return found
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'mux_core' has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if not TYPE_CHECKING:
    # Hidden from mypy, which sees the names in the TYPE_CHECKING block above
    # (a module __getattr__ would make it accept any name).
    __getattr__ = _resolve
