"""A process mux owns (``mux run``, a worker) runs full collections less often."""

from __future__ import annotations

import gc

from mux_core._run.host import FULL_COLLECTION_EVERY, fewer_full_collections


def test_only_the_full_collections_threshold_changes() -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(500, 7, 10)
        fewer_full_collections()
        assert gc.get_threshold() == (500, 7, FULL_COLLECTION_EVERY)
        assert FULL_COLLECTION_EVERY > 10  # Python's default
    finally:
        gc.set_threshold(*before)
