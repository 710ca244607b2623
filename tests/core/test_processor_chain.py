"""The processor hook and chain: registered by a plugin, configured, run by the engine.

``mux_register_processors`` is exercised the way a third-party plugin uses it;
the chain's contract (file order, ``sources`` globs, per-source instances,
timers on the trio clock, isolation of a processor that raises) is checked
through the real engine with the test kit's scripted transport.
"""

from __future__ import annotations

import textwrap
from typing import Any, ClassVar

import attrs
import pytest
import trio
import trio.testing

from mux_core import (
    Alert,
    Batch,
    ConfigError,
    Engine,
    Event,
    FieldReader,
    PluginManager,
    ProcessorContext,
    Quality,
    Record,
    Severity,
    State,
    Status,
    hookimpl,
    parse_config,
)
from mux_core.hookspecs import Register
from mux_core.testing import CollectingSink


@attrs.frozen(kw_only=True)
class _TagOptions:
    #: Added to every event's type.
    suffix: str = "!"


class _TagProcessor:
    """Renames every event's type to ``<type><suffix>``; counts what it saw (per source)."""

    Options: ClassVar[type[_TagOptions]] = _TagOptions
    instances: ClassVar[list[_TagProcessor]] = []

    def __init__(self, options: _TagOptions, context: ProcessorContext) -> None:
        self.suffix = options.suffix
        self.context = context
        self.seen = 0
        _TagProcessor.instances.append(self)

    def process(self, batch: Batch) -> Batch:
        out: list[Record] = []
        for record in batch:
            if type(record) is Event:
                self.seen += 1
                out.append(
                    Event(
                        record.source,
                        record.transport,
                        record.event + self.suffix,
                        record.id,
                        record.data,
                        record.received_at,
                        record.seq,
                    )
                )
            else:
                out.append(record)
        return out


@attrs.frozen(kw_only=True)
class _BombOptions:
    #: Raise on the event with this seq.
    at_seq: int = 2


class _BombProcessor:
    """Raises on one event; raises an alert on every event with n == 1 before that."""

    Options: ClassVar[type[_BombOptions]] = _BombOptions

    def __init__(self, options: _BombOptions, context: ProcessorContext) -> None:
        self.at_seq = options.at_seq
        self.context = context
        self.fields = FieldReader(["n"])

    def process(self, batch: Batch) -> Batch:
        for record in batch:
            if type(record) is Event and record.seq == self.at_seq:
                raise ZeroDivisionError("scripted processor bug")
        return batch


@attrs.frozen(kw_only=True)
class _QuietOptions:
    #: Seconds without an event before the alert.
    seconds: float = 5.0


class _QuietProcessor:
    """A minimal timed rule: an alert when no event came for ``seconds`` (trio clock)."""

    Options: ClassVar[type[_QuietOptions]] = _QuietOptions

    def __init__(self, options: _QuietOptions, context: ProcessorContext) -> None:
        self.seconds = options.seconds
        self.context = context
        self.last: float | None = None
        self.raised = False

    def process(self, batch: Batch) -> Batch:
        if any(type(r) is Event for r in batch):
            self.last = trio.current_time()
            self.raised = False
        return batch

    def next_deadline(self) -> float | None:
        if self.last is None or self.raised:
            return None
        return self.last + self.seconds

    def tick(self, now: float) -> Batch:
        if self.last is None or self.raised or now < self.last + self.seconds:
            return []
        self.raised = True
        return [self.context.alert("quiet", "critical", f"quiet since {self.last:g}")]


class _Plugin:
    @hookimpl
    def mux_register_processors(self, register: Register) -> None:
        register("tag", _TagProcessor)
        register("bomb", _BombProcessor)
        register("quiet", _QuietProcessor)


@pytest.fixture
def proc_plugins(plugins: PluginManager) -> PluginManager:
    plugins.register(_Plugin(), name="proc-plugin")
    _TagProcessor.instances.clear()
    CollectingSink.instances.clear()
    return plugins


def _engine(plugins: PluginManager, toml: str, **kwargs: Any) -> Engine:
    config = parse_config(textwrap.dedent(toml), path="proc.toml", plugins=plugins)
    return Engine(config, plugins, **kwargs)


_TWO_SOURCES = """
    [[sources]]
    name = "train-a"
    transport = "scripted"
    script = ["events:3"]
    then = "end"
    retry = { initial_delay = 0.0, jitter = 0.0 }

    [[sources]]
    name = "eval-b"
    transport = "scripted"
    script = ["events:2"]
    then = "end"
    retry = { initial_delay = 0.0, jitter = 0.0 }

    [[sinks]]
    type = "collect"
"""


async def test_mux_register_processors_makes_the_name_a_processor_type(
    proc_plugins: PluginManager,
) -> None:
    assert proc_plugins.processors()["tag"].plugin == "proc-plugin"
    assert proc_plugins.processors()["tag"].kind == "processor"
    info = {i.name: i for i in proc_plugins.infos()}["proc-plugin"]
    assert info.processors == ("bomb", "quiet", "tag")
    engine = _engine(
        proc_plugins,
        _TWO_SOURCES
        + """
    [[processors]]
    type = "tag"
    sources = ["train-*"]
    suffix = "+"

    [[processors]]
    type = "tag"
    """,
    )
    with trio.fail_after(10):
        result = await engine.run()
    sink = CollectingSink.instances["collect"]
    by_source = {s: [e.event for e in sink.events if e.source == s] for s in ("train-a", "eval-b")}
    # File order: "+" first (train-* only), then "!" (every source).
    assert by_source == {"train-a": ["message+!"] * 3, "eval-b": ["message!"] * 2}
    # One instance per (table, matching source): three, each seeing only its source.
    assert sorted((p.context.source, p.suffix, p.seen) for p in _TagProcessor.instances) == [
        ("eval-b", "!", 2),
        ("train-a", "!", 3),
        ("train-a", "+", 3),
    ]
    # Processors see statuses too and pass them on.
    assert sink.statuses[-1].state is State.ENDED
    assert result.exit_code == 0


async def test_a_processor_that_raises_is_dropped_from_that_sources_chain_only(
    proc_plugins: PluginManager, caplog: pytest.LogCaptureFixture
) -> None:
    engine = _engine(
        proc_plugins,
        _TWO_SOURCES
        + """
    [[processors]]
    type = "bomb"
    sources = ["train-a"]
    at_seq = 2

    [[processors]]
    type = "tag"
    """,
    )
    with trio.fail_after(10):
        result = await engine.run()
    sink = CollectingSink.instances["collect"]
    train = [r for r in sink.records if r.source == "train-a" and type(r) is not Quality]
    alerts = [r for r in train if type(r) is Alert]
    assert len(alerts) == 1
    assert alerts[0].rule == "processor_error" and alerts[0].severity is Severity.WARNING
    assert "'bomb'" in alerts[0].message and "ZeroDivisionError" in alerts[0].message
    # Every event still arrives, in order, and still through the processors after it.
    assert [e.id for e in sink.events if e.source == "train-a"] == ["1", "2", "3"]
    assert {e.event for e in sink.events} == {"message!"}
    # The alert follows the batch the processor failed on.
    ids = [r.id if type(r) is Event else type(r).__name__ for r in train if type(r) is not Status]
    assert ids == ["1", "2", "Alert", "3"]
    assert result.final_states == {"train-a": State.ENDED, "eval-b": State.ENDED}
    assert result.exit_code == 0
    assert any(
        "processor 'bomb' failed on source 'train-a'" in r.getMessage() and r.levelname == "ERROR"
        for r in caplog.records
    )


async def test_a_timed_processor_ticks_on_the_trio_clock(
    proc_plugins: PluginManager, autojump_clock: trio.testing.MockClock
) -> None:
    engine = _engine(
        proc_plugins,
        """
    [[sources]]
    name = "s"
    transport = "scripted"
    script = ["events:2"]
    then = "hang"
    retry = { initial_delay = 0.0, jitter = 0.0 }

    [[sinks]]
    type = "collect"

    [[processors]]
    type = "quiet"
    seconds = 30.0
    """,
        duration=100.0,
    )
    start = trio.current_time()
    result = await engine.run()
    sink = CollectingSink.instances["collect"]
    alerts = [r for r in sink.records if type(r) is Alert]
    assert [(a.rule, a.severity, a.source) for a in alerts] == [("quiet", Severity.CRITICAL, "s")]
    # Raised once the 30 s passed, not before, and the run stopped at --for.
    assert result.reason == "--for 100 s elapsed"
    assert trio.current_time() - start == pytest.approx(100.0)
    assert sink.records.index(alerts[0]) > sink.records.index(sink.events[-1])


async def test_fail_on_turns_an_alert_into_exit_code_4(proc_plugins: PluginManager) -> None:
    toml = """
    [[sources]]
    name = "s"
    transport = "scripted"
    script = ["events:3"]
    then = "end"
    retry = { initial_delay = 0.0, jitter = 0.0 }

    [[sinks]]
    type = "collect"

    [[processors]]
    type = "bomb"
    at_seq = 1
    """
    # The processor_error alert is a warning: --fail-on warning trips, critical does not.
    with trio.fail_after(10):
        warned = await _engine(proc_plugins, toml, fail_on=Severity.WARNING).run()
        critical = await _engine(proc_plugins, toml, fail_on=Severity.CRITICAL).run()
        plain = await _engine(proc_plugins, toml).run()
    assert warned.exit_code == 4
    assert critical.exit_code == 0
    assert plain.exit_code == 0


def test_processor_tables_are_validated_with_file_and_line(proc_plugins: PluginManager) -> None:
    toml = textwrap.dedent(
        """\
        [[sources]]
        name = "train-a"
        transport = "scripted"

        [[processors]]
        type = "tga"

        [[processors]]
        type = "tag"
        sufix = "?"

        [[processors]]
        type = "tag"
        sources = ["train-b"]

        [[processors]]
        type = "tag"
        sources = "train-*"

        [[sinks]]
        type = "collect"
        """
    )
    with pytest.raises(ConfigError) as raised:
        parse_config(toml, path="p.toml", plugins=proc_plugins)
    lines = str(raised.value).splitlines()
    assert lines[0].startswith("p.toml:6: processors[0].type: unknown processor type 'tga'")
    assert "did you mean 'tag'?" in lines[0]
    assert lines[1].startswith("p.toml:10: processors[1].sufix: unknown key 'sufix'")
    assert lines[2].startswith("p.toml:14: processors[2].sources: no source named 'train-b'")
    assert lines[3].startswith("p.toml:18: processors[3].sources: expected an array")


def test_processor_tables_keep_file_order_and_globs(proc_plugins: PluginManager) -> None:
    config = parse_config(
        textwrap.dedent(
            """\
            [[sources]]
            name = "train-a"
            transport = "scripted"

            [[processors]]
            type = "quiet"
            sources = ["train-*", "eval-?"]

            [[processors]]
            type = "tag"

            [[sinks]]
            type = "collect"
            """
        ),
        path="p.toml",
        plugins=proc_plugins,
    )
    assert [(p.type, p.sources, p.line) for p in config.processors] == [
        ("quiet", ("train-*", "eval-?"), 5),
        ("tag", None, 9),
    ]
    assert config.processors[0].applies_to("eval-b")
    assert not config.processors[0].applies_to("test-a")
    assert config.processors[0].options == _QuietOptions()


def _from_bytes(raw: bytes) -> Event:
    """An Event with its payload as a transport hands it over."""
    return Event.from_bytes("s", "t", "m", None, raw, 0.0, 1)


def test_field_reader_reads_raw_and_decoded_payloads_alike() -> None:
    reader = FieldReader(["loss", "step"])
    raw = _from_bytes(b'{"step": 3, "loss": 0.25, "big": [1, 2, 3]}')
    nan = _from_bytes(b'{"step": 3, "loss": NaN}')
    decoded = Event("s", "t", "m", None, {"step": 3, "loss": float("inf")}, 0.0, 1)
    text = _from_bytes(b"not json")
    assert reader.read(raw) == (0.25, 3)
    assert raw.raw is not None  # read without decoding the payload
    loss, step = reader.read(nan) or (None, None)
    assert loss != loss and step == 3  # NaN, read as a number
    assert reader.read(decoded) == (float("inf"), 3)
    assert reader.read(text) is None


class _EverywhereAlert:
    """Drops every Status and adds an Alert after everything: a badly behaved processor."""

    def process(self, batch: Any) -> Any:
        from mux_core.records import Alert, Severity, Status

        kept = [r for r in batch if type(r) is not Status]
        return [*kept, Alert("s", "t", "noise", Severity.INFO, "after all", None, 0.0)]


def test_a_terminal_status_stays_the_last_record_whatever_processors_do() -> None:
    from mux_core._run.chain import ProcessorChain
    from mux_core.records import Alert, State, Status

    chain = ProcessorChain("s", "t", [("noise", _EverywhereAlert())])
    stopped = Status("s", "t", State.STOPPED, 1, None, "SIGINT", 0.0)
    out = chain.run([stopped])
    assert out[-1] is stopped  # put back, and after the processor's alert
    assert [type(r) for r in out] == [Alert, Status]
    assert chain.ended
    live = chain.run([Status("s", "t", State.CONNECTED, 1, None, "", 0.0)])
    assert all(type(r) is Alert for r in live)  # not terminal: the processor decides
