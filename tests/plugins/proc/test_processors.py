"""The built-in processors of mux_proc against scripted streams.

Events carry their payload as raw bytes (what transports hand over), so
these tests also see that a processor reads only what it declared. The
time-based rules run under trio's MockClock through a real ProcessorChain
and its timer task.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import pytest
import trio
import trio.testing

from mux_core import Alert, Event, ProcessorContext, Record, Severity, State, Status
from mux_core._run.chain import ProcessorChain
from mux_core.records import encode_jsonl
from mux_proc import (
    DivergeOptions,
    DivergeProcessor,
    FilterOptions,
    FilterProcessor,
    NonfiniteOptions,
    NonfiniteProcessor,
    RestartOptions,
    RestartProcessor,
    SampleOptions,
    SampleProcessor,
    SelectOptions,
    SelectProcessor,
    StallOptions,
    StallProcessor,
    ThroughputOptions,
    ThroughputProcessor,
    parse_condition,
)

CTX = ProcessorContext("train", "sse", "test")


def _from_bytes(raw: bytes, *, event: str, id: str | None, seq: int) -> Event:
    """An Event with its payload as a transport hands it over (kept as bytes when JSON)."""
    return Event.from_bytes("train", "sse", event, id, raw, 0.0, seq)


def _still_raw(event: Event) -> bool:
    """Whether nothing decoded the event's payload yet: the record still holds the
    bytes as received (``Event.raw``), which reading ``.data`` replaces by the value."""
    return event.raw is not None


class _Stream:
    """Builds events of one source with increasing seq, payloads as raw JSON bytes."""

    def __init__(self) -> None:
        self.seq = 0

    def event(self, data: Any, *, event: str = "metric", id: str | None = None) -> Event:
        self.seq += 1
        raw = data if isinstance(data, bytes) else json.dumps(data).encode()
        return _from_bytes(raw, event=event, id=id, seq=self.seq)

    def metrics(self, field: str, values: Sequence[float], **extra: Any) -> list[Event]:
        return [self.event({field: v, **extra}) for v in values]


def _status(state: State) -> Status:
    return Status("train", "sse", state, 1, None, "", 0.0)


def _alerts(records: Sequence[Record]) -> list[Alert]:
    return [r for r in records if type(r) is Alert]


def _run_all(processor: Any, batches: Sequence[Sequence[Record]]) -> list[Record]:
    out: list[Record] = []
    for batch in batches:
        out.extend(processor.process(batch))
    return out


# -- the condition grammar --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "data", "expected"),
    [
        ("loss > 10", {"loss": 11}, True),
        ("loss > 10", {"loss": 10}, False),
        ("loss > 10 and step >= 100", {"loss": 11, "step": 100}, True),
        ("loss > 10 and step >= 100", {"loss": 11, "step": 99}, False),
        ("loss > 10 or step >= 100", {"loss": 1, "step": 100}, True),
        ("not (loss > 10)", {"loss": 1}, True),
        ("phase == 'train'", {"phase": "train"}, True),
        ('phase != "train"', {"phase": "eval"}, True),
        ("lr <= 1e-4", {"lr": 3e-5}, True),
        ("loss > -1.5", {"loss": -1}, True),
        ("metrics.loss < 1", {"metrics": {"loss": 0.5}}, True),
        ("metrics.loss < 1", {"metrics": 3}, False),
        ("done", {"done": True}, True),
        ("done", {"done": 0}, False),
        ("missing == null", {}, True),
        ("missing > 1", {}, False),
        ("loss > 1", {"loss": "high"}, False),  # different types never order
        ("loss != 1", {"loss": "1"}, True),
        ("flag == 1", {"flag": True}, False),  # booleans are not numbers
        ("loss > 1", {"loss": float("nan")}, False),
    ],
)
def test_the_condition_grammar(text: str, data: dict[str, Any], expected: bool) -> None:
    condition = parse_condition(text)
    values = tuple(data.get(name) for name in condition.fields)
    assert condition.test(values) is expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty condition"),
        ("loss >", "expected a field, a number or a string at the end"),
        ("loss > 10 step", "expected 'and', 'or' or the end at column 11"),
        ("(loss > 1", "expected ')' at the end"),
        ("loss = 1", "unexpected '=' at column 6"),
        ("__import__('os')", "expected 'and', 'or' or the end at column 11"),
    ],
)
def test_a_bad_condition_names_the_column(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_condition(text)


# -- filter / sample / select -----------------------------------------------------


def test_filter_by_event_type_passes_statuses_and_never_decodes() -> None:
    stream = _Stream()
    proc = FilterProcessor(FilterOptions(events=["metric"], drop_events=["debug"]), CTX)
    metric, ev, status = (
        stream.event({"loss": 1}),
        stream.event({}, event="eval"),
        _status(State.CONNECTED),
    )
    out = proc.process([status, metric, ev])
    assert out == [status, metric]
    assert _still_raw(metric) and _still_raw(ev)
    only = [stream.event({"x": 1})]
    assert proc.process(only) is only  # nothing dropped: the same batch object


def test_filter_where_keeps_or_drops_matching_events() -> None:
    stream = _Stream()
    batch = [stream.event({"loss": v, "step": s}) for v, s in [(12, 50), (12, 150), (3, 200)]]
    batch.append(stream.event(b"plain text"))
    keep = FilterProcessor(FilterOptions(where="loss > 10 and step >= 100"), CTX)
    drop = FilterProcessor(FilterOptions(where="loss > 10", action="drop"), CTX)
    assert [e.seq for e in keep.process(batch) if type(e) is Event] == [2]
    assert [e.seq for e in drop.process(batch) if type(e) is Event] == [3, 4]


def test_filter_reads_only_its_fields_from_raw_payloads() -> None:
    stream = _Stream()
    event = stream.event({"loss": 12, "big": list(range(100))})
    proc = FilterProcessor(FilterOptions(where="loss > 10"), CTX)
    assert _still_raw(event)
    assert proc.process([event]) == [event]
    assert _still_raw(event)
    assert event.data["loss"] == 12 and not _still_raw(event)  # what decoding would show


def test_sample_every_nth_per_source_statuses_always_pass() -> None:
    stream = _Stream()
    proc = SampleProcessor(SampleOptions(every=3), CTX)
    records: list[Record] = [*stream.metrics("loss", range(4)), _status(State.DISCONNECTED)]
    records += stream.metrics("loss", range(4))
    out = proc.process(records)
    assert [r.seq if type(r) is Event else "status" for r in out] == [1, 4, "status", 7]


async def test_sample_at_most_n_per_second(autojump_clock: trio.testing.MockClock) -> None:
    stream = _Stream()
    proc = SampleProcessor(SampleOptions(per_second=2.0), CTX)
    passed: list[Record] = []
    for _ in range(40):  # 10 events per second for 4 seconds
        passed += proc.process([stream.event({"loss": 1.0})])
        await trio.sleep(0.1)
    # 2 per second after an initial burst of 2 tokens: about 2 + 2 * 4
    assert 8 <= len(passed) <= 10


def test_select_keeps_drops_and_renames_fields() -> None:
    stream = _Stream()
    proc = SelectProcessor(
        SelectOptions(fields=["step", "loss", "lr"], drop=["lr"], rename={"loss": "train_loss"}),
        CTX,
    )
    event = stream.event({"step": 3, "loss": 0.5, "lr": 1e-4, "gpu": 38.0})
    text = stream.event(b"not json")
    out = proc.process([event, text, _status(State.CONNECTED)])
    assert type(out[0]) is Event and out[0].data == {"step": 3, "train_loss": 0.5}
    assert out[0].seq == event.seq and out[0].id == event.id
    assert out[1] is text
    assert type(out[2]) is Status


def test_select_keeps_a_nan_as_a_nan_in_the_file() -> None:
    stream = _Stream()
    proc = SelectProcessor(SelectOptions(fields=["step", "loss"]), CTX)
    event = stream.event(b'{"step": 9, "loss": NaN, "lr": 0.1}')
    (out,) = proc.process([event])
    assert type(out) is Event and math.isnan(out.data["loss"]) and out.data["step"] == 9
    assert b'"data":{"step":9,"loss":NaN}' in encode_jsonl([out])  # not null


# -- nonfinite ---------------------------------------------------------------------


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_nonfinite_reads_the_literals_python_writes(literal: bytes) -> None:
    stream = _Stream()
    proc = NonfiniteProcessor(NonfiniteOptions(), CTX)
    bad = stream.event(b'{"step": 4100, "loss": ' + literal + b"}")
    out = proc.process([stream.event({"step": 4099, "loss": 0.3}), bad])
    (alert,) = _alerts(out)
    shown = {b"NaN": "NaN", b"Infinity": "Infinity", b"-Infinity": "-Infinity"}[literal]
    assert alert.message == f"loss is {shown} at step 4100"
    assert alert.severity is Severity.CRITICAL and alert.rule == "nonfinite"
    assert alert.seq == bad.seq and alert.source == "train"


def test_nonfinite_fires_once_per_episode_and_clears() -> None:
    stream = _Stream()
    proc = NonfiniteProcessor(NonfiniteOptions(fields=["loss", "grad_norm"]), CTX)
    batches = [
        [stream.event({"step": 1, "loss": 1.0, "grad_norm": 2.0})],
        [stream.event(b'{"step": 2, "loss": NaN, "grad_norm": Infinity}')],
        [stream.event(b'{"step": 3, "loss": NaN, "grad_norm": 1.0}') for _ in range(5)],
        [stream.event({"step": 4})],  # the fields are missing: no verdict
        [stream.event({"step": 5, "loss": 0.9, "grad_norm": 1.0})],
        [stream.event({"step": 6, "loss": 0.9, "grad_norm": 1.0})],
        [stream.event(b'{"step": 7, "loss": NaN}')],
    ]
    alerts = _alerts(_run_all(proc, batches))
    assert [(a.severity, a.message) for a in alerts] == [
        (Severity.CRITICAL, "loss is NaN, grad_norm is Infinity at step 2"),
        (Severity.INFO, "loss, grad_norm finite again at step 5"),
        (Severity.CRITICAL, "loss is NaN at step 7"),
    ]


def test_nonfinite_on_decoded_payloads_too() -> None:
    proc = NonfiniteProcessor(NonfiniteOptions(step_field=""), CTX)
    event = Event("train", "ws", "metric", None, {"loss": math.inf}, 0.0, 1)
    (alert,) = _alerts(proc.process([event]))
    assert alert.message == "loss is Infinity"


# -- restart -----------------------------------------------------------------------


def test_restart_alerts_once_before_the_first_event_of_the_new_segment() -> None:
    stream = _Stream()
    proc = RestartProcessor(RestartOptions(), CTX)
    first = [stream.event({"step": s}) for s in (1498, 1499, 1500)]
    eval_ = stream.event({"step": 1500, "eval_loss": 2.0}, event="eval")  # same step: no restart
    second = [stream.event({"step": s}) for s in (1, 2, 3)]
    out = _run_all(proc, [first, [eval_, second[0]], second[1:]])
    alerts = _alerts(out)
    assert len(alerts) == 1
    assert alerts[0].message == "the stream started over: step 1 after 1500 (a new run segment)"
    assert alerts[0].seq == second[0].seq
    assert out.index(alerts[0]) == out.index(second[0]) - 1


def test_restart_by_numeric_event_id() -> None:
    stream = _Stream()
    proc = RestartProcessor(RestartOptions(field=""), CTX)
    batch = [stream.event({}, id=i) for i in ("41", "42", "42-eval", "1", "2")]
    out = proc.process(batch)
    (alert,) = _alerts(out)
    assert "id 1 after 42" in alert.message
    assert [r.id if type(r) is Event else "ALERT" for r in out] == [
        "41",
        "42",
        "42-eval",
        "ALERT",
        "1",
        "2",
    ]


# -- diverge -------------------------------------------------------------------------


def test_diverge_above_k_times_the_running_minimum_with_patience() -> None:
    stream = _Stream()
    proc = DivergeProcessor(DivergeOptions(warmup=5, patience=3, factor=2.0), CTX)
    values = [5.0, 4.0, 3.0, 2.0, 1.5, 1.4, 1.3]  # warm-up and learning: no alert
    values += [3.0]  # one spike: noise
    values += [1.3, 2.9, 3.1, 3.5, 4.0, 5.0]  # three in a row above 2 x 1.3 = 2.6
    values += [1.2, 1.2, 1.2]  # back: cleared after three
    alerts = _alerts(_run_all(proc, [stream.metrics("loss", values)]))
    assert [(a.severity, a.rule) for a in alerts] == [
        (Severity.WARNING, "diverge"),
        (Severity.INFO, "diverge"),
    ]
    assert alerts[0].message == "diverging: loss 3.5 is above 2 x its minimum 1.3"
    assert alerts[0].seq == values.index(3.5) + 1


def test_diverge_by_a_rising_moving_average_and_reset_by_a_restart() -> None:
    stream = _Stream()
    proc = DivergeProcessor(DivergeOptions(factor=0, rising=5, warmup=3, patience=1), CTX)
    rising = stream.metrics("loss", [1.0, 1.0, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6])
    (alert,) = _alerts(proc.process(rising))
    assert "moving average rose 5 values in a row" in alert.message
    restart = CTX.alert("restart", "warning", "started over", None)
    proc.process([restart])
    # after the restart the rule starts from scratch: warm-up again, no alert
    assert _alerts(proc.process(stream.metrics("loss", [9.0, 9.5, 10.0]))) == []


# -- stall and throughput on the trio clock ---------------------------------------------


class _Harness:
    """A chain with one processor, its timer task running, collecting what comes out."""

    def __init__(self, processor: Any) -> None:
        self.chain = ProcessorChain("train", "sse", [("p", processor)])
        self.out: list[Record] = []
        #: Set when the timer delivered something.
        self.delivered = trio.Event()

    async def deliver(self, batch: Sequence[Record]) -> bool:
        self.out.extend(batch)
        self.delivered.set()
        return False

    def feed(self, batch: Sequence[Record]) -> None:
        self.out.extend(self.chain.run(batch))

    def alerts(self) -> list[tuple[float, Severity, str]]:
        return [(a.at, a.severity, a.message) for a in _alerts(self.out)]


async def test_stall_fires_once_after_n_quiet_seconds_and_clears(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stream = _Stream()
    harness = _Harness(StallProcessor(StallOptions(seconds=60.0), CTX))
    start = trio.current_time()
    raised_at: list[float] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(harness.chain.run_timers, harness.deliver)
        harness.feed([_status(State.CONNECTED)])
        for _ in range(10):  # one event every 10 s: never stalled
            await trio.sleep(10)
            harness.feed([stream.event({"step": 1})])
        assert _alerts(harness.out) == []
        await harness.delivered.wait()  # then silence
        raised_at.append(trio.current_time() - start)
        await trio.sleep(600)  # a long silence is still one episode
        harness.feed([stream.event({"step": 2})])
        resumed = trio.current_time() - start
        nursery.cancel_scope.cancel()
    alerts = _alerts(harness.out)
    assert [a.severity for a in alerts] == [Severity.WARNING, Severity.INFO]
    assert alerts[0].message == "stalled: connected, but no new event for 60 s"
    assert raised_at[0] == pytest.approx(100 + 60)
    assert alerts[1].message == f"events arrive again after {resumed - 100:.0f} s"
    assert resumed - 100 > 600


async def test_stall_by_field_and_not_while_disconnected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stream = _Stream()
    harness = _Harness(StallProcessor(StallOptions(seconds=30.0, field="step"), CTX))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(harness.chain.run_timers, harness.deliver)
        harness.feed([_status(State.CONNECTED)])
        for _ in range(5):  # events keep coming, but the step is stuck at 7
            await trio.sleep(10)
            harness.feed([stream.event({"step": 7})])
        stalled = _alerts(harness.out)
        harness.feed([_status(State.DISCONNECTED)])
        await trio.sleep(300)  # disconnected: the supervisor reports that, not stall
        nursery.cancel_scope.cancel()
    assert [a.message for a in stalled] == ["stalled: step has not increased for 30 s (last 7)"]
    assert len(_alerts(harness.out)) == 1


async def test_throughput_field_below_half_its_running_median() -> None:
    stream = _Stream()
    proc = ThroughputProcessor(ThroughputOptions(warmup=10, patience=3), CTX)
    rates = [15_000.0] * 3 + [48_000.0] * 30  # slow warm-up steps are not judged
    rates += [20_000.0] * 10  # a slowdown
    rates += [47_000.0] * 5  # recovered
    alerts = _alerts(_run_all(proc, [stream.metrics("tokens_per_s", rates)]))
    assert [(a.severity, a.message) for a in alerts] == [
        (Severity.WARNING, "tokens_per_s 20000 is below 50% of its running median 48000"),
        (Severity.INFO, "tokens_per_s back to 47000 (running median 48000)"),
    ]
    assert alerts[0].seq == 33 + 3


async def test_throughput_of_the_event_rate_on_the_trio_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stream = _Stream()
    proc = ThroughputProcessor(ThroughputOptions(field="", interval=10.0, warmup=3), CTX)
    harness = _Harness(proc)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(harness.chain.run_timers, harness.deliver)
        harness.feed([_status(State.CONNECTED)])
        for _ in range(1000):  # 10 events/s for 100 s
            await trio.sleep(0.1)
            harness.feed(stream.metrics("loss", [1.0]))
        for _ in range(60):  # 1 event/s for 60 s
            await trio.sleep(1.0)
            harness.feed(stream.metrics("loss", [1.0]))
        nursery.cancel_scope.cancel()
    (alert,) = _alerts(harness.out)
    assert alert.rule == "throughput" and alert.severity is Severity.WARNING
    assert alert.message.startswith("events/s 1 is below 50% of its running median 10")
