"""Which rows the view shows: the filters, the order, the scroll position, the selection.

Pure state moved by keys (``_keys.py``) and read by the renderer, which
tells it how many rows fit (:meth:`Browse.place`). Rows are in config
order while they all fit; when they do not, the sources that need a look
(failed, gave up, unavailable, stale, alerting) come first, so a failed
source at the bottom of a long list is on the screen, not below it.
"""

from __future__ import annotations

import fnmatch

from ._model import CALM, SourceRow, TuiModel

__all__ = ["ATTENTION_FILTER", "Browse"]

#: The state filter that keeps every source needing a look.
ATTENTION_FILTER = "attention"

_GLOB = frozenset("*?[")


class Browse:
    """The view's filters and scroll position; the selected row's detail is shown in full."""

    def __init__(self) -> None:
        #: A name glob (``train-*``); a text without ``*?[`` matches anywhere in
        #: the name. Case-insensitive. Empty: every name.
        self.name_filter = ""
        #: True while ``/`` is typing into :attr:`name_filter`.
        self.editing = False
        #: A row label (``failed``, ``stale``, ...), :data:`ATTENTION_FILTER`, or None: all.
        self.state_filter: str | None = None
        #: The selected source; None until a key moved the selection (then the
        #: first row shown is selected, the most urgent when not all fit).
        self.selected: str | None = None
        #: The index of the first row shown.
        self.top = 0
        #: How many rows the last frame had room for (PgUp/PgDn move by it).
        self.page = 1
        #: The names that passed the filters in the last frame, in its order.
        self.shown: list[str] = []

    # -- what is shown --------------------------------------------------------

    def matches(self, row: SourceRow, now: float) -> bool:
        if self.name_filter:
            pattern = self.name_filter.lower()
            if not _GLOB & set(pattern):
                pattern = f"*{pattern}*"
            if not fnmatch.fnmatchcase(row.name.lower(), pattern):
                return False
        wanted = self.state_filter
        if wanted is None:
            return True
        if wanted == ATTENTION_FILTER:
            return row.attention(now) < CALM
        return row.label(now) == wanted

    def rows(self, model: TuiModel, now: float, room: int | None) -> list[SourceRow]:
        """The rows that pass the filters: in config order when ``room`` rows
        hold them all (None: no limit), else the ones needing a look first."""
        rows = [row for row in model.rows.values() if self.matches(row, now)]
        if room is not None and len(rows) > room:
            rows.sort(key=lambda row: (row.attention(now), row.index))
        return rows

    def place(self, names: list[str], page: int) -> tuple[int, int]:
        """Fit the window to ``page`` rows of ``names``: the first row shown and
        the selected row's index (-1 when there is no row)."""
        self.page = max(page, 1)
        self.shown = names
        if not names:
            self.top = 0
            return 0, -1
        if self.selected in names:
            cursor = names.index(self.selected)
        else:
            cursor = min(max(self.top, 0), len(names) - 1) if self.selected else 0
        top = min(self.top, cursor)
        top = max(top, cursor - self.page + 1)
        top = max(min(top, len(names) - self.page), 0)
        self.top = top
        return top, cursor

    # -- keys ----------------------------------------------------------------

    def move(self, names: list[str], delta: int, *, scroll: bool = False) -> None:
        """Move the selection ``delta`` rows (negative: up), the window following;
        with ``scroll`` (a page key) the window moves as far."""
        if not names:
            return
        if self.selected in names:
            cursor = names.index(self.selected)
        else:
            cursor = self.top if self.selected else 0
        cursor = min(max(cursor + delta, 0), len(names) - 1)
        self.selected = names[cursor]
        if scroll:
            self.top += delta
        self.place(names, self.page)

    def cycle_state(self, labels: list[str]) -> None:
        """The next state filter: all, needing a look, then each label shown now."""
        choices: list[str | None] = [None, ATTENTION_FILTER, *labels]
        at = choices.index(self.state_filter) if self.state_filter in choices else 0
        self.state_filter = choices[(at + 1) % len(choices)]
        self.top = 0

    def type_filter(self, text: str) -> None:
        self.name_filter += text
        self.top = 0

    def erase_filter(self) -> None:
        self.name_filter = self.name_filter[:-1]
        self.top = 0

    def clear_filter(self) -> None:
        self.name_filter = ""
        self.editing = False
        self.top = 0

    def describe(self) -> str:
        """The filters in force, for the summary line ("" for none)."""
        parts = []
        if self.name_filter or self.editing:
            cursor = "▏" if self.editing else ""
            parts.append(f"name {self.name_filter!r}{cursor}" if self.name_filter else "name ▏")
        if self.state_filter is not None:
            parts.append(f"state {self.state_filter}")
        return " · ".join(parts)
