"""The framing of an HTTP/1.1 response body, undone incrementally (RFC 9112 6-7).

h11 parses the response head; the body is read here instead, because an
event stream's body is where all the time goes: h11 turns every read into
an event object and walks its state machine, which cost an event ~20 µs of
latency. These readers take a read and return the payload bytes in it --
usually the read itself, or one slice of it.

Three framings, chosen from the head as RFC 9112 6.3 says:

* :class:`ChunkedBody` -- ``Transfer-Encoding: chunked`` (what most servers
  use for a stream);
* :class:`LengthBody` -- ``Content-Length``;
* :class:`CloseDelimitedBody` -- neither: the body runs until the server closes.

A broken body never costs the good bytes before the break: a reader that
finds garbage in the middle of a read returns the payload before it and
keeps the error in ``failed``, for the caller to raise before its next
read. :class:`Decoder` undoes gzip / deflate with a bound on its output.

Errors are :class:`ProtocolError` with a sentence a user can read (the
Status detail), never a library's or a codec's message.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Protocol

__all__ = [
    "BodyReader",
    "ChunkedBody",
    "CloseDelimitedBody",
    "Decoder",
    "LengthBody",
    "ProtocolError",
    "body_reader",
    "size_text",
]

#: A chunk-size or trailer line longer than this is a broken server.
_MAX_LINE = 4096
_HEX = frozenset(b"0123456789abcdefABCDEF")
_BROKEN_CHUNKED = "the server sent a malformed chunked body"


class ProtocolError(Exception):
    """The server did not speak HTTP/1.1 (garbage, a truncated head or body)."""


def size_text(size: int) -> str:
    """``65536`` -> ``"64 KiB"``: a byte count as a person reads it."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} bytes"


class BodyReader(Protocol):
    #: True once the body is complete; later bytes are ignored.
    done: bool
    #: The framing broke after good payload bytes were returned: raise this
    #: before reading on (None while the body is sound).
    failed: ProtocolError | None

    def feed(self, data: bytes) -> bytes:
        """The payload bytes in ``data`` (maybe ``b""``: only framing arrived)."""
        ...

    def end(self) -> None:
        """The connection closed: raise ProtocolError if the body was cut short."""
        ...


def body_reader(headers: Mapping[str, str]) -> BodyReader:
    """The reader for a response with these (lowercase-named) headers."""
    transfer = headers.get("transfer-encoding")
    if transfer is not None:
        codings = [c.strip().lower() for c in transfer.split(",")]
        if codings[-1] == "chunked":
            return ChunkedBody()
        return CloseDelimitedBody()
    length = headers.get("content-length")
    if length is not None:
        text = length.split(",")[0].strip()  # repeated identical values are allowed
        if not (text.isascii() and text.isdigit()):
            raise ProtocolError("the server sent an invalid Content-Length")
        return LengthBody(int(text))
    return CloseDelimitedBody()


class CloseDelimitedBody:
    """A body that ends when the connection does."""

    failed: ProtocolError | None = None

    def __init__(self) -> None:
        self.done = False

    def feed(self, data: bytes) -> bytes:
        return data

    def end(self) -> None:
        self.done = True


class LengthBody:
    """A body of exactly ``Content-Length`` bytes."""

    failed: ProtocolError | None = None

    def __init__(self, length: int) -> None:
        self.remaining = length
        self.done = length == 0

    def feed(self, data: bytes) -> bytes:
        if len(data) >= self.remaining:
            data = data[: self.remaining]
            self.done = True
        self.remaining -= len(data)
        return data

    def end(self) -> None:
        if not self.done:
            raise ProtocolError(f"connection closed with {self.remaining} bytes of the body unsent")


class ChunkedBody:
    """``Transfer-Encoding: chunked``: size line, data, CRLF ... ``0``, trailers, CRLF.

    Lenient where RFC 9112 allows it (a bare LF ends a line; chunk extensions
    and trailer fields are ignored), strict where a wrong guess would corrupt
    the stream (a size that is not hex, data not followed by a line end).
    """

    def __init__(self) -> None:
        self.done = False
        self.failed: ProtocolError | None = None
        #: Bytes of chunk data still to come in the current chunk.
        self._remaining = 0
        #: The start of a line whose end has not arrived yet.
        self._line = b""
        #: The next line is the empty one that ends a chunk's data.
        self._data_ended = False
        #: After the last chunk: reading trailer lines up to an empty one.
        self._trailers = False

    def feed(self, data: bytes) -> bytes:
        """The chunk data in ``data``; on broken framing, the data before the
        break (the error kept in ``failed``), or ProtocolError when there is none."""
        if self.failed is not None:
            raise self.failed
        out: list[bytes] = []
        start, size = 0, len(data)
        try:  # one loop, no call per read: this is every SSE read's path
            while start < size and not self.done:
                if self._remaining:
                    end = min(size, start + self._remaining)
                    out.append(data if (start == 0 and end == size) else data[start:end])
                    self._remaining -= end - start
                    start = end
                    self._data_ended = self._remaining == 0
                    continue
                newline = data.find(b"\n", start)
                if newline < 0:
                    self._line += data[start:]
                    if len(self._line) > _MAX_LINE:
                        raise ProtocolError(_BROKEN_CHUNKED + " (a line without end)")
                    break
                line = data[start:newline]
                if self._line:
                    line, self._line = self._line + line, b""
                    if len(line) > _MAX_LINE:
                        raise ProtocolError(_BROKEN_CHUNKED + " (a line without end)")
                start = newline + 1
                self._on_line(line[:-1] if line.endswith(b"\r") else line)
        except ProtocolError as exc:
            if not out:
                raise
            self.failed = exc
        if len(out) == 1:
            return out[0]
        return b"".join(out)

    def end(self) -> None:
        if not self.done:
            raise ProtocolError("connection closed in the middle of a chunked body")

    def _on_line(self, line: bytes) -> None:
        if self._data_ended:
            if line:
                raise ProtocolError(_BROKEN_CHUNKED + " (chunk data longer than its size)")
            self._data_ended = False
        elif self._trailers:
            self.done = not line
        else:
            text = line.split(b";", 1)[0].strip(b" \t")
            if not text or not _HEX.issuperset(text) or len(text) > 16:
                raise ProtocolError(_BROKEN_CHUNKED + " (a chunk size that is not a hex number)")
            self._remaining = int(text, 16)
            self._trailers = self._remaining == 0


#: The Content-Encoding names :class:`Decoder` undoes.
DECODABLE = frozenset({"gzip", "x-gzip", "deflate"})


class Decoder:
    """``Content-Encoding: gzip`` or ``deflate`` undone piece by piece, with
    a bound on each piece's output: a few KiB of compression bomb cannot
    become gigabytes in memory at once.

    :meth:`decompress` returns at most ``limit`` bytes and keeps the input it
    did not get to in :attr:`pending`, to be passed to the next call.
    ``deflate`` is zlib-wrapped per RFC 9110, but raw deflate (what some
    servers send) is accepted too, as httpx and browsers do.
    """

    def __init__(self, coding: str) -> None:
        #: "gzip" or "deflate", for the error message.
        self.coding = "gzip" if coding == "x-gzip" else coding
        # MAX_WBITS | 32: a gzip or a zlib header, whichever comes.
        self._zlib = zlib.decompressobj(zlib.MAX_WBITS | 32)
        self._started = False

    @property
    def pending(self) -> bytes:
        """Input not decompressed yet because the last call reached its limit."""
        return self._zlib.unconsumed_tail

    @property
    def eof(self) -> bool:
        """True once the compressed stream has ended."""
        return self._zlib.eof

    def decompress(self, data: bytes, limit: int) -> bytes:
        """Up to ``limit`` (> 0) bytes of output from ``data``; ProtocolError when
        ``data`` is not what the coding says."""
        try:
            out = self._zlib.decompress(data, limit)
        except zlib.error as exc:
            if self.coding != "deflate" or self._started:
                raise ProtocolError(f"the server sent an unreadable {self.coding} body") from exc
            self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, no header
            self._started = True
            return self.decompress(data, limit)
        if out:
            self._started = True
        return out
