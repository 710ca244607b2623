"""The file sink: exact JSON Lines, rotation, flushing, clear path errors."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio

from mux_core.records import (
    Event,
    Record,
    State,
    Status,
)
from mux_core.sink import SinkContext
from mux_file import FileOptions, FileSink

EVENT = Event("train-sse", "sse", "metric", "42", {"step": 42, "loss": 0.31}, 1764250000.123, 17)
STATUS = Status(
    "train-sse", "sse", State.SERVER_UNAVAILABLE, 2, 1.7, "connection refused", 1764250001.5
)
EVENT_LINE = (
    b'{"type":"event","source":"train-sse","transport":"sse","event":"metric","id":"42",'
    b'"data":{"step":42,"loss":0.31},"received_at":1764250000.123,"seq":17}\n'
)
STATUS_LINE = (
    b'{"type":"status","source":"train-sse","transport":"sse","state":"server_unavailable",'
    b'"attempt":2,"retry_in":1.7,"detail":"connection refused","at":1764250001.5}\n'
)

Opener = Callable[..., Awaitable[FileSink]]


@pytest.fixture
async def open_sink() -> AsyncIterator[Opener]:
    """Open file sinks whose background tasks run in a test nursery."""
    async with trio.open_nursery() as nursery:

        def start_background(fn: Callable[[], Awaitable[Any]]) -> None:
            nursery.start_soon(fn)

        async def opener(**options: Any) -> FileSink:
            context = SinkContext(
                name="file",
                config_name="t",
                sources=(),
                request_stop=lambda reason: None,
                start_background=start_background,
            )
            sink = FileSink(FileOptions(**options), context)
            await sink.open()
            return sink

        yield opener
        nursery.cancel_scope.cancel()


def _events(count: int, start: int = 1) -> list[Record]:
    stop = start + count
    return [Event("src", "sse", "message", str(i), {"i": i}, 1.5, i) for i in range(start, stop)]


def _seqs(*paths: Path) -> list[int]:
    return [orjson.loads(line)["seq"] for p in paths for line in p.read_bytes().splitlines()]


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def test_lines_are_byte_exact(open_sink: Opener, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    sink = await open_sink(path=str(path))
    await sink.write([EVENT, STATUS])
    await sink.write([EVENT])
    await sink.aclose()
    assert path.read_bytes() == EVENT_LINE + STATUS_LINE + EVENT_LINE


async def test_appends_to_an_existing_file_on_a_fresh_line(
    open_sink: Opener, tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(STATUS_LINE + b'{"type":"ev')  # a previous run died mid-line
    sink = await open_sink(path=str(path))
    await sink.write([EVENT])
    await sink.aclose()
    assert path.read_bytes() == STATUS_LINE + b'{"type":"ev\n' + EVENT_LINE


async def test_aclose_writes_everything_buffered(open_sink: Opener, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    sink = await open_sink(path=str(path), flush_interval=3600.0)
    for start in range(1, 10_001, 250):
        await sink.write(_events(250, start))
    await sink.aclose()
    assert _seqs(path) == list(range(1, 10_001))
    await sink.aclose()  # idempotent


async def test_missing_directories_are_created(open_sink: Opener, tmp_path: Path) -> None:
    path = tmp_path / "runs" / "today" / "events.jsonl"
    FileSink.Options.check(FileOptions(path=str(path)))
    assert not (tmp_path / "runs").exists()  # check() creates nothing
    sink = await open_sink(path=str(path))
    await sink.write([STATUS])
    await sink.aclose()
    assert path.read_bytes() == STATUS_LINE


async def test_relative_path_and_tilde(
    open_sink: Opener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    relative = await open_sink(path="runs/a.jsonl")
    home = await open_sink(path="~/b.jsonl")
    for sink in (relative, home):
        await sink.write([EVENT])
        await sink.aclose()
    assert (tmp_path / "runs" / "a.jsonl").read_bytes() == EVENT_LINE
    assert (tmp_path / "home" / "b.jsonl").read_bytes() == EVENT_LINE


async def test_flush_interval_reaches_disk_without_close(open_sink: Opener, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    sink = await open_sink(path=str(path), flush_interval=0.05)
    await sink.write([EVENT, STATUS])
    assert path.read_bytes() == b""  # buffered, not yet handed to the OS
    with trio.fail_after(5):
        # The condition is the file's content; there is no event to wait on.
        while path.read_bytes() != EVENT_LINE + STATUS_LINE:  # noqa: ASYNC110
            await trio.sleep(0.01)
    await sink.aclose()


async def test_a_large_buffer_is_written_before_the_timer(
    open_sink: Opener, tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl"
    sink = await open_sink(path=str(path), flush_interval=3600.0)
    big = [Event("src", "sse", "message", None, "x" * 1000, 1.0, i) for i in range(1, 1200)]
    await sink.write(big)  # > 1 MiB encoded: written in write()
    assert len(path.read_bytes().splitlines()) == len(big)
    await sink.aclose()


async def test_rotation_keeps_whole_lines_and_every_record(
    open_sink: Opener, tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl"
    sink = await open_sink(path=str(path), rotate_bytes=1000, keep=3)
    total = 0
    for start in range(1, 201, 7):
        batch = _events(7, start)
        await sink.write(batch)
        await sink.flush()  # each flush may rotate mid-batch, between lines
        total += len(batch)
    await sink.aclose()
    files = [Path(f"{path}.{n}") for n in (3, 2, 1)] + [path]
    assert _names(tmp_path) == sorted(f.name for f in files)  # .4 and beyond are gone
    for f in files:
        data = f.read_bytes()
        assert 0 < len(data) <= 1000
        assert data.endswith(b"\n")
        for line in data.splitlines():
            orjson.loads(line)  # every line is whole
    seqs = _seqs(*files)
    assert seqs == sorted(seqs)  # oldest file first, order kept across files
    assert seqs[-1] == total  # the newest record is in the live file


async def test_rotation_with_enough_keep_preserves_all_lines(
    open_sink: Opener, tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl"
    sink = await open_sink(path=str(path), rotate_bytes=4096, keep=1000)
    await sink.write(_events(2000))  # one big buffer, split at many line boundaries
    await sink.aclose()
    rotated = sorted(
        (tmp_path / name for name in _names(tmp_path) if name != "events.jsonl"),
        key=lambda p: -int(p.suffix[1:]),
    )
    assert len(rotated) > 10
    assert _seqs(*rotated, path) == list(range(1, 2001))
    assert all(len(p.read_bytes()) <= 4096 for p in [*rotated, path])


async def test_a_line_longer_than_rotate_bytes_gets_its_own_file(
    open_sink: Opener, tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl"
    sink = await open_sink(path=str(path), rotate_bytes=200, keep=5)
    long = Event("src", "sse", "message", None, "y" * 500, 1.0, 2)
    await sink.write([*_events(1), long, *_events(1, start=3)])
    await sink.aclose()
    assert _seqs(Path(f"{path}.2")) == [1]
    assert _seqs(Path(f"{path}.1")) == [2]
    assert _seqs(path) == [3]


async def test_keep_zero_discards_the_full_file(open_sink: Opener, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    sink = await open_sink(path=str(path), rotate_bytes=300, keep=0)
    await sink.write(_events(20))
    await sink.aclose()
    assert _names(tmp_path) == ["events.jsonl"]
    assert _seqs(path)[-1] == 20


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
async def test_a_failing_disk_is_a_clear_error(open_sink: Opener) -> None:
    sink = await open_sink(path="/dev/full", flush_interval=3600.0)
    await sink.write([EVENT])
    with pytest.raises(OSError, match=r"^cannot write /dev/full: No space left on device"):
        await sink.aclose()


def test_check_refuses_a_path_under_a_regular_file(tmp_path: Path) -> None:
    blocker = tmp_path / "runs"
    blocker.write_text("not a directory")
    shown = str(blocker / "sub" / "x.jsonl")
    with pytest.raises(ValueError) as info:
        FileSink.Options.check(FileOptions(path=shown))
    message = str(info.value)
    assert message.startswith(f"cannot write {shown}: ")
    assert "not a directory" in message
    assert message.endswith("\u2014 choose a writable path")
    assert not (blocker.parent / "sub").exists()


def test_check_refuses_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Is a directory"):
        FileSink.Options.check(FileOptions(path=str(tmp_path)))


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits")
def test_check_refuses_a_read_only_directory(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(ValueError, match="Permission denied"):
        FileSink.Options.check(FileOptions(path=str(locked / "x.jsonl")))


async def test_open_fails_clearly_at_run_time(open_sink: Opener, tmp_path: Path) -> None:
    blocker = tmp_path / "runs"
    blocker.write_text("not a directory")
    shown = str(blocker / "x.jsonl")
    with pytest.raises(OSError, match=r"^cannot write .*x\.jsonl: .*choose a writable path"):
        await open_sink(path=shown)


def test_defaults_never_drop_and_stop_on_error() -> None:
    assert FileSink.default_overflow == "block"
    assert FileSink.default_on_error == "stop"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"path": ""}, "path must not be empty"),
        ({"path": "a", "rotate_bytes": -1}, "rotate_bytes must be >= 0"),
        ({"path": "a", "keep": -1}, "keep must be >= 0"),
        ({"path": "a", "flush_interval": 0.0}, "flush_interval must be > 0"),
    ],
)
def test_bad_options_are_clear(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FileOptions(**options)


def test_registers_as_file() -> None:
    import mux_file

    registered: dict[str, type[Any]] = {}
    mux_file.mux_register_sinks(lambda name, cls: registered.__setitem__(name, cls))
    assert registered == {"file": FileSink}
