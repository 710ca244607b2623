"""Scripted conversations: what a fake TCP server says and expects, step by step.

Many protocols have the server speak first -- NATS greets with ``INFO {...}``,
SMTP with ``220``, a Redis-like server answers ``HELLO`` -- and then wait
for the client's reply before anything streams. A :class:`Conversation` is
that exchange, played on one connection of :func:`serve_tcp`::

    server.script(
        Conversation(
            Send(b'INFO {"server_id":"fake"}\\r\\n'),   # speak first
            Expect(b"CONNECT"),                      # then wait for the client's CONNECT
            Expect(re.compile(rb"SUB \\S+ 1\\r\\n")),   # and its subscription
            Send(b"MSG updates 1 5\\r\\nhello\\r\\n"),    # then send
            Stall(),                                 # and fall silent, still reading
        )
    )

Steps, in order:

* :class:`Send` ``(data)`` -- send these bytes now;
* :class:`Expect` ``(pattern, timeout=10.0)`` -- wait until the client has
  sent something matching; what it matched, and everything before it, is
  consumed, so the next ``Expect`` looks at what came after. A client that
  sends nothing matching within ``timeout`` seconds, or closes first, fails
  the conversation: the server closes the connection and records a
  :class:`Mismatch` (``server.mismatches``, also logged as a warning);
* :class:`Pause` ``(seconds)`` -- send nothing for a while (still reading).

The last step may end the connection the way a fault does -- :class:`Stall`
(silent, still reading), :class:`Drop` ``(after=n)`` (stream ``n`` lines,
then close), :class:`Close` (close now), :class:`Raw` ``(data, close=True)``,
:class:`Garbage` ``(data)`` (send, then stream) or :class:`Reset` (abort
with a TCP RST). Without one the connection streams the server's lines
normally once the conversation is over.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import TypeAlias

import attrs
import trio

from ._hostile import Pause, Reset, Send
from ._http import Close, Drop, Raw, Stall
from ._ws import Garbage

__all__ = [
    "Conversation",
    "ConversationStep",
    "Expect",
    "Inbox",
    "Mismatch",
    "Unmet",
    "log_mismatch",
    "play",
]

#: An Expect waiting longer than this for a match fails (a flooding client).
_MAX_UNCONSUMED = 16 * 1024 * 1024
#: How much of the unconsumed input a Mismatch keeps, for its message.
_SHOWN = 1024

_log = logging.getLogger("mux.testing")

Pattern: TypeAlias = bytes | re.Pattern[bytes] | Callable[[bytes], bool]


@attrs.frozen
class Expect:
    """Wait until the client has sent something matching ``pattern``.

    ``pattern`` is looked for in what the client sent that no earlier step
    consumed: ``bytes`` anywhere in it (``Expect(b"CONNECT")``), a compiled
    ``re.Pattern[bytes]`` by ``search``, or a function ``pattern(data) ->
    bool`` called with all of it (True consumes all of it). A match consumes
    everything up to its end. Nothing matching within ``timeout`` seconds,
    or the client closing first, fails the conversation (:class:`Mismatch`).
    """

    pattern: Pattern
    timeout: float = 10.0

    def end_of_match(self, data: bytes) -> int | None:
        """Where the first match ends in ``data``; None when nothing matches yet."""
        pattern = self.pattern
        if isinstance(pattern, bytes):
            start = data.find(pattern)
            return None if start < 0 else start + len(pattern)
        if isinstance(pattern, re.Pattern):
            found = pattern.search(data)
            return None if found is None else found.end()
        return len(data) if pattern(data) else None


#: A final step that ends the conversation the way a fault does.
Ending: TypeAlias = Stall | Drop | Close | Raw | Garbage | Reset
#: What a :class:`Conversation` is made of.
ConversationStep: TypeAlias = Send | Expect | Pause | Ending

_STEPS = (Send, Expect, Pause)
_ENDINGS = (Stall, Drop, Close, Raw, Garbage, Reset)


@attrs.frozen(init=False)
class Conversation:
    """One connection's exchange, step by step: see the module docstring.

    ``Conversation(Send(b"220 ready\\r\\n"), Expect(b"HELO"), Send(b"250 ok\\r\\n"))``.
    A fault (:class:`Stall`, :class:`Drop`, :class:`Close`, :class:`Raw`,
    :class:`Garbage`, :class:`Reset`) may only be the last step.
    """

    steps: tuple[ConversationStep, ...]

    def __init__(self, *steps: ConversationStep) -> None:
        for index, step in enumerate(steps):
            last = index == len(steps) - 1
            if isinstance(step, _ENDINGS) and not last:
                raise ValueError(
                    f"{step!r} ends the connection, so it can only be a conversation's "
                    f"last step (it is step {index + 1} of {len(steps)})"
                )
            if not isinstance(step, _STEPS + _ENDINGS):
                raise TypeError(
                    f"{step!r} is not a conversation step; use Send, Expect, Pause, and as "
                    "the last step Stall, Drop, Close, Raw, Garbage or Reset"
                )
        self.__attrs_init__(tuple(steps))


@attrs.frozen
class Mismatch:
    """An :class:`Expect` the client did not meet; the connection was closed."""

    #: Which connection: 1 is the first the server accepted (across restarts).
    connection: int
    #: Which step of its conversation, counting from 1.
    step: int
    expected: Expect
    #: Why: nothing matched in time, or the client closed first.
    reason: str
    #: What the client had sent that no step consumed (its first KiB).
    unconsumed: bytes

    def __str__(self) -> str:
        return (
            f"connection {self.connection}, step {self.step} {self.expected!r}: "
            f"{self.reason}; the client's unconsumed input was {self.unconsumed!r}"
        )


class Unmet(Exception):
    """Raised by :func:`play` when an :class:`Expect` was not met."""

    def __init__(self, step: int, expected: Expect, reason: str, unconsumed: bytes) -> None:
        super().__init__(reason)
        self.step, self.expected, self.reason = step, expected, reason
        self.unconsumed = unconsumed

    def mismatch(self, connection: int) -> Mismatch:
        return Mismatch(connection, self.step, self.expected, self.reason, self.unconsumed)


class Inbox:
    """What one client sent that no step has consumed yet.

    The connection's reader :meth:`feed` s it; a conversation's ``Expect``
    and a server's ``hello`` consume from the front. Once nobody needs it
    (:meth:`stop`), it keeps nothing more.
    """

    def __init__(self) -> None:
        self.data = bytearray()
        #: True once the client closed its side.
        self.closed = False
        self._keeping = True
        self._changed = trio.Event()

    def feed(self, data: bytes) -> None:
        if self._keeping:
            self.data += data
            self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def stop(self) -> None:
        """Keep nothing more: every step that reads is done."""
        self._keeping = False
        self.data.clear()

    async def changed(self) -> None:
        await self._changed.wait()

    async def line(self) -> bytes | None:
        """The next complete line (without its ``\\n``), consumed; None if the client closed."""
        while (end := self.data.find(b"\n")) < 0:
            if self.closed:
                return None
            await self.changed()
        line = bytes(self.data[:end])
        del self.data[: end + 1]
        return line

    def _wake(self) -> None:
        changed, self._changed = self._changed, trio.Event()
        changed.set()


async def play(
    stream: trio.abc.SendStream, conversation: Conversation, inbox: Inbox
) -> Ending | None:
    """Play ``conversation``'s steps on ``stream``; return its ending (None: none).

    Raises :class:`Unmet` when an :class:`Expect` is not met.
    """
    for number, step in enumerate(conversation.steps, 1):
        if isinstance(step, Send):
            await stream.send_all(step.data)
        elif isinstance(step, Pause):
            await trio.sleep(step.seconds)
        elif isinstance(step, Expect):
            await _expect(number, step, inbox)
        else:
            return step
    return None


async def _expect(number: int, expect: Expect, inbox: Inbox) -> None:
    reason = f"nothing matched within {expect.timeout:g} s"
    with trio.move_on_after(expect.timeout):
        while True:
            end = expect.end_of_match(bytes(inbox.data))
            if end is not None:
                del inbox.data[:end]
                return
            if inbox.closed:
                reason = "the client closed the connection before sending a match"
                break
            if len(inbox.data) > _MAX_UNCONSUMED:
                reason = f"the client sent {len(inbox.data)} bytes without a match"
                break
            await inbox.changed()
    raise Unmet(number, expect, reason, bytes(inbox.data[:_SHOWN]))


def log_mismatch(mismatch: Mismatch) -> None:
    """Say so where pytest shows it with a failing test's log."""
    _log.warning("fake server: %s", mismatch)
