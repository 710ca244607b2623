"""The NATS client protocol without I/O: bytes in, frames out; commands as bytes.

:class:`Parser` takes whatever a read returned and gives the whole frames
in it -- ``INFO``, ``MSG``, ``HMSG``, ``PING``, ``PONG``, ``+OK``, ``-ERR``
-- keeping a partial frame for the next read. Everything the server sends
is bounded: a control line longer than ``max_line`` or a message larger
than ``max_payload`` is a :class:`ProtocolError`, as is anything that is not
NATS. The error's text says what arrived (escaped), ready for a Status
detail. The command builders (:func:`connect`, :func:`sub`, :func:`pub`,
...) return the bytes to send.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

__all__ = [
    "PING",
    "PONG",
    "Err",
    "Frame",
    "Info",
    "Msg",
    "Ok",
    "Parser",
    "Ping",
    "Pong",
    "ProtocolError",
    "connect",
    "pub",
    "shown",
    "status_of",
    "sub",
]

#: The longest control line accepted: an INFO of a large cluster fits many times.
MAX_LINE = 64 * 1024

PING = b"PING\r\n"
PONG = b"PONG\r\n"


class ProtocolError(Exception):
    """The server sent something that is not the NATS protocol, or too much of it."""


@attrs.frozen
class Info:
    """``INFO {...}``: the server's description (max_payload, auth_required, ...)."""

    fields: dict[str, Any]


@attrs.frozen
class Msg:
    """``MSG`` or ``HMSG``: one message on subscription ``sid``."""

    subject: str
    sid: str
    reply: str | None
    #: The raw header block of an HMSG (``NATS/1.0 ...``), b"" for a MSG.
    headers: bytes
    payload: bytes


@attrs.frozen
class Ping:
    """``PING``: the server checks that the client is alive (answer PONG)."""


@attrs.frozen
class Pong:
    """``PONG``: the answer to the client's PING."""


@attrs.frozen
class Ok:
    """``+OK``: only sent in verbose mode, which this client does not ask for."""


@attrs.frozen
class Err:
    """``-ERR 'message'``: the server's error text, quotes removed."""

    message: str


Frame = Info | Msg | Ping | Pong | Ok | Err


def shown(data: bytes | str, limit: int = 60) -> str:
    """Server bytes as a short, escaped, printable text for a detail."""
    text = repr(data[:limit])
    return text + ("..." if len(data) > limit else "")


@attrs.define
class _Head:
    """A MSG / HMSG line whose payload has not arrived yet."""

    subject: str
    sid: str
    reply: str | None
    header_size: int
    total: int


class Parser:
    """Frames from the bytes a NATS server sends, read by read."""

    def __init__(self, *, max_payload: int, max_line: int = MAX_LINE) -> None:
        #: Largest message (headers and payload) accepted; lowered to the
        #: server's own ``max_payload`` once its INFO is known.
        self.max_payload = max_payload
        self.max_line = max_line
        self._buffer = bytearray()
        self._head: _Head | None = None

    def feed(self, data: bytes) -> list[Frame]:
        """The whole frames completed by ``data``, in order."""
        buffer = self._buffer
        buffer += data
        frames: list[Frame] = []
        pos = 0
        while True:
            head = self._head
            if head is not None:
                end = pos + head.total
                if len(buffer) < end + 2:
                    break
                if buffer[end : end + 2] != b"\r\n":
                    raise ProtocolError(f"a message of {head.total} bytes is not followed by CRLF")
                body = bytes(buffer[pos:end])
                split = head.header_size
                frames.append(Msg(head.subject, head.sid, head.reply, body[:split], body[split:]))
                self._head = None
                pos = end + 2
                continue
            eol = buffer.find(b"\n", pos, pos + self.max_line + 2)
            if eol < 0:
                if len(buffer) - pos > self.max_line:
                    raise ProtocolError(
                        f"a line longer than {self.max_line} bytes: {shown(bytes(buffer[pos:]))}"
                    )
                break
            line = bytes(buffer[pos:eol]).rstrip(b"\r")
            pos = eol + 1
            frame = self._line(line)
            if frame is not None:
                frames.append(frame)
        del buffer[:pos]
        return frames

    def _line(self, line: bytes) -> Frame | None:
        op, _, rest = line.partition(b" ")
        op = op.upper()
        if op == b"MSG" or op == b"HMSG":
            self._head = self._message_head(op, rest.split(), line)
            return None
        if op == b"PING":
            return Ping()
        if op == b"PONG":
            return Pong()
        if op == b"+OK":
            return Ok()
        if op == b"-ERR":
            return Err(rest.strip().strip(b"'").decode("utf-8", "replace"))
        if op == b"INFO":
            return Info(_info_fields(rest))
        raise ProtocolError(f"not the NATS protocol: {shown(line)}")

    def _message_head(self, op: bytes, args: list[bytes], line: bytes) -> _Head:
        sizes = 2 if op == b"HMSG" else 1
        if len(args) not in (2 + sizes, 3 + sizes) or not all(a.isdigit() for a in args[-sizes:]):
            raise ProtocolError(f"a malformed {op.decode()} line: {shown(line)}")
        total = int(args[-1])
        header_size = int(args[-2]) if sizes == 2 else 0
        if header_size > total:
            raise ProtocolError(f"a malformed {op.decode()} line: {shown(line)}")
        if total > self.max_payload:
            raise ProtocolError(
                f"a message of {total:,} bytes is over the limit of {self.max_payload:,}"
            )
        try:
            subject, sid = args[0].decode(), args[1].decode()
            reply = args[2].decode() if len(args) == 3 + sizes else None
        except UnicodeDecodeError:
            raise ProtocolError(f"a malformed {op.decode()} line: {shown(line)}") from None
        return _Head(subject, sid, reply, header_size, total)


def _info_fields(text: bytes) -> dict[str, Any]:
    try:
        fields = json.loads(text)
    except ValueError:
        fields = None
    if not isinstance(fields, dict):
        raise ProtocolError(f"an INFO that is not a JSON object: {shown(text)}")
    return fields


def status_of(headers: bytes) -> tuple[int | None, str]:
    """The status of an HMSG header block: ``NATS/1.0 404 No Messages`` -> (404, "No Messages")."""
    first = headers.split(b"\r\n", 1)[0].split(b" ", 2)
    if len(first) < 2 or not first[1].isdigit():
        return None, ""
    description = first[2].decode("utf-8", "replace").strip() if len(first) == 3 else ""
    return int(first[1]), description


def connect(fields: dict[str, Any]) -> bytes:
    """``CONNECT {...}`` followed by a PING: the PONG (or -ERR) tells how it went."""
    return b"CONNECT " + json.dumps(fields, separators=(",", ":")).encode() + b"\r\n" + PING


def sub(subject: str, sid: str, queue: str = "") -> bytes:
    group = f" {queue}" if queue else ""
    return f"SUB {subject}{group} {sid}\r\n".encode()


def pub(subject: str, payload: bytes = b"", reply: str = "") -> bytes:
    to = f" {reply}" if reply else ""
    return f"PUB {subject}{to} {len(payload)}\r\n".encode() + payload + b"\r\n"
