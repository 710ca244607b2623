"""Sharded collectors: N identical mux processes split one config without talking.

``mux run --shard I/N`` (or ``shard = "I/N"`` in the config) runs only the
sources whose name falls in shard I of N (0 <= I < N)::

    shard_of(name, N) = crc32(name encoded as UTF-8) mod N

CRC-32 (zlib's, the one in PNG and gzip) is fixed by its standard, the same
on every machine, Python version and run (Python's own ``hash()`` of a
string is salted per process: useless here). Each source lands in exactly
one shard. Changing N reassigns most sources (a modulo, not a consistent
hash): restart every collector with the new N together.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:  # records.py imports Shard from here
    from .records import Config

__all__ = ["Shard", "parse_shard", "select_shard", "shard_of"]

_FORM = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


def shard_of(name: str, count: int) -> int:
    """The shard (0 .. count-1) a source named ``name`` belongs to."""
    if count < 1:
        raise ValueError(f"the number of shards must be >= 1, not {count}")
    return zlib.crc32(name.encode("utf-8")) % count


@attrs.frozen
class Shard:
    """Shard ``index`` of ``count`` (written ``"index/count"``)."""

    index: int
    count: int

    def includes(self, name: str) -> bool:
        """Whether the source ``name`` runs in this shard."""
        return shard_of(name, self.count) == self.index

    def select(self, names: Iterable[str]) -> list[str]:
        """The names of this shard, in their order."""
        return [name for name in names if self.includes(name)]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"I/N"`` -> Shard(I, N); ValueError with what to write instead."""
    match = _FORM.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f'shard must be "I/N" (e.g. "0/2": the first of two), not {text!r}')
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or index >= count:
        raise ValueError(
            f"shard {text!r}: I must be 0 .. N-1 and N >= 1 (the shards of 2 are 0/2 and 1/2)"
        )
    return Shard(index, count)


def select_shard(config: Config, shard: Shard | None) -> Config:
    """``config`` with only the sources of ``shard`` (all of them for None)."""
    if shard is None:
        return config
    sources = tuple(source for source in config.sources if shard.includes(source.name))
    return attrs.evolve(config, sources=sources, shard=shard)
