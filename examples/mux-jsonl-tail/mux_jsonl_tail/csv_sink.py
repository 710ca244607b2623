"""The ``csv`` sink: one row per event, ready for a spreadsheet or pandas.

Columns: ``received_at, source, event, id``, then one per configured field,
taken from each event's data (a dict; ``"a.b"`` reaches into nested dicts).
Strings are written as they are, other values as JSON (``true``, ``0.31``,
``[1, 2]``); a missing field is an empty cell. With ``statuses = true`` the
sources' state changes are rows too: ``event`` is ``status:<state>`` (e.g.
``status:server_unavailable``) and a last column ``detail`` says why.

Rows are formatted on the trio side (cheap) and buffered; the disk work runs
in a worker thread, under a lock so rows keep their order. The buffer reaches
the OS every ``flush_interval`` seconds and when the sink closes.

The header is written once: appending to a file that already starts with the
same header adds rows only; a file with another header is refused rather than
mixed.
"""

from __future__ import annotations

import csv
import io
import os
from typing import Any, ClassVar

import attrs
import orjson

from mux_core import Batch, Event, Record, SinkContext, Status
from mux_core.options import positive

# trio is imported by the methods that use it: every mux command imports every
# installed plugin, so what a plugin imports at the top, each command waits for.

__all__ = ["CsvOptions", "CsvSink"]

#: The columns every row starts with.
FIXED_COLUMNS = ("received_at", "source", "event", "id")


def _non_empty(_instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value.strip():
        raise ValueError(f"{attribute.name} must not be empty")


def _unique_columns(instance: Any, _attribute: attrs.Attribute[Any], value: list[str]) -> None:
    seen = set(FIXED_COLUMNS) | ({"detail"} if instance.statuses else set())
    for field in value:
        if not field:
            raise ValueError("fields must not contain an empty name")
        if field in seen:
            fixed = ", ".join(FIXED_COLUMNS)
            raise ValueError(f"fields: column {field!r} appears twice (fixed: {fixed})")
        seen.add(field)


@attrs.frozen(kw_only=True)
class CsvOptions:
    """The keys of a ``[[sinks]] type = "csv"`` table."""

    #: The CSV file; ``~`` is expanded, missing directories are created, an
    #: existing file with the same header is appended to.
    path: str = attrs.field(validator=_non_empty)
    #: Columns taken from each event's data dict, after received_at, source, event, id.
    fields: list[str] = attrs.field(factory=list, validator=_unique_columns)
    #: Write status rows too (``event`` = ``status:<state>``, plus a ``detail`` column).
    statuses: bool = False
    #: Seconds between writes of buffered rows to the file.
    flush_interval: float = attrs.field(default=1.0, validator=positive("seconds"))

    @classmethod
    def check(cls, options: CsvOptions) -> None:
        path = os.path.abspath(os.path.expanduser(options.path))
        if os.path.isdir(path):
            raise ValueError(f"cannot write {options.path}: it is a directory")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value, default=repr).decode()


def _lookup(data: Any, field: str) -> Any:
    """``data[field]``, or the dotted path ``a.b`` through nested dicts; None if absent."""
    if not isinstance(data, dict):
        return None
    if field in data:
        return data[field]
    value: Any = data
    for part in field.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


class _CsvFile:
    """The blocking half: opens (header check), appends, closes. Worker thread only."""

    def __init__(self, path: str, header: str) -> None:
        self.path = path
        self.header = header
        self._file: io.TextIOWrapper | None = None

    def open(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        file = open(self.path, "a+", encoding="utf-8", newline="")  # noqa: SIM115
        try:
            file.seek(0)
            first = file.readline()
            if not first:
                file.write(self.header)
            elif first != self.header:
                raise ValueError(
                    f"{self.path} has other columns ({first.strip()}); choose another path"
                )
            file.seek(0, os.SEEK_END)
        except BaseException:
            file.close()
            raise
        self._file = file

    def write(self, text: str) -> None:
        assert self._file is not None
        self._file.write(text)
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            file.close()


class CsvSink:
    """Write events (and optionally statuses) as CSV rows."""

    Options: ClassVar[type[CsvOptions]] = CsvOptions
    default_overflow: ClassVar[str] = "block"
    default_on_error: ClassVar[str] = "stop"

    def __init__(self, options: CsvOptions, context: SinkContext) -> None:
        import trio

        self.options = options
        self.context = context
        self.path = os.path.abspath(os.path.expanduser(options.path))
        columns = [*FIXED_COLUMNS, *options.fields]
        if options.statuses:
            columns.append("detail")
        self.columns = tuple(columns)
        self._file = _CsvFile(self.path, self._format([columns]))
        self._pending: list[str] = []
        self._lock = trio.Lock()
        self._opened = self._closed = False

    async def open(self) -> None:
        import trio

        async with self._lock:
            await trio.to_thread.run_sync(self._file.open)
            self._opened = True
        self.context.start_background(self._flush_periodically)

    async def write(self, batch: Batch) -> None:
        import trio

        if self._closed:
            raise trio.ClosedResourceError(f"csv sink {self.context.name} is closed")
        rows = [row for record in batch if (row := self._row(record)) is not None]
        if rows:
            self._pending.append(self._format(rows))

    async def flush(self) -> None:
        """Hand the buffered rows to the OS."""
        async with self._lock:
            if self._opened and not self._closed:
                await self._write_pending()

    async def aclose(self) -> None:
        """Write the buffered rows and close; not interrupted by cancellation."""
        import trio

        with trio.CancelScope(shield=True):
            async with self._lock:
                if self._closed:
                    return
                self._closed = True
                if not self._opened:
                    return
                try:
                    await self._write_pending()
                finally:
                    await trio.to_thread.run_sync(self._file.close)

    async def _write_pending(self) -> None:
        import trio

        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending = []
        with trio.CancelScope(shield=True):  # rows taken from the buffer must reach the file
            await trio.to_thread.run_sync(self._file.write, text)

    async def _flush_periodically(self) -> None:
        import trio

        while not self._closed:
            await trio.sleep(self.options.flush_interval)
            await self.flush()

    def _row(self, record: Record) -> list[str] | None:
        # Records of other types (Alert, Quality, ...) have no row here.
        if type(record) is Event:
            row = [repr(record.received_at), record.source, record.event, record.id or ""]
            row.extend(_cell(_lookup(record.data, field)) for field in self.options.fields)
            if self.options.statuses:
                row.append("")
            return row
        if not self.options.statuses or not isinstance(record, Status):
            return None
        row = [repr(record.at), record.source, f"status:{record.state.value}", ""]
        row.extend("" for _ in self.options.fields)
        row.append(record.detail)
        return row

    @staticmethod
    def _format(rows: list[list[str]]) -> str:
        out = io.StringIO()
        csv.writer(out).writerows(rows)
        return out.getvalue()
