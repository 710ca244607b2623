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
(value, age and rate formatting for views) and :mod:`mux_core.testing` (fake
servers and one-session runs for plugin tests). Everything under a leading
underscore is the machinery and may change without notice.
"""

from __future__ import annotations

import importlib.metadata

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
    record_to_dict,
)
from .retry import RetryPolicy
from .sink import Overflow, Sink, SinkContext, SourceInfo
from .transport import RawEvent, ResumeState, Session, SharedResources, Transport

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
    "parse_config",
    "read_source_document",
    "record_to_dict",
]


def __getattr__(name: str) -> str:
    if name == "__version__":
        try:
            return importlib.metadata.version("mux")
        except importlib.metadata.PackageNotFoundError:
            return "0+unknown"
    raise AttributeError(f"module 'mux_core' has no attribute {name!r}")
