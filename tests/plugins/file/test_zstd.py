"""The file sink's ``compression = "zstd"``: the same lines, several times smaller,
and a crash at any byte continued without loss, repeat or garbage.

Read back with :func:`mux_core.records.open_recording` (what ``mux replay`` uses)
and with zstandard itself, frame by frame to the end.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
import zstandard

from mux_core._config import parse_config
from mux_core._plugins import PluginManager
from mux_core._run.recordings import replay_files
from mux_core.errors import ConfigError
from mux_core.records import Event, Record, decode_jsonl, encode_jsonl, open_recording
from mux_core.sink import SinkContext
from mux_file import FileOptions, FileSink, _zstd
from tests.helpers.e2e import (
    FAST_RETRY,
    MUX,
    file_ids,
    read_jsonl,
    serve,
    source_toml,
    start_mux,
    terminate,
    wait_exit,
    wait_for_file,
    write_config,
)

Opener = Callable[..., Awaitable[FileSink]]


@pytest.fixture
async def open_sink() -> AsyncIterator[Opener]:
    async with trio.open_nursery() as nursery:

        def start_background(fn: Callable[[], Awaitable[Any]]) -> None:
            nursery.start_soon(fn)

        async def opener(resumed: dict[str, int] | None = None, **options: Any) -> FileSink:
            context = SinkContext(
                name="file",
                config_name="t",
                sources=(),
                request_stop=lambda reason: None,
                start_background=start_background,
                resumed=resumed or {},
            )
            sink = FileSink(FileOptions(**options), context)
            await sink.open()
            return sink

        yield opener
        nursery.cancel_scope.cancel()


def _events(count: int, start: int = 1, source: str = "train") -> list[Record]:
    return [
        Event(source, "sse", "metric", str(i), {"step": i, "loss": 1.0 / i}, 1e9 + i, i)
        for i in range(start, start + count)
    ]


def _lines(path: Path) -> list[bytes]:
    with open_recording(path) as file:
        return list(file)


def _strict(path: Path) -> bytes:
    """The whole file decompressed with zstandard alone: every frame complete, nothing after."""
    data = path.read_bytes()
    out = []
    while data:
        frame = zstandard.ZstdDecompressor().decompressobj()
        out.append(frame.decompress(data))
        assert frame.eof, f"{path}: an unfinished frame"
        data = frame.unused_data
    return b"".join(out)


async def test_the_same_lines_as_a_plain_file_and_several_times_smaller(
    open_sink: Opener, tmp_path: Path
) -> None:
    plain = await open_sink(path=str(tmp_path / "plain.jsonl"))
    packed = await open_sink(path=str(tmp_path / "packed.jsonl.zst"), compression="zstd")
    for start in range(1, 3001, 100):  # 30 writes to the OS, as 30 flushes would be
        batch = _events(100, start)
        for sink in (plain, packed):
            await sink.write(batch)
            await sink.flush()
        if start == 1501:
            # Everything handed to the OS so far decodes, mid-frame.
            assert (
                b"".join(_lines(tmp_path / "packed.jsonl.zst"))
                == (tmp_path / "plain.jsonl").read_bytes()
            )
    await plain.aclose()
    await packed.aclose()
    expected = (tmp_path / "plain.jsonl").read_bytes()
    assert _strict(tmp_path / "packed.jsonl.zst") == expected
    assert b"".join(_lines(tmp_path / "packed.jsonl.zst")) == expected
    size = (tmp_path / "packed.jsonl.zst").stat().st_size
    assert len(expected) / size > 5, (len(expected), size)


async def test_rotated_files_are_zstd_too_and_replay_reads_them_in_order(
    open_sink: Opener, tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl.zst"
    sink = await open_sink(path=str(path), compression="zstd", rotate_bytes=4096, keep=200)
    for start in range(1, 20001, 100):
        await sink.write(_events(100, start))
        await sink.flush()
    await sink.aclose()
    files = replay_files(path)
    assert len(files) > 3 and files[-1] == path and files[0].name.startswith("events.jsonl.zst.")
    seqs = []
    for file in files:
        assert file.read_bytes()[:4] == _zstd.MAGIC
        assert file.stat().st_size < 4096 + 4096  # past rotate_bytes by one write at most
        seqs += [orjson.loads(line)["seq"] for line in _strict(file).splitlines()]
    assert seqs == list(range(1, 20001))


def _whole_part(path: Path) -> int:
    """Where the whole frames and blocks of a cut file end (what a repair keeps)."""
    with open(path, "rb") as file:
        found = _zstd.frames(file.fileno(), path.stat().st_size)
    return found.end if found.blocks else (found.starts or (0,))[-1]


@pytest.mark.parametrize("big", [False, True], ids=["small writes", "one big write"])
@pytest.mark.parametrize("cut", [1, 3, 4, 9, 17, 0.25, 0.5, 0.77, 0.9, -1, -2, -3, -4, -7])
async def test_a_file_cut_at_any_byte_is_continued_after_what_decodes(
    open_sink: Opener, tmp_path: Path, cut: float, big: bool
) -> None:
    """What a crash leaves: the file cut anywhere (in a header, a block, a line).
    Opening it again keeps every byte its whole blocks hold -- nothing whole is
    rewritten -- ends the frame, and appends after it, on a fresh line when
    the cut fell inside one (zstd cuts one big write into 128 KiB blocks that
    end anywhere: that line reads as one bad line, as in a plain file). The
    file decodes to its end."""
    whole = tmp_path / "whole.jsonl.zst"
    sink = await open_sink(path=str(whole), compression="zstd")
    if big:  # ~1.5 MiB in one write: whole blocks that end inside lines
        await sink.write(_events(6000))
        await sink.flush()
    for start in range(10001, 11001, 50):
        await sink.write(_events(50, start))
        await sink.flush()
    data = whole.read_bytes()  # the frame is still open: as at a crash
    at = int(len(data) * cut) if 0 < cut < 1 else (int(cut) if cut > 0 else len(data) + int(cut))
    torn = tmp_path / "torn.jsonl.zst"
    torn.write_bytes(data[:at])
    kept = _whole_part(torn)
    readable = zstandard.ZstdDecompressor().decompressobj().decompress(data[:at])
    fresh_line = b"\n" if readable and not readable.endswith(b"\n") else b""
    if big and cut in (0.25, 0.5):
        assert fresh_line  # inside the big write: its whole blocks end inside a line

    again = await open_sink(path=str(torn), compression="zstd")
    await again.write(_events(10, 5001))
    await again.aclose()
    expected = readable + fresh_line + encode_jsonl(_events(10, 5001))
    assert torn.read_bytes()[:kept] == data[:kept]  # nothing whole was rewritten
    assert _strict(torn) == expected
    assert b"".join(_lines(torn)) == expected
    records = [line for line in _lines(torn)]
    bad = [line for line in records if not line.startswith(b'{"type"') or not line.endswith(b"}\n")]
    assert len(bad) == (1 if fresh_line else 0)
    await sink.aclose()


async def test_a_crash_resume_skips_what_the_zstd_file_holds(
    open_sink: Opener, tmp_path: Path
) -> None:
    """The durable-resume skip reads a .zst tail too: events written after the
    checkpoint (seq 40) and sent again come out once."""
    path = tmp_path / "events.jsonl.zst"
    sink = await open_sink(path=str(path), compression="zstd")
    await sink.write(_events(50))
    await sink.flush()  # on disk; the process then dies (the frame stays open)
    again = await open_sink(path=str(path), compression="zstd", resumed={"train": 40})
    resent = [
        Event("train", "sse", "metric", str(i), {"step": i, "loss": 1.0 / i}, 2e9 + i, 1000 + i)
        for i in range(41, 61)
    ]
    await again.write(resent)
    await again.aclose()
    events = [decode_jsonl(line) for line in _lines(path)]
    ids = [e.id for e in events if isinstance(e, Event)]
    assert ids == [str(i) for i in range(1, 61)]
    assert [e.seq for e in events if isinstance(e, Event)][50:] == list(range(1051, 1061))


async def test_a_plain_file_is_not_compressed_into_and_a_zstd_one_not_appended_plain(
    open_sink: Opener, tmp_path: Path
) -> None:
    plain = tmp_path / "a.jsonl.zst"
    plain.write_bytes(encode_jsonl(_events(2)))
    with pytest.raises(OSError, match=r"not a zstd file .*compression = \"none\""):
        await open_sink(path=str(plain), compression="zstd")
    packed = tmp_path / "b.jsonl"
    packed.write_bytes(zstandard.ZstdCompressor().compress(encode_jsonl(_events(2))))
    with pytest.raises(OSError, match=r"holds zstd-compressed records .*compression = \"zstd\""):
        await open_sink(path=str(packed))
    assert packed.read_bytes()[:4] == _zstd.MAGIC and plain.read_bytes()[:1] == b"{"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('path = "{dir}/e.jsonl"\ncompression = "zstd"', "must end in .zst (e.g. "),
        ('path = "{dir}/e.jsonl"\ncompression = "gzip"', "compression"),
    ],
)
def test_bad_compression_options_are_config_errors(
    tmp_path: Path, table: str, message: str
) -> None:
    plugins = PluginManager()
    plugins.load_entry_points()
    text = (
        '[[sources]]\nname = "a"\ntransport = "sse"\nurl = "http://127.0.0.1:9/"\n\n'
        '[[sinks]]\ntype = "file"\n' + table.format(dir=tmp_path) + "\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, path="m.toml", plugins=plugins)
    assert str(caught.value).startswith("m.toml:") and message in str(caught.value)


def _file_sinks(plain: Path, packed: Path) -> str:
    return (
        f'\n[[sinks]]\ntype = "file"\nname = "plain"\npath = "{plain}"\nflush_interval = 0.02\n'
        f'\n[[sinks]]\ntype = "file"\nname = "packed"\npath = "{packed}"\nflush_interval = 0.02\n'
        'compression = "zstd"\n'
    )


def _zst_records(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in _lines(path) if line.endswith(b"\n")]


async def test_kill_9_mid_write_then_state_nothing_lost_nothing_twice(tmp_path: Path) -> None:
    """``mux run --state`` with a plain and a zstd file sink, killed with SIGKILL
    while events pour in, restarted: each file holds every event once, the
    zstd file decodes to its end, and ``mux replay`` of it gives the plain
    file's events."""
    plain, packed = tmp_path / "events.jsonl", tmp_path / "events.jsonl.zst"
    state = tmp_path / "state"
    async with serve("sse") as server:
        config = write_config(
            tmp_path / "m.toml", FAST_RETRY + source_toml("train", "sse", server.url)
            + _file_sinks(plain, packed),
        )  # fmt: skip
        published = 0

        async def publish(upto: int) -> None:
            nonlocal published
            while published < upto:
                published += 1
                await server.publish({"step": published, "loss": 1.0 / published, "pad": "x" * 40})
                if published % 20 == 0:
                    await trio.sleep(0.001)

        async with trio.open_nursery() as nursery:
            first = await start_mux(nursery, config, "--state", str(state))
            await publish(2000)
            await wait_for_file(
                plain, lambda r: len(file_ids(r, "train")) >= 1500, process=first, timeout=60
            )
            with trio.fail_after(60):
                while not (state / "mux-state.json").exists():  # noqa: ASYNC110 (another process)
                    await trio.sleep(0.02)
            async with trio.open_nursery() as pouring:
                pouring.start_soon(publish, 6000)
                await trio.sleep(0.05)  # events arriving, both files being written
                first.send_signal(signal.SIGKILL)
            await wait_exit(first, config)
            killed_at = packed.stat().st_size
            await publish(7000)
            second = await start_mux(nursery, config, "--state", str(state))
            await wait_for_file(
                plain, lambda r: "7000" in file_ids(r, "train"), process=second, timeout=60
            )
            with trio.fail_after(60):
                while "7000" not in file_ids(_zst_records(packed), "train"):  # noqa: ASYNC110
                    await trio.sleep(0.05)
            assert await terminate(second, config) == 0
    expected = [str(n) for n in range(1, 7001)]
    plain_events = [(r["id"], r["data"]) for r in read_jsonl(plain) if r["type"] == "event"]
    packed_events = [(r["id"], r["data"]) for r in _zst_records(packed) if r["type"] == "event"]
    assert [i for i, _ in plain_events] == expected  # none lost, none twice
    assert packed_events == plain_events
    assert packed.stat().st_size > killed_at
    _strict(packed)  # every frame whole: the crash's unfinished one was repaired

    # mux replay reads the .zst: into a plain file sink, the same events again.
    out = tmp_path / "replayed.jsonl"
    replay_config = write_config(tmp_path / "r.toml", f'[[sinks]]\ntype = "file"\npath = "{out}"\n')
    replay = await trio.run_process(
        [*MUX, "replay", "-q", str(packed), "--config", str(replay_config)],
        capture_stderr=True,
        check=False,
    )
    assert replay.returncode == 0, replay.stderr
    replayed = read_jsonl(out)
    assert replayed == _zst_records(packed)
    assert [(r["id"], r["data"]) for r in replayed if r["type"] == "event"] == plain_events


@pytest.mark.parametrize("compression", ["none", "zstd"])
async def test_a_crash_resume_skips_a_resent_nan_event_and_keeps_a_changed_one(
    open_sink: Opener, tmp_path: Path, compression: str
) -> None:
    """Lines holding NaN literals are read back too (the fast decoder refuses
    them): a NaN event sent again after a crash is a repeat, skipped once;
    the same id with another payload (a restarted trainer) is kept."""
    path = tmp_path / ("events.jsonl" + (".zst" if compression == "zstd" else ""))
    payloads = [b'{"step": %d, "loss": NaN}' % i for i in range(1, 6)]
    sink = await open_sink(path=str(path), compression=compression)
    await sink.write(
        [
            Event.from_bytes("train", "sse", "m", str(i), p, 1e9, i)
            for i, p in enumerate(payloads, 1)
        ]
    )
    await sink.flush()
    again = await open_sink(path=str(path), compression=compression, resumed={"train": 2})
    resent = [
        Event.from_bytes("train", "sse", "m", str(i), payloads[i - 1], 2e9, 1000 + i)
        for i in range(3, 6)
    ]
    changed = Event.from_bytes("train", "sse", "m", "5", b'{"step": 5, "loss": 0.5}', 2e9, 1006)
    await again.write([*resent, changed])
    await again.aclose()
    events = [e for e in (decode_jsonl(line) for line in _lines(path)) if isinstance(e, Event)]
    assert [e.id for e in events] == ["1", "2", "3", "4", "5", "5"]
    assert events[-1].data == {"step": 5, "loss": 0.5}
