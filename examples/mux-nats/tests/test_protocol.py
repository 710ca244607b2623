"""The protocol parser alone: frames from bytes in any cut, and its limits."""

import pytest
from mux_nats.protocol import (
    Err,
    Info,
    Msg,
    Parser,
    Ping,
    Pong,
    ProtocolError,
    connect,
    pub,
    status_of,
    sub,
)

STREAM = (
    b'INFO {"server_id":"x","max_payload":1048576} \r\n'
    b"PING\r\n"
    b"MSG ev.a 1  7\r\n"  # nats-server 2.9 writes two spaces before a size
    b'{"n":1}\r\n'
    b"MSG ev.b 1 $JS.ACK.S.mux.1.2.2.1796646410642940956.0 2\r\n"
    b"hi\r\n"
    b"HMSG _INBOX.x.pull1 1 28 28\r\n"
    b"NATS/1.0 404 No Messages\r\n\r\n\r\n"
    b"pong\r\n"
    b"-ERR 'Stale Connection'\r\n"
)

EXPECTED = [
    Info({"server_id": "x", "max_payload": 1048576}),
    Ping(),
    Msg("ev.a", "1", None, b"", b'{"n":1}'),
    Msg("ev.b", "1", "$JS.ACK.S.mux.1.2.2.1796646410642940956.0", b"", b"hi"),
    Msg("_INBOX.x.pull1", "1", None, b"NATS/1.0 404 No Messages\r\n\r\n", b""),
    Pong(),
    Err("Stale Connection"),
]


def test_every_frame_whole_and_cut_at_every_byte() -> None:
    assert Parser(max_payload=1024).feed(STREAM) == EXPECTED
    for cut in range(1, len(STREAM)):
        parser = Parser(max_payload=1024)
        assert parser.feed(STREAM[:cut]) + parser.feed(STREAM[cut:]) == EXPECTED, cut
    parser = Parser(max_payload=1024)
    assert [f for byte in STREAM for f in parser.feed(bytes([byte]))] == EXPECTED


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"HTTP/1.1 200 OK\r\n", "not the NATS protocol: b'HTTP/1.1 200 OK'"),
        (b"\xff\xfe garbage\r\n", "not the NATS protocol: b'\\xff\\xfe garbage'"),
        (b"INFO [1, 2]\r\n", "an INFO that is not a JSON object: b'[1, 2]'"),
        (b"MSG ev.a 1 x\r\n", "a malformed MSG line: b'MSG ev.a 1 x'"),
        (b"HMSG ev.a 1 9 4\r\n", "a malformed HMSG line: b'HMSG ev.a 1 9 4'"),
        (b"MSG ev.a 1 2000\r\n", "a message of 2,000 bytes is over the limit of 1,024"),
        (b"MSG ev.a 1 2\r\nabcd\r\n", "a message of 2 bytes is not followed by CRLF"),
        (b"x" * 70_000, "a line longer than 65536 bytes: b'xxxxx"),
    ],
)
def test_what_is_not_nats_is_an_error_that_says_what_came(data: bytes, problem: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        Parser(max_payload=1024).feed(data)
    assert str(caught.value).startswith(problem)
    assert len(str(caught.value)) < 200  # a flood is not copied into the detail


def test_an_endless_line_is_refused_before_it_is_all_buffered() -> None:
    parser = Parser(max_payload=1024, max_line=100)
    parser.feed(b"x" * 100)
    with pytest.raises(ProtocolError):
        parser.feed(b"x")


def test_status_headers_and_commands() -> None:
    assert status_of(b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 4\r\n\r\n") == (
        408,
        "Request Timeout",
    )
    assert status_of(b"NATS/1.0 503\r\n\r\n") == (503, "")
    assert status_of(b"NATS/1.0\r\nNats-Msg-Id: 7\r\n\r\n") == (None, "")
    assert connect({"user": "u"}) == b'CONNECT {"user":"u"}\r\nPING\r\n'
    assert sub("ev.>", "3") == b"SUB ev.> 3\r\n"
    assert pub("$JS.ACK.S.m.1.2.2.3.0", b"+ACK") == b"PUB $JS.ACK.S.m.1.2.2.3.0 4\r\n+ACK\r\n"
    assert pub("a", b"x", "_INBOX.1") == b"PUB a _INBOX.1 1\r\nx\r\n"
