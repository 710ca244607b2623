"""Each ``--workers`` worker's part of the config file, as its parent read it.

A worker builds only its own sources (``load_config(only=...)``), but
reading the file is most of a load: the TOML parse and the scan for each
key's line, ~5 s for 100,000 sources -- in every worker again, before its
first connect. So the parent, which read the file anyway, hands each worker
what it read (:class:`~mux_core._config.Parsed`) cut to its share: every
top-level table as it is, its own ``[[sources]]`` tables whole, the others'
as their name (still known to processors and checked for duplicates, at the
same index, so keys and lines are those of the file) and the values naming
an environment variable (their values are secrets to mask here too), and the
lines of those keys. The worker validates it as it would the file
(``load_config(parsed=...)``), ``${VAR}`` expanded by the same environment.

Pickled: TOML's values (dates and times among them) come back as they were,
and parent and worker are the same program.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from typing import Any

from .._config import Parsed
from .._config.positions import KeyPath

__all__ = ["read_share", "shares"]


def shares(
    parsed: Parsed, names: Sequence[str], worker_of: Callable[[str], int], count: int
) -> list[bytes] | None:
    """Each worker's part of ``parsed`` (pickled), by index; None when its
    ``[[sources]]`` tables are not the config's sources one for one
    (``names``, the config's, in order): the workers then read the file."""
    data = parsed.data
    tables = data.get("sources", [])
    if not isinstance(tables, list) or len(tables) != len(names):
        return None
    owner = [worker_of(name) for name in names]
    common: dict[KeyPath, int] = {}
    own: list[dict[KeyPath, int]] = [{} for _ in range(count)]
    for path, line in parsed.lines.items():
        if len(path) > 1 and path[0] == "sources" and isinstance(path[1], int):
            if path[1] < len(owner):
                own[owner[path[1]]][path] = line
            continue
        common[path] = line
    named = [_stand_in(table) for table in tables]
    out = []
    for index in range(count):
        mine = [table if owner[at] == index else named[at] for at, table in enumerate(tables)]
        part: dict[str, Any] = {**data, "sources": mine}
        lines = {**common, **own[index]}
        out.append(pickle.dumps((part, lines), protocol=pickle.HIGHEST_PROTOCOL))
    return out


def _stand_in(table: Any) -> Any:
    """Another worker's table as a worker sees it: its name, and the values that
    name an environment variable -- expanded here as in the file, they are
    secrets to mask in this worker's logs too."""
    if not isinstance(table, dict):
        return table
    return {key: value for key, value in table.items() if key == "name" or _refers(value)}


def _refers(value: Any) -> bool:
    if isinstance(value, str):
        return "$" in value
    if isinstance(value, list):
        return any(_refers(item) for item in value)
    if isinstance(value, dict):
        return any(_refers(item) for item in value.values())
    return False


def read_share(data: bytes) -> Parsed:
    """A worker's part of the config, as :func:`shares` made it."""
    part, lines = pickle.loads(data)
    return Parsed(part, lines)
