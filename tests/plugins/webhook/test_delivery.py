"""Webhook delivery a pager can rely on, against real receivers on 127.0.0.1.

Retries (5xx, 429 and its Retry-After, TLS failures said in words), grouping
of an alert storm, a full queue that keeps the critical alerts, redirects
followed only within the origin, one summary line for what was dropped, and
the URL -- a secret -- never logged.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import ssl
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

from mux_core import Alert, Event, Severity, State, Status
from mux_core.testing import serve_sse
from mux_webhook._queue import Grouper, Pending, SendQueue

from .receiver import Receiver, serving, webhook_sink

TOKEN = "T0CANARY/B0CANARY/XoXoCanaryToken42"


def _alert(
    n: int, severity: Severity = Severity.CRITICAL, rule: str = "nonfinite", source: str = "train"
) -> Alert:
    return Alert(source, "sse", rule, severity, f"loss is NaN at step {n}", n, float(n))


def _hook(receiver: Receiver) -> str:
    return f"{receiver.origin}/services/{TOKEN}?token={TOKEN}"


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "mux.sink.webhook"]


# -- retries ------------------------------------------------------------------


async def test_503_then_200_is_delivered_after_retries(caplog: pytest.LogCaptureFixture) -> None:
    receiver = Receiver()
    receiver.script.extend([(503, []), (502, [])])
    async with serving(receiver), webhook_sink(_hook(receiver)) as sink:
        await sink.write([_alert(1)])
        await receiver.wait_for(3)
    assert [r.status for r in receiver.requests] == [503, 502, 200]
    assert [r["seq"] for r in receiver.records()] == [1]
    assert sink.sent == 1 and sink.dropped == 0 and sink.failures == 2
    retries = [m for m in _messages(caplog) if "; retry" in m]
    assert retries == [
        f"webhook 'hook': HTTP 503 from {receiver.origin}; retry 1 in 0.1 s",
        f"webhook 'hook': HTTP 502 from {receiver.origin}; retry 2 in 0.1 s",
    ]


async def test_429_is_retried_after_its_retry_after_within_the_cap(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Retry-After: 3600 waits ``max_delay`` (0.2 s here), not an hour."""
    receiver = Receiver()
    receiver.script.append((429, [("retry-after", "3600")]))
    async with serving(receiver), webhook_sink(_hook(receiver)) as sink:
        await sink.write([_alert(1)])
        await receiver.wait_for(2)
    assert [r.status for r in receiver.requests] == [429, 200]
    assert f"webhook 'hook': HTTP 429 from {receiver.origin}; retry 1 in 0.2 s" in _messages(caplog)


async def test_a_tls_failure_is_said_in_words_and_retried(
    ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    """A receiver whose certificate mux does not trust: the log says so, not ConnectError."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    receiver = Receiver()
    async with serving(receiver, tls=server) as port:
        url = f"https://127.0.0.1:{port}/services/{TOKEN}"
        async with webhook_sink(url, flush_timeout=0.1) as sink:
            await sink.write([_alert(1)])
            with trio.fail_after(10):
                await sink.request_failed.wait()
    (line, *_) = [m for m in _messages(caplog) if "; retry" in m]
    assert line.startswith(f"webhook 'hook': https://127.0.0.1:{port}: TLS")
    assert "certificate" in line.lower()  # the words of mux_core.describe_connection_error
    assert "ConnectError" not in line and TOKEN not in "\n".join(_messages(caplog))
    assert receiver.requests == []


async def test_a_private_ca_is_trusted_through_ca_file_and_verify_false_is_warned(
    ca: trustme.CA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The one TLS policy: ca_file trusts a private CA; verify = false
    delivers too, with the one warning line naming the sink."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    receiver = Receiver()
    async with serving(receiver, tls=server) as port:
        url = f"https://127.0.0.1:{port}/services/{TOKEN}"
        async with webhook_sink(url, ca_file=str(ca_file)) as sink:
            await sink.write([_alert(1)])
            await receiver.wait_for(1)
        async with webhook_sink(url, verify=False) as sink:
            await sink.write([_alert(2)])
            await receiver.wait_for(2)
    assert [r["seq"] for r in receiver.records()] == [1, 2]
    warnings = [r.getMessage() for r in caplog.records if "verify = false" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("sink 'hook': verify = false")


def test_a_missing_ca_file_is_a_config_error_at_its_line(tmp_path: Path) -> None:
    from mux_core._config import parse_config
    from mux_core._plugins import PluginManager
    from mux_core.errors import ConfigError

    plugins = PluginManager()
    plugins.load_entry_points()

    text = (
        '[[sinks]]\ntype = "webhook"\nurl = "https://hooks.example/x"\n'
        f'ca_file = "{tmp_path / "absent.pem"}"\n'
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, path="m.toml", plugins=plugins)
    assert "m.toml:4" in str(caught.value) and "ca_file" in str(caught.value)


# -- grouping -----------------------------------------------------------------


async def test_an_alert_storm_is_a_handful_of_posts() -> None:
    """200 alerts in a burst, two rules on two sources: the first of each group at
    once, then one summary per group counting the rest."""
    receiver = Receiver()
    storm = [
        _alert(n, Severity.CRITICAL if n % 2 else Severity.INFO, rule, source=source)
        for n in range(1, 51)
        for rule in ("nonfinite", "stall")
        for source in ("a", "b")
    ]
    assert len(storm) == 200
    async with (
        serving(receiver),
        webhook_sink(_hook(receiver), group_interval=0.3, min_severity="info") as sink,
    ):
        for first in range(0, 200, 20):
            await sink.write(storm[first : first + 20])

        def counted(r: Receiver) -> int:
            return sum(rec.get("grouped", {}).get("count", 1) for rec in r.records())

        await receiver.wait_until(lambda r: counted(r) == 200)
    assert len(receiver.requests) <= 4
    records = receiver.records()
    assert len(records) == 8  # per group: the first alert, one summary
    summaries = [r for r in records if "grouped" in r]
    assert sorted((r["source"], r["rule"]) for r in summaries) == sorted(
        (s, rule) for s in "ab" for rule in ("nonfinite", "stall")
    )
    for summary in summaries:
        assert summary["seq"] == 50 and summary["severity"] == "info"  # the latest alert
        assert summary["grouped"] == {"count": 49, "since": 2.0, "worst": "critical"}
    assert sink.sent == 8 and sink.dropped == 0


async def test_a_group_that_went_quiet_sends_its_next_alert_at_once() -> None:
    receiver = Receiver()
    async with serving(receiver), webhook_sink(_hook(receiver), group_interval=0.2) as sink:
        await sink.write([_alert(1)])
        # Another group with an alert held: its summary comes when its window
        # closes, after the first group's window (opened first) closed empty.
        await sink.write([_alert(2, rule="stall"), _alert(3, rule="stall")])
        await receiver.wait_until(lambda r: [x["seq"] for x in r.records()] == [1, 2, 3])
        await sink.write([_alert(4)])
        await receiver.wait_until(lambda r: len(r.records()) == 4)
    assert [("grouped" in r, r["seq"]) for r in receiver.records()] == [
        (False, 1),
        (False, 2),
        (False, 3),  # held, then sent alone: a summary of one is the alert itself
        (False, 4),  # at once, not held for a summary
    ]


async def test_status_changes_are_grouped_per_source_and_summaries_read_in_slack() -> None:
    receiver = Receiver()
    flaps = [
        Status("train", "sse", state, n, None, "connection refused", float(n))
        for n, state in enumerate([State.DISCONNECTED, State.CONNECTING] * 6 + [State.CONNECTED])
    ]
    async with (
        serving(receiver),
        webhook_sink(_hook(receiver), statuses=True, format="slack", group_interval=0.3) as sink,
    ):
        await sink.write(flaps)
        await receiver.wait_for(2)
    texts = [body["text"] for body in receiver.accepted()]
    assert texts == [
        "*train* disconnected: connection refused",
        "*train* connected: connection refused (x12 in 11.0s)",
    ]


def test_grouper_windows() -> None:
    grouper = Grouper(10.0)
    assert grouper.offer(_alert(1), now=0.0)  # the first goes at once
    assert not grouper.offer(_alert(2, Severity.INFO), now=1.0)  # held
    assert grouper.offer(_alert(3, rule="stall"), now=2.0)  # another group
    assert grouper.next_close() == 10.0
    assert grouper.due(9.9) == []
    (summary,) = grouper.due(10.0)
    assert summary == Pending(_alert(2, Severity.INFO), 1, 2.0, None)
    assert grouper.next_close() == 12.0  # stall's window; nonfinite's next is at 20
    assert grouper.due(12.0) == []  # stall held nothing: forgotten
    assert not grouper.offer(_alert(4), now=15.0)
    assert grouper.flush() == [Pending(_alert(4), 1, 4.0, None)]
    grouper = Grouper(10.0)
    assert grouper.offer(_alert(1), now=0.0)
    assert not grouper.offer(_alert(2), now=1.0) and not grouper.offer(_alert(3, Severity.INFO), 2)
    assert grouper.flush() == [Pending(_alert(3, Severity.INFO), 2, 2.0, Severity.CRITICAL)]
    assert Grouper(0).offer(_alert(1), now=0.0) and Grouper(0).next_close() is None


# -- a full queue -------------------------------------------------------------


def test_a_full_queue_drops_the_least_severe_oldest_first() -> None:
    queue = SendQueue(4)
    event = Pending(Event("train", "sse", "metric", "1", {}, 1.0, 1))
    info, warning = Pending(_alert(2, Severity.INFO)), Pending(_alert(3, Severity.WARNING))
    critical = [Pending(_alert(n)) for n in (4, 5, 6, 7)]
    assert [queue.put(item) for item in (critical[0], event, info, warning)] == [None] * 4
    assert queue.put(critical[1]) is event
    assert queue.put(critical[2]) is info
    assert queue.put(Pending(_alert(8, Severity.INFO))) is not None  # itself: all outrank it
    assert queue.put(critical[3]) is warning
    assert queue.put(Pending(_alert(9))) is critical[0]  # only critical left: the oldest
    assert [item.record.seq for item in queue.take(10)] == [5, 6, 7, 9]  # type: ignore[union-attr]
    summary = Pending(_alert(10, Severity.INFO), 5, 1.0, Severity.CRITICAL)
    assert summary.rank == critical[0].rank  # a summary of critical alerts counts as critical


async def test_a_full_queue_keeps_the_critical_alerts_and_logs_one_summary(
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = Receiver()
    with socket.socket() as placeholder:  # bound, not listening: connections are refused
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
        url = f"http://127.0.0.1:{port}/services/{TOKEN}"
        options: dict[str, Any] = {"queue": 5, "events": True, "min_severity": "info"}
        options["group_interval"] = 0
        async with webhook_sink(url, **options) as sink:
            await sink.write([_alert(1, Severity.INFO)])
            with trio.fail_after(10):
                await sink.request_failed.wait()  # alert 1 is in flight, being retried
            mixed: list[Any] = []
            for n in range(2, 42):
                if n % 10 == 0:
                    mixed.append(_alert(n))  # 4 critical among 36 others
                elif n % 3:
                    mixed.append(Event("train", "sse", "metric", str(n), {"n": n}, 1.0, n))
                else:
                    mixed.append(_alert(n, Severity.WARNING if n % 2 else Severity.INFO))
            await sink.write(mixed)
            assert sink.dropped == 35
            placeholder.close()
            async with serving(receiver, port):
                await receiver.wait_until(lambda r: len(r.records()) == 6)
    records = receiver.records()
    assert [r["seq"] for r in records if r.get("severity") == "critical"] == [10, 20, 30, 40]
    assert [r["seq"] for r in records] == [1, 10, 20, 30, 39, 40]  # and the newest warning
    drops = [m for m in _messages(caplog) if "dropped" in m]
    assert drops == [
        "webhook 'hook': 35 records dropped (the queue was full: 6 warning alerts, "
        "5 statuses and info alerts, 24 events); 35 so far",
        "webhook 'hook': 35 records dropped in this run",
    ]


# -- redirects ----------------------------------------------------------------


async def test_a_redirect_within_the_origin_is_followed() -> None:
    receiver = Receiver()
    receiver.script.extend([(307, [("location", "/moved")]), (308, [("location", "/final")])])
    async with serving(receiver), webhook_sink(_hook(receiver)) as sink:
        await sink.write([_alert(1)])
        await receiver.wait_for(3)
    assert [(r.status, r.path) for r in receiver.requests] == [
        (307, f"/services/{TOKEN}?token={TOKEN}"),
        (308, "/moved"),
        (200, "/final"),
    ]
    assert len({r.body for r in receiver.requests}) == 1  # the same POST each time
    assert sink.sent == 1 and sink.failures == 0


async def test_a_303_means_the_receiver_took_the_post() -> None:
    receiver = Receiver()
    receiver.script.append((303, [("location", "/thanks")]))
    async with serving(receiver), webhook_sink(_hook(receiver)) as sink:
        await sink.write([_alert(1)])
        await receiver.wait_for(1)
    assert sink.sent == 1 and len(receiver.requests) == 1


async def test_a_redirect_to_another_origin_is_not_followed_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Not followed (it would hand the alerts and the headers to another host); the
    batch is kept and retried, and goes once the receiver stops redirecting."""
    receiver, elsewhere = Receiver(), Receiver()
    async with serving(receiver), serving(elsewhere):
        receiver.script.extend([(302, [("location", f"{elsewhere.origin}/steal?k=1")])] * 2)
        headers = {"Authorization": "Bearer s3cr3t"}
        async with webhook_sink(_hook(receiver), headers=headers) as sink:
            await sink.write([_alert(1)])
            await receiver.wait_for(3)
    assert elsewhere.requests == []
    assert [r.status for r in receiver.requests] == [302, 302, 200]
    assert sink.sent == 1 and sink.dropped == 0
    (first, _) = [m for m in _messages(caplog) if "; retry" in m]
    assert first == (
        f"webhook 'hook': HTTP 302 from {receiver.origin} redirects to another origin "
        f"({elsewhere.origin}): not followed, it would send the alerts and the headers "
        "there; set url to the receiver's new address; retry 1 in 0.1 s"
    )


# -- the URL is a secret ------------------------------------------------------


async def test_a_client_error_drops_its_batch_and_never_shows_the_url(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A receiver that echoes the URL in its refusal: the log has neither."""
    receiver = Receiver()
    echo = f"no such hook: /services/{TOKEN}?token={TOKEN}\n\x1b[31m".encode()
    receiver.script.append((404, [], echo))
    async with serving(receiver), webhook_sink(_hook(receiver), batch=1) as sink:
        await sink.write([_alert(1), _alert(2, rule="stall")])
        await receiver.wait_for(2)
    assert [r["seq"] for r in receiver.records()] == [2]
    assert sink.dropped == 1
    messages = _messages(caplog)
    assert TOKEN not in "\n".join(messages) and "CANARY" not in "\n".join(messages)
    (error,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert error.getMessage() == (
        f"webhook 'hook': HTTP 404 from {receiver.origin}: 'no such hook: ***\\\\n\\\\x1b[31m'; "
        "dropping the batch (a client error is not retried: check the url and headers)"
    )


def _read(path: Path) -> str:
    return path.read_text(errors="replace")


async def test_a_real_run_never_writes_the_webhook_token(tmp_path: Path) -> None:
    """``mux run`` with a receiver that refuses, fails, redirects away and echoes:
    the canary token of the URL is nowhere in stderr."""
    receiver, elsewhere = Receiver(), Receiver()
    config = tmp_path / "canary.toml"
    stderr = tmp_path / "stderr"
    async with serve_sse() as sse, serving(receiver), serving(elsewhere):
        receiver.script.extend(
            [
                (400, [], f"bad hook {_hook(receiver)}".encode()),
                (503, []),
                (302, [("location", f"{elsewhere.origin}/services/{TOKEN}")]),
            ]
        )
        for n in range(1, 5):
            await sse.publish('{"loss": NaN}' if n % 2 else '{"loss": 1}')
        config.write_text(
            f"""
[[sources]]
name = "train"
transport = "sse"
url = "{sse.url}"

[[processors]]
type = "nonfinite"
fields = ["loss"]

[[sinks]]
type = "webhook"
url = "{_hook(receiver)}"
min_severity = "info"
group_interval = 0
batch = 1

[retry]
initial_delay = 0.05
max_delay = 0.2
jitter = 0
"""
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("MUX_")}
        async with trio.open_nursery() as nursery:
            with stderr.open("wb") as err:
                process: trio.Process = await nursery.start(
                    partial(
                        trio.run_process,
                        [sys.executable, "-m", "mux_core", "run", str(config)],
                        check=False,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=err,
                        env=env,
                    )
                )
            await receiver.wait_until(lambda r: len(r.records()) == 3, timeout=20)
            process.terminate()
            with trio.fail_after(15):
                assert await process.wait() == 0
    log = _read(stderr)
    assert "CANARY" not in log and "Canary" not in log
    assert re.search(r"webhook 'webhook': HTTP 400 from http://127\.0\.0\.1:\d+: 'bad hook ", log)
    assert "redirects to another origin" in log and elsewhere.requests == []
