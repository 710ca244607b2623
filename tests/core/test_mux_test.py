"""``mux test``: tests of alert rules pass and fail as they should, bad files say where.

Every test runs the real command line on files written here: a config's
processors picked by type, inline processor tables, inline events with gaps,
a slice of a recording, and the three kinds of expectation.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

from mux_core.payload import keep_value
from mux_core.records import Alert, Event, Severity, State, Status, encode_jsonl

T0 = 1_764_250_000.0

MONITOR = """\
[[sources]]
name = "train"
transport = "sse"
url = "http://127.0.0.1:8888/events"

[[processors]]
type = "nonfinite"

[[processors]]
type = "stall"
field = "step"
seconds = 120

[[processors]]
type = "filter"
drop_events = ["debug"]

[[sinks]]
type = "log"
"""

PASSING = """\
config = "monitor.toml"

[[tests]]
name = "a NaN loss pages once per episode"
processors = ["nonfinite"]
events = [
  {step = 1, loss = 0.5},
  {step = 2, loss = nan},
  {step = 3, loss = nan},
  {step = 4, loss = 0.4},
]
alerts = [
  {rule = "nonfinite", severity = "critical", step = 2, seq = 2},
  {rule = "nonfinite", severity = "info", step = 4, message = "loss finite again at step 4"},
]
passed = 4

[[tests]]
name = "a stall pages after two minutes of silence, not before"
processors = ["stall"]
events = [
  {step = 1},
  {step = 2, after = 119},
  {step = 3, after = 119},
  {after = 7200},
]
alerts = [{rule = "stall", severity = "warning", step = 3, at = 358}]

[[tests]]
name = "the whole chain: debug events are dropped, the rest pass"
source = "train"
events = [
  {step = 1},
  {data = {step = 1, note = "x"}, event = "debug"},
  {step = 2},
]
passed = [{step = 1}, {step = 2}]
alert_counts = {nonfinite = 0, stall = 0}

[[tests]]
name = "a tighter diverge, inline"
processors = [{type = "diverge", warmup = 2, patience = 1}]
events = [{loss = 1.0}, {loss = 0.5}, {loss = 0.4}, {loss = 5.0}, {loss = 0.3}]
alerts = [
  {rule = "diverge", severity = "warning", seq = 4, message_contains = "above 2 x"},
  {rule = "diverge", severity = "info", seq = 5},
]

[[tests]]
name = "the recorded stall, from a slice of the recording"
recording = "run.jsonl"
steps = [90, 110]
processors = [{type = "stall", field = "step", seconds = 600}]
alerts = [
  {rule = "stall", severity = "warning", step = 100, at = 610},
  {rule = "stall", severity = "info", step = 101, message = "step increases again after 7200 s"},
]
passed = 21
"""


def _mux(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mux_core", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={k: v for k, v in os.environ.items() if not k.startswith("MUX_")},
        check=False,
    )


def _recording(path: Path) -> None:
    """Steps 1..200 a second apart, a two-hour silence after step 100, and a recorded alert."""
    records: list[Event | Status | Alert] = [
        Status("train", "sse", State.CONNECTED, 1, None, "", T0)
    ]
    at = T0
    for step in range(1, 201):
        at += 7200.0 if step == 101 else 1.0
        data = keep_value({"step": step, "loss": 1.0 / step})
        records.append(Event("train", "sse", "metric", str(step), data, at, step))
        if step == 50:
            records.append(Alert("train", "sse", "x", Severity.INFO, "recorded", 50, at))
    path.write_bytes(encode_jsonl(records))


def _write(tmp_path: Path, tests: str) -> Path:
    (tmp_path / "monitor.toml").write_text(MONITOR)
    _recording(tmp_path / "run.jsonl")
    path = tmp_path / "rules_test.toml"
    path.write_text(tests)
    return path


def test_passing_tests_exit_0_with_one_line_each(tmp_path: Path) -> None:
    _write(tmp_path, PASSING)
    done = _mux("test", "rules_test.toml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[:5] == [
        "rules_test.toml::a NaN loss pages once per episode PASSED",
        "rules_test.toml::a stall pages after two minutes of silence, not before PASSED",
        "rules_test.toml::the whole chain: debug events are dropped, the rest pass PASSED",
        "rules_test.toml::a tighter diverge, inline PASSED",
        "rules_test.toml::the recorded stall, from a slice of the recording PASSED",
    ]
    assert "5 passed in" in lines[5]
    assert done.stderr == ""


def _line_of(path: Path, needle: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_a_wrong_expected_step_fails_with_a_diff_at_the_tests_line(tmp_path: Path) -> None:
    wrong = PASSING.replace("step = 3, at = 358}]", "step = 2, at = 358}]").replace(
        "passed = [{step = 1}, {step = 2}]", "passed = [{step = 1}, {step = 3}]"
    )
    path = _write(tmp_path, wrong)
    done = _mux("test", "rules_test.toml", "-k", "stall", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    assert "rules_test.toml::a stall pages after two minutes of silence, not before FAILED" in out
    assert "rules_test.toml::the recorded stall, from a slice of the recording PASSED" in out
    assert "NaN" not in out  # -k: only the tests whose name says stall ran
    test_line = _line_of(path, 'name = "a stall pages') - 1  # its [[tests]] header
    alerts_line = _line_of(path, "step = 2, at = 358")
    assert f"rules_test.toml:{test_line}: a stall pages after two minutes" in out
    assert f"rules_test.toml:{alerts_line}: alerts differ (1 expected, 1 raised)" in out
    assert '  - {rule = "stall", severity = "warning", step = 2, at = 358}' in out
    assert '  + {rule = "stall", severity = "warning", step = 3, at = 358}' in out
    assert "stall (warning) step 3 seq - at 358 s: stalled: step has not increased" in out
    assert "1 failed, 1 passed in" in out.splitlines()[-1]

    done = _mux("test", "rules_test.toml", "-k", "whole chain", cwd=tmp_path)
    assert done.returncode == 1
    passed_line = _line_of(path, "passed = [{step = 1}, {step = 3}]")
    assert f"rules_test.toml:{passed_line}: the events passed differ" in done.stdout
    assert "    {step = 1}\n  - {step = 3}\n  + {step = 2}\n" in done.stdout


def test_the_junit_xml_report_parses(tmp_path: Path) -> None:
    wrong = PASSING.replace("passed = 4\n", "passed = 5\n")
    _write(tmp_path, wrong)
    done = _mux("test", "rules_test.toml", "--junit-xml", "report.xml", cwd=tmp_path)
    assert done.returncode == 1
    root = ET.parse(tmp_path / "report.xml").getroot()
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("5", "1", "0")
    (suite,) = root.findall("testsuite")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases][:2] == [
        "a NaN loss pages once per episode",
        "a stall pages after two minutes of silence, not before",
    ]
    failure = cases[0].find("failure")
    assert failure is not None and failure.get("message") == "the events passed differ"
    assert "- passed = 5\n+ passed = 4" in (failure.text or "")
    assert cases[0].get("line") == "3"
    assert all(c.find("failure") is None for c in cases[1:])


def test_bad_test_files_exit_2_with_every_problem_at_its_line(tmp_path: Path) -> None:
    bad = textwrap.dedent(
        """\
        config = "monitor.toml"

        [[tests]]
        name = "typos"
        processors = ["stal"]
        events = [{step = 1}, {status = "conected"}]
        alerts = [{rule = "stall", severty = "warning"}]
        passd = 3

        [[tests]]
        name = "an inline table's own check"
        processors = [{type = "stall", seconds = -1}]
        events = [{step = 1}]
        passed = 1

        [[tests]]
        name = "no expectation"
        processors = ["stall"]
        recording = "missing.jsonl"
        """
    )
    _write(tmp_path, bad)
    done = _mux("test", "rules_test.toml", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        "mux: error: rules_test.toml:5: tests[0].processors[0]: monitor.toml has no 'stal' "
        "processor; did you mean 'stall'? it has: nonfinite (line 6), stall (line 9), "
        "filter (line 14)",
        "rules_test.toml:6: tests[0].events[1].status: unknown state 'conected'; did you mean "
        "'connected'? states: connecting, connected, disconnected, server_unavailable, "
        "max_retries_exceeded, failed, ended, stopped",
        "rules_test.toml:7: tests[0].alerts[0].severty: unknown key 'severty'; "
        "did you mean 'severity'?",
        "rules_test.toml:8: tests[0].passd: unknown key 'passd'; did you mean 'passed'?",
        "rules_test.toml:12: tests[1].processors[0].seconds: seconds must be > 0, got -1.0",
        "rules_test.toml:16: tests[2]: the test asserts nothing: add alerts = [...], "
        "alert_counts or passed",
        "rules_test.toml:19: tests[2].recording: cannot read missing.jsonl: "
        "No such file or directory",
    ]
    (tmp_path / "syntax_test.toml").write_text('[[tests]]\nname = "x\n')
    done = _mux("test", "syntax_test.toml", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("mux: error: syntax_test.toml:2: invalid TOML: ")
    done = _mux("test", "nope.toml", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (2, "mux: error: nope.toml: no such tests file\n")
