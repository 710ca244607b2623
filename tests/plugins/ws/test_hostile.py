"""Hostile WebSocket servers against the ws transport (issue 10, WS side).

Each case is a raw server on 127.0.0.1 that misbehaves on its first
connection -- in the handshake or in the frames after it -- and behaves on
the next ones. Every case asserts:

* bounded memory: the peak RSS growth of the test process stays far below
  the issue's ~300 MB (RSS_BUDGET, 100 MiB);
* a readable detail: a short sentence, never a library's class name or
  wording, and never blaming the server for what mux itself closed;
* the source state: retried (server_unavailable / disconnected) unless the
  answer is documented as terminal (a 2xx/3xx/4xx handshake answer);
* that the events after the bad part still arrive (on the next connection).

The server here completes a real upgrade (``Upgrade`` computes the
``Sec-WebSocket-Accept`` of each request's key), which the static plans of
``mux_core.testing.serve_hostile`` cannot; the steps are the same classes.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import itertools
import logging
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
import pytest
import trio
import trustme
from hypothesis import given
from hypothesis import strategies as st
from websockets.uri import parse_uri

import mux_core.testing
import mux_ws
from mux_core._config import parse_config
from mux_core._plugins import PluginManager
from mux_core.errors import ConfigError
from mux_core.records import State
from mux_core.retry import RetryPolicy
from mux_core.testing import (
    Flood,
    Hangup,
    Pause,
    Reset,
    Send,
    compression_bomb,
    http_head,
)
from mux_ws import WsOptions, WsTransport
from mux_ws._handshake import url_problem
from tests.helpers.hostile import (
    PeakRss,
    assert_readable,
    assert_still_retrying,
    both,
    event_data,
    events,
    retried_with,
    statuses,
    watch,
)
from tests.helpers.tls import expired_context, server_context, write_ca

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
AFTER = {"after": 1}


@attrs.frozen
class Upgrade:
    """Answer the request with a 101: a correct accept key, a wrong one, or none."""

    accept: str = "ok"  # "ok" | "wrong" | "none"
    extra: Sequence[tuple[str, str]] = ()


Step = Upgrade | Send | Flood | Pause | Hangup | Reset


def frame(opcode: int, payload: bytes, *, fin: bool = True, first: int | None = None) -> bytes:
    """An unmasked server frame (``first`` overrides the first byte)."""
    size = len(payload)
    b0 = first if first is not None else (0x80 if fin else 0) | opcode
    if size < 126:
        return bytes([b0, size]) + payload
    if size < 1 << 16:
        return bytes([b0, 126]) + size.to_bytes(2, "big") + payload
    return bytes([b0, 127]) + size.to_bytes(8, "big") + payload


def text(payload: bytes) -> bytes:
    return frame(0x1, payload)


GOOD: list[Step] = [Upgrade(), Send(text(b'{"after": 1}')), Pause()]


@attrs.define(eq=False)
class RawWs:
    """Plays one plan per connection (the last repeats) and records what the client sent."""

    plans: list[list[Step]]
    tls: ssl.SSLContext | None = None
    #: False: never read after the handshake (a server that stopped reading).
    read_client: bool = True
    port: int = 0
    connections: int = 0
    #: Bytes the client sent after its request head, per connection.
    received: list[bytearray] = attrs.Factory(list)
    requests: list[bytes] = attrs.Factory(list)

    def url(self, path: str = "/ws") -> str:
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.port}{path}"

    async def serve(self, stream: trio.SocketStream) -> None:
        plan = self.plans[min(self.connections, len(self.plans) - 1)]
        self.connections += 1
        got = bytearray()
        self.received.append(got)
        conn: trio.abc.Stream = stream
        reset = False
        try:
            if self.tls is not None:
                conn = trio.SSLStream(stream, self.tls, server_side=True)
            head = await _read_head(conn, got)
            self.requests.append(head)
            reset = await self._converse(conn, plan, head, got)
        except* (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
            pass  # the client went away: that is what clients do
        finally:
            if reset:  # a zero linger time sends RST, not FIN
                linger = struct.pack("ii", 1, 0)
                stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            await trio.aclose_forcefully(conn)

    async def _converse(
        self, conn: trio.abc.Stream, plan: list[Step], head: bytes, got: bytearray
    ) -> bool:
        async with trio.open_nursery() as nursery:
            if self.read_client:
                nursery.start_soon(_record, conn, got)
            reset = await _play(conn, plan, head)
            if not reset and not any(isinstance(s, Hangup) for s in plan):
                await trio.sleep_forever()
            nursery.cancel_scope.cancel()
        return reset


async def _read_head(stream: trio.abc.Stream, got: bytearray) -> bytes:
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        data = await stream.receive_some(65536)
        if not data:
            raise trio.BrokenResourceError("client left")
        buffer += data
    head, _, rest = buffer.partition(b"\r\n\r\n")
    got += rest
    return head


async def _record(stream: trio.abc.Stream, got: bytearray) -> None:
    try:
        while data := await stream.receive_some(65536):
            got += data
    except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
        pass


async def _play(stream: trio.abc.Stream, plan: Sequence[Step], head: bytes) -> bool:
    for step in plan:
        if isinstance(step, Upgrade):
            await stream.send_all(_upgrade(step, head))
        elif isinstance(step, Send):
            await stream.send_all(step.data)
        elif isinstance(step, Flood):
            count = 0
            while step.times is None or count < step.times:
                await stream.send_all(step.piece)
                count += 1
        elif isinstance(step, Pause):
            await trio.sleep(step.seconds)
        else:  # the connection ends here: True for a reset
            return not isinstance(step, Hangup)
    return False


def _upgrade(step: Upgrade, head: bytes) -> bytes:
    key = b""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            key = value.strip()
    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode()
    headers = [("Upgrade", "websocket"), ("Connection", "Upgrade")]
    if step.accept == "ok":
        headers.append(("Sec-WebSocket-Accept", accept))
    elif step.accept == "wrong":
        headers.append(("Sec-WebSocket-Accept", base64.b64encode(b"x" * 20).decode()))
    return http_head(101, [*headers, *step.extra])


@asynccontextmanager
async def serve_raw_ws(
    *plans: list[Step], tls: ssl.SSLContext | None = None, read_client: bool = True
) -> AsyncIterator[RawWs]:
    server = RawWs(list(plans), tls=tls, read_client=read_client)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, server.serve, 0, host="127.0.0.1")
        )
        server.port = listeners[0].socket.getsockname()[1]
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()


def client_frames(data: bytes | bytearray) -> list[tuple[int, bytes]]:
    """(opcode, unmasked payload) of every complete frame the client sent."""
    frames = []
    pos = 0
    while pos + 2 <= len(data):
        size, head = data[pos + 1] & 0x7F, 2
        if size == 126:
            size, head = int.from_bytes(data[pos + 2 : pos + 4], "big"), 4
        elif size == 127:
            size, head = int.from_bytes(data[pos + 2 : pos + 10], "big"), 10
        key = data[pos + head : pos + head + 4]
        body = data[pos + head + 4 : pos + head + 4 + size]
        if len(body) < size:
            break
        frames.append((data[pos] & 0x0F, bytes(b ^ key[i % 4] for i, b in enumerate(body))))
        pos += head + 4 + size
    return frames


def close_codes(data: bytes | bytearray) -> list[int]:
    return [int.from_bytes(p[:2], "big") for op, p in client_frames(data) if op == 0x8]


def ws(url: str, **options: Any) -> WsTransport:
    options.setdefault("ping_interval", 0)
    return WsTransport(WsOptions(url=url, **options))


async def retried_then_good(
    plan: list[Step], detail: str, **options: Any
) -> tuple[list[Any], RawWs, PeakRss]:
    """One bad connection, then good ones: the detail is retried and AFTER arrives."""
    with PeakRss() as rss:
        async with serve_raw_ws(plan, GOOD) as server:
            records = await watch(
                ws(server.url(), **options), both(retried_with(detail), event_data(AFTER))
            )
    rss.check()
    assert_still_retrying(records)
    return records, server, rss


# -- the handshake ---------------------------------------------------------------------

HANDSHAKE_CASES: dict[str, tuple[list[Step], str]] = {
    "not HTTP": (
        [Send(b"SSH-2.0-OpenSSH_9.6\r\n"), Pause()],
        'did not answer the handshake with HTTP (it sent "SSH-2.0-OpenSSH_9.6\\r\\n")',
    ),
    "binary garbage, endless": (
        [Flood(b"\x00\xff" * 32768)],
        "did not answer the handshake with HTTP",
    ),
    "HTTP/2 status line": ([Send(b"HTTP/2 101\r\n\r\n"), Hangup()], "with HTTP"),
    "giant head": (
        [Send(b"HTTP/1.1 101 Switching Protocols\r\nX-Big: "), Flood(b"a" * 65536)],
        "the handshake answer's headers exceed 64 KiB",
    ),
    "endless headers": (
        [Send(b"HTTP/1.1 101 Switching Protocols\r\n"), Flood(b"X-A: b\r\n" * 8192)],
        "headers exceed 64 KiB",
    ),
    "nothing at all": ([Hangup()], "connection closed during the handshake (no answer)"),
    "head cut short": (
        [Send(b"HTTP/1.1 101 Swi"), Hangup()],
        "connection closed during the handshake (16 bytes of an answer)",
    ),
    "reset at once": ([Reset()], "connection reset during the handshake"),
    "101 without Sec-WebSocket-Accept": (
        [Upgrade(accept="none"), Pause()],
        "not a valid WebSocket upgrade: it has no Sec-WebSocket-Accept header",
    ),
    "101 with a wrong Sec-WebSocket-Accept": (
        [Upgrade(accept="wrong"), Pause()],
        "its Sec-WebSocket-Accept does not match the key mux sent",
    ),
    "101 without Upgrade": (
        [Send(http_head(101, {"Connection": "Upgrade"})), Pause()],
        "it has no Upgrade header",
    ),
    "101 to h2c": (
        [Send(http_head(101, {"Connection": "Upgrade", "Upgrade": "h2c"})), Pause()],
        'its Upgrade header is "h2c"',
    ),
    "101 forcing permessage-deflate": (
        [Upgrade(extra=[("Sec-WebSocket-Extensions", "permessage-deflate")]), Pause()],
        "it turns on an extension or subprotocol mux did not offer",
    ),
    "101 with a malformed header line": (
        [Send(b"HTTP/1.1 101 Switching Protocols\r\nno colon here\r\n\r\n"), Pause()],
        "its head is not valid HTTP/1.1",
    ),
    "503 with Retry-After: 0": (
        [Send(http_head(503, {"Retry-After": "0", "Content-Length": "0"})), Hangup()],
        "handshake rejected: HTTP 503",
    ),
    "500 with an endless body": ([Send(http_head(500)), Flood()], "handshake rejected: HTTP 500"),
}


@pytest.mark.parametrize("case", list(HANDSHAKE_CASES))
async def test_a_bad_handshake_is_retried_with_a_readable_detail(case: str) -> None:
    plan, detail = HANDSHAKE_CASES[case]
    records, _, _ = await retried_then_good(plan, detail)
    first = statuses(records)[1]
    assert first.state is State.SERVER_UNAVAILABLE, first


@pytest.mark.parametrize(
    ("plan", "detail"),
    [
        (
            [Send(http_head(200, {"Content-Type": "text/html"})), Flood()],
            "not a WebSocket endpoint: the handshake was answered HTTP 200 instead of 101",
        ),
        (
            [Send(http_head(302, {"Location": "ws://elsewhere/\x1b[31m"})), Pause()],
            'a redirect (HTTP 302 to "ws://elsewhere/\\x1b[31m"); mux does not follow',
        ),
        ([Send(http_head(404, {"Content-Length": "0"})), Pause()], "handshake rejected: HTTP 404"),
    ],
    ids=["200 endless body", "redirect", "404"],
)
async def test_a_documented_terminal_answer_fails_at_once(plan: list[Step], detail: str) -> None:
    with PeakRss() as rss:
        async with serve_raw_ws(plan) as server:
            records = await watch(
                ws(server.url()),
                lambda rs: any(s.state is State.FAILED for s in statuses(rs)),
                policy=RetryPolicy(connect_timeout=30.0),
            )
    rss.check()
    last = statuses(records)[-1]
    assert last.state is State.FAILED
    assert detail in last.detail  # at once: not "no connection within 30 s"
    assert_readable([s.detail for s in statuses(records)])


async def test_a_zero_retry_after_still_backs_off() -> None:
    floor = RetryPolicy(initial_delay=0.01, min_delay=0.05, max_delay=1.0, jitter=0.0)
    plan: list[Step] = [Send(http_head(503, {"Retry-After": "0"})), Hangup()]
    async with serve_raw_ws(plan) as server:
        records = await watch(
            ws(server.url()),
            lambda rs: len([s for s in statuses(rs) if s.retry_in is not None]) >= 4,
            policy=floor,
        )
    waits = [s.retry_in for s in statuses(records) if s.retry_in is not None]
    assert all(w is not None and w >= 0.05 for w in waits), waits
    assert waits == sorted(waits) and waits[-1] > waits[0], waits  # growing, not a storm


# -- frames after the handshake ----------------------------------------------------------

MASK = b"\x01\x02\x03\x04"
FRAME_CASES: dict[str, tuple[bytes, str]] = {
    "a masked frame": (
        b"\x81\x85" + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(b"hello")),
        "the server broke the WebSocket protocol (incorrect masking)",
    ),
    "an unknown opcode": (b"\x83\x00", "(invalid opcode)"),
    "a compressed frame mux did not negotiate": (
        frame(0x1, b"\xf2\x48\xcd\xc9\xc9\x07\x00", first=0xC1),
        "(reserved bits must be 0)",
    ),
    "a control frame too long": (frame(0x9, b"x" * 200), "(control frame too long)"),
    "a fragmented ping": (frame(0x9, b"", fin=False), "(fragmented control frame)"),
    "a continuation without a start": (frame(0x0, b"x"), "(unexpected continuation frame)"),
    "a text frame inside a fragmented message": (
        frame(0x1, b"a", fin=False) + text(b"b"),
        "(expected a continuation frame)",
    ),
    "close code 999": (frame(0x8, (999).to_bytes(2, "big")), "(invalid status code)"),
    "a close reason that is not UTF-8": (
        frame(0x8, (1000).to_bytes(2, "big") + b"\xff\xfe"),
        "the server's close reason is not UTF-8; mux closed the connection (1007)",
    ),
    "a close reason with control characters": (
        frame(0x8, (1011).to_bytes(2, "big") + b"line1\nline2\x1b[31m"),
        "server closed the connection (1011: line1\\nline2\\x1b[31m)",
    ),
    "a frame cut short": (b"\x81\x7e\x10\x00abc", "connection lost (no close frame)"),
}


@pytest.mark.parametrize("case", list(FRAME_CASES))
async def test_a_bad_frame_is_a_readable_disconnection(case: str) -> None:
    data, detail = FRAME_CASES[case]
    hangup = case == "a frame cut short"
    plan: list[Step] = [Upgrade(), Send(text(b'{"before": 1}')), Send(data)]
    plan.append(Hangup() if hangup else Pause())
    records, server, _ = await retried_then_good(plan, detail)
    assert events(records)[0].data == {"before": 1}  # what came before the bad frame
    assert any(s.state is State.DISCONNECTED for s in statuses(records))
    if "broke the WebSocket protocol" in detail:
        assert close_codes(server.received[0]) == [1002]  # mux said why before leaving


async def test_a_giant_frame_is_refused_from_its_header() -> None:
    """A frame announcing 2^62 bytes, then an endless payload: refused before it is read,
    the server is told 1009, and the detail says mux closed (not the server)."""
    plan: list[Step] = [Upgrade(), Send(b"\x81\x7f" + (1 << 62).to_bytes(8, "big")), Flood()]
    records, server, _ = await retried_then_good(plan, "mux closed the connection (1009)")
    details = [s.detail for s in statuses(records)]
    assert any("a message exceeded max_message_bytes (8388608)" in d for d in details)
    assert not any("server closed" in d for d in details)
    assert close_codes(server.received[0]) == [1009]


@pytest.mark.parametrize("fragments", [False, True], ids=["one frame", "endless fragments"])
async def test_a_message_over_the_limit_keeps_memory_bounded(fragments: bool) -> None:
    """64 MiB announced (or an endless fragmented message) with a 1 MiB limit."""
    if fragments:
        plan: list[Step] = [
            Upgrade(),
            Send(frame(0x1, b"{", fin=False)),
            Flood(frame(0x0, b"x" * 60000, fin=False)),
        ]
    else:
        head = b"\x81\x7f" + (64 << 20).to_bytes(8, "big")
        plan = [Upgrade(), Send(head), Flood(b"x" * 65536, times=1024)]
    _, _, rss = await retried_then_good(
        plan, "a message exceeded max_message_bytes (1048576)", max_message_bytes=1 << 20
    )
    assert rss.growth < 32 * 1024 * 1024


async def test_a_flood_of_empty_fragments_keeps_memory_flat() -> None:
    """655,360 empty continuation frames, then the last one: one message, no heap of parts."""
    plan: list[Step] = [
        Upgrade(),
        Send(frame(0x1, b"", fin=False)),
        Flood(frame(0x0, b"", fin=False) * 32768, times=20),
        Send(frame(0x0, b'{"after": 1}')),
        Pause(),
    ]
    with PeakRss() as rss:
        async with serve_raw_ws(plan) as server:
            records = await watch(ws(server.url()), event_data(AFTER), timeout=60)
    assert rss.growth < 16 * 1024 * 1024, rss.growth
    assert [e.data for e in events(records)] == [AFTER]


async def test_a_compressed_frame_bomb_is_never_inflated() -> None:
    bomb = compression_bomb(256 * 1024 * 1024, "raw-deflate")
    plan: list[Step] = [Upgrade(), Send(frame(0x2, bomb, first=0xC2)), Pause()]
    _, _, rss = await retried_then_good(plan, "(reserved bits must be 0)")
    assert rss.growth < 64 * 1024 * 1024


async def test_a_server_that_stops_reading_is_given_up() -> None:
    """A flood of pings from a server that never reads the pongs: the writes block,
    and after ping_timeout the connection is dropped (not a hang, not a heap of pongs)."""
    pings = frame(0x9, b"") * 32768
    async with serve_raw_ws([Upgrade(), Flood(pings)], GOOD, read_client=False) as server:
        with PeakRss() as rss:
            records = await watch(
                ws(server.url(), ping_timeout=0.5),
                both(retried_with("the server stopped reading"), event_data(AFTER)),
            )
    rss.check()
    assert_still_retrying(records)


async def test_a_missing_pong_is_mux_giving_up_not_the_server_closing() -> None:
    plan: list[Step] = [Upgrade(), Pause()]  # reads, never answers a ping
    _, server, _ = await retried_then_good(
        plan, "no pong within 0.2 s", ping_interval=0.05, ping_timeout=0.2
    )
    assert [op for op, _ in client_frames(server.received[0])] == [0x9]  # one ping, no close


async def test_invalid_utf8_text_is_delivered_not_fatal() -> None:
    plan: list[Step] = [Upgrade(), Send(text(b"caf\xe9 \xff")), Send(text(b'{"after": 1}'))]
    async with serve_raw_ws([*plan, Pause()]) as server:
        records = await watch(ws(server.url()), event_data(AFTER))
    assert [e.data for e in events(records)] == ["caf\ufffd \ufffd", AFTER]
    assert [s.state for s in statuses(records)] == [State.CONNECTING, State.CONNECTED]


async def test_big_integer_ids_stay_exact() -> None:
    payload = b'{"id": 12345678901234567890123, "kind": 7, "x": 1}'
    async with serve_raw_ws([Upgrade(), Send(text(payload)), Pause()]) as server:
        records = await watch(
            ws(server.url(), id_field="id", event_field="kind"),
            lambda rs: bool(events(rs)),
        )
    event = events(records)[0]
    assert (event.id, event.event) == ("12345678901234567890123", "7")
    assert event.data["id"] == 12345678901234567890123


async def test_a_subprotocol_in_headers_is_offered_and_may_be_chosen() -> None:
    chosen: list[Step] = [Upgrade(extra=[("Sec-WebSocket-Protocol", "v2")]), *GOOD[1:]]
    async with serve_raw_ws(chosen) as server:
        records = await watch(
            ws(server.url(), headers={"Sec-WebSocket-Protocol": "v1, v2"}), event_data(AFTER)
        )
    assert b"Sec-WebSocket-Protocol: v1, v2" in server.requests[0]
    assert [s.state for s in statuses(records)] == [State.CONNECTING, State.CONNECTED]


# -- config mistakes that must not wait for run time --------------------------------------


@pytest.mark.parametrize(
    ("line", "where", "message"),
    [
        (
            'url = "ws://127.0.0.1:1/a b"',
            "5: sources[0].url",
            "contains a space; percent-encode it",
        ),
        ('url = "ws://127.0.0.1:1/a\\tb"', "5: sources[0].url", "contains the control character"),
        (
            'url = "ws://h/"\nheaders = { X-Token = "a\\r\\nInjected: 1" }',
            "6: sources[0].headers",
            "printable ASCII",
        ),
        (
            'url = "ws://h/"\nheaders = { Upgrade = "h2c" }',
            "6: sources[0].headers",
            "set by the WebSocket handshake",
        ),
    ],
    ids=["space in url", "tab in url", "CR/LF in a header", "handshake header"],
)
def test_check_reports_what_would_crash_at_run_time(line: str, where: str, message: str) -> None:
    """At the line of the key the check names (``url: ...``), not the table's."""
    plugins = PluginManager()
    plugins.register(mux_ws, name="ws")
    plugins.register(mux_core.testing, name="testing")
    text = f'\n[[sources]]\nname = "w"\ntransport = "ws"\n{line}\n[[sinks]]\ntype = "collect"\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text, path="mon.toml", plugins=plugins)
    assert str(info.value).startswith(f"mon.toml:{where}")
    assert message in str(info.value)


def _parse_uri_url_problem(url: str) -> str:
    """url_problem as it was before it learned to skip websockets: the reference."""
    bad = [c for c in url if ord(c) < 0x21 or ord(c) == 0x7F]
    if bad:
        what = "a space" if bad[0] == " " else f"the control character {bad[0]!r}"
        return f"url: {url!r} contains {what}; percent-encode it (a space is %20)"
    if not url.lower().startswith(("ws://", "wss://")):
        return f"url: {url!r} must start with ws:// or wss://"
    try:
        if not urlsplit(url).hostname:
            return f"url: {url!r} has no host"
        uri = parse_uri(url)
    except Exception as exc:
        msg = getattr(exc, "msg", None)
        return f"url: invalid URL {url!r}: {msg if isinstance(msg, str) else exc}"
    if not uri.host:
        return f"url: {url!r} has no host"
    return ""


_WS_URL_PARTS = (
    ("ws://", "wss://", "WsS://", "http://", "ws:/"),
    ("", "u:p@", "u@", "@"),
    ("example.com", "127.0.0.1", "999.1.1.1", "h_o~st", "[::1]", "[zz", "bücher.de", ""),
    ("", ":", ":8080", ":65535", ":65536", ":0", ":99999999", ":x", ":-1", ":\u0663"),
    ("", "/", "/a?b=c", "?q", "#f", "/a#f", "/ü", "/a%20b", "/[x]", "/a@b"),
)


def test_url_problem_says_what_parse_uri_says_of_every_url() -> None:
    """A plain URL passes without importing websockets; every verdict is still the old one."""
    for parts in itertools.product(*_WS_URL_PARTS):
        url = "".join(parts)
        assert url_problem(url) == _parse_uri_url_problem(url), url


@given(st.text(alphabet="wsWS:/[]@.%#?x-019_~ü\u0663", max_size=30))
def test_url_problem_agrees_with_parse_uri_on_any_text(url: str) -> None:
    assert url_problem(url) == _parse_uri_url_problem(url)


@given(
    st.from_regex(r"(?i:wss?)://[a-z0-9.@-]{1,12}(:[0-9]{0,7})?([/?][ -~]{0,20})?", fullmatch=True)
)
def test_url_problem_agrees_with_parse_uri_on_plain_urls(url: str) -> None:
    assert url_problem(url) == _parse_uri_url_problem(url)


# -- TLS: the same CA bundle as https, and a verify option --------------------------------


async def test_wss_trusts_ssl_cert_file(tls_server_context: ssl.SSLContext, trust_ca: None) -> None:
    async with serve_raw_ws(GOOD, tls=tls_server_context) as server:
        records = await watch(ws(server.url()), event_data(AFTER))
    assert statuses(records)[1].state is State.CONNECTED


async def test_wss_rejects_an_unknown_ca_and_keeps_retrying(
    tls_server_context: ssl.SSLContext,
) -> None:
    async with serve_raw_ws(GOOD, tls=tls_server_context) as server:
        records = await watch(
            ws(server.url()),
            retried_with(
                "TLS certificate verify failed: unknown issuer (self-signed or an untrusted CA;"
                " trust it with ca_file)"
            ),
        )
    assert_still_retrying(records)


async def test_wss_ca_file_trusts_a_private_ca(ca: trustme.CA, tmp_path: Path) -> None:
    async with serve_raw_ws(GOOD, tls=server_context(ca)) as server:
        records = await watch(ws(server.url(), ca_file=write_ca(ca, tmp_path)), event_data(AFTER))
    assert events(records)[0].data == AFTER


async def test_wss_expired_and_mismatched_certificates_are_told_apart(
    ca: trustme.CA, tmp_path: Path
) -> None:
    ca_file = write_ca(ca, tmp_path)
    async with serve_raw_ws(GOOD, tls=expired_context(ca)) as server:
        await watch(ws(server.url(), ca_file=ca_file), retried_with("the certificate has expired"))
    async with serve_raw_ws(GOOD, tls=server_context(ca, "trainer.example")) as server:
        records = await watch(
            ws(server.url(), ca_file=ca_file),
            retried_with(
                "hostname mismatch: the certificate is for trainer.example, not 127.0.0.1"
            ),
        )
    assert_still_retrying(records)


async def test_wss_verify_false_accepts_any_certificate_with_one_warning(
    tls_server_context: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mux.tls")
    async with serve_raw_ws(GOOD, tls=tls_server_context) as server:
        records = await watch(ws(server.url(), verify=False), event_data(AFTER))
    assert events(records)[0].data == AFTER
    warnings = [r.getMessage() for r in caplog.records if r.name == "mux.tls"]
    assert len(warnings) == 1
    assert warnings[0].startswith("source 'hostile': verify = false: TLS certificates are not")


def test_wss_check_rejects_a_ca_file_that_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as raised:
        WsOptions.check(WsOptions(url="wss://trainer.example/ws", ca_file=str(tmp_path)))
    assert str(raised.value).startswith(f"ca_file: {str(tmp_path)!r} is a directory")
