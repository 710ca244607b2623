"""``mux run`` with the nats transport and the file sink, through real faults.

Refused credentials end the source ``failed`` (terminal, the password shown
nowhere); a server speaking garbage is retried with a detail that says so.

JetStream: 2,000 messages published while mux consumes them; nats-server is
killed with SIGKILL mid-way and restarted on the same port (its store kept),
then mux itself is killed with SIGKILL and started again with the same
``--state``. The file must hold every message the stream acknowledged to
the publisher exactly once: nothing lost, nothing twice.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import trio
from muxrun import event_ids, records, start_mux, stderr_of, terminate, wait_exit, wait_for_events
from publisher import NoJetStream, connect, create_stream, nats_server

from mux_core.testing import Hangup, Plan, Send, serve_hostile

TOTAL = 2000
#: How far the publisher may run ahead of what the file holds: mux is always mid-way.
AHEAD = 300
#: Messages sent before their acks are read: the stream grows faster than mux reads.
BURST = 100


def _config(path: Path, port: int, out: Path, source: str, retry: str = "") -> Path:
    path.write_text(
        f"""
[retry]
initial_delay = 0.05
max_delay = 0.5
{retry}

[[sources]]
name = "bus"
transport = "nats"
port = {port}
{source}

[[sinks]]
type = "file"
path = "{out}"
flush_interval = 0.05
"""
    )
    return path


class Feed:
    """Publishes ev.1 .. ev.TOTAL into the stream, each with its Nats-Msg-Id, and
    keeps what the stream acknowledged; rides out the server's kills."""

    def __init__(self, port: int, out: Path) -> None:
        self.port = port
        self.out = out
        #: n -> the stream sequence the server acknowledged for message n.
        self.acked: dict[int, int] = {}
        self.done = trio.Event()
        self._held = 0
        self._published = trio.Event()

    async def next_burst(self) -> None:
        """Wait until the next burst is in the stream: mux has ~BURST messages to read."""
        await self._published.wait()

    async def run(self) -> None:
        n = 1
        with trio.fail_after(60):
            while n <= TOTAL:
                try:
                    async with connect(self.port) as nats:
                        while n <= TOTAL:
                            await self._not_too_far_ahead(n + BURST)
                            burst = range(n, min(n + BURST, TOTAL + 1))
                            sent = [(f"ev.{i}", b'{"n": %d}' % i, str(i)) for i in burst]
                            self.acked.update(zip(burst, await nats.js_publish(sent), strict=True))
                            self._published.set()
                            self._published = trio.Event()
                            n = burst[-1] + 1
                except (OSError, EOFError, trio.BrokenResourceError, NoJetStream):
                    # Killed or still starting (no JetStream yet): a server coming
                    # back can only be polled. The burst goes again with the same
                    # Msg-Ids, so what was stored is not stored twice.
                    await trio.sleep(0.05)
        self.done.set()

    async def _not_too_far_ahead(self, n: int) -> None:
        while n - AHEAD > self._held:
            self._held = len(set(event_ids(self.out, "bus")))
            if n - AHEAD > self._held:
                await trio.sleep(0.02)  # another process writes the file


async def test_jetstream_nothing_lost_nothing_twice_through_kill_9s(tmp_path: Path) -> None:
    out, state = tmp_path / "events.jsonl", tmp_path / "state"
    server = nats_server("-js", "-sd", str(tmp_path / "jetstream"))
    async with server, trio.open_nursery() as nursery:
        await create_stream(server.port, "EVENTS", ["ev.>"])
        source = (
            'mode = "jetstream"\nstream = "EVENTS"\nsubject = "ev.>"\nbatch = 50\nack_wait = 1.0'
        )
        config = _config(tmp_path / "mux.toml", server.port, out, source)
        mux = await start_mux(nursery, config, "--state", str(state))
        feed = Feed(server.port, out)
        nursery.start_soon(feed.run)
        await wait_for_events(out, "bus", 500, mux)
        await feed.next_burst()
        await server.kill()  # SIGKILL, mid-way: the publisher and mux both lose it
        await server.restart()  # the same port, the same store
        await wait_for_events(out, "bus", 1200, mux)
        await feed.next_burst()
        mux.kill()  # SIGKILL: no shutdown, no final checkpoint
        assert await wait_exit(mux) == -9
        before_kill = set(event_ids(out, "bus"))
        mux = await start_mux(nursery, config, "--state", str(state))
        with trio.fail_after(60):
            await feed.done.wait()
        expected = {str(seq) for seq in feed.acked.values()}
        await wait_for_events(out, "bus", len(expected), mux)
        assert await terminate(mux) == 0, stderr_of(config)
    ids = event_ids(out, "bus")
    missing = sorted(expected - set(ids), key=int)
    twice = sorted((i for i, c in Counter(ids).items() if c > 1), key=int)
    assert not missing, f"{len(missing)} lost: {missing[:20]}"
    assert not twice, (
        f"{len(twice)} twice, {sum(i in before_kill for i in twice)} of them written before"
        f" mux was killed: {twice[:20]}"
    )
    assert len(expected) == TOTAL  # each message stored once, whatever the kills
    events = [r for r in records(out) if r["type"] == "event"]
    assert sorted(e["data"]["n"] for e in events) == list(range(1, TOTAL + 1))
    assert {e["event"] for e in events[:3]} == {"ev.1", "ev.2", "ev.3"}


def _statuses(out: Path) -> list[tuple[str, str]]:
    return [(r["state"], r["detail"]) for r in records(out) if r["type"] == "status"]


async def test_refused_credentials_end_the_source_failed(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    async with nats_server("--user", "mux", "--pass", "right-horse") as server:
        source = 'subject = "a"\nuser = "mux"\npassword = "wrong-battery-staple"'
        config = _config(tmp_path / "mux.toml", server.port, out, source)
        async with trio.open_nursery() as nursery:
            code = await wait_exit(await start_mux(nursery, config))
    assert code == 3  # a source ended failed
    assert _statuses(out) == [
        ("connecting", ""),
        (
            "failed",
            "authorization violation: the server refused the credentials"
            " -- check user and password, or token",
        ),
    ]
    assert "wrong-battery-staple" not in out.read_text() + stderr_of(config)


async def test_a_server_speaking_garbage_is_retried_with_a_readable_detail(
    tmp_path: Path,
) -> None:
    out = tmp_path / "events.jsonl"
    http: Plan = [Send(b"HTTP/1.1 400 Bad Request\r\n\r\n"), Hangup()]
    async with serve_hostile(http, read_request=False) as hostile:
        config = _config(
            tmp_path / "m.toml", hostile.port, out, 'subject = "a"', "max_attempts = 3"
        )
        async with trio.open_nursery() as nursery:
            code = await wait_exit(await start_mux(nursery, config))
    detail = "not the NATS protocol: b'HTTP/1.1 400 Bad Request'"
    assert code == 3
    assert _statuses(out) == [
        *[("connecting", ""), ("disconnected", detail)] * 2,
        ("connecting", ""),
        ("max_retries_exceeded", f"3 attempts in a row failed; last: {detail}"),
    ]
