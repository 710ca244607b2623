"""Fixtures every Redis test module shares."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mux_core.testing import Collectors
from tests.helpers.redis import delete_prefix, require_shared_redis, unique_prefix


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test's own on the shared Redis, deleted afterwards."""
    require_shared_redis()
    prefix = unique_prefix()
    yield prefix
    delete_prefix(6379, prefix)


@pytest.fixture
def collectors() -> Collectors:
    """This test's collect sinks: ``await collectors.sink()`` once an engine made one."""
    return Collectors()
