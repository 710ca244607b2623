from __future__ import annotations

import pytest
import trio.testing

import mux_core.testing
from mux_core.plugins import PluginManager


@pytest.fixture
def plugins() -> PluginManager:
    """A plugin manager with only the test kit's scripted transport and collecting sink."""
    pm = PluginManager()
    pm.register(mux_core.testing, name="testing")
    return pm


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)
