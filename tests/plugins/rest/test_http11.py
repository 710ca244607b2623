"""mux_rest's own HTTP/1.1 path: keep-alive across polls, framing, compression,
redirects, TLS, proxies and broken servers.

Every server here is a real one on 127.0.0.1 writing exact bytes. It answers
the n-th request it receives with ``answers[n]`` and every later one with a
404, which ends the session with ``Failed``: so a session runs a known number
of polls (``interval`` is tiny, so polls follow back to back) and ends by
itself, without a clock.
"""

from __future__ import annotations

import functools
import gzip
import ssl
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import orjson
import pytest
import trio

from mux_core.errors import Failed, ServerUnavailable
from mux_core.records import State, Status
from mux_core.testing import SessionResult, run_one_session
from mux_rest import RestOptions, RestTransport


@attrs.frozen
class Request:
    line: str
    headers: dict[str, str]
    #: Which accepted connection (0, 1, ...) carried it.
    connection: int


#: Writes the answer to one request; returns False to close the connection after it.
Answer = Callable[[Request, trio.abc.Stream], Awaitable[bool]]


@attrs.define
class KeepAliveServer:
    """Reads requests one after another on each connection and answers from a script."""

    answers: list[Answer]
    tls: ssl.SSLContext | None = None
    requests: list[Request] = attrs.Factory(list)
    connections: int = 0
    open: int = 0
    port: int = 0
    all_closed: trio.Event = attrs.Factory(trio.Event)

    @property
    def base(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    async def _serve(self, stream: trio.SocketStream) -> None:
        number = self.connections
        self.connections += 1
        self.open += 1
        conn: trio.abc.Stream = stream
        try:
            if self.tls is not None:
                conn = trio.SSLStream(stream, self.tls, server_side=True)
            buffer = b""
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = await conn.receive_some()
                    if not chunk:
                        return
                    buffer += chunk
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                line, *rest = head.decode("latin-1").split("\r\n")
                headers = {
                    k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in rest)
                }
                request = Request(line, headers, number)
                index = len(self.requests)
                self.requests.append(request)
                answer = self.answers[index] if index < len(self.answers) else not_found
                if not await answer(request, conn):
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError):
            pass
        finally:
            await trio.aclose_forcefully(conn)
            self.open -= 1
            if not self.open:
                self.all_closed.set()


async def start(
    nursery: trio.Nursery, *answers: Answer, tls: ssl.SSLContext | None = None
) -> KeepAliveServer:
    server = KeepAliveServer(list(answers), tls)
    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, server._serve, 0, host="127.0.0.1")
    )
    server.port = listeners[0].socket.getsockname()[1]
    return server


def send(*parts: bytes, keep: bool = True) -> Answer:
    """Write ``parts`` (one write each); ``keep=False`` closes the connection after them."""

    async def answer(_: Request, stream: trio.abc.Stream) -> bool:
        for part in parts:
            await stream.send_all(part)
        return keep

    return answer


def page(*ids: int) -> bytes:
    return orjson.dumps({"items": [{"id": i} for i in ids]})


def json_response(body: bytes, *headers: bytes, keep: bool = True) -> Answer:
    extra = b"".join(h + b"\r\n" for h in headers)
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
    return send(head % (len(body), extra) + body, keep=keep)


not_found = send(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")


async def poll(url: str, **options: Any) -> SessionResult:
    """One session against ``url`` until it ends (the script's 404, or an error)."""
    options = {"items": "items", "interval": 1e-6, "timeout": 5.0, **options}
    with trio.fail_after(10):
        return await run_one_session(RestTransport(RestOptions(url=url, **options)))


def ids(result: SessionResult) -> list[str | None]:
    return [e.id for e in result.events]


def states(result: SessionResult) -> list[State]:
    return [r.state for r in result.records if isinstance(r, Status)]


def ended_by_the_script(result: SessionResult) -> bool:
    return isinstance(result.error, Failed) and result.error.detail == "HTTP 404 Not Found"


# -- keep-alive ---------------------------------------------------------------------


async def test_polls_reuse_one_connection(nursery: trio.Nursery) -> None:
    server = await start(
        nursery, json_response(page(1, 2)), json_response(page(2, 3)), json_response(page(4))
    )
    result = await poll(server.base + "/metrics")
    assert ended_by_the_script(result)
    assert ids(result) == ["1", "2", "3", "4"]
    assert server.connections == 1
    assert [r.connection for r in server.requests] == [0, 0, 0, 0]
    request = server.requests[0]
    assert request.line == "GET /metrics HTTP/1.1"
    assert request.headers["host"] == f"127.0.0.1:{server.port}"
    assert request.headers["accept"] == "application/json"
    assert request.headers["accept-encoding"] == "gzip, deflate"
    assert request.headers["user-agent"].startswith("mux/")


async def test_a_connection_the_server_closed_while_idle_is_replaced_silently(
    nursery: trio.Nursery,
) -> None:
    """The server ends the connection after a complete keep-alive response (an
    idle timeout): the next poll fails on it before any response byte, and is
    sent again on a fresh connection -- no error, no second ``connected``."""
    server = await start(
        nursery, json_response(page(1), keep=False), json_response(page(2)), json_response(page(3))
    )
    result = await poll(server.base + "/metrics")
    assert ended_by_the_script(result)
    assert ids(result) == ["1", "2", "3"]
    assert states(result) == [State.CONNECTED]
    assert [r.connection for r in server.requests] == [0, 1, 1, 1]


async def test_a_fresh_connection_that_fails_is_not_retried(nursery: trio.Nursery) -> None:
    closes = send(keep=False)  # accepts the request, closes without a word
    server = await start(nursery, json_response(page(1), keep=False), closes)
    result = await poll(server.base + "/metrics")
    assert ids(result) == ["1"]
    assert isinstance(result.error, ServerUnavailable)
    assert result.error.detail == "server disconnected without sending a response"
    assert server.connections == 2
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",  # the body runs to the end of the connection
    ],
    ids=["connection-close", "http-1.0", "close-delimited"],
)
async def test_a_connection_the_server_will_close_is_not_reused(
    nursery: trio.Nursery, head: bytes
) -> None:
    """The server leaves these connections open: had the client reused one, the
    next request would arrive on it."""

    def answer(body: bytes) -> Answer:
        if b"%d" not in head:
            return send(head + body, keep=False)
        return send(head % len(body) + body)

    server = await start(nursery, answer(page(1)), answer(page(2)))
    result = await poll(server.base + "/metrics")
    assert ended_by_the_script(result)
    assert ids(result) == ["1", "2"]
    assert [r.connection for r in server.requests] == [0, 1, 2]


async def test_the_connection_is_closed_when_the_session_ends(nursery: trio.Nursery) -> None:
    server = await start(nursery, json_response(page(1)))  # then a 404 that keeps it open
    result = await poll(server.base + "/metrics")
    assert ended_by_the_script(result)
    with trio.fail_after(5):
        await server.all_closed.wait()


async def test_the_connection_is_closed_when_the_session_is_cancelled(
    nursery: trio.Nursery,
) -> None:
    asked = trio.Event()

    async def stall(_: Request, stream: trio.abc.Stream) -> bool:
        asked.set()
        while await stream.receive_some():  # until the client hangs up
            pass
        return False

    server = await start(nursery, json_response(page(1)), stall)
    transport = RestTransport(RestOptions(url=server.base + "/m", items="items", interval=1e-6))
    with trio.fail_after(5):
        async with trio.open_nursery() as inner:
            inner.start_soon(run_one_session, transport)
            await asked.wait()
            inner.cancel_scope.cancel()
        await server.all_closed.wait()
    assert server.connections == 1


# -- bodies -------------------------------------------------------------------------


def chunked(body: bytes, size: int) -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


async def test_chunked_bodies_split_across_writes(nursery: trio.Nursery) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
    head += b"\r\n"
    first, second = chunked(page(1, 2, 3), 7), chunked(page(4), 100)
    server = await start(
        nursery, send(head, first[:5], first[5:20], first[20:]), send(head + second)
    )
    result = await poll(server.base + "/metrics")
    assert ended_by_the_script(result)
    assert ids(result) == ["1", "2", "3", "4"]
    assert server.connections == 1


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        (b"gzip", gzip.compress),
        (b"deflate", zlib.compress),
        (b"deflate", lambda data: zlib.compress(data, wbits=-zlib.MAX_WBITS)),  # raw, as IIS sends
    ],
    ids=["gzip", "deflate", "raw-deflate"],
)
async def test_compressed_bodies_are_decoded(
    nursery: trio.Nursery, encoding: bytes, compress: Callable[[bytes], bytes]
) -> None:
    server = await start(
        nursery,
        json_response(compress(page(1, 2)), b"Content-Encoding: " + encoding),
        json_response(compress(page(3)), b"Content-Encoding: " + encoding),
    )
    result = await poll(server.base + "/metrics")
    assert ended_by_the_script(result)
    assert ids(result) == ["1", "2", "3"]
    assert server.connections == 1


async def test_a_body_that_does_not_decompress_is_server_unavailable(
    nursery: trio.Nursery,
) -> None:
    server = await start(nursery, json_response(b"not gzip", b"Content-Encoding: gzip"))
    result = await poll(server.base + "/metrics")
    assert isinstance(result.error, ServerUnavailable)
    assert result.error.detail == "the server sent an unreadable gzip body"


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + page(1)[:10],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(page(1), 5)[:30],
    ],
    ids=["content-length", "chunked"],
)
async def test_a_server_that_dies_mid_body_is_unavailable(
    nursery: trio.Nursery, response: bytes
) -> None:
    server = await start(nursery, json_response(page(1)), send(response, keep=False))
    result = await poll(server.base + "/metrics")
    assert ids(result) == ["1"]
    assert isinstance(result.error, ServerUnavailable)
    assert result.error.detail == "the server closed the connection in the middle of the body"
    assert server.connections == 1  # a response had begun: not retried


async def test_garbage_instead_of_http_is_unavailable(nursery: trio.Nursery) -> None:
    server = await start(nursery, send(b"SSH-2.0-OpenSSH_9.6\r\n\r\n", keep=False))
    result = await poll(server.base + "/metrics")
    assert isinstance(result.error, ServerUnavailable)
    assert result.error.detail == "the server's response is not HTTP"


# -- redirects ----------------------------------------------------------------------


def redirect(location: str, status: bytes = b"302 Found") -> Answer:
    return send(
        b"HTTP/1.1 %s\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n" % (status, location.encode())
    )


async def test_redirects_are_followed_and_credentials_stay_with_their_origin(
    nursery: trio.Nursery,
) -> None:
    target = await start(nursery, json_response(page(1)), json_response(page(2)))
    first = await start(
        nursery,
        redirect("/next"),
        redirect(target.base + "/final", b"307 Temporary Redirect"),
        redirect("/next"),
        redirect(target.base + "/final"),
    )
    result = await poll(first.base + "/start?run=7", headers={"Authorization": "Bearer secret"})
    assert ended_by_the_script(result)  # the 404 of the third poll's last hop
    assert ids(result) == ["1", "2"]
    assert [r.line for r in first.requests[:2]] == [
        "GET /start?run=7 HTTP/1.1",
        "GET /next HTTP/1.1",
    ]
    assert all(r.headers["authorization"] == "Bearer secret" for r in first.requests)
    assert [r.line for r in target.requests[:2]] == ["GET /final HTTP/1.1"] * 2
    assert all("authorization" not in r.headers for r in target.requests)
    # Both origins kept their connection alive across polls.
    assert (first.connections, target.connections) == (1, 1)


async def test_a_redirect_loop_fails(nursery: trio.Nursery) -> None:
    server = await start(nursery, *[redirect("/again")] * 30)
    result = await poll(server.base + "/again")
    assert isinstance(result.error, Failed)
    assert result.error.detail == "more than 20 redirects"
    assert len(server.requests) == 21


async def test_a_cursor_is_merged_into_the_query(nursery: trio.Nursery) -> None:
    server = await start(nursery, json_response(page(1, 2)), json_response(page(3)))
    result = await poll(server.base + "/m?run=7&after=0", cursor_param="after")
    assert ids(result) == ["1", "2", "3"]
    assert [r.line for r in server.requests] == [
        "GET /m?run=7&after=0 HTTP/1.1",
        "GET /m?run=7&after=2 HTTP/1.1",
        "GET /m?run=7&after=3 HTTP/1.1",
    ]


async def test_credentials_in_the_url_are_sent_as_basic_auth(nursery: trio.Nursery) -> None:
    server = await start(nursery, json_response(page(1)))
    await poll(f"http://user:pa%20ss@127.0.0.1:{server.port}/m")
    assert server.requests[0].headers["authorization"] == "Basic dXNlcjpwYSBzcw=="  # user:pa ss


# -- TLS ------------------------------------------------------------------------------


@pytest.mark.usefixtures("trust_ca")
async def test_https_with_a_trusted_ca_keeps_the_connection(
    nursery: trio.Nursery, tls_server_context: ssl.SSLContext
) -> None:
    server = await start(
        nursery, json_response(page(1)), json_response(page(2)), tls=tls_server_context
    )
    result = await poll(server.base + "/metrics")
    assert ended_by_the_script(result)
    assert ids(result) == ["1", "2"]
    assert server.connections == 1


async def test_https_with_an_unknown_ca_is_a_tls_error(
    nursery: trio.Nursery, tls_server_context: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    server = await start(nursery, json_response(page(1)), tls=tls_server_context)
    result = await poll(server.base + "/metrics")
    assert ids(result) == []
    assert isinstance(result.error, ServerUnavailable)
    assert result.error.detail.startswith("TLS certificate verify failed: unknown issuer")


async def test_https_without_verification(
    nursery: trio.Nursery, tls_server_context: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    server = await start(nursery, json_response(page(1)), tls=tls_server_context)
    result = await poll(server.base + "/metrics", verify=False)
    assert ids(result) == ["1"]


# -- proxies --------------------------------------------------------------------------


async def test_a_proxy_from_the_environment_goes_through_httpx(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fake proxy answers the absolute-form requests itself: the endpoint's
    host does not even exist, so items can only have come through the proxy."""
    proxy = await start(nursery, json_response(page(1)), json_response(page(2)))
    monkeypatch.setenv("HTTP_PROXY", proxy.base)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    result = await poll("http://trainer.invalid:8890/metrics", cursor_param="after")
    assert ended_by_the_script(result)
    assert ids(result) == ["1", "2"]
    assert [r.line for r in proxy.requests] == [
        "GET http://trainer.invalid:8890/metrics HTTP/1.1",
        "GET http://trainer.invalid:8890/metrics?after=1 HTTP/1.1",
        "GET http://trainer.invalid:8890/metrics?after=2 HTTP/1.1",
    ]
    assert proxy.requests[0].headers["user-agent"].startswith("python-httpx/")


async def test_no_proxy_means_a_direct_connection(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = await start(nursery)
    server = await start(nursery, json_response(page(1)))
    monkeypatch.setenv("HTTP_PROXY", proxy.base)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    result = await poll(server.base + "/metrics")
    assert ids(result) == ["1"]
    assert proxy.requests == []
