"""The public API is exactly what mux_core.__all__ lists (httpx / trio style guard)."""

from __future__ import annotations

import importlib
import pkgutil

import mux_core


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert mux_core.__all__ == sorted(mux_core.__all__)
    for name in mux_core.__all__:
        assert getattr(mux_core, name) is not None, name


def test_every_public_name_of_the_contract_modules_is_exported() -> None:
    """A public class or function of a core module must be in mux_core.__all__ or
    in that module's own __all__ only when the module is meant to be imported
    directly (testing, cli)."""
    direct = {
        "mux_core.testing",
        "mux_core.cli",
        "mux_core.probe",
        "mux_core.http",
        "mux_core.replay",  # the `mux replay` command's machinery, imported by the CLI
    }
    missing = []
    for info in pkgutil.iter_modules(mux_core.__path__):
        if info.name.startswith("_"):
            continue
        module_name = f"mux_core.{info.name}"
        module = importlib.import_module(module_name)
        assert hasattr(module, "__all__"), f"{module_name} has no __all__"
        if module_name in direct:
            continue
        for name in module.__all__:
            if name not in mux_core.__all__:
                missing.append(f"{module_name}.{name}")
    assert missing == []


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
