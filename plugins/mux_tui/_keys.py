"""What the view's keys do: scroll, filter, restart the sources that gave up, pace a replay.

==================  ==================================================
↑ ↓                 select the row above / below (the window follows)
PgUp PgDn           a page up / down
Home End            the first / last row
``/``               type a name filter (a glob; Enter keeps it, Esc clears it)
``s``               the next state filter: all, needing a look, each state shown
``r``               restart the sources that gave up (a run, not a replay)
space               pause / resume a replay
``+`` ``-``         a replay twice as fast / half as fast
==================  ==================================================

Pure logic over the model, a :class:`~._browse.Browse`, a ``restart``
callable (the sink passes ``SinkContext.restart_source``) and a replay's
pace control, so tests drive it with plain calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from mux_core.records import Status
from mux_core.sink import ReplayControl

from ._browse import Browse
from ._model import RESTARTABLE, TuiModel

__all__ = [
    "RESTARTABLE",
    "RESTART_HINT",
    "RESTART_KEY",
    "RestartKey",
    "ViewKeys",
    "split_keys",
]

RESTART_KEY = "r"
RESTART_HINT = "r: restart the sources that gave up"

UP = frozenset({"\x1b[A", "\x1bOA"})
DOWN = frozenset({"\x1b[B", "\x1bOB"})
PAGE_UP = frozenset({"\x1b[5~"})
PAGE_DOWN = frozenset({"\x1b[6~"})
HOME = frozenset({"\x1b[H", "\x1bOH", "\x1b[1~", "\x1b[7~"})
END = frozenset({"\x1b[F", "\x1bOF", "\x1b[4~", "\x1b[8~"})
ESCAPE = "\x1b"
ENTER = frozenset({"\r", "\n"})
BACKSPACE = frozenset({"\x7f", "\x08"})


def split_keys(typed: str) -> list[str]:
    """What was typed, one key each: a character, or a whole escape sequence
    (``\\x1b[A`` is one key, the up arrow -- never an ``A``; ``\\x1b[15~`` is F5)."""
    keys: list[str] = []
    i, end = 0, len(typed)
    while i < end:
        char = typed[i]
        follow = typed[i + 1 : i + 2]
        if char != ESCAPE or not follow or follow == ESCAPE:
            keys.append(char)
            i += 1
        elif follow == "[":  # CSI: parameters, then one final byte
            j = i + 2
            while j < end and not "@" <= typed[j] <= "~":
                j += 1
            keys.append(typed[i : j + 1])
            i = j + 1
        elif follow == "O":  # SS3: one more character (F1-F4, arrows in some modes)
            keys.append(typed[i : i + 3])
            i += 3
        else:  # Alt+key
            keys.append(typed[i : i + 2])
            i += 2
    return keys


class RestartKey:
    """``r``: ask the engine to restart every source whose last state is restartable.

    A source asked for is not asked again (nor counted in the hint) until a
    new status of it arrives: the Qt panel's disabled button, in text. The
    ``restarting NAME`` line stays until each source named has moved on
    (its next status); "no source to restart" shows for :attr:`NOTE_SECONDS`.
    """

    #: How long the line saying there was nothing to restart stays.
    NOTE_SECONDS = 5.0

    def __init__(
        self,
        model: TuiModel,
        restart: Callable[[str], None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model = model
        self.restart = restart
        self.clock = clock
        #: Source -> the status it was restarted from.
        self._asked: dict[str, Status] = {}
        self._restarting: list[str] = []
        self._note = ""
        self._note_until = 0.0

    def waiting(self) -> list[str]:
        """The sources ``r`` would restart now, in config order."""
        names = []
        for name, row in self.model.rows.items():
            status = row.status
            if status is None or status.state not in RESTARTABLE:
                continue
            if self._asked.get(name) is not status:
                names.append(name)
        return names

    def press(self) -> None:
        """``r`` was typed."""
        names = self.waiting()
        for name in names:
            status = self.model.rows[name].status
            assert status is not None
            self._asked[name] = status
            self.restart(name)
        if names:
            self._restarting = [*self.pending(), *names]
            self._note = ""
        else:
            self._note = "r: no source to restart"
            self._note_until = self.clock() + self.NOTE_SECONDS

    def pending(self) -> list[str]:
        """The sources restarted that have not reported since."""
        rows = self.model.rows
        return [name for name in self._restarting if rows[name].status is self._asked.get(name)]

    def caption_lines(self) -> list[str]:
        """The hint while a source could be restarted, the sources being
        restarted, then the note of a press that found nothing."""
        lines = [RESTART_HINT] if self.waiting() else []
        pending = self._restarting = self.pending()
        if pending:
            lines.append("restarting " + ", ".join(pending))
        if self._note and self.clock() < self._note_until:
            lines.append(self._note)
        return lines


class ViewKeys:
    """Every key of the view, handed on to what it moves."""

    def __init__(
        self,
        browse: Browse,
        *,
        restart: RestartKey | None = None,
        replay: ReplayControl | None = None,
        labels: Callable[[], list[str]] = list,
    ) -> None:
        self.browse = browse
        #: None in a run that cannot restart (a replay).
        self.restart = restart
        #: None in a live run.
        self.replay = replay
        #: The labels the state filter cycles through (the states shown now).
        self.labels = labels

    def press(self, typed: str) -> None:
        """Handle what was typed (one read: a key or several)."""
        for key in split_keys(typed):
            self._key(key)

    def _key(self, key: str) -> None:
        browse = self.browse
        names = browse.shown
        if key in UP:
            browse.move(names, -1)
        elif key in DOWN:
            browse.move(names, 1)
        elif key in PAGE_UP:
            browse.move(names, -browse.page, scroll=True)
        elif key in PAGE_DOWN:
            browse.move(names, browse.page, scroll=True)
        elif key in HOME:
            browse.move(names, -len(names))
        elif key in END:
            browse.move(names, len(names))
        elif browse.editing:
            self._edit(key)
        elif key == "/":
            browse.editing = True
        elif key == "s":
            browse.cycle_state(self.labels())
        elif key == RESTART_KEY and self.restart is not None:
            self.restart.press()
        elif self.replay is not None:
            self._pace(key, self.replay)

    def _edit(self, key: str) -> None:
        browse = self.browse
        if key in ENTER:
            browse.editing = False
        elif key == ESCAPE:
            browse.clear_filter()
        elif key in BACKSPACE:
            browse.erase_filter()
        elif len(key) == 1 and key.isprintable():
            browse.type_filter(key)

    @staticmethod
    def _pace(key: str, replay: ReplayControl) -> None:
        if key == " ":
            if replay.paused:
                replay.resume()
            else:
                replay.pause()
        elif key in ("+", "="):
            replay.faster()
        elif key in ("-", "_"):
            replay.slower()

    def help_line(self) -> str:
        """The keys this view answers to now, in one line."""
        if self.browse.editing:
            return "type a name or a glob (train-*) · Enter: keep it · Esc: clear it"
        parts = ["↑↓ PgUp PgDn Home End: scroll", "/: filter by name", "s: filter by state"]
        if self.restart is not None:
            parts.append("r: restart")
        if self.replay is not None:
            parts += ["space: pause/resume", "+/-: faster/slower"]
        return " · ".join(parts)
