"""The run machinery: what ``mux run`` and ``mux replay`` do between a transport and a sink.

Nothing here is public: plugins see the contracts at the top of
:mod:`mux_core`. The map of this package is in ``docs/architecture.md``.
"""

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..records import Record

#: How records go on from one part of a run to the next (a source's task to the
#: fan-out, a processor's timer to the sinks): a batch in, awaited.
Send = Callable[[Sequence[Record]], Awaitable[Any]]
