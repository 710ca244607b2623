"""The webhook sink against a real HTTP server on 127.0.0.1 (a small h11 server here).

Retries use a fast, jitter-free policy; waits are on the server's request
events with deadlines. "Down then up" is a port with nobody listening (the
connection is refused) on which the server then starts.
"""

from __future__ import annotations

import socket
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import orjson
import pytest
import trio

import mux_core.testing
from mux_core import Alert, Event, Severity, State, Status
from mux_webhook import WebhookOptions, WebhookSink

from .receiver import Receiver, serving, webhook_sink


def _alert(n: int, severity: Severity = Severity.CRITICAL, rule: str = "nonfinite") -> Alert:
    return Alert("train-sse", "sse", rule, severity, f"loss is NaN at step {n}", n, 1.5)


def _sink(port: int, **options: Any) -> AbstractAsyncContextManager[WebhookSink]:
    url = options.pop("url", f"http://127.0.0.1:{port}/hook")
    options.setdefault("group_interval", 0)  # grouping has tests of its own
    return webhook_sink(url, **options)


async def test_alerts_are_posted_as_json_records_by_severity() -> None:
    receiver = Receiver()
    async with serving(receiver) as port, _sink(port, headers={"X-Token": "t0k"}) as sink:
        event = Event("train-sse", "sse", "metric", "1", {"loss": 0.3}, 1.0, 1)
        status = Status("train-sse", "sse", State.CONNECTED, 1, None, "", 1.0)
        info = _alert(2, Severity.INFO)
        await sink.write([event, status, _alert(1), info, _alert(3, Severity.WARNING, "stall")])
        await receiver.wait_for(1)
    (body,) = receiver.accepted()
    assert body == [
        {
            "type": "alert",
            "source": "train-sse",
            "transport": "sse",
            "rule": "nonfinite",
            "severity": "critical",
            "message": "loss is NaN at step 1",
            "seq": 1,
            "at": 1.5,
        },
        {
            "type": "alert",
            "source": "train-sse",
            "transport": "sse",
            "rule": "stall",
            "severity": "warning",
            "message": "loss is NaN at step 3",
            "seq": 3,
            "at": 1.5,
        },
    ]
    headers = receiver.requests[0].headers
    assert headers["content-type"] == "application/json" and headers["x-token"] == "t0k"
    assert sink.sent == 2 and sink.dropped == 0


async def test_a_nan_the_file_keeps_as_a_literal_is_null_in_a_strict_json_body() -> None:
    receiver = Receiver()
    async with serving(receiver) as port, _sink(port, events=True) as sink:
        raw = b'{"step": 7, "loss": NaN, "lr": Infinity, "note": "NaN"}'
        await sink.write([Event.from_bytes("train-sse", "sse", "metric", "7", raw, 1.0, 7)])
        await receiver.wait_for(1)
    (body,) = receiver.accepted()  # orjson: a strict parser, as receivers use
    assert body[0]["data"] == {"step": 7, "loss": None, "lr": None, "note": "NaN"}


async def test_events_and_statuses_when_asked_and_the_slack_payload() -> None:
    receiver = Receiver()
    async with (
        serving(receiver) as port,
        _sink(port, format="slack", events=True, statuses=True, min_severity="info") as sink,
    ):
        event = Event("train-sse", "sse", "metric", "1", {"loss": 0.3}, 1.0, 1)
        status = Status("train-sse", "sse", State.SERVER_UNAVAILABLE, 2, 1.0, "HTTP 503", 1.0)
        await sink.write([event, status, _alert(1), _alert(2, Severity.INFO)])
        await receiver.wait_for(1)
    (body,) = receiver.accepted()
    assert body == {
        "text": '*train-sse* metric {"loss":0.3}\n'
        "*train-sse* server_unavailable: HTTP 503\n"
        ":red_circle: *train-sse* nonfinite (critical): loss is NaN at step 1\n"
        ":white_check_mark: *train-sse* nonfinite (info): loss is NaN at step 2"
    }


async def test_server_down_then_up_delivers_everything_after_retries() -> None:
    receiver = Receiver()
    with socket.socket() as placeholder:  # bound, not listening: connections are refused
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
        async with _sink(port) as sink:
            await sink.write([_alert(1), _alert(2)])
            with trio.fail_after(10):
                for _ in range(2):  # refused, backing off, refused again
                    await sink.request_failed.wait()
            placeholder.close()
            async with serving(receiver, port):  # the receiver comes up on that port
                await sink.write([_alert(3)])
                await receiver.wait_for(1)
                if sum(len(b) for b in receiver.accepted()) < 3:
                    await receiver.wait_for(2)
    delivered = [record["seq"] for body in receiver.accepted() for record in body]
    assert delivered == [1, 2, 3]
    assert sink.dropped == 0 and sink.failures >= 2


async def test_retry_after_5xx_and_a_client_error_drops_only_its_batch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = Receiver()
    receiver.script.extend([(503, [("retry-after", "0")]), (400, [])])
    async with serving(receiver) as port, _sink(port, batch=1) as sink:
        await sink.write([_alert(1), _alert(2)])
        await receiver.wait_for(3)
    statuses = [r.status for r in receiver.requests]
    assert statuses == [503, 400, 200]
    seqs = [orjson.loads(r.body)[0]["seq"] for r in receiver.requests]
    assert seqs == [1, 1, 2]  # alert 1 retried after the 503, then refused (400): dropped
    assert sink.dropped == 1 and sink.sent == 1
    assert any("HTTP 400" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)


async def test_a_full_queue_drops_the_oldest_and_counts() -> None:
    receiver = Receiver()
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
        async with _sink(port, queue=3, batch=10) as sink:
            await sink.write([_alert(1)])
            with trio.fail_after(10):
                await sink.request_failed.wait()  # alert 1 is in flight, being retried
            await sink.write([_alert(n) for n in range(2, 8)])  # 6 more: 3 fit
            assert sink.dropped == 3
            placeholder.close()
            async with serving(receiver, port):
                await receiver.wait_for(2)
    delivered = [record["seq"] for body in receiver.accepted() for record in body]
    assert delivered == [1, 5, 6, 7]


async def test_close_gives_up_after_flush_timeout_and_counts_the_rest() -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
        with trio.fail_after(10):
            async with _sink(port, flush_timeout=0.3) as sink:
                await sink.write([_alert(1), _alert(2)])
    assert sink.dropped == 2 and sink.sent == 0


def test_options_reject_a_url_that_is_not_http() -> None:
    with pytest.raises(ValueError, match="must be an http:// or https:// URL"):
        WebhookOptions(url="ftp://example.org/hook")


def _old_url_verdict(value: str) -> str:
    """The url check as it was (httpx parses every URL): its message, or ""."""
    try:
        url = httpx.URL(value)
    except Exception as exc:
        return f"url: not a URL ({exc})"
    if url.scheme not in ("http", "https") or not url.host:
        return f"url must be an http:// or https:// URL, got {value!r}"
    return ""


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/services/T0/B0/x?a=b",
        "http://127.0.0.1:8080/hook",
        "HTTP://Example.COM",
        "http://999.1.1.1/",
        "http://[::1]:80/",
        "http://user:pw@h/",
        "http://h:x/",
        "http:///nohost",
        "ftp://example.org/hook",
        "example.org/hook",
        "http://bücher.de/",
        "http://h/\x00",
        "",
    ],
)
def test_options_check_the_url_as_httpx_parses_it(url: str) -> None:
    """A plain URL passes without httpx; any other gets the message it always got."""
    expected = _old_url_verdict(url)
    if not expected:
        assert WebhookOptions(url=url).url == url
        return
    with pytest.raises(ValueError) as caught:
        WebhookOptions(url=url)
    assert str(caught.value) == expected


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ('{ X-Token = "caf\\u00e9" }', "sinks[0].headers.X-Token: the value must be printable"),
        ('{ X-Token = "a\\r\\nInjected: 1" }', "sinks[0].headers.X-Token: the value must be"),
        ('{ X-Token = "a\\nb" }', "sinks[0].headers.X-Token: the value must be printable ASCII"),
        ('{ "X Token" = "t0k" }', "sinks[0].headers: 'X Token' is not a valid HTTP header name"),
    ],
    ids=["non-ASCII", "CR/LF", "LF", "bad name"],
)
def test_mux_check_rejects_a_header_no_request_could_carry(headers: str, message: str) -> None:
    """A config error at the key's line (not a UnicodeEncodeError on every POST);
    the value itself, a credential, is not shown."""
    import mux_webhook
    from mux_core import ConfigError, parse_config
    from mux_core._plugins import PluginManager

    plugins = PluginManager()
    plugins.register(mux_webhook, name="webhook")
    plugins.register(mux_core.testing, name="testing")
    text = (
        '[[sources]]\nname = "s"\ntransport = "scripted"\n\n[[sinks]]\ntype = "webhook"\n'
        f'url = "https://hooks.example.com/x"\nheaders = {headers}\n'
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, path="mon.toml", plugins=plugins)
    assert str(info.value).startswith(f"mon.toml:8: {message}")
    assert "caf" not in str(info.value) and "Injected" not in str(info.value)


async def test_header_values_are_sent_without_surrounding_whitespace() -> None:
    """``"Bearer ${TOKEN:-}"`` with the variable unset sends ``Bearer``, not a failed POST."""
    receiver = Receiver()
    async with serving(receiver) as port, _sink(port, headers={"X-Token": " t0k "}) as sink:
        await sink.write([_alert(1)])
        await receiver.wait_for(1)
    assert receiver.requests[0].headers["x-token"] == "t0k"
