"""The public API is exactly the names pinned here (the httpx / trio guard).

Adding a name to ``mux_core.__all__`` is a decision, not a side effect of
writing a public function somewhere: this test fails until the name is added
here too. What plugins may import is fenced by ruff's banned-api rule
(TID251, ``pyproject.toml``): nothing under ``mux_core._*``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson

import mux_core
from tests.helpers import ROOT

PUBLIC_API = [
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

#: Modules a plugin may import besides ``mux_core`` itself.
PUBLIC_SUBMODULES = [
    "mux_core.aio",
    "mux_core.discovery",
    "mux_core.errors",
    "mux_core.hookspecs",
    "mux_core.http",
    "mux_core.options",
    "mux_core.payload",
    "mux_core.processor",
    "mux_core.records",
    "mux_core.retry",
    "mux_core.sink",
    "mux_core.testing",
    "mux_core.transport",
    "mux_core.views",
]


def test_the_public_api_is_exactly_the_pinned_names() -> None:
    assert mux_core.__all__ == PUBLIC_API


def test_every_public_name_resolves() -> None:
    for name in mux_core.__all__:
        assert getattr(mux_core, name) is not None, name


def test_every_public_submodule_declares_what_it_offers() -> None:
    for name in PUBLIC_SUBMODULES:
        module = importlib.import_module(name)
        assert module.__all__, name
        for exported in module.__all__:
            assert hasattr(module, exported), f"{name}.{exported}"


def test_the_lint_fence_rejects_a_private_import_from_a_plugin(tmp_path: Path) -> None:
    """The rule ``make lint`` runs over plugins/ and examples/ catches a reach inside."""
    plugin = ROOT / "plugins" / "mux_fence_probe.py"
    plugin.write_text(
        textwrap.dedent(
            """\
            from mux_core import Event
            from mux_core._run.engine import Engine

            __all__ = ["Engine", "Event"]
            """
        )
    )
    try:
        found = subprocess.run(
            [sys.executable, "-m", "ruff", "check", "--select", "TID251", str(plugin)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        plugin.unlink()
    assert found.returncode == 1
    assert "mux_core._run" in found.stdout
    assert found.stdout.count("TID251") == 1  # the public import passes


def test_version_comes_from_the_installed_metadata() -> None:
    assert mux_core.__version__ == importlib.metadata.version("mux")


async def test_describe_connection_error_names_a_refused_port() -> None:
    import socket

    import trio

    from mux_core import describe_connection_error

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    try:
        await trio.open_tcp_stream("127.0.0.1", port)
    except OSError as exc:
        assert describe_connection_error(exc) == "connection refused"
    else:  # pragma: no cover
        raise AssertionError("connected to a closed port")
    assert describe_connection_error(ValueError("x")) is None


def test_sinks_encode_a_payload_as_the_file_does() -> None:
    """``encode_data`` is public: a sink that shows a payload on its own (log,
    webhook) writes what the file holds, and survives what the file survives."""
    import mux_core.records
    from mux_core.records import Event, encode_data, encode_jsonl

    assert "encode_data" in mux_core.records.__all__
    deep: object = []
    for _ in range(2000):  # deeper than the encoder goes
        deep = [deep]
    for data in ({"loss": 0.5}, "a\nb", deep):
        event = Event("s", "sse", "message", None, data, 1.0, 1)
        line = orjson.loads(encode_jsonl([event]))
        assert orjson.loads(encode_data(event)) == line["data"]
    raw = Event.from_bytes("s", "sse", "message", None, b'{"a": 1.10}', 1.0, 1)
    assert encode_data(raw) == b'{"a": 1.10}'  # the bytes as received
