"""Exceptions of mux.

Transports tell the supervisor what happened to a session by raising one of
the :class:`SessionError` subclasses; the supervisor turns each into a state
and decides about retrying, the same way for every transport::

    MuxError
    ├── ConfigError            a user's config is wrong (FILE:LINE, key, why)
    ├── PluginError            a plugin could not be loaded or clashes with another
    └── SessionError           raised by a transport session
        ├── ServerUnavailable  refused, reset, timed out, 5xx/429    -> retry
        ├── Disconnected       an open stream ended or broke          -> retry
        ├── Failed             not worth retrying (401/403/404, ...)  -> terminal
        └── Ended              the server said the stream is over     -> terminal

A session that returns normally is treated as :class:`Disconnected`. Any
other exception escaping a session is a bug in the transport: the source is
reported ``failed`` with the exception in the detail, and the traceback is
logged.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "Disconnected",
    "Ended",
    "Failed",
    "MuxError",
    "PluginError",
    "ServerUnavailable",
    "SessionError",
    "describe_connection_error",
]


class MuxError(Exception):
    """Base class of every exception mux raises on purpose."""


class ConfigError(MuxError):
    """The config file is wrong; ``str()`` is one line ready for the user.

    ``file`` and ``line`` locate the offending key (line is None when the
    problem has no single place, e.g. the file does not exist), ``key`` is the
    dotted key path (``sources[1].interval``).
    """

    def __init__(
        self, message: str, *, file: str | None = None, line: int | None = None, key: str = ""
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.key = key

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        key = f"{self.key}: " if self.key else ""
        return f"{where}{key}{self.message}"


class PluginError(MuxError):
    """A plugin failed to load, or two plugins claim the same name."""


class SessionError(MuxError):
    """Raised by a transport session to say how it ended.

    ``detail`` is the short reason shown in the Status record.
    """

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class _Retryable(SessionError):
    def __init__(self, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        #: Seconds the server asked us to wait (Retry-After), honoured within max_delay.
        self.retry_after = retry_after


class ServerUnavailable(_Retryable):
    """The server could not be reached or refused service for now: retry.

    Connection refused or reset, DNS or connect timeout, HTTP 5xx or 429.
    """


class Disconnected(_Retryable):
    """An open stream ended or broke (EOF, read timeout, missed pong): retry."""


class Failed(SessionError):
    """Retrying cannot help: 401/403/404/410, wrong content type, bad URL."""


class Ended(SessionError):
    """The server said the stream is over (HTTP 204, WS close 1000 with end_on_close)."""


def describe_connection_error(exc: BaseException) -> str | None:
    """A few words for why a connection failed ("connection refused"), or None.

    trio reports a failed connect as an OSError caused by a group holding the
    error of each address tried, and HTTP and WebSocket libraries wrap that
    again; the causes and group members are searched for a kind a user
    recognises. Transports use it for the ``detail`` of ServerUnavailable.

    A failed TLS handshake is told in words, the same for every client
    (docs/architecture.md, Trust): ``TLS certificate verify failed: unknown
    issuer (self-signed or an untrusted CA; trust it with ca_file)``, ``...:
    the certificate has expired``, ``...: hostname mismatch: the certificate
    is not valid for 10.0.0.5``; a server that answers TLS with plain HTTP
    is ``the server does not speak TLS on this port (http:// instead of
    https://?)``.
    """
    # Here, not at the top: every plugin imports this module when it loads
    # (mux --help, mux check), and trio alone takes longer than the rest of it.
    import socket
    import ssl

    import trio

    seen: list[BaseException] = []
    pending: list[BaseException] = [exc]
    while pending and len(seen) < 32:
        error = pending.pop(0)
        if any(error is other for other in seen):
            continue
        seen.append(error)
        if isinstance(error, BaseExceptionGroup):
            pending.extend(error.exceptions)
        pending.extend(e for e in (error.__cause__, error.__context__) if e is not None)
    for error in seen:
        if isinstance(error, ConnectionRefusedError):
            return "connection refused"
        if isinstance(error, ConnectionResetError):
            return "connection reset"
        if isinstance(error, BrokenPipeError | ssl.SSLEOFError):
            return "the server closed the connection"
        if isinstance(error, socket.gaierror):
            return f"DNS lookup failed: {error.strerror or error}"
        if isinstance(error, ssl.SSLError):
            return _tls_words(error)
        if isinstance(error, TimeoutError):
            return "connect timed out"
    for error in seen:
        if isinstance(error, OSError) and error.strerror:
            return error.strerror[0].lower() + error.strerror[1:]  # "no route to host"
        if isinstance(error, trio.BrokenResourceError):
            return "connection lost"
    return None


#: OpenSSL's verify codes (X509_V_ERR_*) and what they mean to a person.
_UNKNOWN_ISSUER = "unknown issuer (self-signed or an untrusted CA; trust it with ca_file)"
_VERIFY_WORDS = {
    2: _UNKNOWN_ISSUER,  # unable to get issuer certificate
    18: _UNKNOWN_ISSUER,  # self-signed certificate
    19: _UNKNOWN_ISSUER,  # self-signed certificate in the chain
    20: _UNKNOWN_ISSUER,  # unable to get local issuer certificate
    21: _UNKNOWN_ISSUER,  # unable to verify the first certificate
    9: "the certificate is not valid yet (is this machine's clock right?)",
    10: "the certificate has expired",
    23: "the certificate has been revoked",
    26: "the certificate is not meant for a server (wrong purpose)",
}
#: OpenSSL's reasons for handshakes that fail before any certificate is judged.
_REASON_WORDS = {
    "WRONG_VERSION_NUMBER": "the server does not speak TLS on this port (http:// instead of https://?)",
    "HTTP_REQUEST": "the server does not speak TLS on this port (http:// instead of https://?)",
    "RECORD_LAYER_FAILURE": "the server does not speak TLS on this port",
    "PACKET_LENGTH_TOO_LONG": "the server does not speak TLS on this port",
    "UNSUPPORTED_PROTOCOL": "the server offers only a TLS version mux does not accept",
    "TLSV1_ALERT_PROTOCOL_VERSION": "the server accepts no TLS version mux offers",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "the TLS handshake failed: no cipher or version in common",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the server requires a client certificate",
}


def _tls_words(error: BaseException) -> str:
    """A failed TLS handshake in a person's words (see describe_connection_error)."""
    import re
    import ssl

    if isinstance(error, ssl.SSLCertVerificationError):
        code = error.verify_code
        message = str(error.verify_message or "")
        if code in (62, 64):  # hostname / IP address mismatch
            match = re.search(r"not valid for '(.*)'", message)
            host = match.group(1) if match else ""
            # What it is for, when mux_core.http.start_tls could find out.
            names = ", ".join(getattr(error, "certificate_names", ()))
            if names and host:
                why = f"the certificate is for {names}, not {host}"
            else:
                why = f"the certificate is not valid for {host}" if host else message
            return f"TLS certificate verify failed: hostname mismatch: {why}"
        words = _VERIFY_WORDS.get(code) or message.rstrip(".") or "rejected"
        return f"TLS certificate verify failed: {words}"
    reason = getattr(error, "reason", None)
    if reason in _REASON_WORDS:
        return _REASON_WORDS[reason]
    return f"TLS error: {reason or error}"
