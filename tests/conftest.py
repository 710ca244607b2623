from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trio.testing
import trustme

import mux_core.testing
from mux_core._plugins import PluginManager


@pytest.fixture
def plugins() -> PluginManager:
    """A plugin manager with only the test kit's scripted transport and collecting sink."""
    pm = PluginManager()
    pm.register(mux_core.testing, name="testing")
    return pm


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


# -- TLS for the HTTP transports' tests -----------------------------------------


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A throwaway certificate authority (trustme)."""
    return trustme.CA()


@pytest.fixture
def tls_server_context(ca: trustme.CA) -> ssl.SSLContext:
    """A server context with a certificate for 127.0.0.1 signed by ``ca``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


@pytest.fixture
def trust_ca(ca: trustme.CA, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Make ``ca`` the clients' CA bundle, through SSL_CERT_FILE as a user would."""
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
