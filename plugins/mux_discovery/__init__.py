"""mux_discovery: the built-in discoverers -- ``files`` and ``http``.

* ``files``: globs of small TOML or JSON endpoint files, the kind a
  training script writes next to its checkpoints; a file that appears adds
  its sources, one that changes updates them, one that disappears removes
  them.
* ``http``: polls a URL that answers with a JSON list of sources (source
  tables, or Prometheus ``http_sd`` target groups), backing off with the
  run's ``[retry]`` policy while it fails; a failed poll keeps the last good
  list.

Registered through the ``mux`` entry point like any third-party plugin.
"""

from __future__ import annotations

from mux_core.hookspecs import Register, hookimpl

from .files import FilesDiscovery, FilesOptions
from .http import HttpDiscovery, HttpOptions, http_sd_tables

__all__ = ["FilesDiscovery", "FilesOptions", "HttpDiscovery", "HttpOptions", "http_sd_tables"]


@hookimpl
def mux_register_discovery(register: Register) -> None:
    register("files", FilesDiscovery)
    register("http", HttpDiscovery)
