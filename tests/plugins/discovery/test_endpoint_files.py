"""Endpoint files are someone else's: read only when regular, never more than the cap.

Each test puts a real file system object where the ``files`` discoverer's
glob matches -- a symlink to ``/dev/zero``, a FIFO, a directory, a file over
``max_file_bytes``, a document nested too deeply -- and looks once
(``FilesDiscovery.scan``, what the discoverer runs in a thread every
``interval``). The ``/dev/zero`` look runs in a child process with a memory
limit: read without a bound it would fill the machine's memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import trio

from mux_core import DiscoveryContext, RetryPolicy, SourceDocument
from mux_discovery.files import FilesDiscovery, FilesOptions


class _Told(DiscoveryContext):
    """A discoverer's context that keeps what it is told instead of logging it."""

    def __init__(self) -> None:
        super().__init__(name="files", retry=RetryPolicy(), update=self._update)
        self.problems: list[str] = []

    def report(self, problem: str) -> None:
        self.problems.append(problem)

    async def _update(self, _documents: Sequence[SourceDocument]) -> None:
        raise AssertionError("scan() hands the documents back; it does not update")


def _discoverer(tmp_path: Path, **options: Any) -> tuple[FilesDiscovery, _Told]:
    told = _Told()
    pattern = str(tmp_path / "runs" / "*")
    return FilesDiscovery(FilesOptions(paths=[pattern], **options), told), told


def _endpoint(name: str) -> str:
    return json.dumps({"name": name, "transport": "sse", "url": "http://127.0.0.1:1/events"})


def _names(documents: list[SourceDocument]) -> list[str]:
    return [table["name"] for document in documents for table in document.tables]


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    path = tmp_path / "runs"
    path.mkdir()
    (path / "good.json").write_text(_endpoint("good"))
    return path


_DEV_ZERO_CHILD = textwrap.dedent(
    """
    import json, os, resource, sys
    from mux_core import DiscoveryContext, RetryPolicy
    from mux_discovery.files import FilesDiscovery, FilesOptions

    def status(key):
        with open("/proc/self/status") as file:
            for line in file:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        raise KeyError(key)

    # At most 512 MiB more address space: a read without a bound fails fast here
    # instead of filling the machine's memory.
    limit = status("VmSize") + 512 * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    async def update(documents):
        pass

    problems = []
    context = DiscoveryContext(name="files", retry=RetryPolicy(), update=update)
    context.report = problems.append
    discoverer = FilesDiscovery(FilesOptions(paths=[sys.argv[1]]), context)
    before = status("VmRSS")
    try:
        documents = discoverer.scan()
    except MemoryError:
        print(json.dumps({"error": "MemoryError"}))
        sys.exit(1)
    after = status("VmRSS")
    names = [t["name"] for d in documents for t in d.tables]
    print(json.dumps({"grew": after - before, "problems": problems, "names": names}))
    """
)


def test_a_symlink_to_dev_zero_is_refused_without_being_read(runs: Path) -> None:
    """The issue's case: RSS grew by ~350 MiB/s. Now: refused, named, memory unmoved."""
    (runs / "mux.toml").symlink_to("/dev/zero")
    child = subprocess.run(
        [sys.executable, "-c", _DEV_ZERO_CHILD, str(runs / "*")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 0, child.stdout + child.stderr
    result = json.loads(child.stdout)
    assert result["grew"] < 16 * 1024 * 1024, result
    assert result["names"] == ["good"]  # the other files are unaffected
    [problem] = result["problems"]
    assert problem == (
        f"{runs / 'mux.toml'}: refused: a symlink to '/dev/zero', which is a character "
        "device, not a regular file; an endpoint file must be a plain file"
    )


async def test_a_fifo_is_refused_without_blocking(tmp_path: Path, runs: Path) -> None:
    """Opening a FIFO for reading waits for a writer: a look must never get there."""
    fifo = runs / "mux.json"
    os.mkfifo(fifo)
    discoverer, told = _discoverer(tmp_path)
    try:
        with trio.fail_after(10):
            documents = await trio.to_thread.run_sync(discoverer.scan, abandon_on_cancel=True)
    finally:
        _release_readers(fifo)
    assert _names(documents) == ["good"]
    assert told.problems == [
        f"{fifo}: refused: a FIFO, not a regular file; an endpoint file must be a plain file"
    ]


def _release_readers(fifo: Path) -> None:
    """A look stuck in ``open()`` of the FIFO (none when it is refused) gets its writer."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass  # ENXIO: nobody has it open for reading


def test_a_directory_is_refused_once(tmp_path: Path, runs: Path) -> None:
    (runs / "run-7").mkdir()
    discoverer, told = _discoverer(tmp_path)
    for _ in range(3):
        assert _names(discoverer.scan()) == ["good"]
    assert told.problems == [
        f"{runs / 'run-7'}: refused: a directory, not a regular file; an endpoint file must "
        "be a plain file"
    ]


def test_a_file_over_max_file_bytes_is_refused_and_its_last_content_kept(
    tmp_path: Path, runs: Path
) -> None:
    """A file that grows past the cap keeps what it had; one back under it is read again."""
    endpoint = runs / "big.json"
    endpoint.write_text(_endpoint("big"))
    discoverer, told = _discoverer(tmp_path, max_file_bytes=1024)
    assert _names(discoverer.scan()) == ["big", "good"]
    endpoint.write_text(_endpoint("big") + " " * 4096)
    assert _names(discoverer.scan()) == ["big", "good"]
    assert told.problems == [
        f"{endpoint}: refused: larger than 1024 bytes (max_file_bytes); an endpoint file "
        "lists a few sources -- raise max_file_bytes if this one really is that large "
        "(its last good content is kept)"
    ]
    endpoint.write_text(_endpoint("smaller"))
    assert _names(discoverer.scan()) == ["smaller", "good"]  # big.json, good.json


def test_a_symlink_to_a_regular_file_is_read(tmp_path: Path, runs: Path) -> None:
    target = tmp_path / "elsewhere.json"
    target.write_text(_endpoint("linked"))
    (runs / "linked.json").symlink_to(target)
    discoverer, told = _discoverer(tmp_path)
    assert _names(discoverer.scan()) == ["good", "linked"]
    assert told.problems == []


@pytest.mark.parametrize(
    ("name", "text", "why"),
    [
        ("deep.json", "[" * 100_000, "invalid JSON: arrays or tables nested too deeply"),
        ("deep.toml", "a = " + "[" * 100_000, "invalid TOML: arrays or tables nested too deeply"),
        ("digits.json", '{"name": ' + "1" * 5000 + "}", "a number with too many digits"),
        ("digits.toml", "a = " + "1" * 5000, "a number with too many digits"),
    ],
)
def test_a_hostile_document_is_a_parse_error(
    tmp_path: Path, runs: Path, name: str, text: str, why: str
) -> None:
    """Nesting that exhausts the recursion limit, a number of 5,000 digits: reported
    like any parse error (they escaped as RecursionError / ValueError and ended the
    discoverer)."""
    (runs / name).write_text(text)
    discoverer, told = _discoverer(tmp_path)
    assert _names(discoverer.scan()) == ["good"]
    [problem] = told.problems
    assert problem.startswith(f"{runs / name}: ") and why in problem, problem
