"""Http11Stream reads a plain TCP body from its socket: big reads, small ones, a reset."""

from __future__ import annotations

import socket
import struct
from functools import partial

import httpx
import trio

from mux_core.http import Http11Stream

_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"


async def _read_all(stream: Http11Stream) -> bytes:
    parts = []
    while chunk := await stream.receive():
        parts.append(chunk)
    return b"".join(parts)


async def test_a_body_larger_than_a_read_then_small_pieces_arrive_whole() -> None:
    big = bytes(range(256)) * 1200  # 300 KiB: several full reads in a row
    small = [b"data: %d\n\n" % n for n in range(20)]
    go_on = trio.Event()

    async def handle(server: trio.SocketStream) -> None:
        await server.receive_some(65536)  # the request
        await server.send_all(_HEAD + big)
        await go_on.wait()
        for piece in small:  # one small piece a read: the socket empty between them
            await server.send_all(piece)
            await trio.sleep(0.001)
        await server.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        url = httpx.URL(f"http://127.0.0.1:{port}/events")
        stream = await Http11Stream.connect(url, None)
        try:
            head = await stream.request(url, [])
            assert head.status == 200
            assert stream._socket is not None  # read from the socket, not through the stream
            got = b""
            while len(got) < len(big):
                chunk = await stream.receive()
                assert chunk
                got += chunk
            assert got == big
            go_on.set()
            assert await _read_all(stream) == b"".join(small)
        finally:
            await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_a_reset_connection_is_a_broken_resource() -> None:
    async def handle(server: trio.SocketStream) -> None:
        await server.receive_some(65536)
        await server.send_all(_HEAD + b"data: 1\n\n")
        # Close with RST: SO_LINGER on, 0 seconds.
        server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await server.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        url = httpx.URL(f"http://127.0.0.1:{port}/events")
        stream = await Http11Stream.connect(url, None)
        broken = False
        try:
            await stream.request(url, [])
            try:
                await _read_all(stream)
            except trio.BrokenResourceError:
                broken = True
        finally:
            await stream.aclose()
        assert broken
        nursery.cancel_scope.cancel()


async def test_a_read_waiting_on_a_silent_socket_is_cancelled() -> None:
    async def handle(server: trio.SocketStream) -> None:
        await server.receive_some(65536)
        await server.send_all(_HEAD)
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        url = httpx.URL(f"http://127.0.0.1:{port}/events")
        stream = await Http11Stream.connect(url, None)
        try:
            await stream.request(url, [])
            with trio.move_on_after(0.05) as scope:
                await stream.receive()
            assert scope.cancelled_caught
        finally:
            await stream.aclose()
        nursery.cancel_scope.cancel()


def _closed_port(family: socket.AddressFamily, host: str) -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
    return port


def _ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


async def test_an_ip_address_connects_directly_and_fails_as_trio_says() -> None:
    """open_tcp skips trio's happy eyeballs for a host written as an IP address;
    a refused connect is the same error trio's open_tcp_stream raises (its
    message, the refusal in a group as its cause), so a status detail agrees."""
    from mux_core.errors import describe_connection_error
    from mux_core.http._http11 import open_tcp

    hosts = [(socket.AF_INET, "127.0.0.1")] + ([(socket.AF_INET6, "::1")] if _ipv6() else [])
    for family, host in hosts:
        port = _closed_port(family, host)
        errors = []
        for connect in (open_tcp, trio.open_tcp_stream):
            try:
                await connect(host, port)
            except OSError as exc:
                errors.append(exc)
        ours, theirs = errors
        assert str(ours) == str(theirs)
        assert describe_connection_error(ours) == describe_connection_error(theirs)
        assert describe_connection_error(ours) == "connection refused"
        assert isinstance(ours.__cause__, ExceptionGroup)
        assert [type(e) for e in ours.__cause__.exceptions] == [ConnectionRefusedError]

    async def handle(server: trio.SocketStream) -> None:
        await server.send_all(b"hello")
        await server.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        for host in ("127.0.0.1", "localhost"):  # the second through trio's lookup
            stream = await open_tcp(host, port)
            assert isinstance(stream, trio.SocketStream)
            assert await stream.receive_some(5) == b"hello"
            # As trio's: Nagle off (a request's head goes out at once).
            assert stream.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            await stream.aclose()
        nursery.cancel_scope.cancel()
