"""The ``[[sinks]] type = "qt"`` options, and the check that Qt is installed.

This module must import without PySide6: ``mux check`` and ``mux plugins``
list the Qt sink even where the ``mux[qt]`` extra is missing, and report the
install hint instead of a traceback.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

import attrs

__all__ = [
    "INSTALL_HINT",
    "QtOptions",
    "cannot_start",
    "missing_display",
    "missing_libraries",
    "missing_qt",
    "require_qt",
]

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


def _optional_field(instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not isinstance(value, str) or value in ("received_at",):
        raise ValueError(f'{attribute.name} must name a data field (e.g. "ts"), got {value!r}')


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
    #: such as "step"), "received_at" (the time mux received the event, shown
    #: as clock time), or the time_field (the time in the event itself). Each
    #: plot can switch between them; with "received_at" or the time_field the
    #: step field is "step". Several recordings overlaid (mux replay a b)
    #: start by step.
    x: str = attrs.field(default="received_at", validator=_non_empty)
    #: A data field holding the time each event was made: epoch seconds (or
    #: milliseconds, microseconds, nanoseconds) or ISO 8601 text, e.g. "ts".
    #: Plots can then be drawn by it: a backlog received in one burst after a
    #: reconnect is drawn when it happened. Empty: none.
    time_field: str = attrs.field(default="", validator=_optional_field)
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

    @classmethod
    def check(cls, options: QtOptions) -> None:
        """Fail ``mux check`` with the install hint when the Qt extra is missing."""
        hint = missing_qt()
        if hint is not None:
            raise ValueError(hint)


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
    return _missing_display(os.environ)


def _missing_display(environ: Mapping[str, str]) -> str | None:
    if not sys.platform.startswith("linux"):
        return None
    if any(environ.get(name) for name in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY")):
        return None
    return (
        "no display for the Qt panel (neither DISPLAY nor WAYLAND_DISPLAY is set); "
        "run mux in a desktop session, or set QT_QPA_PLATFORM=offscreen to run it without one"
    )


#: System libraries Qt's GUI module loads on every platform (offscreen too),
#: with the Debian/Ubuntu package of each.
GUI_LIBRARIES: dict[str, str] = {
    "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libglib-2.0.so.0": "libglib2.0-0",
}

#: What Qt's xcb (X11) platform plugin loads besides (read from the NEEDED
#: entries of PySide6's libqxcb.so and libQt6XcbQpa.so.6), with packages. A
#: fresh desktop install often lacks the first few: Qt then aborts the whole
#: process (exit 134) with "Could not load the Qt platform plugin xcb".
XCB_LIBRARIES: dict[str, str] = {
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxcb.so.1": "libxcb1",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libX11.so.6": "libx11-6",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
}

TROUBLESHOOTING = "docs/troubleshooting.md"


def _loadable(soname: str) -> bool:
    """Whether the dynamic linker finds ``soname`` (the search Qt's own loading does)."""
    try:
        ctypes.CDLL(soname)
    except OSError:
        return False
    return True


def qt_platform(environ: Mapping[str, str]) -> str | None:
    """The platform plugin Qt will load on Linux: "xcb", "wayland", "offscreen", ... or None."""
    chosen = environ.get("QT_QPA_PLATFORM", "").split(";")[0].split(":")[0].strip()
    if chosen:
        return chosen
    if environ.get("WAYLAND_DISPLAY") and environ.get("XDG_SESSION_TYPE") == "wayland":
        return "wayland"
    if environ.get("DISPLAY"):
        return "xcb"
    return None


def missing_libraries(
    environ: Mapping[str, str] | None = None,
    *,
    loadable: Callable[[str], bool] = _loadable,
) -> dict[str, str]:
    """The system libraries Qt would fail to load here, each with its Debian/Ubuntu package.

    The GUI module's always; the xcb plugin's when Qt would pick xcb
    (``DISPLAY`` set and ``QT_QPA_PLATFORM`` unset or "xcb"). Empty off Linux.
    """
    if not sys.platform.startswith("linux"):
        return {}
    env = os.environ if environ is None else environ
    needed = dict(GUI_LIBRARIES)
    if qt_platform(env) == "xcb":
        needed.update(XCB_LIBRARIES)
    return {soname: package for soname, package in needed.items() if not loadable(soname)}


def cannot_start(
    environ: Mapping[str, str] | None = None,
    *,
    loadable: Callable[[str], bool] = _loadable,
) -> str | None:
    """Why the panel's window cannot open here (a usage error for ``mux run``), or None.

    Checked before Qt loads anything, because Qt's own failure is an abort
    of the whole process from C++, which no Python code can catch.
    """
    env = os.environ if environ is None else environ
    problem = _missing_display(env)
    if problem is not None:
        return problem
    missing = missing_libraries(env, loadable=loadable)
    if not missing:
        return None
    platform = qt_platform(env)
    what = "its xcb (X11) platform plugin" if platform == "xcb" else "its GUI module"
    packages = " ".join(dict.fromkeys(missing.values()))
    return (
        f"the Qt panel cannot start: system libraries that Qt needs for {what} are missing: "
        f"{', '.join(missing)}. On Debian/Ubuntu install them with: "
        f"sudo apt-get install {packages} "
        "(or run the panel without a window: QT_QPA_PLATFORM=offscreen; "
        f"see {TROUBLESHOOTING})"
    )
