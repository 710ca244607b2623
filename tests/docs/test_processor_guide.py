"""The "Writing a processor" page's example plugin passes the page's own tests."""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.helpers import ROOT

PAGE = ROOT / "docs" / "plugins" / "writing-a-processor.md"


def _python_blocks() -> list[str]:
    text = PAGE.read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


async def test_the_writing_a_processor_example_passes_its_own_tests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (plugin,) = [b for b in _python_blocks() if "def mux_register_processors" in b]
    (tmp_path / "mux_losscap.py").write_text(plugin, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mux_losscap", raising=False)
    ran = []
    for block in _python_blocks():
        if "async def test_" not in block:
            continue
        namespace: dict[str, Any] = {}
        exec(compile(block, str(PAGE), "exec"), namespace)
        for name, test in namespace.items():
            if name.startswith("test_") and inspect.iscoroutinefunction(test):
                with trio.fail_after(10):
                    await test()
                ran.append(name)
    assert ran == ["test_loss_cap_fires_once_per_episode", "test_loss_cap_in_a_real_engine"]


def test_the_loss_cap_is_testable_with_mux_test_as_the_page_shows(tmp_path: Path) -> None:
    """The page's tests file for its plugin passes through ``mux test``, output as shown."""
    import os
    import subprocess

    (plugin,) = [b for b in _python_blocks() if "def mux_register_processors" in b]
    (tmp_path / "mux_losscap.py").write_text(plugin, encoding="utf-8")
    text = PAGE.read_text(encoding="utf-8")
    (tests,) = re.findall(
        r'^```toml title="losscap_test.toml"\n(.*?)^```', text, flags=re.MULTILINE | re.DOTALL
    )
    (tmp_path / "losscap_test.toml").write_text(tests, encoding="utf-8")
    (console,) = re.findall(
        r"^```console\n\$ (MUX_PLUGIN_MODULES=.*?)^```", text, flags=re.MULTILINE | re.DOTALL
    )
    command, _, shown = console.partition("\n")
    assert command == "MUX_PLUGIN_MODULES=mux_losscap mux test losscap_test.toml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUX_")}
    env |= {"MUX_PLUGIN_MODULES": "mux_losscap", "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "mux_core", "test", "losscap_test.toml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    def normal(out: str) -> list[str]:
        return [re.sub(r" in \d+\.\d+ s ", " in N s ", line) for line in out.strip().splitlines()]

    assert normal(done.stdout) == normal(shown)
