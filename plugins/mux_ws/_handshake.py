"""Opening a WebSocket connection: TCP, TLS, then the HTTP upgrade.

The upgrade is websockets' sans-I/O :class:`~websockets.client.ClientProtocol`
(it builds the request and checks a ``101`` answer: ``Sec-WebSocket-Accept``,
``Upgrade``, ``Connection``, extensions), but the answer's head is read here
first: websockets would read the body of any other answer up to its 1 MiB
limit (an endless ``200`` body held the old transport until its timeout),
while a status alone is enough to decide. So nothing of a non-101 answer
beyond its head is read, and the protocol only ever sees a 101 head followed
by frames.

Every failure is a :class:`~mux_core.errors.SessionError` whose detail is a
sentence a person reads -- never a library's class name or wording::

    refused, reset, DNS, TLS, timeout, garbage, a bad 101  -> ServerUnavailable (retry)
    5xx, 408, 429 (Retry-After kept)                       -> ServerUnavailable (retry)
    other 4xx, 1xx/2xx other than 101, 3xx, a bad URL      -> Failed (terminal)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import attrs

from mux_core import __version__
from mux_core.errors import Failed, ServerUnavailable, SessionError, describe_connection_error

# trio, ssl and websockets are imported where a connection needs them: loading
# the plugin (every mux command does) and checking its options (mux check) pay
# for none of them.
if TYPE_CHECKING:
    import ssl

    import trio
    from websockets.client import ClientProtocol
    from websockets.uri import WebSocketURI

__all__ = [
    "MAX_HEAD_BYTES",
    "Target",
    "handshake",
    "open_stream",
    "parse_target",
    "preview",
    "url_problem",
]

#: The largest response head (status line and headers) read before giving up.
MAX_HEAD_BYTES = 64 * 1024
#: Bytes asked of the socket per read.
READ_SIZE = 65536
#: Handshake answers worth retrying besides 5xx.
_RETRY_STATUSES = frozenset({408, 429})
#: Request headers the handshake itself sets: a config may not replace them.
_HANDSHAKE_HEADERS = frozenset(
    {
        "upgrade",
        "connection",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-accept",
        "content-length",
        "transfer-encoding",
    }
)
#: Sent unless the config sets them.
_DEFAULT_HEADERS = (("User-Agent", f"mux/{__version__}"),)


@attrs.frozen
class Target:
    """Where to connect, from the URL: ``uri`` carries host, port, resource and TLS."""

    uri: WebSocketURI

    @property
    def host(self) -> str:
        return self.uri.host

    @property
    def port(self) -> int:
        return self.uri.port

    @property
    def tls(self) -> bool:
        return self.uri.secure


#: A URL :func:`url_problem` passes without websockets: ws(s), a host of
#: letters, digits and ``-._~`` (no user info, no ``[IPv6]``), an optional port
#: of digits (at most 65535, checked apart), then anything but a fragment (all
#: ASCII). websockets' ``parse_uri`` accepts every such URL; it parses the others.
_PLAIN_URL = re.compile(r"(?i:wss?)://[A-Za-z0-9._~-]+(?::([0-9]*))?(?:[/?][^#]*)?")


def url_problem(url: str) -> str:
    """Why ``url`` cannot be connected to, or "" when it can (no I/O)."""
    bad = [c for c in url if ord(c) < 0x21 or ord(c) == 0x7F]
    if bad:
        what = "a space" if bad[0] == " " else f"the control character {bad[0]!r}"
        return f"url: {url!r} contains {what}; percent-encode it (a space is %20)"
    if not url.lower().startswith(("ws://", "wss://")):
        return f"url: {url!r} must start with ws:// or wss://"
    plain = _PLAIN_URL.fullmatch(url) if url.isascii() else None
    if plain is not None and int(plain.group(1) or 0) <= 65535:
        return ""
    from websockets.uri import parse_uri

    try:
        if not urlsplit(url).hostname:
            return f"url: {url!r} has no host"
        uri = parse_uri(url)
    except Exception as exc:  # websockets raises InvalidURI, ValueError, ...
        return f"url: invalid URL {url!r}: {_cause(exc)}"
    if not uri.host:
        return f"url: {url!r} has no host"
    return ""


def _cause(exc: BaseException) -> str:
    msg = getattr(exc, "msg", None)
    return str(msg if isinstance(msg, str) else exc)


def options_problem(url: str, headers: Mapping[str, str]) -> str:
    """Why these options cannot work, or "": for ``check()`` and each session."""
    from mux_core.http import headers_problem

    problem = url_problem(url) or headers_problem(headers)
    if problem:
        return problem
    for name in headers:
        if name.lower() in _HANDSHAKE_HEADERS:
            return f"headers: {name!r} is set by the WebSocket handshake itself; remove it"
    return ""


def parse_target(url: str) -> Target:
    """The :class:`Target` of a URL that passed :func:`url_problem`."""
    from websockets.uri import parse_uri

    problem = url_problem(url)
    if problem:
        raise ValueError(problem)
    return Target(parse_uri(url))


def new_protocol(
    target: Target, headers: Mapping[str, str], max_size: int, *, deflate: bool = False
) -> ClientProtocol:
    """A client protocol whose handshake request (with ``headers``) is queued to send.

    No extension is offered unless ``deflate``: then permessage-deflate, and
    websockets inflates each message with ``max_size`` as its bound (a small
    frame that would inflate to gigabytes fails at ``max_size``, 1009). A
    ``Sec-WebSocket-Protocol`` header becomes the subprotocols offered, so
    the server may pick one.
    """
    from websockets.client import ClientProtocol
    from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
    from websockets.typing import Subprotocol

    offered: list[Subprotocol] | None = None
    for name, value in headers.items():
        if name.lower() == "sec-websocket-protocol":
            offered = [Subprotocol(p.strip()) for p in value.split(",") if p.strip()]
    extensions = [ClientPerMessageDeflateFactory()] if deflate else None
    protocol = ClientProtocol(
        target.uri, subprotocols=offered, extensions=extensions, max_size=max_size
    )
    request = protocol.connect()
    given = {name.lower() for name in headers}
    for name, value in _DEFAULT_HEADERS:
        if name.lower() not in given:
            request.headers[name] = value
    for name, value in headers.items():
        if name.lower() == "sec-websocket-protocol":
            continue
        if name in request.headers:  # Host, Authorization from the URL, ...
            del request.headers[name]
        request.headers[name] = value
    protocol.send_request(request)
    return protocol


async def open_stream(target: Target, tls: ssl.SSLContext | None) -> trio.abc.Stream:
    """A TCP connection (with a finished TLS handshake for wss://).

    Raises ServerUnavailable; the caller bounds the time.
    """
    import trio

    try:
        stream: trio.abc.Stream = await trio.open_tcp_stream(target.host, target.port)
    except OSError as exc:
        raise ServerUnavailable(describe_connection_error(exc) or "connection failed") from None
    if not target.tls:
        return stream
    assert tls is not None, "wss:// needs a TLS context"
    from mux_core.http import start_tls

    try:
        return await start_tls(stream, tls, target.host, target.port)
    except (trio.BrokenResourceError, OSError) as exc:  # start_tls closed the stream
        raise ServerUnavailable(_tls_detail(exc)) from None


def _tls_detail(exc: BaseException) -> str:
    """Why the TLS handshake failed: mux's words for every TLS client
    ("TLS certificate verify failed: unknown issuer ..."), or what broke."""
    reason = describe_connection_error(exc)
    if reason is None:
        return "TLS handshake failed"
    return reason if "TLS" in reason else f"{reason} during the TLS handshake"


class HandshakeProgress:
    """What the handshake got to, for the detail when time runs out."""

    def __init__(self) -> None:
        self.request_sent = False
        self.received = 0


async def handshake(
    stream: trio.abc.Stream, protocol: ClientProtocol, progress: HandshakeProgress
) -> bytes:
    """Send the upgrade request and read the answer; the bytes read after its head.

    On return the protocol is OPEN; the bytes returned (possibly none) are the
    start of the first frames, not yet given to the protocol. Raises a
    SessionError for anything but a valid 101.
    """
    import trio
    from websockets.protocol import OPEN

    try:
        await stream.send_all(b"".join(protocol.data_to_send()))
        progress.request_sent = True
        buffer = bytearray()
        while True:
            data = await stream.receive_some(READ_SIZE)
            if not data:
                raise ServerUnavailable(_closed_early(buffer))
            buffer += data
            progress.received = len(buffer)
            if len(buffer) >= 5 and not buffer.startswith(b"HTTP/"):
                raise ServerUnavailable(_not_http(buffer))
            end = _head_end(buffer)
            if end < 0:
                if len(buffer) > MAX_HEAD_BYTES:
                    raise ServerUnavailable(
                        f"the handshake answer's headers exceed {MAX_HEAD_BYTES // 1024} KiB"
                    )
                continue
            status, headers = _read_head(bytes(buffer[:end]))
            if status != 101:
                raise _rejected(status, headers)
            break
    except (trio.BrokenResourceError, OSError) as exc:
        reason = describe_connection_error(exc) or "connection lost"
        raise ServerUnavailable(f"{reason} during the handshake") from None
    protocol.receive_data(bytes(buffer[:end]))
    protocol.events_received()  # the 101 response
    if protocol.handshake_exc is not None or protocol.state is not OPEN:
        raise ServerUnavailable(_bad_upgrade(protocol.handshake_exc))
    return bytes(buffer[end:])


def _head_end(buffer: bytearray) -> int:
    end = buffer.find(b"\r\n\r\n")
    if end >= 0:
        return end + 4
    end = buffer.find(b"\n\n")  # a server that forgets the CRs: reported below
    return end + 2 if end >= 0 else -1


def _read_head(head: bytes) -> tuple[int, dict[str, str]]:
    """Status and headers (lowercase names) of a response head; garbage raises."""
    lines = head.decode("latin-1").split("\n")
    parts = lines[0].rstrip("\r").split(" ", 2)
    if (
        len(parts) < 2
        or parts[0] not in ("HTTP/1.1", "HTTP/1.0")
        or not (parts[1].isascii() and parts[1].isdigit() and len(parts[1]) == 3)
    ):
        raise ServerUnavailable(_not_http(head))
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.rstrip("\r").partition(":")
        if sep:
            key = name.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return int(parts[1]), headers


def _rejected(status: int, headers: Mapping[str, str]) -> SessionError:
    detail = f"handshake rejected: HTTP {status}"
    if status >= 500 or status in _RETRY_STATUSES:
        from mux_core.http import parse_retry_after

        return ServerUnavailable(detail, retry_after=parse_retry_after(headers.get("retry-after")))
    if 300 <= status < 400:
        location = preview(headers.get("location", "").encode("latin-1"), 200)
        to = f" to {location}" if location else ""
        return Failed(
            f"the handshake was answered with a redirect (HTTP {status}{to}); mux does not"
            " follow WebSocket redirects: put the final URL in the config"
        )
    if status < 400:
        return Failed(
            f"not a WebSocket endpoint: the handshake was answered HTTP {status}"
            " instead of 101 Switching Protocols"
        )
    return Failed(detail)


def _bad_upgrade(exc: BaseException | None) -> str:
    from websockets.exceptions import (
        InvalidHeader,
        InvalidHeaderValue,
        InvalidMessage,
        InvalidUpgrade,
        NegotiationError,
    )

    why = "it did not complete"
    if isinstance(exc, InvalidHeaderValue) and exc.name == "Sec-WebSocket-Accept":
        why = "its Sec-WebSocket-Accept does not match the key mux sent"
    elif isinstance(exc, InvalidHeader) and exc.value is None:
        why = f"it has no {exc.name} header"
    elif isinstance(exc, InvalidUpgrade | InvalidHeader):
        why = f"its {exc.name} header is {preview((exc.value or '').encode('latin-1'), 60)}"
    elif isinstance(exc, NegotiationError):
        why = f"it turns on an extension or subprotocol mux did not offer ({exc})"
    elif isinstance(exc, InvalidMessage):
        cause = exc.__cause__
        why = f"its head is not valid HTTP/1.1 ({cause})" if cause else "its head is not valid"
    elif exc is not None:
        why = str(exc) or why
    return f"the server's 101 answer is not a valid WebSocket upgrade: {why}"


def _closed_early(buffer: bytearray) -> str:
    if not buffer:
        return "connection closed during the handshake (no answer)"
    return f"connection closed during the handshake ({len(buffer)} bytes of an answer)"


def _not_http(data: bytes | bytearray) -> str:
    return f"the server did not answer the handshake with HTTP (it sent {preview(data, 40)})"


def preview(data: bytes | bytearray, limit: int = 80) -> str:
    """The start of some bytes as a quoted, printable string (for details)."""
    text = bytes(data[:limit]).decode("utf-8", "replace")
    shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
    more = "..." if len(data) > limit else ""
    return f'"{shown}{more}"'
