"""``backtest``: processors over records in virtual time, for a plugin's pytest tests.

What ``mux replay --alerts-only`` and ``mux test`` do, as a function: the
records are fed as a recording is, each batch (records of one source with
one time) at its time, and the processors' timers tick at their deadlines,
so a ``stall`` rule fires at the moment the records went quiet -- a test
of a two-hour silence takes no time::

    from mux_core.testing import backtest

    out = backtest('[[processors]]\\ntype = "stall"\\nseconds = 60\\n', records, until=t0 + 600)
    alerts = [r for r in out if type(r) is Alert]
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .._config import ProcessorConfig, parse_config, parse_processor_tables
from .._plugins import PluginManager
from .._run.backtest import Backtest, VirtualClock, run_in_virtual_time
from .._run.recordings import record_time
from ..errors import MuxError
from ..records import Record, RecordDecodeError, decode_jsonl, open_recording

__all__ = ["backtest"]

_NAME = "<backtest>"


def backtest(
    processors: str | Sequence[Mapping[str, Any]],
    records: Iterable[Record] | str | os.PathLike[str],
    *,
    plugins: PluginManager | None = None,
    until: float | None = None,
) -> list[Record]:
    """The records as the sinks of a replay through ``processors`` would get them.

    ``processors``: ``[[processors]]`` tables as TOML text, or as dicts
    (``[{"type": "stall", "seconds": 60}]``), validated as a config's are
    (a :class:`~mux_core.ConfigError` names the key). ``records``: records in
    the order they came, timed by their own ``received_at`` / ``at``, or the
    path of a recording (what a ``file`` sink wrote). ``plugins``: where the
    processor types come from (default: the installed plugins, loaded by
    their entry points). ``until``: a time, on the records' clock, that time
    runs on to after the last record, so a rule due in that silence fires.

    Returns every record that goes on: events and statuses as the processors
    passed them, and the alerts they raised, stamped with the time they were
    raised at, in order. Blocking; from a trio test, call it in a thread
    (``await trio.to_thread.run_sync(backtest, ...)``) or directly (it then
    runs in a thread of its own).
    """
    if plugins is None:
        plugins = PluginManager()
        plugins.load_entry_points()
    configs = _processors(processors, plugins)
    given = _records(records)
    if _in_trio():
        return _in_thread(configs, given, plugins, until)
    return _run(configs, given, plugins, until)


def _in_trio() -> bool:
    try:
        import trio

        trio.lowlevel.current_trio_token()
    except RuntimeError:
        return False
    return True


def _in_thread(
    configs: Sequence[ProcessorConfig],
    records: list[Record],
    plugins: PluginManager,
    until: float | None,
) -> list[Record]:
    result: list[list[Record]] = []
    error: list[BaseException] = []

    def work() -> None:
        try:
            result.append(_run(configs, records, plugins, until))
        except BaseException as exc:  # raised in the caller's thread below
            error.append(exc)

    thread = threading.Thread(target=work, name="mux-backtest")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def _processors(
    processors: str | Sequence[Mapping[str, Any]], plugins: PluginManager
) -> list[ProcessorConfig]:
    if isinstance(processors, str):
        return list(parse_config(processors, path=_NAME, plugins=plugins, replay=True).processors)
    tables = [(("processors", index), dict(table)) for index, table in enumerate(processors)]
    return parse_processor_tables(tables, path=_NAME, lines={}, plugins=plugins)


def _records(records: Iterable[Record] | str | os.PathLike[str]) -> list[Record]:
    if not isinstance(records, str | os.PathLike):
        return list(records)
    out: list[Record] = []
    try:
        with open_recording(Path(records)) as file:
            for number, line in enumerate(file, 1):
                if not line.strip():
                    continue
                try:
                    out.append(decode_jsonl(line))
                except RecordDecodeError as exc:
                    raise MuxError(f"{os.fspath(records)}:{number}: not a record: {exc}") from None
    except OSError as exc:
        raise MuxError(f"{os.fspath(records)}: cannot read: {exc.strerror or exc}") from None
    return out


def _run(
    configs: Sequence[ProcessorConfig],
    records: list[Record],
    plugins: PluginManager,
    until: float | None,
) -> list[Record]:
    clock = VirtualClock()
    engine = Backtest(configs, plugins, clock)
    start: float | None = None
    last = 0.0
    items = []
    for record in records:
        at = record_time(record)
        if math.isfinite(at):
            start = at if start is None else start
            last = max(last, at - start)
        items.append((last, 0, record))

    def feed() -> list[Record]:
        out = engine.feed(items)
        if until is not None:
            out += engine.advance(until - (start if start is not None else until))
        return [record for _, _, record in out]

    return run_in_virtual_time(clock, feed)
