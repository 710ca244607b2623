"""A ``mux test`` file: TOML in, :class:`Suite` out, every problem at its line.

A tests file pins what processors do with given input::

    config = "monitor.toml"            # the processors under test come from here

    [[tests]]
    name = "a NaN loss pages once per episode"
    processors = ["nonfinite"]         # tables of the config, by type ("stall#2": the 2nd)
    events = [
      {step = 1, loss = 0.5},
      {step = 2, loss = nan},
      {step = 3, loss = 0.4, after = 30},  # 30 s after the one before (default: 1 s)
    ]
    alerts = [
      {rule = "nonfinite", severity = "critical", step = 2},
      {rule = "nonfinite", severity = "info", step = 3},
    ]
    passed = 3

The input is ``events`` -- each a payload, or ``{data = ..., event = ...,
id = ...}``, or ``{status = "disconnected"}``; ``at`` (seconds since the
test's start) and ``after`` place it in time, and a table with only those
is time passing with nothing said -- or ``recording`` (a file a ``file``
sink wrote) with ``steps = [FIRST, LAST]``. The expectations are
``alerts`` (the alerts raised, in order, each matched on the keys it gives),
``alert_counts`` (per rule) and ``passed`` (how many events pass the chain,
or the fields of each). ``processors`` may also hold tables like
``[[processors]]`` ones (``{type = "stall", seconds = 60}``); without it the
config's whole chain for the test's ``source`` is under test.

Problems are :class:`~mux_core.errors.ConfigError` lines ``FILE:LINE:
tests[0].alerts[1].rule: why``, all of them at once (``mux test`` exits 2).
The file is trusted as a config is, but no ``${VAR}`` is expanded.
"""

from __future__ import annotations

import difflib
import math
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import msgspec

from .._plugins import PluginManager
from ..errors import ConfigError
from ..payload import keep_value
from ..records import Event, Record, RecordDecodeError, State, Status, decode_jsonl, open_recording
from . import load_config, parse_processor_tables
from .convert import describe_value, unknown_key_message
from .positions import KeyPath, key_lines, line_of, toml_error_position
from .records import Config, ProcessorConfig
from .render import _format_key

__all__ = ["Case", "ExpectedAlert", "Suite", "load_suite"]

_TOP_KEYS = ("config", "tests")
_TEST_KEYS = (
    "name",
    "config",
    "processors",
    "source",
    "transport",
    "every",
    "connected",
    "events",
    "recording",
    "steps",
    "step_field",
    "alerts",
    "alert_counts",
    "passed",
)
#: What an expected alert may say about an alert.
ALERT_KEYS = ("rule", "severity", "step", "seq", "at", "message", "message_contains")
_SEVERITIES = ("info", "warning", "critical")
_TIME_KEYS = ("at", "after")
_DATA_KEYS = ("data", "event", "id", *_TIME_KEYS)
_STATUS_KEYS = ("status", "detail", *_TIME_KEYS)


@attrs.frozen
class ExpectedAlert:
    """One entry of ``alerts``: the keys it gives, in the order written."""

    fields: dict[str, Any]
    line: int | None


@attrs.frozen
class Case:
    """One ``[[tests]]`` table, validated, with its input built."""

    name: str
    file: str
    line: int | None
    source: str
    processors: tuple[ProcessorConfig, ...]
    #: The input in batches: (seconds since the test's start, records arriving together).
    batches: tuple[tuple[float, tuple[Record, ...]], ...]
    #: Where the test's time ends (its last input, or time passing after it).
    end: float
    step_field: str
    alerts: tuple[ExpectedAlert, ...] | None = None
    alerts_line: int | None = None
    alert_counts: dict[str, int] | None = None
    alert_counts_line: int | None = None
    #: ``passed = N`` (an int) or ``passed = [{...}, ...]`` (the fields of each event).
    passed: int | tuple[ExpectedAlert, ...] | None = None
    passed_line: int | None = None

    @property
    def where(self) -> str:
        """``FILE:LINE`` of the test's table."""
        return f"{self.file}:{self.line}" if self.line else self.file


@attrs.frozen
class Suite:
    """The tests of one file, in file order."""

    path: str
    cases: tuple[Case, ...]


def load_suite(path: str | os.PathLike[str], plugins: PluginManager) -> Suite:
    """Read and check the tests file at ``path``; raise ConfigError naming every problem."""
    shown = os.fspath(path)
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise ConfigError("no such tests file", file=shown) from None
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", file=shown) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", file=shown) from None
    return _SuiteLoader(text, shown, plugins).load()


class _SuiteLoader:
    def __init__(self, text: str, path: str, plugins: PluginManager) -> None:
        self._text = text
        self._path = path
        self._base = Path(path).parent
        self._plugins = plugins
        self._lines: dict[KeyPath, int] = {}
        self._errors: list[ConfigError] = []
        self._configs: dict[str, Config | None] = {}

    # -- problems ----------------------------------------------------------------------

    def _line(self, path: KeyPath) -> int | None:
        return line_of(self._lines, path)

    def _fail(self, path: KeyPath, message: str) -> None:
        self._errors.append(
            ConfigError(message, file=self._path, line=self._line(path), key=_format_key(path))
        )

    def _raise(self) -> None:
        if not self._errors:
            return
        errors = sorted(self._errors, key=lambda e: (e.file != self._path, e.line or 0))
        first = errors[0]
        rest = "".join("\n" + str(error) for error in errors[1:])
        raise ConfigError(first.message + rest, file=first.file, line=first.line, key=first.key)

    # -- the file --------------------------------------------------------------------

    def load(self) -> Suite:
        try:
            data = tomllib.loads(self._text)
        except tomllib.TOMLDecodeError as exc:
            reason, line = toml_error_position(str(exc))
            line = line or self._text.count("\n") + 1
            raise ConfigError(f"invalid TOML: {reason}", file=self._path, line=line) from None
        self._lines = key_lines(self._text)
        for key in data:
            if key not in _TOP_KEYS:
                self._fail((key,), unknown_key_message(key, _TOP_KEYS))
        default_config = self._string(data, ("config",))
        tests = data.get("tests")
        cases: list[Case] = []
        if not isinstance(tests, list) or not tests or not all(isinstance(t, dict) for t in tests):
            got = "none" if tests is None else describe_value(tests)
            self._fail(("tests",), f"expected [[tests]] tables, got {got}; add a [[tests]] table")
        else:
            names: dict[str, int] = {}
            for index, table in enumerate(tests):
                case = self._case(table, ("tests", index), default_config)
                if case is None:
                    continue
                if case.name in names:
                    self._fail(
                        ("tests", index, "name"),
                        f"a second test named {case.name!r} (the first is test {names[case.name]})",
                    )
                names.setdefault(case.name, index)
                cases.append(case)
        self._raise()
        return Suite(self._path, tuple(cases))

    # -- one test ----------------------------------------------------------------------

    def _case(
        self, table: dict[str, Any], path: KeyPath, default_config: str | None
    ) -> Case | None:
        errors = len(self._errors)
        for key in table:
            if key not in _TEST_KEYS:
                self._fail((*path, key), unknown_key_message(key, _TEST_KEYS))
        name = self._string(table, (*path, "name"))
        if name is None:
            self._fail(path, "missing required key 'name' (a string naming the test)")
        config_name = self._string(table, (*path, "config")) or default_config
        source = self._string(table, (*path, "source"))
        step_field = self._string(table, (*path, "step_field")) or "step"
        every = self._number(table, (*path, "every"), default=1.0, positive=True)
        connected = table.get("connected", True)
        if not isinstance(connected, bool):
            got = describe_value(connected)
            self._fail((*path, "connected"), f"expected true or false, got {got}")
            connected = True
        transport = self._string(table, (*path, "transport")) or "test"

        inputs: list[tuple[float, Record]] | None = None
        end = 0.0
        if "events" in table and "recording" in table:
            self._fail((*path, "recording"), "give events or a recording, not both")
        elif "events" in table:
            source = source or "test"
            built = self._events(table["events"], (*path, "events"), source, transport, every)
            if built is not None:
                inputs, end = built
                if connected and inputs and type(inputs[0][1]) is not Status:
                    start = Status(source, transport, State.CONNECTED, 1, None, "", inputs[0][0])
                    inputs.insert(0, (inputs[0][0], start))
        elif "recording" in table:
            found = self._recording(table, path, source, step_field)
            if found is not None:
                source, inputs, end = found
        else:
            self._fail(path, 'no input: give events = [...] or recording = "FILE.jsonl"')
        if "steps" in table and "recording" not in table:
            self._fail((*path, "steps"), "steps picks a slice of a recording; add recording = ...")
        source = source or "test"

        processors = self._processors(table, path, config_name, source)
        expectations = self._expectations(table, path)
        if len(self._errors) > errors or name is None or inputs is None or processors is None:
            return None
        return Case(
            name=name,
            file=self._path,
            line=self._line(path),
            source=source,
            processors=processors,
            batches=_batches(inputs),
            end=end,
            step_field=step_field,
            **expectations,
        )

    # -- input -------------------------------------------------------------------------

    def _events(
        self, value: Any, path: KeyPath, source: str, transport: str, every: float
    ) -> tuple[list[tuple[float, Record]], float] | None:
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            self._fail(path, f"expected an array of tables, got {describe_value(value)}")
            return None
        inputs: list[tuple[float, Record]] = []
        now: float | None = None
        seq = 0
        for index, entry in enumerate(value):
            here = (*path, index)
            at = self._when(entry, here, now, every)
            if at is None:
                return None
            now = at
            if "status" in entry:
                status = self._status(entry, here, source, transport, at)
                if status is not None:
                    inputs.append((at, status))
                continue
            if "data" in entry:
                for key in entry:
                    if key not in _DATA_KEYS:
                        self._fail((*here, key), unknown_key_message(key, _DATA_KEYS))
                data = entry["data"]
                event = self._string(entry, (*here, "event")) or "message"
                given_id = self._string(entry, (*here, "id"))
            else:
                data = {k: v for k, v in entry.items() if k not in _TIME_KEYS}
                if not data:
                    continue  # time passing, nothing said
                event, given_id = "message", None
            if not self._json(data, (*here, "data") if "data" in entry else here):
                continue
            seq += 1
            payload = keep_value(data)
            record = Event(source, transport, event, given_id or str(seq), payload, at, seq)
            inputs.append((at, record))
        return inputs, (now or 0.0)

    def _when(
        self, entry: dict[str, Any], path: KeyPath, now: float | None, every: float
    ) -> float | None:
        if "at" in entry and "after" in entry:
            self._fail((*path, "after"), "give at or after, not both")
            return None
        if "at" in entry:
            at = self._number(entry, (*path, "at"), default=0.0)
            if now is not None and at < now:
                self._fail((*path, "at"), f"at = {at:g} is before the entry above it ({now:g})")
                return None
            return at
        if "after" in entry:
            after = self._number(entry, (*path, "after"), default=0.0)
            return (now or 0.0) + after
        return 0.0 if now is None else now + every

    def _status(
        self, entry: dict[str, Any], path: KeyPath, source: str, transport: str, at: float
    ) -> Status | None:
        for key in entry:
            if key not in _STATUS_KEYS:
                self._fail((*path, key), unknown_key_message(key, _STATUS_KEYS))
        value = entry["status"]
        states = [state.value for state in State]
        if value not in states:
            close = difflib.get_close_matches(str(value), states, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            known = ", ".join(states)
            self._fail((*path, "status"), f"unknown state {value!r}; {hint}states: {known}")
            return None
        detail = self._string(entry, (*path, "detail")) or ""
        return Status(source, transport, State(value), 1, None, detail, at)

    def _json(self, data: Any, path: KeyPath) -> bool:
        try:
            msgspec.json.encode(data)
        except (TypeError, msgspec.EncodeError):
            self._fail(path, "not JSON: a date or time has no JSON form; write it as a string")
            return False
        return True

    def _recording(
        self, table: dict[str, Any], path: KeyPath, source: str | None, step_field: str
    ) -> tuple[str, list[tuple[float, Record]], float] | None:
        name = self._string(table, (*path, "recording"))
        if name is None:
            return None
        first, last = -math.inf, math.inf
        if "steps" in table:
            steps = table["steps"]
            if (
                not isinstance(steps, list)
                or len(steps) != 2
                or not all(_is_number(step) for step in steps)
                or steps[0] > steps[1]
            ):
                self._fail(
                    (*path, "steps"),
                    "expected [FIRST, LAST], two step numbers in order, "
                    f"got {describe_value(steps)}",
                )
                return None
            first, last = float(steps[0]), float(steps[1])
        file = self._base / name
        try:
            records = _read_recording(file)
        except OSError as exc:
            self._fail((*path, "recording"), f"cannot read {file}: {exc.strerror or exc}")
            return None
        sources = list(dict.fromkeys(r.source for r in records if type(r) is Event))
        if source is None:
            if len(sources) != 1:
                held = ", ".join(repr(s) for s in sources) or "none"
                self._fail(
                    (*path, "recording"),
                    f"{file} holds the events of several sources ({held}); pick one: source = ...",
                )
                return None
            source = sources[0]
        elif source not in sources:
            close = difflib.get_close_matches(source, sources, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            held = ", ".join(repr(s) for s in sources) or "none"
            message = f"no events of {source!r} in {file}; {hint}it holds {held}"
            self._fail((*path, "source"), message)
            return None
        sliced = _slice(records, source, step_field, first, last)
        if not sliced:
            self._fail(
                (*path, "steps"),
                f"no event of {source!r} in {file} has a {step_field} in that range",
            )
            return None
        return source, sliced, sliced[-1][0]

    # -- processors --------------------------------------------------------------------

    def _config(self, name: str) -> Config | None:
        if name not in self._configs:
            try:
                self._configs[name] = load_config(self._base / name, self._plugins, replay=True)
            except ConfigError as exc:
                self._errors.append(exc)
                self._configs[name] = None
        return self._configs[name]

    def _processors(
        self, table: dict[str, Any], path: KeyPath, config_name: str | None, source: str
    ) -> tuple[ProcessorConfig, ...] | None:
        key = (*path, "processors")
        value = table.get("processors")
        if value is None:
            if config_name is None:
                self._fail(path, 'no processors to test: processors = [...] or config = "FILE"')
                return None
            config = self._config(config_name)
            if config is None:
                return None
            chain = tuple(p for p in config.processors if p.applies_to(source))
            if not chain:
                self._fail(
                    path,
                    f"no processor of {config_name} applies to source {source!r}; "
                    "set source = ... or name the processors",
                )
                return None
            return chain
        if not isinstance(value, list) or not value:
            got = describe_value(value)
            self._fail(key, f"expected an array of processor names or tables, got {got}")
            return None
        found: list[ProcessorConfig] = []
        ok = True
        for index, item in enumerate(value):
            here = (*key, index)
            if isinstance(item, str):
                picked = self._pick(item, here, config_name)
            elif isinstance(item, dict):
                picked = self._inline(item, here)
            else:
                self._fail(here, f"expected a processor name or table, got {describe_value(item)}")
                picked = None
            if picked is None:
                ok = False
                continue
            if not picked.applies_to(source):
                globs = ", ".join(picked.sources or ())
                self._fail(
                    here,
                    f"processor {picked.type!r} applies to sources {globs}, not to {source!r}; "
                    "set source = ... in the test",
                )
                ok = False
                continue
            found.append(picked)
        return tuple(found) if ok else None

    def _pick(self, name: str, path: KeyPath, config_name: str | None) -> ProcessorConfig | None:
        if config_name is None:
            self._fail(path, f'names a processor {name!r} of a config: add config = "FILE"')
            return None
        config = self._config(config_name)
        if config is None:
            return None
        kind, _, number = name.partition("#")
        tables = [p for p in config.processors if p.type == kind]
        listing = ", ".join(f"{p.type} (line {p.line})" for p in config.processors) or "none"
        if not tables:
            types = sorted({p.type for p in config.processors})
            close = difflib.get_close_matches(kind, types, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            self._fail(path, f"{config_name} has no {kind!r} processor; {hint}it has: {listing}")
            return None
        if not number:
            if len(tables) > 1:
                lines = ", ".join(str(p.line) for p in tables)
                self._fail(
                    path,
                    f"{config_name} has {len(tables)} {kind!r} processors (lines {lines}); "
                    f'name one: "{kind}#1" .. "{kind}#{len(tables)}"',
                )
                return None
            return tables[0]
        if not number.isdigit() or not 1 <= int(number) <= len(tables):
            self._fail(
                path,
                f"{config_name} has {len(tables)} {kind!r} processor(s): "
                f'"{kind}#1" .. "{kind}#{len(tables)}"',
            )
            return None
        return tables[int(number) - 1]

    def _inline(self, table: dict[str, Any], path: KeyPath) -> ProcessorConfig | None:
        try:
            (processor,) = parse_processor_tables(
                [(path, table)], path=self._path, lines=self._lines, plugins=self._plugins
            )
        except ConfigError as exc:
            self._errors.append(exc)
            return None
        return processor

    # -- expectations -----------------------------------------------------------------

    def _expectations(self, table: dict[str, Any], path: KeyPath) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if "alerts" in table:
            alerts = self._entries(table["alerts"], (*path, "alerts"), ALERT_KEYS)
            if alerts is not None:
                out["alerts"] = alerts
                out["alerts_line"] = self._line((*path, "alerts"))
        if "alert_counts" in table:
            counts = self._counts(table["alert_counts"], (*path, "alert_counts"))
            if counts is not None:
                out["alert_counts"] = counts
                out["alert_counts_line"] = self._line((*path, "alert_counts"))
        if "passed" in table:
            passed = table["passed"]
            key = (*path, "passed")
            if isinstance(passed, int) and not isinstance(passed, bool) and passed >= 0:
                out["passed"] = passed
            elif isinstance(passed, list):
                entries = self._entries(passed, key, None)
                if entries is not None:
                    out["passed"] = entries
            else:
                self._fail(
                    key,
                    "expected a count of events (an integer >= 0) or an array of tables "
                    f"(the fields of each event), got {describe_value(passed)}",
                )
            out["passed_line"] = self._line(key)
        if not any(key in table for key in ("alerts", "alert_counts", "passed")):
            self._fail(path, "the test asserts nothing: add alerts = [...], alert_counts or passed")
        return out

    def _entries(
        self, value: Any, path: KeyPath, keys: tuple[str, ...] | None
    ) -> tuple[ExpectedAlert, ...] | None:
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            self._fail(path, f"expected an array of tables, got {describe_value(value)}")
            return None
        entries = []
        ok = True
        for index, item in enumerate(value):
            here = (*path, index)
            for key, given in item.items():
                if keys is not None and key not in keys:
                    self._fail((*here, key), unknown_key_message(key, keys))
                    ok = False
                elif keys is not None and not self._alert_value(key, given, (*here, key)):
                    ok = False
            entries.append(ExpectedAlert(dict(item), self._line(here)))
        return tuple(entries) if ok else None

    def _alert_value(self, key: str, value: Any, path: KeyPath) -> bool:
        if key in ("rule", "message", "message_contains"):
            wanted, good = "a string", isinstance(value, str)
        elif key == "severity":
            wanted, good = "info, warning or critical", value in _SEVERITIES
        elif key == "seq":
            wanted = "an integer"
            good = isinstance(value, int) and not isinstance(value, bool)
        else:  # step, at
            wanted, good = "a number", _is_number(value)
        if not good:
            self._fail(path, f"expected {wanted}, got {describe_value(value)}")
        return good

    def _counts(self, value: Any, path: KeyPath) -> dict[str, int] | None:
        if not isinstance(value, dict) or not value:
            self._fail(path, f"expected a table of rule = count, got {describe_value(value)}")
            return None
        ok = True
        for rule, count in value.items():
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                got = describe_value(count)
                self._fail((*path, rule), f"expected a count (an integer >= 0), got {got}")
                ok = False
        return dict(value) if ok else None

    # -- small values ------------------------------------------------------------------

    def _string(self, table: Mapping[str, Any], path: KeyPath) -> str | None:
        value = table.get(str(path[-1]))
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            self._fail(path, f"expected a non-empty string, got {describe_value(value)}")
            return None
        return value

    def _number(
        self, table: Mapping[str, Any], path: KeyPath, *, default: float, positive: bool = False
    ) -> float:
        value = table.get(str(path[-1]), default)
        bad = not _is_number(value) or not math.isfinite(value) or value < 0
        if bad or (positive and value == 0):
            bound = "> 0" if positive else ">= 0"
            self._fail(path, f"expected a number of seconds {bound}, got {describe_value(value)}")
            return default
        return float(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _read_recording(path: Path) -> list[Record]:
    records: list[Record] = []
    with open_recording(path) as file:
        for line in file:
            if not line.strip():
                continue
            try:
                records.append(decode_jsonl(line))
            except RecordDecodeError:
                continue
    return records


def _time(record: Record) -> float:
    return record.received_at if type(record) is Event else float(getattr(record, "at", math.nan))


def _slice(
    records: list[Record], source: str, step_field: str, first: float, last: float
) -> list[tuple[float, Record]]:
    """The events of ``source`` whose step is in [first, last], the statuses amid them and the
    one in effect before them, timed from the first one; the recording's alerts are left out."""
    mine = [r for r in records if r.source == source and type(r) in (Event, Status)]
    chosen: list[int] = []
    for index, record in enumerate(mine):
        if type(record) is Event:
            data = record.data
            step = data.get(step_field) if isinstance(data, dict) else None
            if (
                isinstance(step, int | float)
                and not isinstance(step, bool)
                and first <= step <= last
            ):
                chosen.append(index)
    if not chosen:
        return []
    start, stop = chosen[0], chosen[-1]
    before = [r for r in mine[:start] if type(r) is Status]
    wanted = set(chosen)
    picked = [
        r for i, r in enumerate(mine[start : stop + 1], start) if type(r) is Status or i in wanted
    ]
    origin = _time(mine[start])
    out: list[tuple[float, Record]] = []
    if before:
        out.append((0.0, before[-1]))
    last_time = 0.0
    for record in picked:
        at = _time(record) - origin
        last_time = at if math.isfinite(at) else last_time
        out.append((last_time, record))
    return out


def _batches(inputs: list[tuple[float, Record]]) -> tuple[tuple[float, tuple[Record, ...]], ...]:
    """Records at one time arrive together (one read); a status is a batch of its own."""
    batches: list[tuple[float, list[Record]]] = []
    for at, record in inputs:
        if (
            batches
            and batches[-1][0] == at
            and type(record) is Event
            and type(batches[-1][1][-1]) is Event
        ):
            batches[-1][1].append(record)
        else:
            batches.append((at, [record]))
    return tuple((at, tuple(records)) for at, records in batches)
