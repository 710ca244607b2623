"""mux: watch live data streams as a pure client.

The public API, re-exported. Plugin authors need :func:`hookimpl`, the
records (:class:`Event`, :class:`Status`, :class:`State`), the session
exceptions, :class:`Session` and the sink contract; embedders need
:func:`load_config`, :class:`PluginManager` and :class:`Engine`. Test helpers
live in :mod:`mux_core.testing`.
"""

from __future__ import annotations

import importlib.metadata

from .config import (
    Config,
    DiscoveryConfig,
    ProcessorConfig,
    SinkConfig,
    SourceConfig,
    load_config,
    parse_config,
    parse_source_tables,
    render_config,
)
from .discovery import Discoverer, DiscoveryContext, SourceDocument, read_source_document
from .engine import Engine, RunResult
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
from .events import (
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
from .hookspecs import Runnable, hookimpl, hookspec
from .payload import JsonFields, decode_payload, is_json, keep_raw
from .plugins import Command, PluginFailure, PluginInfo, PluginManager, Provided
from .processors import (
    FieldReader,
    Processor,
    ProcessorChain,
    ProcessorContext,
    event_types,
    joined_raw,
)
from .quality import QualityTracker, format_duration, format_quality_table
from .retry import RetryPolicy
from .session import RawEvent, ResumeState, Session, SharedResources, Transport
from .shard import Shard, parse_shard, select_shard, shard_of
from .sinks import (
    Overflow,
    Sink,
    SinkChannel,
    SinkContext,
    SizedBatch,
    SourceInfo,
    ViewClock,
    batch_bytes,
)
from .state import StateStore
from .supervisor import Supervisor

__all__ = [
    "Alert",
    "Batch",
    "Command",
    "Config",
    "ConfigError",
    "Disconnected",
    "Discoverer",
    "DiscoveryConfig",
    "DiscoveryContext",
    "Ended",
    "Engine",
    "Event",
    "Failed",
    "FieldReader",
    "JsonFields",
    "MuxError",
    "Overflow",
    "PluginError",
    "PluginFailure",
    "PluginInfo",
    "PluginManager",
    "Processor",
    "ProcessorChain",
    "ProcessorConfig",
    "ProcessorContext",
    "Provided",
    "Quality",
    "QualityTracker",
    "RawEvent",
    "Record",
    "RecordDecodeError",
    "ResumeState",
    "RetryPolicy",
    "RunResult",
    "Runnable",
    "ServerUnavailable",
    "Session",
    "SessionError",
    "Severity",
    "Shard",
    "SharedResources",
    "Sink",
    "SinkChannel",
    "SinkConfig",
    "SinkContext",
    "SizedBatch",
    "SourceConfig",
    "SourceDocument",
    "SourceInfo",
    "State",
    "StateStore",
    "Status",
    "Supervisor",
    "Transport",
    "ViewClock",
    "__version__",
    "batch_bytes",
    "decode_jsonl",
    "decode_payload",
    "describe_connection_error",
    "encode_jsonl",
    "event_types",
    "format_duration",
    "format_quality_table",
    "hookimpl",
    "hookspec",
    "is_json",
    "joined_raw",
    "keep_raw",
    "load_config",
    "parse_config",
    "parse_shard",
    "parse_source_tables",
    "read_source_document",
    "record_to_dict",
    "render_config",
    "select_shard",
    "shard_of",
]


def __getattr__(name: str) -> str:
    if name == "__version__":
        try:
            return importlib.metadata.version("mux")
        except importlib.metadata.PackageNotFoundError:
            return "0+unknown"
    raise AttributeError(f"module 'mux_core' has no attribute {name!r}")
