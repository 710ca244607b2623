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
