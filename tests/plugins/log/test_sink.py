"""The log sink: levels, text and JSON lines, event sampling."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest

from mux_core.records import (
    Event,
    Quality,
    State,
    Status,
)
from mux_core.sink import SinkContext
from mux_log import LogOptions, LogSink

LOGGER = "mux.sink.log"


def _context(name: str = "log") -> SinkContext:
    def start_background(fn: Any) -> None:
        raise AssertionError("the log sink needs no background task")

    return SinkContext(
        name=name,
        config_name="t",
        sources=(),
        request_stop=lambda reason: None,
        start_background=start_background,
    )


def _status(
    state: State, attempt: int = 1, retry_in: float | None = None, detail: str = ""
) -> Status:
    return Status("train-sse", "sse", state, attempt, retry_in, detail, 1764250001.5)


def _event(seq: int, data: Any = None, source: str = "train-sse") -> Event:
    payload = {"step": seq, "loss": 0.31} if data is None else data
    return Event(source, "sse", "metric", str(seq), payload, 1764250000.123, seq)


def _sink(**options: Any) -> LogSink:
    return LogSink(LogOptions(**options), _context())


def _lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]


async def test_status_levels_and_text(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mux")
    sink = _sink()
    await sink.write(
        [
            _status(State.CONNECTING, 1),
            _status(State.SERVER_UNAVAILABLE, 2, 1.7, "connection refused"),
            _status(State.CONNECTING, 2),
            _status(State.CONNECTED, 1),
            _status(State.DISCONNECTED, 1, 30.0, "stream closed"),
            _status(State.ENDED, 1, None, "HTTP 204"),
        ]
    )
    await sink.write([_status(State.FAILED, 1, None, "HTTP 404")])
    await sink.write([_status(State.MAX_RETRIES_EXCEEDED, 3, None, "connection refused")])
    await sink.write([_status(State.STOPPED, 1)])
    assert _lines(caplog) == [
        (logging.INFO, "train-sse: connecting"),
        (
            logging.WARNING,
            "train-sse: server_unavailable (attempt 2, retry in 1.7 s): connection refused",
        ),
        (logging.WARNING, "train-sse: connecting (attempt 2)"),
        (logging.INFO, "train-sse: connected"),
        (logging.WARNING, "train-sse: disconnected (was connected, retry in 30 s): stream closed"),
        (logging.INFO, "train-sse: ended: HTTP 204"),
        (logging.ERROR, "train-sse: failed (attempt 1): HTTP 404"),
        (logging.ERROR, "train-sse: max_retries_exceeded (attempt 3): connection refused"),
        (logging.INFO, "train-sse: stopped"),
    ]


async def test_logger_is_named_after_the_sink(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mux")
    sink = LogSink(LogOptions(), _context("status-log"))
    await sink.write([_status(State.CONNECTED)])
    assert [r.name for r in caplog.records] == ["mux.sink.status-log"]


async def test_level_option_is_the_minimum(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mux")
    sink = _sink(level="warning", events=True)
    await sink.write(
        [
            _status(State.CONNECTING, 1),
            _event(1),
            _status(State.SERVER_UNAVAILABLE, 2, 1.115, "HTTP 503"),
            _status(State.FAILED, 2, None, "HTTP 401"),
        ]
    )
    assert _lines(caplog) == [
        (logging.WARNING, "train-sse: server_unavailable (attempt 2, retry in 1.115 s): HTTP 503"),
        (logging.ERROR, "train-sse: failed (attempt 2): HTTP 401"),
    ]


async def test_events_are_off_by_default(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mux")
    await _sink().write([_event(1), _event(2)])
    assert _lines(caplog) == []


async def test_events_text_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mux")
    sink = _sink(events=True)
    await sink.write([_event(17), _event(18, "plain text"), _event(19, "x" * 500)])
    lines = _lines(caplog)
    assert lines[0] == (logging.INFO, 'train-sse: metric id=17 seq=17 {"step":17,"loss":0.31}')
    assert lines[1] == (logging.INFO, "train-sse: metric id=18 seq=18 plain text")
    assert len(lines[2][1]) < 300 and lines[2][1].endswith("\u2026")


async def test_sample_every_per_source(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mux")
    sink = _sink(events=True, sample_every=3)
    await sink.write([_event(i) for i in range(1, 8)])
    await sink.write([_event(i, source="other") for i in range(1, 3)])
    seqs = [msg.split("seq=")[1].split()[0] for _, msg in _lines(caplog)]
    assert seqs == ["1", "4", "7", "1"]


async def test_json_format_is_the_jsonl_object(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mux")
    sink = _sink(format="json", events=True)
    await sink.write([_event(42), _status(State.SERVER_UNAVAILABLE, 2, 1.7, "connection refused")])
    messages = [msg for _, msg in _lines(caplog)]
    assert messages == [
        '{"type":"event","source":"train-sse","transport":"sse","event":"metric","id":"42",'
        '"data":{"step":42,"loss":0.31},"received_at":1764250000.123,"seq":42}',
        '{"type":"status","source":"train-sse","transport":"sse","state":"server_unavailable",'
        '"attempt":2,"retry_in":1.7,"detail":"connection refused","at":1764250001.5}',
    ]
    assert orjson.loads(messages[1])["state"] == "server_unavailable"


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize("format", ["text", "json"])
async def test_payloads_too_deep_to_encode_are_logged_as_text(
    format: str, caplog: pytest.LogCaptureFixture
) -> None:
    """300 deep (beyond orjson) is logged as JSON; 5000 deep (beyond any encoder) as
    its text with a warning; the events after them are logged too."""
    caplog.set_level(logging.DEBUG, logger="mux")
    raw = Event.from_bytes("train-sse", "sse", "metric", "1", b"[" * 300 + b"]" * 300, 1.0, 1)
    sink = _sink(events=True, format=format)
    await sink.write([raw, _event(2, _nested(300)), _event(3, _nested(5000)), _event(4)])
    lines = [msg for _, msg in _lines(caplog)]
    assert (len(lines) == 4 and "seq=4" in lines[3]) or '"seq":4' in lines[3]
    if format == "json":
        data = [orjson.loads(line)["data"] for line in lines]
        assert data[2] == "<dict nested too deep to show>"
        assert data[3] == {"step": 4, "loss": 0.31}
    else:
        assert lines[0].startswith("train-sse: metric id=1 seq=1 [[[[")
        assert lines[1].startswith('train-sse: metric id=2 seq=2 {"a":{"a":')
        assert lines[2] == 'train-sse: metric id=3 seq=3 "<dict nested too deep to show>"'
    warnings = [r.getMessage() for r in caplog.records if r.name == "mux.events"]
    assert warnings == ["event train-sse/3: payload written as text (it cannot be encoded as JSON)"]


def test_defaults_do_not_slow_sources() -> None:
    assert LogSink.default_overflow == "drop_oldest"
    assert LogSink.default_on_error == "drop"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"level": "loud"}, "level must be one of"),
        ({"format": "xml"}, "format must be one of"),
        ({"sample_every": 0}, "sample_every must be >= 1"),
    ],
)
def test_bad_options_are_clear(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LogOptions(**options)


def test_registers_as_log() -> None:
    import mux_log

    registered: dict[str, type[Any]] = {}
    mux_log.mux_register_sinks(lambda name, cls: registered.__setitem__(name, cls))
    assert registered == {"log": LogSink}


def _quality(**changes: Any) -> Quality:
    fields: dict[str, Any] = {
        "window": 3600.0,
        "uptime": 0.99234,
        "reconnects": 2,
        "blind_max": 4.1,
        "events": 35960,
        "gaps": 0,
        "lag_p99": 0.4,
        "at": 1764250001.5,
        "state": State.CONNECTED,
        "outages": 2,
        "blind_p50": 1.2,
        "events_per_s": 9.99,
        "staleness": 0.1,
        "lag_p50": 0.12,
    }
    fields.update(changes)
    return Quality("train-sse", "sse", **fields)


async def test_quality_is_one_summary_line_per_source_at_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="mux")
    sink = _sink()
    quiet = _quality(
        reconnects=1, outages=0, blind_max=None, blind_p50=None, lag_p50=None, lag_p99=None, gaps=1
    )
    stopped = _quality(
        state=State.STOPPED, window=42.5, staleness=None, reconnects=0, outages=1, blind_p50=4.1
    )
    no_ids = _quality(reconnects=1, outages=0, lag_p50=None, lag_p99=None, gaps=None)
    await sink.write([_quality(), quiet, stopped, no_ids])
    assert _lines(caplog) == [
        (
            logging.INFO,
            "train-sse: quality over 1h00m: up 99.2%, 2 reconnects, 2 outages (blind p50 1.2s, "
            "max 4.1s), 35960 events (10.0/s), 0 gaps, lag p50 120ms p99 400ms, "
            "last event 100ms ago",
        ),
        (
            logging.INFO,
            "train-sse: quality over 1h00m: up 99.2%, 1 reconnect, 35960 events (10.0/s), "
            "1 gap, last event 100ms ago",
        ),
        (
            logging.INFO,
            "train-sse: quality over 42.5s: up 99.2%, 0 reconnects, 1 outage (blind p50 4.1s, "
            "max 4.1s), 35960 events (10.0/s), 0 gaps, lag p50 120ms p99 400ms, now stopped",
        ),
        (
            logging.INFO,  # events without ids: a gap cannot be seen, so none is claimed
            "train-sse: quality over 1h00m: up 99.2%, 1 reconnect, 35960 events (10.0/s), "
            "gaps n/a, last event 100ms ago",
        ),
    ]


async def test_quality_lines_can_be_turned_off_or_written_as_json(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="mux")
    await _sink(quality=False).write([_quality()])
    assert _lines(caplog) == []
    await _sink(format="json").write([_quality()])
    ((level, message),) = _lines(caplog)
    assert level == logging.INFO
    assert orjson.loads(message)["type"] == "quality"
    assert orjson.loads(message)["reconnects"] == 2


async def test_attempt_numbers_read_consistently_across_a_real_server_restart(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A ws and a rest source through a server stop and restart: the drop of the
    healthy connection says "was connected", then every failure line carries the
    number of the ``connecting`` line right before it, counting 1, 2, 3 ... --
    never the same number twice in a row (it used to: ``server_unavailable
    (attempt 1)`` twice for rest, ``disconnected (attempt 1)`` then
    ``server_unavailable (attempt 1)`` for ws)."""
    import re

    import trio

    from mux_core._config import parse_config
    from mux_core._plugins import PluginManager
    from mux_core._run.engine import Engine
    from mux_core.testing import serve_rest, serve_ws

    caplog.set_level(logging.INFO, logger="mux")
    plugins = PluginManager()
    plugins.load_entry_points(only=set())

    def lines(source: str) -> list[str]:
        prefix = f"{source}: "
        return [m[len(prefix) :] for _, m in _lines(caplog) if m.startswith(prefix)]

    class _Logged(logging.Handler):
        """Wakes the test at each log line (the log sink logs from trio's thread)."""

        changed = trio.Event()

        def emit(self, record: logging.LogRecord) -> None:
            self.changed.set()

    logged = _Logged()
    logging.getLogger(LOGGER).addHandler(logged)

    async def wait_until(condition: Any) -> None:
        with trio.fail_after(15):
            while True:
                logged.changed = trio.Event()
                if condition():
                    return
                await logged.changed.wait()

    async with serve_ws() as ws, serve_rest() as rest:
        await ws.publish({"step": 1, "id": "1"})
        await rest.publish({"step": 1}, id="1")
        config = parse_config(
            f"""
[retry]
initial_delay = 0.02
max_delay = 0.05
[[sources]]
name = "w"
transport = "ws"
url = "{ws.url}"
id_field = "id"
[[sources]]
name = "r"
transport = "rest"
url = "{rest.url}"
interval = 0.05
[[sinks]]
type = "log"
events = true
""",
            path="attempts.toml",
            plugins=plugins,
        )
        engine = Engine(config, plugins)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(engine.run)
            await wait_until(lambda: all("connected" in lines(s) for s in ("w", "r")))
            # An event makes each connection healthy: the count starts over after it.
            await ws.publish({"step": 2, "id": "2"})
            await rest.publish({"step": 2}, id="2")
            await wait_until(lambda: all(any("seq=2" in x for x in lines(s)) for s in ("w", "r")))
            await ws.stop()
            await rest.stop()
            await wait_until(lambda: all("connecting (attempt 3)" in lines(s) for s in ("w", "r")))
            await ws.start()
            await rest.start()
            await wait_until(lambda: all(lines(s).count("connected") == 2 for s in ("w", "r")))
            engine.request_stop("test over")
    logging.getLogger(LOGGER).removeHandler(logged)

    for source in ("w", "r"):
        log = [line for line in lines(source) if " seq=" not in line]
        first, second = (i for i, line in enumerate(log) if line == "connected")
        outage = log[first + 1 : second]
        assert re.fullmatch(r"(disconnected|server_unavailable) \(was connected, .*", outage[0])
        numbers = [int(n) for n in re.findall(r"\(attempt (\d+)", "\n".join(outage[1:]))]
        # connecting N, failure N, connecting N+1, failure N+1, ..., connecting K.
        tries = (len(numbers) + 1) // 2
        assert numbers == [n for k in range(1, tries + 1) for n in (k, k)][: len(numbers)]
        assert tries >= 3, outage
