"""A hung trainer: a real SSE server process frozen with SIGSTOP shows stale.

The trainer is a small Python SSE server in a process of its own
(:class:`~mux_core.testing.ServerProcess`); SIGSTOP freezes it with its
connection open -- the kernel keeps the socket, nothing is sent -- which is
what a deadlocked or stopped training job looks like. The real engine and
``sse`` transport watch it; the quality records say ``stale`` within a
second or two of the freeze, and fresh again once it goes on.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from mux_core.records import Quality, State
from mux_core.testing import CollectingSink, ServerProcess
from tests.helpers.e2e import running_engine

TRAINER = textwrap.dedent(
    """\
    import socket, sys, threading, time

    def stream(conn):
        conn.recv(65536)  # the request
        head = b"HTTP/1.1 200 OK\\r\\ncontent-type: text/event-stream\\r\\n\\r\\n"
        step = 0
        try:
            conn.sendall(head)
            while True:
                step += 1
                conn.sendall(b'id: %d\\ndata: {"step": %d, "loss": 0.5}\\n\\n' % (step, step))
                time.sleep(0.05)
        except OSError:
            conn.close()

    listener = socket.create_server(("127.0.0.1", int(sys.argv[1])))
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=stream, args=(conn,), daemon=True).start()
    """
)


def _qualities(sink: CollectingSink) -> list[Quality]:
    return [r for r in sink.records if type(r) is Quality]


async def _wait_for_quality(sink: CollectingSink, after: int, stale: bool) -> Quality:
    """The first Quality after index ``after`` that is connected with ``stale``."""

    def found(s: CollectingSink) -> bool:
        return any(q.state is State.CONNECTED and q.stale is stale for q in _qualities(s)[after:])

    await sink.wait_for(found, timeout=10.0)
    return next(q for q in _qualities(sink)[after:] if q.stale is stale)


async def test_a_trainer_frozen_with_sigstop_is_stale_and_fresh_once_it_goes_on(
    tmp_path: Path,
) -> None:
    script = tmp_path / "trainer.py"
    script.write_text(TRAINER)
    async with ServerProcess([sys.executable, str(script), "{port}"]) as trainer:
        toml = f"""
            quality_interval = 0.2
            [[sources]]
            name = "train"
            transport = "sse"
            url = "http://127.0.0.1:{trainer.port}/events"
            stale_after = 1.0
        """
        async with running_engine(textwrap.dedent(toml)) as (_, sink):
            await sink.wait_for(lambda s: len(s.events) >= 20)
            fresh = await _wait_for_quality(sink, 0, stale=False)
            assert fresh.events_total >= 1

            trainer.pause()  # SIGSTOP: the connection stays open, nothing comes
            paused_at = len(_qualities(sink))
            stale = await _wait_for_quality(sink, paused_at, stale=True)
            assert stale.state is State.CONNECTED  # still connected: only silence tells
            events_when_stale = len(sink.events)

            trainer.resume()  # SIGCONT: the trainer goes on where it stopped
            await sink.wait_for(lambda s: len(s.events) > events_when_stale)
            resumed_at = len(_qualities(sink))
            again = await _wait_for_quality(sink, resumed_at, stale=False)
            assert again.state is State.CONNECTED
    # Seen within seconds (each wait above has 10 s: stale_after 1 s, a record
    # every 0.2 s), long before the 45 s read timeout would drop the connection.
    statuses = [s.state for s in sink.statuses]
    assert statuses.count(State.CONNECTED) == 1  # no reconnect: the connection held
