"""The tensorboard sink: event files read back with TensorBoard's own reader.

A real engine on the demo trainer (a NaN, a restart), ``mux replay`` of a
recording as a real process, and the sink's rules for run directories.
"""

from __future__ import annotations

import json
import math
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mux_core._config import parse_config
from mux_core._plugins import PluginManager
from mux_core.errors import ConfigError
from mux_core.records import Alert, Event, Severity, encode_jsonl
from mux_core.sink import SinkContext, SourceInfo
from mux_core.testing import CollectingSink
from mux_demo.server import DemoEndpoints, DemoOptions, serve_demo
from mux_tensorboard import INSTALL_HINT, TensorBoardOptions, TensorBoardSink
from tests.helpers.e2e import FAST_RETRY, MUX, running_engine, source_toml


def _run(directory: Path) -> EventAccumulator:
    """TensorBoard's reader of one run directory, everything kept."""
    assert directory.is_dir(), f"no run directory {directory}"
    accumulator = EventAccumulator(str(directory), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def _scalars(run: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(event.step, event.value) for event in run.Scalars(tag)]


def _alerts(run: EventAccumulator) -> list[tuple[int, str]]:
    if "alerts/text_summary" not in run.Tags()["tensors"]:
        return []
    return [
        (event.step, event.tensor_proto.string_val[0].decode())
        for event in run.Tensors("alerts/text_summary")
    ]


def _f32(value: float) -> float:
    """``value`` as TensorBoard keeps a scalar: a 32-bit float."""
    return float(struct.unpack("<f", struct.pack("<f", value))[0])


def _same(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> bool:
    """Equal lists of (step, value), NaN equal to NaN."""
    return len(a) == len(b) and all(
        x == y or (math.isnan(x[1]) and math.isnan(y[1]) and x[0] == y[0])
        for x, y in zip(a, b, strict=True)
    )


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


async def test_the_demo_trainer_as_two_runs_with_the_same_scalars(tmp_path: Path) -> None:
    """``serve-demo --nan-at 20 --restart-at 30``, 50 steps, read over SSE: the
    source's run holds steps 1..29, its ``segment-2`` sub-run steps 1..21; every
    scalar is the value mux received, at the payload's step, NaN included; the
    alerts are text summaries at their step."""
    logdir = tmp_path / "tb"
    steps = 50
    sse, ws, rest = _free_ports(3)
    demo = DemoOptions(
        sse_port=sse, ws_port=ws, rest_port=rest, rate=100.0, steps=steps, seed=5, nan_at=20,
        restart_at=30, eval_every=10,
    )  # fmt: skip
    toml = (
        FAST_RETRY
        + source_toml("train-sse", "sse", DemoEndpoints("127.0.0.1", sse, ws, rest).sse_url)
        + '\n[[processors]]\ntype = "restart"\n'
        + '\n[[processors]]\ntype = "nonfinite"\nfields = ["loss"]\n'
        + f'\n[[sinks]]\ntype = "tensorboard"\nlogdir = "{logdir}"\nflush_interval = 0.2\n'
    )
    async with running_engine(toml) as (_engine, collect):
        async with trio.open_nursery() as servers:
            await servers.start(serve_demo, demo)
        await collect.wait_for(_metrics_seen(steps), timeout=20)
    # The engine stopped: the sink wrote the rest and closed its files.
    received = [e for e in collect.events if e.event == "metric"]
    first, second = received[:29], received[29:]
    assert [e.data["step"] for e in first] == list(range(1, 30))
    assert [e.data["step"] for e in second] == list(range(1, 22))

    run = _run(logdir / "train-sse")
    sub = _run(logdir / "train-sse" / "segment-2")
    for segment, events in ((run, first), (sub, second)):
        assert set(segment.Tags()["scalars"]) == {
            "loss", "lr", "tokens_per_s", "gpu_mem_gb", "eval_loss",
        }  # fmt: skip
        for field in ("loss", "lr", "tokens_per_s"):
            expected = [(e.data["step"], _f32(e.data[field])) for e in events]
            assert _same(_scalars(segment, field), expected), field
        times = [e.wall_time for e in segment.Scalars("loss")]
        assert times == [e.received_at for e in events]
    assert [step for step, _ in _scalars(run, "eval_loss")] == [10, 20]
    assert math.isnan(_scalars(sub, "loss")[-1][1]) and math.isnan(_scalars(run, "loss")[19][1])
    assert not math.isnan(_scalars(run, "loss")[18][1])
    alerts = _alerts(sub)
    assert alerts[0][0] == 1 and "`restart`" in alerts[0][1] and "**warning**" in alerts[0][1]
    assert any("`nonfinite`" in text and step == 20 for step, text in _alerts(run))


def _metrics_seen(steps: int) -> Any:
    def seen(sink: CollectingSink) -> bool:
        return len([e for e in sink.events if e.event == "metric"]) >= steps

    return seen


def _event(source: str, seq: int, data: dict[str, Any] | str, at: float = 0.0) -> Event:
    return Event(source, "sse", "metric", str(seq), data, at or 1_764_000_000.0 + seq, seq)


def test_mux_replay_converts_a_recording_into_runs(tmp_path: Path) -> None:
    """``mux replay FILE --config tb.toml``, as a user runs it: a recording of two
    sources, one restarted, nested fields, a text payload, an event without a step."""
    records: list[Any] = []
    for step in range(1, 6):
        data = {"step": step, "loss": 1.0 / step, "optim": {"lr": 0.1 * step}, "tag": "x"}
        records.append(_event("train", step, data))
        records.append(_event("eval/1", step, {"step": step * 10, "acc": step / 10}))
    records.append(Alert("train", "sse", "restart", Severity.WARNING, "over_again <b>", 6, 2e9))
    records.append(_event("train", 6, {"step": 1, "loss": 9.0}))
    records.append(_event("train", 7, "not a json object"))
    records.append(_event("train", 8, {"loss": 8.0}))  # no step: placed at its seq
    recording = tmp_path / "run.jsonl"
    recording.write_bytes(encode_jsonl(records))
    logdir = tmp_path / "tb"
    config = tmp_path / "tb.toml"
    config.write_text(f'[[sinks]]\ntype = "tensorboard"\nlogdir = "{logdir}"\n')  # sinks only
    result = subprocess.run(
        [*MUX, "replay", str(recording), "--config", str(config), "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    train = _run(logdir / "train")
    assert _scalars(train, "loss") == [(s, _f32(1.0 / s)) for s in range(1, 6)]
    assert _scalars(train, "optim/lr") == [(s, _f32(0.1 * s)) for s in range(1, 6)]
    assert "tag" not in train.Tags()["scalars"] and "step" not in train.Tags()["scalars"]
    again = _run(logdir / "train" / "segment-2")
    assert _scalars(again, "loss") == [(1, 9.0), (8, 8.0)]
    [(step, text)] = _alerts(again)
    assert step == 1 and "over\\_again \\<b\\>" in text
    # A name with a path separator stays one directory under logdir.
    assert _scalars(_run(logdir / "eval_1"), "acc") == [(s * 10, _f32(s / 10)) for s in range(1, 6)]


def _context(*names: str) -> SinkContext:
    return SinkContext(
        name="tensorboard",
        config_name="monitor",
        sources=tuple(SourceInfo(name, "sse") for name in names),
        request_stop=lambda reason: None,
        start_background=lambda fn: None,
        dropped=lambda: 0,
    )


async def test_a_new_mux_process_continues_the_newest_segment(tmp_path: Path) -> None:
    """mux restarted while the trainer went on: the records go on in the newest
    segment directory on disk, and the next restart alert opens the one after it."""
    logdir = tmp_path / "tb"
    options = TensorBoardOptions(logdir=str(logdir), fields=["loss"])
    first = TensorBoardSink(options, _context("train"))
    restart = Alert("train", "sse", "restart", Severity.WARNING, "started over", 3, 3.0)
    await first.write([_event("train", 1, {"step": 1, "loss": 1.0}), restart])
    await first.write([_event("train", 3, {"step": 1, "loss": 3.0})])
    await first.sync()  # what --state's checkpoint does: the records are on disk
    assert _scalars(_run(logdir / "train" / "segment-2"), "loss") == [(1, 3.0)]
    await first.aclose()

    second = TensorBoardSink(options, _context("train"))
    await second.write([_event("train", 4, {"step": 2, "loss": 4.0}), restart])
    await second.write([_event("train", 6, {"step": 1, "loss": 6.0, "lr": 0.5})])
    await second.aclose()
    assert _scalars(_run(logdir / "train"), "loss") == [(1, 1.0)]
    assert _scalars(_run(logdir / "train" / "segment-2"), "loss") == [(1, 3.0), (2, 4.0)]
    third = _run(logdir / "train" / "segment-3")
    assert _scalars(third, "loss") == [(1, 6.0)]
    assert third.Tags()["scalars"] == ["loss"]  # fields = ["loss"]: lr is not written


async def test_a_failed_write_names_the_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "tb"
    sink = TensorBoardSink(TensorBoardOptions(logdir=str(blocker)), _context("train"))
    blocker.write_text("a file where the logdir should be")
    await sink.write([_event("train", 1, {"step": 1, "loss": 1.0})])
    with pytest.raises(OSError, match=r"cannot write TensorBoard files in .*tb.*choose a writable"):
        await sink.flush()
    await sink.aclose()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('logdir = "{dir}/file.txt"', "is not a directory"),
        ('logdir = ""', "logdir must not be empty"),
        ('logdir = "{dir}/tb"\nfields = ["a..b"]', "is not a field path"),
        ('logdir = "{dir}/tb"\nflush_interval = 0', "flush_interval must be > 0"),
    ],
)
def test_bad_options_are_config_errors_with_the_line(
    tmp_path: Path, table: str, message: str
) -> None:
    (tmp_path / "file.txt").write_text("")
    plugins = PluginManager()
    plugins.load_entry_points()
    text = (
        '[[sources]]\nname = "a"\ntransport = "sse"\nurl = "http://127.0.0.1:9/"\n\n'
        '[[sinks]]\ntype = "tensorboard"\n' + table.format(dir=tmp_path) + "\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, path="tb.toml", plugins=plugins)
    assert str(caught.value).startswith("tb.toml:")
    assert message in str(caught.value)


def test_without_tensorboardx_the_plugin_is_unavailable_with_the_hint(tmp_path: Path) -> None:
    config = tmp_path / "tb.toml"
    config.write_text(
        '[[sources]]\nname = "a"\ntransport = "sse"\nurl = "http://127.0.0.1:9/e"\n'
        f'[[sinks]]\ntype = "tensorboard"\nlogdir = "{tmp_path}/tb"\n'
    )
    code = (
        "import sys; sys.modules['tensorboardX'] = None\n"
        "from mux_core._cli import main\n"
        "main(['plugins', '--json'])\n"
        "sys.exit(main(['check', sys.argv[1]]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    listed = next(p for p in json.loads(result.stdout) if p["name"] == "tensorboard")
    assert listed["sinks"] == [] and INSTALL_HINT in listed["error"]
    assert f"{config}:6: sinks[0].type: " in result.stderr and INSTALL_HINT in result.stderr
    assert "Traceback" not in result.stderr
