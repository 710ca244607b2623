"""One TLS policy for every client mux opens: sse, ws, rest, webhook, discovery, redis.

* **Verification is on.** A certificate must chain to a trusted CA and name
  the host, unless the config says ``verify = false`` -- which mux accepts
  and warns about, at ``mux check`` and when the source starts
  (:func:`unverified_warning`).
* **One default trust store: the operating system's.** That is what
  ``ssl.create_default_context()`` loads -- ``/etc/ssl/certs`` and its
  kin on Linux, the Windows certificate store -- or the file or directory
  named by ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` when set. An organisation
  installs its internal CA there, and removes a CA it no longer trusts
  there; curl, git and the HTTP discoverer and Redis clients of earlier
  versions read it too. Only where Python sees no system store at all (the
  python.org macOS installer before "Install Certificates", a container
  without ``ca-certificates``) is certifi's bundle -- the same Mozilla list
  the Linux stores hold -- used instead, so that public servers still verify.
* **``ca_file`` replaces it per source**: a PEM bundle (a private CA, a
  self-signed server's certificate), checked at ``mux check``
  (:func:`tls_problem`) and loaded by :func:`tls_context`.

Failures are told in words by :func:`mux_core.errors.describe_connection_error`
("certificate verify failed: unknown issuer (self-signed or an untrusted
CA)", "... the certificate has expired", "... hostname mismatch: ..."),
for every client alike. A client that runs its own handshake with
:func:`start_tls` also learns which names a mismatched certificate is for.

Importing this module is cheap: ssl and certifi are imported by the
functions that build a context.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl

    import trio

__all__ = [
    "certificate_names",
    "start_tls",
    "tls_context",
    "tls_problem",
    "unverified_warning",
    "warn_unverified",
]

#: Seconds the second look at a certificate for another host may take.
_NAMES_TIMEOUT = 2.0
#: OpenSSL's verify codes for a certificate that names another host (or IP address).
_NAME_MISMATCH = (62, 64)

_log = logging.getLogger("mux.tls")


def tls_context(*, verify: bool = True, ca_file: str | None = None) -> ssl.SSLContext:
    """A TLS client context following mux's one policy (see the module docstring).

    ``verify=False``: no certificate or host name is checked (warn with
    :func:`warn_unverified`). ``ca_file``: trust the CAs of this PEM file
    instead of the default store (``~`` is expanded); a file that cannot be
    read or holds no certificate raises ``ValueError`` with a sentence that
    starts ``ca_file:`` -- a config mistake, so a transport reports it as
    ``Failed``. Building a context reads the CA bundle (milliseconds): make
    one per run and share it (:func:`mux_core.http.shared_tls_context`).
    """
    import ssl

    if not verify:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if ca_file is not None:
        problem = tls_problem(verify=True, ca_file=ca_file)
        if problem:
            raise ValueError(problem)
        try:
            return ssl.create_default_context(cafile=os.path.expanduser(ca_file))
        except (ssl.SSLError, ValueError):
            raise ValueError(f"ca_file: {ca_file!r} holds no PEM certificate") from None
        except OSError as exc:
            raise ValueError(f"ca_file: cannot read {ca_file!r}: {exc.strerror or exc}") from None
    context = ssl.create_default_context()
    if not _sees_a_store(context):
        try:
            import certifi
        except ImportError:  # pragma: no cover - httpx depends on certifi
            return context
        context.load_verify_locations(cafile=certifi.where())
    return context


def _sees_a_store(context: ssl.SSLContext) -> bool:
    """Whether the default store gave ``context`` any CA: loaded from a file (or
    the Windows store) at once, or in a directory OpenSSL reads on demand."""
    if context.cert_store_stats().get("x509_ca", 0):
        return True
    import ssl

    capath = ssl.get_default_verify_paths().capath
    if not capath or not os.path.isdir(capath):
        return False
    try:
        with os.scandir(capath) as entries:
            return any(True for _ in entries)
    except OSError:
        return False


def tls_problem(*, verify: bool, ca_file: str | None) -> str:
    """What is wrong with these TLS options, or "" -- for an Options ``check()``.

    Reads nothing but the file system's view of ``ca_file`` (no ssl import):
    it must be a readable file, and makes no sense with ``verify = false``.
    """
    if ca_file is None:
        return ""
    if not verify:
        return (
            "ca_file: has no effect with verify = false (nothing is checked); remove one of the two"
        )
    path = os.path.expanduser(ca_file)
    if not os.path.exists(path):
        return f"ca_file: no such file {ca_file!r}"
    if os.path.isdir(path):
        return (
            f"ca_file: {ca_file!r} is a directory; name a PEM file "
            "(a directory of CA certificates goes in SSL_CERT_DIR)"
        )
    if not os.access(path, os.R_OK):
        return f"ca_file: {ca_file!r} cannot be read (permission denied)"
    return ""


def unverified_warning(what: str) -> str:
    """The one line that says ``what`` (e.g. ``source 'train'``) does not verify TLS."""
    return (
        f"{what}: verify = false: TLS certificates are not checked, so anyone "
        "on the network path can pose as the server and read or change what it sends"
    )


def warn_unverified(what: str) -> None:
    """Log :func:`unverified_warning` as a WARNING (logger ``mux.tls``).

    Call it once when a component with ``verify = false`` starts -- a
    transport at its first session, a sink when it opens -- not per
    connection; ``mux check`` prints the same line for every such table.
    """
    _log.warning("%s", unverified_warning(what))


async def start_tls(
    stream: trio.abc.Stream, context: ssl.SSLContext, host: str, port: int
) -> trio.SSLStream[trio.abc.Stream]:
    """TLS over a connected ``stream`` to ``host``:``port``, its handshake done.

    On failure ``stream`` is closed and trio's error raised (the ``ssl``
    error is its cause), so :func:`mux_core.errors.describe_connection_error`
    tells it in words. When the certificate names another host, the names
    it is for are attached first (see :func:`certificate_names`): the detail
    then reads "hostname mismatch: the certificate is for trainer.example,
    not 10.0.0.5" rather than only what it is not for.
    """
    import trio

    tls_stream = trio.SSLStream(stream, context, server_hostname=host, https_compatible=True)
    try:
        await tls_stream.do_handshake()
    except BaseException as exc:
        await trio.aclose_forcefully(stream)
        mismatch = _name_mismatch(exc)
        if mismatch is not None:
            names = await certificate_names(host, port, context)
            if names:
                mismatch.certificate_names = names  # type: ignore[attr-defined]
        raise
    return tls_stream


def _name_mismatch(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    import ssl

    error: BaseException | None = exc
    for _ in range(8):
        if error is None:
            return None
        if isinstance(error, ssl.SSLCertVerificationError):
            return error if error.verify_code in _NAME_MISMATCH else None
        error = error.__cause__ or error.__context__
    return None


async def certificate_names(host: str, port: int, context: ssl.SSLContext) -> tuple[str, ...]:
    """The names (DNS names, IP addresses) the certificate of ``host``:``port`` is for.

    Read over a second connection whose handshake checks the chain against
    the CAs ``context`` holds but not the name -- Python decodes a peer's
    certificate only once it is verified -- within two seconds. Empty when
    that fails (the CAs come from a directory read on demand, the server is
    gone): the detail then names only the host that did not match.
    """
    import ssl

    import trio

    cas = context.get_ca_certs(binary_form=True)
    if not cas:
        return ()
    check = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    check.check_hostname = False
    check.verify_mode = ssl.CERT_REQUIRED
    check.load_verify_locations(cadata=b"".join(cas))
    with trio.move_on_after(_NAMES_TIMEOUT):
        try:
            tcp = await trio.open_tcp_stream(host, port)
        except OSError:
            return ()
        tls_stream = trio.SSLStream(tcp, check, server_hostname=host)
        try:
            await tls_stream.do_handshake()
            peer = tls_stream.getpeercert()
        except (trio.BrokenResourceError, OSError):
            return ()
        finally:
            await trio.aclose_forcefully(tls_stream)
        names = [value for _kind, value in (peer or {}).get("subjectAltName", ())]
        return tuple(dict.fromkeys(str(name) for name in names))[:8]
    return ()
