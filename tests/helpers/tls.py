"""TLS for the tests of every TLS client: certificates from a throwaway CA (trustme).

The ``ca`` fixture (tests/conftest.py) is the CA; these build what a test
serves and what it trusts: a server context for any names or validity, and
the CA as a PEM file for ``ca_file``.
"""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import trustme

__all__ = ["expired_context", "server_context", "write_ca"]


def server_context(
    ca: trustme.CA,
    *names: str,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> ssl.SSLContext:
    """A server context whose certificate, signed by ``ca``, names ``names``
    (127.0.0.1 by default)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert = ca.issue_cert(*(names or ("127.0.0.1",)), not_before=not_before, not_after=not_after)
    cert.configure_cert(context)
    return context


def expired_context(ca: trustme.CA) -> ssl.SSLContext:
    """A server context for 127.0.0.1 whose certificate expired yesterday."""
    now = datetime.datetime.now(datetime.UTC)
    return server_context(
        ca,
        "127.0.0.1",
        not_before=now - datetime.timedelta(days=30),
        not_after=now - datetime.timedelta(days=1),
    )


def write_ca(ca: trustme.CA, directory: Path) -> str:
    """``ca``'s certificate as a PEM file in ``directory``: a ``ca_file``."""
    path = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)
