"""The ``[[sinks]] type = "qt"`` options, and the check that Qt is installed.

This module must import without PySide6: ``mux check`` and ``mux plugins``
list the Qt sink even where the ``mux[qt]`` extra is missing, and report the
install hint instead of a traceback.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

import attrs

__all__ = ["INSTALL_HINT", "QtOptions", "missing_display", "missing_qt", "require_qt"]

INSTALL_HINT = "PySide6 is not installed; install the Qt panel with: pip install 'mux[qt]'"


def _fields(instance: Any, attribute: attrs.Attribute[Any], value: list[str]) -> None:
    for field in value:
        if not isinstance(field, str) or not field:
            raise ValueError(f"{attribute.name} entries must be field names, got {field!r}")
    if len(set(value)) != len(value):
        raise ValueError(f"{attribute.name} lists a field twice: {value!r}")


def _non_empty(instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value:
        raise ValueError(f'{attribute.name} must name a data field (e.g. "step") or "received_at"')


def _history(instance: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if value < 2:
        raise ValueError(f"{attribute.name} must be at least 2 points, got {value}")


def _smoothing(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ValueError(f"{attribute.name} must be from 0 (off) to below 1, got {value!r}")


def _keep_runs(instance: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be at least 1, got {value}")


@attrs.frozen(kw_only=True)
class QtOptions:
    """Options of the Qt panel sink."""

    #: Numeric fields of each event's data to plot, one plot per field and one
    #: curve per source, e.g. ["loss", "lr"]. Events without the field are skipped.
    plot: list[str] = attrs.field(factory=list, validator=_fields)
    #: The x axis each plot starts with: the step field (a numeric data field
    #: such as "step") or "received_at" (the time mux received the event, shown
    #: as clock time). Each plot can switch between step and time; with
    #: "received_at" the step field is "step".
    x: str = attrs.field(default="received_at", validator=_non_empty)
    #: Points kept per curve and run; older points scroll out. Every event is
    #: kept up to this many; drawing reduces them to what the pixels can show.
    history: int = attrs.field(default=100_000, validator=_history)
    #: Fields whose plot starts with a logarithmic y axis, e.g. ["loss"].
    log_y: list[str] = attrs.field(factory=list, validator=_fields)
    #: EMA smoothing each plot starts with: the weight of the past, 0 (off) to
    #: below 1 (0.9 = smooth). Each plot can change it.
    smoothing: float = attrs.field(default=0.0, validator=_smoothing)
    #: Run segments kept per curve: a restart starts a new one (older runs faded).
    keep_runs: int = attrs.field(default=4, validator=_keep_runs)


def missing_qt() -> str | None:
    """The install hint when PySide6 or pyqtgraph cannot be imported, else None."""
    for module in ("PySide6", "pyqtgraph"):
        if importlib.util.find_spec(module) is None:
            if module == "PySide6":
                return INSTALL_HINT
            return "pyqtgraph is not installed; install the Qt panel with: pip install 'mux[qt]'"
    return None


def require_qt() -> None:
    """Raise ImportError with the install hint unless the Qt extra is installed."""
    hint = missing_qt()
    if hint is not None:
        raise ImportError(hint)


def missing_display() -> str | None:
    """Why Qt could not open a window here, or None when it likely can.

    Without a display, Qt aborts the whole process from C++; saying so
    first turns that crash into a usage error with the fix.
    """
    if not sys.platform.startswith("linux"):
        return None
    if any(os.environ.get(name) for name in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY")):
        return None
    return (
        "no display for the Qt panel (neither DISPLAY nor WAYLAND_DISPLAY is set); "
        "run mux in a desktop session, or set QT_QPA_PLATFORM=offscreen to run it without one"
    )
