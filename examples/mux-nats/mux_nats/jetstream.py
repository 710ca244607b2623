"""JetStream over the core protocol: the stream check, a durable pull consumer, acks.

JetStream is an API of request/reply subjects. :class:`PullConsumer` asks
``$JS.API.STREAM.INFO.<stream>`` whether the stream exists, creates (or
updates) the durable consumer with ``$JS.API.CONSUMER.CREATE.<stream>.<durable>``
-- explicit acks, so the server sends again whatever is not acknowledged
within ``ack_wait`` -- and pulls messages with ``$JS.API.CONSUMER.MSG.NEXT``
requests of ``batch`` messages, one at a time. Each message's reply subject
is its ack subject, ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.
<consumer seq>.<timestamp>.<pending>``; publishing ``+ACK`` there settles it.
Needs nats-server 2.9 or later (CONSUMER.CREATE with a durable name).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import attrs

from mux_core import Disconnected, Failed, ServerUnavailable, SessionError

from .client import NatsConnection
from .protocol import Msg, pub, shown, status_of, sub

__all__ = ["JsMessage", "PullConsumer", "ack_metadata"]

#: Nanoseconds a pull request waits for messages before the server ends it (408).
_PULL_EXPIRES = 10_000_000_000


@attrs.frozen
class JsMessage:
    """One message from the stream, with what it takes to acknowledge it."""

    subject: str
    stream_seq: int
    #: When the stream stored it (ns); with the sequence it tells a repeat from a
    #: new message that got a reused sequence (a stream that lost its tail).
    timestamp: int
    ack_subject: str
    payload: bytes


def ack_metadata(reply: str) -> tuple[int, int] | None:
    """(stream sequence, timestamp) from an ack subject, either layout; None if malformed.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`` (9
    tokens) or, with a domain and an account hash after ``$JS.ACK``, 11 or 12.
    """
    tokens = reply.split(".")
    if len(tokens) == 9:
        first = 2
    elif len(tokens) in (11, 12):
        first = 4
    else:
        return None
    sequence, timestamp = tokens[first + 3], tokens[first + 5]
    if not (sequence.isdigit() and timestamp.isdigit()):
        return None
    return int(sequence), int(timestamp)


class PullConsumer:
    """A durable pull consumer on one connection."""

    def __init__(
        self,
        connection: NatsConnection,
        *,
        stream: str,
        durable: str,
        subject: str,
        batch: int,
        ack_wait: float,
        timeout: float,
    ) -> None:
        self._connection = connection
        self._stream = stream
        self._durable = durable
        self._subject = subject
        self._batch = batch
        self._ack_wait = ack_wait
        self._timeout = timeout
        self._sid = connection.new_sid()
        self._requests = 0
        self._pull_reply = ""
        #: Messages the current pull request may still bring (0: ask again).
        self._outstanding = 0

    async def prepare(self) -> None:
        """Check the stream, create the consumer; Failed when retrying cannot help."""
        await self._connection.send(sub(f"{self._connection.inbox}.*", self._sid))
        await self._api(f"STREAM.INFO.{self._stream}", {}, what=f"stream {self._stream!r}")
        config: dict[str, Any] = {
            "durable_name": self._durable,
            "ack_policy": "explicit",
            "ack_wait": int(self._ack_wait * 1e9),
            "deliver_policy": "all",
        }
        if self._subject:
            config["filter_subject"] = self._subject
        await self._api(
            f"CONSUMER.CREATE.{self._stream}.{self._durable}",
            {"stream_name": self._stream, "config": config},
            what=f"consumer {self._durable!r}",
        )

    async def next_messages(self) -> list[JsMessage]:
        """The stream messages of the next read that brings any, pulling as needed."""
        while True:
            if self._outstanding <= 0:
                await self._pull()
            found = []
            for msg in await self._connection.receive():
                if msg.sid != self._sid:
                    continue
                if msg.reply and msg.reply.startswith("$JS.ACK."):
                    found.append(self._message(msg))
                    self._outstanding -= 1
                elif msg.subject == self._pull_reply:
                    self._pull_status(msg)
            if found:
                return found

    async def ack(self, messages: Sequence[JsMessage]) -> None:
        if messages:
            await self._connection.send(b"".join(pub(m.ack_subject, b"+ACK") for m in messages))

    async def _pull(self) -> None:
        self._requests += 1
        self._pull_reply = f"{self._connection.inbox}.pull{self._requests}"
        body = json.dumps({"batch": self._batch, "expires": _PULL_EXPIRES}).encode()
        subject = f"$JS.API.CONSUMER.MSG.NEXT.{self._stream}.{self._durable}"
        await self._connection.send(pub(subject, body, self._pull_reply))
        self._outstanding = self._batch

    def _message(self, msg: Msg) -> JsMessage:
        assert msg.reply is not None
        metadata = ack_metadata(msg.reply)
        if metadata is None:
            raise Disconnected(
                f"a JetStream message with a malformed ack subject {shown(msg.reply)}"
            )
        sequence, timestamp = metadata
        return JsMessage(msg.subject, sequence, timestamp, msg.reply, msg.payload)

    def _pull_status(self, msg: Msg) -> None:
        """A status on the current pull request: it ended (404, 408, most 409s) or failed."""
        code, description = status_of(msg.headers)
        if code == 100:  # an idle heartbeat
            return
        if code in (404, 408) or (code == 409 and "deleted" not in description.lower()):
            self._outstanding = 0
            return
        if code == 409:
            raise Disconnected(f"consumer {self._durable!r} was deleted; it is created again")
        if code == 503:
            raise ServerUnavailable("JetStream stopped answering (no responders)")
        raise Disconnected(f"JetStream answered a pull with {code} {shown(description)}")

    async def _api(self, call: str, request: dict[str, Any], *, what: str) -> dict[str, Any]:
        """One JetStream API request; its error, if any, as the session's end."""
        import trio

        self._requests += 1
        reply = f"{self._connection.inbox}.api{self._requests}"
        body = json.dumps(request).encode()
        await self._connection.send(pub(f"$JS.API.{call}", body, reply))
        with trio.move_on_after(self._timeout):
            while True:
                for msg in await self._connection.receive():
                    if msg.subject == reply:
                        return _api_answer(msg, call, what, self._stream)
        raise ServerUnavailable(
            f"JetStream did not answer $JS.API.{call} within {self._timeout:g} s"
        )


def _api_answer(msg: Msg, call: str, what: str, stream: str) -> dict[str, Any]:
    code, _ = status_of(msg.headers)
    if code == 503:
        raise ServerUnavailable(
            "JetStream did not answer (no responders): is it enabled (nats-server -js)?"
        )
    try:
        answer = json.loads(msg.payload)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise Disconnected(f"JetStream answered $JS.API.{call} with {shown(msg.payload)}")
    error = answer.get("error")
    if error is not None:
        raise _api_error(error, what, stream)
    return answer


def _api_error(error: Any, what: str, stream: str) -> SessionError:
    error = error if isinstance(error, dict) else {}
    code = error.get("code")
    description = str(error.get("description", "no description"))
    if error.get("err_code") == 10059:  # stream not found
        return Failed(f"stream {stream!r} not found -- create it first (nats stream add)")
    if isinstance(code, int) and code >= 500:
        return ServerUnavailable(f"JetStream is unavailable: {shown(description)}")
    return Failed(f"JetStream refused {what}: {shown(description, 120)}")
