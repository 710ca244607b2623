"""The ``prometheus`` sink: metrics for node_exporter's textfile collector.

The sink keeps the newest figures it was sent -- each source's state (from
Status records, at once), its connection quality (from Quality records,
every ``quality_interval``), the alerts raised -- and every ``interval``
seconds writes them with prometheus_client's ``write_to_textfile``: to a
temporary file beside the target, then renamed over it, so node_exporter
never reads half a file. It never listens on a port.

The metrics are collected in trio's thread (a snapshot of plain values);
only the file write runs in a worker thread. Events are looked at only for
the payload fields named in ``metrics`` (their counts come with the Quality
records): the newest value of each field per source, in the source's current
run segment -- a ``restart`` alert starts the next segment, and the previous
segment's values are left out from the next write on.

A failed write (a full disk, a directory removed) is logged as a warning
and tried again at the next interval; the run goes on.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from mux_core import FieldReader, Sink
from mux_core.options import non_negative, positive
from mux_core.records import (
    Alert,
    Batch,
    Event,
    Quality,
    State,
    Status,
)
from mux_core.sink import SinkContext

# trio and prometheus_client are imported where a run uses them: loading the
# plugin (every mux command does) and checking its options pay for neither.
if TYPE_CHECKING:
    from prometheus_client.core import Metric
    from prometheus_client.registry import Collector

__all__ = ["PrometheusOptions", "PrometheusSink"]

_log = logging.getLogger("mux.sink.prometheus")

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_RESERVED_LABELS = frozenset(
    {
        "source",
        "transport",
        "state",
        "sink",
        "rule",
        "severity",
        "quantile",
        "version",
        "config",
        "segment",
    }
)
#: What a payload field's metric name starts with.
PAYLOAD_PREFIX = "mux_payload_"
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_NOT_IN_NAME = re.compile(r"[^a-zA-Z0-9_]")
_STATES = tuple(State)


def _prom_path(_instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{attribute.name} must be a file path")
    if not value.endswith(".prom"):
        raise ValueError(
            f"{attribute.name} must end in .prom (node_exporter's textfile collector "
            f"reads only *.prom files), got {value!r}"
        )


def _label_names(_instance: Any, attribute: attrs.Attribute[Any], value: dict[str, str]) -> None:
    for name in value:
        if not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
            raise ValueError(f"{attribute.name}: {name!r} is not a Prometheus label name")
        if name in _RESERVED_LABELS:
            raise ValueError(f"{attribute.name}: {name!r} is a label mux sets itself")


def _field_paths(_instance: Any, attribute: attrs.Attribute[Any], value: list[str]) -> None:
    for path in value:
        if not isinstance(path, str) or not path or "" in path.split("."):
            raise ValueError(
                f"{attribute.name}: {path!r} is not a field path (a payload key, "
                "or keys joined by dots for a nested one: 'optim.lr')"
            )
    repeated = sorted({path for path in value if value.count(path) > 1})
    if repeated:
        raise ValueError(f"{attribute.name}: {repeated[0]!r} is named twice")


def payload_metric_name(path: str, names: dict[str, str] | None = None) -> str:
    """The metric a payload field is exported as: ``mux_payload_`` and the
    field's path with every character a metric name cannot hold as ``_``
    (``optim.lr`` -> ``mux_payload_optim_lr``), or the name ``names`` gives it."""
    given = (names or {}).get(path)
    if given is not None:
        return PAYLOAD_PREFIX + given
    return PAYLOAD_PREFIX + _NOT_IN_NAME.sub("_", path)


@attrs.frozen(kw_only=True)
class PrometheusOptions:
    """The keys of a ``[[sinks]] type = "prometheus"`` table."""

    #: The metrics file, e.g. in node_exporter's ``--collector.textfile.directory``;
    #: must end in ``.prom``. ``~`` is expanded; the directory must exist.
    path: str = attrs.field(validator=_prom_path)
    #: Seconds between writes of the file (also written at start and at the end).
    interval: float = attrs.field(default=15.0, validator=positive("seconds"))
    #: Constant labels added to every metric, e.g. ``{ run = "exp42" }``.
    labels: dict[str, str] = attrs.field(factory=dict, validator=_label_names)
    #: Seconds a source that was stopped (removed by a reload or by discovery)
    #: stays in the file with ``mux_source_up 0`` before it is left out; at
    #: most :data:`MAX_STOPPED` stopped sources are kept meanwhile.
    forget_after: float = attrs.field(default=300.0, validator=non_negative("seconds"))
    #: Numeric payload fields exported as gauges ``mux_payload_<field>`` -- the
    #: newest value per source and run segment, e.g. ``["loss", "lr", "step"]``;
    #: a dotted path reads a nested field (``"optim.lr"`` -> ``mux_payload_optim_lr``).
    metrics: list[str] = attrs.field(factory=list, validator=_field_paths)
    #: Another name for a field's metric (the part after ``mux_payload_``), e.g.
    #: ``{ tokens_per_s = "tokens_per_second" }``.
    metric_names: dict[str, str] = attrs.field(factory=dict)

    @classmethod
    def check(cls, options: PrometheusOptions) -> None:
        """Refuse a path whose directory does not exist or cannot be written, and
        payload metrics whose names are not valid or not distinct."""
        for path, name in options.metric_names.items():
            if path not in options.metrics:
                raise ValueError(f"metric_names: {path!r} is not one of metrics")
            if not _METRIC_NAME.fullmatch(name):
                raise ValueError(
                    f"metric_names: {name!r} is not a Prometheus metric name "
                    "(letters, digits, '_' and ':', not starting with a digit)"
                )
        named: dict[str, str] = {}
        for path in options.metrics:
            name = payload_metric_name(path, options.metric_names)
            if name in named:
                raise ValueError(
                    f"metrics: {named[name]!r} and {path!r} would both be {name}; "
                    "give one another name in metric_names"
                )
            named[name] = path
        directory = _resolve(options.path).parent
        if not directory.is_dir():
            raise ValueError(
                f"path {options.path!r}: directory {str(directory)!r} does not exist; "
                "create it (node_exporter's --collector.textfile.directory)"
            )
        if not os.access(directory, os.W_OK):
            raise ValueError(f"path {options.path!r}: directory {str(directory)!r} is not writable")


#: The most stopped sources kept in the file (the most recently stopped):
#: discovery churn must not grow it without bound.
MAX_STOPPED = 1_000


@attrs.define
class _SourceFigures:
    transport: str
    state: State | None = None
    quality: Quality | None = None
    #: trio.current_time() of the ``stopped`` status, while it is the last one.
    stopped_at: float | None = None
    #: The run segment, from 1: each ``restart`` alert of the source starts the next.
    segment: int = 1
    #: The newest value of each payload metric in the current segment.
    fields: dict[str, float] = attrs.Factory(dict)


class PrometheusSink(Sink):
    """Writes mux's and every source's metrics to a ``.prom`` file every ``interval``."""

    Options: ClassVar[type[PrometheusOptions]] = PrometheusOptions
    #: The sink never falls behind (no I/O in write); events are skipped anyway.
    default_overflow: ClassVar[str] = "drop_oldest"
    #: Metrics are not worth stopping a run for.
    default_on_error: ClassVar[str] = "drop"

    def __init__(self, options: PrometheusOptions, context: SinkContext) -> None:
        self.options = options
        self.context = context
        self.path = _resolve(options.path)
        self.started_at = time.time()
        self.sources: dict[str, _SourceFigures] = {
            source.name: _SourceFigures(source.transport) for source in context.sources
        }
        self.alerts: Counter[tuple[str, str, str, str]] = Counter()
        self.dropped: dict[str, int] = {}
        self._payload = _PayloadReader(options.metrics, options.metric_names)
        #: Files written so far (for tests and curious users).
        self.writes = 0
        self._failing: str | None = None
        # One write at a time, the last one at aclose: a background write
        # finishing late must not put older figures over the final ones.
        import trio

        self._writing = trio.Lock()
        self._closed = False
        self._final = False

    async def open(self) -> None:
        # The first file is written by the background task, at once: the
        # sources need not wait for a disk to start.
        self.context.start_background(self._write_forever)

    async def write(self, batch: Batch) -> None:
        sources = self.sources
        payload = self._payload if self._payload.names else None
        for record in batch:
            if type(record) is Event:
                if payload is not None:
                    figures = sources.get(record.source) or self._figures(
                        record.source, record.transport
                    )
                    payload.read(record, figures.fields)
            elif type(record) is Status:
                figures = self._figures(record.source, record.transport)
                figures.state = record.state
                figures.stopped_at = _now() if record.state is State.STOPPED else None
            elif type(record) is Quality:
                figures = self._figures(record.source, record.transport)
                figures.quality = record
                if record.state is not None:
                    figures.state = record.state
                self.dropped.update(record.dropped)
            elif type(record) is Alert:
                key = (record.source, record.transport, record.rule, record.severity.value)
                self.alerts[key] += 1
                figures = self._figures(record.source, record.transport)
                if record.rule == "restart":
                    figures.segment += 1
                    figures.fields.clear()

    async def aclose(self) -> None:
        import trio

        with trio.CancelScope(shield=True):
            # The run's last figures: every source it had, stopped ones too.
            self._final = True
            await self.write_file()
            self._closed = True

    def _figures(self, source: str, transport: str) -> _SourceFigures:
        figures = self.sources.get(source)
        if figures is None:
            figures = self.sources[source] = _SourceFigures(transport)
        return figures

    async def _write_forever(self) -> None:
        import trio

        while True:
            await self.write_file()
            await trio.sleep(self.options.interval)

    async def write_file(self) -> None:
        """Write the metrics now (a snapshot taken here, the file written in a thread)."""
        async with self._writing:
            if not self._closed:
                await self._write_snapshot()

    def _forget_stopped(self) -> None:
        """Leave out the sources stopped for longer than ``forget_after``
        (and all but the newest :data:`MAX_STOPPED` stopped ones)."""
        now = _now()
        stopped = sorted(
            (figures.stopped_at, name)
            for name, figures in self.sources.items()
            if figures.stopped_at is not None
        )
        gone = {name for at, name in stopped if now - at > self.options.forget_after}
        gone.update(name for _, name in stopped[: max(0, len(stopped) - MAX_STOPPED)])
        if not gone:
            return
        for name in gone:
            del self.sources[name]
        for key in [key for key in self.alerts if key[0] in gone]:
            del self.alerts[key]

    async def _write_snapshot(self) -> None:
        import trio
        from prometheus_client import CollectorRegistry, write_to_textfile

        if not self._final:
            self._forget_stopped()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_snapshot_class()(list(self.metrics())))
        try:
            await trio.to_thread.run_sync(write_to_textfile, str(self.path), registry)
        except OSError as exc:
            reason = f"{exc.strerror or exc}"
            if reason != self._failing:
                _log.warning("cannot write %s: %s; trying again every interval", self.path, reason)
            self._failing = reason
            return
        if self._failing is not None:
            _log.info("writing %s again", self.path)
            self._failing = None
        self.writes += 1

    # -- the metrics ----------------------------------------------------------

    def metrics(self) -> Iterator[Metric]:
        """Every metric family, from the figures as they are now."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

        extra = self.options.labels
        names = list(extra)
        values = [extra[name] for name in names]

        def family(kind: type[Any], name: str, doc: str, labels: Iterable[str] = ()) -> Any:
            return kind(name, doc, labels=[*labels, *names])

        info = InfoMetricFamily("mux", "The mux process: its version and config.", labels=names)
        info.add_metric(values, {"version": _version(), "config": self.context.config_name})
        yield info
        start = family(GaugeMetricFamily, "mux_start_time_seconds", "When mux started (Unix time).")
        start.add_metric(values, self.started_at)
        yield start
        count = family(GaugeMetricFamily, "mux_sources", "Sources mux knows of.")
        count.add_metric(values, len(self.sources))
        yield count

        dropped = family(
            CounterMetricFamily,
            "mux_sink_dropped_total",
            "Records a sink's channel dropped under its overflow policy (all sources).",
            ["sink"],
        )
        own = {self.context.name: self.context.dropped()}
        for sink, value in sorted({**self.dropped, **own}.items()):
            dropped.add_metric([sink, *values], value)
        yield dropped

        alerts = family(
            CounterMetricFamily,
            "mux_alerts_total",
            "Alerts raised by processors.",
            ["source", "transport", "rule", "severity"],
        )
        for key, value in sorted(self.alerts.items()):
            alerts.add_metric([*key, *values], value)
        yield alerts

        yield from self._source_metrics(family, values)
        yield from self._payload_metrics(family, values)

    def _payload_metrics(self, family: Any, values: list[str]) -> Iterator[Metric]:
        """A gauge per payload metric: each source's newest value in its current segment."""
        from prometheus_client.core import GaugeMetricFamily

        payload = self._payload
        for name, path in zip(payload.names, payload.paths, strict=True):
            gauge = family(
                GaugeMetricFamily,
                name,
                f"The payload field {path} (the newest value in the source's run segment).",
                ["source", "transport", "segment"],
            )
            for source, figures in sorted(self.sources.items()):
                value = figures.fields.get(name)
                if value is not None:
                    key = [source, figures.transport, str(figures.segment)]
                    gauge.add_metric([*key, *values], value)
            yield gauge

    def _source_metrics(self, family: Any, values: list[str]) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        labels = ["source", "transport"]
        up = family(GaugeMetricFamily, "mux_source_up", "1 while the source is connected.", labels)
        state = family(
            GaugeMetricFamily,
            "mux_source_state",
            "1 for the source's current connection state, 0 for the others.",
            [*labels, "state"],
        )
        gauges: dict[str, Any] = {}
        counters: dict[str, Any] = {}
        for name, doc in _GAUGES.items():
            gauges[name] = family(GaugeMetricFamily, name, doc, labels)
        for name, doc in _COUNTERS.items():
            counters[name] = family(CounterMetricFamily, name, doc, labels)
        lag = family(
            GaugeMetricFamily,
            "mux_source_lag_seconds",
            "Lag (received_at minus the payload's lag_field time) in the window, by quantile.",
            [*labels, "quantile"],
        )
        for source, figures in sorted(self.sources.items()):
            key = [source, figures.transport]
            up.add_metric([*key, *values], 1.0 if figures.state is State.CONNECTED else 0.0)
            for each in _STATES:
                current = 1.0 if figures.state is each else 0.0
                state.add_metric([*key, each.value, *values], current)
            quality = figures.quality
            for name, read in _COUNTER_VALUES.items():
                # Gaps are unknown before the first Quality record too.
                count = read(quality) if quality else (None if name in _GAPS else 0)
                if count is not None:  # gaps of events without ids: no sample
                    counters[name].add_metric([*key, *values], count)
            if quality is None:
                continue
            for name, read_gauge in _GAUGE_VALUES.items():
                value = read_gauge(quality)
                if value is not None:
                    gauges[name].add_metric([*key, *values], value)
            for quantile, value in (("0.5", quality.lag_p50), ("0.99", quality.lag_p99)):
                if value is not None:
                    lag.add_metric([*key, quantile, *values], value)
        yield up
        yield state
        yield from counters.values()
        yield from gauges.values()
        yield lag


_COUNTERS = {
    "mux_events_total": "Events received from the source.",
    "mux_source_reconnects_total": "Connections made again after a drop.",
    "mux_source_blind_seconds_total": "Seconds without a connection after a first one.",
    "mux_source_gaps_total": "Numeric event ids that never arrived.",
}
#: The figures without a sample while a source's events carry no numeric id.
_GAPS = frozenset({"mux_source_gaps_total", "mux_source_gaps"})
#: None (no sample for the source): gaps while its events carry no numeric id.
_COUNTER_VALUES: dict[str, Callable[[Quality], float | None]] = {
    "mux_events_total": lambda q: q.events_total,
    "mux_source_reconnects_total": lambda q: q.reconnects_total,
    "mux_source_blind_seconds_total": lambda q: q.blind_total,
    "mux_source_gaps_total": lambda q: q.gaps_total,
}
_GAUGES = {
    "mux_source_uptime_ratio": "Fraction of the quality window the source was connected.",
    "mux_source_window_seconds": "Seconds the windowed figures cover.",
    "mux_source_reconnects": "Reconnects in the quality window.",
    "mux_source_outages": "Outages in the quality window (one still going on included).",
    "mux_source_blind_max_seconds": "Longest outage in the quality window (0 without one).",
    "mux_source_events_per_second": "Events per second over the quality window.",
    "mux_source_gaps": "Missing numeric ids in the quality window.",
    "mux_source_last_event_timestamp_seconds": "When the newest event was received (Unix time).",
    "mux_source_quality_timestamp_seconds": "When these figures were measured (Unix time).",
}
_GAUGE_VALUES: dict[str, Callable[[Quality], float | None]] = {
    "mux_source_uptime_ratio": lambda q: q.uptime,
    "mux_source_window_seconds": lambda q: q.window,
    "mux_source_reconnects": lambda q: q.reconnects,
    "mux_source_outages": lambda q: q.outages,
    "mux_source_blind_max_seconds": lambda q: q.blind_max or 0.0,
    "mux_source_events_per_second": lambda q: q.events_per_s,
    "mux_source_gaps": lambda q: q.gaps,
    "mux_source_last_event_timestamp_seconds": lambda q: (
        None if q.staleness is None else q.at - q.staleness
    ),
    "mux_source_quality_timestamp_seconds": lambda q: q.at,
}


class _PayloadReader:
    """Reads the ``metrics`` fields of an event: each path's number, if it has one.

    The top-level keys are read through :class:`~mux_core.FieldReader` (a
    payload still held as bytes is not decoded: only these keys are read out of
    it); a dotted path then walks into the objects. A key that itself holds a
    dot (``"optim.lr"`` at the top) is read as it is first.
    """

    def __init__(self, paths: list[str], names: dict[str, str]) -> None:
        self.paths = tuple(paths)
        self.names = tuple(payload_metric_name(path, names) for path in paths)
        keys = list(dict.fromkeys([*paths, *(path.split(".")[0] for path in paths)]))
        self._reader = FieldReader(keys) if paths else None
        index = {key: position for position, key in enumerate(keys)}
        self._plan = [
            (name, index[path], index[path.split(".")[0]], tuple(path.split(".")[1:]))
            for name, path in zip(self.names, paths, strict=True)
        ]

    def read(self, event: Event, into: dict[str, float]) -> None:
        """Put the event's value of each metric it has into ``into``."""
        reader = self._reader
        if reader is None:
            return
        values = reader.read(event)
        if values is None:
            return
        for name, whole, first, rest in self._plan:
            value = values[whole]
            if value is None and rest:
                value = values[first]
                for key in rest:
                    if type(value) is not dict:
                        value = None
                        break
                    value = value.get(key)
            if type(value) is float or type(value) is int or type(value) is bool:
                into[name] = float(value)


@functools.cache
def _snapshot_class() -> Callable[[list[Metric]], Collector]:
    """The collector class of a snapshot, defined on the first write: subclassing
    prometheus_client's Collector at import would import prometheus_client with
    the plugin."""
    from prometheus_client.registry import Collector

    class _Snapshot(Collector):
        """Metric families taken in trio's thread, handed to the writer thread as they are."""

        def __init__(self, families: list[Metric]) -> None:
            self._families = families

        def collect(self) -> Iterable[Metric]:
            return self._families

    return _Snapshot


def _resolve(path: str) -> Path:
    return Path(os.path.expanduser(path))


def _version() -> str:
    from mux_core import __version__

    return str(__version__)


def _now() -> float:
    import trio

    return trio.current_time()
