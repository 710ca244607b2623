"""The frames of a read: the common ones cut out directly, the rest through websockets.

websockets' ``ClientProtocol`` parses each frame with a chain of generators,
an enum lookup and a dataclass: ~3.5 µs a frame on this 2-core machine
(280k frames/s, benchmarks/bench_ws_throughput.py), half of what the whole
of ``mux run`` may spend per message at the 150k msg/s target. Nearly every
frame a stream sends is the simplest kind -- one final, unmasked, unextended
text or binary frame holding a whole message -- and for those the protocol
does nothing but hand the payload back. :class:`FrameSplitter` cuts such
frames out of the read itself (~0.9 µs each, 1.1M frames/s in the same
measurement) and passes every other frame
(ping, pong, close, fragments, reserved bits, a masked or oversized frame,
anything unknown), and everything once the connection is no longer open, to
the protocol, complete and in order. The protocol therefore always sees
whole frames at frame boundaries, and its state is what it would have been
had it parsed everything: a simple data frame changes nothing in it.

Limits hold as in the protocol: a frame longer than ``max_size`` is handed
to the protocol from its header (which refuses it before reading the
payload), and a frame longer than :data:`_SMALL_FRAME` is streamed into the
protocol's buffer as it arrives instead of being re-joined per read.
"""

from __future__ import annotations

from typing import Any

from websockets.client import ClientProtocol
from websockets.protocol import OPEN

__all__ = ["FrameSplitter"]

#: Frames up to this size (header included) are cut out by the splitter; larger
#: ones go to the protocol, whose buffer grows in place (joining a partial frame
#: with each new read would copy a large message once per read).
_SMALL_FRAME = 65536


class FrameSplitter:
    """Splits the bytes of each read into messages (``bytes``) and protocol events."""

    def __init__(
        self, protocol: ClientProtocol, max_size: int, *, small_frame: int = _SMALL_FRAME
    ) -> None:
        self.protocol = protocol
        self.max_size = max_size
        #: Frames up to this size are cut out here (a parameter for the tests).
        self.small_frame = small_frame
        #: Bytes of an incomplete small frame, kept until the next read.
        self._pending = b""
        #: Bytes of a large frame the protocol is still reading.
        self._owed = 0
        #: True while a fragmented message is open: its frames go to the protocol.
        self.in_fragments = False

    def feed(self, data: bytes) -> list[Any]:
        """The complete items of ``data``, in order: a ``bytes`` per simple message,
        websockets' events (frames) for everything the protocol parsed."""
        protocol = self.protocol
        out: list[Any] = []
        if self._owed:
            take = min(self._owed, len(data))
            self._owed -= take
            self._to_protocol(data[:take], out)
            if self._owed:
                return out
            data = data[take:]
        if self._pending:
            data = self._pending + data
            self._pending = b""
        if protocol.state is not OPEN:
            self._to_protocol(data, out)
            return out
        append = out.append
        max_size = self.max_size
        small_frame = self.small_frame
        size = len(data)
        pos = 0
        slow = -1  # start of a run of frames for the protocol
        while pos + 2 <= size:
            b0 = data[pos]
            b1 = data[pos + 1]
            if b1 < 126:
                head, length = 2, b1
            elif b1 == 126:
                if pos + 4 > size:
                    break
                head, length = 4, (data[pos + 2] << 8) | data[pos + 3]
            elif b1 == 127:
                if pos + 10 > size:
                    break
                head, length = 10, int.from_bytes(data[pos + 2 : pos + 10], "big")
            else:
                head, length = 2, -1  # masked: the protocol refuses it
            if length < 0 or length > max_size:
                # Refused from its header: the protocol fails the connection, and
                # takes everything from here on.
                self._to_protocol(data[pos if slow < 0 else slow :], out)
                return out
            end = pos + head + length
            if (b0 == 0x81 or b0 == 0x82) and not self.in_fragments and end - pos <= small_frame:
                if end > size:
                    break
                if slow >= 0:
                    self._to_protocol(data[slow:pos], out)
                    slow = -1
                    if protocol.state is not OPEN:
                        self._to_protocol(data[pos:], out)
                        return out
                append(data[pos + head : end])
            else:
                if slow < 0:
                    slow = pos
                opcode = b0 & 0x0F
                if opcode == 0x1 or opcode == 0x2:
                    self.in_fragments = not b0 & 0x80
                elif opcode == 0x0 and b0 & 0x80:
                    self.in_fragments = False
                if end > size:
                    # Large or not ours: the protocol buffers it as it arrives.
                    self._to_protocol(data[slow:], out)
                    self._owed = end - size
                    return out
            pos = end
        # Stopped at an incomplete header or an incomplete simple frame.
        if slow >= 0:
            self._to_protocol(data[slow:pos], out)
            if protocol.state is not OPEN:
                self._to_protocol(data[pos:], out)
                return out
        self._pending = data[pos:]
        return out

    def _to_protocol(self, data: bytes, out: list[Any]) -> None:
        if not data:
            return
        protocol = self.protocol
        protocol.receive_data(data)
        out.extend(protocol.events_received())
